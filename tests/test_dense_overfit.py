"""The dense heads learn real images: LR-ASPP on MobileNetV3-Large and FastDepth on
MobileNetV1 1.0, each trained on 4 real images (COCO128, 7-Scenes) and scored in eval mode
(BatchNorm running statistics, momentum 0.1) on the same 4 images with the tasks' loss and
metrics. Skipped when ../shared/datasets is absent.

Each run is a full-batch loop of AdamW under a one-cycle schedule: the learning rate warms up,
then anneals towards zero, so the weights settle and the running statistics (which trail the
batch statistics by ~10 steps at momentum 0.1) catch up before scoring. FastDepth needs a
high peak rate: its output layer is the reference's 1x1 conv -> BatchNorm -> ReLU, so the
depth's scale comes from that BatchNorm's bias, which AdamW moves by about one learning rate
per step from 0 towards the scene's depth in metres (~2.5 m here); at a peak of 2e-2 over
150 steps (MobileNetV1 0.5) it stayed at AbsRel 0.22, at 6e-2 it reached 0.04."""

import tarfile

import pytest
import torch

from conftest import SHARED_DATASETS
from mobilenets import create_model
from mobilenets.tasks.depth import (DepthMetrics, depth_eval_transform, masked_l1,
                                    mean_depth_baseline, seven_scenes, valid_mask)
from mobilenets.tasks.segmentation import (MaskPairs, confusion_matrix, find_split, scores,
                                           segmentation_eval_transform, segmentation_loss)

COCO = SHARED_DATASETS / "coco128-lightly.tar.gz"
SCENES = SHARED_DATASETS / "7scenes-redkitchen-depth.tar.gz"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _overfit(model, x, loss_fn, steps, lr):
    """Full-batch AdamW (no weight decay) with a one-cycle schedule; the model is left in
    eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        loss = loss_fn(model(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def _batch(dataset, transform, n=4):
    items = [transform(*dataset[i][0]) for i in range(n)]
    return (torch.stack([image for image, _ in items]),
            torch.stack([torch.as_tensor(target) for _, target in items]))


def test_lraspp_overfits_four_coco128_images_in_eval_mode(tmp_path):
    if not COCO.is_file():
        pytest.skip("../shared/datasets is absent")
    with tarfile.open(COCO) as tar:
        tar.extractall(tmp_path, filter="data", members=[m for m in tar if m.name.startswith(
            ("coco128-lightly/images/", "coco128-lightly/semantic_segmentation/"))])
    files = find_split(tmp_path / "coco128-lightly", "train")
    files.pairs = files.pairs[:4]
    classes = len(files.classes)
    model = create_model("lraspp_mobilenet_v3_large", num_classes=classes)
    assert all(m.momentum == 0.1 for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    x, y = _batch(MaskPairs(files), segmentation_eval_transform(128, model.preprocess))
    y = y[:, 0].long()
    present = [c for c in y.unique().tolist() if c != 255]
    assert len(present) >= 5                       # several classes to tell apart

    def miou(logits):
        return scores(confusion_matrix(logits.argmax(1), y, classes))["miou"]

    # the majority class everywhere: what a model that learnt nothing scores
    majority = torch.full_like(y, max(present, key=lambda c: (y == c).sum()))
    assert scores(confusion_matrix(majority, y, classes))["miou"] < 0.2

    _overfit(model, x, lambda out: segmentation_loss(out, y), steps=80, lr=1e-2)
    with torch.no_grad():
        assert miou(model(x)["out"]) >= 0.8


def test_fastdepth_overfits_four_7scenes_frames_in_eval_mode(tmp_path):
    if not SCENES.is_file():
        pytest.skip("../shared/datasets is absent")
    names = [f"7scenes-redkitchen/frame-{n:06d}.{s}" for n in (0, 2, 4, 6)
             for s in ("color.jpg", "depth.png")]
    with tarfile.open(SCENES) as tar:
        tar.extractall(tmp_path, filter="data", members=[m for m in tar if m.name in names])
    frames, _ = seven_scenes(tmp_path / "7scenes-redkitchen", train_range=(0, 4),
                             val_range=(0, 4))
    assert len(frames) == 4
    model = create_model("fastdepth_mobilenet_v1_100")
    assert all(m.momentum == 0.1 for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    x, depth = _batch(frames, depth_eval_transform(64, model.preprocess))
    depth = depth.float()
    mask = valid_mask(depth, 1e-3, 10.0)
    # the mean training depth everywhere scores far above the threshold
    assert mean_depth_baseline(frames, frames, 64)["abs_rel"] > 0.2

    _overfit(model, x, lambda pred: masked_l1(pred, depth, mask), steps=120, lr=6e-2)
    meter = DepthMetrics("metric", 1e-3, 10.0)
    with torch.no_grad():
        meter.update(model(x), depth)
    assert meter.result()["abs_rel"] <= 0.10
