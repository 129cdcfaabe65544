"""Write a model as an ExecuTorch ``.pte`` file lowered to XNNPACK (fp32, or the int8 graph
of :mod:`.quantize`).

``torch.export`` -> ``to_edge_transform_and_lower`` with the ``XnnpackPartitioner`` ->
``to_executorch``. The file holds a second method, ``metadata``, a constant returning one
JSON object: the model's name, config, class names and eval preprocessing, the task and a
description of its outputs (as the ONNX export's ``metadata_props``), whether the batch is
static or dynamic, and, for int8 files, how they were quantized.

A detector's program is its network and box decoding
(:class:`~mobilenets.deploy.detection_export.DetectorNetwork`: decoded ``boxes`` and class
``scores`` of every default box), the part XNNPACK can run; its score threshold, per-class
NMS and top-k run after the program (``PteDetector``, or the app), with the settings of the
metadata's ``detection`` entry (``postprocess: "after"``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ...detection_export import (NETWORK_OUTPUTS, DetectorNetwork, detection_metadata,
                                 detection_options, is_detector)
from ...fuse import fuse as fuse_model
from ...onnx_export import metadata as onnx_metadata
from ...onnx_export import named_outputs
from ...quantized_model import QuantizedModel
from .session import METADATA_METHOD

# A dynamic-batch file's memory is planned for its largest batch (activations of that many
# images, allocated when the file is opened), so the bound is kept small; larger batches run
# in chunks. ExecuTorch 1.5's XNNPACK lowering also caps the bound at 15 (a guard added while
# lowering), whatever is asked for.
DEFAULT_MAX_BATCH = 8


def _lowering():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import \
            XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise ImportError("writing .pte files needs ExecuTorch: pip install "
                          "'mobilenets[mobile]'") from None
    return XnnpackPartitioner, to_edge_transform_and_lower


def pte_metadata(model: nn.Module, resolution: int, fused: bool, task: str,
                 dynamic_batch: bool, max_batch: int,
                 outputs: list[tuple[str, str]] | None = None) -> dict:
    """The object the ``metadata`` method returns: the ONNX export's entries as JSON values
    (``outputs``: (name, meaning) of each output, default the task's), plus ``format``,
    ``backend`` and ``batch`` ({"dynamic": bool, "max": int})."""
    meta = {}
    for key, value in onnx_metadata(model, resolution, fused, task, outputs).items():
        try:
            meta[key] = json.loads(value)
        except ValueError:        # plain strings: model_name, task, producer
            meta[key] = value
    meta.update(format="pte", backend="XnnpackBackend",
                batch={"dynamic": bool(dynamic_batch), "max": int(max_batch)})
    return meta


def _check(model, resolution, dynamic_batch, max_batch) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError("export_pte() takes a model made by mobilenets.create_model or load, "
                        "or the int8 model of quantize_xnnpack")
    if not isinstance(model, QuantizedModel):
        dtypes = {p.dtype for p in model.parameters()} | {
            b.dtype for b in model.buffers() if b.is_floating_point()}
        if dtypes - {torch.float32}:
            raise ValueError(f"export_pte() writes float32 or int8 files and this model holds "
                             f"{sorted(map(str, dtypes - {torch.float32}))}: call "
                             f"model.float() first")
    from ....weights.saved import check_class_names
    check_class_names(model.config.get("class_names"), getattr(model, "num_classes", None))
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int (square inputs), not "
                         f"{resolution!r}")
    if dynamic_batch and (isinstance(max_batch, bool) or not isinstance(max_batch, int)
                          or max_batch < 2):
        raise ValueError(f"max_batch must be an int >= 2 for a dynamic batch, not "
                         f"{max_batch!r}")


# what a lowered program runs outside XNNPACK without computing anything: the delegate call
# and its outputs, memory planning, and a dynamic batch's size and reshapes
_BOOKKEEPING = {"executorch_call_delegate", "getitem", "alloc", "sym_size", "view_copy",
                "et_view", "view"}


def undelegated_ops(program) -> list[str]:
    """Operators of an ExecuTorch program's forward that XNNPACK does not run (they run in
    ExecuTorch's portable kernels instead, far slower), bookkeeping and copies of scalar
    constants (e.g. hard-swish's 3 and 6, passed to the delegate) left out."""
    ops = []
    for node in program.exported_program().graph.nodes:
        if node.op != "call_function":
            continue
        name = (getattr(node.target, "_opname", None) or getattr(node.target, "__name__", None)
                or type(node.target).__name__)
        value = node.meta.get("val")
        if getattr(value, "ndim", None) == 0:     # a scalar constant handed to a delegate
            continue
        if name.split(".")[0] not in _BOOKKEEPING and "CallDelegate" not in name:
            ops.append(name)
    return ops


def model_task(model: nn.Module) -> str:
    """The task of a float model (its ``task``) or of an int8 one (its config's)."""
    return getattr(model, "task", None) or model.config.get("task") or "classification"


# what XNNPACK leaves of a detector's box decoding: copies of slices of the box codes and of
# the default boxes, which compute nothing (the arithmetic is delegated)
_DECODING_COPIES = ("slice_copy", "select_copy", "repeat", "_to_dim_order_copy",
                    "_clone_dim_order", "expand_copy")


def export_pte(model: nn.Module, path: str | Path, *, resolution: int | None = None,
               dynamic_batch: bool = False, max_batch: int = DEFAULT_MAX_BATCH,
               task: str | None = None, **detection) -> Path:
    """Write ``model`` to the ``.pte`` file ``path``, lowered to XNNPACK; returns ``path``.

    ``model``: a float model (BatchNorm is folded first), or the int8
    :class:`~mobilenets.deploy.quantized_model.QuantizedModel` of
    :func:`~.quantize.quantize_xnnpack` (written int8). The input is N x C x R x R float32 at
    ``resolution`` (default: the model's; an int8 model's is its calibration resolution);
    the batch is 1, or with ``dynamic_batch`` 1 to ``max_batch`` (memory is planned for that
    many images; the file's real bound is what ``ExecuTorchSession.max_batch`` reads, and
    larger batches run in chunks). ``task`` (default: the model's, see :func:`model_task`)
    describes the outputs in the metadata. A model returning a dict (the segmentation heads'
    ``{"out": ..., "aux": ...}``) gets one program output per key, in the dict's order, named
    by the keys in the metadata (``PteModel.output_names``).

    A detector (task ``detection`` with an ``export_forward``) is written as its network and
    box decoding (outputs ``boxes`` B x N x 4 in the input's pixels and ``scores`` B x N x K,
    column k label k + 1), since XNNPACK has no NMS kernels; ``detection`` takes the options
    of the post-processing after the program (``score_thresh``, ``nms_thresh``, ``max_det``,
    ``topk_candidates``; default: the model's), recorded in the metadata's ``detection``
    entry with ``postprocess: "after"`` (:class:`~mobilenets.deploy.PteDetector` runs that
    step; docs/deploy.md says what an app does). The file is written through a temporary
    one, so an existing file survives a failed export."""
    XnnpackPartitioner, to_edge_transform_and_lower = _lowering()
    quantized = isinstance(model, QuantizedModel)
    if resolution is None:
        resolution = int(model.resolution if quantized else
                         model.preprocess.get("resolution") or model.config.get("resolution")
                         or 224)
    _check(model, resolution, dynamic_batch, max_batch)
    task = task or model_task(model)
    detector = task == "detection"
    if detector and quantized and not hasattr(model, "detection_defaults"):
        raise ValueError("this int8 model of a detector was not quantized as one: quantize "
                         "the float detector with quantize_xnnpack (its network in int8, "
                         "box decoding in float)")
    if detector and not quantized and not is_detector(model, task):
        raise ValueError("this detection model has no export_forward (decoded boxes and "
                         "scores without data-dependent control flow), so it cannot be "
                         "written as a .pte; the library's ssdlite and yolov4 heads have one")
    if detector:
        detection = detection_options(model, detection)
    elif detection:
        raise TypeError(f"{', '.join(sorted(detection))}: export options of detectors, and "
                        f"this is a {task} model")
    if quantized and resolution != model.resolution:
        raise ValueError(f"this int8 model was calibrated at {model.resolution} px; export it "
                         f"at that resolution, or quantize again at {resolution}")
    net = model.graph if quantized else fuse_model(model)
    x = torch.randn(2 if dynamic_batch else 1, model.config.get("in_chans", 3), resolution,
                    resolution)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},) if dynamic_batch else None
    if detector:        # an int8 detector's graph is its DetectorNetwork already
        net = net if quantized else DetectorNetwork(net).eval()
        outputs = NETWORK_OUTPUTS
    else:
        with torch.no_grad():
            outputs = named_outputs(model, net(x), task)
    meta = pte_metadata(model, resolution, True, task, dynamic_batch,
                        max_batch if dynamic_batch else 1, outputs)
    if detector:
        # the program takes the resized, normalised batch (PteDetector makes it from images)
        meta["preprocess"] = dict(meta["preprocess"], in_model=False)
        meta["detection"] = detection_metadata(model, detection, after=True)
    if quantized:
        meta["quantization"] = {"format": "int8", "source": "torchao PT2E (XNNPACKQuantizer: "
                                "per-channel symmetric int8 weights, int8 activations)",
                                **getattr(model, "quantization", {})}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*in training mode.*")   # a GraphModule
        warnings.filterwarnings("ignore", category=UserWarning, module="executorch")
        exported = torch.export.export(net, (x,), dynamic_shapes=dynamic)
        if detector:        # the default boxes depend on the input size only: constants
            from executorch.exir.passes.constant_prop_pass import constant_prop_pass

            # not the quantize/dequantize ops of an int8 graph: folding the dequantize of a
            # weight would store it in float and leave XNNPACK a float convolution (the
            # pass's own skip list names edge-dialect ops; this graph is still aten)
            skip = {n.target for n in exported.graph.nodes if n.op == "call_function"
                    and getattr(n.target, "namespace", None) == "quantized_decomposed"}
            exported = constant_prop_pass(
                exported, custom_skip_targets=skip | {torch.ops.aten.full.default})
        program = to_edge_transform_and_lower(
            exported, partitioner=[XnnpackPartitioner()],
            constant_methods={METADATA_METHOD: json.dumps(meta)}).to_executorch()
    left = undelegated_ops(program)
    if detector:
        left = [op for op in left if op not in _DECODING_COPIES]
    if left:
        warnings.warn(f"XNNPACK does not run {len(left)} operator(s) of this model "
                      f"({', '.join(sorted(set(left)))}); they run in ExecuTorch's portable "
                      f"kernels", stacklevel=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            program.write_to_file(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["DEFAULT_MAX_BATCH", "export_pte", "model_task", "pte_metadata",
           "undelegated_ops"]
