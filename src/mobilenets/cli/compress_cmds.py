"""``mobilenets inspect`` (near-zero depthwise kernels, cost by type) and ``mobilenets prune``
(structured pruning, then fine-tuning with the training loop)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..training.config import TrainConfig
from .arguments import add_model_argument, add_weights_flags
from .run_cmds import add_config_flags, is_onnx_file, load_cli_model

# TrainConfig fields the prune command sets itself (or that make no sense for it)
_SKIP = {"model", "data", "out", "weights", "recipe", "extra"}


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
    if is_onnx_file(args.model):
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
    add_config_flags(p, _SKIP, {"epochs": "0: prune and save only, no fine-tuning"})
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from ..compress import prune, recalibrate_bn
    from ..data import calibration_batches, resolve_split
    from ..data.folder import class_folders
    from ..training import train
    from ..training.config import make_config
    from ..training.loop import check_out_folder
    from ..weights import save
    out = Path(args.out)
    if is_onnx_file(args.model):
        raise ValueError(f"prune works on PyTorch models (a saved-model folder or a registered "
                         f"name); {args.model} is an ONNX file: prune the model it was "
                         f"exported from, then export the pruned one")
    source = Path(args.model).resolve()
    if Path(args.model).exists() and (source == out.resolve() or out.resolve() in source.parents):
        raise ValueError(f"--out {out} contains the model to prune ({args.model}), which the "
                         f"pruned model and its fine-tuning would overwrite; choose another "
                         f"--out")
    check_out_folder(out, overwrite=args.overwrite, can_resume=False)
    if (out / "pruned").exists() and not args.overwrite:
        raise ValueError(f"{out / 'pruned'} exists; write to another --out, or pass "
                         f"--overwrite to replace it")
    model = load_cli_model(args.model, args.weights, allow_download=args.allow_download)
    pruned = prune(model, ratio=args.ratio, macs_ratio=args.macs_ratio,
                   criterion=args.criterion)
    info = pruned.config["pruned"]
    if args.recalibrate_images < 0:
        raise ValueError(f"--recalibrate-images must be >= 0, not {args.recalibrate_images}")
    if args.recalibrate_images:
        train_dir = resolve_split(args.data)[0]
        seen = recalibrate_bn(pruned, calibration_batches(
            train_dir, pruned.preprocess, args.recalibrate_images, batch_size=64))
        print(f"BatchNorm statistics re-estimated on {seen} images of {train_dir} at "
              f"{pruned.preprocess['resolution']} px", flush=True)
    save(pruned, out / "pruned")
    n_params = (sum(p.numel() for p in model.parameters()),
                sum(p.numel() for p in pruned.parameters()))
    print(f"pruned (ratio {info['ratio']:.3f}, criterion {info['criterion']}): MACs "
          f"{info['macs_before']:,} -> {info['macs_after']:,} "
          f"(-{1 - info['macs_after'] / info['macs_before']:.1%}), params {n_params[0]:,} -> "
          f"{n_params[1]:,}; saved to {out / 'pruned'}", flush=True)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name not in _SKIP}
    cfg = make_config(args.recipe, model=pruned.config["name"], data=args.data, out=str(out),
                      extra={"pruned_model": str(out / "pruned")}, **overrides)
    if cfg.epochs == 0:
        return 0
    classes = class_folders(resolve_split(cfg.data, cfg.val)[0])
    if pruned.num_classes != len(classes):
        print(f"classifier re-initialised for the data's {len(classes)} classes "
              f"(the model has {pruned.num_classes})")
        pruned.reset_classifier(len(classes))
    metrics = train(cfg, progress=not args.no_progress, model=pruned, overwrite=args.overwrite)
    print(f"fine-tuned: top-1 {100 * metrics.get('top1', 0):.1f}% after "
          f"{metrics.get('epoch', 0)} epochs; best model in {out / 'best'}")
    return 0
