"""``mobilenets bench MODEL --all-runtimes``: every runtime side by side for one model
(:mod:`mobilenets.deploy.compare`, which ``benchmarks/bench_runtimes.py`` also runs).

Real computations: a MobileNetV2 0.35 with one block per stage (depth_mult 0.1, random
weights, 32 px) is exported to ONNX and ``.pte``, quantized for each, and every file is timed
once. The command runs in a process of its own, so OpenVINO is never loaded into the main
test process (``test_openvino.py`` says why). Speed is not asserted, only that every row is
there and its ratio is taken against onnxruntime fp32.
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch

import mobilenets
from mobilenets.cli.main import main

pytest.importorskip("onnxruntime")
pytest.importorskip("executorch")
pytest.importorskip("torchao")
from mobilenets.deploy.compare import CANDIDATES, REFERENCE, format_table, measure  # noqa: E402

OPENVINO = importlib.util.find_spec("openvino") is not None    # found, not imported


def test_all_runtimes_one_table(tmp_path):
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v2_035", num_classes=10, resolution=32,
                                    depth_mult=0.1)
    mobilenets.save(model, tmp_path / "tiny")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(mobilenets.__path__[0].rsplit(os.sep, 1)[0]),
                      os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-m", "mobilenets", "bench", str(tmp_path / "tiny"),
                          "--all-runtimes", "--iters", "1", "--repeats", "1", "--warmup", "0",
                          "--num-images", "2", "--threads", "1", "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads(run.stdout)
    assert (r["model"], r["resolution"], r["threads"], r["reference"]) == \
        ("mobilenet_v2_035", 32, 1, REFERENCE)
    rows = r["results"]
    expected = [n for n in CANDIDATES if OPENVINO or not n.startswith("openvino")]
    assert list(rows) == expected
    assert ("openvino" in r["skipped"]) == (not OPENVINO)
    assert set(r["build_s"]) == {"onnx fp32", "onnx int8", "pte fp32", "pte int8"}
    ref = rows[REFERENCE]["median_ms"]
    for name, row in rows.items():         # one round: the ratio is the two medians' ratio
        assert row["median_ms"] > 0 and row["repeat_ms"] == [row["median_ms"]]
        assert row["ratio"] == pytest.approx(row["median_ms"] / ref, rel=1e-9), name
    assert rows[REFERENCE]["ratio"] == 1.0
    table = format_table(r["model"], rows, r["resolution"], r["threads"]).splitlines()
    assert "ratio = candidate / onnxruntime fp32" in table[0]
    for name, line in zip(expected, table[2:]):
        assert line.startswith(f"  {name:18s} ") and f" {rows[name]['ratio']:6.3f} [" in line
    assert len(table) == 2 + len(expected)


def test_measure_interleaves_and_takes_ratios_per_round():
    calls = []

    def slow(x):
        calls.append("slow")
        time.sleep(0.002)

    def fast(x):
        calls.append("fast")

    res = measure({"fast": fast, "slow": slow}, torch.zeros(1), warmup=1, repeats=3, iters=2,
                  reference="slow")
    # warm-up once each, then rounds in rotated order: fast slow, slow fast, fast slow
    assert calls == ["fast", "slow"] + ["fast"] * 2 + ["slow"] * 4 + ["fast"] * 4 + \
        ["slow"] * 2
    f, s = res["fast"], res["slow"]
    ratios = [a / b for a, b in zip(f["repeat_ms"], s["repeat_ms"])]
    assert f["ratio"] == statistics.median(ratios)
    assert (f["ratio_min"], f["ratio_max"]) == (min(ratios), max(ratios))
    assert f["median_ms"] == statistics.median(f["repeat_ms"]) and s["ratio"] == 1.0
    assert s["min_ms"] >= 2.0                   # the sleep is inside the timed call
    with pytest.raises(ValueError, match="reference 'x' is not among"):
        measure({"fast": fast}, torch.zeros(1), reference="x")


@pytest.mark.parametrize("argv, words", [
    (["bench", "m.pte", "--all-runtimes"], "already an exported file"),
    (["bench", "mobilenet_v2_035", "--all-runtimes", "--runtime", "onnxruntime"],
     "leave out --runtime"),
    (["bench", "mobilenet_v2_035", "--all-runtimes", "--batch", "2"], "batch 1"),
    (["bench", "mobilenet_v2_035", "--all-runtimes", "--calib", "no/such/dir"],
     "calibration folder no/such/dir does not exist"),
    (["bench", "mobilenet_v2_035", "--repeats", "3", "--no-openvino"],
     "--repeats, --no-openvino apply to --all-runtimes"),
])
def test_all_runtimes_bad_options(argv, words, capsys):
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_all_runtimes_names_the_width_it_timed(monkeypatch, capsys):
    """--width-mult: the network compared is the registered name at that width, and the
    table and JSON say so (the runtimes' timing itself is test_all_runtimes_one_table's)."""
    from mobilenets.deploy import compare
    seen = {}

    def fake(model, calib, **options):
        seen["width"] = model.config["width_mult"]
        return {"model": model.config["name"], "results": {}, "resolution": 32, "threads": 1,
                "skipped": {}}
    monkeypatch.setattr(compare, "compare_runtimes", fake)
    assert main(["bench", "mobilenet_v2_100", "--all-runtimes", "--width-mult", "0.5",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert seen["width"] == 0.5 and r["width_mult"] == 0.5
    assert r["model"] == "mobilenet_v2_100 at width 0.5"
