"""The documentation's code blocks run, so that README.md and docs/ cannot rot.

Every ```python and ```sh block of README.md and docs/**/*.md is run, file by file, top to
bottom, in a fresh temporary folder:
- the python blocks of one file share one namespace (a later block may use an earlier one's
  names) and run in this process;
- each sh block runs in bash (``set -euo pipefail``) with this interpreter's folder (the
  virtualenv's bin/, where ``mobilenets`` lives) first on PATH.
Both run torch on one thread (OMP_NUM_THREADS=1 for the shell), see ``one_thread``.

Files whose blocks use ``runs/demo/`` get what ``make demo`` writes there, from a session run
of the same ``mobilenets train`` shrunk to seconds (1 epoch of 2 steps at 32 px), so that
the docs can say "after make demo" and still be tested.

A block that cannot run here (``make`` itself, downloads, long trainings, multi-node or GPU
launches, placeholder paths like DIR) is fenced ```sh no-run or ```python no-run; NO_RUN
lists them all, so adding one is a visible decision. Keep runnable examples small (tiny
resolutions, a step or two, the built-in sample) rather than fencing them off: this file
should take well under a minute on 2 CPU cores. OpenVINO goes in sh blocks only (a process of
its own: see docs/known-issues.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"python", "sh"}
OTHER_LANGUAGES = {"text", "toml", "json"}      # shown, never run
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)

# (file, first line) of every no-run block, and why it cannot run here
NO_RUN = {
    ("README.md", "make demo    # creates .venv/, installs, trains mobilenet_v3_small_100 on the built-in sample"):
        "creates a virtualenv and trains for a minute",
    ("README.md", "python3 -m venv .venv"): "installs from the network",
    ("docs/detection.md", "mobilenets train --model ssdlite_mobilenet_v2_100 --data coco128-lightly/object_detection \\"):
        "half an hour of training on COCO128",
    ("docs/models.md", "# needs the file in the torch hub / Hugging Face cache, or network with allow_download=True"):
        "needs cached or downloaded weights",
    ("docs/training.md", "mobilenets train --model mobilenet_v2_100 --data DIR --out runs/v2 --recipe small-data \\"):
        "a long training on a placeholder DIR",
    ("docs/training.md", "mobilenets train --model mobilenet_v2_035 --data DIR --teacher runs/v2/best \\"):
        "a training on a placeholder DIR with a placeholder teacher",
    ("docs/training.md", "torchrun --standalone --nproc_per_node 4 -m mobilenets train --model mobilenet_v2_100 --data DIR \\"):
        "four processes (GPUs) on a placeholder DIR",
    ("docs/training.md", ".venv/bin/python experiments/imagenette.py --epochs 15 --workers 1 --out runs/in-v2-15-sgd \\"):
        "Imagenette from ../shared/datasets, 45 minutes",
    ("docs/training.md", "mobilenets train --model mobilenet_v2_100 --data shards --workers 8 --out runs/v2-shards"):
        "a long training",
    ("docs/training.md", "mobilenets shard ~/.cache/mobilenets/datasets/7scenes-redkitchen --out depth-shards \\"):
        "needs 7-Scenes unpacked, then a long training",
    ("docs/training.md", "torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\"):
        "two GPU nodes streaming from an object store",
    ("docs/training.md", "HOST=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"):
        "a Slurm job",
    ("docs/deploy.md", "mobilenets prune runs/v2/best --macs-ratio 0.3 --data DIR --epochs 5 --out runs/v2-pruned"):
        "fine-tunes on a placeholder DIR",
    ("docs/detection.md", "# COCO128 unpacked by `python experiments/datasets.py coco128-lightly`; about half an hour"):
        "COCO128 from ../shared/datasets, 100 epochs",
}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def code_blocks(path: Path) -> list[dict]:
    """The fenced blocks of ``path``: language, flags, code, line number, first line."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        code = m.group(2)
        first = next((line.strip() for line in code.splitlines() if line.strip()), "")
        blocks.append({"lang": info[0] if info else "", "flags": info[1:], "code": code,
                       "line": text.count("\n", 0, m.start()) + 1, "first": first,
                       "file": rel(path)})
    return blocks


ALL_BLOCKS = [b for path in DOC_FILES for b in code_blocks(path)]
NO_RUN_BLOCKS = [b for b in ALL_BLOCKS if b["flags"] == ["no-run"]]
FILES_TO_RUN = [p for p in DOC_FILES
                if any(b["lang"] in RUNNABLE and not b["flags"] for b in code_blocks(p))]


def test_every_block_is_run_or_listed():
    for b in ALL_BLOCKS:
        where = f"{b['file']}:{b['line']}"
        assert b["lang"] in RUNNABLE | OTHER_LANGUAGES, (
            f"{where}: fence the block as python, sh (runnable) or one of "
            f"{sorted(OTHER_LANGUAGES)}, not {b['lang']!r}")
        assert b["flags"] in ([], ["no-run"]), f"{where}: unknown fence flags {b['flags']}"
        assert not (b["flags"] and b["lang"] not in RUNNABLE), f"{where}: no-run on {b['lang']}"
    found = {(b["file"], b["first"]) for b in NO_RUN_BLOCKS}
    assert found == set(NO_RUN), (
        f"no-run blocks not in NO_RUN: {sorted(found - set(NO_RUN))}; "
        f"listed but gone: {sorted(set(NO_RUN) - found)}")


@pytest.mark.parametrize("block", NO_RUN_BLOCKS,
                         ids=[f"{b['file']}:{b['first'][:60]}" for b in NO_RUN_BLOCKS])
def test_no_run_block(block):
    pytest.skip(f"no-run: {NO_RUN.get((block['file'], block['first']), '?')}")


@pytest.fixture
def one_thread():
    """torch on one thread while the docs run: on 2 cores shared with other jobs, tiny
    models ran several times slower on two contended threads than on one."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """What ``make demo`` writes into runs/demo/, from a 2-step run at 32 px."""
    import mobilenets
    from mobilenets.training import make_config
    out = tmp_path_factory.mktemp("demo") / "runs" / "demo"
    mobilenets.train(make_config(None, epochs=1, resolution=32, max_steps_per_epoch=2,
                                 out=str(out)), progress=False)
    assert (out / "best" / "config.json").is_file()
    return out


def run_sh(block: dict, cwd: Path) -> None:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block["code"]], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{block['file']}:{block['line']} failed (exit {proc.returncode}):\n{block['code']}\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("path", FILES_TO_RUN, ids=[rel(p) for p in FILES_TO_RUN])
def test_doc_runs(path, tmp_path, monkeypatch, request, one_thread):
    blocks = [b for b in code_blocks(path) if b["lang"] in RUNNABLE and not b["flags"]]
    if any("runs/demo" in b["code"] for b in blocks):
        shutil.copytree(request.getfixturevalue("demo_run"), tmp_path / "runs" / "demo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"doc:{rel(path)}"}
    for b in blocks:
        if b["lang"] == "sh":
            run_sh(b, tmp_path)
            continue
        assert not re.search(r"^[^#\n]*runtime=[\"']openvino", b["code"], re.M), (
            f"{b['file']}:{b['line']}: run OpenVINO in an sh block (a process of its own)")
        # a blank line per skipped line keeps tracebacks' line numbers those of the .md file
        code = compile("\n" * (b["line"]) + b["code"], str(path), "exec")
        exec(code, namespace)  # noqa: S102  (the documentation's own examples)
