"""Data folders as WebDataset tar shards: writing them, and streaming them to training.

Layout of a shard folder (written by :func:`write_shards`, ``mobilenets shard``)::

    SHARDS/train-0000.tar ... train-NNNN.tar    one sample per image: KEY.jpg (the file's
    SHARDS/val-0000.tar ...                      bytes as they were) and KEY.cls (label, text)
    SHARDS/index.json                            classes, per-shard counts, format version

A dense task's shards (segmentation, detection, depth: :mod:`mobilenets.tasks.shards` finds
the samples through the task's own ``shard_layout``) hold every file of a sample under its
key (``KEY.jpg``, ``KEY.mask.png`` / ``KEY.txt`` / ``KEY.depth.png``, ``KEY.idx``), and the
index says the task and what the reader needs besides the files; the task's ``decode_shard``
gives the same item as its folder dataset.

``KEY`` is the image's path below its split folder without the extension (``tench/n01``),
stable across re-runs and shard sizes. The images of a split are written in the order
``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` of the sorted folder
listing (``ImageFolder``'s), so that a shard holds many classes and a shuffle buffer of a few
shards gives well-mixed batches.

Reading (:func:`open_shards`, :class:`TrainShards`, :class:`ValShards`, :class:`ShardLoader`)
goes through ``webdataset``'s tar reader. Training streams are defined by (seed, epoch, rank,
world size, loader workers, batch size) and nothing else:

- each epoch shuffles the shard list with a generator seeded by (seed, epoch), the same on
  every rank; rank ``r`` of ``R`` and worker ``w`` of ``W`` read ``shards[r::R][w::W]`` (as
  webdataset's ``split_by_node`` then ``split_by_worker``), so fewer shards than ``R x W`` is
  an error;
- each worker shuffles samples in a buffer seeded by (seed, epoch, rank, worker) and repeats
  its shards when they run out: every rank yields exactly ``len // (batch x R)`` batches per
  epoch (as ``with_epoch``), because an uneven count hangs DDP at its last step. A sample can
  therefore come twice or not at all in one epoch; more, smaller shards make that rarer;
- augmentation is seeded per sample by (seed, epoch, rank, worker, position in the stream).

So a run resumed at an epoch boundary sees exactly the batches of an uninterrupted one. Resumed
mid-epoch with the same ranks, workers and batch size it does too: the skipped batches are
read (not decoded) and dropped, and the workers' roles rotate so that the loader's round-robin
order continues where it stopped. With another worker count the order differs (the samples of
an epoch are the same multiset up to the repeats above).
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .image_io import decode_rgb
from .folder import DataError, ImageFolderDataset, class_folders, collate_skip_bad

logger = logging.getLogger("mobilenets.data")

INDEX_NAME = "index.json"
FORMAT = "mobilenets-shards"
FORMAT_VERSION = 2
"""Version 1: classification (no ``task``); 2 adds the dense tasks' indexes (``task``,
``parts``). A classification index is still written as version 1."""

DEFAULT_SAMPLES_PER_SHARD = 100
"""Samples per shard when neither a count nor a size is given. Shards are split over ranks x
loader workers, each needing one: Imagenette's 9,469 training images make 95 shards (enough
for 8 GPUs x 8 workers), ImageNet's 1.28 M make 12,812 of ~11 MB, a size object stores serve
well. Fewer samples per shard also make the per-worker counts more even (see the module doc)."""

DEFAULT_SHUFFLE_BUFFER = 1000
"""Samples each loader worker keeps in its shuffle buffer (webdataset's default; fewer when
the worker's shards hold fewer)."""

_BRACES = re.compile(r"[^/\s]*\{[^}]*\}[^/\s]*")      # the shard-name token of a brace pattern
_JPEG = {"jpg", "jpeg"}
_IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "gif", "tif", "tiff")


# ----------------------------------------------------------------------------- writing --------
def _splits(data: Path) -> list[tuple[str, Path]]:
    """``[(split, folder)]``: ``train`` (and ``val`` when present) of a train/val folder, or
    ``data`` itself as ``train`` when it is a folder of class folders."""
    if not data.is_dir():
        raise DataError(f"data folder {data} does not exist")
    if (data / "train").is_dir():
        return [(s, data / s) for s in ("train", "val") if (data / s).is_dir()]
    if not class_folders(data):
        raise DataError(f"{data} has neither a train/ folder nor class folders; expected "
                        f"<folder>/train/<class>/<images> (and val/), or <folder>/<class>/<images>")
    return [("train", data)]


def _key(path: str, root: Path) -> str:
    """The sample key of an image: its path below ``root`` without the extension; dots become
    underscores (webdataset splits a file name into key and field at the first dot)."""
    rel = Path(path).relative_to(root)
    return str(rel.with_suffix("")).replace(".", "_")


# a sample to write: (key, {field: Path (its bytes are stored) or str (stored as UTF-8)})
Sample = tuple[str, dict]


def _width(bound: int) -> int:
    return max(4, len(str(max(bound - 1, 0))))


def write_shards(data: str | Path, out: str | Path, samples_per_shard: int | None = None,
                 max_bytes: int | None = None, seed: int = 0, progress: bool = True,
                 layout: ShardLayout | None = None) -> dict:
    """Write the data folder ``data`` into tar shards in the new folder ``out`` plus
    ``index.json``; return the index. ``data`` is an image-classification folder (``train/``
    and ``val/`` of class folders, or one folder of class folders), or, with ``layout``, the
    samples a dense task found in it (its ``shard_layout``; each sample keeps all its files
    under one key). A shard closes after ``samples_per_shard`` samples (default
    :data:`DEFAULT_SAMPLES_PER_SHARD` when ``max_bytes`` is not given either) or once it holds
    ``max_bytes`` of file data. Files are stored as they are (no re-encoding), shuffled with
    ``seed`` (see the module doc). Every shard is read back and checked against the index;
    ``out`` must not exist yet (or be an empty folder)."""
    data, out = Path(data), Path(out)
    if samples_per_shard is not None and samples_per_shard < 1:
        raise ValueError(f"samples per shard must be >= 1, not {samples_per_shard}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"the shard size must be >= 1 byte, not {max_bytes}")
    if samples_per_shard is None and max_bytes is None:
        samples_per_shard = DEFAULT_SAMPLES_PER_SHARD
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; shards are "
                              f"never overwritten: give a new --out, or delete it first")
    if layout is None:
        splits = _splits(data)
        train = ImageFolderDataset(splits[0][1])
        sets = [("train", splits[0][1], train)] + [
            (name, folder, ImageFolderDataset(folder, classes=train.classes))
            for name, folder in splits[1:]]
        index = {"format": FORMAT, "version": 1, "classes": list(train.classes)}
        entries = {name: [(_key(path, folder), {Path(path).suffix.lower().lstrip("."): Path(path),
                                                "cls": str(label)})
                          for path, label in dataset.samples]
                   for name, folder, dataset in sets}
        required: tuple[str, ...] = ("cls",)
    else:
        index = {"format": FORMAT, "version": FORMAT_VERSION, "task": layout.task,
                 "classes": list(layout.classes), "parts": layout.parts, **layout.extra}
        entries, required = layout.splits, layout.required
    index.update({"samples_per_shard": samples_per_shard, "max_bytes": max_bytes,
                  "shuffle_seed": seed, "splits": {}})
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name, samples in entries.items():
            index["splits"][name] = _write_split(name, samples, out, samples_per_shard,
                                                 max_bytes, seed, progress)
        for name, entry in index["splits"].items():
            _check_split(out, name, entry, required)
        (out / INDEX_NAME).write_text(json.dumps(index, indent=1) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for f in out.iterdir():
                f.unlink()
        raise
    return index


@dataclass
class ShardLayout:
    """A task's data folder as samples to shard, made by the task's ``shard_layout`` (e.g.
    :func:`mobilenets.tasks.segmentation.data.shard_layout`): ``splits`` ``{split: [Sample]}``
    in the task's order, ``parts`` (field -> what it holds, for the index), ``required``
    (fields every sample must hold besides its image), ``classes``, and ``extra`` (what the
    reader needs besides the files, e.g. a mask lookup table; stored in the index)."""

    task: str
    classes: list[str]
    parts: dict
    required: tuple[str, ...]
    splits: dict
    extra: dict = field(default_factory=dict)


def sample_key(name: str) -> str:
    """A sample key from a file stem: dots become underscores (webdataset splits a member's
    name into key and field at the first dot)."""
    return name.replace(".", "_")


def image_field(path: Path) -> str:
    """The field an image file is stored under: its extension (``jpg``, ``png``...)."""
    return Path(path).suffix.lower().lstrip(".")


def image_of(sample: dict) -> tuple[str, bytes]:
    """``(field, bytes)`` of a raw sample's image (the field that is an image extension)."""
    for key in sample:
        if key in _IMAGE_FIELDS:
            return key, sample[key]
    raise ValueError("the sample has no image")


def decode_image_bytes(data: bytes, field_name: str = "jpg") -> torch.Tensor:
    """A uint8 3 x H x W RGB tensor from an image file's bytes (libjpeg-turbo for JPEG)."""
    return decode_rgb(data, jpeg=field_name in _JPEG)


def check_keys(samples: list[Sample], where) -> list[Sample]:
    """``samples``, after checking that no two share a key (DataError naming it)."""
    seen: set[str] = set()
    for key, _ in samples:
        if key in seen:
            raise DataError(f"two samples in {where} give the key {key!r} (dots in file names "
                            f"become underscores); rename one")
        seen.add(key)
    return samples


def _write_split(name: str, samples: list[Sample], out: Path, samples_per_shard: int | None,
                 max_bytes: int | None, seed: int, progress: bool) -> dict:
    from tqdm import tqdm
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    keys = {}
    for key, fields in samples:
        if key in keys:
            raise DataError(f"{fields} and {keys[key]} give the same sample key {key!r} "
                            f"(dots in file names become underscores); rename one")
        keys[key] = fields
    # at most this many shards (for the width of their numbers): every shard but the last is
    # full by count or holds >= max_bytes
    bound = 1
    if samples_per_shard is not None:
        bound += len(samples) // samples_per_shard
    if max_bytes is not None:
        bound += sum(v.stat().st_size for _, f in samples for v in f.values()
                     if isinstance(v, Path)) // max_bytes
    pattern = str(out / f"{name}-%0{_width(bound)}d.tar")
    shards: list[dict] = []
    writer = None

    def closed(fname: str) -> None:
        shards.append({"name": Path(fname).name, "count": writer.count,
                       "bytes": Path(fname).stat().st_size})

    # mtime fixed: the same folder gives byte-identical shards
    writer = wds.ShardWriter(pattern, maxcount=samples_per_shard or 2**62,
                             maxsize=max_bytes or float("inf"), post=closed, verbose=0, mtime=0)
    with writer, tqdm(total=len(samples), desc=f"{name} shards", unit="sample",
                      disable=not progress) as bar:
        for i in order:
            key, fields = samples[i]
            writer.write({"__key__": key, **{k: v.read_bytes() if isinstance(v, Path) else v
                                             for k, v in fields.items()}})
            bar.update(1)
    return {"shards": shards, "total": len(samples)}


def _check_split(out: Path, name: str, entry: dict, required: tuple[str, ...] = ()) -> None:
    """Read every shard of a split back and compare its sample count with the index; every
    sample must hold its ``required`` fields."""
    for shard in entry["shards"]:
        url = str(out / shard["name"])
        count = 0
        for sample in wds.tarfile_to_samples()([{"url": url}]):
            count += 1
            missing = [f for f in required if f not in sample]
            if missing:
                raise DataError(f"sample {sample['__key__']} in {url} lacks {missing} after "
                                f"writing; check the disk, then write the shards again")
        if count != shard["count"]:
            raise DataError(f"{url} holds {count} samples after writing, not {shard['count']}; "
                            f"check the disk, then write the shards again")
    total = sum(s["count"] for s in entry["shards"])
    if total != entry["total"]:
        raise DataError(f"the {name} shards hold {total} samples, not {entry['total']}")


# ----------------------------------------------------------------------------- the index ------
@dataclass
class ShardIndex:
    """What a shard source holds: class names and, per split, ``(url, count)`` of its shards;
    ``index``: the whole index (a dense task's reader takes its ``extra`` entries from it)."""

    source: str
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    index: dict = field(default_factory=dict)
    named: bool = False          # the source named its shards (a pattern, a .tar, a pipe:)

    @property
    def task(self) -> str:
        return self.index.get("task", "classification")


def is_shard_source(data) -> bool:
    """True when ``data`` names shards: a folder with ``index.json`` or ``.tar`` files, a brace
    pattern (``DIR/train-{0000..0127}.tar``), a ``.tar`` file or a ``pipe:`` command."""
    if data is None:
        return False
    data = str(data)
    if data.startswith("pipe:") or _BRACES.search(data) or data.endswith(".tar"):
        return True
    folder = Path(data)
    return (folder / INDEX_NAME).is_file() or (folder.is_dir() and any(folder.glob("*.tar")))


def _locate(data: str) -> tuple[str, str, list[str] | None]:
    """``(prefix, suffix, names)``: a shard named N of the source ``data`` is read from
    ``prefix + N + suffix`` (a folder: ``FOLDER/N``; a pattern: N replaces its shard-name
    token); ``names``: the shard names the pattern expands to (None for a folder: every shard
    of its index)."""
    if not data.startswith("pipe:") and Path(data).is_dir():
        return str(Path(data)) + "/", "", None
    matches = list(_BRACES.finditer(data))
    if matches:
        token = matches[-1]
        names = wds.shardlists.expand_urls(token.group(0))
    else:          # one shard: the last name that ends in .tar
        matches = list(re.finditer(r"[^/\s]+\.tar\b", data))
        if not matches:
            raise DataError(f"cannot find the shard names in {data!r}; give a folder with "
                            f"{INDEX_NAME}, a brace pattern such as DIR/train-{{0000..0127}}.tar "
                            f"or a pipe: command reading such a pattern")
        token = matches[-1]
        names = [token.group(0)]
    return data[:token.start()], data[token.end():], names


def _read_index(url: str) -> dict:
    try:
        if url.startswith("pipe:"):
            with wds.gopen(url, "rb") as f:
                text = f.read().decode()
        else:
            text = Path(url).read_text()
        index = json.loads(text)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the shard index {url} ({e}); shards need the "
                        f"{INDEX_NAME} that `mobilenets shard` writes beside them") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{url} is not a {FORMAT} index; write the shards with "
                        f"`mobilenets shard`")
    if index.get("version", 0) > FORMAT_VERSION:
        raise DataError(f"{url} is format version {index['version']}; this mobilenets reads up "
                        f"to version {FORMAT_VERSION}: update mobilenets")
    return index


def open_shards(data: str | Path, task: str = "classification") -> ShardIndex:
    """The index of a shard source (see :func:`is_shard_source`): read from ``index.json`` in
    the folder, or beside the pattern's shards (for a ``pipe:`` command: the same command with
    the shard names replaced by ``index.json``). A pattern selects training shards of the index;
    the validation shards are the index's, read the same way. ``task``: the task whose
    shards these must be (DataError otherwise)."""
    data = str(data)
    prefix, suffix, names = _locate(data)
    index_url = prefix + INDEX_NAME + suffix
    index = _read_index(index_url)
    if index.get("task", "classification") != task:
        raise DataError(f"{index_url} holds {index.get('task', 'classification')} data, not "
                        f"{task} data; give the {task} task shards written from its own "
                        f"data folder")
    splits = index["splits"]
    counts = {s["name"]: s["count"] for split in splits.values() for s in split["shards"]}
    named = names is not None
    if names is None:
        names = [s["name"] for s in splits["train"]["shards"]]
    unknown = [n for n in names if n not in counts]
    if unknown:
        raise DataError(f"shard(s) not in the index {index_url}: "
                        f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; check "
                        f"the pattern's numbers against the shard files")
    val = [(prefix + s["name"] + suffix, s["count"])
           for s in splits.get("val", {}).get("shards", [])]
    return ShardIndex(data, list(index["classes"]),
                      [(prefix + n + suffix, counts[n]) for n in names], val, index, named)


# ----------------------------------------------------------------------------- reading --------
def _fit_seed(key: int) -> int:
    return key % 2**63


def _seed(*parts: int) -> int:
    """One seed from several integers (a polynomial in large primes: distinct for the small
    tuples used here)."""
    key = 0
    for p in parts:
        key = key * 1_000_003 + int(p)
    return _fit_seed(key)


def _warn_damaged(url: str, strict: bool, exn: Exception) -> bool:
    """webdataset's error handler for one shard: skip the rest of a damaged shard with a
    warning naming it (or raise DataError when ``strict``)."""
    if strict:
        raise DataError(f"damaged shard {url}: {exn}") from exn
    logger.warning("skipping the rest of the damaged shard %s: %s", url, exn)
    return True


def _shard_samples(url: str, strict: bool):
    """The raw samples (dicts of bytes) of one shard, through webdataset's tar reader."""
    return wds.tarfile_to_samples(handler=partial(_warn_damaged, url, strict))([{"url": url}])


def decode_classification(sample: dict, num_classes: int):
    """``(uint8 CHW RGB tensor, label)`` of a classification shard's raw sample."""
    ext = next((k for k in sample if not k.startswith("_") and k != "cls"), None)
    if ext is None or "cls" not in sample:
        raise ValueError("the sample has no image" if ext is None else "no label (.cls)")
    label = int(sample["cls"])
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} outside the index's {num_classes} classes")
    return decode_image_bytes(sample[ext], ext), label


def _decode(sample: dict, decode, strict: bool):
    """``decode(sample)``: ``(input, target)`` of a raw sample, where the transform applies to
    ``input`` (an image, or a dense task's ``(image, target)``), or None if it is unreadable.
    A DataError of ``decode`` (data that no skipping can fix) always propagates."""
    where = f"{sample.get('__key__')} in {sample.get('__url__')}"
    try:
        return decode(sample)
    except DataError as e:
        raise DataError(f"sample {where}: {e}") from e
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        if strict:
            raise DataError(f"cannot read sample {where}: {e}") from e
        logger.warning("skipping unreadable sample %s: %s", where, e)
        return None


def _seeded(transform, image, seed: int):
    """``transform(image)`` with torch's CPU generator seeded by ``seed`` (then restored)."""
    if transform is None:
        return image
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    try:
        return transform(image)
    finally:
        torch.set_rng_state(state)


class TrainShards(IterableDataset):
    """The training stream of one rank (see the module doc). Set ``transform`` (on decoded
    uint8 tensors), then ``epoch`` and ``start`` (batches of the epoch already trained) before
    each pass; a :class:`ShardLoader` does that from the engine's sampler. ``decode``: a
    picklable ``decode(raw sample) -> (input, target)`` for a dense task's shards (the
    transform then applies to ``input``); default: classification's, with ``num_classes``."""

    def __init__(self, shards: list[tuple[str, int]], num_classes: int, batch_size: int,
                 seed: int, rank: int = 0, world: int = 1, workers: int = 0,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, strict: bool = False,
                 transform=None, decode=None):
        self.shards, self.num_classes, self.batch_size = list(shards), num_classes, batch_size
        self.decode = decode or partial(decode_classification, num_classes=num_classes)
        self.seed, self.workers = seed, workers
        self.shuffle_buffer, self.strict, self.transform = shuffle_buffer, strict, transform
        self.total = sum(c for _, c in self.shards)
        self.epoch, self.start = 0, 0
        self.distribute(rank, world)

    def distribute(self, rank: int, world: int) -> None:
        """Read rank ``rank`` of ``world``'s share; raise DataError when there are fewer shards
        than processes x loader workers."""
        readers = world * max(self.workers, 1)
        if len(self.shards) < readers:
            raise DataError(
                f"{len(self.shards)} training shard(s) for {world} process(es) x "
                f"{max(self.workers, 1)} loader worker(s): each worker of each process reads "
                f"its own shards, so at least {readers} are needed; write smaller shards "
                f"(mobilenets shard --samples-per-shard) or use fewer --workers")
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        """Samples of one epoch over all ranks (as the index counts them)."""
        return self.total

    def batches_per_rank(self) -> int:
        return self.total // (self.batch_size * self.world)

    def epoch_shards(self, epoch: int) -> list[str]:
        """The shard order of ``epoch``: the same on every rank and worker."""
        urls = [u for u, _ in self.shards]
        random.Random(_seed(self.seed, epoch)).shuffle(urls)
        return urls

    def _raw(self, urls: list[str]):
        """The samples of ``urls`` in order, again and again (a stream never runs dry)."""
        while True:
            n = 0
            for url in urls:
                for sample in _shard_samples(url, self.strict):
                    n += 1
                    yield sample
            if n == 0:
                raise DataError(f"no readable sample in the shard(s) {', '.join(urls)}")

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the worker's role: the stream the loader's round-robin reads next (exact resume)
        stream = (worker + self.start) % workers
        steps, b = self.batches_per_rank(), self.batch_size
        skip = len(range(stream, self.start, workers)) * b
        end = len(range(stream, steps, workers)) * b
        if end <= skip:
            return
        urls = self.epoch_shards(self.epoch)[self.rank::self.world][stream::workers]
        rng = random.Random(_seed(self.seed, self.epoch, self.rank, stream, 1))
        # at most the stream's own samples: a larger buffer would hold repeats of its shards
        counts = dict(self.shards)
        buffer = max(1, min(self.shuffle_buffer, sum(counts[u] for u in urls)))
        samples = wds.shuffle(buffer, initial=buffer, rng=rng)(self._raw(urls))
        for position, sample in enumerate(islice(samples, end)):
            if position < skip:
                continue
            item = _decode(sample, self.decode, self.strict)
            if item is None:
                yield None
                continue
            image, label = item
            yield _seeded(self.transform, image, _seed(self.seed, self.epoch, self.rank,
                                                       stream, position, 2)), label


class ValShards(IterableDataset):
    """Validation samples in shard order: worker ``w`` of ``W`` reads shards ``w::W``; rank
    ``r`` of ``R`` keeps every sample whose index in the split is ``r`` mod ``R`` (as the
    folder path's every world-th image), so every sample is evaluated once on any number of
    shards, ranks and workers."""

    def __init__(self, shards: list[tuple[str, int]], num_classes: int, rank: int = 0,
                 world: int = 1, strict: bool = False, transform=None, decode=None):
        self.shards, self.num_classes = list(shards), num_classes
        self.decode = decode or partial(decode_classification, num_classes=num_classes)
        self.rank, self.world, self.strict, self.transform = rank, world, strict, transform

    def __len__(self) -> int:
        return sum(c for _, c in self.shards)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        offset = 0
        for i, (url, count) in enumerate(self.shards):
            if i % workers == worker:
                for j, sample in enumerate(_shard_samples(url, self.strict)):
                    if (offset + j) % self.world != self.rank:
                        continue
                    item = _decode(sample, self.decode, self.strict)
                    if item is not None and self.transform is not None:
                        item = self.transform(item[0]), item[1]
                    yield item
            offset += count


class ShardLoader:
    """Batches ``(images, labels, n_unreadable)`` of a shard dataset through a torch
    DataLoader; each pass starts new worker processes with the dataset's current state. For
    training, ``sampler`` (anything with ``epoch`` and ``start``, in samples) gives the epoch
    and the position to resume at."""

    def __init__(self, dataset, batch_size: int, workers: int = 0, sampler=None,
                 pin_memory: bool = False, collate=collate_skip_bad):
        self.dataset, self.batch_size, self.workers = dataset, batch_size, workers
        self.sampler, self.pin_memory, self.collate = sampler, pin_memory, collate

    def __iter__(self):
        if self.sampler is not None:
            self.dataset.epoch = self.sampler.epoch
            self.dataset.start = self.sampler.start // self.batch_size
        return iter(DataLoader(self.dataset, self.batch_size, num_workers=self.workers,
                               collate_fn=self.collate, pin_memory=self.pin_memory))



def val_shard_loader(index: ShardIndex, batch_size: int, workers: int = 0, decode=None,
                     transform=None, collate=collate_skip_bad) -> ShardLoader:
    """A loader of the validation shards of ``index`` (:func:`open_shards`), read in order
    and decoded by ``decode`` (default: classification samples), ``transform`` on each
    decoded input, batched by ``collate``: what an evaluation on shards reads (the stream the
    training engine validates on). A source that names shards (a pattern, a ``.tar``, a
    ``pipe:`` command) is read as named when they are validation shards, and refused when it
    names training shards (an evaluation of them would not be a held-out score)."""
    shards = index.val
    if index.named:
        val = {url for url, _ in index.val}
        if not all(url in val for url, _ in index.train):
            raise DataError(f"{index.source} names training shards; an evaluation reads "
                            f"validation shards: give the shard folder (its index's val "
                            f"shards) or a pattern of val shards")
        shards = index.train
    if not shards:
        raise DataError(f"the shards of {index.source} have no val split to evaluate on; "
                        f"evaluate on the data folder they were written from, or write them "
                        f"again from a folder with a val split (mobilenets shard)")
    dataset = ValShards(shards, len(index.classes), decode=decode, transform=transform)
    return ShardLoader(dataset, batch_size, workers, collate=collate)


def shard_loaders(train_set: TrainShards, val_set: ValShards, sampler, batch_size: int,
                  workers: int, device: torch.device, dist, collate=collate_skip_bad):
    """A task's ``(train, val)`` :class:`ShardLoader` pair, the streams split over the
    processes of ``dist`` (its ``rank`` and ``world``); what the default ``Task.stream_loaders``
    returns for shards."""
    train_set.distribute(dist.rank, dist.world)
    val_set.rank, val_set.world = dist.rank, dist.world
    pin = device.type == "cuda"
    return (ShardLoader(train_set, batch_size, workers, sampler, pin, collate),
            ShardLoader(val_set, batch_size, workers, pin_memory=pin, collate=collate))

__all__ = ["DEFAULT_SAMPLES_PER_SHARD", "INDEX_NAME", "Sample", "ShardIndex", "ShardLayout",
           "ShardLoader", "TrainShards", "ValShards", "check_keys", "decode_classification",
           "decode_image_bytes", "image_field", "image_of", "is_shard_source", "open_shards",
           "sample_key", "shard_loaders", "val_shard_loader", "write_shards"]
