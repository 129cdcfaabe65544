"""The same checks for every registered model (as timm's and torchvision's suites do).

Each model is built once for this module (module-scoped fixture) at a small input size; the
variants a check needs (a copy without classifier, a one-channel model) are made from it
without building and initialising another full model.

EfficientNetV2 is too big to run here at full depth (on two cores the three models take
minutes, most of it in the ONNX export): the battery builds V2-S, M and L with one block per
row, two or three in the longest (``depth_mult=0.1``, 7 / 9 / 10 blocks instead of 40 / 57 /
79: every row kind, width, stride and squeeze-excite, and every kind of shortcut but that of
the expanding fused rows). Their full-depth nets are checked against torchvision and timm
(parameters, MACs, feature taps) in test_reference_implementations.py and
test_models_timm_features.py, and V2-S's logits (every shortcut) in test_weights.py.
``MOBILENETS_FULL_BATTERY=1`` runs every registered model at full depth; there (2026-12-04, 13
minutes on two busy cores) V2-S/M/L pass every structural check but fail the
four that compare logits of two computations (batch of 1 vs 4, fused, ONNX, one channel):
with random weights and randomised BatchNorm statistics nothing normalises the eval-mode
activations, which grow through the 40-79 blocks to logits of 1e3-1e6, and float32 rounding
differences between kernels grow with them (in float64 a batch of 1 and of 4 agree to 2e-12
relative). EfficientNet-B7 (55 blocks, no full 3x3 fused convolutions) stays near 1.
"""

import copy
import os

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.layers import DropPath
from conftest import randomize_bn

NAMES = mobilenets.list_models(task="classification")
FULL = bool(os.environ.get("MOBILENETS_FULL_BATTERY"))
OPTIONS = {} if FULL else {n: {"depth_mult": 0.1} for n in NAMES
                           if n.startswith("efficientnet_v2_")}
RES = 64


def create(name, **options):
    """The battery's build of ``name`` (see ``OPTIONS``)."""
    return mobilenets.create_model(name, **OPTIONS.get(name, {}), **options)


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    m = create(request.param, num_classes=10)
    randomize_bn(m)
    return m.eval()


def test_forward_finite(model):
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    feats = model.forward_features(x)
    assert feats.shape[1] == model.plan.feature_channels
    assert feats.shape[-1] == RES // model.plan.total_stride


def test_backward_reaches_every_parameter(model):
    # stochastic depth may drop a whole block for both samples: switch it off for this check
    drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
    rates = [m.rate for m in drop_paths]
    for m in drop_paths:
        m.rate = 0.0
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        y = model(torch.randn(2, 3, RES, RES))
        y.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"no gradient for {missing}"
        zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
        assert not zero, f"all-zero gradient for {zero}"
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        for m, r in zip(drop_paths, rates):
            m.rate = r


def assert_same_logits(got, ref):
    """max |difference| <= 2e-5 x max|logits| + 1e-6, and the same top-1."""
    got, ref = np.asarray(got), np.asarray(ref)
    tol = 2e-5 * np.abs(ref).max() + 1e-6
    assert np.abs(got - ref).max() <= tol
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_eval_output_independent_of_batch(model):
    x = torch.randn(4, 3, RES, RES)
    with torch.no_grad():
        full = model(x)
        single = model(x[:1])
    assert_same_logits(single, full[:1])


def test_features_only_matches_feature_info(model):
    info = model.feature_info
    reductions = [t.reduction for t in info]
    for r in (2, 4, 8, 16, 32):
        assert r in reductions, f"no feature tap at reduction {r}: {info}"
    fnet = create(model.config["name"], features_only=True)
    fnet.load_state_dict(model.state_dict(), strict=False)
    fnet.eval()
    x = torch.randn(1, 3, RES, RES)
    seen = {}
    hooks = [model.get_submodule(t.module).register_forward_hook(
        lambda m, i, o, name=t.module: seen.setdefault(name, o)) for t in info]
    with torch.no_grad():
        feats = fnet(x)
        model.forward_features(x)
    for h in hooks:
        h.remove()
    assert len(feats) == len(fnet.feature_info) == len(info)
    for f, tap in zip(feats, fnet.feature_info):
        assert f.shape[1] == tap.channels
        assert RES // f.shape[-1] == tap.reduction
        # the very map the classifier network computes at that module
        torch.testing.assert_close(f, seen[tap.module])
    # the last tap of a model with a head conv is the head's high-channel map
    if model.plan.head is not None:
        assert info[-1].module == "head" and info[-1].channels == model.plan.head.out
    # a subset of taps, and the feature net's weights are the classifier's
    sub = create(model.config["name"], features_only=True, out_indices=(1, 3))
    assert [t.reduction for t in sub.feature_info] == [info[1].reduction, info[3].reduction]
    assert set(sub.state_dict()) <= set(model.state_dict())


def test_fx_symbolic_trace(model):
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, RES, RES)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))


def test_fuse_matches_eval_model(model):
    """mobilenets.fuse: a BatchNorm-free eval-only copy that computes the eval model's logits;
    the original keeps its BatchNorms."""
    fused = mobilenets.fuse(model)
    bn = torch.nn.modules.batchnorm._BatchNorm
    assert not any(isinstance(m, bn) for m in fused.modules())
    assert any(isinstance(m, bn) for m in model.modules())
    assert fused.config == model.config and fused.preprocess == model.preprocess
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        assert_same_logits(fused(x), model(x))


def test_export_onnx_runs_in_onnxruntime(model, tmp_path):
    """The library's own export gives the eval model's logits in onnxruntime. With
    ``fuse=False`` it traces the model itself with torch.export (the dynamo exporter), so this
    is also every model's torch.export check; fusing is checked above, and the fused export
    path in test_deploy.py."""
    ort = pytest.importorskip("onnxruntime")
    path = mobilenets.export_onnx(model, tmp_path / "model.onnx", resolution=RES, fuse=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, RES, RES)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert_same_logits(got, ref)


def test_pre_logits_and_headless(model):
    """forward_head(pre_logits=True) gives the classifier's input; after reset_classifier(0)
    the model outputs those features."""
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        torch.testing.assert_close(model.classifier(pre), model(x))
        headless = copy.deepcopy(model)
        headless.reset_classifier(0)
        assert headless.num_classes == 0 and headless.config["num_classes"] == 0
        torch.testing.assert_close(headless(x), pre)


def test_one_input_channel(model):
    """in_chans=1 changes only the stem conv: a one-channel model whose stem weights are the
    RGB model's summed over channels computes, on a grey image, the RGB model's logits for that
    image repeated on three channels. (Built on the meta device and given the RGB model's
    tensors, so no second full initialisation.)"""
    with torch.device("meta"):
        grey = create(model.config["name"], num_classes=10, in_chans=1)
    assert grey.stem.conv.weight.shape[1] == 1 and grey.config["in_chans"] == 1
    state = dict(model.state_dict())
    state["stem.conv.weight"] = state["stem.conv.weight"].sum(1, keepdim=True)
    grey.load_state_dict(state, assign=True)
    grey.eval()
    x = torch.randn(1, 1, RES, RES)
    with torch.no_grad():
        assert_same_logits(grey(x), model(x.expand(-1, 3, -1, -1)))
