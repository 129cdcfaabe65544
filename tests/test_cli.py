"""The command line: list, profile (text and --json), costs, errors; and no timm needed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mobilenets
from mobilenets.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert out.count("\n") == len(mobilenets.list_models())
    code, out, _ = run(capsys, "list", "efficientnet_*")
    assert code == 0 and out.count("\n") == 16


def test_profile_json_matches_python_api(capsys):
    code, out, _ = run(capsys, "profile", "mobilenet_v1_100", "--width-mult", "0.5",
                       "--resolution", "160", "--num-classes", "10", "--json")
    assert code == 0
    d = json.loads(out)
    p = mobilenets.profile(mobilenets.create_model("mobilenet_v1_100", width_mult=0.5,
                                                   num_classes=10), (3, 160, 160))
    assert d["params"] == p.params and d["macs"] == p.macs and d["resolution"] == 160
    assert set(d["by_type"]) >= {"conv1x1", "depthwise", "conv", "fc", "se"}


def test_profile_text_by_type_and_per_layer(capsys):
    code, out, _ = run(capsys, "profile", "mobilenetv3_small_100", "--by-type", "--per-layer")
    assert code == 0
    assert "2,542,856" in out and "Squeeze-excite" in out and "blocks.0.0.se.reduce" in out


def test_errors_exit_2_with_message(capsys):
    code, _, err = run(capsys, "profile", "mobilenet_v3_larg")
    assert code == 2 and "did you mean" in err
    code, _, err = run(capsys, "profile", "mobilenet_v2_100", "--resolution", "8")
    assert code == 2 and "total stride" in err


def test_costs_prints_every_model_with_paper_figures(capsys):
    code, out, _ = run(capsys, "costs")
    assert code == 0
    for name in mobilenets.list_models(task="classification"):
        assert name in out
    assert "3,504,872" in out and "300.8" in out



def test_costs_at_one_resolution_within_a_budget_sorted(capsys):
    code, out, _ = run(capsys, "costs", "--resolution", "128", "--max-macs", "60", "--sort",
                       "macs")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.split()[:1]
            and line.split()[0] in mobilenets.list_models(task="classification")]
    macs = [float(r[3]) for r in rows]
    assert macs == sorted(macs) and 0 < max(macs) <= 60 and len(rows) >= 5
    assert all(r[1] == "128" for r in rows)
    names = [r[0] for r in rows]
    assert "mobilenet_v1_025" in names and "efficientnet_b0" not in names
    # the papers' figure where one exists at that size: MobileNetV1 0.25 at 128 px, 14 MMACs
    assert rows[names.index("mobilenet_v1_025")][4] == "14"

def _env_without_timm(tmp_path):
    # a 'timm' that fails to import shadows the installed one
    (tmp_path / "timm.py").write_text("raise ImportError('timm is hidden for this test')\n")
    return dict(os.environ, PYTHONPATH=str(tmp_path))


def test_works_without_timm(tmp_path):
    env = _env_without_timm(tmp_path)
    code = ("import mobilenets, torch\n"
            "m = mobilenets.create_model('efficientnet_b0').eval()\n"
            "print(m(torch.zeros(1, 3, 64, 64)).shape)\n"
            "import sys; assert 'timm' not in sys.modules or sys.modules['timm'] is None\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "mobilenets", "profile", "mobilenet_v2_050",
                        "--json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] == 1_968_680


def test_console_script_version():
    exe = os.path.join(os.path.dirname(sys.executable), "mobilenets")
    if not os.path.exists(exe):
        pytest.skip("console script not installed (run via `make test`)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and mobilenets.__version__ in r.stdout


def test_bad_arguments_and_inputs_are_clear_errors(tmp_path, capsys):
    """Each bad request names the problem: exit 2 and a message, never a traceback."""
    from mobilenets.data import SAMPLE_DIR
    from mobilenets.deploy import export_onnx
    image = str(next((SAMPLE_DIR / "val").rglob("*.jpg")))
    for argv in (["predict", "mobilenet_v2_035", image, "--top-k", "0"],
                 ["eval", "mobilenet_v2_035", "--data", str(SAMPLE_DIR), "--resolution", "-64"],
                 ["export", "mobilenet_v2_035", "--resolution", "0"],
                 ["bench", "mobilenet_v2_035", "--threads", "-1"],
                 ["quantize", "mobilenet_v2_035", "--calib", str(SAMPLE_DIR), "--method", "qat",
                  "--epochs", "0"]):
        with pytest.raises(SystemExit) as exit_:           # argparse: a usage error
            main(argv)
        assert exit_.value.code == 2
        assert "must be a positive integer" in capsys.readouterr().err, argv
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, resolution=64)
    folder = tmp_path / "m"
    mobilenets.save(model, folder)
    onnx_file = export_onnx(model, tmp_path / "m.onnx")
    (tmp_path / "broken.onnx").write_bytes(onnx_file.read_bytes()[:5000])
    run_dir = tmp_path / "run"                        # a training run's folder
    mobilenets.save(model, run_dir / "best")
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    cases = [
        (["predict", str(run_dir / "last.pt"), image],
         f"is a training checkpoint (to continue the run: mobilenets train --resume "
         f"{run_dir / 'last.pt'}); the run's model is {run_dir / 'best'}"),
        (["export", str(run_dir)], f"is a training run's folder; its model is {run_dir / 'best'}"),
        (["eval", str(onnx_file), "--data", str(SAMPLE_DIR), "--resolution", "96"],
         "takes 64 px inputs, not 96"),
        (["predict", str(tmp_path / "broken.onnx"), image], "is not a readable ONNX file"),
        (["inspect", str(onnx_file)], "is an ONNX file"),
        (["prune", str(onnx_file), "--ratio", "0.3", "--out", str(tmp_path / "p")],
         "is an ONNX file"),
        (["predict", str(folder), image, "--weights", str(folder / "model.safetensors")],
         "--weights does not apply to the saved-model folder"),
        (["predict", str(tmp_path / "mistyped"), image], "no model folder or file"),
        (["predict", str(tmp_path), image], "not a mobilenets saved-model folder"),
        (["eval", "mobilenet_v2_035", "--data", str(SAMPLE_DIR)],
         "predicts 1000 classes and has no class names"),
        (["eval", str(folder), "--data", str(SAMPLE_DIR), "--confusion-png",
          str(tmp_path / "no" / "c.png")], "give a file path in an existing folder"),
        (["export", str(folder), "--out", str(tmp_path)], "is a folder"),
        (["export", str(folder), "--out", str(onnx_file)], "already exists; pass --overwrite"),
        (["quantize", str(onnx_file), "--calib", str(SAMPLE_DIR), "--out", str(onnx_file),
          "--overwrite"], "is the input model"),
        (["quantize", str(folder), "--calib", str(SAMPLE_DIR), "--out",
          str(folder / "model.safetensors"), "--overwrite"], "is a file of the input model"),
        (["export", str(folder), "--out", str(folder / "config.json"), "--overwrite"],
         "is a file of the input model"),
        (["export", str(folder), "--format", "pte", "--out", str(tmp_path / "m.onnx")],
         "does not end in .pte, the format written"),
        (["export", str(folder), "--out", str(tmp_path / "noext")], "give --out noext.onnx"),
    ]
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a protobuf")
    cases.append((["bench", str(junk), "--iters", "1"], "junk.onnx is not a readable ONNX file"))
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
    with pytest.raises(IsADirectoryError, match="is a folder; give the path of the .onnx"):
        mobilenets.export_onnx(mobilenets.load(folder), tmp_path)
    code, out, err = run(capsys, "predict", "mobilenet_v2_035", image, "--top-k", "2", "--json")
    assert code == 0 and "random weights" in err
    (result,) = json.loads(out)["predictions"]
    assert result["image"] == image and len(result["classes"]) == 2
    assert result["probabilities"] == sorted(result["probabilities"], reverse=True)


def test_predict_skips_an_unreadable_image_in_a_folder(tmp_path, capsys):
    from mobilenets.data import SAMPLE_DIR
    import shutil
    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted((SAMPLE_DIR / "val").rglob("*.jpg"))[:2]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "AAA.jpg").write_bytes(b"not an image")          # sorts first
    code, out, err = run(capsys, "predict", "mobilenet_v2_035", str(folder), "--json")
    assert code == 0 and "skipping" in err and "AAA.jpg" in err
    results = json.loads(out)["predictions"]
    assert [Path(r["image"]).name for r in results] == ["AAA.jpg"] + [p.name for p in good]
    assert "error" in results[0] and all(len(r["classes"]) == 5 for r in results[1:])
    code, out, err = run(capsys, "predict", "mobilenet_v2_035", str(folder / "AAA.jpg"))
    assert code == 2 and "cannot read image" in err and "AAA.jpg" in err
    code, out, err = run(capsys, "predict", "mobilenet_v2_035", str(folder),
                         str(folder / "typo.jpg"))                  # a mistyped name: an error
    assert code == 2 and "typo.jpg does not exist" in err
    for path in good:
        (folder / path.name).unlink()
    (folder / "BBB.jpg").write_bytes(b"")
    code, out, err = run(capsys, "predict", "mobilenet_v2_035", str(folder))
    assert code == 2 and "none of the 2 images could be read" in err


def test_a_closed_stdout_pipe_ends_quietly():
    """`mobilenets list | head -1`: the reader goes away; no traceback, status 1."""
    proc = subprocess.Popen([sys.executable, "-m", "mobilenets", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                        # before anything is read
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == ""


def test_eval_text_counts_the_unreadable_images(tmp_path, capsys):
    import shutil
    from mobilenets.data import SAMPLE_DIR
    classes = sorted(p.name for p in (SAMPLE_DIR / "val").iterdir())[:2]
    for name in classes:
        (tmp_path / "val" / name).mkdir(parents=True)
        for path in sorted((SAMPLE_DIR / "val" / name).glob("*.jpg"))[:2]:
            shutil.copy(path, tmp_path / "val" / name / path.name)
    (tmp_path / "val" / classes[0] / "junk.jpg").write_bytes(b"not an image")
    model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=2, resolution=64)
    mobilenets.save(model, tmp_path / "m", class_names=classes)
    code, out, err = run(capsys, "eval", str(tmp_path / "m"), "--data", str(tmp_path))
    assert code == 0 and out.startswith("4 images (1 unreadable, skipped): top-1 "), out
