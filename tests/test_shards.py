"""WebDataset shards: writing (round trip, refusal to overwrite), streaming (determinism, equal
counts, damaged shards, too few shards) and training on them (exact resume at an epoch
boundary)."""

import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.datasets import ImageFolder

from mobilenets import train
from mobilenets.cli.main import main
from mobilenets.data import SAMPLE_DIR, DataError
from mobilenets.training import engine
from mobilenets.data.shards import (ShardLoader, TrainShards, ValShards, is_shard_source,
                                    open_shards, write_shards)


def _subset(root: Path, classes: int = 4, n_train: int = 24, n_val: int = 6) -> Path:
    """A few classes and images of the built-in sample, copied (a quick training set)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for c in sorted((SAMPLE_DIR / split).iterdir())[:classes]:
            (root / split / c.name).mkdir(parents=True)
            for f in sorted(c.iterdir())[:n]:
                shutil.copy(f, root / split / c.name / f.name)
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The built-in sample in shards of 64 images (10 train, 4 val shards)."""
    out = tmp_path_factory.mktemp("sample") / "shards"
    write_shards(SAMPLE_DIR, out, samples_per_shard=64, progress=False)
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """4 classes x 24 train, x 6 val images of the sample, in shards of 8 (12 train shards)."""
    root = tmp_path_factory.mktemp("small")
    out = root / "shards"
    write_shards(_subset(root / "folder"), out, samples_per_shard=8, progress=False)
    return out


def _read_tar(path: Path) -> list[tuple[str, bytes, int]]:
    """(key, image bytes, label) of each sample of a shard, with the standard library's tar
    reader (independent of webdataset)."""
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    keys = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in members))
    return [(k, members[f"{k}.jpg"], int(members[f"{k}.cls"])) for k in keys]


def test_round_trip_gives_every_image_and_label_back_in_the_indexed_order(shards):
    index = open_shards(shards)
    assert index.classes == sorted(p.name for p in (SAMPLE_DIR / "train").iterdir())
    for split, n_shards in (("train", 10), ("val", 4)):
        folder = ImageFolder(str(SAMPLE_DIR / split))
        n = len(folder.samples)
        listed = index.train if split == "train" else index.val
        assert [Path(u).name for u, _ in listed] == [f"{split}-{i:04d}.tar"
                                                     for i in range(n_shards)]
        assert [c for _, c in listed] == [64] * (n_shards - 1) + [n - 64 * (n_shards - 1)]
        got = [s for url, _ in listed for s in _read_tar(Path(url))]
        # written in the documented order: randperm(n) under seed 0 of ImageFolder's listing
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
        assert len(got) == n
        for (key, data, label), i in zip(got, order):
            path, target = folder.samples[i]
            assert key == str(Path(path).relative_to(SAMPLE_DIR / split).with_suffix(""))
            assert data == Path(path).read_bytes() and label == target
    # streamed through webdataset and torchvision.io: every val image once over 2 ranks
    per_rank = [list(ValShards(index.val, 10, rank=r, world=2)) for r in range(2)]
    assert [len(p) for p in per_rank] == [125, 125]
    streamed = [item for pair in zip(*per_rank) for item in pair]       # index order again
    folder = ImageFolder(str(SAMPLE_DIR / "val"))
    order = torch.randperm(250, generator=torch.Generator().manual_seed(0)).tolist()
    for (image, label), i in zip(streamed, order):
        path, target = folder.samples[i]
        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        assert label == target
        assert torch.equal(image, _torchvision_jpeg(data))      # an independent decoder


def _torchvision_jpeg(data):
    import warnings
    with warnings.catch_warnings():            # deprecated in favour of TorchCodec, ours
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg
        return decode_jpeg(data, mode=ImageReadMode.RGB)


def test_sources_folder_pattern_and_pipe_name_the_same_shards(shards):
    folder = open_shards(shards)
    pattern = open_shards(f"{shards}/train-{{0002..0004}}.tar")
    assert pattern.train == folder.train[2:5] and pattern.val == folder.val
    piped = open_shards(f"pipe:cat {shards}/train-{{0000..0009}}.tar")
    assert piped.train == [(f"pipe:cat {u}", c) for u, c in folder.train]
    assert piped.val == [(f"pipe:cat {u}", c) for u, c in folder.val]
    first = next(iter(ValShards(piped.val[:1], 10)))           # read through the pipe
    assert torch.equal(first[0], next(iter(ValShards(folder.val[:1], 10)))[0])
    assert all(map(is_shard_source, (shards, piped.source, pattern.source)))
    assert not is_shard_source(SAMPLE_DIR) and not is_shard_source(None)
    with pytest.raises(DataError, match=r"not in the index .*train-0010\.tar"):
        open_shards(f"{shards}/train-{{0009..0010}}.tar")


def test_shards_without_their_index_are_refused(shards, tmp_path):
    shutil.copy(shards / "train-0000.tar", tmp_path)
    assert is_shard_source(tmp_path)
    for source in (tmp_path, f"{tmp_path}/train-{{0000..0000}}.tar"):
        with pytest.raises(DataError, match=r"cannot read the shard index .*index\.json.*"
                                            r"mobilenets shard"):
            open_shards(source)


def test_existing_output_is_refused_and_left_as_it_was(shards, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in shards.iterdir()}
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_shards(SAMPLE_DIR, shards, samples_per_shard=300, progress=False)
    assert main(["shard", str(SAMPLE_DIR), "--out", str(shards), "--no-progress"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == before
    # by size: each shard closes once it holds >= 60 kB of images
    assert main(["shard", str(SAMPLE_DIR / "val"), "--out", str(tmp_path / "b"),
                 "--max-bytes", "60k", "--no-progress"]) == 0
    index = open_shards(tmp_path / "b")
    assert index.val == [] and sum(c for _, c in index.train) == 250
    sizes = [sum(len(d) for _, d, _ in _read_tar(Path(u))) for u, _ in index.train]
    assert all(s >= 60_000 for s in sizes[:-1]) and len(sizes) > 1


def _epoch(dataset: TrainShards, epoch: int) -> list[tuple[torch.Tensor, int]]:
    dataset.epoch = epoch
    return list(dataset)


def test_streams_are_set_by_seed_and_epoch_with_equal_counts_per_rank(small):
    index = open_shards(small)
    ranks = [TrainShards(index.train, 4, batch_size=5, seed=1, rank=r, world=2,
                         shuffle_buffer=10) for r in range(2)]
    first = [_epoch(d, 0) for d in ranks]
    # 96 images, batches of 5 on 2 ranks: 9 batches = 45 samples on each
    assert [len(x) for x in first] == [45, 45]
    again = _epoch(ranks[0], 0)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first[0], again))
    second = _epoch(ranks[0], 1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first[0], second))
    # the ranks read different shards of one shuffled list; the epoch reshuffles it
    urls = ranks[0].epoch_shards(0)
    assert sorted(urls) == sorted(u for u, _ in index.train) and urls != ranks[0].epoch_shards(1)
    shared = sum(any(torch.equal(a[0], b[0]) for b in first[1]) for a in first[0])
    assert shared == 0
    other = TrainShards(index.train, 4, batch_size=5, seed=2, shuffle_buffer=10)
    assert other.epoch_shards(0) != TrainShards(index.train, 4, 5, seed=1).epoch_shards(0)


class _Sampler:
    def __init__(self, epoch, start):
        self.epoch, self.start = epoch, start


def test_mid_epoch_position_continues_the_same_batches_with_workers(small):
    index = open_shards(small)
    dataset = TrainShards(index.train, 4, batch_size=4, seed=0, workers=2, shuffle_buffer=8)
    full = list(ShardLoader(dataset, 4, workers=2, sampler=_Sampler(3, 0)))
    assert len(full) == 24 and all(n_bad == 0 for _, _, n_bad in full)
    rest = list(ShardLoader(dataset, 4, workers=2, sampler=_Sampler(3, 4 * 7)))
    assert len(rest) == 17
    for (x, y, _), (x2, y2, _) in zip(full[7:], rest):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_too_few_shards_for_processes_and_workers_is_an_error(small):
    index = open_shards(small)                                  # 12 training shards
    TrainShards(index.train, 4, 8, seed=0, world=3, workers=4)
    with pytest.raises(DataError, match=r"12 training shard\(s\) for 4 process\(es\) x 4 "
                                        r"loader worker\(s\).*at least 16"):
        TrainShards(index.train, 4, 8, seed=0, world=4, workers=4)


def test_damaged_shard_is_named_and_skipped_or_refused_when_strict(small, tmp_path, caplog):
    copy = tmp_path / "shards"
    shutil.copytree(small, copy)
    damaged = copy / "train-0003.tar"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:len(data) // 2 + 100])              # cut inside a sample
    index = open_shards(copy)
    dataset = TrainShards(index.train, 4, batch_size=8, seed=0, shuffle_buffer=8)
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        items = list(dataset)
    # the stream stays 96 long (the other shards fill in); the sample cut in half (its label
    # without its image) counts as unreadable, as a truncated image file does in a folder
    assert len(items) == 96 and sum(item is None for item in items) <= 1
    assert any(str(damaged) in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    strict = TrainShards(index.train, 4, batch_size=8, seed=0, shuffle_buffer=8, strict=True)
    with pytest.raises(DataError, match=f"damaged shard {damaged}"):
        list(strict)
    random.Random(0).shuffle(garbled := bytearray(data))          # not a tar file at all
    damaged.write_bytes(bytes(garbled))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mobilenets.data"):
        assert len(list(dataset)) == 96
    assert any(str(damaged) in r.getMessage() for r in caplog.records)


QUICK = dict(model="mobilenet_v3_small_075", resolution=32, batch_size=8, lr=0.01, seed=5,
             ema_decay=0.0, color_jitter=0.0, label_smoothing=0.1, dropout=0.0,
             drop_path_rate=0.0, max_steps_per_epoch=2, workers=2, weight_decay=1e-4)


class _Stop(Exception):
    """Stands for a run killed right after it checkpointed its first epoch."""


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_resume_at_an_epoch_boundary_equals_an_uninterrupted_run(small, tmp_path, monkeypatch,
                                                                 one_thread):
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(data=str(small), epochs=2, out=str(full), progress=False, **QUICK)
    end_epoch = engine._Run.end_epoch

    def stop_after_the_first(run, epoch, stats):
        metrics = end_epoch(run, epoch, stats)         # writes last.pt at the boundary
        if epoch == 0:
            raise _Stop
        return metrics
    monkeypatch.setattr(engine._Run, "end_epoch", stop_after_the_first)
    with pytest.raises(_Stop):
        train(data=str(small), epochs=2, out=str(cut), progress=False, **QUICK)
    monkeypatch.undo()
    assert torch.load(cut / "last.pt", weights_only=True)["epoch"] == 1
    train(data=str(small), epochs=2, out=str(cut), resume=cut / "last.pt", progress=False,
          **QUICK)
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    assert (a["epoch"], b["epoch"]) == (2, 2)
    for k, x in a["model"].items():
        assert torch.equal(x, b["model"][k]), f"{k} differs after resume"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


TWO = dict(model="mobilenet_v3_small_075", resolution=32, batch_size=4, lr=0.01, seed=5,
           ema_decay=0.9, label_smoothing=0.1, dropout=0.0, drop_path_rate=0.0, epochs=2,
           max_steps_per_epoch=1, workers=0, weight_decay=1e-4)


@pytest.mark.slow
def test_two_nodes_match_one_node_with_two_processes(small, tmp_path):
    """Two torchrun agents on this machine as two nodes (c10d rendezvous on localhost) train
    the same weights as one node running two processes: each rank reads the shards of its
    global rank, whatever node it runs on."""
    args = ["-m", "mobilenets", "train", "--data", str(small), "--no-progress"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in TWO.items()]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = [sys.executable, "-m", "torch.distributed.run"]
    port = _free_port()
    two_nodes = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                 "--rdzv-id", "shards-test", "--rdzv-endpoint", f"localhost:{port}"]
    launches = ([["--standalone", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "one")]]
                + [[*two_nodes, *args, "--out", str(tmp_path / "two")]] * 2)
    procs = [subprocess.Popen(run + launch, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env) for launch in launches]     # all at once
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert a["world"] == b["world"] == 2 and (b["epoch"], b["step"]) == (2, 0)
    for part in ("model", "ema"):
        for k, x in a[part].items():
            torch.testing.assert_close(b[part][k], x, rtol=1e-4, atol=5e-5,
                                       msg=f"{part}.{k} differs between 1 and 2 nodes")


def _png16(path: Path, value: int, dtype="uint16") -> None:
    import numpy as np
    from PIL import Image
    values = np.full((6, 8), value, dtype=dtype)
    values[0, 0] = 0                               # an invalid depth / a background label
    Image.fromarray(values).save(path)


def _jpg(path: Path, shade: int) -> None:
    from PIL import Image
    Image.new("RGB", (8, 6), (shade, 10, 20)).save(path)


def _read_back(out: Path) -> dict:
    samples = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                key, _, field = m.name.partition(".")
                samples.setdefault(key, {})[field] = t.extractfile(m).read()
    return samples


def _dense_folder(data: Path, task: str) -> dict:
    """A tiny folder of ``task``'s layout; returns {key: {field: bytes}} of what it holds."""
    expect = {}
    if task == "depth":                   # 7-Scenes' naming; 5 pairs: 4 train, 1 val by range
        data.mkdir()
        for i in range(5):
            _jpg(data / f"frame-{i:06d}.color.jpg", i * 40)
            _png16(data / f"frame-{i:06d}.depth.png", 1000 + 7 * i)
            expect[f"frame-{i:06d}"] = {
                "jpg": (data / f"frame-{i:06d}.color.jpg").read_bytes(),
                "depth.png": (data / f"frame-{i:06d}.depth.png").read_bytes(),
                "idx": str(i if i < 4 else 0).encode()}
        return expect
    other = "masks" if task == "segmentation" else "labels"
    if task == "segmentation":
        (data / "classes.txt").parent.mkdir(parents=True)
        (data / "classes.txt").write_text("bg\ncat\n")
    else:
        data.mkdir(parents=True)
        (data / "config.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    for split, n in (("train", 5), ("val", 2)):
        (data / "images" / split).mkdir(parents=True)
        (data / other / split).mkdir(parents=True)
        for i in range(n):
            name = f"{split}{i}"
            _jpg(data / "images" / split / f"{name}.jpg", i * 40)
            fields = {"jpg": (data / "images" / split / f"{name}.jpg").read_bytes(),
                      "idx": str(i).encode()}
            if task == "segmentation":
                _png16(data / other / split / f"{name}.png", i % 2, "uint8")
                fields["mask.png"] = (data / other / split / f"{name}.png").read_bytes()
            elif i != 3:                         # train3: a background image (no label file)
                (data / other / split / f"{name}.txt").write_text(
                    f"{i % 2} 0.5 0.5 0.2 0.3\n1 0.25 0.5 0.1 0.1\n")
                fields["txt"] = (data / other / split / f"{name}.txt").read_bytes()
            expect[name] = fields
    return expect


def _folder_items(data: Path, task: str) -> dict:
    """{key: (image, target)} of the folder as the task's own dataset reads it."""
    from mobilenets.tasks.depth.data import DepthPairs, split_pairs
    from mobilenets.tasks.detection.data import YoloDetection
    from mobilenets.tasks.segmentation.data import MaskPairs, find_split
    if task == "segmentation":
        sets = [MaskPairs(find_split(data, s)) for s in ("train", "val")]
        keys = [[p[0].stem for p in d.pairs] for d in sets]
    elif task == "detection":
        sets = [YoloDetection(data, s) for s in ("train", "val")]
        keys = [[p.stem for p in d.images] for d in sets]
    else:
        sets = [DepthPairs(p) for p in split_pairs(data)[:2]]
        keys = [[p[0].stem.removesuffix(".color") for p in d.pairs] for d in sets]
    return {k: d[i][0] for d, ks in zip(sets, keys) for i, k in enumerate(ks)}


@pytest.mark.parametrize("task", ["segmentation", "detection", "depth"])
def test_dense_round_trip(tmp_path, task):
    """Each dense layout (found from the folder) goes into shards with each sample's files
    byte-equal under one key; read back through the task's decoder, every sample equals what
    the task's folder dataset gives (image, mask / boxes and labels / metres)."""
    from functools import partial
    from mobilenets.tasks import depth, detection, segmentation
    from mobilenets.tasks.shards import detect_task, write_task_shards
    data = tmp_path / "data"
    expect = _dense_folder(data, task)
    assert detect_task(data) == task
    index = write_task_shards(data, tmp_path / "out", samples_per_shard=2, progress=False)
    assert index["task"] == task
    assert index["classes"] == {"segmentation": ["bg", "cat"], "detection": ["cat", "dog"],
                                "depth": []}[task]
    assert [s["count"] for s in index["splits"]["train"]["shards"]] == [2, 2, 1] if \
        task != "depth" else [2, 2]
    assert _read_back(tmp_path / "out") == expect
    shards = open_shards(tmp_path / "out", task=task)
    if task == "segmentation":
        info = shards.index["segmentation"]
        decode = partial(segmentation.data.decode_shard, lut=torch.tensor(info["lut"]),
                         layout=info["layout"], num_classes=2)
    elif task == "detection":
        decode = partial(detection.data.decode_shard, num_classes=2)
    else:
        decode = depth.data.decode_shard
    folder = _folder_items(data, task)
    read = [item for split in (shards.train, shards.val)
            for item in ValShards(split, 0, decode=decode)]
    assert len(read) == len(folder)
    for (image, target), _ in read:
        key = next(k for k, (img, _) in folder.items() if torch.equal(img, image))
        want = folder.pop(key)[1]
        if task == "detection":
            assert torch.equal(target["boxes"], want["boxes"])
            assert torch.equal(target["labels"], want["labels"])
            assert target["image_id"] == want["image_id"]
        else:
            assert torch.equal(target, want)
    with pytest.raises(DataError, match=f"holds {task} data"):
        open_shards(tmp_path / "out")
    with pytest.raises(FileExistsError):
        write_task_shards(data, tmp_path / "out", progress=False)


def test_shard_command_takes_task_options(tmp_path, capsys):
    """`mobilenets shard --task-option` fixes a depth split by range; a wrong option is named."""
    data = tmp_path / "data"
    _dense_folder(data, "depth")
    assert main(["shard", str(data), "--out", str(tmp_path / "out"), "--no-progress",
                 "--task-option", "train_range=[0,3]", "--task-option",
                 "val_range=[3,5]"]) == 0
    index = open_shards(tmp_path / "out", task="depth")
    assert [sum(c for _, c in part) for part in (index.train, index.val)] == [3, 2]
    assert "depth data" in capsys.readouterr().out
    assert main(["shard", str(data), "--out", str(tmp_path / "o2"), "--task", "segmentation",
                 "--task-option", "train_range=[0,3]"]) != 0
    assert "train_range: not a segmentation shard option" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def _same(a, b) -> bool:
    """Equal results (sums in another order: floats to 1e-6), NaN equal to NaN (a metric
    with nothing to score)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-6, abs=1e-9) or (a != a and b != b)
    return a == b


@pytest.mark.parametrize("task", ["classification", "segmentation", "detection", "depth"])
def test_eval_on_shards_equals_eval_on_the_folders_val_split(tmp_path, task, capsys):
    """`mobilenets.evaluate` (and `eval --data`) on shards scores their val shards: every
    metric equals the evaluation of the folder's val split they were written from."""
    import mobilenets
    from mobilenets.tasks.shards import write_task_shards
    torch.manual_seed(0)
    data = tmp_path / "data"
    if task == "classification":
        _subset(data, classes=3, n_train=4, n_val=3)
        model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=3, resolution=32)
    else:
        _dense_folder(data, task)
        name, options = {"segmentation": ("lraspp_mobilenet_v3_small_100", {"num_classes": 2}),
                         "detection": ("ssdlite_mobilenet_v3_small_100", {"num_classes": 3}),
                         "depth": ("fastdepth_mobilenet_v1_025", {})}[task]
        model = mobilenets.create_model(name, resolution=64 if task == "detection" else 32,
                                        **options)
    write_task_shards(data, tmp_path / "shards", samples_per_shard=2, progress=False)
    folder = data
    if task == "depth":          # the shards' val pair (the last by the range split) alone
        folder = tmp_path / "val-pairs"
        folder.mkdir()
        for f in data.glob("frame-000004.*"):
            shutil.copy(f, folder / f.name)
    model.eval()
    want = mobilenets.evaluate(model, folder, batch_size=2)
    got = mobilenets.evaluate(model, tmp_path / "shards", batch_size=2)
    assert _same(got, want)
    count = want.get("count", want.get("images"))
    assert count == {"classification": 9, "depth": 1}.get(task, 2)
    if task == "classification":                          # the command says the same
        import json
        mobilenets.save(model, tmp_path / "saved")
        capsys.readouterr()
        assert main(["eval", str(tmp_path / "saved"), "--data", str(tmp_path / "shards"),
                     "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (printed["top1"], printed["images"]) == (want["top1"], 9)


def test_eval_on_a_pattern_reads_the_named_val_shards_and_refuses_training_shards(tmp_path):
    """A pattern (or one .tar) of val shards is scored as named; one of training shards is
    refused (it scored the whole val split whatever was named); a segmentation split other
    than val is refused for shards."""
    import mobilenets
    from mobilenets.tasks.segmentation import evaluate as segmentation_evaluate
    from mobilenets.tasks.shards import write_task_shards
    _subset(tmp_path / "data", classes=3, n_train=4, n_val=3)
    index = write_shards(tmp_path / "data", tmp_path / "shards", samples_per_shard=2,
                         progress=False)
    val = [s["name"] for s in index["splits"]["val"]["shards"]]
    assert len(val) == 5
    model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=3, resolution=32)
    first = val[0].removesuffix(".tar")
    pattern = str(tmp_path / "shards" / f"{first[:-4]}{{{first[-4:]}..{int(first[-4:]) + 1:04d}}}.tar")
    assert mobilenets.evaluate(model, pattern)["count"] == 4
    assert mobilenets.evaluate(model, tmp_path / "shards" / val[0])["count"] == 2
    assert mobilenets.evaluate(model, f"pipe:cat {tmp_path / 'shards' / val[0]}")["count"] == 2
    train = index["splits"]["train"]["shards"][0]["name"]
    with pytest.raises(DataError, match="names training shards"):
        mobilenets.evaluate(model, tmp_path / "shards" / train)
    _dense_folder(tmp_path / "seg", "segmentation")
    write_task_shards(tmp_path / "seg", tmp_path / "seg-shards", progress=False)
    seg = mobilenets.create_model("lraspp_mobilenet_v3_small_100", num_classes=2, resolution=32)
    with pytest.raises(ValueError, match="leave split out"):
        segmentation_evaluate(seg, tmp_path / "seg-shards", split="train")


def test_eval_on_shards_of_another_task_or_without_val_is_refused(tmp_path):
    import mobilenets
    from mobilenets.tasks.shards import write_task_shards
    _dense_folder(tmp_path / "data", "segmentation")
    write_task_shards(tmp_path / "data", tmp_path / "shards", progress=False)
    model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=2, resolution=32)
    with pytest.raises(DataError, match="holds segmentation data, not classification"):
        mobilenets.evaluate(model, tmp_path / "shards")
    train_only = tmp_path / "train-only"
    _subset(train_only, classes=2, n_train=2, n_val=0)
    shutil.rmtree(train_only / "val")
    write_shards(train_only, tmp_path / "train-shards", progress=False)
    with pytest.raises(DataError, match="no val split to evaluate on"):
        mobilenets.evaluate(model, tmp_path / "train-shards")
