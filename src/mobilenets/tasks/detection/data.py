"""Detection data: YOLO text labels (the ultralytics / COCO128 layout), box-aware augmentation
with ``torchvision.transforms.v2`` and ``tv_tensors.BoundingBoxes``, and batching.

Layout (what ultralytics and COCO128 use)::

    ROOT/config.yaml (or data.yaml)   names: {0: person, 1: bicycle, ...} (or a list)
    ROOT/images/<split>/*.jpg
    ROOT/labels/<split>/*.txt         one line per box: "class cx cy w h", normalised to [0, 1]

An image without a label file, or with an empty one, is a background image (no boxes: every
default box is a negative); a label file without an image is reported (``orphan_labels``) and
skipped. Labels are the data set's class indices ``0 .. K-1``; the task maps them to the
model's (see :mod:`mobilenets.data.coco` for COCO's ids).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from ...data import DataError, read_rgb
from ...data.shards import (ShardLayout, check_keys, decode_image_bytes, image_field, image_of,
                            sample_key)

logger = logging.getLogger("mobilenets.data")

NAME_FILES = ("config.yaml", "data.yaml", "dataset.yaml")
_LAYOUT = ("expected ROOT/images/<split>/ and ROOT/labels/<split>/ with YOLO label files "
           "('class cx cy w h', normalised) and the class names in ROOT/config.yaml")


def read_names(path: str | Path) -> list[str]:
    """Class names from a YOLO data YAML (``names:`` as a mapping ``index: name`` with indices
    0 .. K-1, or a list)."""
    import yaml
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read class names from {path}: {e}") from e
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: names must be numbered 0 .. {len(names) - 1}, got "
                            f"{sorted(names)[:5]} ...")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path} has no 'names:' list or mapping of class names")
    empty = [i for i, n in enumerate(names) if n is None or not str(n).strip()]
    if empty:
        raise DataError(f"{path}: class {empty[0]} has no name (an empty entry in 'names:'); "
                        f"name every class")
    return [str(n) for n in names]


def find_names_file(root: Path) -> Path:
    for name in NAME_FILES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"no class names in {root} (looked for {', '.join(NAME_FILES)}); "
                    f"{_LAYOUT}")


@dataclass(frozen=True)
class YoloData:
    """A YOLO data set as its data YAML describes it: ``root`` (the folder its splits are
    relative to), ``names_file`` (the YAML) and the ``train`` / ``val`` splits, each a name
    under ``ROOT/images/`` (``train2017``) or a folder of images relative to ``ROOT`` whose
    labels are in the same path with ``images`` replaced by ``labels`` (``train/images``)."""
    root: Path
    names_file: Path
    train: str
    val: str


def yolo_data(path: str | Path) -> YoloData:
    """The YOLO data set at ``path``: its folder (the YAML found there: ``NAME_FILES``), or a
    data YAML itself, as ultralytics reads one: ``path:`` the root (relative to the YAML's
    folder, else to the current one; absent: the YAML's folder), ``train:`` / ``val:`` one
    folder of images each (``images/train2017``; default ``train`` and ``val``), ``names:``."""
    import yaml
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; give a YOLO-layout folder or its data YAML "
                        f"({_LAYOUT})")
    if path.is_file() and path.suffix.lower() not in (".yaml", ".yml"):
        raise DataError(f"{path} is a file but not a data YAML (.yaml); give the data set's "
                        f"folder or its YAML ({_LAYOUT})")
    names_file = path if path.is_file() else find_names_file(path)
    try:
        data = yaml.safe_load(names_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {names_file}: {e}") from e
    data = data if isinstance(data, dict) else {}
    root = names_file.parent
    if path.is_file() and data.get("path") not in (None, ""):
        given = Path(str(data["path"])).expanduser()
        tried = [given] if given.is_absolute() else [names_file.parent / given, Path.cwd() / given]
        root = next((t for t in tried if t.is_dir()), None)
        if root is None:
            raise DataError(f"{names_file}: path: {data['path']} is not a folder (tried "
                            f"{', '.join(str(t) for t in tried)}); set it to the data set's "
                            f"root, or remove it to use the YAML's folder")
    splits = []
    for key in ("train", "val"):
        value = data.get(key, key)
        if not isinstance(value, str) or value.endswith(".txt"):
            raise DataError(f"{names_file}: {key}: {value!r} is not supported; give one folder "
                            f"of images per split (e.g. {key}: images/{key}), relative to the "
                            f"root {root}")
        value = value.strip().rstrip("/") or key
        parts = Path(value).parts
        # images/<name> is the split <name>, as a name under ROOT/images/ is
        splits.append(parts[1] if len(parts) == 2 and parts[0] == "images" else value)
    return YoloData(root, names_file, splits[0], splits[1])


def split_dirs(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(images folder, labels folder)`` of ``split``: ``ROOT/images/<split>`` and
    ``ROOT/labels/<split>`` for a split name, or a folder path (relative to ``ROOT``, or
    absolute) holding an ``images`` part, whose labels are in the same path with its last
    ``images`` part replaced by ``labels``, as ultralytics finds them (``train/images`` ->
    ``train/labels``). A relative path starting with ``../`` that does not exist is tried
    again without it, as ultralytics does for Roboflow's ``train: ../train/images``."""
    root, path = Path(root), Path(split)
    if not path.is_absolute() and len(path.parts) == 1 and (root / "images" / split).is_dir():
        return root / "images" / split, root / "labels" / split
    folder = path if path.is_absolute() else root / path
    if not folder.is_dir() and not path.is_absolute() and path.parts[:1] == ("..",):
        inside = list(path.parts)
        while inside[:1] == [".."]:
            inside.pop(0)
        if inside and (root.joinpath(*inside)).is_dir():
            folder = root.joinpath(*inside)
    if not folder.is_dir():
        where = root / "images" / split if len(path.parts) == 1 else folder
        raise DataError(f"{where} does not exist; {_LAYOUT}")
    parts = list(folder.parts)
    if "images" not in parts:
        raise DataError(f"{folder} has no 'images' part, so its labels cannot be found: "
                        f"put the images in .../images/ and the labels in .../labels/; "
                        f"{_LAYOUT}")
    at = len(parts) - 1 - parts[::-1].index("images")
    parts[at] = "labels"
    return folder, Path(*parts)


def parse_yolo_labels(path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(boxes N x 4 normalised cx cy w h, labels N)`` of a YOLO label file; DataError naming
    the file and line for a malformed line, a class outside ``0 .. num_classes - 1``, a value
    outside 0 .. 1 (pixel coordinates) or a box without area."""
    return parse_yolo_text(path.read_text(), num_classes, path)


def parse_yolo_text(text: str, num_classes: int, where,
                    strict: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`parse_yolo_labels` of a label file's text (``where`` names it in errors);
    ``strict=False`` drops a box with coordinates outside 0 .. 1 or without area, with a
    warning, instead (shards written before such lines were refused: they trained without
    the box)."""
    path = where
    rows, labels = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError(f"{len(parts)} values")
            cls, values = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError as e:
            raise DataError(f"{path}:{n}: expected 'class cx cy w h' (an integer and four "
                            f"numbers), got {line.strip()!r} ({e}); segment polygons need the "
                            f"segmentation task") from None
        if not 0 <= cls < num_classes:
            raise DataError(f"{path}:{n}: class {cls} is not in 0 .. {num_classes - 1} (the "
                            f"{num_classes} names)")
        # coordinates outside 0 .. 1 (ultralytics refuses them too) or a box without area
        # would train on nothing (the augmentation drops the box) and give an infinite
        # validation loss
        problem = None
        if any(v > 1 + 1e-6 for v in values):
            problem = ("is not normalised: YOLO labels give cx cy w h as fractions of the "
                       "image's width and height, in 0 .. 1 (divide pixel coordinates by the "
                       "image size)")
        elif any(v < 0 for v in values):
            problem = "has a negative value: cx cy w h are fractions of the image, in 0 .. 1"
        elif values[2] <= 0 or values[3] <= 0:
            problem = "has no area (width or height 0); remove the line"
        if problem is not None:
            if strict:
                raise DataError(f"{path}:{n}: box {' '.join(parts[1:])} {problem}")
            logger.warning("%s:%d: box %s dropped: it %s", path, n, " ".join(parts[1:]),
                           problem)
            continue
        rows.append(values)
        labels.append(cls)
    return (torch.tensor(rows, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64))


class YoloDetection(Dataset):
    """One split of a YOLO-layout data set. Item ``i`` is ``((image, target), i)``: ``image`` a
    uint8 ``tv_tensors.Image`` (3 x H x W, RGB), ``target`` a dict with ``boxes`` (a
    ``tv_tensors.BoundingBoxes``, XYXY in pixels), ``labels`` (int64, ``0 .. K-1``) and
    ``image_id`` (``i``), so that v2 transforms move boxes with the image and
    ``SanitizeBoundingBoxes`` drops labels with their boxes. An unreadable image gives None (a
    warning on the ``mobilenets.data`` logger), or DataError when ``strict``.

    ``background``: stems of images without boxes (no label file, or an empty one);
    ``orphan_labels``: label files with
    no image (skipped; a warning says so)."""

    def __init__(self, root: str | Path, split: str, names: list[str] | None = None,
                 strict: bool = False):
        root = Path(root)
        self.root, self.split, self.strict = root, split, strict
        image_dir, label_dir = split_dirs(root, split)
        self.image_dir, self.label_dir = image_dir, label_dir
        self.names = list(names) if names is not None else read_names(find_names_file(root))
        images = sorted(p for p in image_dir.iterdir()
                        if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if not images:
            raise DataError(f"no image files in {image_dir}")
        labels = ({p.stem: p for p in label_dir.glob("*.txt")} if label_dir.is_dir() else {})
        stems = {p.stem for p in images}
        self.orphan_labels = sorted(str(p) for s, p in labels.items() if s not in stems)
        if self.orphan_labels:
            logger.warning("%d label file(s) in %s have no image and are skipped: %s",
                           len(self.orphan_labels), label_dir,
                           ", ".join(Path(p).name for p in self.orphan_labels[:5]))
        self.images = images
        self.labels = [parse_yolo_labels(labels[p.stem], len(self.names)) if p.stem in labels
                       else (torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
                       for p in images]
        # images without boxes: no label file or an empty one (both count, as ultralytics')
        self.background = [p.stem for p, (_, lab) in zip(images, self.labels) if len(lab) == 0]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_boxes(self) -> int:
        return sum(len(lab) for _, lab in self.labels)

    def __getitem__(self, index: int):
        path = self.images[index]
        try:
            image = read_rgb(path)
        except (RuntimeError, OSError, ValueError) as e:
            if self.strict:
                raise DataError(f"cannot read image {path}: {e}") from e
            logger.warning("skipping unreadable image %s: %s", path, e)
            return None
        return _sample(image, *self.labels[index], index), index


def _sample(image: torch.Tensor, cxcywh: torch.Tensor, labels: torch.Tensor, index: int):
    """``(Image, target)`` of a decoded image and its normalised YOLO boxes."""
    h, w = image.shape[-2:]
    boxes = cxcywh * torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = tv_tensors.BoundingBoxes(boxes, format="CXCYWH", canvas_size=(h, w))
    boxes = v2.functional.convert_bounding_box_format(boxes, new_format="XYXY")
    boxes = v2.functional.clamp_bounding_boxes(boxes)
    target = {"boxes": boxes, "labels": labels.clone(), "image_id": index}
    return tv_tensors.Image(image), target


# ---- WebDataset shards (mobilenets.data.shards) ----------------------------------------------

def shard_layout(root: str | Path, train_split: str = "train", val_split: str = "val",
                 names: list[str] | None = None) -> ShardLayout:
    """The images of ``root``'s ``train_split`` and ``val_split`` as samples for
    :func:`~mobilenets.data.shards.write_shards` (splits ``train`` and ``val``): the image
    file, ``txt`` (its YOLO label file as it was; none for a background image) and ``idx``
    (its position in the split, in name order: the ``image_id`` evaluation uses). Every label
    file is parsed first, so a malformed one is reported before anything is written."""
    spec = yolo_data(root)
    root = spec.root
    if names is None:
        names = read_names(spec.names_file)
    splits, extra = {}, {"splits": [train_split, val_split], "background": {},
                         "orphan_labels": {}, "boxes": {}}
    for name, split in (("train", train_split), ("val", val_split)):
        data = YoloDetection(root, split, names)
        image_dir, label_dir = split_dirs(root, split)
        labels = {p.stem: p for p in label_dir.glob("*.txt")}
        splits[name] = check_keys(
            [(sample_key(img.stem), {image_field(img): img, "idx": str(i),
                                     **({"txt": labels[img.stem]} if img.stem in labels
                                        else {})})
             for i, img in enumerate(data.images)], image_dir)
        extra["background"][name] = len(data.background)
        extra["orphan_labels"][name] = len(data.orphan_labels)
        extra["boxes"][name] = data.num_boxes
    return ShardLayout("detection", list(names),
                       {"image": "the image file as it was",
                        "txt": "the YOLO label file as it was (class cx cy w h); absent "
                               "or empty: a background image",
                        "idx": "position in the split, in name order (the image id)"},
                       ("idx",), splits, {"detection": extra})


def decode_shard(sample: dict, num_classes: int):
    """``((Image, target), idx)`` of a raw detection shard sample (the form
    :class:`YoloDetection` gives; ``image_id`` is the sample's ``idx``)."""
    name, data = image_of(sample)
    image = decode_image_bytes(data, name)
    index = int(sample["idx"])
    if "txt" in sample:
        # written before such lines were refused: a bad box is dropped (it trained without
        # it), not a stop hours into an epoch
        cxcywh, labels = parse_yolo_text(sample["txt"].decode(), num_classes,
                                         f"{sample.get('__key__')}.txt", strict=False)
    else:
        cxcywh, labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    return _sample(image, cxcywh, labels, index), index


AUGMENTATIONS = ("ssd", "ssdlite", "flip", "none")


def detection_train_transform(resolution: int, augment: str = "ssd", hflip: float = 0.5,
                              fill=(123, 117, 104), keep_aspect: bool = False,
                              mosaic: Mosaic | None = None) -> v2.Compose:
    """Training augmentation of ``(image, target)``, torchvision's detection reference
    presets: ``"ssd"`` = zoom out (canvas up to 4x, filled with ``fill``, the mean pixel), IoU
    crop, horizontal flip, photometric distortion; ``"ssdlite"`` = IoU crop and flip
    (torchvision's SSDLite recipe); ``"flip"``; ``"none"``. The image is resized to
    ``resolution`` x ``resolution`` after the geometric steps (bilinear without antialiasing,
    as the detector resizes its inputs, so that resize is then a no-op) and before the
    photometric one (torchvision distorts first; at the smaller size it is 4x cheaper, and
    only the zoom-out fill's colour differs). ``keep_aspect``: the longer side is resized to
    ``resolution`` instead, aspect kept (for a letterboxing detector such as YOLOv4, which
    pads the rest itself). ``mosaic`` (a :class:`Mosaic`) runs first. Then [0, 1] floats, and
    boxes that left the image or shrank below 1 px are dropped with their labels
    (``SanitizeBoundingBoxes``)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {augment!r}")
    ops = [mosaic] if mosaic is not None else []
    if augment == "ssd":
        ops.append(v2.RandomZoomOut(fill=defaultdict(lambda: list(fill), {tv_tensors.Mask: 0})))
    if augment in ("ssd", "ssdlite"):
        ops.append(v2.RandomIoUCrop())
    if augment != "none" and hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    ops.append(v2.Resize(None, max_size=resolution, antialias=False) if keep_aspect
               else v2.Resize((resolution, resolution), antialias=False))
    if augment == "ssd":       # after the resize: its hue step costs ~0.2 s at 640 x 480
        ops.append(v2.RandomPhotometricDistort())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes()]
    return v2.Compose(ops)


class Mosaic:
    """Mosaic augmentation (YOLOv4, YOLOv5): with probability ``p``, a sample ``(image,
    target)`` and three others drawn at random from ``dataset`` (a :class:`YoloDetection`)
    are each resized so that the longer side is ``size`` (aspect kept) and placed around a
    random centre (x, y in [size / 2, 3 size / 2]) of a 2 size x 2 size canvas filled with
    ``fill`` (the sample top-left, the others top-right, bottom-left, bottom-right, each with
    a corner on the centre); the canvas's middle ``size`` x ``size`` is the new image. Boxes
    move with their images as ``tv_tensors.BoundingBoxes`` (clamped to the crop; what is left
    below 1 px is for ``SanitizeBoundingBoxes``, which the training transform ends with).
    The draws come from the global generator, which the training loader seeds per sample."""

    def __init__(self, dataset, size: int, p: float = 1.0, fill: int = 114):
        if not 0 <= p <= 1:
            raise ValueError(f"mosaic is a probability in [0, 1], not {p}")
        self.dataset, self.size, self.p, self.fill = dataset, size, p, fill

    def __call__(self, sample):
        if self.p == 0 or float(torch.rand(())) >= self.p:
            return sample
        image, target = sample
        s = self.size
        parts = [(image, target)]
        for j in torch.randint(len(self.dataset), (3,)).tolist():
            item = self.dataset[j]
            if item is not None:                # an unreadable image leaves its quarter empty
                parts.append(item[0])
        xc, yc = (int(v) for v in (torch.rand(2) * s + s // 2))
        canvas = torch.full((3, 2 * s, 2 * s), self.fill, dtype=torch.uint8)
        boxes, labels = [], []
        for k, (img, tgt) in enumerate(parts):
            h, w = img.shape[-2:]
            nh, nw = max(1, round(h * s / max(h, w))), max(1, round(w * s / max(h, w)))
            img, box = v2.functional.resize(img, [nh, nw], antialias=False), \
                v2.functional.resize(tgt["boxes"], [nh, nw])
            x0 = xc - nw if k in (0, 2) else xc       # the quarter's top-left on the canvas
            y0 = yc - nh if k in (0, 1) else yc
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + nw, 2 * s), min(y0 + nh, 2 * s)
            canvas[:, cy0:cy1, cx0:cx1] = img[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            boxes.append(box.as_subclass(torch.Tensor) + torch.tensor([x0, y0, x0, y0]))
            labels.append(tgt["labels"])
        boxes = tv_tensors.BoundingBoxes(torch.cat(boxes) - s // 2, format="XYXY",
                                         canvas_size=(s, s))
        image = tv_tensors.Image(canvas[:, s // 2:s // 2 + s, s // 2:s // 2 + s])
        boxes = v2.functional.clamp_bounding_boxes(boxes)
        return image, dict(target, boxes=boxes, labels=torch.cat(labels))


def detection_eval_transform() -> v2.Compose:
    """Eval: the image as [0, 1] floats at its own size (the detector resizes it and maps its
    boxes back to these pixels, where the ground truth is)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])


def collate_detection(items: list, label_map=None):
    """``(images, targets, n_unreadable)``: a list of 3 x H x W float images and a list of
    target dicts (plain tensors: ``boxes`` XYXY pixels, ``labels`` mapped by ``label_map``
    (a tensor indexed by data set label, or None), ``image_id``), dropping None (unreadable)
    items."""
    good = [item[0] for item in items if item is not None]
    images, targets = [], []
    for image, target in good:
        labels = target["labels"]
        if label_map is not None:
            labels = label_map[labels]
        images.append(image.as_subclass(torch.Tensor))
        targets.append({"boxes": target["boxes"].as_subclass(torch.Tensor).reshape(-1, 4),
                        "labels": labels, "image_id": target["image_id"]})
    return images, targets, len(items) - len(good)


__all__ = ["AUGMENTATIONS", "Mosaic", "YoloData", "YoloDetection", "collate_detection",
           "detection_eval_transform", "detection_train_transform", "find_names_file",
           "decode_shard", "parse_yolo_labels", "parse_yolo_text", "read_names",
           "shard_layout", "split_dirs", "yolo_data"]
