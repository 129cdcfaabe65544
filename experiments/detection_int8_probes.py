"""Where an int8 detector's boxes move, and whether bias correction brings them back: two
probes on the files ``experiments/detection.py int8`` leaves in ``RUN/int8/`` (``fp32.onnx``
and ``int8.onnx``), scored as that command scores them (the float file's detections that
the other file finds at IoU >= 0.9 with the same label, all of them and those scoring at
least ``--conf``, on COCO128's val2017 and train2017 images).

    .venv/bin/python experiments/detection_int8_probes.py \\
        runs/detection/ssdlite-efficientnet_lite0 --json runs/detection/int8-probes.json

* **weights only**: the float file with every convolution's weights replaced by the int8
  file's own (dequantized: the same grid, 7 or 8 bits), activations in float. What the
  weights' rounding alone costs; the rest of the int8 loss is the activations'.
* **activations only**: the int8 file with the float file's weights: quantized activations,
  float weights: what the activations' ranges cost with the weights exact. Weights rounded
  to nearest add the difference between this file and the int8 one.
* **percentile**: the float file quantized again as the int8 file was (its calibration
  images, weight bits and exclusions) with percentile calibration at each of
  ``--percentiles`` (the default keeps 99.999% of each activation's values in range):
  narrower activation ranges round finer and clip more.
* **bias correction** (empirical, sequential; Nagel et al. 2019, "Data-free quantization",
  section 4.2, with measured means): for each convolution in graph order, the per-channel
  mean of its output (before the activation, which the int8 file folds into the quantized
  range) over ``--images`` calibration images is measured in the int8 file (in float
  arithmetic) and in the float file, and the int8 file's int32 bias moves by the difference,
  so later convolutions are measured with the earlier ones corrected. The corrected file is
  ``RUN/int8/int8-bias-corrected.onnx``, run with onnxruntime's int8 kernels.
* **same anchor**: for each float detection scoring at least ``--conf``, the candidate it
  came from (the anchor and class whose score going into NonMaxSuppression equals its score)
  and that same candidate's box in the int8 file, before NMS: the share within IoU 0.9.
  Where the final detections differ but these agree, the int8 file predicted the box and NMS
  kept another of the overlapping candidates, whose scores nearly tie.

* **merge NMS**: both files' final detections with each box replaced by the mean of the
  same-class candidates overlapping it by more than ``--merge-iou`` (each weighted by its
  IoU with the kept box times its score; the "merge" of YOLOv5's NMS, a form of weighted
  box fusion), computed here from the candidates going into NonMaxSuppression and the
  files' own kept boxes. A kept box is then a mean over its cluster, so when int8 keeps a
  near-tied neighbour instead, the box moves less: does post-processing that is continuous
  in the scores bring the share to 95%?

* **least squares** (AdaQuant's layer-wise fit, Hubara et al. 2021, in closed form, with
  rounding to nearest rather than learnt): for each convolution in graph order, its weights
  and bias refitted by ridge regression (``--alpha``, towards the float weights) so that,
  reading the int8 file's own quantized input (in float arithmetic, with the earlier
  convolutions already refitted), it gives the float file's output of that convolution on
  ``--positions`` output positions of each of ``--images`` calibration images; the weights
  are then rounded to nearest on a new per-channel grid and the bias fitted again to the
  rounded weights. Unlike the bias correction it can undo any error linear in the inputs,
  not only their mean. ``RUN/int8/int8-least-squares.onnx``, int8 kernels.
* **predictions in float**: the float file quantized again as the int8 file was, with the
  prediction convolutions (those feeding the box decoding) kept in float, so the class
  logits and box offsets are not rounded to one uint8 grid per level on their way out.
  ``--refit predictions-float`` makes the least squares start from this file.
* **output error**: for the int8 file and each file the probes above made, the squared
  difference of the boxes and scores going into NonMaxSuppression from the float file's,
  over the variance of the float file's: the network's error before NMS reorders anything.

``--probes`` picks some of them (the bias correction takes about 20 minutes, the least
squares 11 to 19 on one thread).
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
from detection import coco128, commit, match_share  # noqa: E402

SPLITS = ("val2017", "train2017")
PROBES = ("weights-only", "activations-only", "bias-correction", "predictions-float",
          "least-squares", "output-error", "same-anchor", "merge-nms")
DQ = "_DequantizeLinear_Output"


def run_files(run: str) -> tuple[Path, Path, Path]:
    """``RUN/int8/`` and its fp32.onnx and int8.onnx, which ``experiments/detection.py int8``
    writes; exits naming that command where they are missing."""
    folder = Path(run) / "int8"
    fp32, int8 = folder / "fp32.onnx", folder / "int8.onnx"
    if not (fp32.is_file() and int8.is_file()):
        raise SystemExit(f"{folder} lacks fp32.onnx or int8.onnx: run experiments/detection.py "
                         f"int8 --runs {Path(run).name} first")
    return folder, fp32, int8


def tapped_session(proto, names: list[str], optimised: bool = True,
                   threads: int | None = None):
    """An onnxruntime session of ``proto`` (a ModelProto or a path) that also outputs the
    tensors ``names``; ``optimised=False`` runs it in float arithmetic (optimisations off:
    each quantized convolution as dequantize -> conv -> quantize)."""
    import onnx
    import onnxruntime as ort
    from mobilenets.deploy.runtimes.onnxruntime.session import inference_session
    m = onnx.ModelProto()
    m.CopyFrom(proto if isinstance(proto, onnx.ModelProto) else onnx.load(str(proto)))
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    if not optimised:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return inference_session(m.SerializeToString(), so)


def conv_outputs(proto, quantized: bool) -> dict[str, str]:
    """weight initializer name -> output of its convolution (the same weight names in the
    float file and, with ``DQ`` appended, in the QDQ file)."""
    return {(n.input[1].removesuffix(DQ) if quantized else n.input[1]): n.output[0]
            for n in proto.graph.node if n.op_type == "Conv"}


def channel_means(proto, names: list[str], batches, input_name: str,
                  float_arithmetic: bool) -> list[np.ndarray]:
    """Per-channel means of the tensors ``names`` over every image of ``batches``."""
    session = tapped_session(proto, names, optimised=not float_arithmetic)
    sums, count = [0.0] * len(names), 0
    for batch in batches:
        outs = session.run(names, {input_name: batch.numpy()})
        sums = [s + o.astype(np.float64).sum(axis=(0, 2, 3)) / (o.shape[2] * o.shape[3])
                for s, o in zip(sums, outs)]
        count += len(batch)
    return [s / count for s in sums]


def weights_only(fp32: Path, int8: Path, out: Path) -> Path:
    """The float file with the int8 file's dequantized convolution weights."""
    import onnx
    from onnx import numpy_helper
    f, q = onnx.load(str(fp32)), onnx.load(str(int8))
    qinit = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    dq = {n.output[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    finit = {i.name: i for i in f.graph.initializer}
    replaced = 0
    for weight in conv_outputs(q, True):
        node = dq.get(weight + DQ)
        if node is None or weight not in finit:
            continue
        w = qinit[node.input[0]].astype(np.float32)
        scale = qinit[node.input[1]].astype(np.float32)
        w = w * scale.reshape(-1, *[1] * (w.ndim - 1)) if scale.ndim else w * scale
        orig = numpy_helper.to_array(finit[weight])
        finit[weight].CopyFrom(numpy_helper.from_array(
            w[:orig.shape[0], :orig.shape[1]].astype(np.float32), weight))  # drop padding
        replaced += 1
    onnx.save(f, str(out))
    print(f"weights only: {replaced} convolutions with the int8 file's weights", flush=True)
    return out


def activations_only(fp32: Path, int8: Path, out: Path) -> Path:
    """The int8 file with every convolution reading the float file's weights (zero-padded to
    the int8 file's shape) instead of its dequantized int8 ones: quantized activations, float
    weights: what the activations' ranges cost with the weights exact."""
    import onnx
    from onnx import numpy_helper
    f, q = onnx.load(str(fp32)), onnx.load(str(int8))
    finit = {i.name: numpy_helper.to_array(i) for i in f.graph.initializer}
    qinit = {i.name: i for i in q.graph.initializer}
    dq = {n.output[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    replaced = 0
    for node in q.graph.node:
        if node.op_type != "Conv" or not node.input[1].endswith(DQ):
            continue
        weight = node.input[1].removesuffix(DQ)
        if weight not in finit or dq[node.input[1]].input[0] not in qinit:
            continue
        shape = qinit[dq[node.input[1]].input[0]].dims
        w = np.zeros(shape, np.float32)
        orig = finit[weight]
        w[:orig.shape[0], :orig.shape[1]] = orig
        q.graph.initializer.append(numpy_helper.from_array(w, weight + "_float"))
        node.input[1] = weight + "_float"
        replaced += 1
    onnx.save(q, str(out))
    print(f"activations only: {replaced} convolutions with the float file's weights", flush=True)
    return out


def quantized_again(fp32: Path, int8: Path, out: Path, calib: Path, **change) -> Path:
    """``fp32`` quantized as ``int8`` was (the recipe its metadata records: calibration
    images, method and percentile, weight bits and layout, activation type, exclusions,
    channel padding and target), with the ``quantize_onnx`` arguments ``change`` changed."""
    from mobilenets.deploy import open_model, quantize_onnx
    q = json.loads(open_model(int8).metadata["quantization"])
    recipe = {"num_images": q["num_images"], "exclude": q["exclude"],
              "reduce_range": "7-bit" in q["weights"],
              "per_channel": "per-channel" in q["weights"],
              "activation_type": q["activations"], "calibrate_method": q["calibration"],
              "channel_multiple": q["channel_multiple"], "target": q["target"],
              **({"percentile": q["percentile"]} if "percentile" in q else {})}
    return quantize_onnx(fp32, out, calib, **(recipe | change))


def requantized(fp32: Path, int8: Path, out: Path, calib: Path, percentile: float) -> Path:
    """``fp32`` quantized again as ``int8`` was, with percentile calibration at
    ``percentile``."""
    from mobilenets.deploy import open_model
    method = json.loads(open_model(int8).metadata["quantization"])["calibration"]
    if method != "percentile":
        raise SystemExit(f"{int8} was calibrated by {method}, not percentile")
    return quantized_again(fp32, int8, out, calib, percentile=percentile)


def predictions_float(fp32: Path, int8: Path, out: Path, calib: Path) -> Path:
    """``fp32`` quantized again as ``int8`` was, with its prediction convolutions (those
    feeding the box decoding) kept in float: its class logits and box offsets then leave the
    network unrounded (SSDLite all in int8, ``exclude="none"``, rounds each level's logits on
    one uint8 grid)."""
    return quantized_again(fp32, int8, out, calib, exclude="predictions")


def bias_corrected(fp32: Path, int8: Path, out: Path, calib: Path, num_images: int) -> Path:
    import onnx
    from onnx import numpy_helper
    from mobilenets.deploy.quantize import _fp32_onnx, calibration_input
    with tempfile.TemporaryDirectory() as tmp:
        _, preprocess = _fp32_onnx(fp32, Path(tmp) / "fp32.onnx", None)
    f, q = onnx.load(str(fp32)), onnx.load(str(int8))
    name, batches = calibration_input(q, calib, preprocess, num_images, seed=0)
    fo, qo = conv_outputs(f, False), conv_outputs(q, True)
    init = {i.name: i for i in q.graph.initializer}
    weights = [w for w in qo if w in fo and w.removesuffix("weight") + "bias_quantized" in init]
    target = channel_means(f, [fo[w] for w in weights], batches, name, False)
    start, moved = time.perf_counter(), []
    for weight, want in zip(weights, target):
        (got,) = channel_means(q, [qo[weight]], batches, name, True)
        shift = want - got[:len(want)]
        bias = weight.removesuffix("weight") + "bias_quantized"
        scale = numpy_helper.to_array(init[bias + "_scale"]).astype(np.float64)
        b = numpy_helper.to_array(init[bias]).astype(np.int64)
        b[:len(shift)] += np.round(shift / scale[:len(shift)]).astype(np.int64)
        init[bias].CopyFrom(numpy_helper.from_array(b.astype(np.int32), bias))
        moved.append(float(np.abs(shift).max()))
    onnx.save(q, str(out))
    print(f"bias correction: {len(weights)} convolutions, largest mean shift "
          f"{max(moved):.3f}, {time.perf_counter() - start:.0f} s", flush=True)
    return out


def least_squares(fp32: Path, int8: Path, out: Path, calib: Path, num_images: int,
                  alpha: float, positions: int) -> Path:
    """The int8 file with each convolution's weights and bias refitted, in graph order, to
    the float file's output of that convolution from the int8 file's own (quantized) input,
    by ridge regression towards the float weights, then rounded to nearest on a new
    per-channel grid (the file's 7 or 8 bits) and the bias fitted again to the rounded
    weights. Files with per-tensor weights or padded depthwise channels are refused."""
    import onnx
    from onnx import numpy_helper
    from mobilenets.deploy import open_model
    from mobilenets.deploy.quantize import _fp32_onnx, calibration_input
    from mobilenets.deploy.refit import conv_attributes, conv_columns, output_rows, ridge_fit
    meta = json.loads(open_model(int8).metadata["quantization"])
    if "per-channel" not in meta["weights"] or meta.get("depthwise_padded"):
        raise SystemExit(f"{int8}: the least squares handles per-channel weights without "
                         f"padded depthwise channels, not {meta['weights']} with "
                         f"{meta.get('depthwise_padded')} padded")
    qmax = 64 if "7-bit" in meta["weights"] else 127
    with tempfile.TemporaryDirectory() as tmp:
        _, preprocess = _fp32_onnx(fp32, Path(tmp) / "fp32.onnx", None)
    f, q = onnx.load(str(fp32)), onnx.load(str(int8))
    name, batches = calibration_input(q, calib, preprocess, num_images, seed=0)
    finit = {i.name: numpy_helper.to_array(i) for i in f.graph.initializer}
    qinit = {i.name: i for i in q.graph.initializer}
    fo = conv_outputs(f, False)
    start, report = time.perf_counter(), []
    for node in [n for n in q.graph.node if n.op_type == "Conv"]:
        weight = node.input[1].removesuffix(DQ)
        quantized = node.input[1].endswith(DQ)
        if weight not in fo:
            continue
        bias = node.input[2].removesuffix(DQ) if len(node.input) > 2 else None
        if bias is None:
            raise SystemExit(f"{weight}: a convolution without a bias is not handled")
        w_f = finit[weight].astype(np.float64)
        b_f = (finit[bias].astype(np.float64) if bias in finit
               else np.zeros(w_f.shape[0]))
        fsess = tapped_session(f, [fo[weight]], optimised=False, threads=1)
        qsess = tapped_session(q, [node.input[0]], optimised=False, threads=1)
        gen = torch.Generator().manual_seed(0)
        attrs = conv_attributes(node)
        gram = cross = None
        for batch in batches:
            (y,) = fsess.run([fo[weight]], {name: batch.numpy()})
            (x,) = qsess.run([node.input[0]], {name: batch.numpy()})
            length = y.shape[2] * y.shape[3]
            pick = (torch.randperm(length, generator=gen)[:positions]
                    if length > positions else None)
            cols = conv_columns(torch.from_numpy(x), attrs, pick)
            gram = cols @ cols.transpose(1, 2) + (0 if gram is None else gram)
            cross = (cols @ output_rows(torch.from_numpy(y), cols.shape[0], pick)
                     + (0 if cross is None else cross))
        g, d = gram.shape[0], gram.shape[1]
        w0 = torch.from_numpy(w_f).reshape(g, -1, d - 1)  # g x C_out/g x d-1
        w0 = torch.cat([w0, torch.from_numpy(b_f).reshape(g, -1, 1)], 2).transpose(1, 2)
        fit = ridge_fit(gram, cross, w0, alpha)  # g x d x C_out/g
        w_new = fit[:, :-1].transpose(1, 2).reshape(w_f.shape)
        total = gram[:, -1, :-1]  # g x d-1: the inputs' sums
        count = gram[:, -1, -1]
        if quantized:
            dq = next(n for n in q.graph.node if n.output[0] == node.input[1])
            scale_old = numpy_helper.to_array(qinit[dq.input[1]]).astype(np.float64)
            peak = w_new.abs().flatten(1).amax(1).numpy()
            scale = np.where(peak > 0, peak / qmax, scale_old)
            wq = np.clip(np.round(w_new.numpy() / scale.reshape(-1, *[1] * (w_f.ndim - 1))),
                         -qmax, qmax)
            qinit[dq.input[0]].CopyFrom(numpy_helper.from_array(wq.astype(np.int8),
                                                                dq.input[0]))
            w_used = torch.from_numpy(wq * scale.reshape(-1, *[1] * (w_f.ndim - 1)))
        else:
            w_used = w_new
            qinit[weight].CopyFrom(numpy_helper.from_array(w_new.numpy().astype(np.float32),
                                                           weight))
        def mean_bias(w: torch.Tensor) -> np.ndarray:
            """The bias that makes each channel's mean output exact with weights ``w``."""
            wg = w.reshape(g, -1, d - 1)  # g x C_out/g x d-1
            b = (cross[:, -1, :] - (wg @ total[:, :, None]).squeeze(2)) / count[:, None]
            return b.reshape(-1).numpy()

        b = mean_bias(w_used)
        if (bias + "_quantized" in qinit) != quantized:
            raise SystemExit(f"{weight}: weights and bias must be both quantized or both float")
        if quantized:
            bq = bias + "_quantized"
            x_dq = next(n for n in q.graph.node if n.output[0] == node.input[0])
            x_scale = float(numpy_helper.to_array(qinit[x_dq.input[1]]))
            # a channel whose weights are (nearly) all zero, as some of EfficientNet-Lite0's
            # ImageNet ones are, gets a grid coarse enough for its bias to fit in int32: its
            # weights, rounded again on that grid, stay (nearly) zero
            need = np.abs(b) / (x_scale * 2**30)
            coarse = scale < need
            if coarse.any():
                scale[coarse] = need[coarse]
                wq[coarse] = np.clip(np.round(w_new.numpy()[coarse] / scale[coarse].reshape(
                    -1, *[1] * (w_f.ndim - 1))), -qmax, qmax)
                qinit[dq.input[0]].CopyFrom(numpy_helper.from_array(wq.astype(np.int8),
                                                                    dq.input[0]))
                b = mean_bias(torch.from_numpy(wq * scale.reshape(-1, *[1] * (w_f.ndim - 1))))
            qinit[dq.input[1]].CopyFrom(numpy_helper.from_array(scale.astype(np.float32),
                                                                dq.input[1]))
            bscale = (x_scale * scale).astype(np.float32)
            qinit[bq + "_scale"].CopyFrom(numpy_helper.from_array(bscale, bq + "_scale"))
            qinit[bq].CopyFrom(numpy_helper.from_array(
                np.round(b / bscale).astype(np.int32), bq))
        elif bias in qinit:
            qinit[bias].CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias))
        else:
            raise SystemExit(f"{weight}: its float bias {bias} is not an initializer")
        change = float(np.abs(w_new.numpy() - w_f).max() / max(np.abs(w_f).max(), 1e-12))
        report.append(change)
    onnx.save(q, str(out))
    print(f"least squares: {len(report)} convolutions refitted on {num_images} images, "
          f"largest weight change {max(report):.3f} of the layer's largest, "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return out


def nms_inputs(fp32: Path) -> list[str]:
    """The tensors going into the file's NonMaxSuppression: the candidates' boxes B x N x 4
    and their scores B x C x N (column k: label k + 1)."""
    import onnx
    nms = next(n for n in onnx.load(str(fp32)).graph.node if n.op_type == "NonMaxSuppression")
    return list(nms.input[:2])


def output_error(fp32: Path, files: dict[str, Path], images) -> dict[str, dict[str, float]]:
    """label -> the mean squared difference between each file's boxes and scores going into
    NonMaxSuppression and the float file's, over the variance of the float file's, on
    ``images``: how far each file's network output is from the float one, before NMS."""
    from mobilenets.deploy import open_model
    names = nms_inputs(fp32)
    ref = tapped_session(fp32, names, threads=1)
    sessions = {label: tapped_session(path, names, threads=1) for label, path in files.items()}
    input_name, prepare = ref.get_inputs()[0].name, open_model(fp32).prepare
    sq = {label: np.zeros(len(names)) for label in files}
    total, total_sq, count = np.zeros(len(names)), np.zeros(len(names)), np.zeros(len(names))
    for img in images:
        x = {input_name: prepare([img])[0].numpy()}
        want = [o.astype(np.float64) for o in ref.run(names, x)]
        total += [w.sum() for w in want]
        total_sq += [(w ** 2).sum() for w in want]
        count += [w.size for w in want]
        for label, session in sessions.items():
            sq[label] += [((o - w) ** 2).sum() for o, w in zip(session.run(names, x), want)]
    variance = total_sq / count - (total / count) ** 2
    return {label: {"boxes": float(e[0] / count[0] / variance[0]),
                    "scores": float(e[1] / count[1] / variance[1])} for label, e in sq.items()}

def same_anchor(fp32: Path, int8: Path, images, conf: float) -> dict:
    """The same-anchor probe on ``images``: ``total`` float detections scoring >= ``conf``,
    ``same_anchor`` of them whose candidate's int8 box is within IoU 0.9, ``missed`` of them
    the final int8 detections lack (IoU 0.9, same label), ``missed_same_anchor`` of those
    whose candidate's int8 box is within IoU 0.9, and the candidates' IoU and int8 score
    for each missed one."""
    from torchvision.ops import box_iou
    from mobilenets.deploy import open_model
    names = nms_inputs(fp32)
    sf, sq = (tapped_session(path, names, threads=1) for path in (fp32, int8))
    input_name = sf.get_inputs()[0].name
    fdet, qdet = open_model(fp32), open_model(int8)
    out = {"total": 0, "same_anchor": 0, "missed": 0, "missed_same_anchor": 0, "misses": []}
    for img in images:
        a, b = fdet([img])[0], qdet([img])[0]
        keep = a["scores"] >= conf
        if not keep.any():
            continue
        boxes, labels, scores = a["boxes"][keep], a["labels"][keep], a["scores"][keep]
        found = ((box_iou(boxes, b["boxes"]) >= 0.9) & (labels[:, None] == b["labels"][None])
                 ).any(1) if len(b["boxes"]) else torch.zeros(len(boxes), dtype=torch.bool)
        x = fdet.prepare([img])[0].numpy()              # the batch the file itself reads
        bf, pf = sf.run(names, {input_name: x})
        bq, pq = sq.run(names, {input_name: x})
        for s, hit in zip(scores.tolist(), found.tolist()):
            c, n = np.unravel_index(np.argmin(np.abs(pf[0] - s)), pf[0].shape)
            iou = box_iou(torch.from_numpy(bf[0, n:n + 1]), torch.from_numpy(bq[0, n:n + 1]))
            same = float(iou) >= 0.9
            out["total"] += 1
            out["same_anchor"] += same
            if not hit:
                out["missed"] += 1
                out["missed_same_anchor"] += same
                out["misses"].append({"iou": round(float(iou), 4), "score": round(s, 4),
                                      "int8_score": round(float(pq[0, c, n]), 4)})
    return out


def merge_nms(fp32: Path, int8: Path, images, conf: float, thresholds: list[float]) -> dict:
    """The merge-NMS probe on ``images``: for each IoU threshold (0: the files' own hard-NMS
    detections), the share of the float file's detections that the int8 file finds at IoU
    >= 0.9 with the same label, both post-processed the same way; (matched, total) for
    those scoring >= ``conf`` and for all."""
    from torchvision.ops import box_iou
    from mobilenets.deploy import open_model
    from mobilenets.deploy.exported_detector import DETECTION_OUTPUTS
    names = nms_inputs(fp32) + list(DETECTION_OUTPUTS)     # candidates, then padded finals
    sf, sq = (tapped_session(path, names, threads=1) for path in (fp32, int8))
    input_name = sf.get_inputs()[0].name
    fdet = open_model(fp32)                    # only prepares the images the files read
    score_thresh = fdet.score_thresh

    def detections(outs, threshold: float) -> dict:
        cand_boxes, cand_scores, boxes, scores, labels, num = (torch.as_tensor(o[0])
                                                                for o in outs)
        n = int(num)
        boxes, scores, labels = boxes[:n], scores[:n], labels[:n]
        if threshold and n:
            iou = box_iou(boxes, cand_boxes)                   # kept x candidates
            same = cand_scores[labels - 1]                     # score column k: label k + 1
            w = torch.where((iou > threshold) & (same > score_thresh), iou * same, 0.0)
            boxes = w @ cand_boxes / w.sum(1, keepdim=True)    # the kept box itself: w > 0
        return {"boxes": boxes, "scores": scores, "labels": labels}

    pairs = {t: ([], []) for t in thresholds}
    with torch.inference_mode():
        for img in images:
            x = {input_name: fdet.prepare([img])[0].numpy()}
            of, oq = sf.run(names, x), sq.run(names, x)
            for t in thresholds:
                pairs[t][0].append(detections(of, t))
                pairs[t][1].append(detections(oq, t))
    return {str(t): {"matched_at_conf": match_share(a, b, min_score=conf),
                     "matched_all": match_share(a, b)} for t, (a, b) in pairs.items()}


def split_images(data: Path, split: str) -> list[torch.Tensor]:
    """Every image of COCO128's ``split``, as float 3 x H x W in [0, 1]."""
    from mobilenets.data.image_io import decode_rgb
    return [decode_rgb(p).float() / 255
            for p in sorted((data / "images" / split).glob("*.jpg"))]


def score_files(fp32: Path, files: dict[str, Path], images, conf: float,
                split: str) -> dict[str, dict]:
    """label -> the share of the float file's detections on ``images`` that each of
    ``files`` finds at IoU >= 0.9 with the same label: those scoring >= ``conf``
    (``matched_at_conf``) and all (``matched_all``), each (matched, total); printed too."""
    from mobilenets.deploy import open_model
    out = {}
    with torch.inference_mode():
        detector = open_model(fp32)
        found = [detector([img])[0] for img in images]
        for label, path in files.items():
            detector = open_model(path)
            kept = [detector([img])[0] for img in images]
            at, every = match_share(found, kept, min_score=conf), match_share(found, kept)
            out[label] = {"matched_at_conf": at, "matched_all": every}
            print(f"{split} {label}: {at[0]}/{at[1]} scoring >= {conf:g} "
                  f"({100 * at[0] / max(at[1], 1):.1f}%), all {every[0]}/{every[1]} "
                  f"({100 * every[0] / max(every[1], 1):.1f}%)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a detection run folder with int8/fp32.onnx and int8/int8.onnx")
    p.add_argument("--images", type=int, default=64,
                   help="train2017 calibration images for the bias correction and the least "
                        "squares")
    p.add_argument("--alpha", type=float, default=1e-3,
                   help="least squares: the ridge towards the float weights, as a share of "
                        "the mean of the Gram matrix's diagonal (the inputs' mean squares and "
                        "the bias column's 1)")
    p.add_argument("--positions", type=int, default=2048,
                   help="least squares: output positions drawn per image and convolution")
    p.add_argument("--refit", choices=("int8", "predictions-float"), default="int8",
                   help="least squares: the file to refit (predictions-float needs that probe)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--probes", nargs="*", default=list(PROBES), choices=PROBES,
                   help="the probes to run (none: only --percentiles)")
    p.add_argument("--percentiles", type=float, nargs="+", default=[],
                   help="also score the float file quantized again at these calibration "
                        "percentiles (e.g. 99.99 99.9)")
    p.add_argument("--merge-iou", type=float, nargs="+", default=[0.0, 0.55, 0.7, 0.8],
                   help="merge-NMS thresholds (0: hard NMS, the files' own detections)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if not all(0 <= t < 1 for t in args.merge_iou):
        p.error("--merge-iou thresholds must be in [0, 1): a kept box must be in its own "
                "cluster")
    if args.refit == "predictions-float" and "predictions-float" not in args.probes:
        p.error("--refit predictions-float needs the predictions-float probe in --probes")
    from mobilenets.deploy import open_model
    folder, fp32, int8 = run_files(args.run)
    kept = json.loads(open_model(int8).metadata["quantization"])["exclude"]
    if "predictions-float" in args.probes and kept:
        if args.refit == "predictions-float":
            raise SystemExit(f"{int8} already keeps {kept} in float: use --refit int8")
        print(f"predictions in float: skipped, {int8} already keeps {kept} in float", flush=True)
        args.probes.remove("predictions-float")
    data = coco128()
    files = {"int8": int8}
    if "weights-only" in args.probes:
        files["weights only"] = weights_only(fp32, int8, folder / "weights-only.onnx")
    if "activations-only" in args.probes:
        files["activations only"] = activations_only(fp32, int8,
                                                     folder / "activations-only.onnx")
    for pct in args.percentiles:
        files[f"int8, percentile {pct}"] = requantized(
            fp32, int8, folder / f"int8-p{pct}.onnx", data / "images" / "train2017", pct)
    if "bias-correction" in args.probes:
        files["int8, bias-corrected"] = bias_corrected(
            fp32, int8, folder / "int8-bias-corrected.onnx", data / "images" / "train2017",
            args.images)
    if "predictions-float" in args.probes:
        files["int8, predictions in float"] = predictions_float(
            fp32, int8, folder / "int8-predictions-float.onnx", data / "images" / "train2017")
    if "least-squares" in args.probes:
        start = "int8" if args.refit == "int8" else "int8, predictions in float"
        base = files[start]
        files[f"{start}, least squares"] = least_squares(
            fp32, base, folder / f"{base.stem}-least-squares.onnx",
            data / "images" / "train2017", args.images, args.alpha, args.positions)
    quantization = json.loads(open_model(int8).metadata["quantization"])
    results = {}
    for split in SPLITS:
        images = split_images(data, split)
        results[split] = score_files(fp32, files, images, args.conf, split)
        if "output-error" in args.probes:
            r = results[split]["output error"] = output_error(fp32, files, images)
            for label, e in r.items():
                print(f"{split} {label}: boxes {e['boxes']:.2e}, scores {e['scores']:.2e} of "
                      f"the float file's variance (squared error before NMS)", flush=True)
        if "same-anchor" in args.probes:
            r = results[split]["same anchor"] = same_anchor(fp32, int8, images, args.conf)
            print(f"{split} same anchor: {r['same_anchor']}/{r['total']} candidates' int8 "
                  f"boxes within IoU 0.9; of the {r['missed']} final detections int8 lacks, "
                  f"{r['missed_same_anchor']} (candidate IoU "
                  f"{min([m['iou'] for m in r['misses']], default=1):.3f}-"
                  f"{max([m['iou'] for m in r['misses']], default=1):.3f})", flush=True)
        if "merge-nms" in args.probes:
            r = results[split]["merge nms"] = merge_nms(fp32, int8, images, args.conf,
                                                        args.merge_iou)
            for t, v in r.items():
                (a, n), (b, m) = v["matched_at_conf"], v["matched_all"]
                print(f"{split} merge NMS at IoU {t}: {a}/{n} scoring >= {args.conf:g} "
                      f"({100 * a / max(n, 1):.1f}%), all {b}/{m} "
                      f"({100 * b / max(m, 1):.1f}%)", flush=True)
    record = {"commit": commit(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "run": Path(args.run).name, "weights": quantization["weights"],
              "probes": args.probes,
              **({"bias_correction_images": args.images}
                 if "bias-correction" in args.probes else {}),
              **({"least_squares": {"images": args.images, "alpha": args.alpha,
                                    "positions": args.positions, "refit": args.refit}}
                 if "least-squares" in args.probes else {}),
              "conf": args.conf, "merge_iou": args.merge_iou, "percentiles": args.percentiles,
              "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
