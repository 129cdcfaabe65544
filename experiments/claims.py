"""The seeds' design claims, tested at small scale on Imagenette (issue 25): one entry point
that trains any subset of the grid, resumes after an interruption, and writes
``docs/results/claims.md`` with a table, a plot and a verdict per claim.

    .venv/bin/python experiments/claims.py plan                  # the runs and their state
    .venv/bin/python experiments/claims.py run --claims 2 3      # train what they need
    # two workers share the grid (faster on two cores than one process on two threads):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/claims.py run &
    OMP_NUM_THREADS=1 .venv/bin/python experiments/claims.py run &
    .venv/bin/python experiments/claims.py lowrank               # low-rank against pruning
    .venv/bin/python experiments/claims.py latency               # claim 8 (a quiet machine)
    .venv/bin/python experiments/claims.py memsplit              # V2 §5.1 (a quiet machine)
    .venv/bin/python experiments/claims.py report                # docs/results/claims.md

Scale: every run is 10 epochs of the ``small-data`` recipe (SGD, lr 0.1 at batch 64, 3
warm-up epochs, cosine, label smoothing 0.1) from random weights on the 160 px copy of
Imagenette (``experiments/datasets.py imagenette-224 --short-side 160``), bf16 autocast where
the hardware has it (float32 on an AVX2 CPU; claim.json says which), channels-last, top-1 of
the last epoch on the 3,925 val images at the run's resolution (validated only then), images
decoded once into memory and augmented a batch at a time (``device_data``: on two cores with
two workers a loader process per run competes with them for the CPU; with it, the two
``mobilenet_v2_050`` workers at 112 px trained at 66-69 images/s each on the Ice Lake Xeon,
not compared side by side with the loader pipeline). What
the scale-down may change: ten classes and 10 epochs favour small, quickly-trained networks;
effects of a point or two are below the seed spread (2-4 points), which is why each claim
has 2-3 seeds and the verdict rule below. Resolutions are 112 px unless a claim says
otherwise: claim 1 at 112, 96 and 80 px, and claim 6 from EfficientNet-B0 at width 0.5.
Measured training steps on the 2-core AVX2 CPU (fp32, batch 64, 2 threads) put the grid with
claim 1 at 128/112/96 px and claim 6 at full width at about 21 CPU-hours (claim 6 alone
10: B0 at 112 px trains at 44 images/s, at width 1.4 at 25); with these two scale-downs it
is about 13.

Verdict rule (fixed before the runs, issue 25): a claim is **reproduced** when every seed of
the favoured variant beats every seed of the other, **refuted** when every seed of the other
wins, **inconclusive** otherwise. Claim 1 (accuracy log-linear in Mult-Adds) is reproduced
when a straight line of mean top-1 against log10(MACs) has R^2 >= 0.9 and a positive slope.
Claim 4 compares FD-MobileNet with V1 at equal width as registered, and also, as the seed
states it, at matched MACs: FD's mean top-1 against V1's interpolated at the same MACs
(linear in log10 MACs between V1 widths) and where the curves cross (a reading, not a
verdict). Claim 8 (Mult-Adds are not latency) is reproduced when, at the same resolution,
a model with at least 1.2x another's MACs runs faster than it in every interleaved repeat
(onnxruntime fp32 or int8), or when the Pareto front of top-1 against MACs differs from the
front against latency; refuted otherwise. Every verdict waits for all of its runs ("pending").

The two techniques: ``lowrank`` factorises claim 2's trained ``mobilenet_v2_050`` (seed 0)
at two ranks, prunes it by channels to each factorised model's MACs, and fine-tunes both and
an uncompressed control for 3 epochs (lr 0.01); their latency comes from the ``latency``
step. ``memsplit`` records ``benchmarks/bench_memory_split.py`` (peak memory from
``torch.profiler``, the cost model's estimate, the split model's largest difference from the
whole one, latency against t).

Ablation variants are built here from the registered models by module surgery (the library's
models stay the papers'): ``relu6-projection`` puts ReLU6 after every inverted residual's
projection (MobileNetV2 Figure 6a), ``no-shortcut`` drops the bottleneck shortcuts,
``classic-shortcut`` connects the expansions instead of the bottlenecks (Figure 6b: block j's
expanded input is added to block j+1's expanded output wherever the shapes match, i.e. after
a stride-1 block whose expansion equals the next one's), ``no-se`` removes squeeze-excite.
Each run folder ``runs/claims/RUN`` holds the engine's files and ``claim.json`` (command,
commit, model, MACs, params, top-1, the share of near-zero depthwise kernels); that record
is also written to ``docs/results/claims/records/runs/RUN.json``, committed with the page
(with the low-rank records, latency.json and memory_split.json), so that the grid's progress
and the page survive a checkout without runs/. A step that needs weights the checkout lacks
says so: claim 8 times a run's architecture at its initialisation (latency does not depend on
the values), the low-rank comparison's models too (their ranks and pruned widths follow from
the layers' shapes; the rebuilt model must have its record's MACs and params), ``lowrank``
asks for its base to be retrained (``run --redo RUN``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from datasets import downsized  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = Path(os.environ.get("MOBILENETS_CLAIMS_RUNS", "runs/claims"))
PAGE = Path(os.environ.get("MOBILENETS_CLAIMS_PAGE",
                           HERE.parent / "docs" / "results" / "claims.md"))
EPOCHS = 10
# MOBILENETS_CLAIMS_SMOKE=1: one epoch of two steps per run, to check the pipeline end to end
SMOKE = os.environ.get("MOBILENETS_CLAIMS_SMOKE") == "1"
# The small results every step writes (runs/RUN.json per finished run, lowrank/NAME.json,
# latency.json, memory_split.json) live beside the page and are committed: runs/ is not, and
# a new checkout must keep the grid's progress. Weights, logs and ONNX files stay in RUNS.
# A smoke run or another runs folder keeps its records there instead, never in docs/.
RECORDS = Path(os.environ.get("MOBILENETS_CLAIMS_RECORDS") or (
    RUNS / "records" if SMOKE or "MOBILENETS_CLAIMS_RUNS" in os.environ
    else HERE.parent / "docs" / "results" / "claims" / "records"))


@dataclass(frozen=True)
class Run:
    """One training run: a registered model, its options, a surgery, resolution, seed and
    training overrides."""
    model: str
    resolution: int = 112
    seed: int = 0
    options: tuple = ()            # create_model keyword options, as (key, value) pairs
    surgery: str = ""
    train: tuple = ()              # TrainConfig overrides, as (key, value) pairs

    @property
    def variant(self) -> str:
        parts = [self.model, f"{self.resolution}px"]
        parts += [f"{k}{v}" for k, v in self.options]
        parts += [self.surgery] if self.surgery else []
        parts += [f"{k}{v}" for k, v in self.train]
        return "-".join(str(p) for p in parts)

    @property
    def name(self) -> str:
        return f"{self.variant}-s{self.seed}"


def seeds(n: int, **kw) -> list[Run]:
    return [Run(seed=s, **kw) for s in range(n)]


@dataclass
class Claim:
    number: int
    title: str
    source: str
    # variant label -> its runs (all seeds); "favoured" and "other" name the compared labels
    groups: dict
    comparisons: list = field(default_factory=list)   # (favoured label, other label)
    kind: str = "pairwise"                            # pairwise | loglinear | latency
    # two label prefixes (families) also compared at matched MACs: the first's mean top-1
    # against the second's interpolated at the same MACs, and where their curves cross
    matched: tuple = ()


def claims() -> dict[int, Claim]:
    c = {}
    widths = {"100": 1.0, "075": 0.75, "050": 0.5, "025": 0.25}
    v1 = {f"V1 {w} {r}px": seeds(2, model=f"mobilenet_v1_{k}", resolution=r)
          for k, w in widths.items() for r in (112, 96, 80)}
    c[1] = Claim(1, "V1 width x resolution: accuracy log-linear in Mult-Adds",
                 "MobileNetV1 Tables 6-7, Figures 4-5", v1, kind="loglinear")
    fd = {f"FD {w}": seeds(2, model=f"fd_mobilenet_{k}") for k, w in widths.items()
          if k != "075"}
    c[4] = Claim(4, "Fast downsampling wins below ~140 MFLOPs (FD-MobileNet vs V1, 112 px)",
                 "FD-MobileNet seed", {**fd, **{f"V1 {w}": v1[f"V1 {w} 112px"]
                                                for k, w in widths.items() if k != "075"}},
                 [(f"FD {w}", f"V1 {w}") for w in (1.0, 0.5, 0.25)], matched=("FD", "V1"))
    v2 = dict(model="mobilenet_v2_050")
    c[2] = Claim(2, "Linear bottleneck beats ReLU6 after the projection (V2 0.5, 112 px)",
                 "MobileNetV2 Figure 6a",
                 {"linear": seeds(3, **v2), "relu6": seeds(3, surgery="relu6-projection", **v2)},
                 [("linear", "relu6")])
    c[3] = Claim(3, "Shortcuts between bottlenecks beat classic and no shortcuts (V2 0.5)",
                 "MobileNetV2 Figure 6b",
                 {"inverted": seeds(3, **v2),
                  "classic": seeds(3, surgery="classic-shortcut", **v2),
                  "none": seeds(3, surgery="no-shortcut", **v2)},
                 [("inverted", "classic"), ("inverted", "none")])
    v3 = dict(model="mobilenet_v3_small_100")
    c[5] = Claim(5, "V3-Small beats V2 0.35 at matched Mult-Adds; h-swish and SE help",
                 "MobileNetV3 Tables 3-4 and §5 ablations",
                 {"V3-Small": seeds(3, **v3), "V2 0.35": seeds(3, model="mobilenet_v2_035"),
                  "V3-Small ReLU": seeds(3, options=(("act", "relu"),), **v3),
                  "V3-Small no SE": seeds(3, surgery="no-se", **v3)},
                 [("V3-Small", "V2 0.35"), ("V3-Small", "V3-Small ReLU"),
                  ("V3-Small", "V3-Small no SE")])
    # the base is B0 at half width (32.5 MMACs at 112 px; the full-width grid would take
    # about 10 of the 12 CPU-hours here); the scale-ups are the paper's relative ones
    b0 = dict(model="efficientnet_b0")
    half = (("width_mult", 0.5),)
    c[6] = Claim(6, "Compound scaling beats width-, depth- or resolution-only at ~2x MACs "
                    "(B0 at width 0.5, 112 px)",
                 "EfficientNet Figure 8 (§3.3)",
                 {"B0 w0.5 112px": seeds(2, options=half, **b0),
                  "width 1.4": seeds(2, options=(("width_mult", 0.7),), **b0),
                  "depth 2.0": seeds(2, options=(("depth_mult", 2.0),) + half, **b0),
                  "resolution 160": seeds(2, resolution=160, options=half, **b0),
                  "compound (d1.2 w1.1 r128)": seeds(2, resolution=128, options=(
                      ("depth_mult", 1.2), ("width_mult", 0.55)), **b0)},
                 [("compound (d1.2 w1.1 r128)", x) for x in
                  ("width 1.4", "depth 2.0", "resolution 160")])
    nodw = (("depthwise_weight_decay", 0.0),)
    c[7] = Claim(7, "Depthwise kernels train to zero; less so without weight decay on them",
                 "the V1/V2 seeds' remark; MobileNetV1 §3.2",
                 {"V1 0.5": seeds(3, model="mobilenet_v1_050"),
                  "V1 0.5 no dw decay": seeds(3, model="mobilenet_v1_050", train=nodw),
                  "V2 0.5": seeds(3, **v2),
                  "V2 0.5 no dw decay": seeds(3, train=nodw, **v2)},
                 # compared on the share of near-zero depthwise kernels (L2), not top-1
                 [("V1 0.5", "V1 0.5 no dw decay"), ("V2 0.5", "V2 0.5 no dw decay"),
                  ("V1 0.5", "V2 0.5")], kind="dead")
    return c


# --- surgery -------------------------------------------------------------------------------

def _inverted_residuals(model: nn.Module) -> list[nn.Module]:
    from mobilenets.layers.blocks import InvertedResidual
    return [m for m in model.modules() if isinstance(m, InvertedResidual)]


class ClassicShortcuts(nn.Module):
    """The inverted residuals of ``blocks`` rewired with shortcuts between expansions: the
    expanded tensor entering block j's depthwise conv is added to block j+1's expanded output
    when block j has stride 1 and both expansions have the same width."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.chain = nn.ModuleList(blocks)
        self.skip = [b.dw.conv.stride == (1, 1) and b.dw.conv.in_channels ==
                     n.dw.conv.in_channels for b, n in zip(blocks, blocks[1:])] + [False]

    def forward(self, x):
        wide = self.chain[0].expand(x)
        for j, block in enumerate(self.chain):
            narrow = block.project(block.se(block.dw(wide)))
            if j + 1 == len(self.chain):
                return narrow
            nxt = self.chain[j + 1].expand(narrow)
            wide = nxt + wide if self.skip[j] else nxt


def apply_surgery(model: nn.Module, surgery: str) -> nn.Module:
    blocks = _inverted_residuals(model)
    if surgery == "relu6-projection":
        for b in blocks:
            b.project.act = nn.ReLU6(inplace=True)
    elif surgery == "no-shortcut":
        for b in blocks:
            b.has_residual = False
    elif surgery == "classic-shortcut":
        for b in blocks:
            b.has_residual = False
        model.blocks = nn.Sequential(ClassicShortcuts(blocks))
    elif surgery == "no-se":
        for b in blocks:
            b.se = nn.Identity()
    elif surgery:
        raise ValueError(f"unknown surgery {surgery!r}")
    return model


def plain_twin(model: nn.Module, run: Run) -> nn.Module:
    """``model`` itself, or for a classic-shortcut run the plain network holding its trained
    weights: the classic shortcuts only add tensors, so the convolutions (MACs, params, the
    depthwise kernels) are the same, and the cost model and ``inspect`` read the plain stage
    structure."""
    if run.surgery != "classic-shortcut":
        return model
    twin = build(Run(run.model, run.resolution, run.seed, run.options)).eval()
    rest = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    missing, unexpected = twin.load_state_dict(rest, strict=False)
    chain = model.blocks[0].chain
    mine = _inverted_residuals(twin)
    if unexpected or len(mine) != len(chain) or any(not k.startswith("blocks.") for k in missing):
        raise RuntimeError(f"{run.name}: the plain twin does not match the trained model")
    for a, b in zip(mine, chain):
        a.load_state_dict(b.state_dict())
    return twin


def build(run: Run) -> nn.Module:
    import mobilenets
    model = mobilenets.create_model(run.model, num_classes=10, **dict(run.options))
    return apply_surgery(model, run.surgery)


# --- running -------------------------------------------------------------------------------

def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=HERE).stdout.strip()


def write_record(relative: str, record: dict) -> Path:
    """Write ``record`` to RECORDS/``relative`` atomically (a temporary file renamed)."""
    path = RECORDS / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_text(json.dumps(record, indent=2) + "\n")
    part.replace(path)
    return path


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (for the page)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def read_record(relative: str) -> dict | None:
    path = RECORDS / relative
    return json.loads(path.read_text()) if path.is_file() else None


def finished(run: Run) -> dict | None:
    """The record of a finished run: RECORDS/runs/RUN.json, or the run folder's claim.json
    (runs trained before the records existed), which is then copied into RECORDS."""
    record = read_record(f"runs/{run.name}.json")
    old = RUNS / run.name / "claim.json"
    if record is None and old.is_file():
        record = json.loads(old.read_text())
        write_record(f"runs/{run.name}.json", record)
    return record


def weights(run_name: str) -> Path:
    """Where a run's trained weights are, if this checkout still has them."""
    return RUNS / run_name / "best" / "model.safetensors"


_LOCKS: dict[str, int] = {}


def take(run: Run) -> bool:
    """Claim ``run`` for this process, so that several workers (``run`` started twice, one
    thread each, which trains faster on two cores than one process on two threads) share the
    grid without training the same run twice: an exclusive ``flock`` on the run's
    ``worker.lock``, which the kernel drops when its process ends, however it ends."""
    import fcntl
    out = RUNS / run.name
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / "worker.lock", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False                   # a live worker has it
    _LOCKS[run.name] = fd
    return True


def release(run: Run) -> None:
    fd = _LOCKS.pop(run.name, None)
    if fd is not None:
        os.close(fd)                   # closing drops the lock; the file stays (harmless)


def amp_here() -> bool:
    """bfloat16 autocast where the hardware has it (a GPU, or a CPU with AVX-512 BF16 or
    AMX); float32 elsewhere, where emulated bfloat16 trains several times slower."""
    from mobilenets.training.engine import cpu_has_bf16
    return torch.cuda.is_available() or cpu_has_bf16()


def train_run(run: Run, workers: int) -> dict:
    from mobilenets.compress import inspect_model
    from mobilenets.compress.inspect import ZERO_TOL
    from mobilenets.cost.profile import profile
    from mobilenets.tasks.classification import train
    from mobilenets.training import make_config

    out = RUNS / run.name
    resume = out / "last.pt" if (out / "last.pt").is_file() else None
    options = dict(epochs=EPOCHS, resolution=run.resolution, batch_size=64, workers=workers,
                   seed=run.seed, amp=amp_here(), channels_last=True, tensorboard=False,
                   device_data=True,        # decode once: no loader process beside each worker
                   val_every=EPOCHS)        # the verdicts read the last epoch only
    options.update(run.train)
    if SMOKE:
        options.update(epochs=1, max_steps_per_epoch=2, val_every=1)
    cfg = make_config("small-data", model=run.model, out=str(out),
                      data=str(downsized("imagenette-224", 160)), **options)
    torch.manual_seed(run.seed)        # the surgery-free weights equal the engine's own build
    model = build(run)
    start = time.perf_counter()
    log = out / "metrics.jsonl"
    trained = len(log.read_text().splitlines()) if log.is_file() else 0
    if trained >= cfg.epochs and (out / "best").is_dir():
        # trained by a sitting that stopped before writing claim.json
        from safetensors.torch import load_file
        model.load_state_dict(load_file(out / "best" / "model.safetensors"))
    else:
        # overwrite only without last.pt: a sitting that stopped inside the first epoch left
        # just its config, and the run's lock (held here) means no other worker writes it
        train(cfg, resume=resume, progress=False, model=model, overwrite=resume is None)
    epochs = [json.loads(x) for x in log.read_text().splitlines()]
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    plain = plain_twin(model, run)
    cost = profile(plain, (3, run.resolution, run.resolution))
    record = {"run": run.name, "variant": run.variant, "model": run.model,
              "options": dict(run.options), "surgery": run.surgery, "train": dict(run.train),
              "resolution": run.resolution, "seed": run.seed, "epochs": len(epochs),
              "top1": epochs[-1]["top1"],
              "macs": cost.macs, "params": cost.params,
              "dead_depthwise": inspect_model(plain).totals(),
              "zero_tol": ZERO_TOL,
              "amp": options["amp"], "device_data": options["device_data"],
              "commit": commit(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "sitting_s": round(time.perf_counter() - start)}
    (out / "claim.json").write_text(json.dumps(record, indent=2) + "\n")
    write_record(f"runs/{run.name}.json", record)
    return record


def selected_runs(numbers: list[int]) -> list[Run]:
    table, seen, runs = claims(), set(), []
    for n in numbers:
        for group in table[n].groups.values():
            for run in group:
                if run.name not in seen:
                    seen.add(run.name)
                    runs.append(run)
    return runs


# --- verdicts and the page -----------------------------------------------------------------

def verdict(favoured: list[float], other: list[float]) -> str:
    if not favoured or not other:
        return "not run"
    if min(favoured) > max(other):
        return "reproduced"
    if min(other) > max(favoured):
        return "refuted"
    return "inconclusive"


def loglinear(points: list[tuple[float, float]]) -> tuple[float, float, str]:
    """Slope (points per decade of MACs), R^2 and the verdict of claim 1."""
    if len(points) < 3:
        return math.nan, math.nan, "not run"
    xs = [math.log10(m) for m, _ in points]
    ys = [t for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    r2 = 1 - ss_res / ss_tot
    return slope, r2, "reproduced" if r2 >= 0.9 and slope > 0 else "refuted"


def variant_means(rows: dict, prefix: str | None = None) -> list[tuple[float, float]]:
    """``(MACs, mean top-1)`` of each finished variant (whose label starts with ``prefix``,
    when given), by MACs."""
    return sorted((statistics.fmean(r["macs"] for r in v), statistics.fmean(r["top1"] for r in v))
                  for label, v in rows.items()
                  if v and (prefix is None or label.split()[0] == prefix))


def family_curve(rows: dict, prefix: str) -> list[tuple[float, float]]:
    """:func:`variant_means` of the variants whose label starts with ``prefix``."""
    return variant_means(rows, prefix)


def at_macs(curve: list[tuple[float, float]], macs: float) -> float | None:
    """``curve``'s top-1 at ``macs``, linear in log10(MACs) between its two points on either
    side; None outside its range."""
    for (m0, t0), (m1, t1) in zip(curve, curve[1:]):
        if m0 <= macs <= m1:
            f = (math.log10(macs) - math.log10(m0)) / (math.log10(m1) - math.log10(m0))
            return t0 + f * (t1 - t0)
    return curve[0][1] if len(curve) == 1 and curve[0][0] == macs else None


def crossings(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> tuple:
    """``(lo, hi, [MACs where a - b changes sign])`` over the MACs range both curves cover
    (log-linear between their points); None when they do not overlap."""
    if not a or not b:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[-1][0], b[-1][0])
    if lo >= hi:
        return None
    xs = sorted({lo, hi, *(m for m, _ in a + b if lo <= m <= hi)})
    diff = [(x, at_macs(a, x) - at_macs(b, x)) for x in xs]
    found = []
    for (x0, d0), (x1, d1) in zip(diff, diff[1:]):
        if d0 == 0:
            found.append(x0)
        elif d0 * d1 < 0:
            f = d0 / (d0 - d1)
            found.append(10 ** (math.log10(x0) + f * (math.log10(x1) - math.log10(x0))))
    if diff[-1][1] == 0:
        found.append(diff[-1][0])
    return lo, hi, found


def matched_lines(rows: dict, first: str, second: str) -> list[str]:
    """The comparison of the families ``first`` and ``second`` at matched MACs."""
    a, b = family_curve(rows, first), family_curve(rows, second)
    if not a or len(b) < 2:
        return []
    lines = [f"At matched Mult-Adds (the seed's reading): each {first} variant's mean top-1 "
             f"against {second}'s interpolated at its MACs (linear in log10(MACs) between "
             f"the {second} widths on either side, {second} measured from "
             f"{b[0][0] / 1e6:.1f} to {b[-1][0] / 1e6:.1f} MMACs). Interpolated means, not a "
             f"verdict: the verdicts above compare seeds of measured networks, at equal width, "
             f"where {second} spends several times {first}'s Mult-Adds."]
    for macs, top1 in a:
        other = at_macs(b, macs)
        lines.append(f"- {first} at {macs / 1e6:.1f} MMACs: {100 * top1:.1f}%, " + (
            f"{second} interpolated {100 * other:.1f}% ({100 * (top1 - other):+.1f} points)"
            if other is not None else f"outside {second}'s measured range"))
    span = crossings(a, b)
    if span is not None:
        lo, hi, found = span
        side = "above" if at_macs(a, lo) > at_macs(b, lo) else "below"
        where = (f"the curves cross at {', '.join(f'{x / 1e6:.0f}' for x in found)} MMACs"
                 if found else f"{first} stays {side} {second} throughout; a crossover, if "
                 f"any, lies outside this range")
        lines.append(f"- Crossover, over the {lo / 1e6:.1f}-{hi / 1e6:.1f} MMACs both "
                     f"families cover: {where} (the seed puts it near 140 MFLOPs).")
    return lines + [""]


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    pct = [100 * v for v in values]
    return (f"{statistics.fmean(pct):.1f} ({min(pct):.1f}-{max(pct):.1f})"
            if len(pct) > 1 else f"{pct[0]:.1f}")


def _plot(claim: Claim, rows: dict, path: Path, latency: dict | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if len(rows) > 10:                    # more series than the default cycle's ten colours
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for label, records in rows.items():
        if not records:
            continue
        xs = [(latency or {}).get(r["variant"], r["macs"] / 1e6) for r in records]
        ax.scatter(xs, [100 * r["top1"] for r in records], label=label, s=18)
    if claim.kind == "loglinear" and not latency:
        means = variant_means(rows)
        slope, r2, _ = loglinear(means)
        if not math.isnan(slope):
            mx = statistics.fmean(math.log10(m) for m, _ in means)
            my = statistics.fmean(t for _, t in means)
            ends = [min(m for m, _ in means), max(m for m, _ in means)]
            ax.plot([m / 1e6 for m in ends],
                    [100 * (my + slope * (math.log10(m) - mx)) for m in ends], lw=0.8,
                    color="0.5", ls="--", label=f"fit of the means, R^2 {r2:.2f}")
    for prefix in claim.matched if not latency else ():
        curve = family_curve(rows, prefix)
        ax.plot([m / 1e6 for m, _ in curve], [100 * t for _, t in curve], lw=0.8,
                color="0.5", ls="-" if prefix == claim.matched[0] else "--")
    ax.set_xscale("log")
    ax.set_xlabel("CPU latency (ms)" if latency else "MMACs")
    ax.set_ylabel("Imagenette top-1 (%)")
    ax.set_title(f"Claim {claim.number}", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report() -> str:
    table = claims()
    latency = read_record("latency.json") or {}
    lines = ["# The seeds' claims at small scale (issue 25)", "",
             f"Generated by `.venv/bin/python experiments/claims.py report` from the "
             f"records in `{_shown(RECORDS)}/` (`runs/`: one JSON per training run with its "
             f"command, commit, epochs and hardware; `lowrank/`, `latency.json`, "
             f"`memory_split.json`). "
             f"Protocol, scale-down and the verdict rule: the docstring of "
             f"`experiments/claims.py`. torch {torch.__version__}.", ""]
    records = [json.loads(f.read_text()) for f in sorted((RECORDS / "runs").glob("*.json"))]
    if records:
        hours = sum(r.get("sitting_s", 0) for r in records) / 3600
        effnet = sum(r.get("sitting_s", 0) for r in records if "efficientnet" in r["run"])
        lines += [f"Compute: {len(records)} training runs; their wall times (one thread each, "
                  f"two runs at a time on a 2-core machine shared with other jobs; a run "
                  f"resumed across sittings counts its last sitting only) add up to "
                  f"{hours:.1f} hours, {hours / 12:.1f} times the issue's budget of about 12 "
                  f"CPU-hours (the runs shared the cores with other work, so this overstates "
                  f"their own compute); the EfficientNet runs of claim 6 took "
                  f"{effnet / 3600:.1f} hours of it.", ""]
    all_records = []
    for n in sorted(table):
        claim = table[n]
        rows = {label: [r for r in map(finished, runs) if r] for label, runs
                in claim.groups.items()}
        done = sum(len(v) for v in rows.values())
        total = sum(len(v) for v in claim.groups.values())
        all_records += [r for v in rows.values() for r in v
                        if r["run"] not in {x["run"] for x in all_records}]
        lines += [f"## {n}. {claim.title}", "", f"Source: {claim.source}. Runs: {done} of "
                  f"{total} finished.", ""]
        lines += ["| variant | MMACs | params | top-1 % mean (min-max) | seeds |"
                  + (" near-zero dw kernels % (L2) | near-zero BN gamma % |"
                     if claim.kind == "dead" else ""),
                  "|---|---|---|---|---|" + ("---|---|" if claim.kind == "dead" else "")]
        for label, records in rows.items():
            macs = f"{records[0]['macs'] / 1e6:.1f}" if records else "-"
            params = f"{records[0]['params'] / 1e6:.2f} M" if records else "-"
            line = (f"| {label} | {macs} | {params} | {_fmt([r['top1'] for r in records])} "
                    f"| {len(records)} |")
            if claim.kind == "dead":
                line += (f" {_fmt([r['dead_depthwise']['zero_l2'] for r in records])} | "
                         f"{_fmt([r['dead_depthwise']['zero_gamma'] for r in records])} |")
            lines.append(line)
        lines.append("")
        if claim.kind == "loglinear":
            means = variant_means(rows)
            slope, r2, word = loglinear(means)
            if done < total and word != "not run":
                word = f"pending ({done} of {total} runs; on those so far: {word})"
            fit = (f"slope {100 * slope:.1f} points per decade, R^2 {r2:.3f}"
                   if not math.isnan(slope) else "needs three variants finished")
            lines += [f"Fit of mean top-1 on log10(MACs): {fit}. **Verdict: {word}**.", ""]
        for fav, other in claim.comparisons:
            def value(r):
                return r["dead_depthwise"]["zero_l2"] if claim.kind == "dead" else r["top1"]
            a = [value(r) for r in rows.get(fav, [])]
            b = [value(r) for r in rows.get(other, [])]
            want = len(claim.groups[fav]) + len(claim.groups[other])
            word = (verdict(a, b) if len(a) + len(b) == want or not (a or b) else
                    f"pending ({len(a) + len(b)} of {want} runs)")
            lines.append(f"- {fav} vs {other}: **{word}**")
        if claim.comparisons:
            lines.append("")
        if claim.matched:
            lines += matched_lines(rows, *claim.matched)
        if claim.kind == "dead" and done:
            from mobilenets.compress.inspect import ZERO_TOL   # for records without zero_tol
            every = [r for v in rows.values() for r in v]
            tols = {r.get("zero_tol", ZERO_TOL) for r in every}
            kernels = max(r["dead_depthwise"]["zero_l2"] for r in every)
            gammas = max(r["dead_depthwise"]["zero_gamma"] for r in every)
            lines += [f"Across all {len(every)} finished runs the largest share of near-zero "
                      f"depthwise kernels (L2 norm at most "
                      f"{' or '.join(f'{100 * t:g}%' for t in sorted(tols))} of its layer's "
                      f"largest, as `mobilenets inspect`) is {100 * kernels:.1f}%, of "
                      f"near-zero BatchNorm gammas {100 * gammas:.2f}%"
                      + (": at this scale no depthwise kernel trains to zero, so the "
                         "comparisons above compare zeros and cannot favour either side."
                         if kernels == 0 else "."), ""]
        if done:
            png = PAGE.parent / "claims" / f"claim{n}.png"
            _plot(claim, rows, png)
            lines += [f"![claim {n}](claims/claim{n}.png)", ""]
    lines += claim8_section(all_records, latency)
    lines += lowrank_section(latency)
    lines += memory_split_section()
    return "\n".join(lines) + "\n"


# --- claim 8: Mult-Adds against measured latency --------------------------------------------

LATENCY_CASES = ("eager fp32", "onnxruntime fp32", "onnxruntime int8", "openvino int8",
                 "executorch int8")
# the cases claim 8's fronts and inversions are drawn for: eager fp32 is the untuned baseline
RUNTIME_CASES = LATENCY_CASES[1:]
FASTEST_INT8 = "fastest int8 runtime"


def _cases(items: list[dict]) -> list[str]:
    """The runtime cases every item was timed in (a latency.json from before OpenVINO and
    ExecuTorch were added has onnxruntime's alone)."""
    return [c for c in RUNTIME_CASES if all(c in i["latency"] for i in items)]


def _front(points: list[tuple]) -> list[str]:
    """Names on the Pareto front of (low cost, high cost, top-1, name), in order of cost: a
    point is off it when another is more accurate and no costlier, or as accurate and
    cheaper, where costs whose [low, high] spreads overlap count as equal (measured
    latencies within their repeat-to-repeat spread are not told apart; MACs have
    low == high)."""
    def dominated(b):
        return any((a[2] > b[2] and a[0] <= b[1]) or (a[2] >= b[2] and a[1] < b[0])
                   for a in points if a is not b)
    return [p[3] for p in sorted(points, key=lambda p: (p[0], -p[2])) if not dominated(p)]


def inversions(items: list[dict], case: str, macs_margin: float = 1.2) -> list[tuple[str, str]]:
    """Pairs (a, b) where a has at least ``macs_margin`` times b's MACs yet runs faster than b
    in ``case`` in every interleaved repeat (a's slowest repeat below b's fastest)."""
    pairs = []
    for a in items:
        for b in items:
            if (a["resolution"] == b["resolution"] and a["macs"] >= macs_margin * b["macs"]
                    and a["latency"][case]["max_ms"] < b["latency"][case]["min_ms"]):
                pairs.append((a["variant"], b["variant"]))
    return pairs


def claim8_items(records: list[dict], latency: dict) -> list[dict]:
    """One item per measured variant: its MACs, resolution, mean top-1 over its seeds and
    its latency figures."""
    by_variant: dict[str, list[dict]] = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    timed = latency.get("variants", {})
    return [{"variant": v, "macs": rs[0]["macs"], "resolution": rs[0]["resolution"],
             "top1": statistics.fmean(r["top1"] for r in rs), "seeds": len(rs),
             "latency": timed[v]} for v, rs in by_variant.items() if v in timed]


def claim8_section(records: list[dict], latency: dict) -> list[str]:
    lines = ["## 8. Mult-Adds are not latency", ""]
    items = claim8_items(records, latency)
    if not items:
        return lines + ["Not measured yet: `experiments/claims.py latency` on a quiet machine, "
                        "after the runs.", ""]
    m = latency["machine"]
    cases = _cases(items)
    shown = ["eager fp32"] + cases
    others = [f"{k} {m[k]}" for k in ("openvino", "executorch") if k in m]
    if "openvino int8" in cases:
        runtimes = ("The ONNX files are the library's export (BatchNorm folded) and its int8 PTQ "
                    f"(`quantize_onnx`, {m['calibration_images']} calibration images), run by "
                    "onnxruntime, the int8 one also by OpenVINO; the ExecuTorch file is the "
                    "library's int8 `.pte` (`quantize_pte`: XNNPACK, PT2E, the same "
                    "calibration images). "
                    f"'{FASTEST_INT8}' takes each variant in its own fastest int8 runtime "
                    "(the deployment a user would pick), so two variants there may run in "
                    "different runtimes. ")
    else:
        runtimes = ("The onnxruntime files are the library's export (BatchNorm folded) and its "
                    f"int8 PTQ (`quantize_onnx`, {m['calibration_images']} calibration images)"
                    "; this measurement predates the OpenVINO and ExecuTorch int8 columns, and "
                    "on a VNNI CPU onnxruntime's int8 is not the fastest int8 runtime for "
                    "MobileNetV2 (docs/results/2026-12-06-runtimes-vnni.md). ")
    lines += [f"Batch 1, fp32 input, {m['threads']} threads, {m['repeats']} interleaved "
              f"repeats of {m['iters']} calls per resolution; {m['cpu']} ({m['isa']}); torch "
              f"{m['torch']}, onnxruntime {m['onnxruntime']}"
              + "".join(f", {o}" for o in others) + f"; commit {m['commit']}. " + runtimes
              + "Latency is the median of the per-repeat medians (min-max); top-1 the mean "
              "over the variant's seeds; the last column is the fastest int8 file against "
              "onnxruntime fp32."
              + (f" Timed at their initialisation (this checkout lacked their weights; "
                 f"latency does not depend on the values): "
                 f"{', '.join(latency['timed_at_initialisation'])}."
                 if latency.get("timed_at_initialisation") else ""), "",
              "| variant | px | MMACs | top-1 % | "
              + " | ".join(f"{c} ms" for c in shown) + " | best int8 / onnxruntime fp32 |",
              "|---" * (len(shown) + 5) + "|"]
    for it in sorted(items, key=lambda i: (i["resolution"], i["macs"])):
        t = it["latency"]
        cells = [f"{t[c]['median_ms']:.2f} ({t[c]['min_ms']:.2f}-{t[c]['max_ms']:.2f})"
                 for c in shown]
        int8 = min((c for c in shown if "int8" in c), key=lambda c: t[c]["median_ms"])
        ratio = t[int8]["median_ms"] / t["onnxruntime fp32"]["median_ms"]
        lines.append(f"| {it['variant']} | {it['resolution']} | {it['macs'] / 1e6:.1f} | "
                     f"{100 * it['top1']:.1f} | {' | '.join(cells)} | {ratio:.2f} "
                     f"({int8.split()[0]}) |")
    lines.append("")
    int8_cases = [c for c in cases if "int8" in c]
    if len(int8_cases) > 1:
        # the deployment a user picks: each variant in its own fastest int8 runtime
        items = [{**i, "latency": {**i["latency"], FASTEST_INT8: min(
            (i["latency"][c] for c in int8_cases), key=lambda t: t["median_ms"])}}
            for i in items]
        cases = cases + [FASTEST_INT8]
    fronts = {"MACs": _front([(i["macs"], i["macs"], i["top1"], i["variant"])
                              for i in items])}
    for c in cases:
        fronts[c] = _front([(i["latency"][c]["min_ms"], i["latency"][c]["max_ms"], i["top1"],
                             i["variant"]) for i in items])
    for name, front in fronts.items():
        lines.append(f"- Pareto front by {name}: {', '.join(front)}")
    lines.append("")
    pairs = {c: inversions(items, c) for c in cases}
    n_pairs = sum(1 for a in items for b in items if a["resolution"] == b["resolution"]
                  and a["macs"] >= 1.2 * b["macs"])
    for c, found in pairs.items():
        listed = "; ".join(f"{a} faster than {b}" for a, b in found[:8])
        lines.append(f"- {c}: of the {n_pairs} same-resolution pairs where one model has at "
                     f"least 1.2x the other's MACs, {len(found)} where it is the faster one in "
                     f"every repeat"
                     + (f" ({listed}{' ...' if len(found) > 8 else ''})" if found else ""))
    word = ("reproduced" if any(pairs.values()) or any(
        set(f) != set(fronts["MACs"]) for k, f in fronts.items() if k != "MACs")
            else "refuted")
    runs = selected_runs([1, 2, 3, 4, 5, 6, 7])
    variants = {run.variant for run in runs}
    trained = sum(1 for run in runs if finished(run))
    if trained < len(runs) or variants - {i["variant"] for i in items}:
        word = (f"pending ({len(variants & {i['variant'] for i in items})} of {len(variants)} "
                f"variants timed, {trained} of {len(runs)} runs trained; on those so far: "
                f"{word})")
    lines += ["", f"**Verdict: {word}** (rule: reproduced when a model with at least 1.2x "
              f"another's MACs at the same resolution is faster in every repeat, or the "
              f"Pareto fronts by MACs and by latency differ; refuted otherwise).", ""]
    png = PAGE.parent / "claims" / "claim8.png"
    _plot_fronts(items, cases, png)
    return lines + ["![claim 8](claims/claim8.png)", ""]


def _plot_fronts(items: list[dict], cases: list[str], path: Path) -> None:
    """Accuracy against MACs and against each case's latency; with a fastest-int8 case, only
    that and onnxruntime fp32 (the per-runtime int8 fronts are in the page's list)."""
    if FASTEST_INT8 in cases:
        cases = [c for c in cases if c in ("onnxruntime fp32", FASTEST_INT8)]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axes_of = [("MMACs", lambda i: i["macs"] / 1e6)] + [
        (f"{c} (ms)", lambda i, c=c: i["latency"][c]["median_ms"]) for c in cases]
    fig, axes = plt.subplots(1, len(axes_of), figsize=(4 * len(axes_of), 3.8), sharey=True)
    for ax, (label, x_of) in zip(axes, axes_of):
        pts = [(x_of(i), 100 * i["top1"], i["variant"]) for i in items]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, c="tab:blue")
        front = set(_front([(x, x, t, n) for x, t, n in pts]))
        on = sorted(p for p in pts if p[2] in front)
        ax.step([p[0] for p in on], [p[1] for p in on], where="post", c="tab:red", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel("Imagenette top-1 (%)")
    fig.suptitle("Claim 8: accuracy against Mult-Adds and measured latency (red: Pareto front)",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _trained(record: dict) -> tuple[nn.Module, Path | None]:
    """A finished run's model and its weights file: the best/ weights where this checkout
    has them (the surgery applied before they load, so the keys are the trained model's),
    else the same architecture at its seed's initialisation and None."""
    from safetensors.torch import load_file
    run = Run(record["model"], record["resolution"], record["seed"],
              tuple(record["options"].items()), record["surgery"],
              tuple(record["train"].items()))
    torch.manual_seed(run.seed)
    model = build(run)
    path = weights(record["run"])
    if not path.is_file():
        return model.eval(), None
    model.load_state_dict(load_file(path))
    return model.eval(), path


def latency_models() -> dict[str, tuple]:
    """Variant -> (model, resolution, weights file or None): the first finished seed of every
    claims variant and every fine-tuned model of the low-rank comparison. Latency does not
    depend on the weights' values, so a model whose weights this checkout lacks (runs/ is not
    committed) is timed at its initialisation; latency.json says which were."""
    import mobilenets
    models = {}
    for file in sorted((RECORDS / "runs").glob("*.json")):
        record = json.loads(file.read_text())
        if record["variant"] not in models:
            model, trained = _trained(record)
            models[record["variant"]] = (model, record["resolution"], trained)
    for file in sorted((RECORDS / "lowrank").glob("*.json")):
        record = json.loads(file.read_text())
        if record["variant"] in models:
            continue
        best = RUNS / "lowrank" / file.stem / "best"
        if best.is_dir():
            models[record["variant"]] = (mobilenets.load(best).eval(), record["resolution"],
                                         best / "model.safetensors")
            continue
        model = compressed_at_initialisation(record)
        if model is None:
            print(f"{record['variant']}: not timed, its weights are not in {best} and the "
                  f"architecture rebuilt at initialisation does not have the record's MACs "
                  f"and params: rerun `lowrank`", flush=True)
            continue
        models[record["variant"]] = (model, record["resolution"], None)
    return models


def compressed_at_initialisation(record: dict) -> nn.Module | None:
    """A low-rank comparison's model rebuilt from its seed's initialisation, for a checkout
    without its weights: the ranks (a fraction of each layer's full rank) and the pruned
    widths (one keep ratio for every layer) follow from the layers' shapes, not their
    values. None unless its MACs and params equal the record's (the check that the rebuilt
    architecture is the one that was trained)."""
    from mobilenets.compress import factorise, prune
    from mobilenets.cost.profile import profile
    torch.manual_seed(LOWRANK_BASE.seed)
    base = build(LOWRANK_BASE).eval()
    res = record["resolution"]

    def cost(model):
        return profile(model.float().eval(), (3, res, res))

    if record["method"] == "low-rank":
        model, _ = factorise(base, rank=record["rank"])
    elif record["method"] == "pruning":
        twin = read_record(f"lowrank/lowrank-r{record['rank']}.json")
        model = prune(base, macs_ratio=matched_prune_ratio(base, twin["macs"],
                                                           cost(base).macs, cost))
    else:
        model = base
    c = cost(model)
    return model.eval() if (c.macs, c.params) == (record["macs"], record["params"]) else None


def _isa() -> str:
    """The CPU's instruction sets that decide fp32, bf16 and int8 speed."""
    from mobilenets.deploy.quantize import cpu_flags
    flags = cpu_flags()
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                    if f in flags)


def _stale(made: Path, source: Path | None, num_images: int | None = None) -> bool:
    """Whether the deploy file ``made`` must be rebuilt: missing, older than the weights it
    comes from (``source``; None: no weights file), or (an int8 file) calibrated on another
    number of images."""
    if not made.is_file() or (source is not None
                              and made.stat().st_mtime < source.stat().st_mtime):
        return True
    if num_images is None:
        return False
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(made), load_external_data=False)
            .metadata_props}
    return json.loads(meta.get("quantization", "{}")).get("num_images") != num_images


def measure_latency(repeats: int, iters: int, threads: int, num_images: int,
                    prepare_only: bool = False) -> dict | None:
    """Latency at batch 1 of every model of :func:`latency_models` in each of
    :data:`LATENCY_CASES` (eager fp32; the ONNX file in onnxruntime; its int8 PTQ in
    onnxruntime and OpenVINO; the int8 ``.pte`` in ExecuTorch), each resolution's models
    interleaved in one :func:`measure`. The files are kept in RUNS/deploy/ (a rerun reuses
    them). ``prepare_only``: write the files and time nothing (None), so that the quiet
    machine the timing needs is spent on timing alone."""
    from mobilenets.deploy import OnnxModel, PteModel, export_onnx, quantize_onnx
    from mobilenets.deploy.compare import measure
    from mobilenets.deploy.runtimes.executorch import quantize_pte
    import executorch.version
    import onnxruntime
    import openvino
    torch.set_num_threads(threads)
    calib = downsized("imagenette-224", 160) / "train"
    folder = RUNS / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    fns, resolution, untrained = {}, {}, []
    for variant, (model, res, trained) in latency_models().items():
        fp32, int8 = folder / f"{variant}.onnx", folder / f"{variant}-int8.onnx"
        pte8 = folder / f"{variant}-int8-{num_images}.pte"       # named by its calibration
        if trained is None:
            untrained.append(variant)
        if _stale(fp32, trained):
            export_onnx(model, folder / f"{variant}.part.onnx", resolution=res).rename(fp32)
        if _stale(int8, fp32, num_images):
            # percentile calibration fails on activations that an untrained model
            # saturates; the calibration method does not change the int8 file's operators
            quantize_onnx(fp32, folder / f"{variant}-int8.part.onnx", calib,
                          num_images=num_images,
                          calibrate_method="percentile" if trained else "minmax").rename(int8)
        if _stale(pte8, trained):
            quantize_pte(model, folder / f"{variant}-int8.part.pte", calib,
                         num_images=num_images, resolution=res).rename(pte8)
        if prepare_only:
            print(f"{variant}: files ready", flush=True)
            continue
        fns[variant] = {"eager fp32": torch.inference_mode()(model),
                        "onnxruntime fp32": OnnxModel(fp32, threads=threads),
                        "onnxruntime int8": OnnxModel(int8, threads=threads),
                        "openvino int8": OnnxModel(int8, threads=threads, runtime="openvino"),
                        "executorch int8": PteModel(pte8, threads=threads)}
        resolution[variant] = res
        print(f"{variant}: files ready", flush=True)
    if prepare_only:
        return None
    out = {}
    for res in sorted(set(resolution.values())):
        here = {f"{v}|{c}": f for v, cases in fns.items() if resolution[v] == res
                for c, f in cases.items()}
        x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
        timed = measure(here, x, warmup=3, repeats=repeats, iters=iters,
                        reference=next(iter(here)))
        for key, t in timed.items():
            v, c = key.split("|")
            out.setdefault(v, {"resolution": res})[c] = {
                k: t[k] for k in ("median_ms", "min_ms", "max_ms", "repeat_ms")}
        print(f"{res} px: {len(here)} candidates timed", flush=True)
    return {"machine": {"cpu": platform.processor() or platform.machine(), "isa": _isa(),
                        "threads": threads, "repeats": repeats, "iters": iters,
                        "calibration_images": num_images, "torch": torch.__version__,
                        "onnxruntime": onnxruntime.__version__,
                        "openvino": openvino.__version__.split("-")[0],
                        "executorch": executorch.version.__version__, "commit": commit()},
            "timed_at_initialisation": untrained, "variants": out}


# --- low-rank factorisation against channel pruning ---------------------------------------

LOWRANK_BASE = Run("mobilenet_v2_050", seed=0)      # claim 2's linear-bottleneck run
LOWRANK_RANKS = (0.5, 0.25)                         # fractions of each layer's full rank
FINETUNE = dict(epochs=3, lr=0.01, warmup_epochs=0)


def lowrank_runs(workers: int) -> None:
    """Factorise the trained base (every 1x1 convolution and the classifier at rank
    ``r`` x full, :func:`mobilenets.compress.factorise`), prune the same base by channels to
    the factorised model's MACs, and fine-tune both (and the unpruned base, the control) for
    FINETUNE's epochs through the engine at the claims' protocol. Each finished model writes
    ``RECORDS/lowrank/NAME.json`` (its weights: ``RUNS/lowrank/NAME/``); an unfinished one
    is redone."""
    import mobilenets
    from mobilenets.cost.profile import profile
    from mobilenets.tasks.classification import (evaluate, lowrank_and_finetune,
                                                 prune_and_finetune)
    base_record = finished(LOWRANK_BASE)
    if base_record is None:
        raise SystemExit(f"the base model {LOWRANK_BASE.name} is not trained yet: run "
                         f"`experiments/claims.py run --claims 2` first")
    if not weights(LOWRANK_BASE.name).is_file():
        raise SystemExit(f"the base model {LOWRANK_BASE.name} has a record but its weights "
                         f"are not in {RUNS / LOWRANK_BASE.name} (runs/ is not committed): "
                         f"retrain it with `experiments/claims.py run --redo "
                         f"{LOWRANK_BASE.name}` (its record is replaced)")
    data = downsized("imagenette-224", 160)
    res = LOWRANK_BASE.resolution
    options = dict(recipe="small-data", data=data, resolution=res, batch_size=64,
                   workers=workers, seed=0, amp=amp_here(), channels_last=True,
                   tensorboard=False, progress=False, overwrite=True,
                   val_every=FINETUNE["epochs"], **FINETUNE)
    if SMOKE:
        options.update(epochs=1, max_steps_per_epoch=2, val_every=1, recalibrate_images=64)

    # factorise() and prune() leave the model they take unchanged: one load serves all
    base = mobilenets.load(RUNS / LOWRANK_BASE.name / "best")

    def cost(model):
        return profile(model.float().eval(), (3, res, res))

    base_macs = cost(base).macs
    plan = [("base-finetuned", "control", 0.0)]
    for r in LOWRANK_RANKS:
        plan += [(f"lowrank-r{r}", "low-rank", r), (f"pruned-r{r}", "pruning", r)]
    for name, method, r in plan:
        out = RUNS / "lowrank" / name
        if read_record(f"lowrank/{name}.json"):
            continue
        start = time.perf_counter()
        if method == "low-rank":
            lowrank_and_finetune(base, out, rank=r, **options)
            compressed = mobilenets.load(out / "lowrank")
        else:
            target = 0.0
            if method == "pruning":
                twin = read_record(f"lowrank/lowrank-r{r}.json")
                target = matched_prune_ratio(base, twin["macs"], base_macs, cost)
            prune_and_finetune(base, out, macs_ratio=target, **options)
            compressed = mobilenets.load(out / "pruned")
        before = evaluate(compressed, data, resolution=res)["top1"]
        final = mobilenets.load(out / "best")
        c = cost(final)
        epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        record = {"variant": f"{LOWRANK_BASE.variant}-{name}", "method": method, "rank": r,
                  "base": LOWRANK_BASE.name, "base_top1": base_record["top1"],
                  "base_macs": base_macs, "resolution": res, "macs": c.macs,
                  "params": c.params, "top1_before_finetune": before,
                  "top1": epochs[-1]["top1"], "epochs": len(epochs),
                  "finetune": {k: v for k, v in options.items()
                               if k not in ("data", "progress", "overwrite")} | {
                      "data": str(data)},
                  "commit": commit(), "torch": torch.__version__,
                  "command": " ".join([Path(sys.executable).name, *sys.argv]),
                  "sitting_s": round(time.perf_counter() - start)}
        write_record(f"lowrank/{name}.json", record)
        print(f"{name}: {c.macs / 1e6:.1f} MMACs, top-1 {100 * before:.1f}% before and "
              f"{100 * record['top1']:.1f}% after fine-tuning", flush=True)


def matched_prune_ratio(base: nn.Module, macs: int, base_macs: int, cost) -> float:
    """The ``macs_ratio`` of :func:`mobilenets.compress.prune` that brings ``base`` closest
    to ``macs`` as ``cost`` counts them (at the claims' resolution; prune counts at the
    model's configured one, where the classifier's share differs)."""
    from mobilenets.compress import prune
    ratio, best = 1 - macs / base_macs, None
    for _ in range(6):
        got = cost(prune(base, macs_ratio=ratio)).macs
        if best is None or abs(got - macs) < abs(best[1] - macs):
            best = (ratio, got)
        ratio = min(max(ratio + (got - macs) / base_macs, 0.0), 0.99)
    return best[0]


def lowrank_section(latency: dict) -> list[str]:
    lines = ["## Low-rank factorisation against channel pruning at equal Mult-Adds", ""]
    records = [json.loads(p.read_text()) for p in sorted((RECORDS / "lowrank").glob("*.json"))]
    if not records:
        return lines + ["Not run yet: `experiments/claims.py lowrank` (after claim 2's "
                        f"`{LOWRANK_BASE.name}`).", ""]
    first = records[0]
    ft = first["finetune"]
    timed = latency.get("variants", {})
    cases = [c for c in RUNTIME_CASES if any(c in timed.get(r["variant"], {}) for r in records)]
    lines += [f"Base: `{first['base']}` (claim 2's run), top-1 {100 * first['base_top1']:.1f}%"
              f", {first['base_macs'] / 1e6:.1f} MMACs at {first['resolution']} px. Low-rank: "
              f"every 1x1 convolution and the classifier as two thinner layers at the given "
              f"fraction of its full rank (truncated SVD; a layer stays whole where the pair "
              f"would not be smaller). Pruning: channels by BatchNorm |gamma| to the "
              f"factorised model's MACs. BatchNorm re-estimated on 1,024 training images, "
              f"then {ft['epochs']} epochs of fine-tuning (SGD, lr {ft['lr']}, cosine, no "
              f"warm-up) through the engine; the control fine-tunes the uncompressed base "
              f"the same way. One seed. Latency: as claim 8, in the same run.", "",
              "| model | method | rank | MMACs | params | top-1 % before fine-tuning | after |"
              + "".join(f" {c} ms |" for c in cases), "|---" * (7 + len(cases)) + "|"]
    for r in records:
        t = timed.get(r["variant"], {})
        ms = [f"{t[c]['median_ms']:.2f}" if c in t else "-" for c in cases]
        rank = ("-" if not r["rank"] else f"matched to {r['rank']}"
                if r["method"] == "pruning" else r["rank"])
        lines.append(f"| {r['variant']} | {r['method']} | {rank} | "
                     f"{r['macs'] / 1e6:.1f} | {r['params'] / 1e6:.2f} M | "
                     f"{100 * r['top1_before_finetune']:.1f} | {100 * r['top1']:.1f} |"
                     + "".join(f" {v} |" for v in ms))
    lines.append("")
    by = {(r["method"], r["rank"]): r for r in records}
    control = next((r for r in records if r["method"] == "control"), None)
    for rank in sorted({r["rank"] for r in records if r["method"] == "low-rank"}):
        low, pruned = by.get(("low-rank", rank)), by.get(("pruning", rank))
        if pruned is None:
            continue
        d = 100 * (low["top1"] - pruned["top1"])
        text = (f"- rank {rank} ({low['macs'] / 1e6:.1f} against {pruned['macs'] / 1e6:.1f} "
                f"MMACs): low-rank {100 * low['top1']:.1f}%, pruning {100 * pruned['top1']:.1f}%"
                f" ({d:+.1f} points for low-rank")
        if control is not None:
            text += f"; the control {100 * control['top1']:.1f}%"
        text += ")"
        tl, tp = timed.get(low["variant"], {}), timed.get(pruned["variant"], {})
        for case in cases:
            if case in tl and case in tp:
                text += (f"; {case}: low-rank {tl[case]['median_ms'] / tp[case]['median_ms']:.2f}"
                         f"x the pruned model's latency")
        lines.append(text)
    spread = [max(v) - min(v) for v in _seed_top1().values() if len(v) > 1]
    if spread:
        lines += ["", f"One seed each, fine-tuned for {ft['epochs']} epochs: the 10-epoch runs "
                  f"of the claims above move by up to {100 * max(spread):.1f} points of top-1 "
                  f"from seed to seed (median {100 * statistics.median(spread):.1f}), so a "
                  f"smaller difference here is not a verdict."]
    return lines + [""]


def _seed_top1() -> dict[str, list[float]]:
    """Variant -> the top-1 of each of its finished seeds, over every claims record."""
    seeds: dict[str, list[float]] = {}
    for file in sorted((RECORDS / "runs").glob("*.json")):
        record = json.loads(file.read_text())
        seeds.setdefault(record["variant"], []).append(record["top1"])
    return seeds


# --- memory-efficient inference --------------------------------------------------------------

def _sci(v) -> str:
    return "-" if v is None else f"{v:.1e}"


def memory_split_section() -> list[str]:
    lines = ["## Memory-efficient inference (MobileNetV2 §5.1)", ""]
    m = read_record("memory_split.json")
    if m is None:
        return lines + ["Not measured yet: `experiments/claims.py memsplit` on a quiet "
                        "machine.", ""]
    lines += [f"`{m['model']}` at {m['resolution']} px, batch {m['batch']}, fp32, "
              f"{m['threads']} threads ({m['cpu']}, {m.get('isa', '?')}; torch {m['torch']}); "
              f"commit {m.get('commit', '?')}, {m.get('date', '?')}; command "
              f"`{m.get('command', '?')}`. Peak: the most memory the forward held at once "
              f"(`torch.profiler`, `profile_memory=True`); estimate: the cost model's live "
              f"tensors with the blocks split; every split model's output equals the "
              f"unsplit one's (largest difference below). Cost model: "
              f"{m['cost_model_live_bytes'] / 2**20:.2f} MiB whole blocks, "
              f"{m['cost_model_bottleneck_bytes'] / 2**20:.2f} MiB in the limit of large t.",
              "", "| t | peak MiB | estimate MiB | max abs diff | latency ms (min-max) | "
              "x unsplit (median of per-repeat ratios) |", "|---|---|---|---|---|---|"]
    for name, r in m["runs"].items():
        lines.append(f"| {name} | {r['peak_bytes'] / 2**20:.2f} | "
                     f"{r['estimate_bytes'] / 2**20:.2f} | {_sci(r.get('max_abs_diff'))} | "
                     f"{r['median_ms']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f}) | "
                     f"{r['ratio']:.2f} |")
    return lines + [""]


def memory_split(extra: list[str]) -> None:
    cmd = [sys.executable, str(HERE.parent / "benchmarks" / "bench_memory_split.py"),
           "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode:
        raise SystemExit(done.stderr or done.stdout)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["command"] = " ".join(["python", "benchmarks/bench_memory_split.py", "--json",
                                  *extra])
    record.update(commit=commit(), date=time.strftime("%Y-%m-%d"), isa=_isa())
    print(write_record("memory_split.json", record))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("plan", help="list the runs of the claims and whether they are done")
    r = sub.add_parser("run", help="train the runs the claims need (resumes)")
    for x in (q, r):
        x.add_argument("--claims", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--max-runs", type=int, default=0, help="stop after N runs (0: all)")
    r.add_argument("--redo", nargs="+", default=[], metavar="RUN",
                   help="retrain only these recorded runs, where this checkout lacks their "
                        "weights (e.g. low-rank's base); their records are replaced")
    lat = sub.add_parser("latency", help="claim 8: CPU latency of every finished variant")
    lat.add_argument("--repeats", type=int, default=5)
    lat.add_argument("--iters", type=int, default=10)
    lat.add_argument("--threads", type=int, default=2)
    lat.add_argument("--num-images", type=int, default=128, help="int8 calibration images")
    lat.add_argument("--prepare-only", action="store_true",
                     help="export and quantize the files only (any time); the timing itself "
                          "wants a quiet machine")
    lr = sub.add_parser("lowrank", help="low-rank factorisation against channel pruning "
                                        "(after claim 2's base run)")
    lr.add_argument("--workers", type=int, default=1)
    sub.add_parser("memsplit", help="memory-efficient inference: peak memory and latency "
                                    "against t (a quiet machine; other options go to "
                                    "benchmarks/bench_memory_split.py)")
    sub.add_parser("report", help="write docs/results/claims.md")
    args, extra = p.parse_known_args()
    if extra and args.cmd != "memsplit":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.cmd == "plan":
        runs = selected_runs(args.claims)
        for run in runs:
            rec = finished(run)
            print(f"{'done' if rec else 'todo'}  {run.name}"
                  + (f"  top-1 {100 * rec['top1']:.1f}%" if rec else ""))
        print(f"{sum(1 for x in runs if finished(x))} of {len(runs)} runs done")
    elif args.cmd == "run":
        count = 0

        def done(run: Run) -> bool:
            return bool(finished(run)) and (run.name not in args.redo
                                            or weights(run.name).is_file())
        grid = selected_runs(args.claims)
        if args.redo:
            known = {r.name: r for r in selected_runs(sorted(claims()))}
            unknown = [n for n in args.redo if n not in known]
            if unknown:
                p.error(f"--redo: no run named {', '.join(unknown)} (`plan` lists them)")
            grid = [known[n] for n in args.redo]
        for run in grid:
            if done(run) or not take(run):
                continue
            try:
                if done(run):          # another worker finished it since the check above
                    continue
                record = train_run(run, args.workers)
            finally:
                release(run)
            print(f"{run.name}: top-1 {100 * record['top1']:.1f}%  "
                  f"{record['sitting_s']} s", flush=True)
            count += 1
            if args.max_runs and count >= args.max_runs:
                break
    elif args.cmd == "latency":
        timed = measure_latency(args.repeats, args.iters, args.threads, args.num_images,
                                args.prepare_only)
        if timed is None:
            print(f"files ready in {RUNS / 'deploy'}; time them on a quiet machine with "
                  f"`experiments/claims.py latency`", flush=True)
        else:
            print(write_record("latency.json", timed))
    elif args.cmd == "lowrank":
        lowrank_runs(args.workers)
    elif args.cmd == "memsplit":
        memory_split(extra)
    else:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(report())
        print(PAGE)


if __name__ == "__main__":
    main()
