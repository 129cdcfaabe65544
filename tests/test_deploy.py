"""Deployment: BatchNorm folding, ONNX export, the onnxruntime model, bench helpers, CLI.

Real computations at small sizes; the ONNX files of a few representative models are exported
once per module.
"""

import json

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.data import SAMPLE_DIR
from mobilenets.deploy import OnnxModel, export_onnx
from mobilenets.deploy.bench import BackendError, benchmark, compile_model
from mobilenets.deploy.onnx_export import export_preprocess
from conftest import randomize_bn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

RES = 64
# name -> (options, resolution); TF "same" padding at 64 px pads strided 3x3 convs
# asymmetrically (0 before, 1 after), as timm's tf_ ports need
ONNX_MODELS = {
    "mobilenet_v1_100": ({}, RES),
    "mobilenet_v2_100": ({}, RES),
    "mobilenet_v3_small_100": ({}, RES),
    "efficientnet_b0": ({}, RES),
    "mobilenet_v3_small_minimal_100": ({"padding": "same"}, RES),
}
CLASSES = sorted(p.name for p in (SAMPLE_DIR / "train").iterdir() if p.is_dir())


def assert_close(got, ref):
    """max |difference| <= 2e-5 x max|ref| + 1e-6."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    tol = 2e-5 * np.abs(ref).max() + 1e-6
    assert np.abs(got - ref).max() <= tol, (np.abs(got - ref).max(), tol)


def make(name, **options):
    return randomize_bn(mobilenets.create_model(name, num_classes=10, **options)).eval()


def has_bn(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ---------------------------------------------------------------- fuse

# every registered model's fuse check is in test_battery.py


@pytest.mark.parametrize("name,out_indices", [("mobilenet_v2_100", None),
                                              ("mobilenet_v3_small_100", (1, 3)),
                                              ("efficientnet_b0", (0, 2, 4))])
def test_fuse_backbone(name, out_indices):
    model = randomize_bn(mobilenets.create_model(name, features_only=True,
                                                 out_indices=out_indices)).eval()
    fused = mobilenets.fuse(model)
    assert not has_bn(fused)
    assert fused.feature_info == model.feature_info
    x = torch.randn(1, 3, RES, RES)
    with torch.no_grad():
        got, ref = fused(x), model(x)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert_close(g, r)


def test_fused_model_is_eval_only():
    fused = mobilenets.fuse(make("mobilenet_v3_small_100"))
    with pytest.raises(RuntimeError, match="eval-only"):
        fused.train()
    with pytest.raises(RuntimeError, match="eval-only"):
        fused.train(True)
    assert fused.eval() is fused and fused.train(False) is fused and not fused.training


def test_fuse_refuses_a_batchnorm_it_cannot_fold():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="do not follow a Conv2d"):
        mobilenets.fuse(net)


# ---------------------------------------------------------------- ONNX export

@pytest.fixture(scope="module", params=list(ONNX_MODELS))
def exported(request, tmp_path_factory):
    name = request.param
    options, res = ONNX_MODELS[name]
    torch.manual_seed(0)
    model = make(name, **options)
    path = mobilenets.export_onnx(model, tmp_path_factory.mktemp(name) / f"{name}.onnx",
                                  resolution=res)
    return model, path, res


def test_export_checks_and_matches_in_onnxruntime(exported):
    model, path, res = exported
    assert not path.with_name(path.name + ".data").exists()      # self-contained
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    ort_model = OnnxModel(path, threads=1)
    assert ort_model.batch_size == 1
    x = torch.randn(3, 3, res, res)
    with torch.no_grad():
        ref = model(x)
    got = ort_model(x)                    # a fixed batch-1 file runs batch 3 in chunks
    assert isinstance(got, torch.Tensor)
    assert_close(got, ref)


def test_opset_below_18_is_refused(tmp_path):
    with pytest.raises(ValueError, match="18"):
        mobilenets.export_onnx(make("mobilenet_v1_025"), tmp_path / "m.onnx", opset=13)
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def dynamic(tmp_path_factory):
    """A classifier with the sample's class names, exported with a dynamic batch."""
    model = make("mobilenet_v3_small_100")
    model.config["class_names"] = CLASSES
    path = mobilenets.export_onnx(model, tmp_path_factory.mktemp("dyn") / "m.onnx",
                                  resolution=RES, dynamic_batch=True)
    return model, path


def test_dynamic_batch_and_metadata_round_trip(dynamic):
    model, path = dynamic
    om = OnnxModel(path)
    assert om.batch_size is None
    for batch in (1, 3):
        x = torch.randn(batch, 3, RES, RES)
        with torch.no_grad():
            assert_close(om(x), model(x))
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["model_name"] == "mobilenet_v3_small_100"
    assert json.loads(props["class_names"]) == CLASSES
    pre = json.loads(props["preprocess"])
    assert pre == json.loads(json.dumps(export_preprocess(model, RES)))
    assert pre["resolution"] == RES and pre["resize"] == round(RES / pre["crop_pct"])
    assert om.config["name"] == "mobilenet_v3_small_100" and om.config["class_names"] == CLASSES
    assert om.preprocess == pre and om.num_classes == 10
    assert om.config["width_mult"] == model.config["width_mult"]
    assert not om.training and om.eval() is om and om.train(False) is om
    with pytest.raises(RuntimeError, match="eval-only"):
        om.train()
    # a weights path of this machine is not written into a file that leaves it
    from mobilenets.deploy.onnx_export import metadata
    model.config["weights"] = "/home/someone/private/lite0-imagenet.pth"
    try:
        config = json.loads(metadata(model, RES, fused=True)["config"])
    finally:
        model.config.pop("weights")
    assert config["weights"] == "lite0-imagenet.pth"


def test_onnx_model_evaluates_like_the_torch_model(dynamic):
    model, path = dynamic
    ref = mobilenets.evaluate(model, SAMPLE_DIR, resolution=RES)
    got = mobilenets.evaluate(OnnxModel(path, threads=2), SAMPLE_DIR)
    assert got["count"] == ref["count"] == 250
    assert got["top1"] == ref["top1"] and got["confusion"] == ref["confusion"]
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-4)


# ---------------------------------------------------------------- bench helpers

def test_benchmark_reports_median_p90_and_throughput():
    x = torch.randn(4, 8)
    r = benchmark(lambda t: t @ t.T, x, warmup=2, iters=5, repeats=3)
    assert r["calls"] == 15 and len(r["repeat_ms"]) == 3
    assert 0 < r["median_ms"] <= r["p90_ms"]
    assert r["images_per_s"] == pytest.approx(4e3 / r["median_ms"])
    with pytest.raises(ValueError):
        benchmark(lambda t: t, x, iters=0)


def test_compile_failure_is_reported(monkeypatch):
    def broken(model, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(BackendError, match="torch.compile failed.*no C\\+\\+ compiler"):
        compile_model(make("mobilenet_v1_025"), torch.randn(1, 3, RES, RES))


# ---------------------------------------------------------------- CLI

@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_cli_export_bench_predict(tmp_path, capsys, keep_threads):
    from mobilenets.cli.main import main
    out = tmp_path / "v3s.onnx"
    assert main(["export", "mobilenet_v3_small_100", "--format", "onnx", "--out", str(out),
                 "--resolution", str(RES), "--dynamic-batch"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["export", "mobilenet_v3_small_075", "--out", str(out)]) == 2   # not replaced
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["export", "mobilenet_v3_small_075", "--out", str(out), "--resolution",
                 str(RES), "--dynamic-batch", "--overwrite"]) == 0
    assert OnnxModel(out).config["name"] == "mobilenet_v3_small_075"
    capsys.readouterr()
    assert main(["bench", str(out), "--batch", "2", "--threads", "1", "--warmup", "1",
                 "--iters", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == "onnxruntime" and r["batch"] == 2 and r["resolution"] == RES
    assert 0 < r["median_ms"] <= r["p90_ms"] and r["images_per_s"] > 0
    for backend in ("fused", "onnxruntime"):
        assert main(["bench", "mobilenet_v3_small_100", "--backend", backend, "--threads", "1",
                     "--resolution", str(RES), "--warmup", "1", "--iters", "3", "--json"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["backend"] == backend and r["threads"] == 1 and r["median_ms"] > 0
    image = next((SAMPLE_DIR / "val" / CLASSES[0]).iterdir())
    assert main(["predict", str(out), str(image), "--top-k", "2"]) == 0
    assert str(image) in capsys.readouterr().out
    # an int8 ONNX file runs on the int8 backend (in onnxruntime); a float one is refused
    from onnxruntime.quantization import quantize_dynamic
    quantize_dynamic(str(out), str(tmp_path / "q.onnx"))
    assert main(["bench", str(tmp_path / "q.onnx"), "--backend", "int8", "--iters", "2",
                 "--warmup", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "int8"
    assert main(["bench", str(out), "--backend", "int8"]) == 2
    assert "not an int8" in capsys.readouterr().err


def test_cli_refusals(tmp_path, capsys):
    from mobilenets.cli.main import main
    assert main(["bench", "mobilenet_v1_025", "--backend", "int8"]) == 2
    assert "mobilenets quantize" in capsys.readouterr().err
    assert main(["export", "mobilenet_v1_025", "--opset", "13",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "opset 18 or newer" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2



# ---------------------------------------------------------------- onnxruntime profile

def test_profile_onnx_splits_kernel_time_by_convolution_shape(tmp_path):
    from mobilenets.deploy.runtimes.onnxruntime.profile import format_profile, profile_onnx
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10).eval()
    path = export_onnx(model, tmp_path / "v2.onnx", resolution=RES)
    x = np.random.default_rng(0).standard_normal((1, 3, RES, RES), dtype=np.float32)
    r = profile_onnx(path, x, iters=3, warmup=1, threads=1)
    ops = {o["op"]: o for o in r["ops"]}
    # every convolution of the folded model ran, counted by shape, and the 3x3 stem
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    dw = sum(m.groups > 1 for m in convs)
    pw = sum(m.groups == 1 and m.kernel_size == (1, 1) for m in convs)
    counts = {shape: sum(o["nodes"] for op, o in ops.items() if op.endswith(shape))
              for shape in ("depthwise", "1x1", "3x3")}
    assert counts == {"depthwise": dw, "1x1": pw, "3x3": 1}
    assert abs(sum(o["share"] for o in r["ops"]) - 1) < 1e-6
    assert all(o["ms"] > 0 for o in r["ops"]) and r["run_ms"] > 0
    assert r["kernel_ms"] == pytest.approx(sum(o["ms"] for o in r["ops"]))
    assert "depthwise" in format_profile(r)


def test_cli_bench_profile(tmp_path, capsys, keep_threads):
    from mobilenets.cli.main import main
    assert main(["bench", "mobilenet_v1_025", "--backend", "onnxruntime", "--threads", "1",
                 "--resolution", str(RES), "--warmup", "1", "--iters", "2", "--profile",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert any(o["op"].endswith("depthwise") for o in r["profile"]["ops"])
    assert main(["bench", "mobilenet_v1_025", "--backend", "eager", "--profile"]) == 2
    assert "--profile" in capsys.readouterr().err


# ---------------------------------------------------------------- onnxruntime layout rewrite

def _optimized_ops(path, rewrite, tmp_path):
    """Operator types of the graph onnxruntime runs, after its optimisations."""
    from mobilenets.deploy.runtimes.onnxruntime.session import session_options
    from mobilenets.deploy.runtimes.onnxruntime.session import cpu_session
    so = session_options(1)
    so.optimized_model_filepath = str(tmp_path / f"optimized-{rewrite}.onnx")
    session = cpu_session(path, so, rewrite)
    return session, [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_se_gate_rewrite_keeps_outputs_and_removes_reorders(tmp_path, dynamic_batch):
    from mobilenets.deploy.runtimes.onnxruntime.rewrite import blocked_layout_cpu, broadcast_mul_to_resize
    from mobilenets.layers.squeeze_excite import SqueezeExcite
    model = randomize_bn(mobilenets.create_model("mobilenet_v3_small_100", num_classes=10))
    path = export_onnx(model.eval(), tmp_path / "v3s.onnx", resolution=RES,
                       dynamic_batch=dynamic_batch)
    proto = onnx.load(str(path))
    # one Resize per squeeze-excite gate; a second pass finds nothing left to rewrite
    assert broadcast_mul_to_resize(proto) == sum(isinstance(m, SqueezeExcite)
                                                 for m in model.modules())
    assert broadcast_mul_to_resize(proto) == 0
    onnx.checker.check_model(proto)
    x = np.random.default_rng(0).standard_normal((2, 3, RES, RES), dtype=np.float32)
    if not dynamic_batch:
        x = x[:1]
    plain, plain_ops = _optimized_ops(path, False, tmp_path)
    fast, fast_ops = _optimized_ops(path, True, tmp_path)
    ref, got = plain.run(None, {"input": x})[0], fast.run(None, {"input": x})[0]
    assert np.array_equal(got, ref)       # nearest upsampling of a 1x1 gate is its broadcast
    if blocked_layout_cpu():
        # the gates' Muls now run in onnxruntime's blocked layout: far fewer reorders
        reorders = [sum(op.startswith("Reorder") for op in ops) for ops in (plain_ops, fast_ops)]
        assert reorders[1] < reorders[0] / 3, reorders
        assert fast_ops.count("Upsample") == fast_ops.count("Mul") - 1  # the head's hard-swish


def test_se_gate_rewrite_leaves_other_graphs_alone(tmp_path):
    from mobilenets.deploy.runtimes.onnxruntime.rewrite import broadcast_mul_to_resize
    v2 = export_onnx(mobilenets.create_model("mobilenet_v2_035", num_classes=10).eval(),
                     tmp_path / "v2.onnx", resolution=RES)
    proto = onnx.load(str(v2))
    assert broadcast_mul_to_resize(proto) == 0
    # a gate is computed and per channel: not a Mul of two full-size maps, nor a constant scale
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 4, 4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["x", "x"], ["xx"]),
         onnx.helper.make_node("Mul", ["xx", "c"], ["xc"]),
         onnx.helper.make_node("GlobalAveragePool", ["x"], ["g"]),
         onnx.helper.make_node("Mul", ["xc", "g"], ["y"])], "g", [x], [y],
        [onnx.numpy_helper.from_array(np.ones((1, 8, 1, 1), np.float32), "c")])
    assert broadcast_mul_to_resize(onnx.helper.make_model(graph)) == 1
    assert broadcast_mul_to_resize(onnx.helper.make_model(graph), block=16) == 0


def test_dynamic_batch_quantizes_with_any_image_count(dynamic, tmp_path):
    """A symbolic batch is calibrated in batches of one size (the largest divisor of the
    image count up to 8): onnxruntime's percentile calibrator failed on a smaller last one."""
    from mobilenets.deploy import quantize_onnx
    from mobilenets.deploy.quantize import equal_batches
    batches = equal_batches([torch.zeros(8, 3, 2, 2)] * 6 + [torch.zeros(2, 3, 2, 2)], 8)
    assert [len(b) for b in batches] == [5] * 10                    # 50 images
    assert [len(b) for b in equal_batches([torch.zeros(7, 1)] * 2, 8)] == [7, 7]
    model, path = dynamic
    q = OnnxModel(quantize_onnx(path, tmp_path / "int8.onnx", SAMPLE_DIR, num_images=13))
    assert q(torch.rand(3, 3, RES, RES)).shape == (3, len(CLASSES))
