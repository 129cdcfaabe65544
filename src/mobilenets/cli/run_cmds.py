"""``mobilenets train``, ``eval`` and ``predict``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from ..training.config import OPTION_NAMES, TrainConfig, make_config
from .arguments import non_negative_int, positive_int

_TRAIN_SKIP = {"extra", "recipe"}


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (the built-in sample when --data is absent)")
    p.add_argument("--recipe", default=None, help="named recipe or .toml path (mobilenets "
                   "recipes lists them); command-line options override it")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run of this last.pt, with its options (given ones "
                   "override them) and, unless --out is given, in its folder")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that holds an earlier one")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p, _TRAIN_SKIP)
    p.set_defaults(func=cmd_train)


def add_config_flags(p, skip: set[str], helps: dict[str, str] | None = None) -> None:
    """One ``--flag`` per TrainConfig field not in ``skip`` (default None: keep the recipe's)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
            continue
        kind = float if f.type.startswith("float") else int if f.type.startswith("int") else str
        default = (f"(default {f.default!r})" if f.default is not dataclasses.MISSING else None)
        p.add_argument(flag, type=kind, default=None, help=(helps or {}).get(f.name, default))


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import train
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
    metrics = train(cfg, resume=args.resume, progress=not args.no_progress,
                    overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:          # torchrun: rank 0 alone prints
        print(f"done: top-1 {100 * metrics['top1']:.1f}%  top-5 {100 * metrics['top5']:.1f}% "
              f"after {metrics['epoch']} epochs; best model in {Path(cfg.out) / 'best'}")
    return 0


_DISTILLATION_OPTIONS = ("teacher_weights", "kd_temperature", "kd_alpha")


def resumed_config(checkpoint: str, recipe: str | None, overrides: dict) -> TrainConfig:
    """The options of the run saved in ``checkpoint`` (which already include its recipe's),
    with the given ``overrides`` (None: not given) on top; ``out`` defaults to the
    checkpoint's folder. The initial ``weights`` are not loaded again (the checkpoint holds
    the weights), and another ``recipe`` than the run's is refused."""
    from ..training.checkpoint import load_checkpoint
    saved = load_checkpoint(Path(checkpoint), mmap=True).get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{checkpoint} holds no run options; it is not a last.pt written by "
                         f"mobilenets train")
    if recipe and recipe != saved.get("recipe"):
        raise ValueError(f"{checkpoint} is a run of recipe {saved.get('recipe')!r}, and a "
                         f"resumed run keeps its options: leave --recipe out, and give the "
                         f"options to change one by one")
    values = {k: v for k, v in saved.items() if k in OPTION_NAMES}
    values.update(out=str(Path(checkpoint).parent), weights=None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def is_onnx_file(model: str) -> bool:
    """MODEL names an ONNX file (by its suffix), which onnxruntime or OpenVINO runs."""
    return Path(model).suffix.lower() == ".onnx"


def load_cli_model(model: str, weights: str | None, purpose: str | None = None,
                   runtime: str | None = None):
    """MODEL on the command line: a saved-model folder, a registered name (+ --weights), or an
    ``.onnx`` file (run in ``runtime``, onnxruntime by default). ``purpose`` (e.g.
    "predictions"): say on stderr when a registered name without --weights gives random
    weights for it."""
    import sys

    import mobilenets
    from ..weights.saved import is_saved_model
    path = Path(model)
    if is_onnx_file(model):
        if weights is not None:
            raise ValueError(f"--weights does not apply to the ONNX file {model}")
        from ..deploy import OnnxModel
        return OnnxModel(path, runtime=runtime or "onnxruntime")
    if runtime is not None:
        raise ValueError(f"--runtime {runtime} runs .onnx files, and {model} is not one: "
                         f"export it first with `mobilenets export {model} --out FILE.onnx`")
    if is_saved_model(path):
        if weights is not None:
            raise ValueError(f"--weights does not apply to the saved-model folder {model}, "
                             f"which holds its own weights; give a registered name with "
                             f"--weights, or the folder alone")
        return mobilenets.load(path)
    if path.is_dir():
        raise ValueError(f"{model} is not a mobilenets saved-model folder (no config.json); "
                         f"give a folder written by mobilenets train or mobilenets.save "
                         f"(e.g. RUN/best)")
    if weights is None and path.exists():
        raise ValueError(f"{model} is a file, not a model: give a saved-model folder, a "
                         f"registered name (with --weights FILE) or an .onnx file")
    if weights is None and ("/" in model or "\\" in model):
        raise FileNotFoundError(f"no model folder or file {model}")
    options = {"weights": weights} if weights else {}
    created = mobilenets.create_model(model, **options)
    if purpose and weights is None:
        print(f"note: {model} has random weights (no --weights given), so its {purpose} mean "
              f"nothing", file=sys.stderr)
    return created


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5/per-class accuracy on an image folder")
    p.add_argument("model", help="saved-model folder, or registered name with --weights")
    p.add_argument("--data", required=True, help="folder of class folders (or with val/)")
    p.add_argument("--weights", default=None)
    p.add_argument("--resolution", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=non_negative_int, default=0)
    p.add_argument("--confusion-png", default=None, metavar="FILE",
                   help="also plot the confusion matrix to this PNG file")
    add_runtime_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)


def add_runtime_flag(p) -> None:
    from ..deploy.onnx_model import RUNTIMES
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help="what runs a .onnx MODEL (default: onnxruntime)")


def cmd_eval(args: argparse.Namespace) -> int:
    from ..training import evaluate
    png = Path(args.confusion_png) if args.confusion_png else None
    if png is not None and (png.is_dir() or not png.parent.is_dir()):
        raise ValueError(f"--confusion-png {png}: give a file path in an existing folder")
    model = load_cli_model(args.model, args.weights, purpose="scores",
                           runtime=args.runtime).eval()
    result = evaluate(model, args.data, args.resolution, args.batch_size, args.workers)
    if args.json:
        print(json.dumps({"top1": result["top1"], "top5": result["top5"],
                          "loss": result["loss"], "images": result["count"],
                          "unreadable": result["bad_images"], "per_class": result["per_class"]}),
              flush=True)
    else:
        print(f"{result['count']} images: top-1 {100 * result['top1']:.2f}%  top-5 "
              f"{100 * result['top5']:.2f}%  loss {result['loss']:.4f}")
        for name, acc in result["per_class"].items():
            print(f"  {name:24s} {100 * acc:6.2f}%")
    if png is not None:
        if not args.json:
            print(f"confusion matrix: {png}", flush=True)
        _confusion_png(result["confusion"], result["classes"], png)
    return 0


def _confusion_png(confusion, classes, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes of images")
    p.add_argument("model", help="saved-model folder, or registered name with --weights")
    p.add_argument("images", nargs="+")
    p.add_argument("--weights", default=None)
    p.add_argument("--top-k", type=positive_int, default=5)
    add_runtime_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from ..data import eval_transform
    model = load_cli_model(args.model, args.weights, purpose="predictions",
                           runtime=args.runtime).eval()
    names = model.config.get("class_names") or [str(i) for i in range(model.num_classes)]
    transform = eval_transform(model.preprocess)
    results = []
    for path in args.images:
        try:
            with Image.open(path) as img:
                x = transform(img.convert("RGB"))[None]
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
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
    if args.json:
        print(json.dumps({"predictions": results}))
    return 0
