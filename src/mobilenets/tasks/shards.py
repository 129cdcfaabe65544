"""Any task's data folder written into WebDataset shards (``mobilenets shard``): which task a
folder is for, and the samples each task's ``shard_layout`` finds in it (see
:mod:`mobilenets.data.shards` for the format and the streaming reader)."""

from __future__ import annotations

import inspect
from pathlib import Path

from ..data import DataError
from ..data.shards import ShardLayout, write_shards
from .depth import data as depth_data
from .detection import data as detection_data
from .detection.task import yolo_splits
from .segmentation import data as segmentation_data

TASKS = ("classification", "segmentation", "detection", "depth")

_LAYOUTS = {"segmentation": segmentation_data.shard_layout,
            "detection": detection_data.shard_layout,
            "depth": depth_data.shard_layout}


def detect_task(data: str | Path) -> str:
    """The task whose layout the folder ``data`` has, the most specific first: segmentation
    (``classes.txt`` + masks, PASCAL VOC, COCO panoptic masks), detection (a names YAML +
    ``images/`` + ``labels/``), depth (image + depth PNG pairs), else classification (class
    folders)."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    try:
        segmentation_data.detect_layout(root)
        return "segmentation"
    except DataError:
        pass
    if (any((root / n).is_file() for n in detection_data.NAME_FILES)
            and (root / "images").is_dir() and (root / "labels").is_dir()):
        return "detection"
    try:
        depth_data.split_pairs(root)
        return "depth"
    except (DataError, ValueError):
        pass
    return "classification"


def shard_layout(data: str | Path, task: str, **options) -> ShardLayout | None:
    """The samples of ``data`` for ``task`` (None for classification, which
    :func:`~mobilenets.data.shards.write_shards` reads itself). ``options``: the keyword
    arguments of the task's ``shard_layout`` (e.g. ``label_set="voc"`` for COCO masks,
    ``train_range=(0, 400)`` for depth pairs); others are an error naming the accepted ones."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    if task == "classification":
        if options:
            raise ValueError(f"a classification folder takes no shard options (got "
                             f"{', '.join(options)})")
        return None
    make = _LAYOUTS[task]
    accepted = [p for p in inspect.signature(make).parameters if p not in ("root", "data")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a {task} shard option; it takes "
                         f"{', '.join(accepted)}")
    if task == "detection" and not {"train_split", "val_split"} & set(options):
        options = dict(zip(("train_split", "val_split"), yolo_splits(Path(data))))
    return make(data, **options)


def write_task_shards(data: str | Path, out: str | Path, task: str | None = None,
                      options: dict | None = None, **kwargs) -> dict:
    """:func:`~mobilenets.data.shards.write_shards` of the folder ``data`` for ``task``
    (default: :func:`detect_task`), with the task's shard ``options``; ``kwargs``: the
    writer's (``samples_per_shard``, ``max_bytes``, ``seed``, ``progress``). Returns the
    index (with ``task``)."""
    task = task or detect_task(data)
    layout = shard_layout(data, task, **(options or {}))
    index = write_shards(data, out, layout=layout, **kwargs)
    index.setdefault("task", task)
    return index


__all__ = ["TASKS", "detect_task", "shard_layout", "write_task_shards"]
