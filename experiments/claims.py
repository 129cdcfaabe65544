"""The seeds' design claims, tested at small scale on Imagenette (issue 25): one entry point
that trains any subset of the grid, resumes after an interruption, and writes
``docs/results/claims.md`` with a table, a plot and a verdict per claim.

    .venv/bin/python experiments/claims.py plan                  # the runs and their state
    .venv/bin/python experiments/claims.py run --claims 2 3      # train what they need
    .venv/bin/python experiments/claims.py latency               # claim 8 (a quiet machine)
    .venv/bin/python experiments/claims.py report                # docs/results/claims.md

Scale: every run is 10 epochs of the ``small-data`` recipe (SGD, lr 0.1 at batch 64, 3
warm-up epochs, cosine, label smoothing 0.1) from random weights on the 160 px copy of
Imagenette (``experiments/datasets.py imagenette-224 --short-side 160``), bf16 autocast where
the hardware has it (float32 on an AVX2 CPU; claim.json says which), channels-last, top-1 of
the last epoch on the 3,925 val images at the run's resolution (validated only then). What
the scale-down may change: ten classes and 10 epochs favour small, quickly-trained networks;
effects of a point or two are below the seed spread (2-4 points), which is why each claim
has 2-3 seeds and the verdict rule below.

Verdict rule (fixed before the runs, issue 25): a claim is **reproduced** when every seed of
the favoured variant beats every seed of the other, **refuted** when every seed of the other
wins, **inconclusive** otherwise. Claim 1 (accuracy log-linear in Mult-Adds) is reproduced
when a straight line of mean top-1 against log10(MACs) has R^2 >= 0.9 and a positive slope.

Ablation variants are built here from the registered models by module surgery (the library's
models stay the papers'): ``relu6-projection`` puts ReLU6 after every inverted residual's
projection (MobileNetV2 Figure 6a), ``no-shortcut`` drops the bottleneck shortcuts,
``classic-shortcut`` connects the expansions instead of the bottlenecks (Figure 6b: block j's
expanded input is added to block j+1's expanded output wherever the shapes match, i.e. after
a stride-1 block whose expansion equals the next one's), ``no-se`` removes squeeze-excite.
Each run folder ``runs/claims/RUN`` holds the engine's files and ``claim.json`` (command,
commit, model, MACs, params, top-1, the share of near-zero depthwise kernels).
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


def claims() -> dict[int, Claim]:
    c = {}
    widths = {"100": 1.0, "075": 0.75, "050": 0.5, "025": 0.25}
    v1 = {f"V1 {w} {r}px": seeds(2, model=f"mobilenet_v1_{k}", resolution=r)
          for k, w in widths.items() for r in (128, 112, 96)}
    c[1] = Claim(1, "V1 width x resolution: accuracy log-linear in Mult-Adds",
                 "MobileNetV1 Tables 6-7, Figures 4-5", v1, kind="loglinear")
    fd = {f"FD {w}": seeds(2, model=f"fd_mobilenet_{k}") for k, w in widths.items()
          if k != "075"}
    c[4] = Claim(4, "Fast downsampling wins below ~140 MFLOPs (FD-MobileNet vs V1, 112 px)",
                 "FD-MobileNet seed", {**fd, **{f"V1 {w}": v1[f"V1 {w} 112px"]
                                                for k, w in widths.items() if k != "075"}},
                 [(f"FD {w}", f"V1 {w}") for w in (1.0, 0.5, 0.25)])
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
    b0 = dict(model="efficientnet_b0")
    c[6] = Claim(6, "Compound scaling beats width-, depth- or resolution-only at ~2x MACs",
                 "EfficientNet Figure 8 (§3.3)",
                 {"B0 112px": seeds(2, **b0),
                  "width 1.4": seeds(2, options=(("width_mult", 1.4),), **b0),
                  "depth 2.0": seeds(2, options=(("depth_mult", 2.0),), **b0),
                  "resolution 160": seeds(2, resolution=160, **b0),
                  "compound (d1.2 w1.1 r128)": seeds(2, resolution=128, options=(
                      ("depth_mult", 1.2), ("width_mult", 1.1)), **b0)},
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


def build(run: Run) -> nn.Module:
    import mobilenets
    model = mobilenets.create_model(run.model, num_classes=10, **dict(run.options))
    return apply_surgery(model, run.surgery)


# --- running -------------------------------------------------------------------------------

def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=HERE).stdout.strip()


def finished(run: Run) -> dict | None:
    path = RUNS / run.name / "claim.json"
    return json.loads(path.read_text()) if path.is_file() else None


def amp_here() -> bool:
    """bfloat16 autocast where the hardware has it (a GPU, or a CPU with AVX-512 BF16 or
    AMX); float32 elsewhere, where emulated bfloat16 trains several times slower."""
    from mobilenets.training.engine import cpu_has_bf16
    return torch.cuda.is_available() or cpu_has_bf16()


def train_run(run: Run, workers: int) -> dict:
    from mobilenets.compress import inspect_model
    from mobilenets.cost.profile import profile
    from mobilenets.tasks.classification import train
    from mobilenets.training import make_config

    out = RUNS / run.name
    resume = out / "last.pt" if (out / "last.pt").is_file() else None
    options = dict(epochs=EPOCHS, resolution=run.resolution, batch_size=64, workers=workers,
                   seed=run.seed, amp=amp_here(), channels_last=True, tensorboard=False,
                   val_every=EPOCHS)        # the verdicts read the last epoch only
    options.update(run.train)
    if SMOKE:
        options.update(epochs=1, max_steps_per_epoch=2, val_every=1)
    cfg = make_config("small-data", model=run.model, out=str(out),
                      data=str(downsized("imagenette-224", 160)), **options)
    torch.manual_seed(run.seed)        # the surgery-free weights equal the engine's own build
    model = build(run)
    start = time.perf_counter()
    train(cfg, resume=resume, progress=False, model=model)
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    model = model.float().eval().to(memory_format=torch.contiguous_format)
    cost = profile(model, (3, run.resolution, run.resolution))
    record = {"run": run.name, "variant": run.variant, "model": run.model,
              "options": dict(run.options), "surgery": run.surgery, "train": dict(run.train),
              "resolution": run.resolution, "seed": run.seed, "epochs": len(epochs),
              "top1": epochs[-1]["top1"],
              "macs": cost.macs, "params": cost.params,
              "dead_depthwise": inspect_model(model).totals(),
              "amp": options["amp"], "commit": commit(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "sitting_s": round(time.perf_counter() - start)}
    (out / "claim.json").write_text(json.dumps(record, indent=2) + "\n")
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
    for label, records in rows.items():
        if not records:
            continue
        xs = [(latency or {}).get(r["variant"], r["macs"] / 1e6) for r in records]
        ax.scatter(xs, [100 * r["top1"] for r in records], label=label, s=18)
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
    lat_path = RUNS / "latency.json"
    latency = json.loads(lat_path.read_text()) if lat_path.is_file() else {}
    lines = ["# The seeds' claims at small scale (issue 25)", "",
             f"Generated by `.venv/bin/python experiments/claims.py report` from `{RUNS}`; "
             f"each run's command, commit, epochs and hardware are in its `claim.json`. "
             f"Protocol, scale-down and the verdict rule: the docstring of "
             f"`experiments/claims.py`. torch {torch.__version__}.", ""]
    all_records = []
    for n in sorted(table):
        claim = table[n]
        rows = {label: [r for r in map(finished, runs) if r] for label, runs
                in claim.groups.items()}
        done = sum(len(v) for v in rows.values())
        total = sum(len(v) for v in claim.groups.values())
        all_records += [r for v in rows.values() for r in v]
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
            means = [(statistics.fmean(r["macs"] for r in v), statistics.fmean(
                r["top1"] for r in v)) for v in rows.values() if v]
            slope, r2, word = loglinear(means)
            lines += [f"Fit of mean top-1 on log10(MACs): slope {100 * slope:.1f} points per "
                      f"decade, R^2 {r2:.3f}. **Verdict: {word}**.", ""]
        for fav, other in claim.comparisons:
            def value(r):
                return r["dead_depthwise"]["zero_l2"] if claim.kind == "dead" else r["top1"]
            a = [value(r) for r in rows.get(fav, [])]
            b = [value(r) for r in rows.get(other, [])]
            lines.append(f"- {fav} vs {other}: **{verdict(a, b)}**")
        if claim.comparisons:
            lines.append("")
        if done:
            png = PAGE.parent / "claims" / f"claim{n}.png"
            _plot(claim, rows, png)
            lines += [f"![claim {n}](claims/claim{n}.png)", ""]
    lines += ["## 8. Mult-Adds are not latency", ""]
    if latency:
        lines += ["| variant | MMACs | fp32 ms | int8 ms | top-1 % |", "|---|---|---|---|---|"]
        seen = set()
        for r in all_records:
            if r["variant"] in seen or r["variant"] not in latency:
                continue
            seen.add(r["variant"])
            t = latency[r["variant"]]
            lines.append(f"| {r['variant']} | {r['macs'] / 1e6:.1f} | {t['fp32_ms']:.2f} | "
                         f"{t.get('int8_ms', float('nan')):.2f} | {100 * r['top1']:.1f} |")
        lines.append("")
    else:
        lines += ["Not measured yet: `experiments/claims.py latency` on a quiet machine.", ""]
    return "\n".join(lines) + "\n"


def measure_latency(repeats: int, iters: int) -> dict:
    """Eager fp32 latency at batch 1 of every finished variant, interleaved in one process
    (benchmarks/_common.measure), at each variant's resolution."""
    sys.path.insert(0, str(HERE.parent / "benchmarks"))
    from _common import measure
    variants = {}
    for path in sorted(RUNS.glob("*/claim.json")):
        record = json.loads(path.read_text())
        variants.setdefault(record["variant"], record)
    out = {}
    by_res = {}
    for variant, record in variants.items():
        by_res.setdefault(record["resolution"], []).append(record)
    for res, records in by_res.items():
        fns = {}
        for record in records:
            run = Run(record["model"], record["resolution"], 0,
                      tuple(record["options"].items()), record["surgery"],
                      tuple(record["train"].items()))
            fns[record["variant"]] = torch.inference_mode()(build(run).eval())
        args = argparse.Namespace(warmup=3, repeats=repeats, iters=iters)
        measured = measure(fns, torch.randn(1, 3, res, res), args, reference=next(iter(fns)))
        out.update({k: {"fp32_ms": v["median_ms"], "fp32_spread_ms": [v["min_ms"],
                                                                      v["max_ms"]]}
                    for k, v in measured.items()})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("plan", help="list the runs of the claims and whether they are done")
    r = sub.add_parser("run", help="train the runs the claims need (resumes)")
    for x in (q, r):
        x.add_argument("--claims", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--max-runs", type=int, default=0, help="stop after N runs (0: all)")
    lat = sub.add_parser("latency", help="claim 8: CPU latency of every finished variant")
    lat.add_argument("--repeats", type=int, default=5)
    lat.add_argument("--iters", type=int, default=10)
    sub.add_parser("report", help="write docs/results/claims.md")
    args = p.parse_args()
    if args.cmd == "plan":
        runs = selected_runs(args.claims)
        for run in runs:
            rec = finished(run)
            print(f"{'done' if rec else 'todo'}  {run.name}"
                  + (f"  top-1 {100 * rec['top1']:.1f}%" if rec else ""))
        print(f"{sum(1 for x in runs if finished(x))} of {len(runs)} runs done")
    elif args.cmd == "run":
        count = 0
        for run in selected_runs(args.claims):
            if finished(run):
                continue
            record = train_run(run, args.workers)
            print(f"{run.name}: top-1 {100 * record['top1']:.1f}%  "
                  f"{record['sitting_s']} s", flush=True)
            count += 1
            if args.max_runs and count >= args.max_runs:
                break
    elif args.cmd == "latency":
        RUNS.mkdir(parents=True, exist_ok=True)
        (RUNS / "latency.json").write_text(json.dumps(
            measure_latency(args.repeats, args.iters), indent=2) + "\n")
    else:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(report())
        print(PAGE)


if __name__ == "__main__":
    main()
