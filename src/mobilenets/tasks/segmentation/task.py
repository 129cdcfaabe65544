"""Semantic segmentation on the training engine: image + mask pairs in, a segmentation model
out.

The task's own options (label set, splits, augmentation, aux weight) live in
``cfg.extra["segmentation"]``, a dict of :class:`SegmentationOptions` fields, so they are
recorded in ``train_config.json`` and in checkpoints like every other option;
``train(..., segmentation={...})`` puts them there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..options import TaskOptions
from ...data import DataError
from ...data.shards import TrainShards, ValShards, is_shard_source, open_shards
from ...training.config import TrainConfig, make_config, resumed_config
from ...training.engine import fit
from ...training.sampling import SeededView
from ...training.task import CLASSIFIER_ONLY, Task
from ...weights import create_model, is_saved_model, read_config, save
from ...weights.saved import STATE_DICT_SCHEMA
from .data import (LABEL_SETS, MaskPairs, collate_masks, find_split,
                   segmentation_eval_transform, segmentation_train_transform, shard_decoder)
from .evaluate import DEFAULT_PREPROCESS, evaluate_model
from .losses import segmentation_loss

# what a head model's config records besides its builder options
_CONFIG_NOT_OPTIONS = ("name", "head", "backbone", "task", "family", "weights", "class_names",
                       "backbone_config", "options")


@dataclass
class SegmentationOptions(TaskOptions):
    KEY = "segmentation"
    """The segmentation task's options (``cfg.extra["segmentation"]``)."""

    label_set: str | None = None       # COCO panoptic masks: "coco" (default) or "voc"
    unlabeled: str | None = None       # COCO id 0: "ignore" | "background" (None: the set's)
    train_split: str = "train"         # folder: images/<split>; VOC: ImageSets list; COCO:
    val_split: str = "val"             # config.yaml's key (or a masks/<split> folder)
    train_limit: int = 0               # > 0: only the first N pairs of the split (by name),
    val_limit: int = 0                 # e.g. to overfit a few images
    scale: tuple = (0.5, 2.0)          # random resize of the shorter side, x resolution
    hflip: float = 0.5
    aux_weight: float = 0.5            # torchvision's reference: out + 0.5 aux
    model_options: dict = field(default_factory=dict)   # more create_model options

    def __post_init__(self):
        self.check_types()
        self.scale = tuple(float(v) for v in self.scale)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, not {self.scale}")
        if self.label_set is not None and self.label_set not in LABEL_SETS:
            raise ValueError(f"label_set must be one of {', '.join(LABEL_SETS)}, not "
                             f"{self.label_set!r}")
        if self.unlabeled not in (None, "ignore", "background"):
            raise ValueError(f"unlabeled must be 'ignore' or 'background', not "
                             f"{self.unlabeled!r}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability in [0, 1], not {self.hflip}")
        for name in ("train_limit", "val_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: the whole split), not "
                                 f"{value!r}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, not {self.aux_weight}")



def _shown(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names) - n} more)" if len(names) > n else "")


class SegmentationTask(Task):
    """Per-pixel cross-entropy (ignore 255, + 0.5 x aux) on image + mask pairs; ``best/`` by
    mIoU."""

    unused_config = CLASSIFIER_ONLY
    best_metric = "miou"
    shards = False            # set by datasets(): cfg.data names WebDataset shards
    higher_is_better = True
    metrics = {"miou": ("mIoU", True), "pixel_acc": ("pixel acc", True)}

    def datasets(self, cfg: TrainConfig):
        self.cfg = cfg
        self.options = opts = SegmentationOptions.from_config(cfg)
        if cfg.data is None:
            raise DataError("the segmentation task has no built-in sample: give data, a folder "
                            "of images and masks (docs/segmentation.md), e.g. COCO128 unpacked "
                            "by `python experiments/datasets.py coco128-lightly`")
        self.shards = is_shard_source(cfg.data)
        if self.shards:
            return self.shard_datasets(cfg, opts)
        # a flat folder (no split folders) is split 80 / 20, or used whole beside a --val
        whole = cfg.val is not None
        train = find_split(cfg.data, opts.train_split, opts.label_set, opts.unlabeled, whole)
        val = find_split(cfg.val or cfg.data, opts.val_split, opts.label_set, opts.unlabeled,
                         whole)
        if val.classes != train.classes:
            raise DataError(f"the validation data ({val.where}) has the classes "
                            f"{_shown(val.classes)}, the training data {_shown(train.classes)}; "
                            f"give data with one class list")
        for files, limit in ((train, opts.train_limit), (val, opts.val_limit)):
            if limit:
                files.pairs = files.pairs[:limit]
        self.classes, self.files = list(train.classes), (train, val)
        self.train_raw = MaskPairs(train, strict=cfg.strict_data)
        self.val_raw = MaskPairs(val, strict=cfg.strict_data)
        self.train_raw.check_first()
        self.val_raw.check_first()
        # the transforms come from the model's preprocessing (model_ready)
        self.train_set = SeededView(self.train_raw, None, cfg.seed)
        self.val_set = SeededView(self.val_raw, None, cfg.seed)
        return self.train_set, self.val_set

    def shard_datasets(self, cfg: TrainConfig, opts: SegmentationOptions):
        """Streams of the WebDataset shards ``cfg.data`` (``mobilenets shard`` of a
        segmentation folder): its training shards, and the validation shards of its index."""
        if cfg.val is not None:
            raise ValueError(f"--val cannot be combined with shards ({cfg.data}): the "
                             f"validation shards are those of the shards' index")
        fixed = [f"{k}={getattr(opts, k)!r}" for k in ("label_set", "unlabeled", "train_limit",
                                                      "val_limit")
                 if getattr(opts, k) != getattr(SegmentationOptions, k)]
        if fixed:
            raise ValueError(f"{', '.join(fixed)} select or remap the pairs of a data folder; "
                             f"shards hold what `mobilenets shard` wrote: write the shards "
                             f"with those options instead (mobilenets shard --label-set ...)")
        index = open_shards(cfg.data, task="segmentation")
        if not index.val:
            raise ValueError(f"the shards of {cfg.data} have no val split; write them again "
                             f"with mobilenets shard")
        self.classes, self.shard_index = list(index.classes), index
        decode = shard_decoder(index)
        self.train_set = TrainShards(index.train, len(self.classes), cfg.batch_size, cfg.seed,
                                     workers=cfg.workers, strict=cfg.strict_data, decode=decode)
        self.val_set = ValShards(index.val, len(self.classes), strict=cfg.strict_data,
                                 decode=decode)
        return self.train_set, self.val_set

    def collate(self, items):
        return collate_masks(items)

    def summary(self, train_set, val_set) -> str:
        cfg, opts = self.cfg, self.options
        if self.shards:
            info = self.shard_index.index["segmentation"]
            return (f"data: shards of a {info['layout']} folder"
                    + (f" (label set {info['label_set']})" if info["label_set"] else "")
                    + f"; {len(self.classes)} classes ({_shown(self.classes)}); "
                    f"{len(train_set)} train pairs in {len(self.shard_index.train)} shards of "
                    f"{cfg.data}, {len(val_set)} val pairs in {len(self.shard_index.val)} "
                    f"shards\nmodel: {cfg.model} at {cfg.resolution} px, "
                    f"{self.start_text()}; {self.schedule_text(cfg)}; writing to "
                    f"{cfg.out}")
        train, val = self.files
        remap = ""
        if train.layout == "coco":
            unlabeled = opts.unlabeled or ("background" if opts.label_set == "voc" else "ignore")
            remap = (f", COCO panoptic ids as label set {opts.label_set or 'coco'} (unlabeled "
                     f"-> {unlabeled})")
        skipped = [f"{n} {what} image(s) without a mask skipped"
                   for n, what in ((train.skipped, "train"), (val.skipped, "val")) if n]
        return (f"data: {train.layout} layout{remap}; {len(self.classes)} classes "
                f"({_shown(self.classes)}); {len(train_set)} train pairs ({opts.train_split}) "
                f"in {train.where}, {len(val_set)} val pairs ({opts.val_split}) in {val.where}"
                + (f"; {', '.join(skipped)}" if skipped else "") + "\n"
                f"model: {cfg.model} at {cfg.resolution} px, "
                f"{self.start_text()}; {self.schedule_text(cfg)}; "
                f"writing to {cfg.out}")

    def build_model(self, cfg: TrainConfig, resumed: dict | None = None) -> nn.Module:
        """``cfg.model`` (a segmentation head, e.g. ``lraspp_mobilenet_v3_large``) through
        :func:`mobilenets.weights.create_model` with ``num_classes`` (the data's),
        ``resolution``, ``bn_momentum`` when set, ``weights`` and the ``model_options``
        option; on resume the architecture the checkpoint recorded."""
        if resumed and resumed.get("config"):
            config = resumed["config"]
            options = config.get("options")
            if not isinstance(options, dict):
                options = {k: v for k, v in config.items() if k not in _CONFIG_NOT_OPTIONS}
            model = create_model(config["name"], **options)
            model.preprocess = dict(resumed.get("preprocess") or model.preprocess)
            return model
        options = self.with_config_options(cfg, self.model_options_with(
            self.options.model_options, num_classes=len(self.classes), resolution=cfg.resolution))
        if cfg.weights:
            options["weights"] = cfg.weights
        return create_model(cfg.model, **options)

    def check_model(self, model: nn.Module) -> None:
        from ...models.network import MobileNet
        # a model without a task attribute (torchvision's) is taken as a segmentation model;
        # the library's classifiers have none either
        task = getattr(model, "task", "classification" if isinstance(model, MobileNet)
                       else "segmentation")
        if task != "segmentation":
            raise ValueError(f"the model's task is {task!r}, not 'segmentation': train a "
                             f"segmentation model (lraspp_<backbone> or deeplabv3_<backbone>)")
        num = (getattr(model, "config", None) or {}).get("num_classes")
        if num is not None and num != len(self.classes):
            raise ValueError(f"the given model predicts {num} classes but the data has "
                             f"{len(self.classes)}; build it with num_classes="
                             f"{len(self.classes)}")

    def model_ready(self, model: nn.Module) -> None:
        cfg, opts = self.cfg, self.options
        pre = dict(DEFAULT_PREPROCESS, **(getattr(model, "preprocess", None) or {}))
        pre["resolution"] = cfg.resolution
        for key in ("label_set", "unlabeled"):       # how COCO masks were read: eval reads
            pre.pop(key, None)                      # them the same way by default
            if getattr(opts, key) is not None:
                pre[key] = getattr(opts, key)
        if hasattr(model, "preprocess"):
            model.preprocess = pre
        self.preprocess = pre
        self.train_set.transform = segmentation_train_transform(
            cfg.resolution, pre, opts.scale, opts.hflip, cfg.color_jitter)
        self.val_set.transform = segmentation_eval_transform(cfg.resolution, pre)

    def starts_trained(self, cfg: TrainConfig) -> bool:
        """True when ``--weights`` is a saved segmentation model of this data's classes."""
        if not cfg.weights or not is_saved_model(Path(cfg.weights)):
            return False
        return read_config(Path(cfg.weights)).get("class_names") == self.classes

    def loss(self, outputs, target) -> torch.Tensor:
        return segmentation_loss(outputs, target, self.options.aux_weight)

    def evaluate(self, model, loader, device, dist) -> dict:
        result = evaluate_model(model, loader, len(self.classes), device, dist, set_eval=False,
                                aux_weight=self.options.aux_weight, classes=self.classes)
        if result["pixels"] == 0:
            raise DataError("no validation pixel has a label (every mask value is 255 or every "
                            "image was unreadable): nothing to score; check the masks and, for "
                            "COCO masks, the unlabeled option")
        return {k: result[k] for k in ("loss", "miou", "pixel_acc", "per_class_iou")}

    def save_best(self, model, folder) -> None:
        """Our saved-model format (:func:`mobilenets.weights.save`) for a model with a
        ``config`` (every model ``create_model`` builds); another network (e.g. torchvision's
        own) as ``model.safetensors`` + a ``config.json`` that records its class, classes
        and preprocessing (load its state dict into the same class)."""
        config = getattr(model, "config", None)
        if isinstance(config, dict) and "name" in config:
            config.setdefault("num_classes", len(self.classes))   # save() checks the names
            config["class_names"] = self.classes
            save(model, folder, class_names=self.classes)
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps({
            "schema": STATE_DICT_SCHEMA, "class": f"{type(model).__module__}."
            f"{type(model).__qualname__}", "task": "segmentation",
            "class_names": self.classes, "preprocess": self.preprocess}, indent=2) + "\n")

    def epoch_note(self, metrics: dict) -> str | None:
        """A training loss still above chance level (ln C, a uniform guess per pixel) after
        two epochs: the run diverges."""
        chance = math.log(len(self.classes))
        if len(self.classes) < 2 or metrics["epoch"] < 2 or metrics["train_loss"] <= 1.5 * chance:
            return None
        return (f"the training loss {metrics['train_loss']:.2f} is still well above chance "
                f"level (ln {len(self.classes)} = {chance:.2f}) after {metrics['epoch']} "
                f"epochs: the run is diverging. Lower --lr (now {self.cfg.lr:g}) or add "
                f"--warmup-epochs")

    def outputs(self, model) -> list[tuple[str, str]]:
        n = (getattr(model, "config", None) or {}).get("num_classes") or "C"
        out = [("out", f"N x {n} x H x W class scores per pixel (logits) at the input size")]
        config = getattr(model, "config", None) or {}
        aux = (getattr(model, "aux_classifier", None) is not None
               or any(config.get(k) for k in ("aux", "aux_loss")))
        if aux:
            out.append(("aux", f"N x {n} x H x W logits of the auxiliary head"))
        return out

    def _train_items(self) -> list:
        """What the training data is, for a resume check: the pairs' image names, or the
        shards' names and counts."""
        if self.shards:
            return [f"{Path(url).name}:{count}" for url, count in self.shard_index.train]
        return [p[0].name for p in self.train_raw.pairs]

    def state(self) -> dict:
        return {"segmentation": {"classes": self.classes, "train_pairs": self._train_items()}}

    def check_resume(self, state: dict, path) -> None:
        saved = state.get("segmentation")
        if saved is None:
            raise ValueError(f"{path} is not a checkpoint of the segmentation task; resume it "
                             f"with the task it was trained with")
        if list(saved["classes"]) != self.classes:
            raise ValueError(f"{path} was trained on the classes {_shown(saved['classes'])}, "
                             f"but the data has {_shown(self.classes)}; resume it on the same "
                             f"data and label set")
        if list(saved["train_pairs"]) != self._train_items():
            raise ValueError(f"{path} was trained on other training images than those of "
                             f"{self.cfg.data}; resume it on the same data")


def segmentation_config(cfg: TrainConfig | None = None, segmentation: dict | None = None,
                        **overrides) -> TrainConfig:
    """A training config for the segmentation task: ``cfg`` (or one made from
    ``overrides``) with the options ``segmentation`` (:class:`SegmentationOptions` fields)
    added to ``extra["segmentation"]``."""
    cfg = cfg or make_config(**overrides)
    return SegmentationOptions.into_config(cfg, segmentation)


def train(cfg: TrainConfig | None = None, resume=None, progress: bool = True,
          model: nn.Module | None = None, overwrite: bool = False,
          segmentation: dict | None = None, **overrides) -> dict:
    """Train a segmentation model: ``cfg.model`` (or ``model``, an already-built one) on the
    data folder ``cfg.data`` (see :mod:`.data` for the layouts), with the options
    ``segmentation`` (e.g. ``{"label_set": "voc"}``); see :func:`mobilenets.training.fit`
    for the files it writes, ``resume`` and ``overwrite``. Returns the last epoch's
    metrics."""
    if isinstance(model, str):
        overrides["model"], model = model, None
    if cfg is None and resume is not None:        # the run's own options, as the CLI's
        cfg = resumed_config(resume, None, overrides)
    return fit(SegmentationTask(), segmentation_config(cfg, segmentation, **overrides), resume,
               progress, model, overwrite)


__all__ = ["SegmentationOptions", "SegmentationTask", "segmentation_config", "train"]
