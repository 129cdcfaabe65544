"""``mobilenets shard``: an image folder written into WebDataset tar shards (with their index),
which ``mobilenets train --data`` streams (see :mod:`mobilenets.data.shards`)."""

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
    p = sub.add_parser("shard", help="write an image folder into WebDataset tar shards, for "
                       "streaming with `mobilenets train --data SHARDS`")
    p.add_argument("data", help="folder with train/ and val/ class folders (or one folder of "
                   "class folders: a train split only)")
    p.add_argument("--out", required=True, help="new folder for the shards and index.json "
                   "(never overwritten)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--samples-per-shard", type=positive_int, default=None,
                      help=f"images per shard (default {DEFAULT_SAMPLES_PER_SHARD}: enough "
                           f"shards for several processes x loader workers even on "
                           f"Imagenette)")
    size.add_argument("--max-bytes", type=byte_size, default=None,
                      help="close a shard once it holds this much image data, e.g. 200M")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the order the images are written in (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_shard)


def cmd_shard(args: argparse.Namespace) -> int:
    from ..data.shards import write_shards
    index = write_shards(args.data, args.out, args.samples_per_shard, args.max_bytes, args.seed,
                         progress=not args.no_progress)
    for name, split in index["splits"].items():
        shards = split["shards"]
        size = sum(s["bytes"] for s in shards)
        print(f"{name}: {split['total']} images in {len(shards)} shards "
              f"({shards[0]['name']} .. {shards[-1]['name']}, {size / 1e6:.1f} MB)")
    print(f"{len(index['classes'])} classes; index in {args.out}/index.json. Train with: "
          f"mobilenets train --data {args.out}")
    return 0
