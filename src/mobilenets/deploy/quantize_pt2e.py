"""int8 in PyTorch: PT2E post-training quantization and QAT with torchao's X86InductorQuantizer.

The model is captured with ``torch.export``, observed (PTQ: calibration images; QAT: a short
fine-tune with fake quantization) and converted to a graph of quantize/dequantize ops around
float ops: uint8 activations, per-channel symmetric int8 weights. The converted graph runs
eagerly, but it is only *fast* under ``torch.compile`` with inductor's freezing on
(:func:`compile_pt2e`), which lowers the q/dq patterns to oneDNN int8 kernels; eagerly it is
slower than fp32. ``export_pt2e_onnx`` writes it as an ONNX QDQ file for onnxruntime.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..data import at_resolution
from ..data.calibration import calibration_batches
from ..data.transforms import check_rgb_model
from ..models.memory_split import is_split
from ..tasks.classification import ClassificationTask
from ..training import fit, make_config
from ..training.checkpoint import save_checkpoint
from .fuse import fuse
from .onnx_export import metadata
from .runtimes.onnxruntime.qdq_complete import complete_qdq

from .quantized_model import QuantizedModel


class _EnumConstantNotice(logging.Filter):
    """Drops one log line: torchao registers an Enum with torch's pytree when imported, and
    torch 2.14 logs a deprecation notice about that in every process, which a user of this
    library can do nothing about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "register_constant()" not in record.getMessage()


logging.getLogger("torch.utils._pytree").addFilter(_EnumConstantNotice())


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


def x86_quantizer(is_qat: bool = False):
    """torchao's X86InductorQuantizer with its default config (the default quantizer here; a
    ``quantizer`` argument below is any such function of ``is_qat``, e.g. ExecuTorch's
    XNNPACK quantizer in :mod:`.runtimes.executorch.quantize`)."""
    *_, quantizer, default_config = _torchao()
    return quantizer().set_global(default_config(is_qat=is_qat))


def _resolution(model: nn.Module, resolution: int | None) -> int:
    return int(resolution or model.preprocess.get("resolution") or 224)


def _export(net: nn.Module, resolution: int) -> nn.Module:
    """``torch.export`` of ``net`` with a dynamic batch dimension, as a GraphModule."""
    x = torch.randn(2, net.config.get("in_chans", 3), resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(net, (x,), dynamic_shapes=({0: batch},)).module()


def _batches(data, model: nn.Module, resolution: int, num_images: int) -> list[torch.Tensor]:
    """Calibration batches: a list of tensors, a DataLoader of (x, ...), or an image folder."""
    if isinstance(data, (str, Path)):
        check_rgb_model(model.config.get("in_chans", 3), "int8 calibration")
        from .quantize import task_images
        pre = at_resolution(model.preprocess, resolution)
        return calibration_batches(task_images(data, getattr(model, "task", None)), pre,
                                   num_images, batch_size=16)
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
                  resolution: int | None = None, quantizer=None) -> QuantizedModel:
    """PTQ: export the BatchNorm-folded ``model``, ``prepare_pt2e`` with the x86 inductor
    quantizer (or ``quantizer(is_qat=False)``), run ``num_images`` calibration images
    (``calib``: an image folder, its ``train/`` if any, or an iterable of batches),
    ``convert_pt2e``. With the x86 quantizer, fast under ``torch.compile`` only."""
    prepare_pt2e, _, convert_pt2e, _, _ = _torchao()
    res = _resolution(model, resolution)
    prepared = prepare_pt2e(_export(fuse(model), res), (quantizer or x86_quantizer)(False))
    for x in _batches(calib, model, res, num_images):
        prepared(x)
    return QuantizedModel(convert_pt2e(prepared), model, res)


class QatTask(ClassificationTask):
    """Classification QAT on the training engine: the float model is exported in training
    mode and prepared with fake quantization (``prepare_qat_pt2e``); from epoch
    ``freeze_epoch`` (0-based) on, observers stop updating and BatchNorm uses its running
    statistics. The prepared graph is ``self.model`` after :func:`mobilenets.training.fit`."""

    def __init__(self, model: nn.Module, resolution: int, freeze_epoch: int, quantizer=None):
        super().__init__(classes=model.config.get("class_names"))
        self.float_model, self.resolution, self.freeze_epoch = model, resolution, freeze_epoch
        self.quantizer = quantizer or x86_quantizer
        self.frozen = False

    def split(self, cfg):
        """``DATA/train`` if there is one, else ``DATA`` itself (class folders); validation on
        ``DATA/val`` if there is one, else on the training folder."""
        root = Path(cfg.data)
        train = root / "train" if (root / "train").is_dir() else root
        return train, (root / "val" if (root / "val").is_dir() else train)

    def summary(self, train_set, val_set) -> str:
        return (f"qat: {len(self.classes)} classes, {len(train_set)} training images in "
                f"{self.dirs[0]}, {len(val_set)} validation images in {self.dirs[1]}")

    def epoch_note(self, metrics: dict) -> str | None:
        return None                # the hints name train's options, which QAT does not have

    def build_model(self, cfg, resumed: dict | None = None) -> nn.Module:
        if len(self.classes) != self.float_model.num_classes:
            raise ValueError(f"{self.dirs[0]} has {len(self.classes)} classes, the model "
                             f"{self.float_model.num_classes}")
        _, prepare_qat_pt2e, _, _, _ = _torchao()
        net = copy.deepcopy(self.float_model).train()
        prepared = prepare_qat_pt2e(_export(net, self.resolution), self.quantizer(True))
        prepared.config = dict(self.float_model.config)
        prepared.preprocess = dict(self.float_model.preprocess)
        prepared.num_classes = self.float_model.num_classes
        self.model = prepared
        return prepared

    def start_epoch(self, model, epoch: int) -> None:
        self.frozen = epoch >= self.freeze_epoch      # set_mode freezes observers and BN

    def set_mode(self, model, training: bool) -> None:
        """Training: BatchNorm on batch statistics and observers updating, until frozen.
        Otherwise (validation, and training once frozen): BatchNorm on its running statistics
        and observers still, so that validating leaves the quantization ranges alone."""
        from torchao.quantization.pt2e import (disable_observer, enable_observer,
                                               move_exported_model_to_eval,
                                               move_exported_model_to_train)
        if training and not self.frozen:
            move_exported_model_to_train(model)
            model.apply(enable_observer)
        else:
            move_exported_model_to_eval(model)
            model.apply(disable_observer)

    def save_best(self, model, folder) -> None:
        """The prepared graph's state (fake-quantization parameters and observers included),
        which a run rebuilt with the same model and resolution loads."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(folder) / "qat_state.pt", model.state_dict())

    def convert(self) -> QuantizedModel:
        _, _, convert_pt2e, _, _ = _torchao()
        self.set_mode(self.model, False)
        with torch.no_grad():
            return QuantizedModel(convert_pt2e(self.model), self.float_model, self.resolution)


def qat_pt2e(model: nn.Module, data, *, epochs: int = 2, lr: float = 1e-3,
             batch_size: int = 32, resolution: int | None = None, max_steps: int = 0,
             freeze_bn_epoch: int | None = None, seed: int = 0, out: str | Path | None = None,
             progress: bool = False, log=print, quantizer=None,
             **train_options) -> QuantizedModel:
    """QAT: export ``model`` in training mode, ``prepare_qat_pt2e``, fine-tune ``epochs`` on the
    image folder ``data`` (its ``train/`` if it has one; validation on its ``val/`` if it has
    one, else on the training images) on the training engine
    (SGD + cosine from ``lr``, label smoothing 0.1; ``max_steps`` caps the steps per epoch;
    other :class:`~mobilenets.training.TrainConfig` options in ``train_options``), freeze
    BatchNorm statistics and observers after ``freeze_bn_epoch`` epochs (default: for the
    last epoch, if there are several), then convert the last epoch's graph. ``out``: the run's
    folder (checkpoints, metrics, ``best/qat_state.pt``); a temporary one when None.
    ``quantizer``: a function of ``is_qat`` giving the PT2E quantizer (default: x86's).
    ``model`` is not changed."""
    task = getattr(model, "task", None)
    if task not in (None, "classification"):
        raise ValueError(f"QAT fine-tunes a classifier (cross-entropy on class folders); "
                         f"{model.config.get('name', type(model).__name__)} is a {task} model: "
                         f"quantize it after training instead (`mobilenets quantize` without "
                         f"--method qat, or quantize_onnx / quantize_pt2e)")
    if is_split(model):
        raise ValueError("QAT trains the model's graph in training mode, where memory_split "
                         "blocks run whole, so the quantized model would not be split: QAT "
                         "the model without memory_split, or quantize the split one by PTQ "
                         "(quantize_onnx / quantize_pt2e keep the split)")
    if freeze_bn_epoch is not None and not 1 <= freeze_bn_epoch <= epochs:
        raise ValueError(f"freeze_bn_epoch must be between 1 and epochs ({epochs}), not "
                         f"{freeze_bn_epoch}: the observers need at least one epoch to learn "
                         f"the activation ranges before they are frozen")
    _torchao()
    res = _resolution(model, resolution)
    # observers and BatchNorm are frozen after this many epochs (0-based index of the first
    # frozen epoch)
    freeze = (epochs - 1 if epochs > 1 else epochs) if freeze_bn_epoch is None else \
        freeze_bn_epoch
    options = dict(lr=lr, optimizer="sgd", momentum=0.9, weight_decay=0.0, schedule="cosine",
                   warmup_epochs=0.0, label_smoothing=0.1, ema_decay=0.0, epochs=epochs,
                   batch_size=batch_size, resolution=res, max_steps_per_epoch=max_steps,
                   seed=seed, tensorboard=False)
    options.update(train_options)
    task = QatTask(model, res, freeze, quantizer)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(model=model.config["name"], data=str(data),
                          out=str(out if out is not None else Path(tmp) / "qat"), **options)
        metrics = fit(task, cfg, progress=progress, overwrite=out is None)
    if log:
        log(f"qat: {epochs} epoch(s), train loss {metrics['train_loss']:.4f}, "
            f"fake-quantized val top-1 {100 * metrics['top1']:.1f}%")
    return task.convert()


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
    then calibrated on ``num_images`` of its images and quantized
    (:mod:`.runtimes.onnxruntime.qdq_complete`), so that onnxruntime runs every convolution in
    int8 (about 3x faster than the file as torchao leaves it, at the same top-1:
    docs/results/2026-11-24-int8-deploy.md)."""
    import json

    import onnx

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
        complete_qdq(path, calib, at_resolution(qmodel.preprocess, qmodel.resolution),
                     num_images=num_images)
    return path


__all__ = ["QuantizedModel", "compile_pt2e", "export_pt2e_onnx", "qat_pt2e", "quantize_pt2e",
           "x86_quantizer"]
