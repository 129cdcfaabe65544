"""Finding torchvision's and timm's checkpoints in their standard local caches.

Nothing is downloaded unless the caller allows it. Where the source publishes a hash (the
sha256 prefix in torchvision's file names; the sha256 blob names of the Hugging Face cache), the
file is checked against it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from .files import CheckpointError
from .sources import TIMM_NAMES, TORCHVISION_NAMES, torchvision_weights_for


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torchvision_file(name: str, allow_download: bool = False,
                     names: dict[str, str] | None = None) -> Path:
    """torchvision's default checkpoint for ``name`` in ``torch.hub.get_dir()/checkpoints``;
    ``names`` maps our names to torchvision's (default: the classifiers)."""
    names = TORCHVISION_NAMES if names is None else names
    tv = names.get(name)
    if tv is None:
        raise CheckpointError(f"torchvision has no weights for {name}; it covers "
                              f"{', '.join(sorted(names))}")
    weights = torchvision_weights_for(tv, None)
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    prefix = re.search(r"-([a-f0-9]+)\.", path.name)
    if not path.is_file():
        if not allow_download:
            raise CheckpointError(
                f"torchvision's {tv} weights are not in the local cache ({path}); pass "
                f"--allow-download (command line) or allow_download=True (Python) to download "
                f"them from {weights.url}, or put the file there (or give its path as "
                f"--weights)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(weights.url, str(path),
                                           hash_prefix=prefix[1] if prefix else None)
        except Exception as e:   # URLError, HTTPError, timeouts, a hash mismatch (RuntimeError)
            raise download_error(weights.url, e,
                                 f"download it yourself to {path} (or give its path as "
                                 f"--weights)") from e
    if prefix and not sha256(path).startswith(prefix[1]):
        raise CheckpointError(f"{path} fails its hash check (sha256 should start with "
                              f"{prefix[1]}): the file is corrupt or not torchvision's; delete it "
                              f"and download again")
    return path


def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache",
                                                   "huggingface"))
    return Path(home) / "hub"


def timm_file(name: str, allow_download: bool = False) -> Path:
    """timm's checkpoint for ``name`` in the Hugging Face hub cache (``models--timm--ARCH.TAG``),
    preferring timm's own training over a ``tf_`` port."""
    arch = TIMM_NAMES.get(name)
    if arch is None:
        raise CheckpointError(f"timm has no weights layout for {name}; covered: "
                              f"{', '.join(sorted(TIMM_NAMES))}")
    cache = hf_hub_cache()
    candidates = []
    for a in (arch, f"tf_{arch}") if not arch.startswith("tf_") else (arch,):
        # ImageNet-1k tags first (an in21k/in22k tag has another class count)
        found = sorted(cache.glob(f"models--timm--{a}.*")) + sorted(
            cache.glob(f"models--timm--{a}"))
        candidates += sorted(found, key=lambda f: not f.name.endswith("in1k"))
    for folder in candidates:
        for snapshot in sorted((folder / "snapshots").glob("*")):
            for fname in ("model.safetensors", "pytorch_model.bin"):
                f = snapshot / fname
                if f.is_file():
                    _check_blob(f)
                    return f
    if allow_download:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            raise CheckpointError("downloading timm weights needs huggingface_hub "
                                  "(pip install huggingface_hub)") from None
        try:
            import timm
            repo = timm.models.get_pretrained_cfg(arch).hf_hub_id
        except Exception:
            raise CheckpointError(f"downloading needs timm installed to name the Hugging Face "
                                  f"repository of {arch} (its default tag)") from None
        try:
            return Path(hf_hub_download(repo, "model.safetensors"))
        except Exception as e:   # network errors, an unknown repository or file
            raise download_error(f"https://huggingface.co/{repo}/resolve/main/model.safetensors",
                                 e, f"load them once with timm on a machine online "
                                 f"(timm.create_model('{arch}', pretrained=True)) and copy "
                                 f"{cache}, or give the file's path as --weights") from e
    raise CheckpointError(f"no timm weights for {arch} in the Hugging Face cache ({cache}); "
                          f"pass --allow-download (command line) or allow_download=True "
                          f"(Python), or load them once with timm "
                          f"(timm.create_model('{arch}', pretrained=True))")


def download_error(url: str, error: Exception, fix: str) -> CheckpointError:
    """One line for a failed download: the URL, why it failed, and what to do instead."""
    reason = getattr(error, "reason", None) or str(error) or type(error).__name__
    reason = " ".join(str(reason).split())     # one line, whatever the exception held
    return CheckpointError(f"could not download {url} ({type(error).__name__}: {reason}); "
                           f"check the network connection (or proxy settings), or {fix}")


def _check_blob(path: Path) -> None:
    """The hub cache stores a file as blobs/<sha256>; the snapshot entry links to it."""
    if not path.is_symlink():
        return   # a plain copy: no published hash to check against
    blob = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", blob.name) and sha256(blob) != blob.name:
        raise CheckpointError(f"{path} fails its hash check (content sha256 differs from its "
                              f"blob name {blob.name}): delete it and download again")
