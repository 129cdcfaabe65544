"""Layer-level behaviour not covered by the per-model battery."""

import torch

from mobilenets.layers.conv_norm_act import ConvNormAct


def test_slow_bf16_depthwise_convs_run_in_float32_under_cpu_autocast():
    """Strided and 5x5 depthwise units compute in float32 under CPU bf16 autocast (oneDNN's
    bf16 kernels for them are slow); 3x3 stride-1 depthwise and pointwise units stay bf16."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 12)
    units = {"dw3 stride 2": (ConvNormAct(8, 8, 3, 2, groups=8), torch.float32),
             "dw5 stride 1": (ConvNormAct(8, 8, 5, 1, groups=8), torch.float32),
             "dw3 stride 1": (ConvNormAct(8, 8, 3, 1, groups=8), torch.bfloat16),
             "pointwise": (ConvNormAct(8, 16, 1), torch.bfloat16)}
    for name, (unit, dtype) in units.items():
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
