"""Memory-efficient inference (MobileNetV2 §5.1): inverted residuals split into chunks of their
expansion equal the unsplit blocks, keep the state dict, and hold less memory at once."""

import copy

import pytest
import torch

import mobilenets
from mobilenets.cost.memory import measured_peak
from mobilenets.layers import BlockSpec, InvertedResidual, NormConfig
from mobilenets.models import create_model
from mobilenets.models.memory_split import (SplitInvertedResidual, chunk_bounds,
                                            split_inverted_residuals)

from conftest import randomize_bn

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_chunk_bounds_cover_the_channels_evenly():
    assert chunk_bounds(8, 2) == [(0, 4), (4, 8)]
    assert chunk_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert chunk_bounds(3, 5) == [(0, 1), (1, 2), (2, 3)]       # at most one chunk per channel
    assert chunk_bounds(7, 1) == [(0, 7)]


@pytest.mark.parametrize("name", ["mobilenet_v2_100", "mobilenet_v3_large_100",
                                  "efficientnet_b0"])
def test_split_model_equals_unsplit_in_eval(name):
    """t = 1, 2, 4 and 7 (7 divides none of these expansion widths: 16 * 6 = 96, 72, 240...),
    with non-trivial BatchNorm statistics; V3 and EfficientNet have squeeze-excite. In float64,
    so that what is compared is the computation: in float32 the summation order of the chunked
    projection changes the last bits (~1e-7 relative per block), which grow through the 17
    blocks of a randomly initialised network."""
    model = randomize_bn(create_model(name, resolution=64, num_classes=10)).double().eval()
    x = X.double()
    irs = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    mids = {m.dw.conv.in_channels for m in irs}
    assert any(m % 7 for m in mids) and any(m % 4 == 0 for m in mids)
    with torch.no_grad():
        ref = model.forward_features(x)
        for t in (1, 2, 4, 7):
            split = split_inverted_residuals(copy.deepcopy(model), t)
            assert split.config["memory_split"] == t
            blocks = [m for m in split.modules() if isinstance(m, SplitInvertedResidual)]
            assert len(blocks) == len(irs) and not any(b.training for b in blocks)
            assert not any(type(m) is InvertedResidual for m in split.modules())
            out = split.forward_features(x)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(split.forward_head(out), model.forward_head(ref),
                                       rtol=1e-5, atol=1e-5)


def test_create_model_option_saves_and_loads(tmp_path):
    model = randomize_bn(create_model("mobilenet_v3_small_100", resolution=64,
                                      num_classes=5)).eval()
    split = randomize_bn(create_model("mobilenet_v3_small_100", resolution=64, num_classes=5,
                                      memory_split=3)).eval()
    assert split.state_dict().keys() == model.state_dict().keys()
    split.load_state_dict(model.state_dict())
    mobilenets.save(split, tmp_path / "split")
    loaded = mobilenets.load(tmp_path / "split").eval()
    assert loaded.config["memory_split"] == 3
    assert any(isinstance(m, SplitInvertedResidual) for m in loaded.modules())
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X), rtol=1e-5, atol=1e-5)
        # folding the BatchNorms (mobilenets.fuse, as export_onnx does) keeps the split
        torch.testing.assert_close(mobilenets.fuse(loaded)(X), model(X), rtol=1e-4, atol=1e-5)
    backbone = create_model("mobilenet_v2_100", features_only=True, memory_split=2)
    assert any(isinstance(m, SplitInvertedResidual) for m in backbone.modules())


def test_training_mode_runs_whole_blocks_and_trains():
    """In training mode the split block is the unsplit one (batch statistics included)."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_050", resolution=64, num_classes=3, dropout=0.0)
    split = split_inverted_residuals(copy.deepcopy(model), 4)
    torch.testing.assert_close(split.train()(X), model.train()(X), rtol=0, atol=0)
    split(X).sum().backward()
    assert all(p.grad is not None for p in split.parameters())


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="integer >= 1"):
        split_inverted_residuals(create_model("mobilenet_v2_050"), 0)
    with pytest.raises(ValueError, match="no inverted residual"):
        create_model("mobilenet_v1_025", memory_split=2)
    model = create_model("mobilenet_v2_050", memory_split=2)
    with pytest.raises(ValueError, match="split already"):
        split_inverted_residuals(model, 2)


def test_split_block_holds_less_memory_at_once():
    """A block with a 384-channel expansion of a 16-channel 32x32 input: whole, the expanded
    tensor (384 * 32 * 32 * 4 bytes = 1.5 MiB) exists at least once; in 4 chunks no more than a
    quarter of it plus the output needs to."""
    spec = BlockSpec("ir", 16, 384, 16, 3, 1, "relu6")
    block = randomize_bn(InvertedResidual(spec, NormConfig())).eval()
    split = SplitInvertedResidual(copy.deepcopy(block), 4).eval()
    x = torch.randn(1, 16, 32, 32)
    expanded = 384 * 32 * 32 * 4
    with torch.no_grad():
        torch.testing.assert_close(split(x), block(x), rtol=1e-5, atol=1e-5)
        whole, chunked = measured_peak(block, x), measured_peak(split, x)
    assert whole >= expanded
    assert chunked < whole / 2
    # a whole network split after eval(): MobileNetV2's largest tensors are its expansions
    model = create_model("mobilenet_v2_100", resolution=64).eval()
    split = split_inverted_residuals(copy.deepcopy(model), 4)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert measured_peak(split, x) < 0.75 * measured_peak(model, x)


def test_profile_counts_what_split_blocks_compute():
    """A split model costs the unsplit one's MACs (its blocks' modules watched whole), plus a
    second pass of expansion and depthwise for each block with squeeze-excite; params are
    counted once."""
    from mobilenets.cost import profile
    for name, se in (("mobilenet_v2_050", False), ("mobilenet_v3_small_075", True)):
        plain = create_model(name, resolution=64)
        split = create_model(name, resolution=64, memory_split=4)
        a, b = profile(plain), profile(split)
        assert (b.params, b.params_no_bn) == (a.params, a.params_no_bn)
        again = [layer for layer in b.layers if layer.name.endswith("(second pass)")]
        assert bool(again) == se
        assert b.macs == a.macs + sum(layer.macs for layer in again)
        assert [layer for layer in b.layers if layer not in again] == a.layers
        if se:            # every SE block's expand and dw, once more: a fifth to half more
            assert 1.1 * a.macs < b.macs < 1.6 * a.macs
            assert {layer.name.split(".")[-2] for layer in again} == {"expand", "dw"}


def test_recalibration_prune_and_qat_know_split_blocks():
    """BatchNorm re-estimation reaches split blocks' BatchNorms (it left them reset); prune
    and QAT refuse a split model, naming the order that works."""
    from mobilenets.compress import prune, recalibrate_bn
    from mobilenets.deploy.quantize_pt2e import qat_pt2e
    torch.manual_seed(0)
    plain = create_model("mobilenet_v2_050", resolution=64, num_classes=3).eval()
    split = split_inverted_residuals(copy.deepcopy(plain), 3)
    batches = [torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(i))
               for i in range(2)]
    recalibrate_bn(plain, batches)
    recalibrate_bn(split, batches)
    for (name, a), b in zip(plain.state_dict().items(), split.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert not split.training and all(not m.whole for m in split.modules()
                                      if isinstance(m, SplitInvertedResidual))
    with pytest.raises(ValueError, match="prune a model without memory_split"):
        prune(split, ratio=0.25)
    with pytest.raises(ValueError, match="QAT the model without memory_split"):
        qat_pt2e(split, "unused")


def test_run_whole_nests():
    from mobilenets.models.memory_split import run_whole
    model = create_model("mobilenet_v2_050", memory_split=2).eval()
    blocks = [m for m in model.modules() if isinstance(m, SplitInvertedResidual)]
    with run_whole(model):
        with run_whole(model):
            pass
        assert all(b.whole for b in blocks)          # the outer block still runs them whole
    assert not any(b.whole for b in blocks)
