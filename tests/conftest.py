import os
import warnings
from pathlib import Path

import pytest
import torch

from mobilenets.deploy.quantize import cpu_has_vnni

warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs pytest -n 2: each worker (and the CLI and torchrun processes it starts)
    # uses one thread, so the two workers share the two cores instead of oversubscribing them
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so that eval-mode
    outputs are O(1) and comparisons between runtimes are meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def peaked_ssdlite(backbone: str, resolution: int, num_classes: int,
                   calib: list[torch.Tensor] | None = None, **options) -> torch.nn.Module:
    """An SSDLite whose scores depend on the image and are peaked, for comparisons between
    runtimes (with the library's N(0, 0.03) initialisation nearly equal scores tie and flip):
    convolutions re-initialised He-normal (seed 0) and BatchNorm statistics those of
    ``calib`` (images in [0, 1]; four noise images without it); in eval mode."""
    import mobilenets
    torch.manual_seed(0)
    model = mobilenets.create_model("ssdlite", backbone=backbone, resolution=resolution,
                                    num_classes=num_classes, **options)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None                # cumulative: the statistics of these images
    if calib is None:
        calib = [torch.rand(3, resolution, resolution) for _ in range(4)]
    model.train()
    with torch.no_grad():
        batch, _ = model.transform(calib)
        model.head(list(model.backbone(batch.tensors).values()))
    return model.eval()


def assert_same_detections(got: dict, want: dict, *, rtol: float, box_atol: float,
                           score_atol: float, score_rtol: float | None = None) -> None:
    """One image's detections from two runs of a detector (``boxes``, ``scores``, ``labels``,
    each sorted by score) are the same: as many, the scores equal in order, and every
    detection of ``want`` paired with its own of ``got`` (same label, box and score within
    the tolerances). Detections whose scores tie within the tolerance may come in either
    order: float differences between runtimes reorder them. ``score_rtol`` defaults to
    ``rtol``."""
    score_rtol = rtol if score_rtol is None else score_rtol
    assert len(got["boxes"]) == len(want["boxes"])
    torch.testing.assert_close(got["scores"], want["scores"], rtol=score_rtol, atol=score_atol)
    free = list(range(len(got["boxes"])))
    for box, score, label in zip(want["boxes"], want["scores"], want["labels"]):
        pair = next((j for j in free if got["labels"][j] == label
                     and abs(got["scores"][j] - score) <= score_atol + score_rtol * abs(score)
                     and torch.allclose(got["boxes"][j], box, rtol=rtol, atol=box_atol)),
                    None)
        assert pair is not None, (f"no detection pairs with label {int(label)}, score "
                                  f"{float(score):.5f}, box {box.tolist()}")
        free.remove(pair)


def sample_classifier() -> torch.nn.Module:
    """mobilenet_v2_035 for the built-in sample: 64 px, 10 classes named as its folders,
    random weights (seed 0) with randomised BatchNorm statistics, in eval mode."""
    import mobilenets
    from mobilenets.data import SAMPLE_DIR
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("mobilenet_v2_035", num_classes=10,
                                                 resolution=64)).eval()
    model.config["class_names"] = sorted(p.name for p in (SAMPLE_DIR / "train").iterdir()
                                         if p.is_dir())
    return model


def sample_val_images(preprocess: dict) -> torch.Tensor:
    """The built-in sample's 250 val images, preprocessed for evaluation, as one batch."""
    from mobilenets.data import SAMPLE_DIR, ImageFolderDataset, eval_transform
    ds = ImageFolderDataset(SAMPLE_DIR / "val", eval_transform(preprocess))
    return torch.stack([ds[i][0] for i in range(len(ds))])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Real data sets (see ../shared/datasets/README.md): beside the checkout, or where
# MOBILENETS_SHARED_DATASETS points; tests that need them skip when they are absent.
SHARED_DATASETS = Path(os.environ.get("MOBILENETS_SHARED_DATASETS") or
                       Path(__file__).resolve().parents[2] / "shared" / "datasets")


# x86 without a VNNI dot product: uint8 x int8 convolutions (onnxruntime, oneDNN under
# torch.compile) add pairs of products in 16 bits and saturate with full-range int8 weights.
# The library's own onnxruntime files use 7-bit weights there (quantize_onnx's
# reduce_range); files from PT2E keep 8-bit weights and lose accuracy on such a CPU, which
# these tests would measure instead of what they check (docs/deploy.md, "int8 without VNNI").
needs_vnni = pytest.mark.skipif(
    not cpu_has_vnni(),
    reason="x86 CPU without VNNI: full-range int8 weights saturate in its int8 kernels")
