"""``mobilenets`` command line: list, profile, costs, train, eval, predict, recipes, export,
quantize, prune, lowrank, inspect, bench, shard."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from ..version import __version__
from ..cost import profile
from ..cost.report import by_type_table, paper_figure_for, paper_params, per_layer_table, summary
from ..models import create_model, get_entry, list_models
from .arguments import positive_int
from .deploy_cmds import add_bench_parser, add_export_parser
from .run_cmds import add_eval_parser, add_predict_parser, add_train_parser
from .compress_cmds import add_inspect_parser, add_lowrank_parser, add_prune_parser
from .quantize_cmds import add_quantize_parser
from .shard_cmds import add_shard_parser


def cmd_list(args: argparse.Namespace) -> int:
    pattern = args.pattern
    if pattern and not any(c in pattern for c in "*?[") and not list_models(pattern):
        pattern = f"*{pattern}*"                  # a plain word: the names that contain it
    names = list_models(pattern, task=args.task)
    if not names:
        print(f"no registered model matches {args.pattern!r}", file=sys.stderr)
        return 1
    heads = {n: t for t in ("segmentation", "depth", "detection")
             for n in list_models(task=t)}
    for name in names:
        if name in heads:
            print(f"{name:32s} {heads[name]:15s} (a head: any backbone, "
                  f"`create_model(HEAD, backbone=NAME)`)")
            continue
        e = get_entry(name)
        aliases = f"  (also: {', '.join(e.aliases)})" if e.aliases else ""
        print(f"{name:32s} {e.arch.family:18s} width {e.width_mult:<5g} depth {e.depth_mult:<4g}"
              f" {e.resolution:>4d} px{aliases}")
    return 0


def _width_mult(model) -> float | None:
    """The width of ``model``, or of its backbone for a head model (whose own config has
    none)."""
    for module in model.modules():
        width = getattr(module, "config", {}).get("width_mult")
        if width is not None:
            return width
    return None


def cmd_profile(args: argparse.Namespace) -> int:
    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if args.width_mult is not None:
        options["width_mult"] = args.width_mult
    if args.resolution is not None:
        options["resolution"] = args.resolution
    model = create_model(args.model, **options)
    p = profile(model)
    if args.json:
        d = {"model": model.config["name"], "width_mult": _width_mult(model),
             **p.to_dict(per_layer=args.per_layer)}
        print(json.dumps(d))
        return 0
    print(summary(model.config["name"], p))
    if args.by_type:
        print()
        print(by_type_table(p))
    if args.per_layer:
        print()
        print(per_layer_table(p))
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    """Build every registered model and print its cost table next to the papers' figures;
    ``--resolution`` profiles them all at one size, ``--max-macs`` keeps those within a
    budget and ``--sort`` orders the rows."""
    at = f"{args.resolution} px" if args.resolution else "its default resolution"
    budget = f", at most {args.max_macs:g} MMACs" if args.max_macs is not None else ""
    print(f"mobilenets {__version__}: every registered model, built and profiled at {at}"
          f"{budget}\n(paper: the figure the paper or reference README prints; params "
          f"counted as that table counts them)\n")
    print(f"{'model':32s} {'px':>4s} {'params':>11s} {'MMACs':>10s} {'paper MMACs':>12s} "
          f"{'paper Mparams':>14s}")
    import torch
    rows = []
    for name in list_models(task="classification"):
        options = {"resolution": args.resolution} if args.resolution else {}
        with torch.device("meta"):      # the profile needs shapes only: no weights to initialise
            model = create_model(name, **options)
        p = profile(model)
        if args.max_macs is not None and p.macs / 1e6 > args.max_macs:
            continue
        f = paper_figure_for(name, p.resolution)
        paper_macs = paper_par = "-"
        if f is not None:
            if f.macs is not None:
                paper_macs = f"{float(f.macs) * f.macs_unit / 1e6:g}"
            if f.params is not None:
                paper_par = f"{f.params} ({paper_params(f, p) / 1e6:.2f})"
        line = (f"{name:32s} {p.resolution:>4d} {p.params:>11,} {p.macs / 1e6:>10.1f} "
                f"{paper_macs:>12s} {paper_par:>14s}")
        if args.sort == "name":
            print(line, flush=True)                  # as each is profiled
        rows.append(((p.macs, p.params) if args.sort == "macs" else (p.params, p.macs), line))
    if args.sort != "name":
        for _, line in sorted(rows):
            print(line)
    if not rows:
        print(f"(no model within {args.max_macs:g} MMACs)")
    print("\n`mobilenets profile NAME --by-type --per-layer` shows any model in detail; "
          "`--width-mult` any width.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilenets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mobilenets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser

    def add_with_description(name, **options):
        # `mobilenets CMD --help` opens with the command's one-line help
        options.setdefault("description", options.get("help"))
        return add_parser(name, **options)
    sub.add_parser = add_with_description

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default=None, help="shell wildcard, e.g. '*v3*', or "
                   "a plain word the names contain, e.g. lraspp")
    p.add_argument("--task", choices=("classification", "segmentation", "depth", "detection"),
                   help="only this task's models (heads are listed once, on their default "
                        "backbone, plus torchvision's names)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("profile", help="params, MACs and memory of a model")
    p.add_argument("model", help="registered name or timm/torchvision alias (see "
                   "`mobilenets list`)")
    p.add_argument("--width-mult", type=float, default=None,
                   help="channel width multiplier (default: the name's)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size in pixels (default: the name's)")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="classes (default: the model's own: 1000 for a classifier, 91 for "
                        "a detector, 21 for a segmenter)")
    p.add_argument("--by-type", action="store_true", help="split by layer type (V1 Table 2)")
    p.add_argument("--per-layer", action="store_true", help="one row per conv/linear/BN layer")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("costs", help="build every model and print its cost table")
    p.add_argument("--resolution", type=int, default=None,
                   help="profile every model at this input size (default: each one's own)")
    p.add_argument("--max-macs", type=float, default=None, metavar="MMACS",
                   help="only the models of at most this many million MACs")
    p.add_argument("--sort", choices=("name", "macs", "params"), default="name",
                   help="row order (default: name)")
    p.set_defaults(func=cmd_costs)

    add_train_parser(sub)
    add_eval_parser(sub)
    add_predict_parser(sub)
    add_export_parser(sub)
    add_bench_parser(sub)
    add_inspect_parser(sub)
    add_prune_parser(sub)
    add_lowrank_parser(sub)
    add_quantize_parser(sub)
    add_shard_parser(sub)

    p = sub.add_parser("recipes", help="list the named training recipes")
    p.set_defaults(func=cmd_recipes)
    return parser


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..training.config import RECIPES_DIR, list_recipes
    import tomllib
    for name in list_recipes():
        text = tomllib.loads((RECIPES_DIR / f"{name}.toml").read_text())
        print(f"{name:16s} {text.get('description', '')}")
    return 0


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line: its category and message on one line, without the
    library's source line that Python's default format prints under it."""
    kind = "warning" if category is UserWarning else category.__name__
    return f"mobilenets: {kind}: {message}\n"


def main(argv: list[str] | None = None) -> int:
    previous, warnings.formatwarning = warnings.formatwarning, _warning_line
    try:
        args = build_parser().parse_args(argv)
    except BaseException:
        warnings.formatwarning = previous
        raise
    started = time.time()
    try:
        code = args.func(args)
        sys.stdout.flush()                # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader of stdout went away (`mobilenets costs | head`): stop quietly with
        # status 1, as Python's documentation advises; when stdout is a file descriptor, it
        # is pointed at devnull so that the interpreter's last flush is silent too
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError):     # not a real stream (a caller's StringIO)
            return 1
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return 1
    # OSError: missing files, bad paths; ImportError: an optional dependency not installed
    # (its message says which extra to install)
    except KeyboardInterrupt:
        # Ctrl-C: no traceback; a training run says how to go on from its last checkpoint
        from ..training.config import TrainConfig
        last = None
        if args.command == "train":
            resumed = Path(args.resume) if getattr(args, "resume", None) else None
            folder = (args.out or (resumed if resumed and resumed.is_dir() else
                                   resumed.parent if resumed else TrainConfig.out))
            last = Path(folder) / "last.pt"
        resume = (f"; continue it with `mobilenets train --resume {last}`"
                  if last is not None and last.is_file() and last.stat().st_mtime >= started
                  else "")                    # (a checkpoint of this run, not an older one)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"mobilenets {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError) as e:
        print(f"mobilenets {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":
    sys.exit(main())
