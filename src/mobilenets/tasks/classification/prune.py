"""Prune a classifier, re-estimate its BatchNorm statistics, and fine-tune it on the engine.

``mobilenets prune`` is this function with command-line options; from Python::

    pruned, metrics = prune_and_finetune(model, "runs/pruned", macs_ratio=0.3,
                                         data="my_images", epochs=5)

It writes ``OUT/pruned/`` (the pruned, recalibrated model as a saved-model folder) and then
the training run's files into ``OUT``; the fine-tune starts from ``OUT/pruned`` as its
``weights``, so a resumed fine-tune rebuilds the pruned network (its ``block_widths``).
:func:`compress_and_finetune` is the same workflow for any compression (low-rank
factorisation: :mod:`.lowrank`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...compress import prune, recalibrate_bn
from ...data import calibration_batches, resolve_split
from ...data.folder import class_folders
from ...training import check_out_folder, make_config
from ...training.engine import remove_run_files
from ...training.config import load_recipe
from ...weights import load, save
from .task import train


def prune_and_finetune(model: nn.Module, out: str | Path, *, ratio: float | None = None,
                       macs_ratio: float | None = None, criterion: str = "bn",
                       data: str | Path | None = None, recalibrate_images: int = 1024,
                       recipe: str | None = None, overwrite: bool = False,
                       progress: bool = True, log=print,
                       **train_options) -> tuple[nn.Module, dict | None]:
    """Prune ``model`` (``ratio`` of the prunable channels per layer, or ``macs_ratio`` of
    its MACs; see :func:`mobilenets.compress.prune`), re-estimate its BatchNorm statistics on
    ``recalibrate_images`` training images of ``data`` (0: keep the unpruned statistics),
    save it to ``OUT/pruned``, then fine-tune it on ``data`` for ``epochs`` (a
    :class:`~mobilenets.training.TrainConfig` option, like every other ``train_options``;
    ``recipe`` gives their defaults; ``epochs=0``: prune and save only). ``OUT`` is refused
    when it holds another run or contains the model's own folder, unless ``overwrite``.
    Returns the pruned model (fine-tuned, the best epoch's, when trained) and the last
    epoch's metrics (None without fine-tuning)."""
    def compress(model: nn.Module) -> tuple[nn.Module, str]:
        pruned = prune(model, ratio=ratio, macs_ratio=macs_ratio, criterion=criterion)
        info = pruned.config["pruned"]
        return pruned, (f"pruned (ratio {info['ratio']:.3f}, criterion {info['criterion']}): "
                        f"MACs {info['macs_before']:,} -> {info['macs_after']:,} "
                        f"(-{1 - info['macs_after'] / info['macs_before']:.1%})")

    return compress_and_finetune(model, out, "pruned", compress, verb="prune", data=data,
                                 recalibrate_images=recalibrate_images, recipe=recipe,
                                 overwrite=overwrite, progress=progress, log=log,
                                 **train_options)


def compress_and_finetune(model: nn.Module, out: str | Path, folder: str, compress, *,
                          verb: str = "compress", data: str | Path | None = None,
                          recalibrate_images: int = 1024,
                          recipe: str | None = None, overwrite: bool = False,
                          progress: bool = True, log=print,
                          **train_options) -> tuple[nn.Module, dict | None]:
    """The workflow of :func:`prune_and_finetune` for any ``compress(model) -> (compressed
    model, one-line summary)``: the compressed model is recalibrated, saved to ``OUT/folder``
    and fine-tuned from there (its config rebuilds its structure); ``verb`` names the step in
    errors."""
    out = Path(out)
    if train_options.get("width_mult") is not None:
        raise ValueError(f"the {folder} model keeps the widths the {verb} step gives it: leave "
                         f"width_mult (--width-mult) out")
    if train_options.get("epochs") == 0:
        unused = sorted(k for k, v in train_options.items()
                        if k not in ("epochs", "val", "tensorboard", "workers") and v is not None)
        if recipe is not None:
            unused.insert(0, "recipe")
        if unused:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in unused)
            raise ValueError(f"{flags} ({', '.join(unused)} in Python) set the fine-tuning, "
                             f"and --epochs 0 runs none: leave them out, or give --epochs >= 1")
    source = Path(str(model.config["weights"])) if model.config.get("weights") else None
    if source is not None and source.exists() and (source.resolve() == out.resolve()
                            or out.resolve() in source.resolve().parents):
        raise ValueError(f"{out} contains the model to {verb} ({source}), which the "
                         f"{folder} model and its fine-tuning would overwrite; choose another "
                         f"output folder")
    check_out_folder(out, overwrite=overwrite, can_resume=False)
    if (out / folder).exists() and not overwrite:
        raise ValueError(f"{out / folder} exists; write to another folder, or pass "
                         f"--overwrite (overwrite=True in Python) to replace it")
    if recalibrate_images < 0:
        raise ValueError(f"recalibrate_images must be >= 0, not {recalibrate_images}")
    if train_options.get("resolution") is None and (recipe is None or "resolution" not in
                                                     load_recipe(recipe)):
        # fine-tune at the size the model was trained at, not the training default's 64 px
        train_options["resolution"] = (model.preprocess or {}).get("resolution")
    cfg = make_config(recipe, model=model.config["name"], data=data and str(data), out=str(out),
                      weights=str(out / folder), **train_options)
    compressed, summary = compress(model)
    if recalibrate_images:
        train_dir = resolve_split(data, train_options.get("val"))[0]
        seen = recalibrate_bn(compressed, calibration_batches(
            train_dir, compressed.preprocess, recalibrate_images, batch_size=64))
        log(f"BatchNorm statistics re-estimated on {seen} images of {train_dir} at "
            f"{compressed.preprocess['resolution']} px")
    save(compressed, out / folder)
    params = (sum(p.numel() for p in model.parameters()),
              sum(p.numel() for p in compressed.parameters()))
    log(f"{summary}, params {params[0]:,} -> {params[1]:,}; saved to {out / folder}")
    if cfg.epochs == 0:
        if overwrite:             # the replaced run's files would pass for this one's
            remove_run_files(out)
        return compressed, None
    classes = class_folders(resolve_split(cfg.data, cfg.val)[0])
    if compressed.num_classes != len(classes):
        log(f"classifier re-initialised for the data's {len(classes)} classes (the model has "
            f"{compressed.num_classes})")
    metrics = train(cfg, progress=progress, overwrite=overwrite)
    return load(out / "best"), metrics


__all__ = ["compress_and_finetune", "prune_and_finetune"]
