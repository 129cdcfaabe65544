"""Factorise a classifier's 1x1 convolutions and linear layers by truncated SVD, then fine-tune
it on the engine: the prune workflow (:func:`.prune.compress_and_finetune`) with
:func:`mobilenets.compress.factorise` as its compression step.

``mobilenets lowrank`` is this function with command-line options; from Python::

    model, metrics = lowrank_and_finetune(model, "runs/lowrank", energy=0.9,
                                          data="my_images", epochs=5)

It writes ``OUT/lowrank/`` (the factorised model; its ``low_rank`` option rebuilds the
structure) and then the training run's files into ``OUT``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ...compress import factorise
from ...compress.lowrank import candidates
from ...data import resolve_split
from ...data.folder import class_folders
from .prune import compress_and_finetune


def lowrank_and_finetune(model: nn.Module, out: str | Path, *, rank: int | float | None = None,
                         energy: float | None = None, layers=None,
                         data: str | Path | None = None, recalibrate_images: int = 1024,
                         recipe: str | None = None, overwrite: bool = False,
                         progress: bool = True, log=print,
                         **train_options) -> tuple[nn.Module, dict | None]:
    """Factorise ``model`` (``rank`` or ``energy``, ``layers``: see
    :func:`mobilenets.compress.factorise`; layers where the pair would not be smaller stay
    whole), re-estimate its BatchNorm statistics on ``recalibrate_images`` training images of
    ``data`` (0: keep them), save it to ``OUT/lowrank``, then fine-tune it for ``epochs`` (a
    :class:`~mobilenets.training.TrainConfig` option like every ``train_options``; 0:
    factorise and save only). Logs the per-layer report. Returns the factorised model (the
    best epoch's when trained) and the last epoch's metrics (None without fine-tuning)."""
    epochs = train_options.get("epochs")
    if epochs != 0 and isinstance(getattr(model, "classifier", None), nn.Linear):
        classes = class_folders(resolve_split(data, train_options.get("val"))[0])
        if len(classes) != model.num_classes:    # fine-tuning replaces the classifier
            if layers is None:
                layers = [n for n in candidates(model) if n != "classifier"]
                log(f"classifier left whole: fine-tuning re-initialises it for the data's "
                    f"{len(classes)} classes")
            elif "classifier" in candidates(model, layers):
                raise ValueError(f"the data has {len(classes)} classes and the model "
                                 f"{model.num_classes}: fine-tuning re-initialises the "
                                 f"classifier, so it cannot stay factorised; leave it out of "
                                 f"the layers (--layers)")

    def compress(model: nn.Module) -> tuple[nn.Module, str]:
        new, report = factorise(model, rank=rank, energy=energy, layers=layers)
        if not report.ranks:
            what = "rank" if rank is not None else "energy"
            raise ValueError(f"no layer is smaller at this {what}: every candidate would need "
                             f"as many weights factorised as whole; choose a lower {what}")
        log(report.table())
        return new, (f"factorised {len(report.ranks)} of {len(report.layers)} layers "
                     f"({'rank ' + str(rank) if rank is not None else f'energy {energy}'}): "
                     f"MACs {report.macs_before:,} -> {report.macs_after:,} "
                     f"(-{1 - report.macs_after / report.macs_before:.1%})")

    return compress_and_finetune(model, out, "lowrank", compress, verb="factorise", data=data,
                                 recalibrate_images=recalibrate_images, recipe=recipe,
                                 overwrite=overwrite, progress=progress, log=log,
                                 **train_options)


__all__ = ["lowrank_and_finetune"]
