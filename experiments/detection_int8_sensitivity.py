"""Which convolutions of an int8 detector move its boxes, and how many must stay in float for
the int8 file to keep 95% of the float file's confident boxes at IoU 0.9 (issue 23's
criterion): a one-at-a-time sensitivity ranking, then files with the k most sensitive
convolutions kept in float, scored as ``experiments/detection.py int8`` scores them.

    .venv/bin/python experiments/detection_int8_sensitivity.py \\
        runs/detection/ssdlite-efficientnet_lite0 --json runs/detection/int8-sensitivity.json

* **ranking**: the int8 file ``RUN/int8/int8.onnx`` run in float arithmetic (onnxruntime's
  optimisations off: each quantized convolution as dequantize -> float conv -> quantize) on
  ``--images`` train2017 images, once as it is and once per convolution with that one
  convolution given its float weights and its float input (its output is still quantized
  where the next layer reads it). The error is the mean squared difference from the float
  file of the box regressions the post-processing reads, over their variance in the float
  file; a convolution's sensitivity is how much the error falls when it alone is in float.
* **mixed files**: ``quantize_onnx`` with the ``--top`` most sensitive convolutions in
  ``exclude`` beside its default ones (a detector's prediction convolutions), the same
  calibration as ``experiments/detection.py int8`` (128 train2017 images, percentile, 8-bit
  weights unless ``--reduce-range on``), run with onnxruntime's
  int8 kernels on every val2017 and train2017 image: the share of the float file's
  detections found at IoU >= 0.9 with the same label (scoring >= ``--conf``, and all).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from detection import coco128, commit  # noqa: E402
from detection_int8_probes import (SPLITS, run_files, score_files, split_images,  # noqa: E402
                                   tapped_session)


def head_tensors(fp32, q) -> tuple[list[str], list[str], list[bool]]:
    """The tensors the post-processing reads, as named in the float and in the int8 file,
    and whether each is a box regression (a convolution with 4 outputs per anchor, not 91)."""
    from mobilenets.deploy.detection_export import postprocess_nodes
    post = set(postprocess_nodes(fp32))
    fprod = {o: n for n in fp32.graph.node for o in n.output}
    qnodes = {n.name: n for n in q.graph.node}
    fnames, qnames, boxes = [], [], []
    for n in fp32.graph.node:
        if n.name not in post:
            continue
        for i, t in enumerate(n.input):
            if t in fprod and fprod[t].name not in post and fprod[t].op_type == "Conv":
                fnames.append(t)
                qnames.append(qnodes[n.name].input[i])
                conv = fprod[t]
                w = next(x for x in fp32.graph.initializer if x.name == conv.input[1])
                boxes.append(w.dims[0] % 91 != 0)
    return fnames, qnames, boxes


def floated(q, fp32, conv_name: str):
    """A copy of the QDQ model ``q`` in which the convolution ``conv_name`` reads its float
    input (before the QuantizeLinear) and its float weights (zero-padded where the int8 file
    padded depthwise channels)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(q)
    prod = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.name == conv_name)
    fconv = next(n for n in fp32.graph.node if n.name == conv_name)
    finit = {i.name: i for i in fp32.graph.initializer}
    # The float input is the float file's tensor. In the int8 file a tensor of that name may
    # hold something else: quantization folds a ReLU6 after a convolution into the uint8
    # range and gives the convolution the activation's output name. Then the float file's
    # activation is copied in, renamed, reading that pre-activation tensor.
    fprod = {o: n for n in fp32.graph.node for o in n.output}
    tensor = fconv.input[0]
    if tensor in fprod and tensor in prod and prod[tensor].op_type != fprod[tensor].op_type:
        act = fprod[tensor]
        if (act.op_type not in ("Clip", "Relu")
                or prod[tensor].op_type != fprod[act.input[0]].op_type):
            raise ValueError(f"{conv_name}: no float path to its input in the int8 file")
        copy = onnx.NodeProto()
        copy.CopyFrom(act)
        copy.name, copy.output[0] = "float_" + act.name, "float_" + tensor
        copy.input[0] = tensor
        m.graph.node.append(copy)
        qinit = {i.name for i in m.graph.initializer}
        m.graph.initializer.extend(finit[i] for i in act.input[1:] if i and i not in qinit)
        tensor = copy.output[0]
    elif tensor not in prod and tensor not in {i.name for i in m.graph.input}:
        raise ValueError(f"{conv_name}: its input {tensor} is not in the int8 file")
    conv.input[0] = tensor
    wdq = prod.get(conv.input[1])
    if wdq is not None and wdq.op_type == "DequantizeLinear" and fconv.input[1] in finit:
        w = numpy_helper.to_array(finit[fconv.input[1]])
        shape = [d for d in next(i for i in m.graph.initializer if i.name == wdq.input[0]).dims]
        if list(w.shape) != shape:
            full = np.zeros(shape, dtype=w.dtype)
            full[:w.shape[0], :w.shape[1]] = w
            w = full
        name = conv_name + "_float_weight"
        m.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), name))
        conv.input[1] = name
    return m


def outputs_of(proto, names: list[str], batches, input_name: str, threads: int,
               optimised: bool = False) -> list[list[np.ndarray]]:
    session = tapped_session(proto, names, optimised, threads)
    return [session.run(names, {input_name: b.numpy()}) for b in batches]


def box_error(ref, got, boxes: list[bool]) -> float:
    """Mean over the box-regression tensors of their squared error over their variance."""
    errs = []
    for j, is_box in enumerate(boxes):
        if not is_box:
            continue
        f = np.concatenate([r[j].ravel() for r in ref])
        g = np.concatenate([x[j].ravel() for x in got])
        errs.append(float(np.mean((f - g) ** 2) / max(np.var(f), 1e-12)))
    return float(np.mean(errs))


def ranking(fp32_path: Path, q_path: Path, calib: Path, num_images: int,
            threads: int) -> tuple[list[tuple[str, float]], float]:
    import onnx
    from mobilenets.deploy.quantize import _fp32_onnx, calibration_input
    with tempfile.TemporaryDirectory() as tmp:
        _, preprocess = _fp32_onnx(fp32_path, Path(tmp) / "fp32.onnx", None)
    fp32, q = onnx.load(str(fp32_path)), onnx.load(str(q_path))
    name, batches = calibration_input(q, calib, preprocess, num_images, seed=1)
    fnames, qnames, boxes = head_tensors(fp32, q)
    ref = outputs_of(fp32, fnames, batches, name, threads)
    base = box_error(ref, outputs_of(q, qnames, batches, name, threads), boxes)
    convs = [n.name for n in q.graph.node if n.op_type == "Conv"]
    start, gains = time.perf_counter(), []
    for k, conv in enumerate(convs):
        err = box_error(ref, outputs_of(floated(q, fp32, conv), qnames, batches, name,
                                        threads), boxes)
        gains.append((conv, base - err))
        if k % 10 == 9:
            print(f"  {k + 1}/{len(convs)} convolutions, {time.perf_counter() - start:.0f} s",
                  flush=True)
    gains.sort(key=lambda g: -g[1])
    return gains, base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a detection run folder with int8/fp32.onnx and int8/int8.onnx")
    p.add_argument("--images", type=int, default=32, help="train2017 images for the ranking")
    p.add_argument("--top", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--reduce-range", choices=("on", "off"), default="off")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ranking", default=None,
                   help="a JSON this script wrote: reuse its ranking instead of measuring one")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from mobilenets.deploy import quantize_onnx
    folder, fp32, int8 = run_files(args.run)
    data = coco128()
    train = data / "images" / "train2017"
    t0 = time.perf_counter()
    if args.ranking:
        old = json.loads(Path(args.ranking).read_text())
        base = old["box_error_all_int8"]
        gains = [(r["conv"], r["gain"] * base) for r in old["ranking"]]
        args.images = old["ranking_images"]
    else:
        gains, base = ranking(fp32, int8, train, args.images, args.threads)
    print(f"ranking: {len(gains)} convolutions, box error of int8.onnx {base:.4g}, "
          f"{time.perf_counter() - t0:.0f} s; most sensitive: "
          + ", ".join(f"{n} {g / base:.1%}" for n, g in gains[:16]), flush=True)
    # the k most sensitive beside what int8.onnx keeps in float (by default a detector's
    # prediction convolutions), read from its quantization metadata
    import onnx
    from mobilenets.deploy import open_model
    from mobilenets.deploy.quantize import excluded_nodes
    preset = json.loads(open_model(int8).metadata["quantization"])["exclude"]
    kept = excluded_nodes(onnx.load(str(fp32)), preset)      # a list, a preset or None
    ranked = [n for n, _ in gains if n not in kept]
    extra = f" beside the file's {len(kept)}" if kept else ""
    files = {f"0 more convolutions in float{extra}": int8}
    for k in args.top:
        files[f"{k} more convolutions in float{extra}"] = quantize_onnx(
            fp32, folder / f"int8-float{k}.onnx", train, num_images=128,
            exclude=kept + ranked[:k], reduce_range=args.reduce_range == "on")
    results = {split: score_files(fp32, files, split_images(data, split), args.conf, split)
               for split in SPLITS}
    record = {"commit": commit(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "run": Path(args.run).name, "ranking_images": args.images,
              "box_error_all_int8": base,
              "ranking": [{"conv": n, "gain": g / base} for n, g in gains],
              "conf": args.conf, "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
