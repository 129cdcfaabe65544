"""Every family's model traces whole with torch.export and torch.compile(fullgraph=True), with
and without the training side's precision policy (every registered model also goes through
torch.export in test_battery.py's ONNX export). TorchScript is not a target (deprecated in
torch 2.14)."""

import pytest
import torch

import mobilenets
from mobilenets.training.precision import (Float32UnderCpuAutocast,
                                           float32_depthwise_under_cpu_autocast)

# MobileNetV3 is exported and compiled in the precision-policy test below
FAMILIES = ["mobilenet_v1_025", "mobilenet_v2_035", "efficientnet_b0", "fd_mobilenet_025",
            "mobilenet_v4_conv_small_100", "efficientnet_v2_s"]
OPTIONS = {"efficientnet_v2_s": {"depth_mult": 0.1}}    # its rows, 7 blocks instead of 40
RES = 64


@pytest.mark.parametrize("name", FAMILIES)
def test_export_and_compile_fullgraph_have_no_graph_break(name):
    """torch.export and torch.compile(fullgraph=True) raise on any graph break; the exported
    and compiled models compute the eager one's logits."""
    torch._dynamo.reset()
    model = mobilenets.create_model(name, num_classes=10, **OPTIONS.get(name, {})).eval()
    x = torch.randn(2, 3, RES, RES)
    exported = torch.export.export(model, (x,))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(exported.module()(x), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled(x), ref)


def test_compile_fullgraph_with_the_precision_policy_under_cpu_autocast():
    """The training engine compiles the model after applying the precision policy: the whole
    network (MobileNetV3, squeeze-excite and hard-swish included) still traces as one graph
    under bf16 autocast in train mode, and the strided depthwise convs still compute in float32
    inside it."""
    torch._dynamo.reset()
    model = mobilenets.create_model("mobilenet_v3_small_100", num_classes=10).eval()
    x = torch.randn(2, 3, RES, RES)
    torch.export.export(model, (x,))
    float32_depthwise_under_cpu_autocast(model.train())
    dw = model.get_submodule("blocks.0.0.dw")
    assert isinstance(dw, Float32UnderCpuAutocast)
    seen = []
    hook = dw.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = compiled(x)
    hook.remove()
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and seen == [torch.float32]
    assert model.classifier.weight.grad is not None
