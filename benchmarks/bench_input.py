"""Images/s per loader worker of the training input pipeline: per-sample seeding old and new,
and image folders against WebDataset shards.

The pipeline is the one ``mobilenets train`` reads: the train split of ``--data`` (default:
the built-in sample) as an ``ImageFolderDataset`` (decode to RGB), a ``SeededView`` applying
``train_transform`` (the training defaults of ``TrainConfig`` for the model's preprocessing,
overridable below) under a generator seeded by (seed, epoch, index), keys from an
``EpochSampler``, batches made by ``collate_skip_bad`` in a ``DataLoader`` with ``--workers``
persistent worker processes (0: in this process, on one intra-op thread like a worker).

Two seedings are compared, each with its own loader, in this one process:

* ``fork_rng``: the anchor, kept only here: ``torch.random.fork_rng(devices=[])`` around
  ``torch.manual_seed(key)``, as the dataset seeded each sample before;
* ``current``: ``mobilenets.training.sampling.SeededView`` as it is now.

Both give the same augmented tensors (checked on the first batch before timing). With
``--shards`` a third candidate reads the same images from WebDataset tar shards
(``mobilenets.data.shards``: webdataset's tar reader, torchvision.io decoding, the same
``train_transform``): the given shard source, or without a value the train split written into
a temporary folder in shards of ``--samples-per-shard``. Its loader starts its workers every
epoch (as training on shards does) and its epoch holds whole batches of whole shards, so its
image count can differ a little; the figure is per image either way. After one
warm-up epoch each, every one of ``--repeats`` interleaved repeats reads one epoch (of at most
``--images`` images) through each loader, in an order rotated each repeat, so that drifting
machine load hits both alike. A candidate's figure is the median over repeats of images/s
divided by the worker count, with the min-max spread; the ratio current/fork_rng is taken per
repeat (median and spread printed). Run from the repository root::

    .venv/bin/python benchmarks/bench_input.py
    .venv/bin/python benchmarks/bench_input.py --workers 0 --repeats 20
    .venv/bin/python benchmarks/bench_input.py --data FOLDER --images 2000 \
        --auto-augment randaugment
    .venv/bin/python benchmarks/bench_input.py --shards --resolution 224   # folder vs shards
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torchvision
from torch.utils.data import DataLoader

import mobilenets
from mobilenets.data import (ImageFolderDataset, at_resolution, collate_skip_bad, resolve_split,
                             train_transform)
from mobilenets.data.shards import ShardLoader, TrainShards, open_shards, write_shards
from mobilenets.training.config import TrainConfig
from mobilenets.training.sampling import EpochSampler, SeededView


class ForkRngSeededView(SeededView):
    """SeededView with the per-sample seeding it had before: fork_rng + torch.manual_seed
    (the same seed, so the same augmentations; the benchmark's anchor)."""

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        item = self.dataset[i]
        if item is None:
            return None
        image, label = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.transform(image), label


def _epoch(loader: DataLoader, sampler: EpochSampler, epoch: int) -> tuple[int, float]:
    """Read one epoch; (images read, seconds)."""
    sampler.set_epoch(epoch)
    n = 0
    t0 = time.perf_counter()
    for images, _, _ in loader:
        n += len(images)
    return n, time.perf_counter() - t0


def main() -> None:
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None,
                    help="folder with train/ and val/ class folders (default: built-in sample)")
    ap.add_argument("--model", default=defaults.model, help="whose preprocessing to use")
    ap.add_argument("--resolution", type=int, default=defaults.resolution)
    ap.add_argument("--auto-augment", default=defaults.auto_augment,
                    choices=("randaugment", "trivialaugment", "autoaugment"))
    ap.add_argument("--color-jitter", type=float, default=defaults.color_jitter)
    ap.add_argument("--random-erasing", type=float, default=defaults.random_erasing)
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--workers", type=int, default=1,
                    help="loader worker processes per candidate (0: in this process)")
    ap.add_argument("--images", type=int, default=600, help="images per epoch (at most)")
    ap.add_argument("--repeats", type=int, default=10, help="interleaved repeats")
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--shards", nargs="?", const="write", default=None,
                    help="also time WebDataset shards: a shard source (folder, brace pattern, "
                         "pipe:), or without a value the train split written to a temporary "
                         "folder")
    ap.add_argument("--samples-per-shard", type=int, default=25,
                    help="shard size when --shards writes them (default 25)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--train-model", default=None, metavar="MODEL",
                    help="also time training MODEL (e.g. mobilenet_v2_100) fed by each loader, "
                         "against the same steps on one batch held in memory")
    ap.add_argument("--train-images", type=int, default=320,
                    help="images per training epoch with --train-model (default 320)")
    args = ap.parse_args()
    if args.workers == 0:
        torch.set_num_threads(1)     # as in a loader worker process

    train_dir, _ = resolve_split(args.data)
    raw = ImageFolderDataset(train_dir)
    pre = at_resolution(mobilenets.create_model(args.model).preprocess, args.resolution)
    transform = train_transform(args.resolution, pre, auto_augment=args.auto_augment,
                                color_jitter=args.color_jitter,
                                random_erasing=args.random_erasing,
                                scale=(defaults.crop_min_scale, 1.0))
    size = min(len(raw), args.images)
    candidates = {}
    for name, view in (("fork_rng", ForkRngSeededView), ("current", SeededView)):
        sampler = EpochSampler(size, args.seed)
        loader = DataLoader(view(raw, transform, args.seed), args.batch_size, sampler=sampler,
                            num_workers=args.workers, collate_fn=collate_skip_bad,
                            persistent_workers=args.workers > 0)
        candidates[name] = (loader, sampler)

    if args.shards is not None:
        candidates["shards"] = _shard_candidate(args, train_dir, transform, size)

    first = {name: next(iter(loader))[0] for name, (loader, _) in candidates.items()}
    if not torch.equal(first["fork_rng"], first["current"]):
        raise SystemExit("the two seedings augment differently: the comparison is void")
    for loader, sampler in candidates.values():        # warm-up (workers start here)
        _epoch(loader, sampler, 0)

    names = list(candidates)
    rates = {name: [] for name in names}
    ratios, shard_ratios = [], []
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            n, seconds = _epoch(*candidates[name], epoch=r + 1)
            rates[name].append(n / seconds / max(args.workers, 1))
        ratios.append(rates["current"][-1] / rates["fork_rng"][-1])
        if "shards" in rates:
            shard_ratios.append(rates["shards"][-1] / rates["current"][-1])

    result = {"data": str(train_dir), "images": size, "resolution": args.resolution,
              "auto_augment": args.auto_augment, "color_jitter": args.color_jitter,
              "random_erasing": args.random_erasing, "batch_size": args.batch_size,
              "workers": args.workers, "repeats": args.repeats, "torch": torch.__version__,
              "torchvision": torchvision.__version__, "python": platform.python_version()}
    for name in names:
        v = rates[name]
        result[name] = {"median_img_s": statistics.median(v), "min_img_s": min(v),
                        "max_img_s": max(v)}
    result["ratio"] = {"median": statistics.median(ratios), "min": min(ratios),
                       "max": max(ratios)}
    if shard_ratios:
        result["shards_source"] = args.shards
        result["ratio_shards"] = {"median": statistics.median(shard_ratios),
                                  "min": min(shard_ratios), "max": max(shard_ratios)}
    if args.train_model:
        result["train"] = _train_figures(args, candidates, len(raw.classes))
    if args.json:
        print(json.dumps(result))
        return
    where = f"{args.workers} worker process(es) each" if args.workers else "in this process"
    print(f"{size} images of {train_dir}, {args.resolution} px, batch {args.batch_size}, "
          f"{where}, {args.repeats} interleaved repeats (torch {torch.__version__}, "
          f"torchvision {torchvision.__version__})")
    print(f"{'seeding':10s} {'median img/s/worker':>20s} {'min-max':>16s}")
    for name in names:
        s = result[name]
        print(f"{name:10s} {s['median_img_s']:>20.0f} "
              f"{s['min_img_s']:>7.0f}-{s['max_img_s']:<8.0f}")
    q = result["ratio"]
    print(f"current / fork_rng: x{q['median']:.2f} (per-repeat min-max "
          f"{q['min']:.2f}-{q['max']:.2f})")
    if shard_ratios:
        q = result["ratio_shards"]
        print(f"shards / current (folder): x{q['median']:.2f} (per-repeat min-max "
              f"{q['min']:.2f}-{q['max']:.2f})")

    if args.train_model:
        t = result["train"]
        print(f"training {args.train_model} (SGD, fp32, {torch.get_num_threads()} threads in "
              f"the main process), {t['images']} images per epoch, {args.repeats} repeats:")
        print(f"{'input':10s} {'median img/s':>13s} {'min-max':>16s} {'/ memory':>9s}")
        for name, v in t["candidates"].items():
            print(f"{name:10s} {v['median_img_s']:>13.1f} {v['min_img_s']:>7.1f}-"
                  f"{v['max_img_s']:<8.1f} {v['ratio_to_memory']['median']:>8.2f}")


def _train_figures(args, candidates: dict, num_classes: int) -> dict:
    """Training images/s of ``--train-model`` fed by the folder loader (``current``), the
    shards (with ``--shards``) and, as the ceiling, one batch held in memory (no input cost):
    interleaved repeats of one epoch each, after one warm-up epoch."""
    torch.manual_seed(args.seed)
    model = mobilenets.create_model(args.train_model, num_classes=num_classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(images, labels):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()

    steps = max(1, args.train_images // args.batch_size)
    feeds = {name: candidates[name] for name in ("current", "shards") if name in candidates}
    held = next(iter(feeds["current"][0]))[:2]

    def epoch(name, e):
        n, t0 = 0, time.perf_counter()
        if name == "memory":
            for _ in range(steps):
                step(*held)
                n += len(held[0])
        else:
            loader, sampler = feeds[name]
            sampler.set_epoch(e)
            for i, (images, labels, _) in enumerate(loader):
                if i == steps:
                    break
                if len(labels):
                    step(images, labels)
                    n += len(labels)
        return n / (time.perf_counter() - t0)

    names = ["memory", *feeds]
    for name in names:
        epoch(name, 1000)                               # warm-up
    rates = {name: [] for name in names}
    ratios = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rates[name].append(epoch(name, 1001 + r))
        for name in names:
            ratios[name].append(rates[name][-1] / rates["memory"][-1])
    return {"model": args.train_model, "images": steps * args.batch_size,
            "threads": torch.get_num_threads(),
            "candidates": {name: {"median_img_s": statistics.median(v), "min_img_s": min(v),
                                  "max_img_s": max(v),
                                  "ratio_to_memory": {"median": statistics.median(ratios[name]),
                                                      "min": min(ratios[name]),
                                                      "max": max(ratios[name])}}
                           for name, v in rates.items()}}


def _shard_candidate(args, train_dir, transform, size: int):
    """(loader, sampler) reading about ``size`` training images from shards, as training does."""
    source = args.shards
    if source == "write":
        source = tempfile.mkdtemp(prefix="bench-shards-") + "/shards"
        write_shards(train_dir, source, samples_per_shard=args.samples_per_shard,
                     seed=args.seed, progress=False)
    index = open_shards(source)
    shards, total = [], 0
    for shard in index.train:          # whole shards up to about ``size`` images
        if total >= size and len(shards) >= max(args.workers, 1):
            break
        shards.append(shard)
        total += shard[1]
    dataset = TrainShards(shards, len(index.classes), args.batch_size, args.seed,
                          workers=args.workers, transform=transform)
    sampler = EpochSampler(total, args.seed)        # ShardLoader reads its epoch and start
    return ShardLoader(dataset, args.batch_size, args.workers, sampler), sampler


if __name__ == "__main__":
    main()
