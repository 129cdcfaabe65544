"""Object detection on the training engine: YOLO-layout data in, a detector out.

The detection task's own options live in ``cfg.extra["detection"]``, a dict of
:class:`DetectionOptions` fields (recorded in ``train_config.json`` and in checkpoints like
every other option); ``train(..., detection={...})`` puts them there.

Labels: a data set whose class names are COCO's 80 (COCO128, any ultralytics COCO export)
trains a 91-class model on COCO's category ids, so torchvision's COCO checkpoints start it and
its outputs are torchvision's labels (:mod:`mobilenets.data.coco`); any other data set of K
classes trains a ``K + 1``-class model with label ``k + 1`` for class ``k`` (0 is the
background).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..options import TaskOptions
from ...data import DataError
from ...data.coco import COCO80_TO_91, coco91_names
from ...data.shards import (TrainShards, ValShards, is_shard_source, open_shards,
                            val_shard_loader)
from ...training.config import TrainConfig, make_config, resumed_config
from ...training.engine import eval_loader, fit
from ...training.sampling import SeededView
from ...training.task import CLASSIFIER_ONLY, Task
from ...weights import create_model, save
from ...weights.loading import load_backbone_weights
from .data import (AUGMENTATIONS, Mosaic, YoloDetection, collate_detection, decode_shard,
                   detection_eval_transform, detection_train_transform, read_names,
                   yolo_data)
from .metrics import coco_map

LABEL_SPACES = ("auto", "coco91", "contiguous")


@dataclass
class DetectionOptions(TaskOptions):
    KEY = "detection"
    """The detection task's options (``cfg.extra["detection"]``)."""

    train_split: str | None = None     # None: from the data YAML's ``train:``, else "train"
    val_split: str | None = None       # None: from its ``val:``, else "val"
    augment: str = "ssd"               # ssd | ssdlite | flip | none (see data.py)
    hflip: float = 0.5
    mosaic: float = 0.0                # probability of a 4-image mosaic (data.Mosaic)
    label_space: str = "auto"          # auto | coco91 | contiguous (module docstring)
    backbone_weights: str | None = None   # a classification checkpoint for the backbone
    model_options: dict = field(default_factory=dict)   # more create_model options

    def __post_init__(self):
        self.check_types()
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not "
                             f"{self.augment!r}")
        if self.label_space not in LABEL_SPACES:
            raise ValueError(f"label_space must be one of {', '.join(LABEL_SPACES)}, not "
                             f"{self.label_space!r}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability in [0, 1], not {self.hflip}")
        if not 0 <= self.mosaic <= 1:
            raise ValueError(f"mosaic is a probability in [0, 1], not {self.mosaic}")



def yolo_splits(data: str | Path) -> tuple[str, str]:
    """``(train, val)`` splits of the YOLO data set ``data`` (its folder or data YAML) from
    the YAML's ``train:`` / ``val:`` entries (``images/train2017`` -> ``train2017``; default
    ``("train", "val")``); see :func:`~.data.yolo_data`."""
    spec = yolo_data(data)
    return spec.train, spec.val


def label_space(names: list[str], wanted: str = "auto") -> str:
    """``"coco91"`` when the data's names are COCO's 80 in COCO's order (and ``wanted`` is
    auto or coco91), else ``"contiguous"``."""
    is_coco = names == [n for n in coco91_names() if n not in ("__background__", "N/A")]
    if wanted == "coco91" and not is_coco:
        raise ValueError("label_space coco91 needs the data's class names to be COCO's 80 in "
                         "COCO's order; use label_space contiguous (or auto)")
    return "coco91" if is_coco and wanted != "contiguous" else "contiguous"


def label_map(space: str, num_names: int) -> torch.Tensor:
    """Data set label -> model label."""
    if space == "coco91":
        return torch.tensor(COCO80_TO_91, dtype=torch.int64)
    return torch.arange(1, num_names + 1, dtype=torch.int64)


def model_class_names(space: str, names: list[str]) -> list[str]:
    """One name per model output: torchvision's 91 COCO names, or background + the data's."""
    return coco91_names() if space == "coco91" else ["__background__", *names]


def rebuild_options(config: dict) -> dict:
    """The ``create_model`` options that rebuild a detector from its ``config``."""
    return dict(config.get("options", {}), num_classes=config["num_classes"],
                resolution=config["resolution"])


class DetectionTask(Task):
    """The detector's own loss (SSD's MultiBox: smooth-L1 + cross-entropy with hard negatives;
    YOLOv4's CIoU + objectness and class BCE) on YOLO-layout data; ``best/`` by COCO
    mAP@[.5:.95] (pycocotools)."""

    unused_config = CLASSIFIER_ONLY + ("color_jitter",)
    best_metric = "map"
    shards = False            # set by datasets(): cfg.data names WebDataset shards
    higher_is_better = True
    metrics = {"map": ("mAP@[.5:.95]", True), "map50": ("mAP@.5", True)}

    def datasets(self, cfg: TrainConfig):
        self.cfg = cfg
        self.options = opts = DetectionOptions.from_config(cfg)
        if cfg.data is None:
            raise DataError("the detection task has no built-in sample: give data, a YOLO-"
                            "layout folder (images/<split>, labels/<split>, config.yaml), e.g. "
                            "COCO128 unpacked by `python experiments/datasets.py "
                            "coco128-lightly` (its object_detection/ folder)")
        self.shards = is_shard_source(cfg.data)
        if self.shards:
            return self.shard_datasets(cfg, opts)
        spec = yolo_data(cfg.data)              # its folder or its data YAML
        root = spec.root
        train_split, val_split = opts.train_split or spec.train, opts.val_split or spec.val
        self.names = read_names(spec.names_file)
        self.train_raw = YoloDetection(root, train_split, self.names, cfg.strict_data)
        self.val_raw = YoloDetection(root, val_split, self.names, cfg.strict_data)
        self.space = label_space(self.names, opts.label_space)
        self.label_map = label_map(self.space, len(self.names))
        self.root, self.splits = root, (train_split, val_split)
        self.train_set = SeededView(self.train_raw, None, cfg.seed)  # transforms: model_ready
        self.val_set = SeededView(self.val_raw, detection_eval_transform(), cfg.seed)
        return self.train_set, self.val_set

    def shard_datasets(self, cfg: TrainConfig, opts: DetectionOptions):
        """Streams of the WebDataset shards ``cfg.data`` (``mobilenets shard`` of a YOLO
        folder): its training shards, and the validation shards of its index."""
        if cfg.val is not None or opts.train_split or opts.val_split:
            raise ValueError(f"--val and the split options pick folders of a YOLO data set; the "
                             f"shards {cfg.data} hold the splits they were written from: give "
                             f"the splits to `mobilenets shard` instead")
        if opts.mosaic:
            raise ValueError("mosaic draws three more images at random from the data set, "
                             "which a shard stream cannot; train on shards without mosaic, or "
                             "on the folder")
        index = open_shards(cfg.data, task="detection")
        if not index.val:
            raise ValueError(f"the shards of {cfg.data} have no val split; write them again "
                             f"with mobilenets shard")
        self.shard_index, self.names = index, list(index.classes)
        self.space = label_space(self.names, opts.label_space)
        self.label_map = label_map(self.space, len(self.names))
        self.root, self.splits = cfg.data, tuple(index.index["detection"]["splits"])
        decode = partial(decode_shard, num_classes=len(self.names))
        self.train_set = TrainShards(index.train, len(self.names), cfg.batch_size, cfg.seed,
                                     workers=cfg.workers, strict=cfg.strict_data, decode=decode)
        self.val_set = ValShards(index.val, len(self.names), strict=cfg.strict_data,
                                 decode=decode, transform=detection_eval_transform())
        return self.train_set, self.val_set

    @property
    def num_classes(self) -> int:
        return 91 if self.space == "coco91" else len(self.names) + 1

    def collate(self, items):
        return collate_detection(items, self.label_map)

    def summary(self, train_set, val_set) -> str:
        if self.shards:
            cfg, info = self.cfg, self.shard_index.index["detection"]
            return (f"data: {len(self.names)} classes ({self.space} labels); shards of "
                    f"{cfg.data}: {len(train_set)} train images ({info['boxes']['train']} "
                    f"boxes, {info['background']['train']} background) in "
                    f"{len(self.shard_index.train)} shards, {len(val_set)} val images "
                    f"({info['boxes']['val']} boxes) in {len(self.shard_index.val)} shards\n"
                    f"model: {cfg.model} at {cfg.resolution} px, "
                    f"{self.start_text()}; augment {self.options.augment}; "
                    f"{self.schedule_text(cfg)}; writing to {cfg.out}")
        cfg, t, v = self.cfg, self.train_raw, self.val_raw
        extra = []
        if t.background:
            extra.append(f"{len(t.background)} background images")
        if t.orphan_labels or v.orphan_labels:
            extra.append(f"{len(t.orphan_labels) + len(v.orphan_labels)} label files without "
                         f"an image skipped")
        return (f"data: {len(self.names)} classes ({self.space} labels); {len(t)} train images "
                f"({t.num_boxes} boxes) in {t.image_dir}, {len(v)} val images "
                f"({v.num_boxes} boxes) in {v.image_dir}"
                + (f"; {', '.join(extra)}" if extra else "") + "\n"
                f"model: {cfg.model} at {cfg.resolution} px, {self.start_text()}"
                f"; augment {self.options.augment}; {self.schedule_text(cfg)}; "
                f"writing to {cfg.out}")

    def build_model(self, cfg: TrainConfig, resumed: dict | None = None) -> nn.Module:
        """``cfg.model`` (a detector, e.g. ``ssdlite320_mobilenet_v3_large``) with the data's
        class count, ``resolution``, ``weights`` (a detector checkpoint) or the
        ``backbone_weights`` option (a classification checkpoint for the backbone), and the
        ``model_options`` option; on resume, the architecture the checkpoint recorded."""
        if resumed and resumed.get("config"):
            config = resumed["config"]
            model = create_model(config["name"], **rebuild_options(config))
            model.preprocess = dict(resumed.get("preprocess") or model.preprocess)
            return model
        options = self.with_config_options(cfg, self.model_options_with(
            self.options.model_options, num_classes=self.num_classes, resolution=cfg.resolution))
        if cfg.weights:
            options["weights"] = cfg.weights
        elif self.options.backbone_weights:       # given model_options win over its settings
            options["backbone_weights"] = self.options.backbone_weights
        model = create_model(cfg.model, **options)
        if cfg.weights and self.options.backbone_weights:      # the backbone replaced
            load_backbone_weights(model, self.options.backbone_weights)
            model.config["backbone_weights"] = str(self.options.backbone_weights)
        return model

    def check_model(self, model: nn.Module) -> None:
        if getattr(model, "task", None) != "detection":
            raise ValueError(f"the model's task is {getattr(model, 'task', None)!r}, not "
                             f"'detection': train a detector (ssdlite_<backbone>, "
                             f"ssdlite320_mobilenet_v3_large, yolov4_<backbone>)")
        if model.num_classes != self.num_classes:
            raise ValueError(f"the model has {model.num_classes} classes but this data needs "
                             f"{self.num_classes} ({self.space} labels, background included)")

    def model_ready(self, model: nn.Module) -> None:
        opts = self.options
        size = model.config.get("resolution", self.cfg.resolution)
        self.train_set.transform = detection_train_transform(
            size, opts.augment, opts.hflip,
            keep_aspect=bool(model.preprocess.get("letterbox", False)),
            mosaic=Mosaic(self.train_raw, size, opts.mosaic) if opts.mosaic else None)
        model.config["class_names"] = model_class_names(self.space, self.names)

    def prepare(self, images, targets, device):
        """The engine's input is the pair ``(images, targets)``: the detector computes its
        loss in its forward (torchvision's convention)."""
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)}
                   for t in targets]
        return (images, targets), None, len(images)

    def loss(self, outputs, target) -> torch.Tensor:
        return sum(outputs.values())       # the detector's own terms (SSD's two, YOLO's three)

    def evaluate(self, model, loader, device, dist) -> dict:
        result = evaluate_detector(model, loader, device, dist,
                                   categories=self.label_map.tolist())
        return {"loss": result["loss"], "map": result["map"], "map50": result["map50"]}

    def save_best(self, model, folder) -> None:
        save(model, folder, class_names=model_class_names(self.space, self.names))

    def outputs(self, model) -> list[tuple[str, str]]:
        return [("boxes", "per image: N x 4 boxes x1 y1 x2 y2 in the input image's pixels"),
                ("scores", "per image: N scores"), ("labels", "per image: N class labels")]

    def state(self) -> dict:
        return {"detection": {"names": self.names, "label_space": self.space}}

    def check_resume(self, state: dict, path) -> None:
        saved = state.get("detection")
        if saved is None:
            raise ValueError(f"{path} is not a checkpoint of the detection task; resume it "
                             f"with the task it was trained with")
        if list(saved["names"]) != self.names or saved["label_space"] != self.space:
            raise ValueError(f"{path} was trained on other classes than {self.root}'s; "
                             f"resume it on the same data")


@torch.no_grad()
def evaluate_detector(model, loader, device="cpu", dist=None,
                      categories: list[int] | None = None) -> dict:
    """Validation loss and COCO mAP of ``model`` over ``loader`` (batches of ``(images,
    targets, n_unreadable)``); under ``dist`` every process scores its share and the results
    are gathered, so each gets the full-set metrics. The model stays in its mode."""
    loss_sum, count, bad = 0.0, 0, 0
    truth, found = [], []
    for images, targets, n_bad in loader:
        bad += n_bad
        if not images:
            continue
        images = [img.to(device) for img in images]
        moved = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)}
                 for t in targets]
        losses, detections = model.losses_and_detections(images, moved)
        loss_sum += float(sum(losses.values())) * len(images)
        count += len(images)
        truth += [{k: t[k] for k in ("boxes", "labels")} for t in targets]
        found += [{k: d[k].cpu() for k in ("boxes", "scores", "labels")} for d in detections]
    if dist is not None and dist.enabled:
        import torch.distributed as torch_dist
        gathered = [None] * dist.world
        torch_dist.all_gather_object(gathered, (loss_sum, count, bad, truth, found))
        loss_sum = sum(g[0] for g in gathered)
        count, bad = sum(g[1] for g in gathered), sum(g[2] for g in gathered)
        truth = [t for g in gathered for t in g[3]]
        found = [f for g in gathered for f in g[4]]
    result = coco_map(truth, found, categories)
    return {"loss": loss_sum / max(count, 1), **result, "count": count, "bad_images": bad}


def check_map_settings(model) -> None:
    """Warn when ``model`` keeps too few detections for COCO mAP (its score threshold above
    0.01, or fewer than 100 per image: the low-scoring boxes count towards the precision-
    recall curve), as an exported file with ``--conf 0.25`` does."""
    thresh = float(getattr(model, "score_thresh", 0.0))
    most = int(getattr(model, "detections_per_img", 100))
    if thresh > 0.01 or most < 100:
        warnings.warn(f"the detector keeps scores above {thresh:g} and at most {most} boxes "
                      f"per image; COCO mAP counts the low-scoring ones too (as ultralytics' "
                      f"val at conf 0.001), so this mAP is below what the network gives: for "
                      f"it, set score_thresh 0.001 and detections_per_img 100 or more (an "
                      f"exported file: export with the default --conf and --max-det)",
                      stacklevel=3)


def evaluate(model, data, split: str | None = None, batch_size: int = 8,
             workers: int = 0) -> dict:
    """COCO mAP of a detector on a YOLO-layout data set (its val split by default) or on the
    validation shards of a shard source (``mobilenets shard``): ``map``, ``map50``, ``map75``,
    ``per_class`` (by class name), ``loss``, ``count``."""
    shards = is_shard_source(data)
    if shards:
        if split is not None:
            raise ValueError(f"split picks a folder of a YOLO data set; the shards {data} "
                             f"hold the splits they were written from: leave it out")
        index = open_shards(data, task="detection")
        root, names = data, list(index.classes)
    else:
        spec = yolo_data(data)
        root = spec.root
        names = read_names(spec.names_file)
        split = split or spec.val
    space = label_space(names)
    if model.num_classes != (91 if space == "coco91" else len(names) + 1):
        space = "contiguous"
        if model.num_classes != len(names) + 1:
            has = ("predicts COCO's 91 category ids" if model.num_classes == 91 else
                   f"has {model.num_classes - 1} classes (and the background: "
                   f"{model.num_classes} outputs)")
            raise ValueError(f"the model {has}, {root} has {len(names)} names: evaluate a "
                             f"model trained on these classes ({len(names) + 1} outputs, or "
                             f"91 for COCO's names)")
    check_map_settings(model)
    mapping = label_map(space, len(names))
    collate = partial(collate_detection, label_map=mapping)
    if shards:
        loader = val_shard_loader(index, batch_size, workers,
                                  decode=partial(decode_shard, num_classes=len(names)),
                                  transform=detection_eval_transform(), collate=collate)
    else:
        dataset = SeededView(YoloDetection(root, split, names), detection_eval_transform(), 0)
        loader = eval_loader(dataset, collate, batch_size, workers)
    was_training = model.training
    model.eval()
    try:
        result = evaluate_detector(model, loader, categories=mapping.tolist())
    finally:
        model.train(was_training)
    by_label = dict(zip(mapping.tolist(), names))
    result["per_class"] = {by_label[k]: v for k, v in result["per_class"].items()}
    return result


def detection_config(cfg: TrainConfig | None = None, detection: dict | None = None,
                     **overrides) -> TrainConfig:
    """A training config for the detection task: ``cfg`` (or one made from ``overrides``:
    ``ssdlite320_mobilenet_v3_large`` at 320 px unless ``model`` / ``resolution`` are
    given) with the detection options ``detection`` (:class:`DetectionOptions` fields) added
    to ``extra["detection"]``."""
    if cfg is None:
        overrides.setdefault("resolution", 320)
        overrides.setdefault("model", "ssdlite320_mobilenet_v3_large")
        cfg = make_config(**overrides)
    return DetectionOptions.into_config(cfg, detection)


def train(cfg: TrainConfig | None = None, resume=None, progress: bool = True,
          model: nn.Module | None = None, overwrite: bool = False,
          detection: dict | None = None, **overrides) -> dict:
    """Train a detector: ``cfg.model`` (or ``model``, an already-built one) on the YOLO-layout
    data ``cfg.data``, with the detection options ``detection`` (e.g. ``{"augment":
    "ssdlite"}``); see :func:`mobilenets.training.fit` for the files it writes, ``resume`` and
    ``overwrite``. Returns the last epoch's metrics."""
    if isinstance(model, str):
        overrides["model"], model = model, None
    if cfg is None and resume is not None:        # the run's own options, as the CLI's
        cfg = resumed_config(resume, None, overrides)
    return fit(DetectionTask(), detection_config(cfg, detection, **overrides), resume,
               progress, model, overwrite)


__all__ = ["DetectionOptions", "DetectionTask", "detection_config", "evaluate",
           "evaluate_detector", "label_map", "label_space", "load_backbone_weights", "train"]
