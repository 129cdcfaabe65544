"""experiments/claims.py's own logic (issue 25): the ablation surgeries, the verdicts and the
Pareto fronts the page reports. The training runs themselves are the script's job."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def claims():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module("claims")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def test_verdict_rule(claims):
    assert claims.verdict([0.70, 0.71], [0.60, 0.69]) == "reproduced"
    assert claims.verdict([0.60, 0.62], [0.65, 0.70]) == "refuted"
    assert claims.verdict([0.60, 0.72], [0.65, 0.70]) == "inconclusive"
    assert claims.verdict([], [0.65]) == "not run"


def test_pareto_front(claims):
    points = [(c, c, t, n) for c, t, n in [(10, 0.60, "a"), (20, 0.58, "b"), (30, 0.70, "c"),
                                          (30, 0.65, "d"), (40, 0.70, "e"), (5, 0.50, "f")]]
    # b is beaten by a (cheaper, better), d by c (as cheap, better), e by c (as good, cheaper)
    assert claims._front(points) == ["f", "a", "c"]
    # measured latencies whose spreads overlap are not told apart: the less accurate twin
    # that timed faster by its median stays off the front
    timed = [(1.0, 1.3, 0.60, "twin-fast"), (1.1, 1.4, 0.62, "twin-good"),
             (2.0, 2.2, 0.70, "big")]
    assert claims._front(timed) == ["twin-good", "big"]


def test_matched_macs_interpolation_and_crossover(claims):
    """Claim 4's seed reading: a family's top-1 against the other's interpolated at the same
    MACs (linear in log10 MACs), and where the two curves cross."""
    v1 = [(10e6, 0.60), (100e6, 0.70)]
    assert claims.at_macs(v1, 10 ** 7.5) == pytest.approx(0.65)
    assert claims.at_macs(v1, 5e6) is None and claims.at_macs(v1, 200e6) is None
    fd = [(10e6, 0.66), (100e6, 0.68)]              # above at 10M, below at 100M
    lo, hi, found = claims.crossings(fd, v1)
    assert (lo, hi) == (10e6, 100e6) and len(found) == 1
    assert claims.at_macs(fd, found[0]) == pytest.approx(claims.at_macs(v1, found[0]))
    assert found[0] == pytest.approx(10 ** 7.75)     # +0.06 at 10M, -0.02 at 100M
    assert claims.crossings([(10e6, 0.9), (50e6, 0.95)], v1)[2] == []
    rows = {"FD 1.0": [{"macs": 40e6, "top1": 0.70}, {"macs": 40e6, "top1": 0.72}],
            "V1 1.0": [{"macs": 100e6, "top1": 0.70}], "V1 0.25": [{"macs": 10e6, "top1": 0.60}]}
    text = "\n".join(claims.matched_lines(rows, "FD", "V1"))
    assert "FD at 40.0 MMACs: 71.0%, V1 interpolated 66.0% (+5.0 points)" in text


def test_inversions_need_disjoint_spreads(claims):
    def item(name, macs, lo, hi):
        return {"variant": name, "macs": macs, "resolution": 112,
                "latency": {"x": {"min_ms": lo, "max_ms": hi}}}
    heavy_fast = item("heavy", 30e6, 1.0, 1.2)
    light_slow = item("light", 20e6, 1.5, 1.6)
    light_overlap = item("overlap", 20e6, 1.1, 1.6)
    assert claims.inversions([heavy_fast, light_slow], "x") == [("heavy", "light")]
    assert claims.inversions([heavy_fast, light_overlap], "x") == []


def test_classic_shortcut_twin_holds_the_trained_convolutions(claims):
    """A classic-shortcut model's plain twin (for the cost model and inspect) carries every
    one of its weights, and its MACs are the plain network's."""
    run = claims.Run("mobilenet_v2_050", resolution=64, surgery="classic-shortcut")
    torch.manual_seed(0)
    model = claims.build(run).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    twin = claims.plain_twin(model, run)
    ours, theirs = list(model.parameters()), list(twin.parameters())
    assert len(ours) == len(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    from mobilenets.cost.profile import profile
    plain = claims.build(claims.Run("mobilenet_v2_050", resolution=64))
    assert profile(twin, (3, 64, 64)).macs == profile(plain, (3, 64, 64)).macs
    # the surgery changes the function: the shortcuts join expansions, not bottlenecks
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model(x), twin(x))


def test_workers_share_the_grid(claims, tmp_path, monkeypatch):
    """Two workers never take the same run; a worker that died leaves nothing held."""
    monkeypatch.setattr(claims, "RUNS", tmp_path)
    run = claims.Run("mobilenet_v2_050")
    (tmp_path / run.name).mkdir()
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold,
                               str(tmp_path / run.name / "worker.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not claims.take(run)        # another live worker holds it
    finally:
        holder.kill()
        holder.wait()
    assert claims.take(run)                # its worker died: free again
    claims.release(run)
    assert claims.take(run)
    claims.release(run)


def test_records_survive_without_runs(claims, tmp_path, monkeypatch):
    """A finished run is known from its committed record alone (a new checkout has no
    runs/); claim 8 then times the run's architecture at its initialisation, and low-rank
    asks for its base to be retrained rather than failing on a missing file."""
    monkeypatch.setattr(claims, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(claims, "RECORDS", tmp_path / "records")
    run = claims.Run("mobilenet_v2_050", resolution=64)
    assert claims.finished(run) is None
    record = {"run": run.name, "variant": run.variant, "model": run.model, "options": {},
              "surgery": "", "train": {}, "resolution": 64, "seed": 0, "top1": 0.5}
    path = claims.write_record(f"runs/{run.name}.json", record)
    assert path.parent == tmp_path / "records" / "runs" and not list(path.parent.glob("*.part"))
    assert claims.finished(run) == record
    models = claims.latency_models()
    model, resolution, weights = models[run.variant]
    assert resolution == 64 and weights is None
    torch.manual_seed(run.seed)                 # the seed's initialisation, as trained from
    fresh = claims.build(run).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items())
    monkeypatch.setattr(claims, "LOWRANK_BASE", run)
    with pytest.raises(SystemExit, match="--redo"):
        claims.lowrank_runs(workers=0)


def test_lowrank_models_rebuilt_without_their_weights(claims, tmp_path, monkeypatch):
    """The low-rank comparison's models are timed in a checkout without runs/: rebuilt from
    the base's initialisation, with the trained models' MACs and params (their ranks and
    pruned widths do not depend on the weights); a record they do not match is not timed."""
    from mobilenets.compress import factorise, prune
    from mobilenets.cost.profile import profile
    monkeypatch.setattr(claims, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(claims, "RECORDS", tmp_path / "records")
    base_run = claims.Run("mobilenet_v2_050", resolution=64)
    monkeypatch.setattr(claims, "LOWRANK_BASE", base_run)
    torch.manual_seed(123)                      # other weights than the seed's initialisation
    trained = claims.build(base_run).eval()
    for p in trained.parameters():
        p.data.normal_()

    def cost(model):
        return profile(model.float().eval(), (3, 64, 64))

    low, _ = factorise(trained, rank=0.5)
    ratio = claims.matched_prune_ratio(trained, cost(low).macs, cost(trained).macs, cost)
    pruned = prune(trained, macs_ratio=ratio)
    for name, method, model in [("lowrank-r0.5", "low-rank", low),
                                ("pruned-r0.5", "pruning", pruned)]:
        c = cost(model)
        claims.write_record(f"lowrank/{name}.json", {
            "variant": f"{base_run.variant}-{name}", "method": method, "rank": 0.5,
            "resolution": 64, "macs": c.macs, "params": c.params})
    models = claims.latency_models()
    for name, model in [("lowrank-r0.5", low), ("pruned-r0.5", pruned)]:
        rebuilt, resolution, weights = models[f"{base_run.variant}-{name}"]
        assert resolution == 64 and weights is None
        assert ({k: v.shape for k, v in rebuilt.state_dict().items()}
                == {k: v.shape for k, v in model.state_dict().items()})
    record = claims.read_record("lowrank/pruned-r0.5.json")
    assert claims.compressed_at_initialisation(dict(record, params=record["params"] + 1)) is None


def test_records_stay_out_of_docs_for_other_runs_folders(tmp_path):
    """A smoke run, or runs in another folder, keep their records beside those runs: a
    one-epoch record in docs/results/ would count as a finished run of the real grid."""
    code = "import claims; print(claims.RECORDS)"
    for env in ({"MOBILENETS_CLAIMS_RUNS": str(tmp_path)},
                {"MOBILENETS_CLAIMS_SMOKE": "1", "MOBILENETS_CLAIMS_RUNS": str(tmp_path)}):
        out = subprocess.run([sys.executable, "-c", code], cwd=EXPERIMENTS, text=True,
                             capture_output=True, env={**os.environ, **env}, check=True)
        assert Path(out.stdout.strip()) == tmp_path / "records"
    out = subprocess.run([sys.executable, "-c", code], cwd=EXPERIMENTS, text=True,
                         capture_output=True, check=True,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("MOBILENETS_CLAIMS")})
    assert Path(out.stdout.strip()) == EXPERIMENTS.parent / "docs" / "results" / "claims" / \
        "records"


def test_claim8_table_names_the_fastest_int8_runtime(claims, tmp_path, monkeypatch):
    """Claim 8's table has one column per runtime every variant was timed in, and its last
    column divides the fastest int8 file by onnxruntime fp32, naming that runtime; a
    latency.json from before the OpenVINO and ExecuTorch cases still renders."""
    monkeypatch.setattr(claims, "PAGE", tmp_path / "claims.md")
    monkeypatch.setattr(claims, "RECORDS", tmp_path / "records")

    def t(ms):
        return {"median_ms": ms, "min_ms": ms * 0.9, "max_ms": ms * 1.1, "repeat_ms": [ms]}
    records = [{"variant": "a", "macs": 30e6, "resolution": 112, "top1": 0.6},
               {"variant": "b", "macs": 20e6, "resolution": 112, "top1": 0.7}]
    machine = {"cpu": "x", "isa": "y", "threads": 2, "repeats": 3, "iters": 5,
               "calibration_images": 16, "torch": "t", "onnxruntime": "o", "commit": "c"}
    old = {"machine": machine, "variants": {
        v: {"eager fp32": t(9), "onnxruntime fp32": t(f), "onnxruntime int8": t(i)}
        for v, f, i in (("a", 1.0, 0.8), ("b", 2.0, 2.4))}}
    text = "\n".join(claims.claim8_section(records, old))
    assert "openvino int8 ms" not in text and "predates the OpenVINO" in text
    assert "| a | 112 | 30.0 | 60.0 |" in text and "| 0.80 (onnxruntime) |" in text
    assert "| 1.20 (onnxruntime) |" in text
    new = {"machine": {**machine, "openvino": "v", "executorch": "e"}, "variants": {
        v: {"eager fp32": t(9), "onnxruntime fp32": t(f), "onnxruntime int8": t(i),
            "openvino int8": t(o), "executorch int8": t(e)}
        for v, f, i, o, e in (("a", 1.0, 0.8, 0.5, 0.6), ("b", 2.0, 2.4, 2.2, 1.5))}}
    text = "\n".join(claims.claim8_section(records, new))
    assert "| openvino int8 ms | executorch int8 ms |" in text and "openvino v" in text
    assert "| 0.50 (openvino) |" in text and "| 0.75 (executorch) |" in text
    # a is 1.5x b's MACs and faster in every repeat in onnxruntime fp32, all int8 cases and
    # the fastest int8 runtime of each (a: OpenVINO's 0.5 ms, b: ExecuTorch's 1.5 ms)
    assert text.count("1 where it is the faster one") == 5
    assert "- Pareto front by fastest int8 runtime: a, b" in text
    assert (tmp_path / "claims" / "claim8.png").is_file()
