"""Writing a user's files safely: a temporary file in the target's folder, then an atomic
rename, so that a crash mid-write leaves the previous file whole."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)                 # reading the umask means setting it; restored at once
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> None:
    """``write(tmp)`` writes the file's contents to the path ``tmp``, which then replaces
    ``path``. The file gets the permissions a plain ``open(path, "w")`` would give (0666
    less the umask; ``mkstemp`` alone leaves it readable by its owner only)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())      # after: a writer may recreate the file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["atomic_write"]
