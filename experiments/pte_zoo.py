"""Every registered model to ExecuTorch ``.pte`` files (XNNPACK), fp32 and int8: the check of
the whole zoo that ``make test`` cannot afford (lowering takes 15-20 s a model; the suite
lowers three classifiers, one head of each dense task and one detector).

    .venv/bin/python experiments/pte_zoo.py --out runs/pte-zoo.jsonl
    .venv/bin/python experiments/pte_zoo.py --models mobilenet_v2_100 ssdlite_mobilenet_v2_100 \\
        --out runs/pte-some.jsonl --no-int8

For each model (random weights, BatchNorm statistics and affine parameters randomised as the
tests' ``randomize_bn`` does, so that outputs depend on the input, then every BatchNorm gain
damped by 0.8 until the float32 model agrees with its float64 self within 1e-5 of its
largest output: the deep EfficientNetV2s are otherwise chaotic, see ``conditioned``;
``bn_gain_scale`` records the damping; detectors at 128 px, the rest at ``--resolution``,
default 64):

* fp32: ``export_pte``, then the file's outputs against PyTorch's on one random batch by the
  export rule, max |difference| <= 2e-5 x max |reference| + 1e-6, on every output (a
  detector's program: decoded boxes and scores against ``DetectorNetwork``);
* int8 (unless ``--no-int8``): ``quantize_xnnpack`` calibrated on 16 images of the built-in
  sample, ``export_pte``; the file's size against the fp32 file's, and its outputs against
  the fake-quantized PyTorch graph it was lowered from (XNNPACK's kernels round otherwise:
  the largest relative difference, and for class scores the share of argmax agreements: per
  pixel for segmentation, per default box or anchor for detectors, of the one image for
  classifiers).

One JSON line per model goes to ``--out`` as it finishes (an error is recorded, not raised);
a second run skips the models already there, so the script resumes after any stop. At the
end it prints a table of all lines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

import mobilenets
from mobilenets.data import SAMPLE_DIR
from mobilenets.deploy import open_model
from mobilenets.deploy.detection_export import DetectorNetwork, is_detector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import randomize_bn  # noqa: E402  (the tests' BatchNorm randomisation)

try:
    from mobilenets.deploy.runtimes.executorch import export_pte
    from mobilenets.deploy.runtimes.executorch.export import model_task
    from mobilenets.deploy.runtimes.executorch.quantize import quantize_xnnpack
except ImportError as e:
    sys.exit(f"{e}: this script needs ExecuTorch (pip install -e '.[mobile]')")


def tensors(out) -> list[torch.Tensor]:
    """A model's output as a list of tensors (dict values in order, tuple items, a tensor)."""
    if isinstance(out, dict):
        return list(out.values())
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def file_outputs(path: Path, x: torch.Tensor) -> list[torch.Tensor]:
    """Every output of the .pte file for the batch ``x``, in the file's order."""
    model = open_model(path)
    if hasattr(model, "decoded"):                   # a detector: the program's outputs
        return list(model.decoded(x).values())
    session = model.session
    name = session.get_inputs()[0].name
    return [torch.from_numpy(a) for a in session.run(None, {name: x.numpy()})]


def rule(got: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[bool, float]:
    """(every output within the export rule, the largest |difference| / max |reference|)."""
    ok, worst = len(got) == len(ref), 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            return False, float("inf")
        diff = (g.float() - r.float()).abs().max().item()
        scale = r.abs().max().item()
        ok &= diff <= 2e-5 * scale + 1e-6
        worst = max(worst, diff / max(scale, 1e-12))
    return ok, worst


def conditioned(model: torch.nn.Module, forward, x: torch.Tensor, tol: float = 1e-5,
                damping: float = 0.8, tries: int = 30) -> tuple[float, float]:
    """Make the randomised network well-conditioned in float32: a deep random network whose
    residual branches all have BatchNorm gains near 1 amplifies rounding from block to block
    (EfficientNetV2-L's outputs reach 2e8 and its float32 and float64 outputs differ by 85%),
    so that no runtime can be held to the export rule against it. While float32 differs from
    float64 by more than ``tol`` (relative to max |output|), every BatchNorm gain is
    multiplied by ``damping`` (``tol``: half the export rule's relative bound, so that the
    reference is accurate well within the rule). Returns (the total gain scale, the float32
    relative error)."""
    scale = 1.0
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for _ in range(tries):
        with torch.no_grad():
            out32 = tensors(forward(model, x))
            out64 = tensors(forward(model.double(), x.double()))
            model.float()
        err = max((a.double() - b).abs().max().item() / max(b.abs().max().item(), 1e-12)
                  for a, b in zip(out32, out64))
        if err <= tol or not bns:
            return scale, err
        with torch.no_grad():
            for m in bns:
                m.weight.mul_(damping)
        scale *= damping
    return scale, err


def check(name: str, args, tmp: Path) -> dict:
    torch.manual_seed(0)
    model = mobilenets.create_model(name)
    detector = is_detector(model)
    res = 128 if detector else args.resolution
    if not detector:
        model = mobilenets.create_model(name, resolution=res)
    model = randomize_bn(model).eval()
    row = {"model": name, "task": model_task(model), "resolution": res,
           "params": sum(p.numel() for p in model.parameters())}
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(1))

    def forward(m, batch):
        return DetectorNetwork(m)(batch) if detector else m(batch)
    row["bn_gain_scale"], row["float32_rel_err"] = conditioned(model, forward, x)
    with torch.no_grad():
        ref = tensors(forward(model, x))
    t0 = time.perf_counter()
    fp32 = export_pte(model, tmp / f"{name}.pte", resolution=res)
    row["fp32_lower_s"] = round(time.perf_counter() - t0, 1)
    row["fp32_mb"] = round(fp32.stat().st_size / 1e6, 2)
    row["fp32_within_rule"], row["fp32_rel_diff"] = rule(file_outputs(fp32, x), ref)
    if args.int8:
        t0 = time.perf_counter()
        qmodel = quantize_xnnpack(model, SAMPLE_DIR, num_images=16, resolution=res)
        int8 = export_pte(qmodel, tmp / f"{name}-int8.pte")
        row["int8_lower_s"] = round(time.perf_counter() - t0, 1)
        row["int8_size_ratio"] = round(int8.stat().st_size / fp32.stat().st_size, 3)
        with torch.no_grad():
            fq = tensors(qmodel(x))
        got = file_outputs(int8, x)
        row["int8_rel_diff_vs_fake_quant"] = round(rule(got, fq)[1], 4)
        scores = fq[-1] if detector else fq[0]      # class scores: last output of a detector
        out = got[-1] if detector else got[0]
        if scores.dim() >= 2 and scores.shape[1 if not detector else -1] > 1:
            dim = -1 if detector else 1
            row["int8_argmax_agreement"] = round(
                (out.argmax(dim) == scores.argmax(dim)).float().mean().item(), 4)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/pte-zoo.jsonl"))
    p.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--no-int8", dest="int8", action="store_false")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models or mobilenets.list_models()
    unknown = sorted(set(names) - set(mobilenets.list_models()))
    if unknown:
        sys.exit(f"not registered: {', '.join(unknown)} (mobilenets list shows the names)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["model"] for line in args.out.read_text().splitlines()} \
        if args.out.is_file() else set()
    for name in names:
        if name in done:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = check(name, args, Path(tmp))
            except Exception as e:                    # recorded: the zoo goes on
                row = {"model": name, "error": f"{type(e).__name__}: {e}"[:500],
                       "trace": traceback.format_exc()[-1500:]}
        row["torch"] = torch.__version__
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()]
    print("\n| model | task | px | fp32 within rule | fp32 rel. diff | int8 size | "
          "int8 vs fake-quant rel. diff | int8 argmax agreement |\n|---|---|---|---|---|---|"
          "---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | error: {r['error'][:80]} |")
            continue
        print(f"| {r['model']} | {r['task']} | {r['resolution']} | {r['fp32_within_rule']} | "
              f"{r['fp32_rel_diff']:.1e} | {r.get('int8_size_ratio', '-')} | "
              f"{r.get('int8_rel_diff_vs_fake_quant', '-')} | "
              f"{r.get('int8_argmax_agreement', '-')} |")


if __name__ == "__main__":
    main()
