"""``mobilenets shard``: any task's data folder written into WebDataset tar shards (with their
index), which ``mobilenets train --data`` streams (see :mod:`mobilenets.data.shards` and
:mod:`mobilenets.tasks.shards`)."""

from __future__ import annotations

import argparse
import re

from .arguments import positive_int

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def byte_size(text: str) -> int:
    """A size in bytes, with an optional decimal unit: 200000000, 200M, 1.5G."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*", text)
    if match is None or float(match.group(1)) * _UNITS[match.group(2).lower()] < 1:
        raise argparse.ArgumentTypeError(f"must be a size in bytes such as 200000000 or 200M, "
                                         f"not {text}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def add_shard_parser(sub) -> None:
    from ..data.shards import DEFAULT_SAMPLES_PER_SHARD
    from .dense_cmds import TASK_NAMES
    p = sub.add_parser("shard", help="write a data folder (classification, segmentation, "
                       "detection or depth) into WebDataset tar shards, for streaming with "
                       "`mobilenets train --data SHARDS`")
    p.add_argument("data", help="a data folder of any task's layout: train/ and val/ class "
                   "folders (or one folder of class folders); images + masks (classes.txt, "
                   "PASCAL VOC or COCO panoptic masks); YOLO images/ + labels/ + config.yaml; "
                   "image + depth PNG pairs (split by ranges when written)")
    p.add_argument("--task", choices=TASK_NAMES, default=None,
                   help="the task the folder is for (default: found from its layout)")
    p.add_argument("--task-option", action="append", default=None, metavar="KEY=VALUE",
                   help="how the task reads the folder, fixed in the shards: segmentation "
                   "label_set=voc, unlabeled=background, train_split=..., val_split=...; "
                   "detection train_split=..., val_split=...; depth train_range=[0,400], "
                   "val_range=[400,500]; repeatable")
    p.add_argument("--out", required=True, help="new folder for the shards and index.json "
                   "(never overwritten)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--samples-per-shard", type=positive_int, default=None,
                      help=f"samples (images, pairs) per shard (default {DEFAULT_SAMPLES_PER_SHARD}: enough "
                           f"shards for several processes x loader workers even on "
                           f"Imagenette)")
    size.add_argument("--max-bytes", type=byte_size, default=None,
                      help="close a shard once it holds this much file data, e.g. 200M")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the order the images are written in (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_shard)


def cmd_shard(args: argparse.Namespace) -> int:
    from ..tasks.shards import write_task_shards
    from .dense_cmds import parse_task_options
    index = write_task_shards(args.data, args.out, args.task,
                              parse_task_options(args.task_option),
                              samples_per_shard=args.samples_per_shard,
                              max_bytes=args.max_bytes, seed=args.seed,
                              progress=not args.no_progress)
    task = index["task"]
    unit = "images" if task in ("classification", "detection") else "pairs"
    for name, split in index["splits"].items():
        shards = split["shards"]
        size = sum(s["bytes"] for s in shards)
        print(f"{name}: {split['total']} {unit} in {len(shards)} shards "
              f"({shards[0]['name']} .. {shards[-1]['name']}, {size / 1e6:.1f} MB)")
    classes = f"{len(index['classes'])} classes; " if index["classes"] else ""
    model = "" if task == "classification" else " --model MODEL"
    print(f"{task} data; {classes}index in {args.out}/index.json. Train with: "
          f"mobilenets train{model} --data {args.out}")
    return 0
