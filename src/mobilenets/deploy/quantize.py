"""Post-training static int8 quantization to an ONNX QDQ file (onnxruntime.quantization).

The fp32 export is pre-processed (``quant_pre_process``), calibrated on real images from an
image folder, and quantized in the QDQ format: symmetric per-channel int8 weights and
asymmetric uint8 activations (U8S8), the form whose convolutions onnxruntime's CPU kernels
run with VNNI ``vpdpbusd`` (unsigned x signed) directly, so uint8 is the default: symmetric
int8 activations (S8S8) were about as slow as fp32 (docs/results/2026-11-24-int8-deploy.md). Spatial ReduceMeans of a
file from elsewhere become GlobalAveragePool first (as in our export), which onnxruntime runs
in int8. The result keeps the fp32 export's
``metadata_props`` (model name, preprocessing, class names), so ``OnnxModel``, ``eval``,
``predict`` and ``bench`` take it like any export.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import torch

from ..data.calibration import calibration_batches
from ..data.transforms import at_resolution, check_rgb_model
from .detection_export import postprocess_nodes
from .onnx_graph import is_quantized
from .runtimes.onnxruntime.channel_pad import INT8_DEPTHWISE_MULTIPLE, pad_depthwise_channels
from .onnx_export import export_onnx, mean_to_global_pool, save_checked
from .onnx_model import OnnxModel
from .open import open_model

ACTIVATION_TYPES = ("uint8", "int8")


class _FromTarget:
    """The default of a ``quantize_onnx`` option: the target runtime's recipe value."""

    def __repr__(self) -> str:
        return "FROM_TARGET"


FROM_TARGET = _FromTarget()

# What each runtime's int8 kernels want, as quantize_onnx's defaults for ``target``. Both run
# convolutions on uint8 activations x int8 weights (VNNI on x86). Depthwise channel padding is
# for onnxruntime's fast int8 depthwise kernels, which need a multiple of 16 channels;
# OpenVINO's kernels have no such need, so its files keep their channel counts.
INT8_RECIPES = {
    "onnxruntime": {"activation_type": "uint8", "channel_multiple": INT8_DEPTHWISE_MULTIPLE},
    "openvino": {"activation_type": "uint8", "channel_multiple": None},
}
CALIBRATE_METHODS = ("minmax", "percentile", "entropy")
DEFAULT_PERCENTILE = 99.999          # onnxruntime's own default for CalibPercentile


def calibration_reader(input_name: str, batches: list[torch.Tensor]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds the calibration batches to onnxruntime's calibrator, one per call;
        ``set_range`` limits it to batches [start, end) (``CalibStridedMinMax`` rounds)."""

        def __init__(self):
            self.items = iter(batches)

        def __len__(self):
            return len(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {input_name: x.numpy()}

        def rewind(self):
            self.items = iter(batches)

        def set_range(self, start_index: int, end_index: int):
            self.items = iter(batches[start_index:end_index])

    return Reader()


# onnxruntime's calibrators keep every activation of every calibration batch of a round in
# memory before reducing them to ranges or histograms: 128 images of a 320 px detector came to
# about 17 GB. Rounds of at most this many activation bytes bound it. minmax ranges merge
# exactly across rounds; percentile histograms merge by widening at the same bin width (the
# same thresholds to about 0.1%); entropy's threshold search runs over the merged histogram,
# which rounds make wider than a single pass's, so its ranges depend on the rounds (the
# file's metadata records how many).
CALIBRATION_MEMORY = 3 * 2**30


def activation_bytes(proto, batch: int) -> int:
    """Bytes of the float tensors of ``proto``'s graph (its shape-inferred ``value_info``)
    for one batch of ``batch``; a symbolic leading dimension counts as ``batch``, tensors of
    other unknown sizes are left out (the post-processing's data-dependent ones)."""
    import onnx
    total = 0
    for info in proto.graph.value_info:
        t = info.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = [d.dim_value or (batch if i == 0 else 0) for i, d in enumerate(t.shape.dim)]
        if dims and all(d > 0 for d in dims):
            total += 4 * math.prod(dims)
    return total


def calibration_stride(proto, batches: list[torch.Tensor],
                       budget: int | None = None) -> int | None:
    """Batches per calibration round so that a round's activations stay within ``budget``
    bytes (default :data:`CALIBRATION_MEMORY`): None when all batches fit in one round (the
    result is then onnxruntime's single-pass one), else the largest divisor of the batch count
    that fits (onnxruntime's rounds must divide it; at least 1)."""
    budget = CALIBRATION_MEMORY if budget is None else budget
    per_batch = activation_bytes(proto, len(batches[0])) if batches else 0
    if not batches or per_batch * len(batches) <= budget:
        return None
    fit = max(1, budget // max(per_batch, 1))
    return max(d for d in range(1, min(fit, len(batches)) + 1) if len(batches) % d == 0)


def calibration_input(proto, calib_dir, preprocess: dict, num_images: int,
                      seed: int = 0, detection: dict | None = None, task: str | None = None
                      ) -> tuple[str, list[torch.Tensor]]:
    """The name of ``proto``'s first input and the calibration batches for it (its fixed
    batch size, or 8 when the batch is symbolic). ``detection``: a detector file's metadata
    entry; its images are then prepared as the file will be fed (:func:`detection_batches`).
    ``task``: the file's, whose data set ``calib_dir`` may be (:func:`task_images`)."""
    first = proto.graph.input[0]
    dims = first.type.tensor_type.shape.dim
    batch = dims[0].dim_value or 8
    check_rgb_model(dims[1].dim_value or 3, "int8 calibration")
    if detection is not None:
        size = dims[2].dim_value or preprocess["resolution"]
        batches = detection_batches(calib_dir, detection.get("resize", "stretch"), size,
                                    preprocess, num_images, batch, seed)
    else:
        batches = calibration_batches(task_images(calib_dir, task), preprocess, num_images,
                                      batch, seed)
    return first.name, batches if dims[0].dim_value else equal_batches(batches, batch)


def equal_batches(batches: list[torch.Tensor], most: int) -> list[torch.Tensor]:
    """``batches`` regrouped into batches of one size, the largest divisor of the image count
    up to ``most``: onnxruntime's histogram calibrators stack a round's outputs, which fails
    on a smaller last batch (a file with a symbolic batch takes any size)."""
    if len({len(b) for b in batches}) <= 1:
        return batches
    images = torch.cat(batches)
    size = max(d for d in range(1, most + 1) if len(images) % d == 0)
    return list(images.split(size))


def task_images(calib, task: str | None):
    """What a ``task`` model calibrates on when ``calib`` is a data set of that task: the
    photos of its training split (a segmentation folder's, not its masks; a depth folder's
    training pairs', not their depth maps), as a list of files; else ``calib`` as given (an
    image folder, its ``train/`` if it has one)."""
    from ..data import DataError
    try:
        if task == "segmentation":
            from ..tasks.segmentation.data import detect_layout, find_split
            detect_layout(Path(calib))
            return [image for image, _ in find_split(calib, "train").pairs]
        if task == "depth":
            from ..tasks.depth.data import split_pairs
            return [image for image, _ in split_pairs(calib)[0]]
    except (DataError, ValueError, OSError):
        pass                                      # not such a data set: a folder of images
    return calib


def detection_images(calib) -> Path:
    """The images a detector calibrates on: a YOLO data set's (its folder or data YAML)
    training split, else the folder ``calib`` itself (its ``train/`` if it has one)."""
    from ..tasks.detection.data import NAME_FILES, split_dirs, yolo_data
    path = Path(calib)
    if path.is_file() or (path.is_dir() and (path / "images").is_dir()
                          and any((path / n).is_file() for n in NAME_FILES)):
        spec = yolo_data(path)
        return split_dirs(spec.root, spec.train)[0]
    return path


def detection_batches(calib, resize: str, size: int, preprocess: dict, num_images: int,
                      batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    """Calibration batches for a detector: ``num_images`` images of :func:`detection_images`
    of ``calib``, each resized to ``size`` as the detector does (``resize``: ``stretch`` or
    ``letterbox``) and normalised with ``preprocess``'s mean and std, as
    :class:`~.exported_detector.DetectionInput` prepares the file's input."""
    from .exported_detector import DetectionInput
    prepare = DetectionInput(resize, size, preprocess["mean"], preprocess["std"])
    return calibration_batches(detection_images(calib), None, num_images, batch_size, seed,
                               prepare=lambda images: prepare(images)[0])


@contextlib.contextmanager
def histogram_errors(method: str):
    """Turn numpy's failure inside onnxruntime's histogram calibrators (percentile, entropy)
    into an error that says what to do: an activation whose values span too small a range for
    2048 bins, as in an untrained model whose activations vanish, cannot be histogrammed."""
    try:
        yield
    except ValueError as e:
        if "Too many bins" not in str(e):
            raise
        raise ValueError(f"{method} calibration failed: an activation spans a range too small "
                         f"to histogram (numpy: {e}); this happens with untrained models whose "
                         f"activations vanish. Calibrate a trained model, or use minmax "
                         f"calibration (--calibration minmax)") from None


def _fp32_onnx(model, path: Path, resolution: int | None) -> tuple[Path, dict]:
    """Write (or copy) the fp32 ONNX of ``model`` (a model, an fp32 ``.onnx`` file or
    OnnxModel, or a saved-model folder) to ``path``; its file and preprocessing."""
    import onnx

    if isinstance(model, (str, Path)):
        model = open_model(model, purpose="int8 ranges")
    if isinstance(model, OnnxModel):
        src = Path(model.path)
        onnx_model = model
        if is_quantized(src):
            raise ValueError(f"{src} is already quantized")
        fixed, preprocess = onnx_model.fixed_resolution, onnx_model.preprocess
        if resolution and fixed and fixed != resolution:
            raise ValueError(f"{src} takes {fixed} px inputs; export the model again at "
                             f"{resolution} px")
        if resolution and fixed is None:       # a file of any input size: calibrate at this
            preprocess = at_resolution(preprocess, resolution)
        onnx.save(onnx.load(str(src)), str(path))
        return path, preprocess
    export_onnx(model, path, resolution=resolution)
    return path, OnnxModel(path).preprocess


def _same_file(a, b: Path) -> bool:
    """True if ``a`` (the model argument) names the file ``b``."""
    a = a.path if isinstance(a, OnnxModel) else a
    if not isinstance(a, (str, Path)) or not Path(a).exists() or not b.exists():
        return False
    return Path(a).resolve() == b.resolve()


_ACTIVATIONS = ("Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "LeakyRelu")


def _check_inlined(fp32, pre, names) -> None:
    """Raise for excluded node names of the fp32 file that onnxruntime's pre-processing
    replaced (a function such as HardSwish inlined into unnamed HardSigmoid and Mul nodes),
    which quantize_static can no longer find by name."""
    kept = {n.name for n in pre.graph.node}
    gone = [n for n in fp32.graph.node if n.name in set(names) - kept]
    if gone:
        raise ValueError(
            f"exclude names node(s) that onnxruntime's pre-processing inlines into unnamed "
            f"nodes, which cannot be kept in float by name: "
            f"{', '.join(f'{n.name} ({n.op_type})' for n in gone)}; exclude the nodes around "
            f"them (e.g. the convolution that feeds them) instead")


def excluded_nodes(proto, exclude: str | list[str] | None) -> list[str]:
    """Node names to keep in float: a list of names, or a preset: ``"classifier"`` (the
    last Gemm/MatMul), ``"se"`` (each squeeze-excite gate: a HardSigmoid/Sigmoid and the Mul
    that scales a feature map by it; hard-swish's ``x * hardsigmoid(x)`` is not one),
    ``"output"`` (the last two convolutions and their activations: a dense model's output
    layers, whose rounding a depth map shows directly), ``"predictions"`` (a detector's
    prediction convolutions, those feeding the box decoding: a YOLO head's one output tensor
    holds box offsets, objectness and class logits, whose ranges differ, under one int8
    scale), ``"none"``, presets joined by ``+`` (e.g. ``"classifier+se"``), or None
    (nothing)."""
    if exclude is None or isinstance(exclude, (list, tuple)):
        unknown = sorted(set(exclude or []) - {n.name for n in proto.graph.node})
        if unknown:
            raise ValueError(f"exclude names node(s) not in the graph: {', '.join(unknown)}; "
                             f"node names are those of the fp32 ONNX file (see them with "
                             f"onnx.load(path).graph.node or Netron)")
        return list(exclude or [])
    parts = set(exclude.split("+")) - {"none"}
    if parts - {"classifier", "se", "output", "predictions"}:
        raise ValueError(f"unknown exclude preset {exclude!r}: use 'classifier', 'se', "
                         f"'output', 'predictions', 'none', several joined by '+' or a list "
                         f"of node names")
    nodes, names = proto.graph.node, []
    if "predictions" in parts:
        if {p.key: p.value for p in proto.metadata_props}.get("task") != "detection":
            raise ValueError("exclude='predictions' is for detector files (export_onnx of a "
                             "detector); this file's metadata names no detection task")
        post = set(postprocess_nodes(proto))
        producer = {o: n for n in nodes for o in n.output}
        names += sorted({producer[i].name for n in nodes if n.name in post for i in n.input
                         if i in producer and producer[i].op_type == "Conv"})
    if "classifier" in parts:
        names += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
    if "se" in parts:
        gates = {n.output[0]: n for n in nodes if n.op_type in ("HardSigmoid", "Sigmoid")}
        for mul in (n for n in nodes if n.op_type == "Mul"):
            for i, name in enumerate(mul.input[:2]):
                gate = gates.get(name)
                if gate is not None and mul.input[1 - i] != gate.input[0]:   # not x * f(x)
                    names += [gate.name, mul.name]
    if "output" in parts:
        convs = [n for n in nodes if n.op_type == "Conv"][-2:]
        outs = {n.output[0] for n in convs}
        names += [n.name for n in convs]
        names += [n.name for n in nodes if n.op_type in _ACTIVATIONS and n.input[0] in outs]
    return names


# Nodes kept in float by default, per detector head. A YOLO level's one prediction conv puts
# box offsets, objectness and 80 class logits in one tensor under one int8 scale, the class
# logits' range coarsening the boxes: on the trained COCO128 YOLOv4 (MobileNetV3-Large) the
# int8 file found 15 of the float file's 37 confident detections at IoU 0.9, 29 with the
# prediction convs in float. SSDLite's box and class predictions are separate convolutions,
# each level's 91-class logits on one uint8 grid: in float, on a VNNI CPU with 8-bit
# weights, two trained SSDLites kept more confident boxes at IoU 0.9 on their training
# images (Lite0 344 of 370 against 327, MobileNetV2 146 of 155 against 142) and on val 2 and
# 4 more (194 of 206, 82 of 86; within or at the edge of what a rerun or input noise moves),
# losing none, for 5-10% (Lite0, two noisy runs) and ~6% (MobileNetV2, one run) more int8
# latency and the float weights' size. On an AVX2 CPU with 7-bit weights it moved two boxes
# either way; ssdlite320 files are not measured. exclude="none" quantizes them.
# docs/results/2026-12-06-detection.md has the runs.
DETECTOR_EXCLUDE = {"yolov4": "predictions", "ssdlite": "predictions",
                    "ssdlite320": "predictions"}

# Calibration images quantize_onnx(refit=True) uses (whole batches, at least two): the
# batches alternate between two halves, each scoring the fits made on the other.
REFIT_IMAGES = 32


def default_exclude(meta: dict) -> str | None:
    """``exclude``'s default for a file with ONNX metadata ``meta``: :data:`DETECTOR_EXCLUDE`
    of its detector head, else None."""
    if meta.get("task") != "detection":
        return None
    try:
        head = json.loads(meta.get("config", "{}")).get("head")
    except ValueError:
        return None
    return DETECTOR_EXCLUDE.get(head)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where that cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_vnni() -> bool:
    """Whether this CPU has a VNNI int8 dot product (AVX-512 VNNI or AVX-VNNI), from
    :func:`cpu_flags`; True where they cannot be read or the CPU is not x86 (ARM's int8
    kernels do not overflow this way)."""
    flags = cpu_flags()
    return "avx2" not in flags or bool({"avx512_vnni", "avx_vnni"} & flags)


def quantize_onnx(model, out_path, calib_dir, *, num_images: int = 128,
                  per_channel: bool = True, resolution: int | None = None,
                  activation_type: str = FROM_TARGET, calibrate_method: str = "percentile",
                  exclude: str | list[str] | None = None, seed: int = 0,
                  channel_multiple: int | None = FROM_TARGET,
                  target: str = "onnxruntime", reduce_range: bool | None = None,
                  percentile: float | None = None, refit: bool = False,
                  refit_images: int | None = None) -> Path:
    """Quantize ``model`` (a mobilenets model, or an fp32 ``.onnx`` file) to an int8 QDQ ONNX
    file at ``out_path``, calibrated on ``num_images`` images of ``calib_dir``.

    ``target``: the runtime the file is for (``INT8_RECIPES``); it gives the defaults of
    ``activation_type`` and ``channel_multiple``. The file is standard QDQ either way.
    Weights: symmetric int8, per output channel when ``per_channel``. Activations:
    ``activation_type`` uint8 (asymmetric, the fast one in onnxruntime on x86) or int8
    (symmetric). ``calibrate_method``: percentile (the default: each activation's range is
    +-the ``percentile``-th percentile of its absolute values, 99.999 when None, clamped to
    the values seen; onnxruntime's ``CalibPercentile``), minmax (the extremes) or entropy;
    percentile lost less top-1 on the models compared
    (docs/results/2026-11-24-int8-deploy.md). ``exclude``: nodes kept in float (see
    :func:`excluded_nodes`; onnxruntime re-quantizes such a convolution inside the network
    unless its session disables ``WeightBiasQuantization``, as the library's do:
    docs/known-issues.md); None: :func:`default_exclude` (a detector's prediction
    convolutions, otherwise nothing), ``"none"``: nothing. ``channel_multiple``:
    depthwise channel counts are padded with zero channels to a multiple of it (the same
    outputs, onnxruntime's fast int8 depthwise kernels;
    :mod:`.runtimes.onnxruntime.channel_pad`); None leaves them. The file keeps the fp32
    export's metadata plus a ``quantization`` entry; returns ``out_path``. In a detector
    file the post-processing after the network (box decoding, softmax, NMS, top-k:
    :func:`~.detection_export.postprocess_nodes`) stays in float. ``reduce_range``: weights
    in 7 bits (-64..64), which x86 CPUs without a VNNI dot product need: their int8
    convolutions add pairs of uint8 x int8 products in 16 bits, which overflow with full-range
    weights and cost several top-1 points (onnxruntime's advice); None: when the CPU
    quantizing the file has no VNNI (:func:`cpu_has_vnni`), where the file usually runs.
    ``refit``: afterwards, refit each convolution on the first :data:`REFIT_IMAGES`
    calibration images, at least two batches (:func:`~.refit.refit_convolutions`: least
    squares to the float model's outputs from the int8 file's own inputs, or the bias alone,
    or nothing, whichever does best on held-out calibration images); slower to make.
    ``refit_images``: refit on this many calibration images instead (whole batches; the time
    grows with it).
    """
    try:
        import onnx
        from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:
        raise ImportError(f"int8 quantization needs onnx and onnxruntime ({e}); pip install "
                          f"'mobilenets[deploy]'") from None
    if target not in INT8_RECIPES:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(INT8_RECIPES)}")
    recipe = INT8_RECIPES[target]
    if activation_type is FROM_TARGET:
        activation_type = recipe["activation_type"]
    if channel_multiple is FROM_TARGET:
        channel_multiple = recipe["channel_multiple"]
    if activation_type not in ACTIVATION_TYPES:
        raise ValueError(f"activation_type must be one of {ACTIVATION_TYPES}")
    if calibrate_method not in CALIBRATE_METHODS:
        raise ValueError(f"calibrate_method must be one of {CALIBRATE_METHODS}")
    if percentile is not None and calibrate_method != "percentile":
        raise ValueError(f"percentile={percentile} applies to calibrate_method='percentile' "
                         f"only, not {calibrate_method!r}")
    if percentile is None:
        percentile = DEFAULT_PERCENTILE
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile must be in (50, 100], not {percentile!r}: the share of "
                         f"each activation's values inside its int8 range, e.g. 99.999")
    if channel_multiple is not None and (not isinstance(channel_multiple, int)
                                         or channel_multiple < 2):
        raise ValueError(f"channel_multiple must be an int >= 2 or None, not "
                         f"{channel_multiple!r}")
    if refit_images is not None and (not refit or refit_images < 2):
        raise ValueError(f"refit_images={refit_images!r} needs refit=True and at least 2 images")
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    out_path = Path(out_path)
    if _same_file(model, out_path):
        raise ValueError(f"out_path {out_path} is the fp32 file being quantized; give "
                         f"another path")
    with tempfile.TemporaryDirectory() as tmp:
        fp32, preprocess = _fp32_onnx(model, Path(tmp) / "fp32.onnx", resolution)
        proto = onnx.load(str(fp32))
        meta = {p.key: p.value for p in proto.metadata_props}
        if exclude is None:
            exclude = default_exclude(meta)
        pooled = mean_to_global_pool(proto)
        padded = pad_depthwise_channels(proto, channel_multiple) if channel_multiple else 0
        if pooled or padded:
            onnx.save(proto, str(fp32))
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        before, proto = proto, onnx.load(str(pre))
        if isinstance(exclude, (list, tuple)):
            _check_inlined(before, proto, exclude)
        detection = (json.loads(meta["detection"]) if meta.get("task") == "detection"
                     and meta.get("detection") else None)
        input_name, batches = calibration_input(proto, calib_dir, preprocess, num_images, seed,
                                                detection, meta.get("task"))
        if refit and len(batches) < 2:
            raise ValueError(f"refit scores each half of the calibration batches on the other: "
                             f"give num_images of at least two batches ({len(batches)} batch of "
                             f"{len(batches[0])} now)")
        stride = calibration_stride(proto, batches)
        symmetric = activation_type == "int8"
        with contextlib.redirect_stdout(io.StringIO()), histogram_errors(calibrate_method):
            quantize_static(
                str(pre), str(Path(tmp) / "int8.onnx"), calibration_reader(input_name, batches),
                quant_format=QuantFormat.QDQ, per_channel=per_channel,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method={"minmax": CalibrationMethod.MinMax,
                                  "percentile": CalibrationMethod.Percentile,
                                  "entropy": CalibrationMethod.Entropy}[calibrate_method],
                nodes_to_exclude=excluded_nodes(proto, exclude) + (
                    postprocess_nodes(proto) if meta.get("task") == "detection" else []),
                reduce_range=reduce_range,
                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                               "CalibStridedMinMax": stride, "CalibPercentile": percentile})
        quantized = onnx.load(str(Path(tmp) / "int8.onnx"))
        refitted = None
        if refit:
            from .refit import refit_convolutions
            take = []
            for b in batches:
                if len(take) >= 2 and sum(len(t) for t in take) >= (refit_images
                                                                     or REFIT_IMAGES):
                    break
                take.append(b)
            report = refit_convolutions(proto, quantized, take, input_name,
                                        qmax=64.0 if reduce_range else 127.0)
            refitted = {"method": "least squares, chosen per convolution on held-out images",
                        "images": sum(len(t) for t in take), "chosen": report["chosen"]}
    meta["quantization"] = json.dumps({
        "format": "QDQ", "weights": ("int8 (7-bit range) symmetric " if reduce_range else
                                     "int8 symmetric ")
        + ("per-channel" if per_channel else "per-tensor"),
        "activations": activation_type, "calibration": calibrate_method,
        **({"percentile": percentile} if calibrate_method == "percentile" else {}),
        "num_images": sum(len(b) for b in batches), "exclude": exclude,
        "calibration_rounds": len(batches) // stride if stride else 1,
        "depthwise_padded": padded, "channel_multiple": channel_multiple, "target": target,
        **({"calibration_resize": detection.get("resize", "stretch")} if detection else {}),
        **({"refit": refitted} if refitted else {})})
    del quantized.metadata_props[:]
    for key, value in meta.items():
        quantized.metadata_props.add(key=key, value=value)
    return save_checked(quantized, out_path)


__all__ = ["CALIBRATION_MEMORY", "DETECTOR_EXCLUDE", "FROM_TARGET", "INT8_RECIPES",
           "REFIT_IMAGES", "activation_bytes", "calibration_batches", "calibration_input",
           "detection_batches", "detection_images", "task_images",
           "calibration_stride", "calibration_reader", "cpu_flags", "cpu_has_vnni",
           "default_exclude", "excluded_nodes", "histogram_errors", "quantize_onnx"]
