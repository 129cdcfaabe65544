"""Image classification on the training engine: image folders in, a classifier out."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...data import (ImageFolderDataset, at_resolution, collate_skip_bad, eval_transform,
                     mixup_cutmix, resolve_split, train_transform)
from ...data.device import DeviceEvalBatches, DeviceImages, DeviceTrainBatches
from ...data.folder import split_folders
from ...data.shards import TrainShards, ValShards, is_shard_source, open_shards
from ...models import MODEL_OPTIONS
from ...training.config import TrainConfig, make_config, resumed_config
from ...training.engine import fit
from ...training.sampling import SeededView
from ...training.task import Task
from ...weights import classifier_classes, create_model, is_saved_model, load, read_state_dict
from ...weights import read_config, save
from ...weights.files import checkpoint_class_names
from .evaluate import evaluate_model


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015, eq. 2 scaled by T^2: KL(softmax(t/T) || softmax(s/T)) * T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


class ClassificationTask(Task):
    """Cross-entropy (label smoothing, mixup/cutmix) on an image folder or WebDataset shards;
    ``best/`` by top-1; distillation from a teacher's logits."""

    best_metric = "top1"
    shards = False            # set by datasets(): cfg.data names WebDataset shards
    higher_is_better = True
    metrics = {"top1": ("top-1", True), "top5": ("top-5", True)}

    def __init__(self, classes: list[str] | None = None):
        """``classes``: the class folders to read, in this order (default: every folder,
        sorted), e.g. a trained model's class names."""
        self.given_classes = classes

    def datasets(self, cfg: TrainConfig):
        self.cfg = cfg
        self.shards = is_shard_source(cfg.data)
        if self.shards:
            return self.shard_datasets(cfg)
        train_dir, val_dir = self.split(cfg)
        train_raw = ImageFolderDataset(train_dir, classes=self.given_classes,
                                       strict=cfg.strict_data)
        val_raw = ImageFolderDataset(val_dir, classes=train_raw.classes, strict=cfg.strict_data)
        self.classes = list(train_raw.classes)
        self.dirs = (train_dir, val_dir)
        # the transforms come from the model's preprocessing (model_ready)
        self.train_set = SeededView(train_raw, None, cfg.seed)
        self.val_set = SeededView(val_raw, None, cfg.seed)
        self.mix = mixup_cutmix(len(self.classes), cfg.mixup, cfg.cutmix)
        return self.train_set, self.val_set

    def shard_datasets(self, cfg: TrainConfig):
        """Streams of WebDataset shards (:mod:`mobilenets.data.shards`): the training shards
        of ``cfg.data`` and the validation shards of its index."""
        if cfg.val is not None:
            raise ValueError(f"--val cannot be combined with shards ({cfg.data}): the "
                             f"validation shards are those of the shards' index")
        index = open_shards(cfg.data)
        if self.given_classes is not None and list(self.given_classes) != index.classes:
            raise ValueError(f"the shards' classes {index.classes} differ from the given "
                             f"classes {self.given_classes}; use shards of the same classes")
        if not index.val:
            raise ValueError(f"the shards of {cfg.data} have no val split; write them from a "
                             f"folder with train/ and val/ (mobilenets shard)")
        self.classes = index.classes
        self.dirs = (f"{len(index.train)} shards of {cfg.data}", f"{len(index.val)} shards")
        self.train_set = TrainShards(index.train, len(self.classes), cfg.batch_size, cfg.seed,
                                     workers=cfg.workers, strict=cfg.strict_data)
        self.val_set = ValShards(index.val, len(self.classes), strict=cfg.strict_data)
        self.mix = mixup_cutmix(len(self.classes), cfg.mixup, cfg.cutmix)
        return self.train_set, self.val_set

    def split(self, cfg: TrainConfig):
        """The training and validation folders: ``DATA/train`` and ``DATA/val`` (or
        ``cfg.val``)."""
        return resolve_split(cfg.data, cfg.val)

    def check_run_folder(self, cfg: TrainConfig) -> None:
        """A run folder inside the training or validation class folders is refused (the
        next run would read its best/ as a class); checked before the folder is made."""
        if cfg.data is None or is_shard_source(cfg.data):
            return
        for name, folder in zip(("training", "validation"),
                                split_folders(Path(cfg.data), cfg.val)):
            if folder.is_dir() and Path(cfg.out).resolve().is_relative_to(folder.resolve()):
                raise ValueError(f"the run folder {cfg.out} is inside the {name} class "
                                 f"folders {folder}: the next run would read its files as a "
                                 f"class; give an --out outside it")

    def collate(self, items):
        return collate_skip_bad(items)

    def summary(self, train_set, val_set) -> str:
        cfg, classes = self.cfg, self.classes
        shown = ", ".join(classes[:8]) + (f", ... ({len(classes) - 8} more)"
                                          if len(classes) > 8 else "")
        return (f"data: {len(classes)} classes ({shown}); {len(train_set)} train images in "
                f"{self.dirs[0]}, {len(val_set)} val images in {self.dirs[1]}\n"
                f"model: {cfg.model}"
                f"{'' if cfg.width_mult is None else f' at width {cfg.width_mult:g}'} at "
                f"{cfg.resolution} px, {self.start_text()}; "
                f"{self.schedule_text(cfg)}; "
                f"writing to {cfg.out}")

    def build_model(self, cfg: TrainConfig, resumed: dict | None = None) -> nn.Module:
        if resumed and resumed.get("config"):     # e.g. a pruned network: its block_widths
            config = resumed["config"]
            options = {k: v for k, v in config.items() if k in MODEL_OPTIONS}
            options["resolution"] = cfg.resolution
            for key in ("dropout", "drop_path_rate", "bn_momentum"):   # may change on resume
                if getattr(cfg, key) is not None:
                    options[key] = getattr(cfg, key)
            model = create_model(config["name"], **options)
            model.config.update({k: config[k] for k in ("pruned", "weights") if k in config})
            model.preprocess = dict(resumed.get("preprocess") or model.preprocess)
            return model
        options = self.with_config_options(
            cfg, {"num_classes": len(self.classes), "resolution": cfg.resolution})
        for key in ("dropout", "drop_path_rate"):
            if getattr(cfg, key) is not None:
                options[key] = getattr(cfg, key)
        # extra["pruned_model"]: prune fine-tunes checkpointed before block_widths existed
        weights = cfg.weights or cfg.extra.get("pruned_model")
        if weights:
            options["weights"] = weights
            self.check_weights_classes(weights)
        return create_model(cfg.model, **options)

    def check_weights_classes(self, weights) -> None:
        """Warn when ``weights`` were trained on as many classes as the data has, but other
        ones (or the same in another order): their classifier is kept, row k for label k."""
        path = Path(weights)
        names = (read_config(path).get("class_names") if is_saved_model(path)
                 else checkpoint_class_names(path) if path.is_file() else None)
        if names is None or len(names) != len(self.classes) or list(names) == self.classes:
            return
        how = ("the same classes in another order" if sorted(names) == sorted(self.classes)
               else "other classes")
        warnings.warn(f"--weights {weights} were trained on {how} ({', '.join(names[:5])}"
                      f"{', ...' if len(names) > 5 else ''}) than this data's "
                      f"({', '.join(self.classes[:5])}{', ...' if len(self.classes) > 5 else ''})"
                      f": their classifier is kept, its row k now meaning this data's label k",
                      stacklevel=2)

    def check_model(self, model: nn.Module) -> None:
        if model.num_classes != len(self.classes):
            raise ValueError(f"the given model has {model.num_classes} classes but the data "
                             f"has {len(self.classes)}; use model.reset_classifier("
                             f"{len(self.classes)})")

    def model_ready(self, model: nn.Module) -> None:
        cfg = self.cfg
        model.preprocess = at_resolution(model.preprocess, cfg.resolution)
        self.preprocess = model.preprocess
        self.train_set.transform = train_transform(
            cfg.resolution, model.preprocess, auto_augment=cfg.auto_augment,
            color_jitter=cfg.color_jitter, random_erasing=cfg.random_erasing,
            scale=(cfg.crop_min_scale, 1.0))
        self.val_set.transform = eval_transform(model.preprocess)

    def device_loaders(self, sampler, cfg: TrainConfig, device, dist):
        """Images decoded once into device memory: training images fit into a canvas of
        1.25 x the resolution (4:3; at least the resolution), validation images through the
        eval transform; RandomResizedCrop, flip, normalisation and random erasing run on whole
        batches there (:mod:`mobilenets.data.device`). Mixup/cutmix stay in :meth:`prepare`.
        Colour jitter and auto-augment are per-image PIL operations: refused here."""
        if self.shards:
            raise ValueError("--device-data decodes an image folder once; shards are streamed: "
                             "train on shards without --device-data, or on the image folder")
        given = [f"--{k.replace('_', '-')}" for k in ("auto_augment", "color_jitter")
                 if getattr(cfg, k)]
        if given:
            raise ValueError(f"{' and '.join(given)} cannot run with --device-data (they work "
                             f"on single images in the loader processes); drop one or the other")
        pre = self.preprocess
        short = max(cfg.resolution, round(1.25 * cfg.resolution))
        train = DeviceImages(self.train_set.dataset, (short, round(short * 4 / 3)), device,
                             pre["interpolation"], workers=cfg.workers)
        size = (pre["resolution"], pre["resolution"])
        val = DeviceImages(self.val_set.dataset, size, device, pre["interpolation"],
                           transform=eval_transform(pre, normalize=False), workers=cfg.workers)
        unreadable = train.unreadable + val.unreadable
        if unreadable:
            print(f"skipped {unreadable} unreadable image(s)", flush=True)
        train_batches = DeviceTrainBatches(
            train, sampler, cfg.batch_size, cfg.resolution, pre["mean"], pre["std"], cfg.seed,
            scale=(cfg.crop_min_scale, 1.0), random_erasing=cfg.random_erasing)
        rank, world = (dist.rank, dist.world) if dist is not None and dist.enabled else (0, 1)
        return train_batches, DeviceEvalBatches(val, cfg.batch_size, pre["mean"], pre["std"],
                                                rank, world)

    def starts_trained(self, cfg: TrainConfig) -> bool:
        """True when ``--weights`` is a file (or saved-model folder) whose classifier has as
        many outputs as the data has classes: the whole network, head included, is trained."""
        if not cfg.weights or cfg.weights in ("torchvision", "timm"):
            return False
        path = Path(cfg.weights)
        path = path / "model.safetensors" if is_saved_model(path) else path
        return path.is_file() and classifier_classes(read_state_dict(path)) == len(self.classes)

    def prepare(self, x, y, device):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        target = y
        if self.mix is not None:
            x, target = self.mix(x, y)
        return x, target, len(y)

    def loss(self, logits, target) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, label_smoothing=self.cfg.label_smoothing)

    def build_teacher(self, cfg: TrainConfig, device) -> nn.Module | None:
        """A saved-model folder, or a registered name + ``teacher_weights``."""
        if not cfg.teacher:
            return None
        if is_saved_model(Path(cfg.teacher)):
            teacher = load(cfg.teacher)
        elif cfg.teacher_weights:
            teacher = create_model(cfg.teacher, weights=cfg.teacher_weights)
        else:
            raise ValueError(f"teacher {cfg.teacher!r} is not a saved-model folder; give a "
                             f"trained model folder (e.g. OUT/best) or a registered name with "
                             f"--teacher-weights FILE")
        if teacher.num_classes != len(self.classes):
            raise ValueError(f"the teacher predicts {teacher.num_classes} classes but the data "
                             f"has {len(self.classes)}; distil from a teacher trained on these "
                             f"classes")
        names = teacher.config.get("class_names")
        if names and list(names) != self.classes:
            raise ValueError("the teacher's class names differ from the data's class folders; "
                             "distil from a teacher trained on this data")
        # the teacher sees the student's batch: say so when it was trained on other inputs
        mine, its = self.preprocess or {}, teacher.preprocess or {}
        differ = [k for k in ("mean", "std") if k in its and k in mine
                  and [round(float(v), 4) for v in its[k]] != [round(float(v), 4)
                                                                for v in mine[k]]]
        if differ:
            print(f"warning: the teacher was trained with another input {' and '.join(differ)} "
                  f"({', '.join(f'{k} {tuple(its[k])}' for k in differ)}) than the student's "
                  f"({', '.join(f'{k} {tuple(mine[k])}' for k in differ)}); it sees the "
                  f"student's batches, so its predictions may be worse than its own accuracy",
                  file=sys.stderr, flush=True)
        return teacher.to(device).eval().requires_grad_(False)

    def distillation_loss(self, logits, teacher_logits, cfg: TrainConfig) -> torch.Tensor:
        return kd_loss(logits.float(), teacher_logits.float(), cfg.kd_temperature)

    def evaluate(self, model, loader, device, dist) -> dict:
        result = evaluate_model(model, loader, device=device, num_classes=len(self.classes),
                                dist=dist, set_eval=False)
        top5 = {} if result["top5"] is None else {"top5": result["top5"]}   # > 5 classes
        return {"loss": result["loss"], "top1": result["top1"], **top5}

    def save_best(self, model, folder) -> None:
        model.config["class_names"] = self.classes
        save(model, folder, class_names=self.classes)

    def epoch_note(self, metrics: dict) -> str | None:
        """Training whose loss is still well above chance level (the loss of a uniform guess,
        ln C) after two epochs is diverging: say what to change. (Heavily augmented small
        images can keep a run that learns a little above ln C, hence the margin.)"""
        chance = math.log(len(self.classes))
        if metrics["epoch"] < 2 or metrics["train_loss"] <= 1.5 * chance:
            return None
        recipe = ("" if self.cfg.recipe == "small-data" else
                  "; for a small data set, --recipe small-data (30 epochs) is the tested start")
        return (f"the training loss {metrics['train_loss']:.2f} is still well above chance "
                f"level (ln {len(self.classes)} = {chance:.2f}) after {metrics['epoch']} "
                f"epochs: the run is diverging. Lower --lr (now {self.cfg.lr:g}) or add "
                f"--warmup-epochs{recipe}")

    def restart_weights(self, out) -> str:
        return f"{out}/last.pt"

    def outputs(self, model) -> list[tuple[str, str]]:
        if model.config.get("features_only"):      # a backbone: its feature maps
            return [(f"feature_{i}", f"N x {t.channels} x H/{t.reduction} x W/{t.reduction} "
                     f"feature map ({t.module})") for i, t in enumerate(model.feature_info)]
        if getattr(model, "num_classes", 1):
            return [("logits", f"N x {model.num_classes} class scores before softmax")]
        return [("features", "N x C pooled features (no classifier)")]

    def state(self) -> dict:
        return {"classes": self.classes}

    def check_resume(self, state: dict, path) -> None:
        if state.get("classes") and list(state["classes"]) != self.classes:
            raise ValueError(f"{path} was trained on the classes {state['classes']}, but the "
                             f"data has {self.classes}; resume it on the same data")


def train(cfg: TrainConfig | None = None, resume=None, progress: bool = True,
          model: nn.Module | None = None, overwrite: bool = False, **overrides) -> dict:
    """Train a classifier: ``cfg.model`` (or ``model``, an already-built network such as a
    pruned one) on the image folder ``cfg.data`` (the built-in sample when None); see
    :func:`mobilenets.training.fit` for the files it writes, ``resume`` and ``overwrite``.
    ``overrides`` make a config when ``cfg`` is None (``model`` may be a registered name
    there too: ``train(model="mobilenet_v2_035", epochs=1)``). Returns the last epoch's
    metrics."""
    if isinstance(model, str):            # the config option, not a built network
        overrides["model"], model = model, None
    if cfg is None and resume is not None:        # the run's own options, as the CLI's
        cfg = resumed_config(resume, None, overrides)
    cfg = cfg or make_config(**overrides)
    return fit(ClassificationTask(), cfg, resume, progress, model, overwrite)


__all__ = ["ClassificationTask", "kd_loss", "train"]
