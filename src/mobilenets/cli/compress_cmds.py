"""``mobilenets inspect`` (near-zero depthwise kernels, cost by type), ``mobilenets prune``
(structured pruning) and ``mobilenets lowrank`` (SVD factorisation of 1x1 convolutions and
linear layers), each then fine-tuned with the training loop."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..training.config import TrainConfig
from .arguments import add_model_argument, add_weights_flags, counted
from ..deploy.open import is_exported_file
from .run_cmds import add_config_flags, load_cli_model

# TrainConfig fields the prune command sets itself (or that make no sense for it: the
# compressed model keeps the widths the compression gives it)
_SKIP = {"model", "data", "out", "weights", "recipe", "extra", "width_mult"}
_FINE_TUNE_HELPS = {"resolution": "fine-tuning image size in pixels (default: the model's own)"}


def add_inspect_parser(sub) -> None:
    from ..compress.inspect import ZERO_TOL
    p = sub.add_parser("inspect", help="near-zero depthwise kernels and BN scales; cost by type")
    add_model_argument(p, "saved-model folder (e.g. RUN/best), or registered name (see "
                       "`mobilenets list`) with --weights")
    add_weights_flags(p)
    p.add_argument("--zero-tol", type=float, default=ZERO_TOL,
                   help=f"near zero: norm <= this x the layer's largest (default {ZERO_TOL})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..compress import inspect_model
    if is_exported_file(args.model):
        raise ValueError(f"inspect reads PyTorch models (a saved-model folder or a registered "
                         f"name); {args.model} is an ONNX file: inspect the model it was "
                         f"exported from")
    result = inspect_model(load_cli_model(args.model, args.weights,
                                          allow_download=args.allow_download), args.zero_tol)
    print(json.dumps(result.to_dict()) if args.json else result.table())
    return 0


def add_prune_parser(sub) -> None:
    from ..compress.prune import CRITERIA
    p = sub.add_parser("prune", help="prune channels into a smaller model, then fine-tune it")
    add_model_argument(p, "saved-model folder (e.g. RUN/best), or registered name (see "
                       "`mobilenets list`) with --weights")
    add_weights_flags(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=float, help="share of prunable channels to remove per layer")
    how.add_argument("--macs-ratio", type=float, help="share of total MACs to remove")
    p.add_argument("--criterion", choices=CRITERIA, default="bn",
                   help="rank channels by BN |gamma| (bn) or conv filter L1 norm (l1)")
    p.add_argument("--data", default=None, help="fine-tuning data (default: built-in sample)")
    p.add_argument("--recalibrate-images", type=int, default=1024, metavar="N",
                   help="re-estimate BatchNorm statistics on N training images after pruning "
                   "(adaptive BN; 0: keep the unpruned model's statistics)")
    p.add_argument("--out", required=True, help="writes OUT/pruned/, then the training outputs")
    p.add_argument("--recipe", default=None, help="training recipe; options override it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p, _SKIP, _FINE_TUNE_HELPS | {
        "epochs": "fine-tuning epochs (default 10); 0: prune and save only"})
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from ..tasks.classification import prune_and_finetune
    if is_exported_file(args.model):
        raise ValueError(f"prune works on PyTorch models (a saved-model folder or a registered "
                         f"name); {args.model} is an ONNX file: prune the model it was "
                         f"exported from, then export the pruned one")
    model = load_cli_model(args.model, args.weights, allow_download=args.allow_download)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name not in _SKIP and getattr(args, f.name) is not None}
    _, metrics = prune_and_finetune(
        model, args.out, ratio=args.ratio, macs_ratio=args.macs_ratio,
        criterion=args.criterion, data=args.data, recalibrate_images=args.recalibrate_images,
        recipe=args.recipe, overwrite=args.overwrite, progress=not args.no_progress,
        log=lambda line: print(line, flush=True), **options)
    if metrics is not None:
        epochs = counted(metrics["epoch"], "epoch")
        print(f"fine-tuned: top-1 {100 * metrics['top1']:.1f}% after {epochs}; best model in "
              f"{Path(args.out) / 'best'}")
    return 0


def _rank(text: str) -> int | float:
    """``--rank``: an integer (absolute rank) or a fraction in (0, 1] (of full rank)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an integer rank nor a fraction "
                                         f"like 0.5") from None


def add_lowrank_parser(sub) -> None:
    p = sub.add_parser("lowrank", help="factorise 1x1 convs and the classifier by SVD, then "
                       "fine-tune")
    add_model_argument(p, "saved-model folder (e.g. RUN/best), or registered name (see "
                       "`mobilenets list`) with --weights")
    add_weights_flags(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rank", type=_rank, help="rank per layer: an integer, or a fraction "
                     "in (0, 1] of the layer's full rank")
    how.add_argument("--energy", type=float, help="per layer, the smallest rank keeping this "
                     "share of the squared singular values (e.g. 0.9)")
    p.add_argument("--layers", nargs="+", default=None, metavar="PATTERN",
                   help="module-name patterns to factorise (default: every 1x1 conv but "
                   "squeeze-excite, and the linear layers), e.g. 'blocks.*.project.conv'")
    p.add_argument("--data", default=None, help="fine-tuning data (default: built-in sample)")
    p.add_argument("--recalibrate-images", type=int, default=1024, metavar="N",
                   help="re-estimate BatchNorm statistics on N training images after "
                   "factorising (0: keep the original model's statistics)")
    p.add_argument("--out", required=True, help="writes OUT/lowrank/, then the training outputs")
    p.add_argument("--recipe", default=None, help="training recipe; options override it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(p, _SKIP, _FINE_TUNE_HELPS | {
        "epochs": "fine-tuning epochs (default 10); 0: factorise and save only"})
    p.set_defaults(func=cmd_lowrank)


def cmd_lowrank(args: argparse.Namespace) -> int:
    from ..tasks.classification import lowrank_and_finetune
    if is_exported_file(args.model):
        raise ValueError(f"lowrank works on PyTorch models (a saved-model folder or a "
                         f"registered name); {args.model} is an ONNX file: factorise the model "
                         f"it was exported from, then export the factorised one")
    model = load_cli_model(args.model, args.weights, allow_download=args.allow_download)
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if f.name not in _SKIP and getattr(args, f.name) is not None}
    _, metrics = lowrank_and_finetune(
        model, args.out, rank=args.rank, energy=args.energy, layers=args.layers, data=args.data,
        recalibrate_images=args.recalibrate_images, recipe=args.recipe,
        overwrite=args.overwrite, progress=not args.no_progress,
        log=lambda line: print(line, flush=True), **options)
    if metrics is not None:
        epochs = counted(metrics["epoch"], "epoch")
        print(f"fine-tuned: top-1 {100 * metrics['top1']:.1f}% after {epochs}; best model in "
              f"{Path(args.out) / 'best'}")
    return 0
