"""What a new user meets on the command line: --help, one --runtime/--precision/--format
vocabulary (and bench's deprecated --backend), predict on a folder, the data summary of
train, progress lines in logs, output files beside the input, quantize's speed check, and
--allow-download with a clear error when the download fails (no network used)."""

import argparse
import io
import json
import shutil
import urllib.error

import pytest
import torch

import mobilenets
from mobilenets.cli import quantize_cmds
from mobilenets.cli.deploy_cmds import backend_for
from mobilenets.cli.main import build_parser, main
from mobilenets.data import SAMPLE_DIR
from mobilenets.training.reporting import progress_bar

RES = 32
CLASSES = sorted(p.name for p in (SAMPLE_DIR / "train").iterdir() if p.is_dir())


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def saved(tmp_path):
    """A 10-class model of the sample at 32 px, saved as a run's best/ folder."""
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, resolution=RES)
    folder = tmp_path / "run" / "best"
    mobilenets.save(model.eval(), folder, class_names=CLASSES)
    return folder


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- 1. --help

def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_command_and_option_has_a_help_line(capsys):
    commands = _commands()
    assert len(commands) == 14
    for name, parser in commands.items():
        assert parser.description, name            # `mobilenets NAME --help` says what it does
        for action in parser._actions:
            assert action.help and "\n" not in action.help, (name, action.dest)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    # closed sets list their values; the model names point to `mobilenets list`
    assert "{sgd,rmsprop,adamw}" in text and "{cosine,step,exponential,constant}" in text
    assert "mobilenets list" in text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "{eager,onnxruntime,openvino,executorch}" in text and "{fp32,int8}" in text


# ---------------------------------------------------------------- 2. one vocabulary

def test_runtime_format_precision_are_one_definition_everywhere():
    commands = _commands()
    seen = {}
    for name, parser in commands.items():
        for action in parser._actions:
            if action.dest in ("runtime", "precision", "format"):
                seen.setdefault(action.dest, set()).add(tuple(action.choices))
    assert seen == {"runtime": {("eager", "onnxruntime", "openvino", "executorch")},
                    "precision": {("fp32", "int8")}, "format": {("onnx", "pte")}}
    runtime_users = {n for n, p in commands.items()
                     if any(a.dest == "runtime" for a in p._actions)}
    assert runtime_users == {"eval", "predict", "bench", "quantize"}


def test_backend_for_maps_the_vocabulary_to_bench_backends():
    assert backend_for("eager", "fp32") == "eager"
    assert backend_for("eager", "fp32", "fuse") == "fused"
    assert backend_for("eager", "fp32", "compile") == "compile"
    assert backend_for("onnxruntime", "fp32") == "onnxruntime"
    assert backend_for("onnxruntime", "int8") == "int8"
    assert backend_for("openvino", "int8") == "openvino"
    with pytest.raises(ValueError, match="mobilenets quantize"):
        backend_for("eager", "int8")


def test_bench_new_options_and_deprecated_backend(saved, tmp_path, capsys, keep_threads):
    common = ["--threads", "1", "--warmup", "0", "--iters", "1", "--json"]
    code, out, err = run(capsys, "bench", saved, "--runtime", "eager", "--optimize", "fuse",
                         *common)
    r = json.loads(out)
    assert code == 0 and (r["backend"], r["runtime"], r["precision"]) == ("fused", "eager",
                                                                         "fp32")
    assert "deprecated" not in err
    # the old spelling still works, says what replaces it, and runs the same backend
    with pytest.warns(DeprecationWarning, match="--backend is deprecated"):
        code, out, err = run(capsys, "bench", saved, "--backend", "fused", *common)
    assert code == 0 and json.loads(out)["backend"] == "fused"
    assert "--backend is deprecated" in err and "--runtime" in err
    with pytest.warns(DeprecationWarning):
        code, _, err = run(capsys, "bench", saved, "--backend", "int8", "--runtime", "eager")
    assert code == 2 and "--backend (deprecated) and --runtime both given" in err
    code, _, err = run(capsys, "bench", saved, "--precision", "int8")
    assert code == 2 and "mobilenets quantize" in err
    # --width-mult: a registered name at that width (as profile's); a saved model keeps its own
    from mobilenets.cli.run_cmds import load_cli_model
    half = load_cli_model("mobilenet_v2_100", None, width_mult=0.5)
    assert half.config["width_mult"] == 0.5
    count = lambda m: sum(p.numel() for p in m.parameters())         # noqa: E731
    assert count(half) == count(mobilenets.create_model("mobilenet_v2_050")) < count(
        mobilenets.create_model("mobilenet_v2_100"))
    code, out, _ = run(capsys, "bench", "mobilenet_v2_100", "--width-mult", "0.5",
                       "--resolution", "32", *common)
    assert code == 0 and json.loads(out)["width_mult"] == 0.5
    code, _, err = run(capsys, "bench", saved, "--width-mult", "0.5")
    assert code == 2 and "leave --width-mult out" in err
    # quantize: --quantizer, with --backend its deprecated spelling
    with pytest.warns(DeprecationWarning):
        code, _, err = run(capsys, "quantize", saved, "--calib", SAMPLE_DIR, "--backend",
                           "pt2e", "--quantizer", "onnxruntime")
    assert code == 2 and "--backend is deprecated" in err and "--quantizer" in err
    assert "disagree" in err
    code, _, err = run(capsys, "bench", saved, "--runtime", "onnxruntime", "--optimize", "fuse")
    assert code == 2 and "--optimize fuse applies to --runtime eager" in err
    # eval and predict take the same --runtime: eager is PyTorch, and a .onnx file is not
    image = next((SAMPLE_DIR / "val" / CLASSES[0]).iterdir())
    code, _, err = run(capsys, "predict", tmp_path / "m.onnx", image, "--runtime", "eager")
    assert code == 2 and "not eager" in err
    code, out, _ = run(capsys, "predict", saved, image, "--runtime", "eager", "--json")
    assert code == 0 and len(json.loads(out)["predictions"]) == 1


# ---------------------------------------------------------------- 3. predict on a folder

def test_predict_takes_a_folder_of_images(saved, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    sources = sorted((SAMPLE_DIR / "val" / CLASSES[1]).iterdir())[:3]
    for i, src in enumerate(sources):
        shutil.copy(src, folder / f"{'cba'[i]}{src.suffix}")
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    shutil.copy(sources[0], folder / "sub" / "d.jpg")   # sub-folders are not searched
    single = sorted((SAMPLE_DIR / "val" / CLASSES[0]).iterdir())[0]
    code, out, err = run(capsys, "predict", saved, folder, single, "--top-k", "1", "--json")
    assert code == 0
    assert f"note: 3 images directly in {folder}; its 1 sub-folders (sub) are not searched" \
        in err
    images = [p["image"] for p in json.loads(out)["predictions"]]
    assert images == [str(folder / f"{c}{sources[0].suffix}") for c in "abc"] + [str(single)]
    code, _, err = run(capsys, "predict", saved, tmp_path / "run")     # only a sub-folder
    assert code == 2 and "holds no image files" in err


# ---------------------------------------------------------------- 4. train's data summary

def test_train_prints_a_data_summary_before_training(tmp_path, capsys):
    # --epochs 0: training refuses to start, after the summary (no steps run in this test)
    argv = ["train", "--model", "mobilenet_v2_035", "--resolution", RES, "--epochs", 0,
            "--out", tmp_path / "r"]
    code, out, err = run(capsys, *argv)
    assert code == 2 and "epochs must be >= 1" in err
    assert f"data: 10 classes ({', '.join(CLASSES[:8])}, ... (2 more))" in out
    assert "600 train images" in out and "250 val images" in out
    assert f"model: mobilenet_v2_035 at {RES} px, weights random" in out
    assert not (tmp_path / "r").exists()          # the refused run left no folder behind
    code, _, err = run(capsys, "train", "--data", tmp_path / "missing", "--out", tmp_path / "r")
    assert code == 2 and "does not exist" in err


def test_walkthrough_mistakes_get_their_fix(saved, tmp_path, capsys):
    """What a new user's walkthrough tripped on: a folder of class folders trains with --val;
    an empty class is "no images", not 0%; warm-up longer than the run and a teacher trained
    on other inputs are warned about; timm's pretrained=True and quantizing a .pte point to
    the fix."""
    flat = tmp_path / "flat"
    shutil.copytree(SAMPLE_DIR / "train", flat)
    teacher = mobilenets.load(saved)
    teacher.preprocess.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    mobilenets.save(teacher, tmp_path / "teacher", class_names=CLASSES)
    code, out, err = run(capsys, "train", "--model", "mobilenet_v2_035", "--data", flat,
                         "--val", SAMPLE_DIR / "val", "--resolution", RES, "--epochs", 1,
                         "--max-steps-per-epoch", 1, "--batch-size", 4, "--warmup-epochs", 2,
                         "--teacher", tmp_path / "teacher", "--out", tmp_path / "r",
                         "--no-progress")
    assert code == 0 and f"600 train images in {flat}" in out
    assert "warmup_epochs 2 >= epochs 1" in err
    assert "the teacher was trained with another input mean and std" in err
    code, _, err = run(capsys, "train", "--data", flat, "--out", tmp_path / "r2")
    assert code == 2 and "trains with --val FOLDER" in err

    val = tmp_path / "val"
    shutil.copytree(SAMPLE_DIR / "val", val)
    for f in (val / CLASSES[0]).iterdir():
        f.unlink()
    code, out, _ = run(capsys, "eval", saved, "--data", val, "--json")
    assert code == 0 and json.loads(out)["per_class"][CLASSES[0]] is None
    code, out, _ = run(capsys, "eval", saved, "--data", val)
    assert f"{CLASSES[0]:24s} no images" in out

    with pytest.raises(TypeError, match="pretrained=True is weights='timm'"):
        mobilenets.create_model("mobilenet_v2_035", pretrained=True)
    with pytest.raises(TypeError, match="timm's drop_rate is dropout here"):
        mobilenets.create_model("mobilenet_v2_035", drop_rate=0.2)
    # timm code that passes pretrained=False everywhere: the default, taken
    model = mobilenets.create_model("mobilenet_v2_035", pretrained=False, num_classes=3)
    assert model.get_classifier() is model.classifier and model.num_classes == 3
    model.reset_classifier(4, None)          # timm's "keep the pooling"
    model.reset_classifier(5, "avg")
    assert model.get_classifier().out_features == 5
    with pytest.raises(ValueError, match="average only"):
        model.reset_classifier(5, "max")
    # timm's names match the registered models they alias
    listed = mobilenets.list_models("mobilenetv2*")
    assert {"mobilenet_v2_100", "mobilenet_v2_140"} <= set(listed)
    assert set(listed) <= set(mobilenets.list_models("mobilenet_v2_*"))
    (tmp_path / "m.pte").write_bytes(b"")
    code, _, err = run(capsys, "quantize", tmp_path / "m.pte", "--calib", SAMPLE_DIR)
    assert code == 2 and "cannot be quantized again" in err


def test_warnings_print_as_one_line_on_the_command_line(capsys):
    import warnings
    from mobilenets.cli.main import _warning_line
    before = warnings.formatwarning
    assert _warning_line("ReLU6 kept", mobilenets.weights.WeightsNote, "x.py", 3,
                         "create_model(...)") == "mobilenets: WeightsNote: ReLU6 kept\n"
    assert _warning_line("slow", UserWarning, "x.py", 3) == "mobilenets: warning: slow\n"
    run(capsys, "list", "*v3_small_100")
    assert warnings.formatwarning is before          # main() restores Python's own


def test_torchaos_import_notice_is_not_printed():
    """torch logs a deprecation notice when torchao registers an Enum at import; the library
    drops that one line (the PT2E and .pte paths import torchao)."""
    import subprocess
    import sys
    code = "import mobilenets.deploy.quantize_pt2e, torchao.quantization.pt2e"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "register_constant()" not in done.stderr
    plain = subprocess.run([sys.executable, "-c", "import torchao.quantization.pt2e"],
                           capture_output=True, text=True, timeout=120)
    assert "register_constant()" in plain.stderr      # what is dropped, still there without


# ---------------------------------------------------------------- 5. progress in logs

class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_few_lines_when_not_a_terminal():
    log = io.StringIO()
    bar = progress_bar(True, 1000, "epoch 1/3", stream=log)
    for step in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("epoch 1/3: 1000/1000 steps (100%)")
    assert "loss" in lines[-1]
    tqdm = pytest.importorskip("tqdm")
    assert isinstance(progress_bar(True, 10, "x", stream=_Terminal()), tqdm.tqdm)
    quiet = io.StringIO()
    bar = progress_bar(False, 10, "x", stream=quiet)
    bar.update(10), bar.close()
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------- 6, 7. output names, speed

def test_export_and_quantize_write_beside_the_input(saved, tmp_path, capsys, monkeypatch,
                                                    keep_threads):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "export", saved)
    assert code == 0 and (saved / "model.onnx").is_file() and str(saved / "model.onnx") in out
    code, _, err = run(capsys, "export", saved)
    assert code == 2 and "already exists; pass --overwrite" in err
    # a registered name writes NAME.onnx in the current folder (refused here: it exists)
    (tmp_path / "mobilenet_v2_035.onnx").write_text("an earlier export")
    code, _, err = run(capsys, "export", "mobilenet_v2_035")
    assert code == 2 and "mobilenet_v2_035.onnx already exists" in err
    # quantize an .onnx file: X-int8.onnx beside it; --no-check-speed times nothing
    calls = []

    def fake_time_calls(fn, x, iters):     # the int8 file twice as slow as the float one
        calls.append("int8" if "int8" in fn.path.name else "fp32")
        return [0.002 if calls[-1] == "int8" else 0.001] * iters

    monkeypatch.setattr(quantize_cmds, "time_calls", fake_time_calls)
    quantize = ["--calib", SAMPLE_DIR, "--num-images", 4, "--calibration", "minmax"]
    code, out, err = run(capsys, "quantize", saved / "model.onnx", *quantize, "--no-check-speed")
    int8 = saved / "model-int8.onnx"
    assert code == 0 and int8.is_file() and not calls and "warning" not in err
    # a saved-model folder quantizes to the same place: refused without --overwrite
    code, _, err = run(capsys, "quantize", saved, *quantize)
    assert code == 2 and f"{int8} already exists; pass --overwrite" in err
    # the speed check times both files interleaved and warns when int8 is slower
    code, _, err = run(capsys, "quantize", saved / "model.onnx", *quantize, "--overwrite")
    assert code == 0 and "warning: the int8 file is not faster" in err and "2.00x" in err
    assert calls[2:6] == ["fp32", "int8", "fp32", "int8"]        # after one warm-up each
    # bench runs an .onnx file in onnxruntime at the file's own precision
    common = ["--threads", "1", "--warmup", "0", "--iters", "1", "--json"]
    for path, precision in ((saved / "model.onnx", "fp32"), (int8, "int8")):
        code, out, _ = run(capsys, "bench", path, *common)
        r = json.loads(out)
        assert code == 0 and (r["runtime"], r["precision"]) == ("onnxruntime", precision)
    code, _, err = run(capsys, "bench", saved / "model.onnx", "--precision", "int8")
    assert code == 2 and "not an int8" in err


# ---------------------------------------------------------------- 8. --allow-download

def test_allow_download_and_a_failed_download_is_one_clear_line(tmp_path, capsys,
                                                                monkeypatch):
    urls = []

    def no_network(url, dst, hash_prefix=None, progress=True):
        urls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    argv = ["eval", "mobilenet_v3_small_100", "--weights", "torchvision", "--data", SAMPLE_DIR]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--allow-download" in err and not urls
    code, _, err = run(capsys, *argv, "--allow-download")
    assert code == 2 and len(urls) == 1 and err.count("\n") == 1
    assert f"could not download {urls[0]}" in err and "name resolution" in err
    assert "--weights" in err and "Traceback" not in err
    code, _, err = run(capsys, "train", "--model", "mobilenet_v3_small_100", "--weights",
                       "torchvision", "--allow-download", "--out", tmp_path / "run")
    assert code == 2 and len(urls) == 2 and f"could not download {urls[0]}" in err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_ends_quietly_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """Ctrl-C during train: no traceback, status 130, and the resume command when the run
    has a checkpoint (the engine's last.pt)."""
    import mobilenets.tasks.classification as classification

    def interrupted(cfg, **kwargs):
        from pathlib import Path
        Path(cfg.out).mkdir(parents=True)
        (Path(cfg.out) / "last.pt").write_bytes(b"a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(classification, "train", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--data", str(SAMPLE_DIR), "--out", str(out), "--epochs", "1"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == (f"mobilenets train: interrupted; continue it with `mobilenets train "
                           f"--resume {out / 'last.pt'}`")
