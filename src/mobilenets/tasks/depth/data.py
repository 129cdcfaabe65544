"""Depth data: RGB + 16-bit depth PNG pairs, split by frame ranges, and their transforms.

A *pair folder* holds its pairs in one of two layouts (matched by file stem, sorted by name,
so zero-pad frame numbers):

- ``images/NAME.{jpg,jpeg,png}`` and ``depth/NAME.png``;
- ``NAME.color.{jpg,jpeg,png}`` and ``NAME.depth.png`` side by side (7-Scenes' naming).

Depth PNGs hold integer codes (16-bit, or 8-bit): ``depth_in_metres = value / scale`` (default
scale 1000: millimetres), and the codes in ``invalid`` (default 0 and 65535, as in 7-Scenes and
most Kinect-style data) mean "no depth". Decoded depth is float32 metres with 0 where invalid,
so nearest-neighbour resizing never blends an invalid code into a valid depth.

A data folder is either ``train/`` + ``val/`` pair folders, or one pair folder (or a folder
with exactly one pair folder inside, as an unpacked archive is) that is split by contiguous
ranges of pair indices, never at random: neighbouring frames of a video are near-duplicates,
so a random split would put copies of the validation frames into training. The default range
split is the first 80% of the pairs for training and the last 20% for validation (7-Scenes
redkitchen: pairs 0-399 = frames 0-798 train, pairs 400-499 = frames 800-998 val).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from ...data import DataError, read_rgb
from ...data.image_io import decode_unchanged
from ...data.shards import (ShardLayout, check_keys, decode_image_bytes, image_field, image_of,
                            sample_key)

logger = logging.getLogger("mobilenets.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
INVALID = (0, 65535)
LAYOUT = ("a pair folder holds images/NAME.jpg + depth/NAME.png, or NAME.color.jpg + "
          "NAME.depth.png side by side; a data folder is one pair folder (split by ranges) or "
          "train/ + val/ pair folders")
#: where ``python experiments/datasets.py 7scenes-redkitchen-depth`` unpacks 7-Scenes
SEVEN_SCENES_DIR = (Path(os.environ.get("MOBILENETS_CACHE") or Path.home() / ".cache" /
                         "mobilenets") / "datasets" / "7scenes-redkitchen")
SEVEN_SCENES = {"scale": 1000.0, "invalid": INVALID}
"""7-Scenes depth: millimetres, 0 and 65535 invalid (its SOURCE.txt)."""


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(image, depth PNG)`` paths of the pair folder ``folder``, sorted by stem. Raises
    DataError when the folder has neither layout, or when an image has no depth file or a
    depth file no image (naming a few)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"depth data folder {folder} does not exist ({LAYOUT})")
    if (folder / "images").is_dir() and (folder / "depth").is_dir():
        images = {p.stem: p for p in (folder / "images").iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS}
        depths = {p.stem: p for p in (folder / "depth").iterdir() if p.suffix.lower() == ".png"}
    else:
        images, depths = {}, {}
        for p in folder.iterdir():
            stem, _, kind = p.stem.rpartition(".")
            if kind == "color" and p.suffix.lower() in IMAGE_EXTENSIONS:
                images[stem] = p
            elif kind == "depth" and p.suffix.lower() == ".png":
                depths[stem] = p
    if not images and not depths:
        raise DataError(f"{folder} has no image/depth pairs ({LAYOUT})")
    for what, have, lack in (("image", images, depths), ("depth PNG", depths, images)):
        alone = sorted(set(have) - set(lack))
        if alone:
            other = "depth PNG" if what == "image" else "image"
            raise DataError(f"{len(alone)} {what}(s) in {folder} have no {other} of the same "
                            f"name (e.g. {', '.join(alone[:3])}); add them or remove these")
    return [(images[s], depths[s]) for s in sorted(images)]


def _pair_folder(root: Path) -> Path:
    """``root`` if it holds pairs, else its only sub-folder that does (an unpacked archive)."""
    try:
        find_pairs(root)
        return root
    except DataError as e:
        if not root.is_dir():
            raise
        if (root / "images").is_dir() and (root / "depth").is_dir():
            raise                     # a pair folder of the images/ + depth/ layout: its error
        inner = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if len(inner) == 1:
            return _pair_folder(inner[0])
        raise DataError(f"{e}; {root} has {len(inner)} sub-folders, not one pair folder") \
            from None


def _slice(n: int, bounds, name: str) -> range:
    if bounds is None or len(bounds) != 2:
        raise ValueError(f"{name} must be (start, stop), pair indices in file-name order "
                         f"(Python slice rules: negative counts from the end, None is open), "
                         f"not {bounds!r}")
    picked = range(n)[slice(*bounds)]
    if len(picked) == 0:
        raise DataError(f"{name} {tuple(bounds)} selects no pairs of the {n} found; give a "
                        f"range inside 0..{n}")
    return picked


def split_pairs(data: str | Path, val: str | Path | None = None, train_range=None,
                val_range=None) -> tuple[list, list, str]:
    """The training and validation pairs of the data folder ``data`` (``val``: a separate
    validation pair folder), and a line saying how they were split.

    ``data/train`` + ``data/val`` (or ``val``) are used whole. A single pair folder is split by
    ``train_range`` and ``val_range`` (``(start, stop)`` pair indices in file-name order, Python
    slice rules); by default the first 80% train and the last 20% validate. Overlapping ranges
    are allowed (e.g. to overfit a few frames) and reported in the line."""
    root = Path(data)
    if val is not None or ((root / "train").is_dir() and (root / "val").is_dir()):
        train_dir = root / "train" if (root / "train").is_dir() else _pair_folder(root)
        val_dir = Path(val) if val is not None else root / "val"
        train, held = find_pairs(train_dir), find_pairs(val_dir)
        train = [train[i] for i in _slice(len(train), train_range or (None, None),
                                          "train_range")]
        held = [held[i] for i in _slice(len(held), val_range or (None, None), "val_range")]
        return train, held, (f"{len(train)} train pairs from {train_dir}, {len(held)} val "
                             f"pairs from {val_dir}")
    folder = _pair_folder(root)
    pairs = find_pairs(folder)
    n = len(pairs)
    if train_range is None and val_range is None:
        if n < 2:
            raise DataError(f"{folder} has {n} pair; a range split needs at least 2 (or give "
                            f"train/ and val/ folders)")
        cut = n - max(1, round(0.2 * n))
        train_range, val_range = (0, cut), (cut, n)
    elif train_range is None or val_range is None:
        raise ValueError("give both train_range and val_range, or neither (the first 80% "
                         "train, the last 20% validate)")
    t, v = _slice(n, train_range, "train_range"), _slice(n, val_range, "val_range")
    overlap = len(set(t) & set(v))
    note = f" ({overlap} pairs in both)" if overlap else ""
    line = (f"{folder}: {n} pairs split by range: train pairs {t.start}-{t.stop - 1} "
            f"({pairs[t.start][0].name} .. {pairs[t.stop - 1][0].name}), val pairs "
            f"{v.start}-{v.stop - 1} ({pairs[v.start][0].name} .. "
            f"{pairs[v.stop - 1][0].name}){note}")
    return [pairs[i] for i in t], [pairs[i] for i in v], line


def decode_depth(path: str | Path, scale: float = 1000.0,
                 invalid: tuple[int, ...] = INVALID) -> torch.Tensor:
    """A single-channel integer PNG as float32 metres (``value / scale``), 1 x H x W, with 0
    where the code is in ``invalid``."""
    return _depth_of(decode_unchanged(path), path, scale, invalid)


def _depth_of(raw: torch.Tensor, path, scale: float, invalid: tuple[int, ...]) -> torch.Tensor:
    if raw.shape[0] != 1 or raw.dtype not in (torch.uint16, torch.uint8):
        raise DataError(f"{path} is a {raw.shape[0]}-channel {raw.dtype} image; depth must be "
                        f"a single-channel 16-bit (or 8-bit) PNG of integer codes")
    codes = raw.to(torch.int32)          # uint16 has few CPU kernels (no comparisons)
    depth = codes.float() / scale
    if invalid:
        depth[torch.isin(codes, torch.tensor(invalid, dtype=torch.int32))] = 0.0
    return depth


class DepthPairs(Dataset):
    """``(image, depth)`` pairs: item ``i`` is ``((image, depth), stem)`` with ``image`` a
    uint8 ``tv_tensors.Image`` (3 x H x W, RGB) and ``depth`` a float32 ``tv_tensors.Mask``
    (1 x H x W, metres, 0 = no depth), so v2 transforms move both alike and resize the depth
    with nearest neighbours. An unreadable file gives None (a warning on the
    ``mobilenets.data`` logger), or DataError when ``strict``; an image and depth map of
    different sizes are always an error."""

    def __init__(self, pairs: list[tuple[Path, Path]], scale: float = 1000.0,
                 invalid: tuple[int, ...] = INVALID, strict: bool = False):
        if not scale > 0:
            raise ValueError(f"depth scale must be > 0 (codes per metre, e.g. 1000 for "
                             f"millimetres), not {scale!r}")
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        self.scale, self.invalid, self.strict = float(scale), tuple(int(v) for v in invalid), strict

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, depth_path = self.pairs[index]
        try:
            image = read_rgb(image_path)
            depth = decode_depth(depth_path, self.scale, self.invalid)
        except (RuntimeError, OSError, ValueError) as e:
            if self.strict or isinstance(e, DataError):
                raise DataError(f"cannot read pair {image_path.name} / {depth_path.name}: "
                                f"{e}") from e
            logger.warning("skipping unreadable pair %s / %s: %s", image_path, depth_path, e)
            return None
        if image.shape[-2:] != depth.shape[-2:]:
            raise DataError(f"{image_path} is {tuple(image.shape[-2:])} (H, W) but "
                            f"{depth_path} is {tuple(depth.shape[-2:])}; image and depth must "
                            f"be the same size")
        return (tv_tensors.Image(image), tv_tensors.Mask(depth)), image_path.stem.removesuffix(
            ".color")


# ---- WebDataset shards (mobilenets.data.shards) ----------------------------------------------

def shard_layout(data: str | Path, val: str | Path | None = None, train_range=None,
                 val_range=None) -> ShardLayout:
    """The pairs of ``data`` split as :func:`split_pairs` splits them (by frame ranges for a
    single pair folder: the default first 80% / last 20%, or ``train_range`` / ``val_range``)
    as samples for :func:`~mobilenets.data.shards.write_shards`: splits ``train`` and ``val``,
    each sample the image file, ``depth.png`` (the PNG's bytes as they were: the depth scale
    and invalid codes apply when reading) and ``idx`` (position in its split)."""
    train, held, line = split_pairs(data, val, train_range, val_range)
    splits = {name: check_keys([(sample_key(img.stem.removesuffix(".color")),
                                 {image_field(img): img, "depth.png": depth, "idx": str(i)})
                                for i, (img, depth) in enumerate(pairs)], data)
              for name, pairs in (("train", train), ("val", held))}
    return ShardLayout("depth", [], {"image": "the image file as it was",
                                     "depth.png": "the depth PNG as it was (integer codes)",
                                     "idx": "position in the split, in name order"},
                       ("depth.png", "idx"), splits, {"depth": {"split": line}})


def decode_shard(sample: dict, scale: float = 1000.0, invalid: tuple[int, ...] = INVALID):
    """``((Image, Mask of metres), key)`` of a raw depth shard sample (the form
    :class:`DepthPairs` gives)."""
    name, data = image_of(sample)
    image = decode_image_bytes(data, name)
    raw = decode_unchanged(sample["depth.png"])
    depth = _depth_of(raw, f"{sample.get('__key__')}.depth.png", scale, invalid)
    if image.shape[-2:] != depth.shape[-2:]:
        raise DataError(f"the image of sample {sample.get('__key__')} is "
                        f"{tuple(image.shape[-2:])} (H, W) but its depth PNG "
                        f"{tuple(depth.shape[-2:])}; image and depth must be the same size")
    return (tv_tensors.Image(image), tv_tensors.Mask(depth)), sample.get("__key__")


def seven_scenes(root: str | Path | None = None, train_range=(0, 400), val_range=(400, 500),
                 strict: bool = False) -> tuple[DepthPairs, DepthPairs]:
    """7-Scenes redkitchen (``frame-NNNNNN.color.jpg`` + ``.depth.png``, 500 pairs, every
    second frame of one sequence), split by pair-index ranges: by default pairs 0-399 (frames
    0-798) train and pairs 400-499 (frames 800-998) validate. ``root``: the unpacked folder
    or the folder holding it (default :data:`SEVEN_SCENES_DIR`)."""
    root = Path(root) if root is not None else SEVEN_SCENES_DIR
    if not root.exists():
        raise DataError(f"{root} does not exist; unpack 7-Scenes with `python "
                        f"experiments/datasets.py 7scenes-redkitchen-depth`")
    train, val, _ = split_pairs(root, train_range=train_range, val_range=val_range)
    return (DepthPairs(train, strict=strict, **SEVEN_SCENES),
            DepthPairs(val, strict=strict, **SEVEN_SCENES))


class RandomZoom(v2.Transform):
    """Resize image and depth to ``round(s * size)`` (square) with ``s`` drawn uniformly from
    ``scale``; the image with ``interpolation``, the depth (a Mask) with nearest neighbours,
    and the depth divided by ``s``: magnifying a view by ``s`` is what moving ``s`` times
    closer looks like (Eigen et al. 2014, §3.3 "Scale"). Follow it with a crop of ``size``."""

    def __init__(self, size: int, scale: tuple[float, float] = (1.0, 1.5),
                 interpolation: str = "bilinear"):
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"zoom scale must satisfy 0 < min <= max, not {tuple(scale)}")
        self.size, self.scale = size, tuple(scale)
        self.interpolation = InterpolationMode(interpolation)

    def make_params(self, flat_inputs: list) -> dict:
        lo, hi = self.scale
        s = lo + (hi - lo) * float(torch.rand(()))
        return {"s": s, "side": max(self.size, round(s * self.size))}

    def transform(self, inpt, params: dict):
        side = [params["side"]] * 2
        if isinstance(inpt, tv_tensors.Mask):
            out = TF.resize(inpt, side, interpolation=InterpolationMode.NEAREST)
            return tv_tensors.wrap(out / params["s"], like=inpt)
        return TF.resize(inpt, side, interpolation=self.interpolation, antialias=True)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _to_input(preprocess: dict) -> list:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(list(preprocess.get("mean", IMAGENET_MEAN)),
                         list(preprocess.get("std", IMAGENET_STD)))]


def depth_train_transform(resolution: int, preprocess: dict, scale=(1.0, 1.5), hflip=0.5,
                          color_jitter: float = 0.0) -> v2.Compose:
    """Training augmentation of an ``(image, depth)`` pair: :class:`RandomZoom` to a square
    of ``s * resolution`` (``s`` in ``scale``), a random ``resolution`` crop and a horizontal
    flip (probability ``hflip``) on both; colour jitter (brightness, contrast, saturation) on
    the image only; then the image scaled to [0, 1] and normalised with the model's mean/std
    (ImageNet's when it gives none). Non-square images are squashed to a square, as at eval."""
    ops = [RandomZoom(resolution, scale, preprocess.get("interpolation", "bilinear")),
           v2.RandomCrop(resolution)]
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(hflip))
    if color_jitter > 0:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(ops + _to_input(preprocess))


def depth_eval_transform(resolution: int, preprocess: dict) -> v2.Compose:
    """Eval: image and depth resized to ``resolution`` x ``resolution`` (no crop, so every
    valid pixel is scored; the depth with nearest neighbours), the image normalised."""
    interpolation = InterpolationMode(preprocess.get("interpolation", "bilinear"))
    return v2.Compose([v2.Resize((resolution, resolution), interpolation=interpolation,
                                 antialias=True)] + _to_input(preprocess))


def collate_depth(items: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(images B x 3 x H x W, depth B x 1 x H x W, n_unreadable)`` from transformed items,
    dropping None (unreadable) ones; all-bad batches give empty tensors."""
    good = [item[0] for item in items if item is not None]
    if not good:
        return torch.empty(0), torch.empty(0), len(items)
    images = torch.stack([image.as_subclass(torch.Tensor) for image, _ in good])
    depth = torch.stack([d.as_subclass(torch.Tensor) for _, d in good])
    return images, depth, len(items) - len(good)


__all__ = ["INVALID", "SEVEN_SCENES", "SEVEN_SCENES_DIR", "DepthPairs", "RandomZoom",
           "collate_depth", "decode_depth", "depth_eval_transform", "depth_train_transform",
           "decode_shard", "find_pairs", "seven_scenes", "shard_layout", "split_pairs"]
