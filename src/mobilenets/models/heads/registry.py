"""The head registry (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class HeadEntry:
    """A head family: ``build(backbone, **options)`` returns the model for the registered
    backbone name ``backbone`` (already resolved from aliases)."""

    name: str                       # "lraspp"
    task: str                       # "segmentation", "depth" or "detection"
    build: Callable[..., nn.Module]
    default_backbone: str           # a registered backbone name
    listed: tuple[str, ...] = ()    # names list_models shows besides <name>_<default_backbone>
    # encoder names build() takes that are not registered backbones (e.g. torchvision's
    # "resnet18" for the depth heads); passed to build() as they are
    extra_backbones: tuple[str, ...] = ()


HEADS: dict[str, HeadEntry] = {}


def register_head(entry: HeadEntry) -> HeadEntry:
    if entry.name in HEADS:
        raise ValueError(f"head {entry.name!r} registered twice")
    HEADS[entry.name] = entry
    return entry


def resolve_head(name: str) -> tuple[HeadEntry, str | None] | None:
    """``(entry, backbone part)`` if ``name`` is a head (``"lraspp"``, backbone None) or a head
    on a backbone (``"lraspp_mobilenet_v2_100"``, backbone ``"mobilenet_v2_100"``, not yet
    resolved), else None. The longest matching head name wins."""
    if name in HEADS:
        return HEADS[name], None
    for head in sorted(HEADS, key=len, reverse=True):
        if name.startswith(head + "_"):
            return HEADS[head], name[len(head) + 1:]
    return None


def head_listing() -> dict[str, str]:
    """Listed head model names -> their task."""
    out = {}
    for entry in HEADS.values():
        for n in (f"{entry.name}_{entry.default_backbone}", *entry.listed):
            out[n] = entry.task
    return out
