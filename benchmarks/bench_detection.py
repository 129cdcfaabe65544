"""Side-by-side CPU speed of our ``ssdlite320_mobilenet_v3_large`` against torchvision's.

torchvision's ``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)`` is built
with random weights (classification biases spread so that scores are peaked and the
detections do not hinge on ties) and its state dict is loaded into ours through the library's
checkpoint import (``mobilenets.create_model(..., weights=PATH)``, weights/detection.py).
Before any timing the two are checked to give the same head outputs, detections and training
losses on the benchmark's inputs. Then, in one process, interleaved (``_common.measure``):

* ``eval b1``: eval mode under ``torch.inference_mode()``, a list of one 320 x 320 image in
  [0, 1] (torchvision's convention), resize, normalisation, heads, decoding and NMS included;
* ``train b2``: one training step, train mode, a list of 2 images with targets, the sum of the
  two losses, backward and an SGD step (momentum 0.9).

* ``deploy`` (with ``--deployed RUN ...``): each trained detector's end-to-end files in
  onnxruntime, int8 against fp32: ``RUN/int8/fp32.onnx`` and ``RUN/int8/int8.onnx`` as
  ``experiments/detection.py int8`` writes them, called as the PyTorch detector is (a list of
  one real val2017 image: resize, network, decoding and NMS in the graph, boxes mapped back).
  Trained weights matter here: how many boxes reach NMS depends on the scores. Every other
  ``RUN/int8/int8*.onnx`` file (e.g. one quantized with other settings, copied there as
  ``int8-all.onnx``) is timed beside them, each against fp32.

Each case reports the median over ``--repeats`` repeats of each side's median call time
(``--iters`` calls), and the median ratio ours / torchvision with its min-max spread
(<= 1: ours no slower).

    .venv/bin/python benchmarks/bench_detection.py                  # the figures (quiet CPU)
    .venv/bin/python benchmarks/bench_detection.py --threads 4 --json det.json
    .venv/bin/python benchmarks/bench_detection.py --repeats 1 --iters 1     # smoke run
    .venv/bin/python benchmarks/bench_detection.py --cases deploy \
        --deployed runs/detection/ssdlite-efficientnet_lite0 runs/detection/yolov4-...
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

import mobilenets
from _common import cpu_model, measure

SEED = 0
NAME = "ssdlite320_mobilenet_v3_large"


def spread_class_biases(model: torch.nn.Module, scale: float = 3.0) -> None:
    """Random classification biases: with random weights every class scores about 1/91 and
    the per-class top-k has ties, which flip between two equal computations."""
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for block in model.head.classification_head.module_list:
            block[1].bias.copy_(torch.randn(block[1].bias.shape, generator=g) * scale)


def build_pair() -> dict:
    """torchvision's model and ours with its weights (through the library's import)."""
    torch.manual_seed(SEED)
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    spread_class_biases(theirs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ssdlite.pth"
        torch.save(theirs.state_dict(), path)
        ours = mobilenets.create_model(NAME, weights=path)
    return {"ours": ours, "torchvision": theirs}


def inputs() -> tuple[torch.Tensor, list[torch.Tensor], list[dict]]:
    """A 1 x 3 x 320 x 320 image batch in [0, 1] (for eval), and 2 training images with 3
    boxes each (COCO labels 1-90)."""
    g = torch.Generator().manual_seed(SEED)
    image = torch.rand(1, 3, 320, 320, generator=g)
    images = [torch.rand(3, 320, 320, generator=g) for _ in range(2)]
    targets = []
    for _ in images:
        xy = torch.rand(3, 2, generator=g) * 200
        wh = 32 + torch.rand(3, 2, generator=g) * 80
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(1, 91, (3,), generator=g)})
    return image, images, targets


def check_equal(models: dict, image: torch.Tensor, images: list, targets: list) -> dict:
    """Same parameter count, head outputs, detections and training losses, or an error."""
    ours, theirs = models["ours"].eval(), models["torchvision"].eval()
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    if params["ours"] != params["torchvision"]:
        raise SystemExit(f"parameter counts differ: {params}")
    x = image * 2 - 1                                         # both normalise to [-1, 1]
    with torch.no_grad():
        a, b = ours.backbone(x), theirs.backbone(x)
        head_a, head_b = ours.head(list(a.values())), theirs.head(list(b.values()))
        for key in ("cls_logits", "bbox_regression"):
            torch.testing.assert_close(head_a[key], head_b[key], rtol=1e-5, atol=1e-6)
        got, want = ours([image[0]]), theirs([image[0]])
    for g, w in zip(got, want):
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=1e-5, atol=1e-6)
        if not torch.equal(g["labels"], w["labels"]):
            raise SystemExit("the detections' labels differ")
    losses = {k: {n: float(v.detach()) for n, v in m.train()(images, targets).items()}
              for k, m in models.items()}
    for n, v in losses["torchvision"].items():
        if abs(losses["ours"][n] - v) > 1e-4 * max(1.0, abs(v)):
            raise SystemExit(f"training losses differ: {losses}")
    return {"params": params["ours"], "detections": len(got[0]["boxes"]),
            "losses": losses["ours"]}


def eval_fn(model: torch.nn.Module):
    model.eval()
    return lambda x: model([x[0]])           # a list of one image, torchvision's convention


def train_fn(model: torch.nn.Module, images: list, targets: list):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(_x):
        # measure() times under inference_mode; a training step needs autograd back
        with torch.inference_mode(False), torch.enable_grad():
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return step


def deployed(run: Path, args) -> dict:
    """fp32 and int8 end-to-end latency of ``run``'s exported files (see the module's
    docstring), on the first val2017 image of the run's data."""
    from mobilenets.data.image_io import decode_rgb
    from mobilenets.deploy import open_model
    files = {"fp32": run / "int8" / "fp32.onnx"} | {
        f.stem: f for f in sorted((run / "int8").glob("int8*.onnx"))}
    record = json.loads((run / "experiment.json").read_text())
    images = sorted((Path(record["data"]) / "images" / "val2017").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no val2017 image under {record['data']} (the run's data)")
    image = decode_rgb(images[0]).float() / 255
    models = {k: open_model(f, threads=args.threads) for k, f in files.items()}
    fns = {k: (lambda m: lambda x: m([x[0]]))(m) for k, m in models.items()}
    found = {k: len(m([image])[0]["boxes"]) for k, m in models.items()}
    return {"run": run.name, "model": record["model"], "image": str(images[0]),
            "image_size": list(image.shape[1:]), "detections": found,
            "mb": {k: f.stat().st_size / 2**20 for k, f in files.items()},
            "timing": measure(fns, image.unsqueeze(0), args, reference="fp32")}


def format_row(case: str, r: dict) -> str:
    o, t = r["ours"], r["torchvision"]
    return (f"| {case} | {o['median_ms']:.1f} | {t['median_ms']:.1f} | {o['ratio']:.3f} | "
            f"{o['ratio_min']:.3f}-{o['ratio_max']:.3f} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2,
                   help="torch and onnxruntime intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    p.add_argument("--iters", type=int, default=10,
                   help="timed calls per repeat and side (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per side (default 3)")
    p.add_argument("--cases", nargs="+", default=["eval", "train"],
                   choices=["eval", "train", "deploy"],
                   help="deploy is added when --deployed names runs")
    p.add_argument("--deployed", nargs="+", type=Path, default=[], metavar="RUN",
                   help="run folders of experiments/detection.py with int8/fp32.onnx and "
                        "int8/int8.onnx (its int8 command writes them); any other "
                        "int8/int8*.onnx is timed beside them")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.iters < 1:
        p.error("--repeats and --iters must be at least 1")
    if args.deployed and "deploy" not in args.cases:
        args.cases.append("deploy")
    if "deploy" in args.cases and not args.deployed:
        p.error("the deploy case needs --deployed RUN [RUN ...]")
    for run in args.deployed:          # checked before anything is measured
        missing = [str(f) for f in (run / "experiment.json", run / "int8" / "fp32.onnx",
                                    run / "int8" / "int8.onnx") if not f.is_file()]
        if missing:
            p.error(f"--deployed {run}: {', '.join(missing)} missing (`experiments/"
                    f"detection.py int8` writes the files from a finished run's best/)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"torch": torch.__version__, "torchvision": torchvision.__version__,
               "python": platform.python_version(), "threads": torch.get_num_threads(),
               "cpu": cpu_model()}
    print(f"torch {machine['torch']}  torchvision {machine['torchvision']}  threads "
          f"{machine['threads']}  cpu {machine['cpu']}")
    results, check = {}, None
    pair_cases = [c for c in args.cases if c != "deploy"]
    if pair_cases:
        models = build_pair()
        image, images, targets = inputs()
        check = check_equal(models, image, images, targets)
        print(f"{NAME}: {check['params']:,} parameters on both sides; same head outputs, "
              f"{check['detections']} detections and training losses "
              f"({', '.join(f'{k} {v:.4f}' for k, v in check['losses'].items())})")
        print(f"float32, eager; repeats={args.repeats} iters={args.iters} warmup="
              f"{args.warmup}; ratio = ours / torchvision per repeat (<= 1: ours no slower)\n")
        print("| case | ours (ms) | torchvision (ms) | median ratio | min-max |")
        print("|---|---|---|---|---|")
    for case in pair_cases:
        if case == "eval":
            fns, x = {k: eval_fn(m) for k, m in models.items()}, image
            label = "eval b1, a list of one 320 x 320 image"
        else:
            fns = {k: train_fn(m, images, targets) for k, m in models.items()}
            x, label = torch.zeros(len(images)), "train step b2 (SGD)"
        measured = measure(fns, x, args, reference="torchvision")
        results[case] = measured
        print(format_row(label, measured), flush=True)
    if "deploy" in args.cases:
        import onnxruntime
        machine["onnxruntime"] = onnxruntime.__version__
        print(f"\ndeployed end to end, onnxruntime {onnxruntime.__version__}, {args.threads} "
              f"threads, a list of one val2017 image; ratio = int8 / fp32 per repeat\n")
        print("| run | fp32 (ms) | int8 (ms) | median ratio | min-max | detections fp32 / "
              "int8 |")
        print("|---|---|---|---|---|---|")
        results["deploy"] = []
        for run in args.deployed:
            r = deployed(run, args)
            results["deploy"].append(r)
            t = r["timing"]
            for k in t:
                if k == "fp32":
                    continue
                name = r["run"] if k == "int8" else f"{r['run']} ({k}.onnx)"
                print(f"| {name} | {t['fp32']['median_ms']:.1f} | {t[k]['median_ms']:.1f} "
                      f"| {t[k]['ratio']:.3f} | {t[k]['ratio_min']:.3f}-{t[k]['ratio_max']:.3f}"
                      f" | {r['detections']['fp32']} / {r['detections'][k]} |", flush=True)
    if args.json:
        payload = {"machine": machine, "model": NAME if pair_cases else None, "check": check,
                   "settings": {k: str(v) if isinstance(v, Path) else v
                                for k, v in vars(args).items()},
                   "results": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
