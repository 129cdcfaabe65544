"""int8 ``.pte`` files: PT2E with ExecuTorch's XNNPACK quantizer, then lowered to XNNPACK.

The quantizer (``executorch.backends.xnnpack.quantizer.xnnpack_quantizer.XNNPACKQuantizer``)
annotates the graph for XNNPACK's int8 kernels: per-channel symmetric int8 weights and int8
activations (per-tensor, asymmetric), with the activations' ranges from histograms of the
calibration images. torchao's ``prepare_pt2e`` / ``convert_pt2e`` (or QAT's
``prepare_qat_pt2e``) do the rest, through :mod:`mobilenets.deploy.quantize_pt2e`, and the
converted graph (quantize/dequantize ops around float ops: the fake-quantized model, which
runs eagerly in PyTorch) is lowered like a float one; XNNPACK fuses each dequantize -> op ->
quantize pattern into one int8 kernel.

A detector's program (:class:`~mobilenets.deploy.detection_export.DetectorNetwork`) is
quantized in its convolutional submodules only (backbone and head, annotated by module
name): box decoding, the default boxes and the softmax stay in float, as in the int8 ONNX
detector, and NMS runs after the program.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...detection_export import (DetectorNetwork, detection_defaults, input_resize,
                                is_detector)
from ...fuse import fuse
from ...quantize import detection_batches
from ...quantize_pt2e import QuantizedModel, _batches, _torchao, qat_pt2e, quantize_pt2e
from .export import export_pte


def xnnpack_quantizer(is_qat: bool = False):
    """ExecuTorch's XNNPACKQuantizer, set globally to per-channel symmetric weights
    (``get_symmetric_quantization_config(is_per_channel=True)``)."""
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
    except ImportError:
        raise ImportError("XNNPACK quantization needs ExecuTorch: pip install "
                          "'mobilenets[mobile]'") from None
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    return XNNPACKQuantizer().set_global(config)


def detector_quantizer(network: nn.Module):
    """The XNNPACK quantizer for a detector's :class:`DetectorNetwork`: ExecuTorch's config
    (:func:`xnnpack_quantizer`) on the nodes of the detector's submodules that hold
    convolutions, none elsewhere (the decoding in the detector's own methods, its
    default-box generator). A filter function rather than ``set_module_name``: the module
    filter also tests a convolution's weight, a constant that carries no module. ExecuTorch
    1.5's quantizer annotates every ``cat`` and propagates int8 through reshapes and slices
    whatever the filter says (it would quantize the default boxes), so annotations outside
    the filter are removed after annotating."""
    inside = tuple(f"model.{name}" for name, child in network.model.named_children()
                   if any(isinstance(m, nn.Conv2d) for m in child.modules()))

    def in_network(node) -> bool:
        stack = node.meta.get("nn_module_stack")
        if not stack:                 # weights and other constants
            return True
        return any(path == name or path.startswith(f"{name}.")
                   for path, _ in stack.values() for name in inside)
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    quantizer = xnnpack_quantizer().set_filter_function(in_network)
    annotate = quantizer.annotate

    def annotate_network(model):
        model = annotate(model)
        for node in model.graph.nodes:
            if not in_network(node):
                node.meta.pop(Q_ANNOTATION_KEY, None)
        return model
    quantizer.annotate = annotate_network
    return quantizer


@torch.no_grad()
def quantize_detector(model: nn.Module, calib, num_images: int = 128,
                      resolution: int | None = None) -> QuantizedModel:
    """PTQ of a detector's network for XNNPACK (:func:`detector_quantizer`), calibrated on
    ``num_images`` images of ``calib`` resized as its eval preprocessing says; the int8
    model computes :class:`DetectorNetwork`'s decoded boxes and scores and carries the
    float detector's post-processing settings (``detection_defaults``) for export_pte."""
    prepare_pt2e, _, convert_pt2e, _, _ = _torchao()
    res = int(resolution or model.preprocess.get("resolution") or 320)
    network = DetectorNetwork(fuse(model)).eval()
    x = torch.randn(2, model.config.get("in_chans", 3), res, res)
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(network, (x,), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(graph, detector_quantizer(network))
    if isinstance(calib, (str, Path)):          # images resized as the detector does
        batches = detection_batches(calib, input_resize(model), res, model.preprocess,
                                    num_images, batch_size=16)
    else:
        batches = _batches(calib, model, res, num_images)
    for x in batches:
        prepared(x)
    qmodel = QuantizedModel(convert_pt2e(prepared), model, res)
    qmodel.detection_defaults = detection_defaults(model)
    return qmodel


def quantize_xnnpack(model: nn.Module, calib, *, num_images: int = 128,
                     resolution: int | None = None, method: str = "ptq",
                     **qat_options) -> QuantizedModel:
    """The fake-quantized int8 model for XNNPACK: ``method`` "ptq" calibrates on
    ``num_images`` images of ``calib`` (an image folder, its ``train/`` if it has one, or an
    iterable of batches); "qat" fine-tunes on ``calib`` with the training engine first
    (:func:`~mobilenets.deploy.quantize_pt2e.qat_pt2e`; ``qat_options``: epochs, lr, ...).
    Write it with :func:`~.export.export_pte`. A detector (PTQ only) is quantized by
    :func:`quantize_detector`: its network in int8, box decoding in float."""
    if is_detector(model):
        if method != "ptq" or qat_options:
            raise ValueError("a detector is quantized for XNNPACK by PTQ only (QAT runs "
                             "the classification task): give method='ptq' (quantize "
                             "--method ptq), or fine-tune the detector first")
        qmodel = quantize_detector(model, calib, num_images, resolution)
        qmodel.quantization = {"method": "ptq", "calibration_images": num_images,
                               "float": "box decoding and default boxes (NMS runs after the "
                                        "program)"}
        return qmodel
    if method == "ptq":
        if qat_options:
            raise ValueError(f"{', '.join(sorted(qat_options))} apply to method='qat' only")
        qmodel = quantize_pt2e(model, calib, num_images=num_images, resolution=resolution,
                               quantizer=xnnpack_quantizer)
        qmodel.quantization = {"method": "ptq", "calibration_images": num_images}
    elif method == "qat":
        qmodel = qat_pt2e(model, calib, resolution=resolution, quantizer=xnnpack_quantizer,
                          **qat_options)
        qmodel.quantization = {"method": "qat"}
    else:
        raise ValueError(f"method must be 'ptq' or 'qat', not {method!r}")
    return qmodel


def quantize_pte(model: nn.Module, path: str | Path, calib, *, num_images: int = 128,
                 resolution: int | None = None, method: str = "ptq",
                 **qat_options) -> Path:
    """:func:`quantize_xnnpack`, written as an int8 ``.pte`` file (batch 1) at ``path``."""
    return export_pte(quantize_xnnpack(model, calib, num_images=num_images,
                                       resolution=resolution, method=method, **qat_options),
                      path)


__all__ = ["quantize_pte", "quantize_xnnpack", "xnnpack_quantizer"]
