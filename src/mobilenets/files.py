"""Writing a user's files safely: a temporary file in the target's folder, then an atomic
rename, so that a crash mid-write leaves the previous file whole."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _new_temp(path: Path) -> Path:
    """A new empty file beside ``path``, made as ``open(path, "w")`` makes one: mode 0666
    less the umask, which the kernel applies (``mkstemp`` would make it 0600, readable by
    its owner only; reading the umask means setting it, for the whole process)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write(path: str | Path, write) -> None:
    """``write(tmp)`` writes the file's contents to the path ``tmp``, which then replaces
    ``path``. The file gets the permissions a plain ``open(path, "w")`` would give, also when
    the writer makes its own file (safetensors writes 0600)."""
    path = Path(path)
    tmp = _new_temp(path)
    try:
        mode = tmp.stat().st_mode & 0o777         # what the umask let open() give
        write(tmp)
        if tmp.stat().st_mode & 0o777 != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["atomic_write"]
