"""The detection task on the training engine: exact resume after an interruption, and a DDP
run of two processes (gloo, CPU) whose gathered validation mAP is the whole set's.

Generated data (no shared data set): 64 x 64 images with coloured rectangles and their YOLO
labels, three classes (a contiguous label space: 4-class models)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from mobilenets.data.image_io import write_png

import mobilenets
from mobilenets.tasks.detection import DetectionTask, detection_config
from mobilenets.tasks.detection import evaluate as evaluate_detector
from mobilenets.training import fit

NAMES = ["red", "green", "blue"]
# the smallest real detector: YOLOv4 on MobileNetV3-Small with a quarter-width neck at 64 px;
# the "ssd" augmentation (zoom out, IoU crop, flip, photometric) draws from the RNG per sample
RUN = dict(model="yolov4_mobilenet_v3_small_100", resolution=64, batch_size=2, epochs=2,
           max_steps_per_epoch=2, lr=0.01, optimizer="adamw", warmup_epochs=0.5, workers=0,
           seed=3, tensorboard=False)
OPTIONS = {"augment": "ssd", "model_options": {"neck_width": 0.25, "detections_per_img": 20}}
TIMING = ("images_per_s", "epoch_time_s", "train_loss")


def make_yolo_folder(root, n_train=6, n_val=2, size=64):
    """``root`` in the YOLO layout: train/val images with 1-2 filled rectangles each (class k
    in colour channel k) and their normalised ``class cx cy w h`` labels."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            image = (torch.rand(3, size, size, generator=g) * 60).to(torch.uint8)
            lines = []
            for _ in range(1 + i % 2):
                cls = int(torch.randint(3, (1,), generator=g))
                w, h = (int(v) for v in torch.randint(16, 40, (2,), generator=g))
                x0 = int(torch.randint(0, size - w, (1,), generator=g))
                y0 = int(torch.randint(0, size - h, (1,), generator=g))
                image[cls, y0:y0 + h, x0:x0 + w] = 230
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} "
                             f"{w / size:.6f} {h / size:.6f}")
            write_png(image, str(root / "images" / split / f"{i:03d}.png"))
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    (root / "config.yaml").write_text("train: images/train\nval: images/val\nnames:\n"
                                      + "".join(f"  {k}: {n}\n" for k, n in enumerate(NAMES)))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_yolo_folder(tmp_path_factory.mktemp("yolo"))


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core machine two threads spin against each other
    and a 64 px step takes seconds instead of a tenth of one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Stopped(Exception):
    pass


class StopAtLoss(DetectionTask):
    """Raises at the n-th training loss: a run killed there."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def loss(self, outputs, target):
        self.n -= 1
        if self.n == 0:
            raise Stopped
        return super().loss(outputs, target)


def _config(data, out, **extra):
    return detection_config(detection=OPTIONS, data=str(data), out=str(out), **RUN, **extra)


def _lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_detection_run_interrupted_and_resumed_gives_the_uninterrupted_weights(data, tmp_path,
                                                                              one_thread):
    fit(DetectionTask(), _config(data, tmp_path / "a"), progress=False)
    # killed at the first step of epoch 2 (last.pt: the end of epoch 1), resumed; killed
    # again after the first step of epoch 2 (a step checkpoint), resumed to the end
    cfg = _config(data, tmp_path / "b", checkpoint_every_steps=1)
    with pytest.raises(Stopped):
        fit(StopAtLoss(3), cfg, progress=False)
    after_one = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (after_one["epoch"], after_one["step"]) == (1, 0)
    with pytest.raises(Stopped):
        fit(StopAtLoss(2), cfg, resume=tmp_path / "b" / "last.pt", progress=False)
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 1)
    fit(DetectionTask(), cfg, resume=tmp_path / "b" / "last.pt", progress=False)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (2, 0)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # epoch 2 moved the weights (the comparison has teeth)
    assert any(not torch.equal(v, after_one["model"][k]) for k, v in b["model"].items()
               if v.is_floating_point())
    # the metrics are the straight run's (the resumed epoch's train_loss averages the steps
    # after the resume only)
    lines, resumed = _lines(tmp_path / "a"), _lines(tmp_path / "b")
    assert [r["epoch"] for r in resumed] == [1, 2]
    assert resumed == [{**r, **{k: resumed[i][k] for k in TIMING}} for i, r in enumerate(lines)]
    for r in lines:
        assert 0 <= r["map"] <= r["map50"] <= 1 and r["val_loss"] > 0


@pytest.mark.slow
def test_two_processes_train_and_score_the_whole_validation_set(data, tmp_path, one_thread):
    """torchrun, 2 processes on CPU (gloo): each trains on its share of every global batch and
    scores its share of the 2 validation images (a batch of one each); the gathered mAP and
    loss are those of the saved model scored on both in one process, one image per batch
    (YOLO's loss is a mean over its batch, so only the same batches give the same loss).
    SyncBN: without it each process keeps the running BatchNorm statistics of its own last
    half-batch, and rank 1 scores with statistics other than the saved model's (val loss off
    by about 1e-4 here)."""
    out = tmp_path / "two"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in dict(RUN, epochs=1).items()
            if k != "tensorboard"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "mobilenets", "train", "--data", str(data), "--out", str(out),
           "--no-progress", "--no-tensorboard", "--sync-bn", "--task-option", "augment=flip",
           "--task-option", "model_options=" + json.dumps(OPTIONS["model_options"])] + args
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["world"] == 2 and (ckpt["epoch"], ckpt["step"]) == (1, 0)
    rows = _lines(out)
    assert [r["epoch"] for r in rows] == [1]
    best = mobilenets.load(out / "best")
    assert best.config["class_names"] == ["__background__", *NAMES]
    whole = evaluate_detector(best, data, batch_size=1)
    assert whole["count"] == 2
    assert rows[0]["map"] == pytest.approx(whole["map"], abs=1e-6)
    assert rows[0]["map50"] == pytest.approx(whole["map50"], abs=1e-6)
    assert rows[0]["val_loss"] == pytest.approx(whole["loss"], rel=1e-4)
