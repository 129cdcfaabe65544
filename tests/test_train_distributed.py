"""DDP under torchrun on CPU (gloo), SyncBN, timed checkpoints, TensorBoard, distillation, AMP
options."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import mobilenets
from mobilenets import train
from mobilenets.tasks.classification import kd_loss
from mobilenets.training import engine
from mobilenets.training import make_config

from test_train import make_folder

# No dropout, drop-path or mixup: the only randomness is the per-sample seeded augmentation.
# Two epochs of one step each: on 24 images, training is chaotic enough that after ~6 steps
# merely changing the thread count (the order of float sums) moves weights by 1e-3 and more;
# after 2 steps at this lr that noise is ~1e-5, so the tolerance below can be tight.
SAME = dict(model="mobilenet_v3_small_075", resolution=32, lr=0.01, workers=0, seed=5,
            ema_decay=0.9, color_jitter=0.2, label_smoothing=0.1, dropout=0.0,
            drop_path_rate=0.0, epochs=2, max_steps_per_epoch=1, weight_decay=1e-4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))      # 3 classes x 8 train, x 4 val


def _cli_args(**options):
    return [f"--{k.replace('_', '-')}={v}" for k, v in options.items()] + ["--no-progress"]


def _run(cmd, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "last.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    return max((x - b[k]).abs().max().item() for k, x in a.items() if x.is_floating_point())


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(data, tmp_path):
    one = _run([sys.executable, "-m", "mobilenets", "train", "--data", str(data)]
               + _cli_args(batch_size=8, **SAME), tmp_path / "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "mobilenets", "train", "--data", str(data)]
    two = _run(torchrun + _cli_args(batch_size=4, **SAME) + ["--sync-bn"], tmp_path / "two")
    assert two["world"] == 2 and (two["epoch"], two["step"]) == (2, 0)
    assert len(two["rng"]) == 2                      # every rank's RNG state, for resume
    assert one["model"].keys() == two["model"].keys()
    for part in ("model", "ema"):
        for k, x in one[part].items():
            torch.testing.assert_close(two[part][k], x, rtol=1e-4, atol=5e-5,
                                       msg=f"{part}.{k} differs between 1 and 2 processes")
    # the check has teeth: without SyncBN each process normalises with its own half-batch
    plain = _run(torchrun + _cli_args(batch_size=4, **SAME), tmp_path / "plain")
    assert _max_diff(one["model"], plain["model"]) > 1e-2
    # rank 0 alone wrote the outputs, with metrics over the whole validation set
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().split("\n")
            if x]
    assert [r["epoch"] for r in rows] == [1, 2]
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().split("\n")
           if x]
    for r, s in zip(rows, ref):
        assert r["top1"] == pytest.approx(s["top1"]) and r["val_loss"] == pytest.approx(
            s["val_loss"], rel=1e-3)
    assert mobilenets.load(tmp_path / "two" / "best").num_classes == 3


def test_checkpoint_every_minutes_writes_mid_epoch(data, tmp_path, monkeypatch):
    saved = []
    real = engine.save_checkpoint
    monkeypatch.setattr(engine, "save_checkpoint",
                        lambda path, state: (saved.append((state["epoch"], state["step"])),
                                             real(path, state)))
    cfg = make_config(data=str(data), out=str(tmp_path / "run"), batch_size=4,
                      checkpoint_every_minutes=1e-9,
                      **dict(SAME, epochs=1, max_steps_per_epoch=0))
    train(cfg, progress=False)
    # 24 images / batch 4 = 6 steps: a timed save after steps 1..5, then the end of the epoch
    assert saved == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 0)]
    saved.clear()
    train(make_config(**dict(cfg.to_dict(), checkpoint_every_minutes=0.0)), progress=False,
          overwrite=True)
    assert saved == [(1, 0)]


def test_tensorboard_events_match_metrics(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    train(make_config(data=str(data), out=str(out), batch_size=4, **SAME), progress=False)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    top1 = [e.value for e in events.Scalars("epoch/top1")]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert top1 == pytest.approx([r["top1"] for r in rows])
    assert len(events.Scalars("train/loss_step")) >= 1


def test_kd_loss_is_hintons_soft_target_term():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    p = F.softmax(t / 3, 1)
    manual = (p * (p.log() - F.log_softmax(s / 3, 1))).sum(1).mean() * 9
    assert kd_loss(s, t, 3.0).item() == pytest.approx(manual.item(), rel=1e-5)
    assert kd_loss(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_trains_from_a_saved_teacher(data, tmp_path):
    teacher = tmp_path / "teacher"
    train(make_config(data=str(data), out=str(teacher), batch_size=4, **SAME), progress=False)
    base = dict(SAME, epochs=1, model="mobilenet_v2_035")
    student = train(make_config(data=str(data), out=str(tmp_path / "s"), batch_size=4,
                                teacher=str(teacher / "best"), kd_alpha=0.7, **base),
                    progress=False)
    alone = train(make_config(data=str(data), out=str(tmp_path / "a"), batch_size=4, **base),
                  progress=False)
    assert student["train_loss"] != pytest.approx(alone["train_loss"])   # the KD term is in
    with pytest.raises(ValueError, match="teacher predicts 3 classes"):
        other = make_folder(tmp_path / "two", classes=("x", "y"))
        train(make_config(data=str(other), out=str(tmp_path / "b"), batch_size=4,
                          teacher=str(teacher / "best"), **base), progress=False)
    with pytest.raises(ValueError, match="not a saved-model folder"):
        train(make_config(data=str(data), out=str(tmp_path / "c"), batch_size=4,
                          teacher="mobilenet_v2_100", **base), progress=False)


def test_fp16_autocast_needs_a_gpu(data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="float16 autocast needs a GPU"):
        train(make_config(data=str(data), out=str(tmp_path / "x"), batch_size=4, amp=True,
                          amp_dtype="float16", **SAME), progress=False)
