"""The command line: list, profile (text and --json), costs, errors; and no timm needed."""

import json
import os
import subprocess
import sys

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
    assert code == 0 and out.count("\n") == 8


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
    for name in mobilenets.list_models():
        assert name in out
    assert "3,504,872" in out and "300.8" in out


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
