"""Segmentation data: image + index-mask pairs in three layouts, the COCO panoptic adapter,
paired transforms (torchvision.transforms.v2 with ``tv_tensors.Mask``) and the collate.

Layouts (:func:`open_split` recognises them from the data folder):

- **folder**: ``ROOT/classes.txt`` (one class name a line; line k is label k),
  ``ROOT/images/SPLIT/NAME.{jpg,jpeg,png,webp}`` and ``ROOT/masks/SPLIT/NAME.png``: a
  single-channel PNG (grayscale or palette) whose values are labels, 255 = ignore. Without
  split folders (``ROOT/images/NAME.jpg``, ``ROOT/masks/NAME.png``) the pairs in name order
  split as the depth task's do: the first 80% ``train``, the last 20% ``val``.
- **voc** (PASCAL VOC 2012): ``ROOT/JPEGImages/ID.jpg``, ``ROOT/SegmentationClass/ID.png``
  (palette PNG of labels 0..20, 255 = ignore, the object boundaries) and
  ``ROOT/ImageSets/Segmentation/SPLIT.txt`` (one ID a line). ``ROOT`` may also be a folder
  holding ``VOCdevkit/VOC2012``.
- **coco** (COCO128 as Lightly packages it, or any data in its form):
  ``ROOT/semantic_segmentation/config.yaml`` (``classes``: panoptic category id -> name, 0 =
  unlabeled; ``train``/``val``: ``images`` and ``masks`` folders relative to it) and
  single-channel PNGs of panoptic category ids (non-contiguous, up to 200). The adapter
  (:func:`coco_label_map`) remaps the ids:

  - ``label_set="coco"``: every category of config.yaml except 0, in id order, becomes
    label 0, 1, ...; the unlabeled id 0 (pixels no panoptic segment covers: COCO's void)
    becomes 255 and is ignored, as panoptic quality ignores void pixels.
  - ``label_set="voc"``: torchvision's "COCO with VOC labels" subset: the 20 COCO
    categories of :data:`COCO_VOC_IDS` become VOC labels 1..20 (:data:`VOC_CLASSES`), and
    every other category and the unlabeled id 0 become background 0, as in torchvision's
    reference, whose masks mark with 0 whatever no kept annotation covers.

  ``unlabeled="ignore"`` or ``"background"`` overrides the handling of id 0 (with
  ``"background"`` the coco set gets a first class ``background``). A mask id absent from
  config.yaml is an error naming the file.

An image without a mask (COCO128 has masks for 100 of each split's 128 images) is skipped;
the count is kept in ``MaskPairs.skipped`` for the run's summary line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from ...data import DataError, read_rgb
from ...data.image_io import decode_unchanged
from ...data.shards import (ShardLayout, check_keys, decode_image_bytes, image_field, image_of,
                            sample_key)

logger = logging.getLogger("mobilenets.data")

IGNORE = 255
"""The mask value that the loss and the metrics skip (VOC's boundaries, padding, void)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")   # what the decoder reads

VOC_CLASSES = ["__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
               "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
               "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
"""The 21 PASCAL VOC labels, named as torchvision's segmentation weights name them."""

COCO_VOC_IDS = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]
"""torchvision's ``CAT_LIST`` (references/segmentation/coco_utils.py): position = VOC label,
value = COCO category id (0: background placeholder). COCO panoptic ids of things equal the
detection category ids, so the list applies to panoptic masks as it is."""

LABEL_SETS = ("coco", "voc")
LAYOUTS = ("folder", "voc", "coco")

_LAYOUT_HELP = ("expected one of: ROOT/classes.txt + ROOT/images/SPLIT/*.jpg + "
                "ROOT/masks/SPLIT/*.png, or ROOT/images/*.jpg + ROOT/masks/*.png (folder); "
                "ROOT/JPEGImages + ROOT/SegmentationClass + "
                "ROOT/ImageSets/Segmentation/SPLIT.txt (PASCAL VOC); "
                "ROOT/semantic_segmentation/config.yaml + masks (COCO128); see "
                "docs/segmentation.md")


# ---- the COCO panoptic adapter -------------------------------------------------------------

def read_coco_config(path: str | Path) -> dict:
    """config.yaml of COCO128's ``semantic_segmentation``: ``{"classes": {id: name},
    SPLIT: {"images": ..., "masks": ...}}`` as written there (needs PyYAML)."""
    try:
        import yaml
    except ImportError:
        raise DataError(f"reading {path} needs PyYAML: pip install pyyaml") from None
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    classes = config.get("classes") if isinstance(config, dict) else None
    if not isinstance(classes, dict) or not all(isinstance(k, int) and 0 <= k < IGNORE
                                                for k in classes):
        raise DataError(f"{path} has no 'classes' map of category ids (0..254) to names")
    return config


def coco_label_map(id_names: dict[int, str], label_set: str = "coco",
                   unlabeled: str | None = None) -> tuple[list[str], torch.Tensor]:
    """``(class names, lut)`` for masks of COCO panoptic ids: ``lut[id]`` is the label of a
    mask value ``id`` (255: ignored), or -1 for an id not in ``id_names`` (an error when
    met). ``id_names``: config.yaml's ``classes`` (0 = unlabeled). See the module docstring
    for the two label sets; ``unlabeled`` (None: the set's default) is ``"ignore"`` or
    ``"background"``."""
    if label_set not in LABEL_SETS:
        raise ValueError(f"label_set must be one of {', '.join(LABEL_SETS)}, not {label_set!r}")
    if unlabeled is None:
        unlabeled = "background" if label_set == "voc" else "ignore"
    if unlabeled not in ("ignore", "background"):
        raise ValueError(f"unlabeled must be 'ignore' or 'background', not {unlabeled!r}")
    lut = torch.full((256,), -1, dtype=torch.int16)
    lut[IGNORE] = IGNORE
    things = sorted(k for k in id_names if k != 0)
    if label_set == "voc":
        classes = list(VOC_CLASSES)
        lut[things] = 0                                   # every other category: background
        for label, cat in enumerate(COCO_VOC_IDS[1:], start=1):
            lut[cat] = label           # also when config.yaml does not list it (no pixel has it)
        lut[0] = 0 if unlabeled == "background" else IGNORE
    else:
        first = 1 if unlabeled == "background" else 0
        classes = (["background"] if first else []) + [id_names[k] for k in things]
        if len(classes) > IGNORE:
            raise DataError(f"{len(classes)} classes do not fit 8-bit labels below {IGNORE}")
        lut[things] = torch.arange(first, first + len(things), dtype=torch.int16)
        lut[0] = 0 if first else IGNORE
    return classes, lut


def _index_lut(num_classes: int) -> torch.Tensor:
    """Masks that hold labels already: 0..C-1 and 255 pass, anything else is an error."""
    lut = torch.full((256,), -1, dtype=torch.int16)
    lut[:num_classes] = torch.arange(num_classes, dtype=torch.int16)
    lut[IGNORE] = IGNORE
    return lut


# ---- finding the pairs ---------------------------------------------------------------------

@dataclass
class SplitFiles:
    """One split of a data folder: ``pairs`` of (image, mask) paths, the classes and the lut
    from mask values to labels, how many images had no mask, and the layout's name."""

    pairs: list[tuple[Path, Path]]
    classes: list[str]
    lut: torch.Tensor
    skipped: int
    layout: str
    where: str


def detect_layout(root: Path) -> tuple[str, Path]:
    """``(layout, root)`` of a data folder (VOCdevkit/VOC2012 inside it is followed)."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist ({_LAYOUT_HELP})")
    if (root / "VOCdevkit" / "VOC2012").is_dir():
        root = root / "VOCdevkit" / "VOC2012"
    if (root / "semantic_segmentation" / "config.yaml").is_file():
        return "coco", root
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc", root
    if (root / "classes.txt").is_file():
        return "folder", root
    if (root / "images").is_dir() and (root / "masks").is_dir():
        raise DataError(f"{root} has images/ and masks/ but no classes.txt: write one class "
                        f"name a line (line k names label k) in {root / 'classes.txt'}")
    raise DataError(f"{root} is not a segmentation data folder: {_LAYOUT_HELP}")


def _images(folder: Path) -> dict[str, Path]:
    return {Path(e.name).stem: Path(e.path) for e in os.scandir(folder)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)}


def _pair_up(image_dir: Path, mask_dir: Path, split: str, where: str):
    for folder, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not folder.is_dir():
            flat = folder.parent.is_dir() and any(
                e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
                for e in os.scandir(folder.parent))
            hint = (f"; {folder.parent} holds the files directly: split them into "
                    f"{folder.parent.name}/train/ and {folder.parent.name}/val/ (the masks "
                    f"alike, same names)" if flat else "")
            raise DataError(f"no {what} folder {folder} for split {split!r}{hint} "
                            f"({_LAYOUT_HELP})")
    images = _images(image_dir)
    masks = {p.stem: p for p in mask_dir.glob("*.png")}
    pairs = [(images[k], masks[k]) for k in sorted(images) if k in masks]
    if not pairs:
        raise DataError(f"split {split!r} of {where} has no image with a mask: {len(images)} "
                        f"images in {image_dir}, {len(masks)} PNG masks in {mask_dir} (a mask "
                        f"is IMAGE_NAME.png)")
    return pairs, len(images) - len(pairs)


def read_classes(path: Path) -> list[str]:
    """``classes.txt``: one name a line; line k names label k (blank lines at the end are
    ignored; one between names would shift every later label, so it is refused)."""
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    if "" in names:
        raise DataError(f"{path} line {names.index('') + 1} is blank, and line k names label "
                        f"k (0-based: label {names.index('')}): name that label, or remove "
                        f"the line if that label is not in the masks")
    if not names:
        raise DataError(f"{path} lists no class names; write one name a line (line k names "
                        f"label k)")
    if len(names) > IGNORE:
        raise DataError(f"{path} lists {len(names)} classes; labels must stay below {IGNORE} "
                        f"(the ignore value)")
    if len(set(names)) != len(names):
        raise DataError(f"{path} names a class twice; give each label its own name")
    return names


def _is_flat(root: Path) -> bool:
    """A folder-layout ROOT whose images/ holds the image files directly and where neither
    images/ nor masks/ holds a folder (a split folder in either: not flat)."""
    images, masks = root / "images", root / "masks"
    if not (images.is_dir() and masks.is_dir()):
        return False
    entries = list(os.scandir(images)) + list(os.scandir(masks))
    return not any(e.is_dir() for e in entries) and any(
        e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)


def _flat_split(root: Path, split: str, whole: bool):
    """The pairs of a flat folder-layout ROOT: all of them (``whole``), or ``train`` (the first
    80% in name order) or ``val`` (the last 20%), as the depth task splits a pair folder."""
    pairs, skipped = _pair_up(root / "images", root / "masks", split, str(root))
    if whole:
        return pairs, skipped
    if split not in ("train", "val"):
        raise DataError(f"{root} has no split folders (images/ holds the images), so its "
                        f"pairs split as train (the first 80% by name) and val (the last "
                        f"20%); there is no split {split!r}: use train or val, or make "
                        f"images/{split}/ and masks/{split}/")
    if len(pairs) < 2:
        raise DataError(f"{root} has {len(pairs)} image with a mask; a flat folder splits "
                        f"into train and val and needs at least 2 (or give --val)")
    cut = len(pairs) - max(1, round(0.2 * len(pairs)))
    return (pairs[:cut], skipped) if split == "train" else (pairs[cut:], 0)


def find_split(root: str | Path, split: str, label_set: str | None = None,
               unlabeled: str | None = None, whole: bool = False) -> SplitFiles:
    """The pairs of split ``split`` (e.g. ``train``, ``val``) of the data folder ``root``, in
    any of the three layouts. ``label_set`` and ``unlabeled`` apply to COCO panoptic masks
    only (None: ``"coco"`` and the set's default). A folder layout without split folders
    gives its first 80% as ``train`` and the last 20% as ``val``, or all its pairs with
    ``whole`` (a separate validation folder, or scoring a folder)."""
    layout, root = detect_layout(Path(root))
    if layout != "coco" and (label_set not in (None, "coco") or unlabeled is not None):
        raise ValueError(f"label_set / unlabeled remap COCO panoptic ids; {root} is a "
                         f"{layout}-layout folder whose masks hold labels already: leave them "
                         f"unset")
    if layout == "folder":
        classes = read_classes(root / "classes.txt")
        if not (root / "images" / split).is_dir() and _is_flat(root):
            pairs, skipped = _flat_split(root, split, whole)
            return SplitFiles(pairs, classes, _index_lut(len(classes)), skipped, layout,
                              str(root))
        pairs, skipped = _pair_up(root / "images" / split, root / "masks" / split, split,
                                  str(root))
        return SplitFiles(pairs, classes, _index_lut(len(classes)), skipped, layout, str(root))
    if layout == "voc":
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise DataError(f"no split list {listing} ({_LAYOUT_HELP})")
        ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png")
                 for i in ids]
        kept = [p for p in pairs if p[0].is_file() and p[1].is_file()]
        if not kept:
            raise DataError(f"none of the {len(ids)} ids of {listing} has both "
                            f"JPEGImages/ID.jpg and SegmentationClass/ID.png")
        return SplitFiles(kept, list(VOC_CLASSES), _index_lut(len(VOC_CLASSES)),
                          len(pairs) - len(kept), layout, str(root))
    folder = root / "semantic_segmentation"
    config = read_coco_config(folder / "config.yaml")
    entry = config.get(split)
    if isinstance(entry, dict) and "images" in entry and "masks" in entry:
        image_dir, mask_dir = folder / entry["images"], folder / entry["masks"]
    else:                                     # a split named by its folders (train2017)
        image_dir, mask_dir = root / "images" / split, folder / "masks" / split
    pairs, skipped = _pair_up(image_dir, mask_dir, split, str(root))
    classes, lut = coco_label_map(config["classes"], label_set or "coco", unlabeled)
    return SplitFiles(pairs, classes, lut, skipped, "coco", str(root))


# ---- the dataset ---------------------------------------------------------------------------

# Masks check_first reads for the 0 / 255 warning
BINARY_CHECK = 8


class MaskPairs(Dataset):
    """Items ``((tv_tensors.Image uint8 3 x H x W, tv_tensors.Mask uint8 1 x H x W of
    labels), index)``, the shape :class:`~mobilenets.training.sampling.SeededView` passes
    through a v2 transform as one sample. An unreadable image or mask gives None (a warning
    on the ``mobilenets.data`` logger), or DataError when ``strict``; a mask of another size
    than its image, or a value that is not a label, is always DataError."""

    def __init__(self, files: SplitFiles, strict: bool = False):
        self.files, self.strict = files, strict
        self.pairs, self.classes, self.lut = files.pairs, files.classes, files.lut
        self.skipped = files.skipped

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, mask_path = self.pairs[index]
        try:
            image = read_rgb(image_path)
            mask = decode_unchanged(mask_path)
        except (OSError, RuntimeError, ValueError) as e:
            if self.strict:
                raise DataError(f"cannot read {image_path} or {mask_path}: {e}") from e
            logger.warning("skipping unreadable pair %s, %s: %s", image_path, mask_path, e)
            return None
        return _labelled(image, mask, self.lut, self.files.layout, len(self.classes),
                         image_path, mask_path), index

    def check_first(self) -> None:
        """Read the first pair now, so that masks of the wrong kind throughout the data
        (colour masks, another size than their images, values outside the labels) are a
        DataError before training starts rather than some minutes into an epoch; a fault of
        one later file still surfaces when it is read."""
        if self.pairs:
            self[0]
        if self.files.layout == "coco" or len(self.classes) < 2:
            return
        values = set()        # binary masks exported as 0 / 255: the foreground is "ignore"
        for _, mask_path in self.pairs[:BINARY_CHECK]:
            try:
                values |= set(decode_unchanged(mask_path).unique().tolist())
            except (OSError, RuntimeError, ValueError):
                continue
        if values == {0, IGNORE}:
            logger.warning("the masks of %s (the first %d) hold only 0 and %d, and %d means "
                           "'ignore': no pixel is labelled %s. If they are binary masks saved "
                           "as 0 / 255, write them as 0 / 1 (divide by 255)",
                           self.files.where, min(len(self.pairs), BINARY_CHECK), IGNORE,
                           IGNORE, " or ".join(self.classes[1:3]))


def _labelled(image: torch.Tensor, mask: torch.Tensor, lut: torch.Tensor, layout: str,
              num_classes: int, image_where, mask_where):
    """``(tv_tensors.Image, tv_tensors.Mask of labels)`` of a decoded image and mask; a
    colour mask, a mask of another size or a value that is not a label is DataError."""
    if mask.shape[0] != 1 or mask.dtype != torch.uint8:
        raise DataError(f"mask {mask_where} has {mask.shape[0]} channels of {mask.dtype}; "
                        f"masks are single-channel 8-bit PNGs of labels (grayscale or "
                        f"palette), not colour images")
    if mask.shape[1:] != image.shape[1:]:
        raise DataError(f"mask {mask_where} is {tuple(mask.shape[1:])} but its image "
                        f"{image_where} is {tuple(image.shape[1:])} (H, W); give each "
                        f"image a mask of its own size")
    labels = lut[mask.long()]
    if (labels < 0).any():
        bad = sorted(set(mask[labels < 0].tolist()))[:10]
        known = ("config.yaml's category ids" if layout == "coco" else
                 f"labels 0..{num_classes - 1} (and {IGNORE} = ignore)")
        raise DataError(f"mask {mask_where} holds value(s) {bad} outside {known}; fix the "
                        f"mask or the class list")
    return tv_tensors.Image(image), tv_tensors.Mask(labels.to(torch.uint8))


# ---- WebDataset shards (mobilenets.data.shards) ----------------------------------------------

def shard_layout(root: str | Path, label_set: str | None = None, unlabeled: str | None = None,
                 train_split: str = "train", val_split: str = "val") -> ShardLayout:
    """The pairs of ``root`` (any of the three layouts) as samples for
    :func:`~mobilenets.data.shards.write_shards`: splits ``train`` and ``val`` (read from
    ``train_split`` and ``val_split``), each sample the image file and ``mask.png`` as they
    are, plus ``idx`` (its position in the split, in name order). The mask lookup table of the
    layout (for COCO panoptic ids: of ``label_set`` and ``unlabeled``, chosen here) goes into
    the index, so every layout reads back as labels."""
    train = find_split(root, train_split, label_set, unlabeled)
    val = find_split(root, val_split, label_set, unlabeled)
    if val.classes != train.classes:
        raise DataError(f"the {val_split} split of {root} has other classes than its "
                        f"{train_split} split; give data with one class list")
    splits = {name: check_keys([(sample_key(img.stem), {image_field(img): img, "mask.png": mask,
                                                        "idx": str(i)})
                                for i, (img, mask) in enumerate(files.pairs)], files.where)
              for name, files in (("train", train), ("val", val))}
    extra = {"segmentation": {
        "layout": train.layout, "lut": train.lut.tolist(), "splits": [train_split, val_split],
        "label_set": (label_set or "coco") if train.layout == "coco" else None,
        "unlabeled": unlabeled, "skipped": {"train": train.skipped, "val": val.skipped}}}
    return ShardLayout("segmentation", list(train.classes),
                       {"image": "the image file as it was",
                        "mask.png": "the mask PNG as it was (the index's lut maps its values "
                                    "to labels)",
                        "idx": "position in the split, in name order"},
                       ("mask.png", "idx"), splits, extra)


def decode_shard(sample: dict, lut: torch.Tensor, layout: str, num_classes: int):
    """``((Image, Mask of labels), idx)`` of a raw segmentation shard sample (the form
    :class:`MaskPairs` gives)."""
    name, data = image_of(sample)
    image = decode_image_bytes(data, name)
    mask = decode_unchanged(sample["mask.png"])
    where = f"{sample.get('__key__')}.mask.png"
    return _labelled(image, mask, lut, layout, num_classes, sample.get("__key__"), where), \
        int(sample["idx"])


def shard_decoder(index):
    """:func:`decode_shard` set up for the shards of ``index`` (an opened segmentation shard
    source): its label table, layout and classes."""
    info = index.index["segmentation"]
    return partial(decode_shard, lut=torch.tensor(info["lut"], dtype=torch.int16),
                   layout=info["layout"], num_classes=len(index.classes))


def collate_masks(items: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(images B x 3 x H x W, masks B x H x W int64, n_unreadable)`` from transformed
    items, dropping None (unreadable) ones; all bad: empty tensors."""
    good = [item[0] for item in items if item is not None]
    n_bad = len(items) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), n_bad
    images = torch.stack([torch.as_tensor(image) for image, _ in good])
    masks = torch.stack([torch.as_tensor(mask) for _, mask in good]).squeeze(1).long()
    return images, masks, n_bad


# ---- transforms ----------------------------------------------------------------------------

class PadToSize(v2.Transform):
    """Pad the bottom and right up to ``size`` x ``size`` when smaller (images with
    ``fill``, masks with 255 = ignore): torchvision's segmentation reference's PadIfSmaller.
    ``v2.RandomCrop(pad_if_needed=True)`` pads both sides by the whole shortfall, which
    leaves more padding than needed in the crop."""

    def __init__(self, size: int, fill: int = 0):
        super().__init__()
        self.size, self.fill = size, fill

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        return {"padding": [0, 0, max(self.size - width, 0), max(self.size - height, 0)]}

    def transform(self, inpt, params: dict):
        if not any(params["padding"]):
            return inpt
        fill = IGNORE if isinstance(inpt, tv_tensors.Mask) else self.fill
        return v2.functional.pad(inpt, params["padding"], fill=fill)

    # torchvision < 0.21 calls these names
    _get_params, _transform = make_params, transform


def _interpolation(preprocess: dict) -> InterpolationMode:
    return InterpolationMode(preprocess.get("interpolation", "bilinear"))


def _normalize(preprocess: dict) -> list:
    return [v2.ToDtype(torch.float32, scale=True),          # images only; masks stay uint8
            v2.Normalize(list(preprocess.get("mean", (0.485, 0.456, 0.406))),
                         list(preprocess.get("std", (0.229, 0.224, 0.225))))]


def segmentation_train_transform(resolution: int, preprocess: dict,
                                 scale: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5,
                                 color_jitter: float = 0.0) -> v2.Compose:
    """torchvision's segmentation training recipe at ``resolution``: resize the shorter side
    to a random ``scale`` x ``resolution`` (image: the model's interpolation; mask:
    nearest), pad to ``resolution`` (mask 255), random ``resolution`` crop, horizontal flip
    with probability ``hflip`` (all applied alike to image and mask), then colour jitter and
    normalisation of the image only. Takes and returns ``(Image, Mask)``."""
    lo, hi = (float(s) for s in scale)
    if not 0 < lo <= hi:
        raise ValueError(f"scale must be (min, max) with 0 < min <= max, not {tuple(scale)}")
    ops = [v2.RandomResize(max(1, round(lo * resolution)), round(hi * resolution) + 1,
                           interpolation=_interpolation(preprocess), antialias=True),
           PadToSize(resolution), v2.RandomCrop(resolution)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(ops + _normalize(preprocess))


def segmentation_eval_transform(resolution: int, preprocess: dict) -> v2.Compose:
    """Evaluation: resize image and mask to ``resolution`` x ``resolution`` (the mask by
    nearest neighbour; the aspect ratio is not kept, so every pixel is scored and a batch
    has one size), normalise the image."""
    return v2.Compose([v2.Resize((resolution, resolution), interpolation=_interpolation(
        preprocess), antialias=True)] + _normalize(preprocess))


__all__ = ["COCO_VOC_IDS", "IGNORE", "LABEL_SETS", "MaskPairs", "PadToSize", "SplitFiles",
           "VOC_CLASSES", "coco_label_map", "collate_masks", "detect_layout", "find_split",
           "read_classes", "read_coco_config", "segmentation_eval_transform",
           "segmentation_train_transform", "decode_shard", "shard_layout"]
