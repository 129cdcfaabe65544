"""One way in: turn what a user names (a registered model, weights, a saved-model folder or
an exported file) into something to run, for every command and Python entry point."""

from __future__ import annotations

from pathlib import Path

import warnings

from torch import nn

from ..tasks.classification import evaluate as evaluate_classifier
from ..models import resolve_name
from ..models.heads import resolve_head
from ..weights import create_model, is_saved_model, load
from ..weights.saved import read_config
from .onnx_detector import OnnxDetector
from .onnx_model import OnnxModel, PteModel
from .pte_detector import PteDetector
from .runtimes import FILE_SUFFIX, RUNTIMES, check_runtime_for, runtimes_for

EXPORTED_SUFFIXES = tuple(dict.fromkeys(FILE_SUFFIX.values()))     # .onnx, .pte


def is_exported_file(model) -> bool:
    """``model`` names an exported file (by its suffix) that a runtime runs."""
    return isinstance(model, (str, Path)) and Path(model).suffix.lower() in EXPORTED_SUFFIXES


def open_model(model, weights=None, runtime: str | None = None, allow_download: bool = False,
               threads: int | None = None, purpose: str | None = None,
               **options) -> nn.Module | OnnxModel:
    """The model ``model`` names, ready to run:

    - an exported ``.onnx`` file: an :class:`OnnxModel` in ``runtime`` (onnxruntime by
      default, or openvino; ``threads`` sets its intra-op threads), an
      :class:`OnnxDetector` for a detector file;
    - an ExecuTorch ``.pte`` file: a :class:`PteModel` (runtime executorch; ``threads``
      sizes ExecuTorch's process-wide thread pool), a :class:`PteDetector` for a detector
      file;
    - a saved-model folder (``mobilenets.save``, a run's ``best/``): ``mobilenets.load``;
    - a registered name: ``mobilenets.create_model(name, weights=weights, **options)``
      (random weights without ``weights``; ``allow_download`` lets ``"torchvision"`` /
      ``"timm"`` fetch a missing file);
    - a model object: returned as it is.

    ``runtime="eager"`` (or None) runs PyTorch models; errors say what to give instead.
    ``purpose`` (e.g. "results"): warn when a registered name without weights gives random
    weights for it."""
    if not isinstance(model, (str, Path)):
        if weights is not None:
            raise ValueError("weights (--weights) apply to a registered model name, not to a model")
        if runtime not in (None, "eager") and not isinstance(model, OnnxModel):
            how = ("mobilenets.deploy.runtimes.executorch.export_pte" if runtime == "executorch"
                   else "mobilenets.export_onnx")
            raise ValueError(f"runtime {runtime!r} runs exported files; this is a PyTorch "
                             f"model (runtime eager): export it first ({how})")
        return model
    path = Path(model)
    if runtime not in (None, "eager", *RUNTIMES):
        raise ValueError(f"unknown runtime {runtime!r}; choose eager or one of "
                         f"{', '.join(RUNTIMES)}")
    if is_exported_file(model):
        if weights is not None:
            raise ValueError(f"weights (--weights) do not apply to the exported file {model}")
        fits = runtimes_for(path)
        if runtime == "eager":
            raise ValueError(f"{model} is an exported file: it runs with runtime "
                             f"{' or '.join(fits)}, not eager (PyTorch)")
        runtime = runtime or fits[0]
        check_runtime_for(path, runtime)
        if runtime == "executorch":
            opened, view = PteModel(path, threads=threads), PteDetector
        else:
            opened, view = OnnxModel(path, threads=threads, runtime=runtime), OnnxDetector
        # a detector file: images in, detections in their pixels out (torchvision's way)
        return view.of(opened) if opened.metadata.get("task") == "detection" else opened
    if runtime not in (None, "eager"):
        kind, flag = (".pte", " --format pte") if runtime == "executorch" else (".onnx", "")
        raise ValueError(f"runtime {runtime} runs {kind} files, and {model} is not one: export "
                         f"it first (`mobilenets export {model}{flag}`)")
    if is_saved_model(path):
        if weights is not None:
            raise ValueError(f"--weights does not apply to the saved-model folder {model}, "
                             f"which holds its own weights; give a registered name with "
                             f"--weights (weights= in Python), or the folder alone")
        return load(path, **options)
    if path.is_dir() and is_saved_model(path / "best"):
        raise ValueError(f"{model} is a training run's folder; its model is {path / 'best'} "
                         f"(the best epoch's, a saved-model folder)")
    if path.is_dir() and (path / "config.json").is_file():
        read_config(path)          # a state-dict folder says what to do; else not ours
    if path.is_dir():
        raise ValueError(f"{model} is not a mobilenets saved-model folder (no config.json); "
                         f"give a folder written by mobilenets train or mobilenets.save "
                         f"(e.g. RUN/best)")
    if weights is None and path.is_file() and is_saved_model(path.parent / "best"):
        raise ValueError(f"{model} is a training checkpoint (to continue the run: mobilenets "
                         f"train --resume {path}); the run's model is {path.parent / 'best'} "
                         f"(the best epoch's, a saved-model folder)")
    if weights is None and path.exists():
        raise ValueError(f"{model} is a file, not a model: give a saved-model folder, a "
                         f"registered name (with --weights FILE, weights= in Python), or an "
                         f".onnx or .pte file")
    if weights is None and ("/" in str(model) or "\\" in str(model)):
        raise FileNotFoundError(f"no model folder or file {model}")
    try:
        if resolve_head(str(model)) is None:      # a head's name: create_model checks it
            resolve_name(str(model))
    except ValueError as e:
        raise ValueError(f"{e}; nor is {model} an existing file or folder") from None
    if weights is None and purpose:
        warnings.warn(f"{model} has random weights (no weights given), so its {purpose} mean "
                      f"nothing", stacklevel=2)
    return create_model(str(model), weights=weights, allow_download=allow_download, **options)


def evaluate(model, data, resolution: int | None = None, batch_size: int = 64,
             workers: int = 0, runtime: str | None = None, **options) -> dict:
    """``model`` (anything :func:`open_model` opens: a model, a saved-model folder, an
    ``.onnx`` or ``.pte`` file) scored on ``data`` with its task's evaluation, as
    ``mobilenets eval`` does: a classifier's top-1, top-5, loss, per-class accuracy and
    confusion matrix on an image folder (its ``val/`` if it has one), with the model's eval
    preprocessing; a segmentation, depth or detection model's metrics on its data
    (:func:`mobilenets.deploy.dense_eval.evaluate_dense`, whose ``depth_scale``, ``invalid``
    and ``label_set`` are the ``options``). ``data`` may also name shards written by
    ``mobilenets shard``: their validation shards are scored."""
    from .dense_eval import dense_task_of, evaluate_dense
    opened = open_model(model, runtime=runtime, purpose="results")
    task = dense_task_of(opened)
    if task is not None:
        return evaluate_dense(opened, task, str(data), resolution, batch_size, workers,
                              **options)
    if options:
        raise TypeError(f"{', '.join(options)}: options of a segmentation or depth model's "
                        f"evaluation, not a classifier's")
    return evaluate_classifier(opened, data, resolution, batch_size, workers)


__all__ = ["EXPORTED_SUFFIXES", "evaluate", "is_exported_file", "open_model"]
