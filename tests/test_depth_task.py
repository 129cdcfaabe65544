"""The depth task: metrics and losses against values computed by hand (python loops over tiny
arrays), the pair loaders (7-Scenes on the real archive, skipped when ../shared is absent),
transforms that move image and depth together, and short runs on the training engine."""

import json
import math
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import tv_tensors
from mobilenets.data.image_io import decode_unchanged

from conftest import SHARED_DATASETS
from mobilenets.data import DataError
from mobilenets.models.heads import HEADS, HeadEntry, register_head
from mobilenets.tasks import TASKS
from mobilenets.tasks.depth import (METRICS, DepthMetrics, DepthPairs, DepthTask,
                                    align_scale_shift, depth_eval_transform,
                                    depth_train_transform, find_pairs, masked_l1,
                                    mean_depth_baseline, scored_depth, seven_scenes,
                                    silog_loss, split_pairs, ssi_loss, train, valid_mask)
from mobilenets.training.sampling import SeededView

ARCHIVE = SHARED_DATASETS / "7scenes-redkitchen-depth.tar.gz"


@pytest.fixture(autouse=True)
def _one_thread():
    """torch on one thread: these tiny tensors ran several times slower on two threads of
    2 cores shared with other jobs (as in test_docs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- hand computations (plain python over lists) -------------------------------------------

def hand_metrics(pred, gt, lo=1e-3, hi=10.0):
    """Per-image metrics by the textbook definitions, averaged over images with a valid
    pixel; predictions clamped to [lo, hi], ground truth valid in (lo, hi]."""
    per_image = []
    for p_img, g_img in zip(pred, gt):
        pairs = [(min(max(p, lo), hi), g) for p, g in zip(p_img, g_img) if lo < g <= hi]
        if not pairs:
            continue
        n = len(pairs)
        e = [math.log(p) - math.log(g) for p, g in pairs]
        per_image.append({
            "abs_rel": sum(abs(p - g) / g for p, g in pairs) / n,
            "sq_rel": sum((p - g) ** 2 / g for p, g in pairs) / n,
            "rmse": math.sqrt(sum((p - g) ** 2 for p, g in pairs) / n),
            "rmse_log": math.sqrt(sum(x * x for x in e) / n),
            "log10": sum(abs(math.log10(p) - math.log10(g)) for p, g in pairs) / n,
            **{f"delta{k}": sum(max(p / g, g / p) < 1.25 ** k for p, g in pairs) / n
               for k in (1, 2, 3)},
            "si_rmse": math.sqrt(sum(x * x for x in e) / n - (sum(e) / n) ** 2),
        })
    return {k: sum(m[k] for m in per_image) / len(per_image) for k in METRICS}


def hand_align(pred, target, valid):
    """Least squares s, t of s * pred + t ~ target by the normal equations."""
    pts = [(p, y) for p, y, v in zip(pred, target, valid) if v]
    n = len(pts)
    sp, sy = sum(p for p, _ in pts), sum(y for _, y in pts)
    spp, spy = sum(p * p for p, _ in pts), sum(p * y for p, y in pts)
    det = n * spp - sp * sp
    return (n * spy - sp * sy) / det, (spp * sy - sp * spy) / det


def as_map(rows):
    return torch.tensor(rows, dtype=torch.float64)[:, None]       # B x 1 x H x W


# two 2x4 images: invalid codes (0), a pixel beyond max_depth (12 m), a prediction of 0
# (clamped to min_depth) and one above max_depth (clamped to 10 m)
GT = [[[1.0, 2.0, 0.0, 4.0], [2.5, 12.0, 3.0, 1.5]],
      [[0.9, 0.0, 5.0, 2.2], [3.3, 1.1, 0.0, 7.5]]]
PRED = [[[1.2, 1.5, 3.0, 4.4], [2.0, 9.0, 0.0, 1.6]],
        [[1.0, 0.7, 4.0, 11.0], [3.0, 1.3, 2.0, 6.0]]]


def flat(rows):
    return [[v for row in img for v in row] for img in rows]


def test_metrics_match_hand_computed_values():
    meter = DepthMetrics("metric", 1e-3, 10.0)
    meter.update(as_map(PRED), as_map(GT))
    got = meter.result()
    want = hand_metrics(flat(PRED), flat(GT))
    for k in METRICS:
        assert got[k] == pytest.approx(want[k], rel=1e-12), k
    assert got["images"] == 2 and got["skipped_images"] == 0
    # one image at a time, and an image without a valid pixel: the sums add up (as dist.sum
    # adds processes' sums) and the empty image is skipped, not scored
    a, b = DepthMetrics(), DepthMetrics()
    a.update(as_map(PRED[:1]), as_map(GT[:1]))
    b.update(as_map(PRED[1:] + [[[1.0] * 4] * 2]), as_map(GT[1:] + [[[0.0] * 4] * 2]))
    total = a.result(a.sums + b.sums)
    assert total["skipped_images"] == 1 and total["images"] == 2
    for k in METRICS:
        assert total[k] == pytest.approx(want[k], rel=1e-12), k
    # si-RMSE ignores a global scale of an image; AbsRel does not
    scaled = DepthMetrics()
    scaled.update(as_map(GT[:1]) * 1.3, as_map(GT[:1]))
    assert scaled.result()["si_rmse"] == pytest.approx(0, abs=1e-7)
    assert scaled.result()["abs_rel"] == pytest.approx(0.3)


def test_relative_inverse_depth_is_aligned_before_scoring():
    gt = as_map(GT)
    mask = valid_mask(gt, 1e-3, 10.0)
    # an exact affine function of the true inverse depth (any values off the mask) scores
    # perfectly after alignment; scored raw it does not
    affine = torch.where(mask, 3.0 / gt.clamp(min=1e-3) - 0.2, 7.0)
    meter = DepthMetrics("inverse_relative")
    meter.update(affine, gt)
    got = meter.result()
    assert got["abs_rel"] < 1e-12 and got["rmse"] < 1e-12 and got["si_rmse"] < 1e-6
    assert got["delta1"] == 1.0
    assert "aligned" in meter.scoring
    raw = DepthMetrics("metric")
    raw.update(affine, gt)
    assert raw.result()["abs_rel"] > 0.5
    # any other prediction: the normal equations' s, t by hand, then the clamped inverse
    pred = torch.tensor(flat(PRED), dtype=torch.float64).view(2, 1, 2, 4)
    s, t = align_scale_shift(pred, torch.where(mask, 1 / gt.clamp(min=1e-3), 0.0), mask)
    scored = scored_depth(pred, gt, mask, "inverse_relative", 1e-3, 10.0)
    hand_scored = []
    for i, (p_img, g_img) in enumerate(zip(flat(PRED), flat(GT))):
        valid = [1e-3 < g <= 10 for g in g_img]
        hs, ht = hand_align(p_img, [1 / g if v else 0 for g, v in zip(g_img, valid)], valid)
        assert s[i].item() == pytest.approx(hs, rel=1e-10)
        assert t[i].item() == pytest.approx(ht, rel=1e-10)
        hand_scored.append([1 / min(max(hs * p + ht, 0.1), 1000.0) for p in p_img])
    for got, want in zip(scored.flatten(1).tolist(), hand_scored):
        assert got == pytest.approx(want, rel=1e-12)
    meter = DepthMetrics("inverse_relative")
    meter.update(pred, gt)
    want = hand_metrics(hand_scored, flat(GT))
    for k in METRICS:
        assert meter.result()[k] == pytest.approx(want[k], rel=1e-10), k
    # a constant prediction: scale 0, shift = the mean target
    const = torch.full_like(gt, 2.0)
    s, t = align_scale_shift(const, gt, mask)
    assert s.tolist() == [0.0, 0.0]
    assert t[0].item() == pytest.approx(sum(g for g in flat(GT)[0] if 1e-3 < g <= 10) / 6)


def hand_ssi(pred, gt, alpha=0.5, scales=4):
    """MiDaS's loss by loops: alignment by the normal equations in inverse depth, squared
    residuals / 2M, gradient matching on the residual at 4 subsampled scales / M_k."""
    total_sq = total_m = 0.0
    residuals, valids = [], []
    for p_img, g_img in zip(pred, gt):
        valid = [[g > 1e-3 for g in row] for row in g_img]
        disp = [[1 / g if g > 1e-3 else 0 for g in row] for row in g_img]
        s, t = hand_align([p for row in p_img for p in row], [d for row in disp for d in row],
                          [v for row in valid for v in row])
        r = [[s * p + t - d for p, d in zip(prow, drow)] for prow, drow in zip(p_img, disp)]
        total_sq += sum(r[i][j] ** 2 for i in range(len(r)) for j in range(len(r[0]))
                        if valid[i][j])
        total_m += sum(v for row in valid for v in row)
        residuals.append(r)
        valids.append(valid)
    loss = total_sq / (2 * total_m)
    for k in range(scales):
        step = 2 ** k
        grad = m_k = 0.0
        for r, valid in zip(residuals, valids):
            rows, cols = range(0, len(r), step), range(0, len(r[0]), step)
            rs = [[r[i][j] if valid[i][j] else 0.0 for j in cols] for i in rows]
            vs = [[valid[i][j] for j in cols] for i in rows]
            m_k += sum(v for row in vs for v in row)
            for i in range(len(rs)):
                for j in range(len(rs[0])):
                    if j + 1 < len(rs[0]) and vs[i][j] and vs[i][j + 1]:
                        grad += abs(rs[i][j + 1] - rs[i][j])
                    if i + 1 < len(rs) and vs[i][j] and vs[i + 1][j]:
                        grad += abs(rs[i + 1][j] - rs[i][j])
        if m_k:
            loss += alpha * grad / m_k
    return loss


def test_losses_match_hand_computed_values():
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(2, 1, 5, 6, generator=g, dtype=torch.float64) * 3 + 0.5)
    gt[0, 0, 1, 2] = gt[1, 0, 4, 5] = gt[1, 0, 0, 0] = 0.0                   # no depth
    pred = torch.rand(2, 1, 5, 6, generator=g, dtype=torch.float64) * 3 + 0.2
    pred[0, 0, 3, 3] = 0.0                                                   # clamped in SILog
    mask = valid_mask(gt)
    P, G = pred[:, 0].tolist(), gt[:, 0].tolist()
    pairs = [(p, q) for pi, gi in zip(P, G) for pr, gr in zip(pi, gi) for p, q in zip(pr, gr)
             if q > 1e-3]
    assert masked_l1(pred, gt, mask).item() == pytest.approx(
        sum(abs(p - q) for p, q in pairs) / len(pairs), rel=1e-12)
    for lam in (0.5, 0.85):
        per_image = []
        for pi, gi in zip(P, G):
            e = [math.log(max(p, 1e-3)) - math.log(q) for pr, gr in zip(pi, gi)
                 for p, q in zip(pr, gr) if q > 1e-3]
            n = len(e)
            per_image.append(sum(x * x for x in e) / n - lam * sum(e) ** 2 / n ** 2)
        assert silog_loss(pred, gt, mask, lam).item() == pytest.approx(
            sum(per_image) / 2, rel=1e-12)
    assert ssi_loss(pred, gt, mask).item() == pytest.approx(hand_ssi(P, G), rel=1e-10)
    assert ssi_loss(pred, gt, mask, alpha=0).item() == pytest.approx(hand_ssi(P, G, 0),
                                                                     rel=1e-10)
    # scale- and shift-invariant: an affine change of the prediction changes nothing
    assert ssi_loss(2.5 * pred + 1.0, gt, mask).item() == pytest.approx(
        ssi_loss(pred, gt, mask).item(), rel=1e-9)
    # gradients reach the prediction; a batch without valid pixels gives 0, still backward
    x = pred.float().clone().requires_grad_()
    for loss in (masked_l1, silog_loss, ssi_loss):
        x.grad = None
        loss(x, gt.float(), mask).backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        x.grad = None
        empty = loss(x, torch.zeros_like(x), torch.zeros_like(mask))
        empty.backward()
        assert empty.item() == 0 and torch.isfinite(x.grad).all()


# ---- data ----------------------------------------------------------------------------------

def write_pair(folder, stem, rgb, depth_codes, layout="side"):
    """One pair: ``rgb`` H x W x 3 uint8, ``depth_codes`` H x W uint16, in either layout."""
    if layout == "side":
        image, depth = folder / f"{stem}.color.png", folder / f"{stem}.depth.png"
    else:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "depth").mkdir(parents=True, exist_ok=True)
        image, depth = folder / "images" / f"{stem}.png", folder / "depth" / f"{stem}.png"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(image)
    Image.fromarray(np.asarray(depth_codes, dtype=np.uint16)).save(depth)


def test_pair_folders_layouts_ranges_and_errors(tmp_path):
    codes = np.array([[0, 1500, 65535, 2500]], dtype=np.uint16)
    for i in range(5):
        write_pair(tmp_path / "flat", f"f{i:03d}", np.full((1, 4, 3), i), codes)
        write_pair(tmp_path / "split" / "train", f"a{i}", np.zeros((1, 4, 3)), codes, "dirs")
    write_pair(tmp_path / "split" / "val", "b0", np.zeros((1, 4, 3)), codes, "dirs")
    train, val, line = split_pairs(tmp_path / "flat")          # first 80% / last 20%
    assert [p[0].name for p in train] == [f"f{i:03d}.color.png" for i in range(4)]
    assert [p[0].name for p in val] == ["f004.color.png"] and "range" in line
    train, val, _ = split_pairs(tmp_path / "flat", train_range=(1, 3), val_range=(-1, None))
    assert [p[0].stem for p in train] == ["f001.color", "f002.color"]
    train, val, _ = split_pairs(tmp_path / "split")
    assert (len(train), len(val)) == (5, 1)
    (item, depth), stem = DepthPairs(val, scale=1000)[0]
    assert stem == "b0" and isinstance(depth, tv_tensors.Mask)
    assert depth.flatten().tolist() == pytest.approx([0, 1.5, 0, 2.5])    # 0, 65535 invalid
    (tmp_path / "flat" / "f001.depth.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\) .* no depth PNG .*f001"):
        find_pairs(tmp_path / "flat")
    with pytest.raises(DataError, match="selects no pairs"):
        split_pairs(tmp_path / "split", train_range=(7, 9))
    with pytest.raises(DataError, match="no image/depth pairs"):
        find_pairs(tmp_path)


def test_transforms_move_image_and_depth_together():
    # 4 x 4 blocks of 8 px, each its own grey level k and depth k / 10 m; one block invalid
    k = torch.arange(16).view(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1) * 9 + 10
    image = tv_tensors.Image(k.to(torch.uint8).expand(3, -1, -1).clone())
    depth = tv_tensors.Mask((k.float() / 10)[None])
    depth[:, :8, :8] = 0.0
    pre = {"mean": (0.0,) * 3, "std": (1.0,) * 3}
    transform = depth_train_transform(32, pre, scale=(1.0, 1.5), hflip=0.5)
    view = SeededView([((image, depth), "x")], transform, seed=1)
    flips = set()
    for epoch in range(8):
        (x, d), _ = view[(epoch, 0)]
        assert x.shape == (3, 32, 32) and d.shape == (1, 32, 32) and x.dtype == torch.float32
        grey, d = x[0] * 255, d[0]
        valid = d > 0
        assert (valid == torch.isin(d * 10 * 2, d.unique()[1:] * 10 * 2)).all()
        zoom = (grey[valid] / (10 * d[valid])).median()      # level k over (k / 10 / s) * 10
        assert 1.0 - 1e-4 <= zoom <= 1.5 + 1e-4
        # away from block edges (blended by bilinear resizing of the image) the image and the
        # depth name the same block; a depth map flipped against its image would not
        same = ((grey[valid] / (10 * d[valid]) - zoom).abs() < 1e-3).float().mean()
        assert same > 0.7
        wrong = d.flip(-1)
        both = valid & (wrong > 0)
        assert ((grey[both] / (10 * wrong[both]) - zoom).abs() < 1e-3).float().mean() < 0.3
        flips.add(bool((grey[:, 0] > grey[:, -1]).all()))     # levels grow left to right
        assert torch.equal(view[(epoch, 0)][0][1], d[None])   # same key, same item
    assert flips == {True, False}
    # eval: resized to the resolution; nearest neighbours keep depth values exact
    (x, d), _ = SeededView([((image, depth), "x")], depth_eval_transform(16, pre), 0)[0]
    assert x.shape == (3, 16, 16) and set(d.unique().tolist()) <= set(depth.unique().tolist())


@pytest.fixture(scope="module")
def seven_scenes_dir(tmp_path_factory):
    if not ARCHIVE.is_file():
        pytest.skip("../shared/datasets is absent")
    root = tmp_path_factory.mktemp("7scenes")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    return root / "7scenes-redkitchen"


def test_seven_scenes_split_by_frame_ranges_with_invalid_pixels_masked(seven_scenes_dir):
    train, val = seven_scenes(seven_scenes_dir.parent)            # the folder holding it
    assert (len(train), len(val)) == (400, 100)
    assert train.pairs[0][0].name == "frame-000000.color.jpg"
    assert train.pairs[-1][0].name == "frame-000798.color.jpg"
    assert val.pairs[0][0].name == "frame-000800.color.jpg"
    assert val.pairs[-1][0].name == "frame-000998.color.jpg"
    index = [p[0].name for p in val.pairs].index("frame-000856.color.jpg")
    raw = decode_unchanged(val.pairs[index][1])
    assert raw.dtype == torch.uint16 and raw.shape == (1, 240, 320)
    codes = raw.to(torch.int32)
    assert (codes == 65535).sum() > 0 and (codes == 0).sum() > 0
    (image, depth), stem = val[index]
    assert stem == "frame-000856" and image.dtype == torch.uint8 and image.shape == (3, 240, 320)
    invalid = (codes == 0) | (codes == 65535)
    assert (depth[invalid] == 0).all()
    assert torch.equal(depth[~invalid], codes[~invalid].float() / 1000)
    assert 0.5 < depth[~invalid].min() and depth.max() < 5
    a, b = seven_scenes(seven_scenes_dir, train_range=(0, 10), val_range=(-3, None))
    assert [p[0].name for p in b.pairs] == [f"frame-000{n}.color.jpg" for n in (994, 996, 998)]
    assert len(a) == 10


# ---- runs on the engine --------------------------------------------------------------------

class TinyDepth(nn.Module):
    """A stand-in depth head: two strided convolutions with BatchNorm, a 1x1 output and a
    bilinear upsample to the input size; positive metric depth (softplus) or relative
    inverse depth."""

    task = "depth"

    def __init__(self, kind="metric", resolution=32, width=8):
        super().__init__()
        self.depth_kind = kind
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.constant_(self.out.bias, 1.0)
        self.config = {"name": f"tinydepth_{kind}", "head": "tinydepth", "backbone": "none",
                       "task": "depth", "depth_kind": kind,     # the heads' config convention
                       "options": {"kind": kind, "resolution": resolution, "width": width}}
        self.preprocess = {"resolution": resolution, "mean": (0.485, 0.456, 0.406),
                           "std": (0.229, 0.224, 0.225), "interpolation": "bilinear"}

    def forward(self, x):
        y = F.interpolate(self.out(self.body(x)), size=x.shape[-2:], mode="bilinear")
        return F.softplus(y)


@pytest.fixture(scope="module")
def four_frames(seven_scenes_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("four") / "frames"
    folder.mkdir()
    for n in (0, 2, 4, 6):
        for suffix in ("color.jpg", "depth.png"):
            name = f"frame-{n:06d}.{suffix}"
            (folder / name).symlink_to(seven_scenes_dir / name)
    return folder


RUN = dict(epochs=1, resolution=32, batch_size=2, lr=0.01, optimizer="adamw", workers=0,
           weight_decay=0.0, tensorboard=False)
SAME_FOUR = {"train_range": (0, 4), "val_range": (0, 4)}


@pytest.mark.parametrize("kind", ["metric", "inverse_relative"])
def test_one_epoch_on_four_frames_writes_depth_metrics(four_frames, tmp_path, kind):
    out = tmp_path / "run"
    result = train(model=TinyDepth(kind), data=str(four_frames), out=str(out),
                   progress=False, depth=SAME_FOUR, **RUN)
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("abs_rel", "delta1", "rmse", "si_rmse", "val_loss"):
        assert math.isfinite(line[key]), key
    assert line["images"] == 4 and line["depth_kind"] == kind
    assert ("aligned" in line["scoring"]) == (kind == "inverse_relative")
    assert result["abs_rel"] == line["abs_rel"]
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["architecture"] == f"tinydepth_{kind}"
    assert (out / "best" / "model.safetensors").is_file()
    assert TASKS["depth"] is DepthTask
    if kind == "metric":                    # the trivial baseline on the same split
        task = DepthTask()
        from mobilenets.tasks.depth import depth_config
        task.datasets(depth_config(data=str(four_frames), depth=SAME_FOUR, **RUN))
        base = task.mean_baseline()
        direct = mean_depth_baseline(task.train_raw, task.val_raw, 32)
        assert base["abs_rel"] == direct["abs_rel"] and 1 < base["mean_depth"] < 3
        assert 0 < base["abs_rel"] < 1


@pytest.fixture
def tiny_head():
    """``tinydepth_<backbone>`` in the head registry for one test (the real depth heads are
    built elsewhere)."""
    def build(backbone, resolution=32, kind="metric", width=8, bn_momentum=None):
        model = TinyDepth(kind, resolution, width)
        model.config.update(name=f"tinydepth_{backbone}", backbone=backbone)
        return model
    register_head(HeadEntry("tinydepth", "depth", build, "mobilenet_v2_035"))
    yield "tinydepth_mobilenet_v2_035"
    HEADS.pop("tinydepth")


def test_registered_head_trains_and_resumes_exactly(four_frames, tmp_path, tiny_head):
    # a constant learning rate: the first run's schedule must not depend on its epoch count
    common = dict(RUN, model=tiny_head, data=str(four_frames), progress=False, schedule="constant",
                  depth=dict(SAME_FOUR, loss="l1", model_options={"width": 6}))
    train(out=str(tmp_path / "whole"), **dict(common, epochs=2))
    train(out=str(tmp_path / "resumed"), **common)
    train(out=str(tmp_path / "resumed"), resume=str(tmp_path / "resumed" / "last.pt"),
          **dict(common, epochs=2))

    def lines(name):
        return [json.loads(s) for s in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    whole, resumed = lines("whole"), lines("resumed")
    assert len(whole) == len(resumed) == 2
    for key in ("train_loss", "val_loss", "abs_rel", "rmse"):
        assert resumed[0][key] == whole[0][key] and resumed[1][key] == whole[1][key], key
    config = json.loads((tmp_path / "whole" / "best" / "config.json").read_text())
    assert config["options"]["width"] == 6    # model_options reached the builder


def test_bad_options_and_models_are_refused(four_frames, tmp_path):
    with pytest.raises(ValueError, match="unknown depth option"):
        train(model=TinyDepth(), data=str(four_frames), out=str(tmp_path / "a"),
              depth={"lossy": "l1"}, **RUN)
    with pytest.raises(ValueError, match="ssi loss does not fit .* 'metric'"):
        train(model=TinyDepth(), data=str(four_frames), out=str(tmp_path / "b"),
              depth=dict(SAME_FOUR, loss="ssi"), progress=False, **RUN)
    classifier = nn.Conv2d(3, 1, 1)
    with pytest.raises(ValueError, match="task is None, not 'depth'"):
        train(model=classifier, data=str(four_frames), out=str(tmp_path / "c"),
              depth=SAME_FOUR, progress=False, **RUN)
    with pytest.raises(DataError, match="no built-in sample"):
        train(model=TinyDepth(), out=str(tmp_path / "d"), progress=False, **RUN)
    with pytest.raises(ValueError, match="model_options resolution not taken: give --resol"):
        train(model="fastdepth_mobilenet_v2_035", data=str(four_frames),
              out=str(tmp_path / "e"), progress=False,
              depth=dict(SAME_FOUR, model_options={"resolution": 96}), **RUN)


def test_fastdepth_starts_at_the_training_mean_depth(tmp_path):
    """output_init "mean": FastDepth's output bias is the mean of the training pairs' valid
    depths (computed here by hand from the codes; 0 and 65535 are invalid); "none" keeps 0."""
    from mobilenets import create_model
    from mobilenets.tasks.depth import depth_config
    rng = np.random.default_rng(0)
    codes = []
    for i in range(5):
        c = rng.integers(500, 4000, size=(8, 8)).astype(np.uint16)
        c[0, :3] = 0
        c[1, 0] = 65535
        codes.append(c)
        write_pair(tmp_path / "pairs", f"f{i:02d}", np.zeros((8, 8, 3)), c)
    train_codes = np.concatenate([c.ravel() for c in codes[:4]])     # range split: 4 / 1
    want = train_codes[(train_codes != 0) & (train_codes != 65535)].mean() / 1000.0
    for init, expect in (("mean", want), ("none", 0.0)):
        task = DepthTask()
        cfg = depth_config(data=str(tmp_path / "pairs"), resolution=32, batch_size=2,
                           depth={"output_init": init})
        task.datasets(cfg)
        model = create_model("fastdepth_mobilenet_v3_small_075", resolution=32)
        task.model_ready(model)
        assert model.final.bn.bias.item() == pytest.approx(expect, rel=1e-6, abs=1e-7)
