"""Scoring a dense model (segmentation, depth, detection; a PyTorch model or an exported
file) with its task's evaluation: what ``mobilenets.evaluate`` and ``mobilenets eval`` run
for a model whose task is not classification."""

from __future__ import annotations

from pathlib import Path

DENSE_TASKS = ("segmentation", "depth", "detection")


def dense_task_of(model) -> str | None:
    """The dense task of an opened model (its ``task`` attribute; for an exported
    segmentation or depth file, its metadata's ``task``), or None."""
    task = getattr(model, "task", None)
    if task is None and is_exported_model(model) and model.metadata.get("task") in EXPORTED_TASKS:
        task = model.metadata["task"]
    return task if task in DENSE_TASKS else None


# the dense tasks whose exported files (.onnx, .pte) eval and predict run as they run the
# PyTorch model: their outputs are the model's own
EXPORTED_TASKS = ("segmentation", "depth")


def is_exported_model(model) -> bool:
    return hasattr(model, "output_names") and isinstance(getattr(model, "metadata", None), dict)


class ExportedDense:
    """An exported segmentation or depth file (an OnnxModel or PteModel) as the tasks' code
    takes a PyTorch model: one output as the tensor, several as {name: tensor} (the heads'
    ``{"out", "aux"}``), and ``depth_kind`` from the file's config."""

    training = False

    def __init__(self, model, task: str):
        self.model, self.task = model, task
        self.config, self.preprocess = model.config, model.preprocess
        self.depth_kind = model.config.get("depth_kind", "metric")

    def eval(self) -> "ExportedDense":
        return self

    def train(self, mode: bool = True) -> "ExportedDense":
        self.model.train(mode)
        return self

    def __call__(self, x):
        outs = self.model(x)
        return dict(zip(self.model.output_names, outs)) if isinstance(outs, list) else outs


def as_dense(model, task: str):
    """Exported segmentation and depth files wrapped as the tasks take a PyTorch model; an
    exported detector (OnnxDetector) already takes images and returns detections."""
    return (ExportedDense(model, task) if is_exported_model(model) and task in EXPORTED_TASKS
            else model)


def check_resolution(model, task: str, resolution: int | None) -> None:
    """Refuse a ``resolution`` the model cannot run at: an exported file built for another
    input size, or a detector's other than its own (it resizes every image to its input
    size itself)."""
    if not resolution:
        return
    inner = getattr(model, "model", model)
    fixed = getattr(inner, "fixed_resolution", None)
    if fixed and resolution != fixed:
        raise ValueError(f"{inner.path} takes {fixed} px inputs, not {resolution}; run it at "
                         f"its own size (no --resolution), or export the model again at "
                         f"{resolution} px")
    own = (getattr(model, "preprocess", None) or {}).get("resolution")
    if task == "detection" and resolution != own:
        raise ValueError(f"a detector runs at its own input size ({own} px), not {resolution}: "
                         f"leave out --resolution, or build the detector at {resolution} px "
                         f"(create_model(..., resolution={resolution})) and train it there")


def evaluate_dense(model, task: str, data: str, resolution: int | None, batch_size: int,
                   workers: int, depth_scale: float | None = None,
                   invalid: list[int] | None = None, label_set: str | None = None) -> dict:
    """Score ``model`` with its task's evaluation on ``data``: segmentation: the ``val``
    split of any segmentation layout (COCO panoptic masks remapped by ``label_set``, default
    coco), or every pair of a folder without split folders; depth: the pairs of ``DATA/val``
    when it exists, else every pair in ``DATA`` (PNG value / ``depth_scale`` = metres;
    ``invalid``: the codes of no depth; both default to the training data's, which the
    model's preprocess records, else 1000 and 0, 65535);
    detection: the YOLO data set's val split; for each, shards written by ``mobilenets
    shard``: their validation shards. Returns JSON-ready metrics (segmentation also its pixel
    ``confusion`` tensor, true x predicted, and its ``classes``)."""
    check_resolution(model, task, resolution)
    model = as_dense(model, task)
    if task == "segmentation":
        from ..tasks.segmentation import evaluate
        result = evaluate(model, data, "val", resolution, batch_size, workers,
                          label_set=label_set, whole=True)
        keep = ("miou", "pixel_acc", "loss", "per_class_iou", "pixels", "images",
                "bad_images", "confusion", "classes")
    elif task == "depth":
        result = evaluate_depth_folder(model, data, resolution, batch_size, workers,
                                       depth_scale, invalid)
        keep = tuple(result)
    else:
        from ..tasks.detection import evaluate
        result = evaluate(model, data, batch_size=batch_size, workers=workers)
        keep = ("map", "map50", "map75", "loss", "per_class", "count", "bad_images")
    return {k: result[k] for k in keep if k in result}


def evaluate_depth_folder(model, data: str, resolution: int | None, batch_size: int,
                          workers: int, scale: float | None = None,
                          invalid: list[int] | None = None) -> dict:
    """Depth metrics of ``model`` on the pairs of ``data`` (its ``val/`` when it has one) or
    on the validation shards of a shard source; see :func:`evaluate_dense`."""
    from functools import partial

    from ..data.shards import is_shard_source, open_shards, val_shard_loader
    from ..tasks.depth import DepthPairs, depth_eval_transform, evaluate_model, find_pairs
    from ..tasks.depth.data import INVALID, collate_depth, decode_shard
    from ..training.sampling import SeededView
    pre = dict(getattr(model, "preprocess", None) or {})
    resolution = resolution or pre.get("resolution")
    if not resolution:
        raise ValueError("the model has no preprocess resolution: give --resolution")
    # the encoding the model was trained on (its preprocess records it), unless given
    scale = pre.get("depth_scale", 1000.0) if scale is None else scale
    invalid = pre.get("depth_invalid", INVALID) if invalid is None else invalid
    transform = depth_eval_transform(resolution, pre)
    if is_shard_source(data):                # the val shards; depth decoded as for a folder
        decode = partial(decode_shard, scale=float(scale), invalid=tuple(invalid))
        loader = val_shard_loader(open_shards(data, task="depth"), batch_size, workers,
                                  decode=decode, transform=transform, collate=collate_depth)
        return evaluate_model(model, loader)
    root = Path(data)
    folder = root / "val" if (root / "val").is_dir() else root
    pairs = DepthPairs(find_pairs(folder), float(scale), tuple(invalid))
    return evaluate_model(model, SeededView(pairs, transform, 0), batch_size=batch_size,
                          workers=workers)


__all__ = ["DENSE_TASKS", "EXPORTED_TASKS", "ExportedDense", "as_dense", "check_resolution",
           "dense_task_of", "evaluate_dense", "evaluate_depth_folder", "is_exported_model"]
