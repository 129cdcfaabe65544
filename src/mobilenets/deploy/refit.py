"""Refit of an int8 QDQ file's convolutions to the float model, chosen per convolution.

For each convolution in graph order, reading the int8 file's own quantized input (the
earlier convolutions already refitted), three kinds of candidate are fitted to the float
file's output of that convolution: the int8 weights and bias as they are; the int8 weights
with the bias refitted (each channel's mean output exact); and least squares (ridge
regression towards the float weights, at each of :data:`RIDGES`), rounded to nearest on a new
grid with the bias refitted to the rounded weights. The calibration images are split in two
halves; each candidate is fitted on one and scored on the other, both ways, and the best is
fitted on all of them. Least squares is AdaQuant-style (Hubara et al. 2021, "Accurate post
training quantization with small calibration sets": the same layer-wise objective, here
solved in closed form and then rounded to nearest, where AdaQuant optimises with the
rounding in the loop); because it reads the int8 file's input it absorbs the part of the
activations' rounding error that is linear in that input, which a bias correction cannot.
The held-out choice keeps a fit from over-fitting small maps or coarsening a layer's grid,
which a single fixed ridge did (docs/results/2026-12-06-detection.md).
"""
from __future__ import annotations

import collections
import time

import numpy as np
import torch

DQ = "_DequantizeLinear_Output"

# The ridges least squares is tried at, as shares of the mean of the Gram matrix's diagonal
# (the inputs' mean squares and the bias column's 1), so they do not depend on the scale.
RIDGES = (1e-3, 1e-2, 1e-1, 1.0)


def conv_attributes(node) -> dict:
    """A Conv node's kernel, strides, pads (ONNX order: begins then ends), dilations and
    group, with ONNX's defaults."""
    import onnx
    a = {t.name: onnx.helper.get_attribute_value(t) for t in node.attribute}
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"{node.name}: auto_pad {a['auto_pad']!r} is not supported by the "
                         f"refit; export with explicit pads")
    return {"kernel": list(a["kernel_shape"]), "strides": list(a.get("strides", [1, 1])),
            "pads": list(a.get("pads", [0, 0, 0, 0])),
            "dilations": list(a.get("dilations", [1, 1])), "group": int(a.get("group", 1))}


def conv_columns(x: torch.Tensor, attrs: dict, pick: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """The inputs each output position of the convolution ``attrs`` reads from ``x``
    (N x C x H x W), per group, with a 1 appended for the bias: groups x (C / groups * kh *
    kw + 1) x (N * positions), the positions ``pick`` (indices into the flattened output
    map; all when None). Row order matches the weights' ``(C / groups, kh, kw)``."""
    top, left, bottom, right = attrs["pads"]
    x = torch.nn.functional.pad(x.double(), (left, right, top, bottom))
    cols = torch.nn.functional.unfold(x, attrs["kernel"], dilation=attrs["dilations"],
                                      stride=attrs["strides"])   # N x C*kh*kw x L
    if pick is not None:
        cols = cols[:, :, pick]
    n, d, length = cols.shape
    g = attrs["group"]
    cols = cols.reshape(n, g, d // g, length).permute(1, 2, 0, 3).reshape(g, d // g, -1)
    return torch.cat([cols, cols.new_ones(g, 1, cols.shape[-1])], 1)


def output_rows(y: torch.Tensor, groups: int, pick: torch.Tensor | None = None
                ) -> torch.Tensor:
    """The convolution's output ``y`` (N x C_out x H x W) as groups x (N * positions) x
    (C_out / groups), in :func:`conv_columns`' sample order."""
    y = y.double().flatten(2)
    if pick is not None:
        y = y[:, :, pick]
    n, c, length = y.shape
    return y.reshape(n, groups, c // groups, length).permute(1, 0, 3, 2).reshape(
        groups, n * length, c // groups)


def ridge_fit(gram: torch.Tensor, cross: torch.Tensor, start: torch.Tensor,
              alpha: float) -> torch.Tensor:
    """argmin_W |X^T W - Y|^2 + lambda |W - start|^2 per group, from ``gram`` = X X^T
    (g x d x d) and ``cross`` = X Y (g x d x k), with lambda = ``alpha`` times the mean of
    ``gram``'s diagonal. A ridge keeps the fit defined where an input channel never fires."""
    d = gram.shape[-1]
    ridge = alpha * gram.diagonal(dim1=1, dim2=2).mean(1)[:, None, None] * torch.eye(
        d, dtype=gram.dtype)
    return torch.linalg.solve(gram + ridge, cross + ridge @ start)


def squared_error(w: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor,
                  ysq: float) -> float:
    """sum over samples and outputs of (x^T w - y)^2, from those samples' statistics: ``ysq``
    (sum of y^2) - 2 <w, cross> + <w, gram w>, for the augmented weights ``w`` (g x d x k)."""
    return float(ysq - 2 * (w * cross).sum() + (w * (gram @ w)).sum())


def _tapped(proto, names: list[str]):
    """A session of ``proto`` in float arithmetic (optimisations off: a quantized
    convolution runs as dequantize -> conv -> quantize) that outputs ``names``."""
    import onnx
    import onnxruntime as ort
    from .runtimes.onnxruntime.session import inference_session
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return inference_session(m.SerializeToString(), so)


class _Layer:
    """One convolution of the int8 file: its float and int8 parameters and the statistics of
    its inputs against the float output, per half of the calibration images."""

    def __init__(self, node, w_f, b_f, qinit, producer, qmax: float | None):
        from onnx import numpy_helper
        self.node, self.w_f, self.b_f = node, w_f, b_f
        self.attrs = conv_attributes(node)
        self.g = self.attrs["group"]
        self.d, self.k = w_f[0].size + 1, w_f.shape[0] // self.g
        self.shape = (-1,) + (1,) * (w_f.ndim - 1)
        self.quantized = node.input[1].endswith(DQ)
        arr = lambda name: numpy_helper.to_array(qinit[name])  # noqa: E731
        if self.quantized:
            self.w_dq = producer[node.input[1]]
            self.b_dq = producer.get(node.input[2])
            x_dq = producer[node.input[0]]
            self.qweights = arr(self.w_dq.input[0])
            scale = arr(self.w_dq.input[1]).astype(np.float64)
            self.per_channel = scale.ndim == 1 and scale.size > 1
            self.scale0 = np.broadcast_to(scale, (w_f.shape[0],)).copy()
            self.qmax = qmax or (64.0 if np.abs(self.qweights.astype(np.int64)).max() <= 64
                                 else 127.0)
            self.w_orig = self.qweights * self.scale0.reshape(self.shape)
            self.b_orig = (arr(self.b_dq.input[0]).astype(np.float64)
                           * arr(self.b_dq.input[1]).astype(np.float64))
            self.x_scale = float(arr(x_dq.input[1]))
        else:
            self.w_orig, self.b_orig = w_f, b_f
        if self.w_orig.shape != w_f.shape:
            raise ValueError(f"{node.input[1]}: shape {w_f.shape} in the float file, "
                             f"{self.w_orig.shape} in the int8 file; refit from the float file "
                             f"it was quantized from")
        self.gram = [torch.zeros(self.g, self.d, self.d, dtype=torch.float64) for _ in "ab"]
        self.cross = [torch.zeros(self.g, self.d, self.k, dtype=torch.float64) for _ in "ab"]
        self.ysq = [0.0, 0.0]

    def add(self, half: int, x: np.ndarray, y: np.ndarray, pick) -> None:
        cols = conv_columns(torch.from_numpy(x), self.attrs, pick)
        rows = output_rows(torch.from_numpy(y), self.g, pick)
        self.gram[half] += cols @ cols.transpose(1, 2)
        self.cross[half] += cols @ rows
        self.ysq[half] += float((rows ** 2).sum())

    def augmented(self, w, b) -> torch.Tensor:
        return torch.cat([torch.as_tensor(w).reshape(self.g, -1, self.d - 1),
                          torch.as_tensor(b).reshape(self.g, -1, 1)], 2).transpose(1, 2)

    def mean_bias(self, w, gram, cross) -> np.ndarray:
        """The bias that makes each channel's mean output exact with weights ``w``."""
        total, count = gram[:, -1, :-1], gram[:, -1, -1]
        wg = torch.as_tensor(w).reshape(self.g, -1, self.d - 1)
        return ((cross[:, -1, :] - (wg @ total[:, :, None]).squeeze(2)) / count[:, None]
                ).reshape(-1).numpy()

    def candidate(self, kind, gram, cross) -> tuple:
        """(weights as the file will compute them, bias, int weights, scale, weights before
        rounding) of ``kind`` ("original", "bias" or a ridge) fitted on ``gram``, ``cross``."""
        q = (self.qweights, self.scale0) if self.quantized else (None, None)
        if kind == "original":
            return (self.w_orig, self.b_orig) + q + (self.w_orig,)
        if kind == "bias":
            return (self.w_orig, self.mean_bias(self.w_orig, gram, cross)) + q + (self.w_orig,)
        start = self.augmented(self.w_f, self.b_f)
        w = ridge_fit(gram, cross, start, kind)[:, :-1].transpose(1, 2).reshape(
            self.w_f.shape).numpy()
        if not self.quantized:
            return w, self.mean_bias(w, gram, cross), None, None, w
        peak = (np.abs(w).reshape(w.shape[0], -1).max(1) if self.per_channel
                else np.full(w.shape[0], np.abs(w).max()))
        scale = np.maximum(peak / self.qmax, 1e-12)
        w_q = np.clip(np.round(w / scale.reshape(self.shape)), -self.qmax, self.qmax)
        w_used = w_q * scale.reshape(self.shape)
        return w_used, self.mean_bias(w_used, gram, cross), w_q, scale, w

    def choose(self, kinds) -> object:
        """The kind with the least error on each half when fitted on the other."""
        errors = {}
        for kind in kinds:
            errors[kind] = sum(
                squared_error(self.augmented(*self.candidate(kind, self.gram[h],
                                                             self.cross[h])[:2]),
                              self.gram[1 - h], self.cross[1 - h], self.ysq[1 - h])
                for h in (0, 1))
        return min(errors, key=errors.get)

    def write(self, kind, qinit: dict) -> None:
        """Put ``kind`` fitted on all the images into the file's initializers."""
        w, b, w_q, scale, w_raw = self.candidate(kind, self.gram[0] + self.gram[1],
                                                 self.cross[0] + self.cross[1])
        if not self.quantized:
            _replace(qinit, self.node.input[1], np.asarray(w).astype(np.float32))
            _replace(qinit, self.node.input[2], np.asarray(b).astype(np.float32))
            return
        # a channel whose weights are (nearly) all zero, as some of EfficientNet-Lite0's
        # ImageNet ones are, needs a grid coarse enough for its bias to fit in int32
        need = np.abs(b) / (self.x_scale * 2**30)
        if (scale < need).any():
            scale = np.maximum(scale, need) if self.per_channel else np.full_like(
                scale, max(scale.max(), need.max()))
            w_q = np.clip(np.round(w_raw / scale.reshape(self.shape)), -self.qmax, self.qmax)
            b = self.mean_bias(w_q * scale.reshape(self.shape), self.gram[0] + self.gram[1],
                               self.cross[0] + self.cross[1])
        _replace(qinit, self.w_dq.input[0], np.asarray(w_q).astype(self.qweights.dtype))

        def as_stored(v, name):        # per channel, or the file's own per-tensor shape
            return v if self.per_channel else v[:1].reshape(tuple(qinit[name].dims))

        _replace(qinit, self.w_dq.input[1],
                 as_stored(scale, self.w_dq.input[1]).astype(np.float32))
        bscale = (self.x_scale * scale).astype(np.float32)
        _replace(qinit, self.b_dq.input[1], as_stored(bscale, self.b_dq.input[1]))
        limit = np.iinfo(np.int32)
        _replace(qinit, self.b_dq.input[0],
                 np.clip(np.round(b / bscale), limit.min, limit.max).astype(np.int32))


def refit_convolutions(float_proto, int8_proto, batches, input_name: str, *,
                       positions: int = 2048, seed: int = 0,
                       ridges: tuple[float, ...] = RIDGES, qmax: float | None = None) -> dict:
    """Refit the convolutions of ``int8_proto`` (a QDQ ModelProto, changed in place) whose
    weight initializer ``float_proto`` (the float model it was quantized from, same names
    and shapes) has: per convolution, in graph order, the candidate of the module docstring
    with the least held-out error on ``batches`` (``positions`` output positions of each
    image, drawn with ``seed``; batches alternate between the two halves, so give at least
    two). Convolutions kept in float are refitted in float; those without a bias, or int8
    ones whose input or bias is not dequantized from int8, are left as they are ("skipped").
    ``qmax``: the int8 weights' largest magnitude (127, or 64 for 7-bit weights); None reads
    it from each convolution's weights. Returns how often each candidate was chosen and the
    seconds it took."""
    from onnx import numpy_helper
    if len(batches) < 2:
        raise ValueError("the refit needs at least two calibration batches: it scores each "
                         "half's fits on the other")
    if positions < 1:
        raise ValueError(f"positions must be >= 1, not {positions}")
    finit = {i.name: numpy_helper.to_array(i) for i in float_proto.graph.initializer}
    fconv = {n.input[1]: n.output[0] for n in float_proto.graph.node if n.op_type == "Conv"}
    qinit = {i.name: i for i in int8_proto.graph.initializer}
    producer = {o: n for n in int8_proto.graph.node for o in n.output}
    kinds = ("original", "bias", *ridges)
    start, chosen = time.perf_counter(), collections.Counter()
    for node in [n for n in int8_proto.graph.node if n.op_type == "Conv"]:
        weight = node.input[1].removesuffix(DQ)
        if weight not in fconv:
            continue
        if len(node.input) < 3 or not node.input[2] or not _supported(node, producer, qinit):
            chosen["skipped"] += 1
            continue
        bias = node.input[2]
        w_f = finit[weight].astype(np.float64)
        b_f = finit[bias].astype(np.float64) if bias in finit else np.zeros(w_f.shape[0])
        layer = _Layer(node, w_f, b_f, qinit, producer, qmax)
        fsess = _tapped(float_proto, [fconv[weight]])
        qsess = _tapped(int8_proto, [node.input[0]])
        gen = torch.Generator().manual_seed(seed)
        for i, batch in enumerate(batches):
            feed = {input_name: batch.numpy()}
            (y,) = fsess.run([fconv[weight]], feed)
            (x,) = qsess.run([node.input[0]], feed)
            length = y.shape[2] * y.shape[3]
            pick = (torch.randperm(length, generator=gen)[:positions]
                    if length > positions else None)
            layer.add(i % 2, x, y, pick)
        kind = layer.choose(kinds)
        chosen[str(kind)] += 1
        if kind != "original":
            layer.write(kind, qinit)
    return {"chosen": dict(chosen), "seconds": round(time.perf_counter() - start, 1)}


def _supported(node, producer: dict, qinit: dict) -> bool:
    """Whether the refit can rewrite ``node``: a float convolution whose weight and bias are
    initializers, or an int8 one whose input, weight and bias all come from
    DequantizeLinear."""
    if not node.input[1].endswith(DQ):
        return node.input[1] in qinit and node.input[2] in qinit
    return all(producer.get(t) is not None and producer[t].op_type == "DequantizeLinear"
               for t in node.input[:3])


def _replace(init: dict, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper
    init[name].CopyFrom(numpy_helper.from_array(value, name))


__all__ = ["RIDGES", "conv_columns", "output_rows", "refit_convolutions", "ridge_fit",
           "squared_error"]
