"""int8 ``.pte`` files: PT2E with ExecuTorch's XNNPACK quantizer, then lowered to XNNPACK.

The quantizer (``executorch.backends.xnnpack.quantizer.xnnpack_quantizer.XNNPACKQuantizer``)
annotates the graph for XNNPACK's int8 kernels: per-channel symmetric int8 weights and int8
activations (per-tensor, asymmetric), with the activations' ranges from histograms of the
calibration images. torchao's ``prepare_pt2e`` / ``convert_pt2e`` (or QAT's
``prepare_qat_pt2e``) do the rest, through :mod:`mobilenets.deploy.quantize_pt2e`, and the
converted graph (quantize/dequantize ops around float ops: the fake-quantized model, which
runs eagerly in PyTorch) is lowered like a float one; XNNPACK fuses each dequantize -> op ->
quantize pattern into one int8 kernel.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...quantize_pt2e import QuantizedModel, qat_pt2e, quantize_pt2e
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


def quantize_xnnpack(model: nn.Module, calib, *, num_images: int = 128,
                     resolution: int | None = None, method: str = "ptq",
                     **qat_options) -> QuantizedModel:
    """The fake-quantized int8 model for XNNPACK: ``method`` "ptq" calibrates on
    ``num_images`` images of ``calib`` (an image folder, its ``train/`` if it has one, or an
    iterable of batches); "qat" fine-tunes on ``calib`` with the training engine first
    (:func:`~mobilenets.deploy.quantize_pt2e.qat_pt2e`; ``qat_options``: epochs, lr, ...).
    Write it with :func:`~.export.export_pte`."""
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
