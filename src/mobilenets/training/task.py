"""What a task gives the training engine (:func:`mobilenets.training.fit`).

The engine knows no task: it runs the processes (DDP), the optimiser and schedule, AMP, EMA,
gradient clipping, checkpoints with exact resume, progress, ``metrics.jsonl``, curves and
TensorBoard, and the distillation mix. A task (classification today; segmentation, depth and
detection next) says what the data, the model, the loss and the metrics are. Subclass
:class:`Task`, define its abstract methods and override the rest as needed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.shards import TrainShards, shard_loaders

# TrainConfig fields only a classification run uses: its augmentations, regularisers and
# distillation. A task that lists them in ``unused_config`` refuses them.
CLASSIFIER_ONLY = ("label_smoothing", "dropout", "drop_path_rate", "auto_augment",
                   "random_erasing", "mixup", "cutmix", "crop_min_scale", "teacher",
                   "teacher_weights", "kd_temperature", "kd_alpha")


class Task(ABC):
    """The task-specific half of a training run. ``cfg`` is the run's
    :class:`~mobilenets.training.config.TrainConfig`."""

    #: the name of the metric that picks ``best/``, and whether higher is better
    best_metric: str = "loss"
    higher_is_better: bool = False
    #: what :meth:`evaluate` returns besides ``loss``, for the epoch lines, TensorBoard and
    #: the curves: name -> (label, shown as a percentage)
    metrics: dict[str, tuple[str, bool]] = {}
    #: TrainConfig fields the task does not use: given a value other than their default, the
    #: run is refused (:meth:`check_config`) rather than the value silently ignored
    unused_config: tuple[str, ...] = ()

    @abstractmethod
    def datasets(self, cfg) -> tuple[Dataset, Dataset]:
        """The training and validation datasets. Items are what :meth:`collate` takes; the
        training set must give the same item for the same (epoch, index), whatever the worker
        count, so that resume is exact (see :class:`~mobilenets.training.sampling.SeededView`:
        the engine sets ``train_set.epoch`` and its sampler yields ``(epoch, index)`` keys)."""

    @abstractmethod
    def collate(self, items: list):
        """A batch from dataset items: ``(inputs, targets, n_unreadable)``."""

    def summary(self, train_set: Dataset, val_set: Dataset) -> str:
        """One line on the data, printed before training starts."""
        return f"{len(train_set)} training and {len(val_set)} validation items"

    @abstractmethod
    def build_model(self, cfg, resumed: dict | None = None) -> nn.Module:
        """The network to train (called after :meth:`datasets`). ``resumed``: when a run is
        resumed, the ``config`` and ``preprocess`` of the model its checkpoint was trained as
        (build that architecture again; the checkpoint then gives the weights), else None."""

    @staticmethod
    def schedule_text(cfg) -> str:
        """``"10 epochs of batch 32"`` for the summary line; under torchrun the per-process
        batch times the processes (the global batch is their product)."""
        import os
        world = int(os.environ.get("WORLD_SIZE", "1"))
        batch = f"{cfg.batch_size} x {world} processes" if world > 1 else f"{cfg.batch_size}"
        return f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} of batch {batch}"

    def check_config(self, cfg) -> None:
        """Raise ValueError naming the options of ``cfg`` this task would ignore
        (:attr:`unused_config` set to other than their defaults, or than its recipe's: a
        recipe's classification settings are left to the recipe)."""
        from .config import TrainConfig, load_recipe
        default = TrainConfig(**(load_recipe(cfg.recipe) if cfg.recipe else {}))

        def plain(value):                   # dropout 0.0 changes nothing: as None
            return None if value == 0 else value

        given = [f for f in self.unused_config
                 if plain(getattr(cfg, f)) != plain(getattr(default, f))]
        if given:
            flags = ", ".join(f"--{f.replace('_', '-')} ({f}={getattr(cfg, f)!r})"
                              for f in given)
            kind = type(self).__name__.removesuffix("Task").lower() or "this"
            raise ValueError(f"{flags}: not used by a {kind} run; leave "
                             f"{'it' if len(given) == 1 else 'them'} out")

    def check_model(self, model: nn.Module) -> None:
        """Raise ValueError if the model (given to ``fit`` or built) cannot be trained on
        this data."""

    def model_ready(self, model: nn.Module) -> None:
        """Called once the model is known (built or given), before the first batch is read:
        e.g. to take the input transforms from the model's preprocessing."""

    def device_loaders(self, sampler, cfg, device: torch.device, dist):
        """Training and validation batches for ``--device-data``: the data decoded once and
        kept on ``device``, augmented there (see :mod:`mobilenets.data.device`); called after
        :meth:`model_ready`. The training batches follow ``sampler`` (its epoch, shard and
        start) and yield what :meth:`collate` does."""
        raise ValueError(f"--device-data is not available for {type(self).__name__}; train "
                         f"without it")

    def stream_loaders(self, train_set: Dataset, val_set: Dataset, sampler, cfg,
                       device: torch.device, dist):
        """``(train, val)`` loaders for streamed data that the engine cannot index, or None
        for map-style datasets, which the engine loads itself. Called after
        :meth:`model_ready` with what :meth:`datasets` returned; the training loader follows
        ``sampler``'s ``epoch`` and ``start`` (samples into the epoch) and yields at least the
        engine's steps of what :meth:`collate` does, the same count on every rank. The
        default streams tar shards (:class:`~mobilenets.data.shards.TrainShards` and
        ``ValShards``), split over the processes and batched by :meth:`collate`."""
        if not isinstance(train_set, TrainShards):
            return None
        return shard_loaders(train_set, val_set, sampler, cfg.batch_size, cfg.workers, device,
                             dist, self.collate)

    def starts_trained(self, cfg) -> bool:
        """True when the model starts from weights trained for this very task (then a long
        EMA horizon is fine-tuning, not lag)."""
        return False

    def set_mode(self, model: nn.Module, training: bool) -> None:
        """Put ``model`` in training or eval mode (an exported graph needs its own calls)."""
        model.train(training)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called before each training epoch (0-based), e.g. to freeze observers."""

    def prepare(self, inputs, targets, device: torch.device):
        """Move a training batch to ``device``; augmentations that mix samples go here.
        Returns ``(inputs, targets, count)``."""
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True), \
            len(targets)

    @abstractmethod
    def loss(self, outputs, targets) -> torch.Tensor:
        """The training loss of a batch (a scalar), from the model's outputs."""

    def build_teacher(self, cfg, device: torch.device) -> nn.Module | None:
        """The distillation teacher (eval mode, no grad), or None."""
        return None

    def distillation_loss(self, outputs, teacher_outputs, cfg) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} has no distillation loss: train it without "
                         f"a teacher")

    @abstractmethod
    def evaluate(self, model: nn.Module, loader, device: torch.device, dist) -> dict:
        """Metrics on the validation loader (full-set values in every process under DDP:
        sum the counts with ``dist.sum``); must include ``loss`` and :attr:`best_metric`."""

    @abstractmethod
    def save_best(self, model: nn.Module, folder) -> None:
        """Write the best model so far (rank 0 only)."""

    def epoch_note(self, metrics: dict) -> str | None:
        """A warning for the user after an epoch, e.g. that training diverges, or None; rank
        0 prints the first one of a run. Epochs that were not validated (``val_every``)
        have only the training figures."""
        return None

    @staticmethod
    def with_config_options(cfg, options: dict) -> dict:
        """``options`` (create_model's, e.g. a task's ``model_options``) with the training
        options that are model options, where given: ``width_mult``, ``bn_momentum``."""
        options = dict(options)
        if cfg.width_mult is not None:
            if "width_mult" in options and options["width_mult"] != cfg.width_mult:
                raise ValueError(f"--width-mult {cfg.width_mult:g} and model_options' "
                                 f"width_mult {options['width_mult']:g} disagree; give one")
            options["width_mult"] = cfg.width_mult
        if cfg.bn_momentum is not None:
            options["bn_momentum"] = cfg.bn_momentum
        return options

    @staticmethod
    def model_options_with(model_options: dict, **fixed) -> dict:
        """``model_options`` (a task option) with the options the run fixes itself
        (``num_classes`` from the data, ``resolution`` from --resolution); ValueError when
        ``model_options`` gives one of those, which would be overridden without a word."""
        given = sorted(set(model_options) & set(fixed))
        if given:
            why = {"num_classes": "the class count comes from the data's names",
                   "resolution": "give --resolution (resolution= in Python)"}
            raise ValueError(f"model_options {', '.join(given)} not taken: "
                             + "; ".join(why.get(k, "the task sets it") for k in given))
        return dict(model_options, **fixed)

    def check_run_folder(self, cfg) -> None:
        """Refuse a run folder ``cfg.out`` that the task's data would read (called before it
        is made); by default any is fine."""

    def start_text(self) -> str:
        """The summary's words for where the weights start: ``weights FILE``, ``backbone
        weights FILE`` (a classification checkpoint under a head, from the task's
        ``backbone_weights`` or ``model_options["backbone_weights"]`` option) or
        ``weights random``; a resumed run: the checkpoint and where it resumes."""
        resuming = getattr(self, "resuming", None)
        if resuming:
            path, epoch, step = resuming
            at = f"epoch {epoch + 1}" + (f", step {step}" if step else "")
            return f"weights of {path} (resuming at {at})"
        if self.cfg.weights:
            return f"weights {self.cfg.weights}"
        options = getattr(self, "options", None)
        backbone = (getattr(options, "backbone_weights", None)
                    or (getattr(options, "model_options", None) or {}).get("backbone_weights"))
        return f"backbone weights {backbone}" if backbone else "weights random"

    def restart_weights(self, out) -> str:
        """What ``--weights`` gives to start a new run from run folder ``out``'s weights: its
        ``best/`` (a saved model, which every task loads); a task whose ``last.pt`` loads as
        weights (the classifier's, with its network's structure) names that."""
        return f"{out}/best"

    def outputs(self, model: nn.Module) -> list[tuple[str, str]]:
        """``(name, meaning)`` of each output of ``model``, for exported files' graphs and
        metadata."""
        return [("output", "the model's output")]

    def state(self) -> dict:
        """What the checkpoint records of the data, to refuse resuming on other data."""
        return {}

    def check_resume(self, state: dict, path) -> None:
        """Raise ValueError if the checkpoint ``path``, whose task wrote :meth:`state`
        ``state``, cannot continue on this task's data."""


__all__ = ["Task"]
