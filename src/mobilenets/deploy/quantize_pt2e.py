"""int8 in PyTorch: PT2E post-training quantization and QAT with torchao's X86InductorQuantizer.

The model is captured with ``torch.export``, observed (PTQ: calibration images; QAT: a short
fine-tune with fake quantization) and converted to a graph of quantize/dequantize ops around
float ops: uint8 activations, per-channel symmetric int8 weights. The converted graph runs
eagerly, but it is only *fast* under ``torch.compile`` with inductor's freezing on
(:func:`compile_pt2e`), which lowers the q/dq patterns to oneDNN int8 kernels; eagerly it is
slower than fp32. ``export_pt2e_onnx`` writes it as an ONNX QDQ file for onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .quantized_model import QuantizedModel


def _torchao():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import (convert_pt2e, prepare_pt2e,
                                                             prepare_qat_pt2e)
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    except ImportError as e:
        raise ImportError(f"PT2E quantization needs torchao ({e}): pip install torchao") from None
    return prepare_pt2e, prepare_qat_pt2e, convert_pt2e, X86InductorQuantizer, \
        get_default_x86_inductor_quantization_config


def _resolution(model: nn.Module, resolution: int | None) -> int:
    return int(resolution or model.preprocess.get("resolution") or 224)


def _export(net: nn.Module, resolution: int) -> nn.Module:
    """``torch.export`` of ``net`` with a dynamic batch dimension, as a GraphModule."""
    x = torch.randn(2, net.config.get("in_chans", 3), resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(net, (x,), dynamic_shapes=({0: batch},)).module()


def _batches(data, model: nn.Module, resolution: int, num_images: int) -> list[torch.Tensor]:
    """Calibration batches: a list of tensors, a DataLoader of (x, ...), or an image folder."""
    from ..data import at_resolution
    from ..data.transforms import check_rgb_model
    from .quantize import calibration_batches
    if isinstance(data, (str, Path)):
        check_rgb_model(model.config.get("in_chans", 3), "int8 calibration")
        pre = at_resolution(model.preprocess, resolution)
        return calibration_batches(data, pre, num_images, batch_size=16)
    out, seen = [], 0
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        out.append(x)
        seen += len(x)
        if seen >= num_images:
            break
    if not out:
        raise ValueError("the calibration data gave no batches")
    return out


@torch.no_grad()
def quantize_pt2e(model: nn.Module, calib, *, num_images: int = 128,
                  resolution: int | None = None) -> QuantizedModel:
    """PTQ: export the BatchNorm-folded ``model``, ``prepare_pt2e`` with the x86 inductor
    quantizer, run ``num_images`` calibration images (``calib``: an image folder, its
    ``train/`` if any, or an iterable of batches), ``convert_pt2e``. Fast under
    ``torch.compile`` only."""
    prepare_pt2e, _, convert_pt2e, Quantizer, default_config = _torchao()
    from .fuse import fuse
    res = _resolution(model, resolution)
    quantizer = Quantizer().set_global(default_config())
    prepared = prepare_pt2e(_export(fuse(model), res), quantizer)
    for x in _batches(calib, model, res, num_images):
        prepared(x)
    return QuantizedModel(convert_pt2e(prepared), model, res)


def qat_pt2e(model: nn.Module, data, *, epochs: int = 2, lr: float = 1e-3,
             batch_size: int = 32, resolution: int | None = None, max_steps: int = 0,
             freeze_bn_epoch: int | None = None, seed: int = 0, log=print) -> QuantizedModel:
    """QAT: export ``model`` in training mode, ``prepare_qat_pt2e``, fine-tune ``epochs`` on the
    image folder ``data`` (its ``train/``; SGD + cosine from ``lr``; ``max_steps`` caps the
    steps per epoch), freeze BatchNorm statistics and observers from ``freeze_bn_epoch``
    (default: the last epoch, if there are several), then convert. ``model`` is not changed."""
    import copy

    from torch.utils.data import DataLoader

    if freeze_bn_epoch is not None and not 1 <= freeze_bn_epoch <= epochs:
        raise ValueError(f"freeze_bn_epoch must be between 1 and epochs ({epochs}), not "
                         f"{freeze_bn_epoch}: the observers need at least one epoch to learn "
                         f"the activation ranges before they are frozen")

    from ..data import ImageFolderDataset, collate_skip_bad, train_transform
    from torchao.quantization.pt2e import (disable_observer, move_exported_model_to_eval,
                                           move_exported_model_to_train)
    _, prepare_qat_pt2e, convert_pt2e, Quantizer, default_config = _torchao()
    torch.manual_seed(seed)
    res = _resolution(model, resolution)
    root = Path(data) / "train" if (Path(data) / "train").is_dir() else Path(data)
    dataset = ImageFolderDataset(root, transform=train_transform(res, model.preprocess),
                                 classes=model.config.get("class_names"))
    if len(dataset.classes) != model.num_classes:
        raise ValueError(f"{root} has {len(dataset.classes)} classes, the model "
                         f"{model.num_classes}")
    loader = DataLoader(dataset, batch_size, shuffle=True, drop_last=True,
                        collate_fn=collate_skip_bad)
    net = copy.deepcopy(model).train()
    quantizer = Quantizer().set_global(default_config(is_qat=True))
    prepared = prepare_qat_pt2e(_export(net, res), quantizer)
    steps = min(len(loader), max_steps or len(loader))
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, epochs * steps))))
    freeze = (epochs - 1 if epochs > 1 else epochs) if freeze_bn_epoch is None else \
        freeze_bn_epoch
    for epoch in range(epochs):
        move_exported_model_to_train(prepared)
        if epoch >= freeze:
            prepared.apply(disable_observer)
            move_exported_model_to_eval(prepared)   # BN uses its running statistics
        total, seen = 0.0, 0
        for step, (x, y, _) in enumerate(loader):
            if step >= steps:
                break
            if len(y) == 0:
                continue
            loss = nn.functional.cross_entropy(prepared(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        if log:
            log(f"qat epoch {epoch + 1}/{epochs}: loss {total / max(seen, 1):.4f}")
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        return QuantizedModel(convert_pt2e(prepared), model, res)


def compile_pt2e(qmodel: nn.Module, example: torch.Tensor):
    """``torch.compile`` of a PT2E-quantized model, compiled by one call on ``example``: the
    fast form, with the q/dq patterns lowered to oneDNN int8 convolutions.

    Every call (so every recompilation: another batch size, ``inference_mode``) runs with
    inductor's freezing set in its global config; passing ``freezing`` as a torch.compile
    option instead fails to fold the weight prepacking (torch 2.14, torchao 0.18)."""
    import torch._inductor.config as inductor_config
    compiled = torch.compile(qmodel)

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled(x)

    with torch.no_grad():
        run(example)
    return run


def export_pt2e_onnx(qmodel: QuantizedModel, path: str | Path, calib=None, *,
                     num_images: int = 64) -> Path:
    """Write a converted PT2E model as an ONNX QDQ file (batch 1) with our metadata.

    With ``calib`` (an image folder), the activations the X86 quantizer leaves in float are
    then calibrated on ``num_images`` of its images and quantized (:mod:`.qdq_complete`), so
    onnxruntime runs every convolution in int8: for the Imagenette-trained
    mobilenet_v3_large_100 of the README (QAT, 128 px, batch 1, 2 threads) 1.1 ms instead of
    3.6, at 79.90% top-1 (the uncompleted file of the same QAT recipe: 79.85%)."""
    import json

    import onnx

    from ..data import at_resolution
    from .onnx_export import metadata
    x = torch.randn(1, qmodel.config.get("in_chans", 3), qmodel.resolution, qmodel.resolution)
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*in training mode.*")   # a GraphModule
        program = torch.onnx.export(qmodel.graph, (x,), dynamo=True, opset_version=18,
                                    verbose=False, input_names=["input"],
                                    output_names=["logits"])
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()
    meta = metadata(qmodel, qmodel.resolution, True)
    meta["quantization"] = json.dumps({"format": "QDQ",
                                       "source": "torchao PT2E (X86InductorQuantizer)"})
    program.model.metadata_props.update(meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path, external_data=False)
    if calib is None:
        onnx.checker.check_model(str(path))
    else:                                 # checks and saves the completed file itself
        from .qdq_complete import complete_qdq
        complete_qdq(path, calib, at_resolution(qmodel.preprocess, qmodel.resolution),
                     num_images=num_images)
    return path


__all__ = ["QuantizedModel", "compile_pt2e", "export_pt2e_onnx", "qat_pt2e", "quantize_pt2e"]
