"""Graph rewrites for onnxruntime's int8 CPU kernels: depthwise channel padding before
quantization (``deploy.runtimes.onnxruntime.channel_pad``) and the hard-sigmoid table lookup applied when an int8
file is opened (``deploy.runtimes.onnxruntime.rewrite.hard_sigmoid_to_lookup``).

Real computations: mobilenet_v3_small_100 (expansion widths 72, 88, 120: not multiples of 16)
with randomised BatchNorm, 64 px, 10 classes, exported and quantized on the built-in sample.
"""

import json

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.data import SAMPLE_DIR, ImageFolderDataset, eval_transform
from conftest import randomize_bn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mobilenets.deploy import OnnxModel, export_onnx, quantize_onnx  # noqa: E402
from mobilenets.deploy.runtimes.onnxruntime.channel_pad import pad_depthwise_channels  # noqa: E402
from mobilenets.deploy.runtimes.onnxruntime.rewrite import cpu_model, hard_sigmoid_to_lookup  # noqa: E402

CLASSES = sorted(p.name for p in (SAMPLE_DIR / "train").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    """The model, its fp32 export and its int8 quantization, and the sample's val images."""
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_100", num_classes=10,
                                                 resolution=64)).eval()
    model.config["class_names"] = CLASSES
    tmp = tmp_path_factory.mktemp("v3int8")
    fp32 = export_onnx(model, tmp / "fp32.onnx")
    int8 = quantize_onnx(fp32, tmp / "int8.onnx", SAMPLE_DIR, num_images=32)
    ds = ImageFolderDataset(SAMPLE_DIR / "val", eval_transform(model.preprocess))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return fp32, int8, images


def depthwise_channels(proto) -> list[int]:
    inits = {i.name: i for i in proto.graph.initializer}
    out = []
    for n in proto.graph.node:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type in ("Conv", "QLinearConv") and group > 1:
            w = n.input[1] if n.op_type == "Conv" else n.input[3]
            dims = list(inits[w].dims) if w in inits else None
            out.append(group if dims is None else dims[0])
    return out


def run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_depthwise_padding_is_exact_and_aligns_every_group(v3):
    fp32 = v3[0]
    proto = onnx.load(str(fp32))
    before = depthwise_channels(proto)
    unaligned = [c for c in before if c % 16]
    assert sorted(set(unaligned)) == [72, 88, 120]            # Table 2's expansion widths
    for node in proto.graph.node:
        node.name = ""                          # files from elsewhere may leave names out
    assert pad_depthwise_channels(proto) == len(unaligned)
    after = depthwise_channels(proto)
    assert all(c % 16 == 0 for c in after)
    assert [a - b for a, b in zip(after, before)] == [-c % 16 for c in before]
    x = v3[2][:4].numpy()
    ref, out = run(fp32, x[:1]), run(proto.SerializeToString(), x[:1])
    assert np.abs(out - ref).max() <= 2e-5 * np.abs(ref).max() + 1e-6
    assert pad_depthwise_channels(proto) == 0                # idempotent


def test_quantization_recipe_follows_the_target_runtime(v3, tmp_path):
    """onnxruntime's recipe pads depthwise channels for its int8 kernels, OpenVINO's does not;
    explicit options override the recipe."""
    fp32, int8, _ = v3
    meta = json.loads(OnnxModel(int8).metadata["quantization"])
    assert meta["target"] == "onnxruntime" and meta["depthwise_padded"] == 3
    ov = quantize_onnx(fp32, tmp_path / "ov.onnx", SAMPLE_DIR, num_images=8, target="openvino")
    meta = json.loads(OnnxModel(ov).metadata["quantization"])
    assert meta["target"] == "openvino" and meta["depthwise_padded"] == 0
    assert meta["activations"] == "uint8"
    assert sorted(set(c for c in depthwise_channels(onnx.load(str(ov))) if c % 16)) == \
        [72, 88, 120]
    both = quantize_onnx(fp32, tmp_path / "both.onnx", SAMPLE_DIR, num_images=8,
                         target="openvino", channel_multiple=16)
    assert json.loads(OnnxModel(both).metadata["quantization"])["depthwise_padded"] == 3
    with pytest.raises(ValueError, match="unknown target"):
        quantize_onnx(fp32, tmp_path / "x.onnx", SAMPLE_DIR, target="tflite")


def test_depthwise_padding_leaves_what_it_cannot_follow_alone():
    """A depthwise group fed by the graph input, or added to a residual, keeps its width."""
    rng = np.random.default_rng(0)

    def w(*shape, name):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    for head in ("input", "residual"):
        nodes = [helper.make_node("Conv", ["x", "dw"], ["d"], name="dw", group=8,
                                  pads=[1, 1, 1, 1])]
        inits = [w(8, 1, 3, 3, name="dw")]
        if head == "residual":
            nodes = [helper.make_node("Conv", ["x", "pw"], ["e"], name="pw")] + nodes
            nodes[1].input[0] = "e"
            nodes.append(helper.make_node("Add", ["d", "x"], ["y"], name="add"))
            inits.append(w(8, 8, 1, 1, name="pw"))
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
            [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                           [1, 8, 4, 4])], inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        assert pad_depthwise_channels(proto) == 0
        assert depthwise_channels(proto) == [8]


def test_int8_file_has_aligned_depthwise_and_stays_faithful(v3):
    fp32, int8, images = v3
    proto = onnx.load(str(int8))
    assert all(c % 16 == 0 for c in depthwise_channels(proto))
    meta = json.loads(OnnxModel(int8).metadata["quantization"])
    assert meta["depthwise_padded"] == 3 and meta["channel_multiple"] == 16   # 72, 88, 120
    ref = OnnxModel(fp32)(images)
    for rewrite in (False, True):                               # without/with the lookup
        out = OnnxModel(int8, rewrite=rewrite)(images)
        cos = torch.nn.functional.cosine_similarity(out, ref).mean().item()
        agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
        assert cos > 0.99 and agree > 0.95, (rewrite, cos, agree)


def hard_sigmoid_graph(h_scale: float, h_zero: int, dtype=TensorProto.UINT8):
    """uint8 x -> DequantizeLinear -> HardSigmoid(1/6, 1/2) -> QuantizeLinear -> h."""
    np_type = np.uint8 if dtype == TensorProto.UINT8 else np.int8
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(100, np_type), "xz"),
             numpy_helper.from_array(np.array(h_scale, np.float32), "hs"),
             numpy_helper.from_array(np.array(h_zero, np_type), "hz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"], name="dq"),
             helper.make_node("HardSigmoid", ["xf"], ["hf"], name="hsig", alpha=1 / 6,
                              beta=0.5),
             helper.make_node("QuantizeLinear", ["hf", "hs", "hz"], ["h"], name="q")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, [256])],
                              [helper.make_tensor_value_info("h", dtype, [256])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("h_scale", [1 / 255, 0.9 / 255])     # gate reaching 1, or not
def test_hard_sigmoid_lookup_within_one_step_of_the_float_path(h_scale):
    proto = hard_sigmoid_graph(h_scale, 0)
    x = np.arange(256, dtype=np.uint8)                          # every uint8 input
    ref = run(proto.SerializeToString(), x).astype(int)
    assert hard_sigmoid_to_lookup(proto) == 1
    ops = [n.op_type for n in proto.graph.node]
    assert ops == ["QLinearLeakyRelu"]                          # DQ, HardSigmoid, Q: gone
    out = run(proto.SerializeToString(), x).astype(int)
    assert np.abs(out - ref).max() <= 1
    assert (out == ref).mean() > 0.4
    assert out.min() == 0 and out.max() == 255                  # both saturations kept


def test_hard_sigmoid_lookup_skips_what_it_cannot_express():
    assert hard_sigmoid_to_lookup(hard_sigmoid_graph(1 / 255, 10)) == 0    # offset zero
    signed = hard_sigmoid_graph(1 / 127, 0, TensorProto.INT8)              # int8 activations
    assert hard_sigmoid_to_lookup(signed) == 0


def test_cpu_model_rewrites_int8_hard_sigmoid(v3):
    int8 = v3[1]
    hard_sigmoids = sum(n.op_type == "HardSigmoid" for n in onnx.load(str(int8)).graph.node)
    rewritten = cpu_model(int8)
    assert isinstance(rewritten, bytes) and cpu_model(int8, rewrite=False) == str(int8)
    ops = [n.op_type for n in onnx.load_from_string(rewritten).graph.node]
    assert "HardSigmoid" not in ops and ops.count("QLinearLeakyRelu") == hard_sigmoids > 0


def test_cli_quantize_channel_multiple(v3, tmp_path):
    from mobilenets.cli.main import main
    fp32 = v3[0]
    out = tmp_path / "plain.onnx"
    assert main(["quantize", str(fp32), "--calib", str(SAMPLE_DIR), "--out", str(out),
                 "--num-images", "8", "--channel-multiple", "0"]) == 0
    assert sorted({c for c in depthwise_channels(onnx.load(str(out))) if c % 16}) == [72, 88, 120]
    assert json.loads(OnnxModel(out).metadata["quantization"])["depthwise_padded"] == 0
    with pytest.raises(SystemExit) as exit_:                  # a usage error from argparse
        main(["quantize", str(fp32), "--calib", str(SAMPLE_DIR), "--out", str(out),
              "--channel-multiple", "-8"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v2_075", "fd_mobilenet_025",
                                  "mobilenet_v3_large_075", "efficientnet_b3"])
def test_depthwise_padding_is_exact_across_families(name, tmp_path):
    """Other families' narrow widths: a V1/FD pointwise -> depthwise -> pointwise chain, V2's
    inverted residual, EfficientNet's SiLU (Sigmoid and Mul) with squeeze-excite."""
    model = randomize_bn(mobilenets.create_model(name, num_classes=10, resolution=64)).eval()
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    proto = onnx.load(str(fp32))
    assert pad_depthwise_channels(proto) >= 1
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref, out = run(fp32, x), run(proto.SerializeToString(), x)
    assert np.abs(out - ref).max() <= 2e-5 * np.abs(ref).max() + 1e-6


def test_depthwise_padding_of_a_qdq_file_is_exact(v3, tmp_path):
    """A PT2E (QDQ) file: the quantized weights behind DequantizeLinear, their per-channel
    scales and zero points are padded too, and onnxruntime computes the very same logits."""
    pytest.importorskip("torchao")
    import shutil

    from mobilenets.deploy.runtimes.onnxruntime.qdq_complete import complete_qdq
    from mobilenets.deploy.quantize_pt2e import export_pt2e_onnx, quantize_pt2e
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_100", num_classes=10,
                                                 resolution=64)).eval()
    raw = export_pt2e_onnx(quantize_pt2e(model, SAMPLE_DIR, num_images=16), tmp_path / "raw.onnx")
    plain, padded = tmp_path / "plain.onnx", tmp_path / "padded.onnx"
    shutil.copy(raw, plain)
    shutil.copy(raw, padded)
    pre = OnnxModel(raw).preprocess
    assert complete_qdq(plain, SAMPLE_DIR, pre, num_images=16,
                        channel_multiple=None)["depthwise_padded"] == 0
    assert complete_qdq(padded, SAMPLE_DIR, pre, num_images=16)["depthwise_padded"] == 3
    assert sorted({c % 16 for c in depthwise_channels(onnx.load(str(padded)))}) == [0]
    x = v3[2].numpy()[:1]
    np.testing.assert_allclose(run(padded, x), run(plain, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout, padded", [("per-channel", 1), ("shared-per-channel", 1),
                                            ("per-tensor", 1), ("zero-point-3", 0),
                                            ("axis-1", 0)])
def test_depthwise_padding_of_qdq_weights_pads_only_what_stays_exact(layout, padded):
    """pointwise -> depthwise -> pointwise over 8 channels, weights behind DequantizeLinear:
    padded to 16 only where the new channels dequantize to exactly 0, with the same outputs;
    a nonzero zero point or scales along another axis leave the group alone."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    shapes = {"pw": (8, 8, 1, 1), "dw": (8, 1, 3, 3), "out": (8, 8, 1, 1)}
    for name, shape in shapes.items():
        q = rng.integers(-100, 100, shape).astype(np.int8)
        zero = 3 if layout == "zero-point-3" else 0
        if layout == "per-tensor":
            scale, zp, axis = np.array([0.01], np.float32), np.array([0], np.int8), 0
        elif layout == "axis-1":
            scale = np.full(shape[1], 0.01, np.float32)
            zp, axis = np.zeros(shape[1], np.int8), 1
        else:
            scale = rng.uniform(0.005, 0.02, shape[0]).astype(np.float32)
            zp, axis = np.full(shape[0], zero, np.int8), 0
        scale_name = "shared_scale" if layout == "shared-per-channel" else f"{name}_s"
        if scale_name not in {i.name for i in inits}:
            inits.append(numpy_helper.from_array(scale, scale_name))
        inits += [numpy_helper.from_array(q, f"{name}_q"),
                  numpy_helper.from_array(zp, f"{name}_z")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", scale_name,
                                                           f"{name}_z"], [f"{name}_w"],
                                      axis=axis))
    nodes += [helper.make_node("Conv", ["x", "pw_w"], ["e"], name="pw"),
              helper.make_node("Relu", ["e"], ["r"]),
              helper.make_node("Conv", ["r", "dw_w"], ["d"], name="dw", group=8,
                               pads=[1, 1, 1, 1]),
              helper.make_node("Conv", ["d", "out_w"], ["y"], name="out")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    ref = run(proto.SerializeToString(), x)
    assert pad_depthwise_channels(proto) == padded
    assert depthwise_channels(proto) == [16 if padded else 8]
    np.testing.assert_allclose(run(proto.SerializeToString(), x), ref, rtol=1e-6, atol=1e-6)
    used = {i for n in proto.graph.node for i in n.input}
    assert all(i.name in used for i in proto.graph.initializer)   # replaced scales removed
