"""``mobilenets train``, ``eval`` and ``predict``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from ..deploy.open import is_exported_file
from ..training.config import TrainConfig, load_recipe, make_config, resumed_config
from .arguments import (add_model_argument, add_runtime_option, add_weights_flags, counted,
                        non_negative_int, positive_int)
from .dense_cmds import (TASK_NAMES, add_dense_eval_arguments, add_dense_train_arguments,
                         check_some_read, dense_eval_options, dense_task_of,
                         dense_train_options, eval_report, evaluate_dense, metrics_line,
                         model_task, parse_task_options, predict_dense, train_task,
                         unreadable_image)

_TRAIN_SKIP = {"extra", "recipe"}


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (the built-in sample when --data is absent)")
    p.add_argument("--recipe", default=None, help="named recipe or .toml path (mobilenets "
                   "recipes lists them); command-line options override it")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run of this last.pt (or of the run folder holding "
                   "it), with its options (given ones override them) and, unless --out is "
                   "given, in its folder")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that holds an earlier one")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--allow-download", action="store_true",
                   help="download --weights / --teacher-weights torchvision|timm when not in "
                   "the local cache")
    p.add_argument("--task", choices=TASK_NAMES, default=None,
                   help="the task to train (default: the model's: a segmentation, depth or "
                   "detection head's task, else classification)")
    p.add_argument("--task-option", action="append", default=None, metavar="KEY=VALUE",
                   help="an option of a segmentation / depth / detection run (the fields of "
                   "its SegmentationOptions / DepthOptions / DetectionOptions, see "
                   "docs/segmentation.md ...), VALUE read as JSON when it parses, e.g. "
                   "hflip=0.0 or 'model_options={\"width_mult\": 0.5}'; repeatable")
    add_dense_train_arguments(p)
    add_config_flags(p, _TRAIN_SKIP)
    p.set_defaults(func=cmd_train)


# One line per training option for --help (the default, or the recipe's value, is appended).
_CONFIG_HELP = {
    "model": "registered model name (see `mobilenets list`)",
    "width_mult": "channel width multiplier instead of the name's (e.g. 0.5 for "
                  "mobilenet_v3_small_100 at half width; `mobilenets profile --width-mult` "
                  "gives its cost)",
    "data": "folder with train/ and val/ class folders (default: the built-in sample), or "
            "WebDataset shards (`mobilenets shard`): their folder, a brace pattern or pipe:; "
            "a detector: a YOLO data set, its folder or data YAML (docs/detection.md)",
    "val": "validation folder of class folders, replacing DATA/val (a segmentation or depth "
           "model: another data folder in its task's layout)",
    "out": "run folder: last.pt, best/, metrics.jsonl, curves.png",
    "weights": "initial weights: a checkpoint file or folder, or 'torchvision' / 'timm' "
               "(local cache; see --allow-download)",
    "epochs": "training epochs",
    "resolution": "training and validation image size in pixels (a segmentation, depth or "
                  "detection model: its own size when not given)",
    "batch_size": "images per step in each process (under torchrun the step takes this "
                  "many from every process)",
    "workers": "data-loading worker processes (0: load in the main process)",
    "seed": "random seed (initialisation, data order, augmentation)",
    "optimizer": "optimiser: sgd (Nesterov), rmsprop (TF-style eps) or adamw",
    "lr": "peak learning rate",
    "momentum": "momentum of sgd and rmsprop",
    "weight_decay": "L2 weight decay (not on BatchNorm and biases)",
    "depthwise_weight_decay": "weight decay of the depthwise kernels (default: --weight-decay; "
                              "MobileNetV1 used little or none)",
    "rmsprop_decay": "rmsprop: decay of the squared-gradient average",
    "rmsprop_eps": "rmsprop: epsilon (TF convention)",
    "schedule": "learning-rate schedule, stepped per batch",
    "warmup_epochs": "linear warm-up from 0 over this many epochs",
    "decay_epochs": "step/exponential schedule: decay period in epochs",
    "decay_rate": "step/exponential schedule: factor per decay period",
    "min_lr": "cosine schedule: final learning rate",
    "label_smoothing": "label smoothing of the cross-entropy loss",
    "dropout": "dropout before the classifier (default: the model's)",
    "drop_path_rate": "stochastic depth rate (default: the model's)",
    "ema_decay": "decay of an exponential moving average of the weights (0: off)",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "bn_momentum": "BatchNorm momentum (default: the model's)",
    "crop_min_scale": "RandomResizedCrop's smallest area fraction",
    "auto_augment": "automatic augmentation policy (default: none)",
    "color_jitter": "brightness/contrast/saturation jitter strength (0: off)",
    "random_erasing": "probability of random erasing (0: off)",
    "mixup": "mixup alpha (0: off)",
    "cutmix": "cutmix alpha (0: off)",
    "teacher": "distillation teacher: saved-model folder, or registered name with "
               "--teacher-weights",
    "teacher_weights": "weights of a registered --teacher (file, 'torchvision' or 'timm')",
    "kd_temperature": "distillation temperature",
    "kd_alpha": "weight of the distillation loss (1 - alpha: the label loss)",
    "amp": "mixed precision (bf16 on CPU, --amp-dtype on GPU)",
    "amp_dtype": "mixed-precision type on GPU (float16 adds a gradient scaler)",
    "channels_last": "channels-last memory format",
    "compile": "torch.compile the model",
    "device_data": "decode the images once, keep them in device (GPU) memory and crop, flip, "
                   "normalise and erase whole batches there (fast on a GPU; see "
                   "docs/training.md)",
    "sync_bn": "synchronised BatchNorm across processes (torchrun)",
    "tensorboard": "write TensorBoard events to OUT/tensorboard (when installed)",
    "checkpoint_every_steps": "also write last.pt every N steps (0: at epoch ends only)",
    "checkpoint_every_minutes": "also write last.pt every M minutes (0: at epoch ends only)",
    "strict_data": "stop on an unreadable image instead of skipping it",
    "max_steps_per_epoch": "cap on steps per epoch (0: the whole epoch; for quick runs)",
    "val_every": "validate (and update best/) every N epochs and after the last one; the "
                 "epochs between log training figures only",
}


def _config_choices() -> dict[str, tuple[str, ...]]:
    """The closed sets of values of string options."""
    from ..data.transforms import AUTO_AUGMENT
    from ..training.optim import OPTIMIZERS, SCHEDULES
    return {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "amp_dtype": ("bfloat16", "float16"),
            "auto_augment": tuple(AUTO_AUGMENT)}


def add_config_flags(p, skip: set[str], helps: dict[str, str] | None = None) -> None:
    """One ``--flag`` per TrainConfig field not in ``skip`` (default None: keep the recipe's),
    each with a one-line help (``helps`` replaces it for a field)."""
    choices = _config_choices()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = (helps or {}).get(f.name) or _CONFIG_HELP.get(f.name, f.name.replace("_", " "))
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{text} (default {'on' if f.default else 'off'})")
            continue
        kind = float if f.type.startswith("float") else int if f.type.startswith("int") else str
        if f.default not in (dataclasses.MISSING, None) and f.name not in (helps or {}):
            text += f" (default {f.default})"
        p.add_argument(flag, type=kind, default=None, choices=choices.get(f.name), help=text)


def cmd_train(args: argparse.Namespace) -> int:
    from ..tasks.classification import train
    if args.resume and Path(args.resume).is_dir():          # a run folder: its last.pt
        args.resume = str(Path(args.resume) / "last.pt")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name not in _TRAIN_SKIP}
    if args.resume:
        cfg = resumed_config(args.resume, args.recipe, overrides)
    else:
        cfg = make_config(args.recipe, **overrides)
    if cfg.teacher is None:
        given = [f"--{k.replace('_', '-')}" for k in _DISTILLATION_OPTIONS
                 if overrides.get(k) is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} set{'s' if len(given) == 1 else ''} up "
                             f"distillation, which needs a teacher: add --teacher MODEL (a "
                             f"saved-model folder, or a registered name with "
                             f"--teacher-weights)")
    task = args.task or model_task(cfg.model)
    options = parse_task_options(args.task_option)
    if task != "classification":
        options = dense_train_options(args, cfg.model, task, options)
    elif any(v is not None for v in (args.depth_scale, args.invalid, args.label_set)):
        dense_train_options(args, cfg.model, task, {})          # names the flag that does not fit
    if (task != "classification" and not args.resume and overrides["resolution"] is None
            and "resolution" not in (load_recipe(args.recipe) if args.recipe else {})):
        # a head trains at its own size (SSDLite 320, YOLOv4 416, ...), not the classifier
        # default's 64 px
        cfg = dataclasses.replace(cfg, resolution=native_resolution(cfg.model, cfg.resolution))
    if task != "classification":
        if args.allow_download:
            fetch_weights(cfg)
        metrics = train_task(task, cfg, options, args.resume, not args.no_progress,
                             args.overwrite)
        if int(os.environ.get("RANK", "0")) == 0:
            # the best/ model's score: its task's metric that picks it
            best = metrics_line(task, {k: metrics.get("best") for k in ("miou", "abs_rel",
                                                                        "map")})
            epochs = counted(metrics["epoch"], "epoch")
            print(f"done: {metrics_line(task, metrics)} after {epochs}; "
                  f"best model{f' ({best})' if best else ''} in {Path(cfg.out) / 'best'}")
        return 0
    if options:
        raise ValueError("--task-option sets options of a segmentation, depth or detection "
                         "run; a classification run takes the plain flags (see --help)")
    if args.allow_download:
        fetch_weights(cfg)
    metrics = train(cfg, resume=args.resume, progress=not args.no_progress,
                    overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        top5 = f"  top-5 {100 * metrics['top5']:.1f}%" if "top5" in metrics else ""
        best = f" (top-1 {100 * metrics['best']:.1f}%)" if metrics.get("best") is not None else ""
        epochs = counted(metrics["epoch"], "epoch")
        print(f"done: top-1 {100 * metrics['top1']:.1f}%{top5} after {epochs}; best "
              f"model{best} in {Path(cfg.out) / 'best'}")
    return 0


_DISTILLATION_OPTIONS = ("teacher_weights", "kd_temperature", "kd_alpha")


def fetch_weights(cfg: TrainConfig) -> None:
    """--allow-download: put the model's (and the teacher's) 'torchvision' / 'timm' weights in
    the local cache, where training then finds them; a failed download is a one-line error."""
    from ..weights import create_model
    for name, weights in ((cfg.model, cfg.weights), (cfg.teacher, cfg.teacher_weights)):
        if name and weights in ("torchvision", "timm"):
            create_model(name, weights=weights, allow_download=True)


def native_resolution(name: str, fallback: int) -> int:
    """The input size registered model ``name`` is built for (its preprocess resolution)."""
    from ..weights import create_model
    model = create_model(name)
    return int((getattr(model, "preprocess", None) or {}).get("resolution")
               or model.config.get("resolution") or fallback)


def load_cli_model(model: str, weights: str | None, purpose: str | None = None,
                   runtime: str | None = None, allow_download: bool = False,
                   width_mult: float | None = None):
    """MODEL on the command line, opened by :func:`mobilenets.deploy.open_model`.
    ``purpose`` (e.g. "predictions"): say on stderr when a registered name without --weights
    gives random weights for it. ``width_mult``: a registered name built at that width."""
    from ..deploy import open_model
    from ..weights import is_saved_model
    options = {}
    if width_mult is not None:
        if is_exported_file(model) or is_saved_model(Path(model)):
            raise ValueError(f"--width-mult builds a registered model name at that width; "
                             f"{model} is a saved or exported model with its own width: "
                             f"leave --width-mult out")
        options["width_mult"] = width_mult
    opened = open_model(model, weights=weights, runtime=runtime,
                        allow_download=allow_download, **options)
    if (purpose and weights is None and not is_exported_file(model)
            and not is_saved_model(Path(model))):
        print(f"note: {model} has random weights (no --weights given), so its {purpose} mean "
              f"nothing", file=sys.stderr)
    return opened


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5/per-class accuracy on an image folder; for a "
                       "segmentation, depth or detection model its task's metrics")
    add_model_argument(p)
    p.add_argument("--data", required=True, help="folder of class folders (or with val/); "
                   "for a dense model its task's data (segmentation: the val split; depth: "
                   "DATA/val or DATA's pairs; detection: the YOLO set's val split); or "
                   "shards of `mobilenets shard`: their val shards")
    add_weights_flags(p)
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size in pixels (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="images per batch (default 64)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="data-loading worker processes (default 0: the main process)")
    p.add_argument("--confusion-png", default=None, metavar="FILE",
                   help="also plot the confusion matrix to this PNG file")
    add_dense_eval_arguments(p)
    add_runtime_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def finite(value):
    """``value`` with every NaN or infinite float as None, so that ``--json`` prints strict
    JSON (null; a class absent from the data has no AP, an exported file no loss)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def cmd_eval(args: argparse.Namespace) -> int:
    from ..deploy import evaluate
    png = Path(args.confusion_png) if args.confusion_png else None
    if png is not None and (png.is_dir() or not png.parent.is_dir()):
        raise ValueError(f"--confusion-png {png}: give a file path in an existing folder")
    model = load_cli_model(args.model, args.weights, purpose="scores", runtime=args.runtime,
                           allow_download=args.allow_download).eval()
    task = dense_task_of(model)
    options = dense_eval_options(args, task)
    if task is not None:
        if png is not None and task != "segmentation":
            raise ValueError(f"--confusion-png is for classifiers and segmentation models, "
                             f"not a {task} model")
        result = evaluate_dense(model, task, args.data, args.resolution, args.batch_size,
                                args.workers, **options)
        confusion, classes = result.pop("confusion", None), result.pop("classes", None)
        print(json.dumps(finite({"task": task, **result})) if args.json
              else eval_report(task, result), flush=True)
        if png is not None:      # pixels: each true class's row as shares, so small ones show
            rows = confusion.double()
            _confusion_png(rows / rows.sum(1, keepdim=True).clamp_min(1), classes, png)
            if not args.json:
                print(f"confusion matrix: {png}", flush=True)
        return 0
    result = evaluate(model, args.data, args.resolution, args.batch_size, args.workers)
    if args.json:
        print(json.dumps(finite({"top1": result["top1"], "top5": result["top5"],
                                 "loss": result["loss"], "images": result["count"],
                                 "unreadable": result["bad_images"],
                                 "per_class": result["per_class"]})), flush=True)
    else:
        top5 = "" if result["top5"] is None else f"  top-5 {100 * result['top5']:.2f}%"
        skipped = (f" ({result['bad_images']} unreadable, skipped)"
                   if result.get("bad_images") else "")
        print(f"{result['count']} images{skipped}: top-1 {100 * result['top1']:.2f}%{top5}  "
              f"loss {result['loss']:.4f}")
        for name, acc in result["per_class"].items():
            print(f"  {name:24s} " + ("no images" if acc is None else f"{100 * acc:6.2f}%"))
    if png is not None:
        if not args.json:
            print(f"confusion matrix: {png}", flush=True)
        _confusion_png(result["confusion"], result["classes"], png)
    return 0


def _confusion_png(confusion, classes, path: Path) -> None:
    import matplotlib
    import torch
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(torch.as_tensor(confusion).double().numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes of images; for a segmentation, depth or "
                       "detection model, pictures of its output in --out")
    add_model_argument(p)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or folders (every image file in them, sorted by name)")
    add_weights_flags(p)
    p.add_argument("--top-k", type=positive_int, default=5,
                   help="classes to print per image (default 5)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size in pixels (default: the model's; a detector runs at its "
                   "own)")
    p.add_argument("--out", default="runs/predict", metavar="DIR",
                   help="dense models: folder for one PNG per image, the input and the "
                   "output side by side (default runs/predict)")
    p.add_argument("--conf", type=float, default=None,
                   help="detection: lowest box score drawn and listed (default 0.25, as "
                        "ultralytics' predict; the model's score_thresh is the lowest it gives)")
    p.add_argument("--iou", type=float, default=None,
                   help="detection: non-maximum suppression IoU (the model's nms_thresh)")
    p.add_argument("--max-det", type=positive_int, default=None,
                   help="detection: boxes kept per image (the model's detections_per_img)")
    p.add_argument("--save-raw", action="store_true",
                   help="segmentation and depth: also write OUT/<image>-labels.png (class ids, "
                   "8- or 16-bit) or OUT/<image>-depth.png (16-bit, the model's depth scale: "
                   "PNG value / scale = metres; inverse-relative models: 0..65535 over the "
                   "image's own range)")
    add_runtime_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)


def image_files(paths: list[str]) -> list[str]:
    """The IMAGE arguments of predict: a file as given; a folder as the image files directly
    in it (by extension, hidden files and 16-bit depth or label maps skipped), sorted by
    name."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from ..data.folder import is_value_map
    files = []
    for path in paths:
        folder = Path(path)
        if not folder.exists():                   # a mistyped name: not a skipped image
            raise ValueError(f"image {path} does not exist")
        if not folder.is_dir():
            files.append(path)
            continue
        found = sorted(str(f) for f in folder.iterdir() if f.is_file()
                       and not f.name.startswith(".") and f.name.lower().endswith(IMG_EXTENSIONS)
                       and not is_value_map(f))
        if not found:
            raise ValueError(f"folder {path} holds no image files ({', '.join(IMG_EXTENSIONS)}); "
                             f"its sub-folders are not searched: give them one by one")
        subs = [f.name for f in folder.iterdir() if f.is_dir() and not f.name.startswith(".")]
        if subs:
            print(f"note: {len(found)} images directly in {path}; its {len(subs)} sub-folders "
                  f"({', '.join(sorted(subs)[:3])}{', ...' if len(subs) > 3 else ''}) are not "
                  f"searched: give them as IMAGE arguments too", file=sys.stderr, flush=True)
        files += found
    return files


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from ..data import at_resolution, eval_transform
    from ..deploy.dense_eval import check_resolution
    images = image_files(args.images)
    model = load_cli_model(args.model, args.weights, purpose="predictions",
                           runtime=args.runtime, allow_download=args.allow_download).eval()
    task = dense_task_of(model)
    if task is not None:
        return predict_dense(model, task, images, args.out, args.conf, args.iou, args.max_det,
                             args.json, args.save_raw, args.resolution)
    if args.save_raw:
        raise ValueError("--save-raw writes a segmentation or depth model's output; a "
                         "classifier's is the classes printed (--json)")
    names = model.config.get("class_names") or [str(i) for i in range(model.num_classes)]
    check_resolution(model, "classification", args.resolution)
    transform = eval_transform(at_resolution(model.preprocess, args.resolution)
                               if args.resolution else model.preprocess)
    results = []
    for path in images:
        try:
            with Image.open(path) as img:
                x = transform(img.convert("RGB"))[None]
        except (OSError, ValueError) as e:
            results.append(unreadable_image(path, e, len(images)))
            continue
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        values, indices = probs.topk(min(args.top_k, len(names)))
        top = [(names[i], v) for v, i in zip(values.tolist(), indices.tolist())]
        results.append({"image": path, "classes": [n for n, _ in top],
                        "probabilities": [v for _, v in top]})
        if not args.json:
            print(path)
            for name, v in top:
                print(f"  {name:24s} {v:.4f}")
    check_some_read(results)
    if args.json:
        print(json.dumps({"predictions": results}))
    return 0
