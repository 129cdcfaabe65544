"""Layer-level behaviour not covered by the per-model battery, and the training side's precision
policy for them (mobilenets.training.precision)."""

import copy
import io

import torch

import mobilenets
from mobilenets.layers.conv_norm_act import ConvNormAct
from mobilenets.training.precision import (Float32UnderCpuAutocast,
                                           float32_depthwise_under_cpu_autocast)


def test_plain_units_follow_autocast():
    """The portable layer has no precision policy: every unit computes in bf16 under CPU bf16
    autocast, strided depthwise ones included."""
    x = torch.randn(2, 8, 12, 12)
    for unit in (ConvNormAct(8, 8, 3, 2, groups=8), ConvNormAct(8, 16, 1)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert unit.eval()(x).dtype == torch.bfloat16


def test_slow_bf16_depthwise_convs_run_in_float32_under_cpu_autocast():
    """With the policy applied, strided and 5x5 depthwise units compute in float32 under CPU
    bf16 autocast (oneDNN's bf16 kernels for them are slow); 3x3 stride-1 depthwise and
    pointwise units stay bf16."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 12)
    units = {"dw3 stride 2": (ConvNormAct(8, 8, 3, 2, groups=8), torch.float32),
             "dw5 stride 1": (ConvNormAct(8, 8, 5, 1, groups=8), torch.float32),
             "dw3 stride 1": (ConvNormAct(8, 8, 3, 1, groups=8), torch.bfloat16),
             "pointwise": (ConvNormAct(8, 16, 1), torch.bfloat16)}
    for name, (unit, dtype) in units.items():
        keys = list(unit.state_dict())
        unit = float32_depthwise_under_cpu_autocast(unit)
        assert list(unit.state_dict()) == keys
        unit.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = unit(x)
        assert y.dtype == dtype, name
        if dtype == torch.float32:     # the same numbers as without autocast, and gradients
            torch.testing.assert_close(y, unit(x), rtol=0, atol=0)
            unit.train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                unit(x.requires_grad_()).sum().backward()
            assert unit.conv.weight.grad is not None and x.grad.dtype == torch.float32
            x = x.detach()


def test_precision_policy_on_a_model_keeps_state_dict_copies_and_pickles():
    """On a whole model: exactly the strided / 5x5 depthwise units change; state_dict keys and
    values, deepcopy (EMA copies) and pickling (torch.save of the module) keep working, and the
    copies keep the policy."""
    model = mobilenets.create_model("mobilenet_v3_small_100", num_classes=10).eval()
    before = model.state_dict()
    float32_depthwise_under_cpu_autocast(model)
    float32_depthwise_under_cpu_autocast(model)                 # idempotent
    changed = {n for n, m in model.named_modules() if isinstance(m, Float32UnderCpuAutocast)}
    expected = {n for n, m in model.named_modules() if isinstance(m, ConvNormAct)
                and m.conv.groups == m.conv.in_channels > 1
                and (m.conv.stride[0] > 1 or m.conv.kernel_size[0] > 3)}
    assert changed == expected and "blocks.0.0.dw" in changed and "blocks.1.0.expand" not in changed
    seen = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: seen.__setitem__(name, o.dtype))
        for name in ("blocks.0.0.dw", "blocks.1.0.expand")]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert seen == {"blocks.0.0.dw": torch.float32, "blocks.1.0.expand": torch.bfloat16}
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert isinstance(other.get_submodule("blocks.0.0.dw"), Float32UnderCpuAutocast)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_precision_policy_passes_low_rank_units_by():
    """A factorised model (its 1x1 ConvNormActs hold low-rank pairs, not Conv2d) gets the
    policy on its depthwise units and leaves the low-rank ones alone: the training engine
    applies it before fine-tuning such a model under autocast."""
    from mobilenets.compress import factorise
    model = mobilenets.create_model("mobilenet_v2_050", num_classes=10, resolution=64)
    small, _ = factorise(model, rank=0.5)
    low_rank = {n for n, m in small.named_modules()
                if isinstance(m, ConvNormAct) and not isinstance(m.conv, torch.nn.Conv2d)}
    float32_depthwise_under_cpu_autocast(small)
    changed = {n for n, m in small.named_modules() if isinstance(m, Float32UnderCpuAutocast)}
    assert low_rank and changed and not low_rank & changed
