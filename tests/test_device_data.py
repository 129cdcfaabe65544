"""--device-data: images decoded once and augmented whole batches at a time on the device
(mobilenets.data.device). The same code runs on a GPU; here it runs on the CPU."""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from mobilenets import train
from mobilenets.data import ImageFolderDataset, eval_transform
from mobilenets.data.device import (DeviceEvalBatches, DeviceImages, DeviceTrainBatches,
                                    crop_boxes, erase, resized_crops)
from mobilenets.data.transforms import at_resolution
from mobilenets.models import create_model
from mobilenets.training import engine, make_config
from mobilenets.training.sampling import EpochSampler

from test_train import make_folder


def test_resized_crop_and_flip_match_torchvision():
    img = (torch.rand(2, 3, 40, 60, generator=torch.Generator().manual_seed(0)) * 255).round()
    boxes = torch.tensor([[5.0, 10.0, 20.0, 30.0], [0.0, 0.0, 40.0, 60.0]])
    out = resized_crops(img.to(torch.uint8), boxes, 24, flip=torch.tensor([False, True]))
    want0 = TF.resized_crop(img[0], 5, 10, 20, 30, [24, 24], antialias=False)
    want1 = TF.resize(img[1], [24, 24], antialias=False).flip(-1)
    # inside the box the same bilinear samples; at its edge torchvision clamps to the crop,
    # grid sampling reads the image's pixels just outside it
    assert (out[0] - want0)[:, 1:-1, 1:-1].abs().max() < 1e-2
    assert (out[1] - want1).abs().max() < 1e-2


def test_crop_boxes_follow_random_resized_crop():
    sizes = torch.tensor([[160, 213]] * 4000 + [[10, 200]] * 10)   # the last: too wide
    boxes = crop_boxes(sizes, scale=(0.35, 1.0), generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    area = (h * w / (sizes[:, 0] * sizes[:, 1]))[:4000]
    assert area.min() > 0.34 and area.max() <= 1.0 and 0.55 < area.mean() < 0.75
    ratio = (w / h)[:4000]
    assert ratio.min() > 0.74 and ratio.max() < 1.35
    # no draw fits a 1:20 image: torchvision's fallback, the centre crop at ratio 4:3
    assert torch.equal(boxes[-1], torch.tensor([0.0, 93.0, 10.0, 13.0]))


def test_random_erasing_is_drawn_per_image():
    x = torch.ones(2000, 3, 32, 32)
    out = erase(x, 0.5, torch.Generator().manual_seed(0))
    erased = (out == 0).float().mean((1, 2, 3))
    assert 0.45 < (erased > 0).float().mean() < 0.55          # about half the images
    share = erased[erased > 0]
    assert share.min() >= 0.015 and share.max() <= 0.34      # 2-33% of the area
    assert share.std() > 0.03                                 # not one box for the batch
    img = out[erased.argmax()]                                # the erased part is a box
    rows, cols = (img[0] == 0).any(1), (img[0] == 0).any(0)
    assert (img[0] == 0).sum() == rows.sum() * cols.sum()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), n_train=12, n_val=5, size=48)


def test_eval_batches_are_exactly_the_eval_transform(data):
    pre = at_resolution(create_model("mobilenet_v2_035").preprocess, 32)
    folder = ImageFolderDataset(data / "val")
    stored = DeviceImages(folder, (32, 32), "cpu", transform=eval_transform(pre, False))
    got = torch.cat([x for x, _, _ in DeviceEvalBatches(stored, 4, pre["mean"], pre["std"])])
    transform = eval_transform(pre)
    want = torch.stack([transform(folder[i][0]) for i in range(len(folder))])
    assert torch.allclose(got, want, atol=1e-5)
    shard = DeviceEvalBatches(stored, 4, pre["mean"], pre["std"], rank=1, world=2)
    assert sum(len(y) for _, y, _ in shard) == len(folder) // 2


def test_train_batches_follow_the_sampler_and_repeat_exactly(data):
    pre = create_model("mobilenet_v2_035").preprocess
    images = DeviceImages(ImageFolderDataset(data / "train"), (40, 53), "cpu")
    assert images.images.shape == (36, 3, 40, 53) and images.sizes.tolist()[0] == [40, 40]
    sampler = EpochSampler(len(images), seed=1)
    batches = DeviceTrainBatches(images, sampler, 8, 32, pre["mean"], pre["std"], seed=1,
                                 random_erasing=0.5)
    sampler.set_epoch(2)
    first = list(batches)
    assert len(first) == 4 and first[0][0].shape == (8, 3, 32, 32)
    order = [i for _, i in sampler]
    assert torch.equal(torch.cat([y for _, y, _ in first]), images.labels[order[:32]])
    sampler.set_epoch(2, start=16)                       # resumed at step 2 of the epoch
    assert torch.equal(next(iter(batches))[0], first[2][0])
    sampler.set_epoch(3)
    assert not torch.equal(next(iter(batches))[0], first[0][0])


def test_training_with_device_data_resumes_exactly(data, tmp_path, monkeypatch):
    common = dict(data=str(data), model="mobilenet_v3_small_075", resolution=32, batch_size=6,
                  lr=0.05, seed=3, device_data=True, random_erasing=0.25, mixup=0.2,
                  label_smoothing=0.1)
    full = train(make_config(out=str(tmp_path / "full"), epochs=2, **common), progress=False)
    save = engine._Run.checkpoint

    def stop_after_first_epoch(run, epoch, step):       # the run "dies" after epoch 1
        save(run, epoch, step)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine._Run, "checkpoint", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(make_config(out=str(tmp_path / "cut"), epochs=2, **common), progress=False)
    monkeypatch.undo()
    resumed = train(make_config(out=str(tmp_path / "cut"), epochs=2, **common),
                    resume=tmp_path / "cut" / "last.pt", progress=False)
    assert math.isfinite(full["train_loss"]) and full["top1"] == resumed["top1"]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_device_data_refuses_per_image_augmentations(data, tmp_path):
    cfg = make_config(data=str(data), out=str(tmp_path / "r"), epochs=1, resolution=32,
                      batch_size=6, device_data=True, color_jitter=0.2)
    with pytest.raises(ValueError, match="--color-jitter cannot run with --device-data"):
        train(cfg, progress=False)
