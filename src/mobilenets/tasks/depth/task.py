"""Monocular depth on the training engine: RGB + depth PNG pairs in, a depth model out.

The depth task's own options (data scale, split, loss, depth range) live in
``cfg.extra["depth"]``, a dict of :class:`DepthOptions` fields, so they are recorded in
``train_config.json`` and in checkpoints like every other option; ``train(..., depth={...})``
puts them there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..options import TaskOptions
from ...data import DataError
from ...data.shards import TrainShards, ValShards, is_shard_source, open_shards
from ...training.config import TrainConfig, make_config, resumed_config
from ...training.engine import fit
from ...training.sampling import SeededView
from ...training.task import CLASSIFIER_ONLY, Task
from ...weights import create_model, save
from .data import (INVALID, DepthPairs, collate_depth, decode_shard, depth_eval_transform,
                   depth_train_transform, split_pairs)
from .evaluate import (depth_output, evaluate_model, mean_depth, mean_depth_baseline,
                       model_depth_kind)
from .losses import LOSSES, masked_l1, silog_loss, ssi_loss, valid_mask
from .metrics import DEPTH_KINDS

# keys of a model config that are no builder options (for configs without an "options" dict)
_CONFIG_NOT_OPTIONS = ("name", "head", "backbone", "task", "depth_kind", "family", "weights")


@dataclass
class DepthOptions(TaskOptions):
    KEY = "depth"
    """The depth task's options (``cfg.extra["depth"]``)."""

    scale: float = 1000.0              # depth in metres = PNG value / scale (1000: millimetres)
    invalid: tuple = INVALID           # PNG codes that mean "no depth"
    train_range: tuple | None = None   # (start, stop) pair indices; None: the first 80%
    val_range: tuple | None = None     # None: the last 20%
    min_depth: float = 1e-3            # ground truth counts in (min_depth, max_depth];
    max_depth: float = 10.0            # predictions are clamped to it for scoring
    loss: str = "auto"                 # auto | l1 | silog | ssi (auto: silog for metric-depth
    #                                    models, ssi for inverse_relative ones)
    silog_lambda: float = 0.5          # Eigen et al. 2014's lambda
    ssi_alpha: float = 0.5             # weight of MiDaS's gradient-matching term
    ssi_scales: int = 4
    zoom: tuple = (1.0, 1.5)           # random scale range (depth divided by the zoom)
    hflip: float = 0.5
    output_init: str = "mean"          # mean: a metric model's predictions start at the
    #                                    training mean depth (FastDepth's output bias); none
    model_options: dict = field(default_factory=dict)   # more create_model options

    def __post_init__(self):
        self.check_types()
        self.invalid = tuple(int(v) for v in self.invalid)
        self.zoom = tuple(float(v) for v in self.zoom)
        for name in ("train_range", "val_range"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(value))
        if self.loss not in ("auto", *LOSSES):
            raise ValueError(f"depth loss must be auto or one of {', '.join(LOSSES)}, not "
                             f"{self.loss!r}")
        if not 0 < self.min_depth < self.max_depth:
            raise ValueError(f"depth options need 0 < min_depth < max_depth, not "
                             f"{self.min_depth}, {self.max_depth}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability in [0, 1], not {self.hflip}")
        if self.output_init not in ("mean", "none"):
            raise ValueError(f"output_init must be 'mean' or 'none', not {self.output_init!r}")



class DepthTask(Task):
    """Monocular depth: SILog, masked L1 or MiDaS's SSI loss (by the model's ``depth_kind``
    or the ``loss`` option); ``best/`` by AbsRel (lower is better)."""

    unused_config = CLASSIFIER_ONLY
    best_metric = "abs_rel"
    shards = False            # set by datasets(): cfg.data names WebDataset shards
    higher_is_better = False
    metrics = {"abs_rel": ("AbsRel", False), "delta1": ("delta1", True),
               "rmse": ("RMSE", False)}

    def datasets(self, cfg: TrainConfig):
        self.cfg = cfg
        self.options = opts = DepthOptions.from_config(cfg)
        if cfg.data is None:
            raise DataError("the depth task has no built-in sample: give data, a folder of RGB "
                            "+ depth PNG pairs (docs/depth.md), e.g. 7-Scenes unpacked by "
                            "`python experiments/datasets.py 7scenes-redkitchen-depth`")
        self.shards = is_shard_source(cfg.data)
        if self.shards:
            return self.shard_datasets(cfg, opts)
        train, val, self.split_line = split_pairs(cfg.data, cfg.val, opts.train_range,
                                                  opts.val_range)
        make = partial(DepthPairs, scale=opts.scale, invalid=opts.invalid,
                       strict=cfg.strict_data)
        self.train_raw, self.val_raw = make(train), make(val)
        self.names = ([p[0].name for p in train], [p[0].name for p in val])
        self.train_set = SeededView(self.train_raw, None, cfg.seed)   # transforms: model_ready
        self.val_set = SeededView(self.val_raw, None, cfg.seed)
        return self.train_set, self.val_set

    def shard_datasets(self, cfg: TrainConfig, opts: DepthOptions):
        """Streams of the WebDataset shards ``cfg.data`` (``mobilenets shard`` of a depth
        folder, split into train and val when written): its training shards and the
        validation shards of its index. The depth scale and invalid codes apply here."""
        if cfg.val is not None or opts.train_range is not None or opts.val_range is not None:
            raise ValueError(f"--val and the train/val ranges split a pair folder; the shards "
                             f"{cfg.data} were split when written: give the ranges to "
                             f"`mobilenets shard` instead")
        index = open_shards(cfg.data, task="depth")
        if not index.val:
            raise ValueError(f"the shards of {cfg.data} have no val split; write them again "
                             f"with mobilenets shard")
        self.shard_index = index
        self.split_line = (f"shards of {index.index['depth']['split']}; "
                           f"{len(index.train)} train and {len(index.val)} val shards")
        self.names = ([f"{url.rsplit('/', 1)[-1]}:{n}" for url, n in index.train], [])
        decode = partial(decode_shard, scale=opts.scale, invalid=tuple(opts.invalid))
        self.train_set = TrainShards(index.train, 0, cfg.batch_size, cfg.seed,
                                     workers=cfg.workers, strict=cfg.strict_data, decode=decode)
        self.val_set = ValShards(index.val, 0, strict=cfg.strict_data, decode=decode)
        return self.train_set, self.val_set

    def collate(self, items):
        return collate_depth(items)

    def summary(self, train_set, val_set) -> str:
        cfg, opts = self.cfg, self.options
        return (f"data: {self.split_line}; depth = PNG value / {opts.scale:g} m, codes "
                f"{', '.join(map(str, opts.invalid)) or 'none'} invalid, scored in "
                f"({opts.min_depth:g}, {opts.max_depth:g}] m\n"
                f"model: {cfg.model} at {cfg.resolution} px, "
                f"{self.start_text()}; {self.schedule_text(cfg)}; "
                f"writing to {cfg.out}")

    def build_model(self, cfg: TrainConfig, resumed: dict | None = None) -> nn.Module:
        """``cfg.model`` (a depth head, e.g. ``fastdepth_mobilenet_v2_100``) through
        :func:`mobilenets.weights.create_model` with ``resolution``, ``bn_momentum`` when set,
        ``weights`` and the ``model_options`` depth option; on resume the architecture the
        checkpoint recorded: ``create_model(config["name"], **config["options"])`` (the heads'
        convention), or with the config's other keys as options when it has no ``options``."""
        if resumed and resumed.get("config"):
            config = resumed["config"]
            options = config.get("options")      # the heads' convention (docs/dense-heads.md)
            if not isinstance(options, dict):    # else every key that describes no option
                options = {k: v for k, v in config.items() if k not in _CONFIG_NOT_OPTIONS}
            model = create_model(config["name"], **options)
            model.preprocess = dict(resumed.get("preprocess") or model.preprocess)
            return model
        options = self.with_config_options(
            cfg, self.model_options_with(self.options.model_options, resolution=cfg.resolution))
        if cfg.weights:
            options["weights"] = cfg.weights
        return create_model(cfg.model, **options)

    def check_model(self, model: nn.Module) -> None:
        task = getattr(model, "task", None)
        if task != "depth":
            raise ValueError(f"the model's task is {task!r}, not 'depth': train a depth model "
                             f"(a depth head such as fastdepth_<backbone> or "
                             f"midas_small_<backbone>, with task = 'depth')")

    def model_ready(self, model: nn.Module) -> None:
        cfg, opts = self.cfg, self.options
        kind = model_depth_kind(model)
        if kind not in DEPTH_KINDS:
            raise ValueError(f"the model's depth_kind is {kind!r}; it must be one of "
                             f"{', '.join(DEPTH_KINDS)}")
        loss = opts.loss
        if loss == "auto":
            loss = "ssi" if kind == "inverse_relative" else "silog"
        if (loss == "ssi") != (kind == "inverse_relative"):
            fits = "ssi" if kind == "inverse_relative" else "silog or l1"
            raise ValueError(f"the {loss} loss does not fit a model of depth_kind {kind!r} "
                             f"({'relative inverse depth' if kind != 'metric' else 'metres'}); "
                             f"use loss {fits} (or auto)")
        self.kind, self.loss_name = kind, loss
        pre = dict(getattr(model, "preprocess", None) or {})
        pre["resolution"] = cfg.resolution
        if "resize" in pre:           # the heads' preprocess: resize = resolution, no crop
            pre.update(resize=cfg.resolution, crop_pct=1.0)
        # how the training depth PNGs encode metres, saved with the model so that eval reads
        # other files of the same kind the same way unless told otherwise
        pre.update(depth_scale=opts.scale, depth_invalid=[int(c) for c in opts.invalid])
        if hasattr(model, "preprocess"):
            model.preprocess = pre
        self.preprocess = pre
        self.train_set.transform = depth_train_transform(
            cfg.resolution, pre, opts.zoom, opts.hflip, cfg.color_jitter)
        # a model that starts from trained depth weights keeps its output; a resumed run's
        # checkpoint overwrites this afterwards
        if opts.output_init == "mean" and hasattr(model, "init_output") and not cfg.weights:
            self.start_depth = self.train_mean_depth()
            model.init_output(self.start_depth)
        self.val_set.transform = depth_eval_transform(cfg.resolution, pre)

    def train_mean_depth(self) -> float:
        """The mean valid depth (metres) of the training pairs, at their own resolution."""
        opts = self.options
        if not self.shards:
            return mean_depth(self.train_raw, opts.min_depth, opts.max_depth)
        items = ValShards(self.shard_index.train, 0, strict=self.cfg.strict_data,
                          decode=self.train_set.decode)
        return mean_depth(list(items), opts.min_depth, opts.max_depth)

    def loss(self, outputs, target) -> torch.Tensor:
        opts = self.options
        pred = depth_output(outputs).float()
        target = target.float()
        if pred.shape != target.shape:
            raise ValueError(f"the model outputs {tuple(pred.shape)} for depth maps of "
                             f"{tuple(target.shape)}: a depth model must return B x 1 x H x W "
                             f"at its input's size")
        mask = valid_mask(target, opts.min_depth, opts.max_depth)
        if self.loss_name == "l1":
            return masked_l1(pred, target, mask)
        if self.loss_name == "silog":
            return silog_loss(pred, target, mask, opts.silog_lambda, opts.min_depth)
        return ssi_loss(pred, target, mask, opts.ssi_alpha, opts.ssi_scales)

    def evaluate(self, model, loader, device, dist) -> dict:
        opts = self.options
        return evaluate_model(model, loader, self.loss, device=device, dist=dist,
                              set_eval=False, kind=self.kind, min_depth=opts.min_depth,
                              max_depth=opts.max_depth)

    def save_best(self, model, folder) -> None:
        save(model, folder)

    def epoch_note(self, metrics: dict) -> str | None:
        # epochs without validation (val_every) have no abs_rel
        if metrics["epoch"] >= 2 and "abs_rel" in metrics and not math.isfinite(
                metrics["abs_rel"]):
            return ("no validation image has a valid depth pixel: check the depth scale "
                    "(scale), the invalid codes and min_depth / max_depth")
        return None

    def outputs(self, model) -> list[tuple[str, str]]:
        if model_depth_kind(model) == "inverse_relative":
            return [("depth", "N x 1 x H x W relative inverse depth (up to scale and shift)")]
        return [("depth", "N x 1 x H x W depth in metres")]

    def state(self) -> dict:
        return {"depth": {"train_pairs": self.names[0], "val_pairs": self.names[1],
                          "scale": self.options.scale}}

    def check_resume(self, state: dict, path) -> None:
        saved = state.get("depth")
        if saved is None:
            raise ValueError(f"{path} is not a checkpoint of the depth task; resume it with "
                             f"the task it was trained with")
        if list(saved["train_pairs"]) != self.names[0] or saved["scale"] != self.options.scale:
            raise ValueError(f"{path} was trained on other depth pairs (or another depth "
                             f"scale) than {self.split_line}; resume it on the same data and "
                             f"options")

    def mean_baseline(self) -> dict:
        """The predict-the-mean baseline on this task's split (call after :meth:`datasets`),
        at the run's resolution, scored raw."""
        opts = self.options
        if self.shards:
            raise ValueError("the mean-depth baseline reads the pair folder; give the folder "
                             "the shards were written from")
        return mean_depth_baseline(self.train_raw, self.val_raw, self.cfg.resolution,
                                   opts.min_depth, opts.max_depth, self.cfg.batch_size)


def depth_config(cfg: TrainConfig | None = None, depth: dict | None = None,
                 **overrides) -> TrainConfig:
    """A training config for the depth task: ``cfg`` (or one made from ``overrides``) with
    the depth options ``depth`` (:class:`DepthOptions` fields) added to ``extra["depth"]``."""
    cfg = cfg or make_config(**overrides)
    return DepthOptions.into_config(cfg, depth)


def train(cfg: TrainConfig | None = None, resume=None, progress: bool = True,
          model: nn.Module | None = None, overwrite: bool = False, depth: dict | None = None,
          **overrides) -> dict:
    """Train a depth model: ``cfg.model`` (or ``model``, an already-built one) on the pairs of
    ``cfg.data`` (see :mod:`.data` for the layout), with the depth options ``depth`` (e.g.
    ``{"train_range": (0, 400), "val_range": (400, 500), "loss": "l1"}``); see
    :func:`mobilenets.training.fit` for the files it writes, ``resume`` and ``overwrite``.
    Returns the last epoch's metrics."""
    if isinstance(model, str):
        overrides["model"], model = model, None
    if cfg is None and resume is not None:        # the run's own options, as the CLI's
        cfg = resumed_config(resume, None, overrides)
    return fit(DepthTask(), depth_config(cfg, depth, **overrides), resume, progress, model,
               overwrite)


__all__ = ["DepthOptions", "DepthTask", "depth_config", "train"]
