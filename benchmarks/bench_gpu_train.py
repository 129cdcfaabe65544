"""GPU training throughput of mobilenet_v2_100 against timm's, and how many loader workers
keep the GPU fed.

1. **Model step, ours against timm.** The same loop for both: random images already on the
   device (batch ``--batch`` at ``--resolution``), bf16 autocast, channels-last, forward +
   cross-entropy + backward + SGD (momentum, nesterov) step. ``--repeats`` interleaved
   repeats (the side that goes first alternates), each timing ``--steps`` steps between two
   device synchronisations; one ratio images/s ours / timm per repeat; the median ratio with
   its spread. Eager first, then both models under ``torch.compile`` (compiled and warmed up
   before any timing), when time allows (``--budget-s``).
2. **Input pipeline.** The images/s of ``mobilenets train``'s own loader (decode, random
   resized crop, flip, normalise in ``--workers W`` processes, pinned and copied to the
   device) for each W, over one pass of ``--loader-batches`` batches after the first, and of
   ``--device-data`` (decoded once, augmented on the device); a pipeline keeps the GPU fed
   when it delivers at least the model step's images/s.

    python benchmarks/bench_gpu_train.py --data IMAGENETTE_COPY --json bench.json   # a GPU
    python benchmarks/bench_gpu_train.py --device cpu --batch 8 --resolution 64 --steps 2 \\
        --repeats 2 --no-compile --workers 0 --loader-batches 2                  # a smoke run
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import mobilenets
from mobilenets.data import ImageFolderDataset, collate_skip_bad, train_transform
from mobilenets.data.device import DeviceImages, DeviceTrainBatches
from mobilenets.data.transforms import at_resolution
from mobilenets.training.sampling import EpochSampler, SeededView

try:
    import timm
except ImportError:
    sys.exit("timm is not installed: run `.venv/bin/python -m pip install timm` "
             "(or `make test`, which installs it)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, x, y, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=4e-5)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(step, n: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return time.perf_counter() - t0


def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q[0], "q3": q[2]}


def models(device, compiled: bool) -> dict:
    torch.manual_seed(0)
    ours = mobilenets.create_model("mobilenet_v2_100")
    # the same classifier dropout on both sides (ours: the paper's 0.2; timm's default is 0)
    pair = {"ours": ours, "timm": timm.create_model("mobilenetv2_100",
                                                    drop_rate=ours.config["dropout"])}
    out = {}
    for side, m in pair.items():
        m = m.to(device).to(memory_format=torch.channels_last).train()
        out[side] = torch.compile(m) if compiled else m
    return out


def model_case(args, device, compiled: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, generator=g)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
    t0 = time.perf_counter()
    steps = {side: make_step(m, x, y, device) for side, m in models(device, compiled).items()}
    for step in steps.values():
        timed(step, args.warmup, device)
    warm_s = time.perf_counter() - t0
    times, ratios = {"ours": [], "timm": []}, []
    for r in range(args.repeats):
        for side in (("ours", "timm") if r % 2 == 0 else ("timm", "ours")):
            times[side].append(timed(steps[side], args.steps, device))
        ratios.append(times["timm"][-1] / times["ours"][-1])     # images/s ours / timm
    per_s = {side: args.batch * args.steps / statistics.median(t) for side, t in times.items()}
    return {"compiled": compiled, "warmup_s": warm_s, "ratio": spread(ratios),
            "ratios": ratios, "images_per_s": per_s}


def loader_rate(args, device, workers: int, preprocess: dict) -> float:
    data = ImageFolderDataset(Path(args.data) / "train")
    view = SeededView(data, train_transform(args.resolution, preprocess,
                                            scale=(args.crop_min_scale, 1.0)), 0)
    sampler = EpochSampler(len(data), 0)
    loader = DataLoader(view, args.batch, sampler=sampler, drop_last=True, num_workers=workers,
                        collate_fn=collate_skip_bad, pin_memory=device.type == "cuda")
    it = iter(loader)
    next(it)                          # worker start-up is not counted
    sync(device)
    t0, n = time.perf_counter(), 0
    for _ in range(args.loader_batches):
        try:
            x, y, _ = next(it)
        except StopIteration:
            break
        x = x.to(device, non_blocking=True)
        n += len(y)
    sync(device)
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return rate


def device_data_rate(args, device, preprocess: dict) -> dict:
    data = ImageFolderDataset(Path(args.data) / "train")
    short = max(args.resolution, round(1.25 * args.resolution))
    t0 = time.perf_counter()
    images = DeviceImages(data, (short, round(short * 4 / 3)), device,
                          workers=max(args.workers))
    decode_s = time.perf_counter() - t0
    sampler = EpochSampler(len(images), 0)
    batches = DeviceTrainBatches(images, sampler, args.batch, args.resolution,
                                 preprocess["mean"], preprocess["std"], 0,
                                 scale=(args.crop_min_scale, 1.0), random_erasing=0.25)
    it = iter(batches)
    next(it)
    sync(device)
    t0, n = time.perf_counter(), 0
    for x, y, _ in it:
        n += len(y)
        if n >= args.batch * args.loader_batches:
            break
    sync(device)
    return {"images_per_s": n / (time.perf_counter() - t0), "decode_s": decode_s,
            "images": len(images)}


def environment(device) -> dict:
    env = {"torch": torch.__version__, "timm": timm.__version__,
           "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--data", default=None, help="image folder with train/ (the loader part)")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 8, 12, 15])
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--crop-min-scale", type=float, default=0.35)
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="skip the parts that would start after this many seconds")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    result = {"environment": environment(device), "batch": args.batch,
              "resolution": args.resolution, "steps": args.steps, "repeats": args.repeats,
              "cases": [], "loader": {}, "skipped": []}

    def write():
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    def left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    for compiled in ([False, True] if args.compile else [False]):
        if compiled and left() < 150:        # two compilations take a minute or two
            result["skipped"].append(f"compiled models: {left():.0f} s left")
            continue
        try:
            case = model_case(args, device, compiled)
        except Exception as e:               # report and go on to the next part
            case = {"compiled": compiled, "error": f"{type(e).__name__}: {e}"}
        result["cases"].append(case)
        print(json.dumps(case), flush=True)
        write()
    if args.data:
        preprocess = at_resolution(mobilenets.create_model("mobilenet_v2_100").preprocess,
                                   args.resolution)
        for w in args.workers:
            if left() < 20:
                result["skipped"].append(f"loader with {w} workers: {left():.0f} s left")
                continue
            result["loader"][str(w)] = loader_rate(args, device, w, preprocess)
            print(f"loader, {w} workers: {result['loader'][str(w)]:.0f} images/s", flush=True)
            write()
        if left() > 30:
            result["device_data"] = device_data_rate(args, device, preprocess)
            print(f"device data: {json.dumps(result['device_data'])}", flush=True)
    write()
    return result


if __name__ == "__main__":
    main()
