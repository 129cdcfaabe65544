"""The dense tasks (segmentation, depth, detection) on ``mobilenets train``, ``eval`` and
``predict``: the task a model belongs to, ``--task-option KEY=VALUE``, each task's evaluation
and its prediction pictures (input and output side by side, one PNG per image)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..deploy.dense_eval import (DENSE_TASKS, as_dense, check_resolution, dense_task_of,
                                 evaluate_dense)

TASK_NAMES = ("classification", *DENSE_TASKS)

# The "done:" line of train and the eval line: (metric key, label, percent?) per task.
MAIN_METRICS = {
    "segmentation": (("miou", "mIoU", True), ("pixel_acc", "pixel accuracy", True)),
    "depth": (("abs_rel", "AbsRel", False), ("delta1", "delta1", True), ("rmse", "RMSE", False)),
    "detection": (("map", "mAP", True), ("map50", "mAP50", True)),
}


def model_task(model: str | None) -> str:
    """The task of a registered model name: a head's (``lraspp_mobilenet_v2_100`` ->
    segmentation), else classification."""
    from ..models.heads import resolve_head
    found = resolve_head(model) if model else None
    return found[0].task if found else "classification"


def parse_task_options(items: list[str] | None) -> dict:
    """``--task-option KEY=VALUE`` items as a dict; a value is read as JSON when it parses
    (numbers, true/false, null, [lists], {dicts}), else kept as the string."""
    options = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--task-option {item!r}: write KEY=VALUE, e.g. --task-option "
                             f"hflip=0.0 or --task-option 'model_options={{\"width_mult\": "
                             f"0.5}}'")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def train_task(task: str, cfg, options: dict, resume, progress: bool, overwrite: bool) -> dict:
    """Run ``task``'s ``train`` on ``cfg`` with the task options ``options`` (the task checks
    them and names unknown ones)."""
    if task == "segmentation":
        from ..tasks.segmentation import train
    elif task == "depth":
        from ..tasks.depth import train
    elif task == "detection":
        from ..tasks.detection import train
    else:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASK_NAMES)}")
    return train(cfg, resume=resume, progress=progress, overwrite=overwrite,
                 **{task: options})


def metrics_line(task: str, metrics: dict) -> str:
    """The task's main metrics, e.g. ``mIoU 41.2%  pixel accuracy 80.3%``."""
    parts = []
    for key, label, percent in MAIN_METRICS[task]:
        value = metrics.get(key)
        if value is None:
            continue
        parts.append(f"{label} {100 * value:.1f}%" if percent else f"{label} {value:.4f}")
    return "  ".join(parts)


# eval's dense options: flag -> (the task it is for, its help)
DENSE_EVAL_OPTIONS = {
    "--depth-scale": ("depth", "depth models: depth PNG value per metre (default: the "
                               "training data's, saved with the model; else 1000: "
                               "millimetres, as 7-Scenes and NYU)"),
    "--invalid": ("depth", "depth models: PNG codes that mean no depth (default: the "
                           "training data's, else 0 65535; give none after --invalid for no "
                           "such codes)"),
    "--label-set": ("segmentation", "segmentation models on COCO panoptic masks: coco (every "
                                    "category) or voc (torchvision's 20 VOC categories + "
                                    "background); default coco"),
}


# train's same flags: flag -> (the task, its task option, its help); the value is saved with
# the model, so that eval reads files of the same kind the same way
DENSE_TRAIN_OPTIONS = {
    "--depth-scale": ("depth", "scale", "depth models: depth PNG value per metre (default "
                                        "1000: millimetres, as 7-Scenes and NYU)"),
    "--invalid": ("depth", "invalid", "depth models: PNG codes that mean no depth (default 0 "
                                      "65535; give none after --invalid for no such codes)"),
    "--label-set": ("segmentation", "label_set", "segmentation models on COCO panoptic "
                                                 "masks: coco (every category, the default) "
                                                 "or voc (torchvision's 20 VOC categories + "
                                                 "background)"),
}


def add_dense_eval_arguments(p, helps: dict[str, str] | None = None) -> None:
    """``eval``'s options for the data of dense models (:data:`DENSE_EVAL_OPTIONS`); ``train``
    takes the same flags with ``helps`` (:data:`DENSE_TRAIN_OPTIONS`)."""
    helps = helps or {flag: entry[1] for flag, entry in DENSE_EVAL_OPTIONS.items()}

    def non_negative(text: str) -> int:
        value = int(text)
        if value < 0:
            raise ValueError(text)
        return value
    p.add_argument("--depth-scale", type=float, default=None, metavar="VALUE_PER_METRE",
                   help=helps["--depth-scale"])
    p.add_argument("--invalid", type=non_negative, nargs="*", default=None, metavar="CODE",
                   help=helps["--invalid"])
    p.add_argument("--label-set", choices=("coco", "voc"), default=None,
                   help=helps["--label-set"])


def add_dense_train_arguments(p) -> None:
    """``train``'s ``--depth-scale``, ``--invalid`` and ``--label-set``: eval's flags, each
    setting its task's option (:data:`DENSE_TRAIN_OPTIONS`)."""
    add_dense_eval_arguments(p, {flag: entry[2] for flag, entry in DENSE_TRAIN_OPTIONS.items()})


def dense_train_options(args, model: str, task: str, options: dict) -> dict:
    """``options`` (from ``--task-option``) with ``train``'s dense flags added; a flag for
    another task, or given twice (as the flag and as ``--task-option``), is an error."""
    options = dict(options)
    values = {"--depth-scale": args.depth_scale, "--invalid": args.invalid,
              "--label-set": args.label_set}
    for flag, value in values.items():
        wants, key, _ = DENSE_TRAIN_OPTIONS[flag]
        if value is None:
            continue
        if task != wants:
            raise ValueError(f"{flag} is for {wants} models; {model} trains as a "
                             f"{task} model: leave it out")
        if key in options:
            raise ValueError(f"{flag} and --task-option {key}=... set the same option: "
                             f"give one")
        options[key] = list(value) if isinstance(value, list) else value
    return options


def dense_eval_options(args, task: str | None) -> dict:
    """``evaluate_dense``'s data options from ``eval``'s arguments; an option given for a
    model of another task (``task`` None: a classifier) is an error."""
    values = {"--depth-scale": args.depth_scale, "--invalid": args.invalid,
              "--label-set": args.label_set}
    for flag, value in values.items():
        wants = DENSE_EVAL_OPTIONS[flag][0]
        if value is not None and task != wants:
            raise ValueError(f"{flag} is for {wants} models; {args.model} is a "
                             f"{task or 'classification'} model: leave it out")
    return {"depth_scale": args.depth_scale, "invalid": args.invalid,
            "label_set": args.label_set}


def eval_report(task: str, result: dict) -> str:
    """The human-readable eval output."""
    count = result.get("images", result.get("count"))
    lines = [f"{count} images: {metrics_line(task, result)}"]
    per_class = result.get("per_class_iou") or result.get("per_class") or {}
    if isinstance(per_class, dict):
        absent = [name for name, value in per_class.items()
                  if value is None or value != value]           # None or NaN: not in the data
        for name, value in per_class.items():
            if name not in absent:
                lines.append(f"  {name:24s} {100 * value:6.2f}%")
        if absent:
            lines.append(f"  ({len(absent)} of {len(per_class)} classes absent from the data, "
                         f"not listed)")
    return "\n".join(lines)


# ---- predict -------------------------------------------------------------------------------

def _model_input(model, image, resolution: int | None = None):
    """``image`` (uint8 3 x H x W) resized to ``resolution`` (default: the model's) and
    normalised, as a 1 x 3 x R x R batch."""
    import torch
    from torchvision.transforms import InterpolationMode, v2
    pre = dict(getattr(model, "preprocess", None) or {})
    size = resolution or pre.get("resolution")
    if not size:
        raise ValueError("the model has no preprocess resolution; give --resolution")
    ops = v2.Compose([
        v2.Resize((size, size), interpolation=InterpolationMode(
            pre.get("interpolation", "bilinear")), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(pre.get("mean", (0.485, 0.456, 0.406))),
                     list(pre.get("std", (0.229, 0.224, 0.225))))])
    return ops(image)[None]


def _colormap(values, name: str):
    """``values`` (H x W in [0, 1], or integer class ids with ``name`` a qualitative map)
    as a uint8 3 x H x W picture through a matplotlib colormap."""
    import matplotlib
    import torch
    cmap = matplotlib.colormaps[name]
    rgba = cmap(values.numpy())
    return torch.from_numpy((rgba[..., :3] * 255).round().astype("uint8")).permute(2, 0, 1)


def label_palette(n: int):
    """``n`` distinct RGB colours (uint8 n x 3) for class ids: PASCAL VOC's palette, where the
    bits of the id are spread over the high bits of R, G and B (0 black, 1 dark red, ...;
    distinct for every id below 2^24)."""
    import torch
    ids = torch.arange(n)
    colours = torch.zeros(n, 3, dtype=torch.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            colours[:, channel] |= bit << (7 - shift)
    return colours.to(torch.uint8)


def predict_picture(model, task: str, image, conf: float | None = None,
                    iou: float | None = None, max_det: int | None = None,
                    raw: list | None = None, resolution: int | None = None):
    """``(picture, summary)``: the output picture of ``model`` on ``image`` (uint8 3 x H x W)
    at the image's size, and a JSON-ready summary. Segmentation: the class map in PASCAL
    VOC's palette (:func:`label_palette`: a colour of its own for every class); depth: the
    prediction colour-mapped (inferno, bright = near) over its own min..max; detection: the
    boxes drawn on the image. ``raw``: a list that gets the output itself, 1 x H x W: class
    ids (uint8, or uint16 above 256 classes) or 16-bit depth (metres x the model's
    ``depth_scale``, default 1000; an inverse-relative model's over its own range).
    ``resolution``: the segmentation or depth model's input size (default its own)."""
    import torch
    import torch.nn.functional as F
    h, w = image.shape[-2:]
    with torch.no_grad():
        if task == "detection":
            return _detections(model, image, conf, iou, max_det)
        out = model(_model_input(model, image, resolution))
    if task == "segmentation":
        logits = out["out"] if isinstance(out, dict) else out
        labels = F.interpolate(logits.float(), size=(h, w), mode="bilinear",
                               align_corners=False).argmax(1)[0]
        names = (getattr(model, "config", None) or {}).get("class_names")
        counts = torch.bincount(labels.flatten(), minlength=logits.shape[1])
        fractions = {(names[k] if names and k < len(names) else str(k)):
                     round(c / labels.numel(), 4) for k, c in enumerate(counts.tolist()) if c}
        if raw is not None:
            raw.append((labels if logits.shape[1] > 256 else labels.to(torch.uint8))[None])
        return label_palette(logits.shape[1])[labels].permute(2, 0, 1), {
            "class_fractions": fractions}
    depth = out["out"] if isinstance(out, dict) else out
    depth = F.interpolate(depth.float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    kind = getattr(model, "depth_kind", "metric")
    lo, hi = depth.min(), depth.max()
    scaled = (depth - lo) / (hi - lo).clamp_min(1e-12)
    if raw is not None:
        if kind == "metric":
            unit = float((getattr(model, "preprocess", None) or {}).get("depth_scale", 1000.0))
            values = (depth * unit).round().clamp(0, 65535)
        else:
            values = (scaled * 65535).round()
        raw.append(values.to(torch.int32)[None])          # written as 16-bit
    if kind == "metric":            # near is bright, as for inverse depth
        scaled = 1 - scaled
    return _colormap(scaled, "inferno"), {"depth_kind": kind, "min": lo.item(),
                                          "max": hi.item()}


def _detections(model, image, conf, iou, max_det):
    from torchvision.utils import draw_bounding_boxes
    for attr, value in (("score_thresh", conf), ("nms_thresh", iou),
                        ("detections_per_img", max_det)):
        if value is not None:
            if not hasattr(model, attr):
                raise ValueError(f"the detector has no {attr} to set from the command line")
            setattr(model, attr, value)
    found = model([image.float() / 255])[0]
    names = (getattr(model, "config", None) or {}).get("class_names")
    labels = [(names[k] if names and k < len(names) else str(k)) for k in found["labels"].tolist()]
    scores = found["scores"].tolist()
    picture = (draw_bounding_boxes(image, found["boxes"],
                                   [f"{n} {s:.2f}" for n, s in zip(labels, scores)], width=2)
               if labels else image.clone())
    boxes = [{"label": n, "score": round(s, 4), "box": [round(v, 1) for v in b]}
             for n, s, b in zip(labels, scores, found["boxes"].tolist())]
    return picture, {"detections": boxes}


# predict's lowest drawn box score for a detector when --conf is not given (ultralytics'
# predict default): the model's own score_thresh (torchvision's 0.001) keeps the low-scoring
# boxes that mAP needs and fills a picture with hundreds of them
PREDICT_CONF = 0.25


def predict_dense(model, task: str, images: list[str], out: str, conf=None, iou=None,
                  max_det=None, as_json: bool = False, save_raw: bool = False,
                  resolution: int | None = None) -> int:
    """Write ``OUT/<image stem>.png`` for each image: the input and the model's output
    picture side by side (detection: the image with its boxes only); images of one stem
    (``a/x.jpg``, ``b/x.jpg``) get ``x.png``, ``x-2.png`` ..., not one file. ``save_raw``:
    also ``<stem>-labels.png`` or ``<stem>-depth.png``, the output itself
    (:func:`predict_picture`'s ``raw``). ``resolution``: the input size (default the
    model's; a detector runs at its own)."""
    if save_raw and task == "detection":
        raise ValueError("--save-raw is for segmentation and depth models; a detector's "
                         "boxes are listed by --json")
    import torch

    from ..data import read_rgb
    from ..data.image_io import write_png, write_png16
    check_resolution(model, task, resolution)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    model = as_dense(model, task).eval()
    if task == "detection" and conf is None:
        conf = PREDICT_CONF
    results, taken = [], set()
    for path in images:
        try:
            image = read_rgb(path)
        except OSError as e:
            results.append(unreadable_image(path, e, len(images)))
            continue
        raw = [] if save_raw else None
        picture, summary = predict_picture(model, task, image, conf, iou, max_det, raw,
                                           resolution)
        if task != "detection":
            picture = torch.cat([image, picture], dim=2)
        stem, n = Path(path).stem, 1
        # case-folded: X.jpg and x.jpg are one file name on macOS and Windows
        while (name := stem if n == 1 else f"{stem}-{n}").casefold() in taken:
            n += 1
        taken.add(name.casefold())
        target = folder / f"{name}.png"
        write_png(picture, target)
        extra = {}
        if raw:
            kind = "labels" if task == "segmentation" else "depth"
            extra[kind] = str(folder / f"{name}-{kind}.png")
            (write_png if raw[0].dtype == torch.uint8 else write_png16)(raw[0], extra[kind])
        results.append({"image": path, "output": str(target), **extra, **summary})
        if not as_json:
            boxes = (f" ({len(summary['detections'])} boxes scoring >= {conf})"
                     if task == "detection" else "")
            print(f"{path} -> {target}{boxes}")
    check_some_read(results)
    if as_json:
        print(json.dumps({"task": task, "predictions": results}))
    return 0


def unreadable_image(path, error, total: int) -> dict:
    """predict's entry for an image it cannot read: an error when it is the only image, else
    a warning and ``{"image", "error"}`` (the others are still predicted, as ultralytics)."""
    if total == 1:
        raise ValueError(f"cannot read image {path}: {error}")
    print(f"mobilenets: warning: skipping {path}: cannot read it ({error})", file=sys.stderr)
    return {"image": path, "error": str(error)}


def check_some_read(results: list[dict]) -> None:
    """A ValueError when predict could read none of its images."""
    if results and all("error" in r for r in results):
        raise ValueError(f"none of the {len(results)} images could be read (see the warnings)")


__all__ = ["DENSE_EVAL_OPTIONS", "DENSE_TASKS", "MAIN_METRICS", "TASK_NAMES",
           "add_dense_eval_arguments", "add_dense_train_arguments", "check_some_read",
           "dense_eval_options",
           "dense_train_options", "dense_task_of", "eval_report",
           "evaluate_dense", "metrics_line", "model_task", "parse_task_options",
           "predict_dense", "predict_picture", "train_task", "unreadable_image"]
