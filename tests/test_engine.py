"""The training engine knows no task: a made-up regression task trains, picks best/ by its
own metric and resumes exactly on it, with nothing of the engine changed for it."""

import json
import warnings

import pytest
import torch
from torch import nn

from mobilenets.training import Task, fit, make_config
from mobilenets.training.sampling import SeededView


class Points:
    """(x, y) pairs of y = x . w + noise."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.arange(1.0, 9.0) / 8 + 0.01 * torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Stopped(Exception):
    pass


class Regression(Task):
    best_metric = "mse"
    higher_is_better = False
    metrics = {"mse": ("mse", False)}

    def __init__(self, stop_at: int | None = None):
        self.saved, self.stop_at = [], stop_at

    def start_epoch(self, model, epoch):
        if epoch == self.stop_at:            # as if the process were killed here
            raise Stopped

    def datasets(self, cfg):
        jitter = lambda x: x + 0.05 * torch.randn_like(x)      # noqa: E731 (seeded per item)
        return SeededView(Points(64, 0), jitter, cfg.seed), SeededView(Points(32, 1),
                                                                      lambda x: x, cfg.seed)

    def collate(self, items):
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]), 0

    def build_model(self, cfg, resumed=None):
        torch.manual_seed(cfg.seed)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))

    def loss(self, outputs, targets):
        return nn.functional.mse_loss(outputs.squeeze(1), targets)

    def evaluate(self, model, loader, device, dist):
        errors = torch.cat([(model(x).squeeze(1) - y) ** 2 for x, y, _ in loader])
        return {"loss": errors.mean().item(), "mse": errors.mean().item()}

    def save_best(self, model, folder):
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), folder / "weights.pt")
        self.saved.append(folder)


def config(tmp_path, name, epochs):
    return make_config(out=str(tmp_path / name), epochs=epochs, batch_size=8, lr=0.05,
                       tensorboard=False, seed=3)


def final_weights(out):
    return torch.load(out / "last.pt", weights_only=True)["model"]


def test_a_task_of_its_own_trains_picks_best_by_its_metric_and_resumes_exactly(tmp_path):
    task = Regression()
    metrics = fit(task, config(tmp_path, "straight", 3), progress=False)
    rows = [json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and metrics["mse"] == rows[-1]["mse"]
    assert rows[-1]["mse"] < rows[0]["mse"]                        # it learns
    assert (tmp_path / "straight" / "best" / "weights.pt").is_file() and task.saved
    # stopped after two epochs, then resumed: the same weights as three in one go
    with pytest.raises(Stopped):
        fit(Regression(stop_at=2), config(tmp_path, "split", 3), progress=False)
    fit(Regression(), config(tmp_path, "split", 3), resume=tmp_path / "split" / "last.pt",
        progress=False)
    straight, split = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert straight.keys() == split.keys()
    for key in straight:
        torch.testing.assert_close(split[key], straight[key], rtol=0, atol=0)


def test_resuming_under_another_best_metric_is_refused(tmp_path):
    class ByR2(Regression):
        best_metric = "r2"

    with pytest.raises(Stopped):
        fit(Regression(stop_at=1), config(tmp_path, "run", 3), progress=False)
    with pytest.raises(ValueError, match="picked its best model by 'mse'"):
        fit(ByR2(), config(tmp_path, "run", 3), resume=tmp_path / "run" / "last.pt",
            progress=False)


def test_best_follows_a_metric_where_lower_is_better(tmp_path):
    class Scripted(Regression):
        scores = iter([3.0, 1.0, 2.0])

        def evaluate(self, model, loader, device, dist):
            score = next(self.scores)
            return {"loss": score, "mse": score}

    task = Scripted()
    fit(task, config(tmp_path, "run", 3), progress=False)
    assert len(task.saved) == 2                       # epochs 1 and 2 improved, 3 did not
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["best"] == 1.0 and ckpt["best_metric"] == "mse"


def test_amp_on_a_cpu_without_bfloat16_warns(tmp_path, monkeypatch):
    """bfloat16 autocast on a CPU without bf16 instructions is emulated, many times slower
    than float32: the engine says so (and trains all the same)."""
    from mobilenets.training import engine
    cfg = make_config(out=str(tmp_path / "amp"), epochs=1, batch_size=8, lr=0.05,
                      tensorboard=False, seed=3, amp=True)
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no bfloat16 instructions"):
        fit(Regression(), cfg, progress=False)
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(Regression(), make_config(out=str(tmp_path / "amp2"), epochs=1, batch_size=8,
                                      lr=0.05, tensorboard=False, seed=3, amp=True),
            progress=False)


def test_val_every_skips_validation_between_and_leaves_the_training_as_it_was(tmp_path):
    fit(Regression(), config(tmp_path, "every", 4), progress=False)
    calls = []

    class Counted(Regression):
        def evaluate(self, model, loader, device, dist):
            calls.append(1)
            return super().evaluate(model, loader, device, dist)

    def sparse(name):
        return make_config(**{**config(tmp_path, name, 4).to_dict(), "val_every": 3})

    task = Counted()
    metrics = fit(task, sparse("sparse"), progress=False)
    rows = [json.loads(r) for r in (tmp_path / "sparse" / "metrics.jsonl").read_text()
            .splitlines()]
    assert len(calls) == 2                                  # epoch 3 and the last, 4
    assert [("mse" in r, "val_loss" in r) for r in rows] == [(False, False), (False, False),
                                                             (True, True), (True, True)]
    assert rows[0]["train_loss"] > 0 and metrics["mse"] == rows[-1]["mse"]
    assert 1 <= len(task.saved) <= 2                        # best/ only on validated epochs
    a, b = final_weights(tmp_path / "every"), final_weights(tmp_path / "sparse")
    for key in a:                                           # validation changes no weight
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    # stopped after an unvalidated epoch, then resumed: the same weights again
    with pytest.raises(Stopped):
        fit(Regression(stop_at=2), sparse("split"), progress=False)
    fit(Regression(), sparse("split"), resume=tmp_path / "split" / "last.pt", progress=False)
    c = final_weights(tmp_path / "split")
    for key in a:
        torch.testing.assert_close(c[key], a[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="val_every"):
        make_config(val_every=0)


class StopAtStep(Regression):
    """Killed (as if) at its ``stop``-th training step, counted over the run."""

    def __init__(self, stop: int):
        super().__init__()
        self.calls, self.stop = 0, stop

    def loss(self, outputs, targets):
        self.calls += 1
        if self.calls == self.stop:
            raise Stopped
        return super().loss(outputs, targets)


def rows_of(out):
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_keeps_the_optimiser_and_the_schedule_in_epochs(tmp_path):
    """Options the checkpoint's optimiser holds are refused on resume rather than ignored; at
    an epoch boundary another batch size goes on with the schedule where it was in epochs
    (it ended at a non-zero lr, counted in the old steps); metrics.jsonl's lr is the lr the
    epoch's last step used."""
    with pytest.raises(Stopped):
        fit(Regression(stop_at=1), config(tmp_path, "run", 3), progress=False)
    last = tmp_path / "run" / "last.pt"
    for change, shown in (({"lr": 0.5}, r"--lr 0.5 \(the run's: 0.05\)"),
                          ({"momentum": 0.5, "optimizer": "adamw"},
                           r"--optimizer adamw \(the run's: sgd\), --momentum 0.5")):
        cfg = make_config(**{**config(tmp_path, "run", 3).to_dict(), **change})
        with pytest.raises(ValueError, match=shown):
            fit(Regression(), cfg, resume=last, progress=False)
    bigger = make_config(**{**config(tmp_path, "run", 3).to_dict(), "batch_size": 16})
    fit(Regression(), bigger, resume=tmp_path / "run", progress=False)     # a folder will do
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["scheduler"]["last_epoch"] == 3 * 4         # counted in the new steps (4)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0, abs=1e-12)
    import math
    last_step = 0.05 * 0.5 * (1 + math.cos(math.pi * 11 / 12))      # cosine, 12 of 4 each
    assert rows_of(tmp_path / "run")[-1]["lr"] == pytest.approx(last_step, rel=1e-9)


def test_a_mid_epoch_resume_restores_the_epochs_loss_and_refuses_another_batch(tmp_path):
    straight = make_config(**{**config(tmp_path, "straight", 2).to_dict(),
                              "checkpoint_every_steps": 2})
    fit(Regression(), straight, progress=False)
    split = make_config(**{**straight.to_dict(), "out": str(tmp_path / "split")})
    with pytest.raises(Stopped):
        fit(StopAtStep(8 + 6), split, progress=False)      # epoch 2, after its 4th step's save
    ckpt = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 4) and ckpt["partial"][0][1] == 4 * 8
    other = make_config(**{**split.to_dict(), "batch_size": 16})
    with pytest.raises(ValueError, match="written mid-epoch with other steps per epoch"):
        fit(Regression(), other, resume=tmp_path / "split" / "last.pt", progress=False)
    fit(Regression(), split, resume=tmp_path / "split" / "last.pt", progress=False)
    a, b = rows_of(tmp_path / "straight"), rows_of(tmp_path / "split")
    assert b[-1]["train_loss"] == a[-1]["train_loss"]           # the whole epoch's, exactly
    assert b[-1]["lr"] == a[-1]["lr"]


def test_a_diverged_validation_keeps_best_and_an_epoch_of_unreadable_data_stops(tmp_path):
    class Diverges(Regression):
        scores = iter([2.0, float("nan")])

        def evaluate(self, model, loader, device, dist):
            score = next(self.scores)
            return {"loss": score, "mse": score}

    task = Diverges()
    with pytest.raises(FloatingPointError, match="validation loss is nan after epoch 2") as e:
        fit(task, config(tmp_path, "nan", 3), progress=False)
    # a task whose last.pt does not load as weights names its best/ (a saved model) instead
    assert f"--weights {tmp_path / 'nan'}/best)" in str(e.value)
    assert len(task.saved) == 1                           # epoch 1's best/ only
    assert torch.load(tmp_path / "nan" / "last.pt", weights_only=True)["epoch"] == 1

    class Unreadable(Regression):
        def collate(self, items):
            return torch.zeros(0, 8), torch.zeros(0), len(items)

    with pytest.raises(ValueError, match=r"epoch 1 trained on no image \(64 unreadable"):
        fit(Unreadable(), config(tmp_path, "bad", 1), progress=False)
    # that run wrote its train_config.json only: the same run again is not refused
    fit(Regression(), config(tmp_path, "bad", 1), progress=False)


def test_best_is_replaced_whole_and_a_run_resumed_elsewhere_keeps_its_best(tmp_path):
    class Improving(Regression):
        def __init__(self, scores, stop_at=None):
            super().__init__(stop_at)
            self.scores = iter(scores)

        def evaluate(self, model, loader, device, dist):
            score = next(self.scores)
            return {"loss": score, "mse": score}

    with pytest.raises(Stopped):
        fit(Improving([3.0], stop_at=1), config(tmp_path, "run", 3), progress=False)
    (tmp_path / "run" / "best" / "model.onnx").write_text("an export of epoch 1's model")
    fit(Improving([5.0, 4.0]), config(tmp_path, "elsewhere", 3),
        resume=tmp_path / "run" / "last.pt", progress=False)     # never beats epoch 1's 3.0
    assert (tmp_path / "elsewhere" / "best" / "model.onnx").is_file()    # the run's best/
    assert [r["epoch"] for r in rows_of(tmp_path / "elsewhere")] == [1, 2, 3]
    fit(Improving([2.0, 1.0]), config(tmp_path, "run", 3), resume=tmp_path / "run" / "last.pt",
        progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "best").iterdir()) == ["weights.pt"]
    assert not list(tmp_path.glob("run/.best-*"))


def test_resumed_config_is_the_runs_own_and_bad_numbers_are_refused(tmp_path):
    from mobilenets.training.config import resumed_config
    with pytest.raises(Stopped):
        fit(Regression(stop_at=1), config(tmp_path, "run", 3), progress=False)
    cfg = resumed_config(tmp_path / "run", overrides={"epochs": 5, "lr": None})
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.out) == (0.05, 8, 5, str(tmp_path / "run"))
    with pytest.raises(ValueError, match="--weights w.pt with --resume"):
        resumed_config(tmp_path / "run" / "last.pt", overrides={"weights": "w.pt"})
    for bad, match in (({"lr": float("inf")}, "lr .* must be a number > 0, not inf"),
                       ({"epochs": 1.5}, "epochs .* must be a whole number, not 1.5"),
                       ({"min_lr": 1.0}, "min_lr .* above the peak lr")):
        with pytest.raises(ValueError, match=match):
            make_config(**bad)


def test_a_batch_left_with_one_item_by_unreadable_ones_is_skipped(tmp_path):
    """Unreadable items dropped from a batch of 2 leave 1, which BatchNorm after global
    pooling (DeepLabV3's ASPP) cannot train on: such a batch is skipped and counted."""
    class HalfUnreadable(Regression):
        def collate(self, items):
            keep = items[:1] if len(self.saved) == 0 and torch.rand(()) < 0.5 else items
            x, y, _ = super().collate(keep)
            return x, y, len(items) - len(keep)

        def loss(self, outputs, targets):
            assert len(targets) == 2, "a batch of one reached the model"
            return super().loss(outputs, targets)

    cfg = make_config(**{**config(tmp_path, "run", 1).to_dict(), "batch_size": 2})
    metrics = fit(HalfUnreadable(), cfg, progress=False)
    assert metrics["bad_images"] > 0


def test_resume_after_a_skipped_batch_is_exact(tmp_path):
    """A batch whose items are all unreadable is skipped; the schedule still takes its step,
    so a run stopped mid-epoch after one resumes (it was refused as "other steps per epoch")
    and ends with the uninterrupted run's weights."""
    class SomeUnreadable(StopAtStep):
        def collate(self, items):
            if items[0][0][0] > 0.8:                  # seeded data: the same batches each run
                return torch.zeros(0, 8), torch.zeros(0), len(items)
            return super().collate(items)

    straight = make_config(**{**config(tmp_path, "straight", 2).to_dict(),
                              "checkpoint_every_steps": 2})
    fit(SomeUnreadable(stop=-1), straight, progress=False)
    rows = rows_of(tmp_path / "straight")
    assert rows[1]["bad_images"] > 0
    split = make_config(**{**straight.to_dict(), "out": str(tmp_path / "split")})
    with pytest.raises(Stopped):
        fit(SomeUnreadable(stop=12), split, progress=False)
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] > 0
    fit(SomeUnreadable(stop=-1), split, resume=tmp_path / "split" / "last.pt", progress=False)
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_resuming_elsewhere_over_another_run_replaces_its_best(tmp_path):
    from mobilenets.training.config import resumed_config
    with pytest.raises(Stopped):
        fit(Regression(stop_at=1), config(tmp_path, "run", 3), progress=False)
    fit(Regression(), config(tmp_path, "other", 1), progress=False)
    (tmp_path / "other" / "best" / "tag").write_text("the other run's")
    fit(Regression(), config(tmp_path, "other", 3), resume=tmp_path / "run" / "last.pt",
        overwrite=True, progress=False)
    assert not (tmp_path / "other" / "best" / "tag").exists()
    assert [r["epoch"] for r in rows_of(tmp_path / "other")] == [1, 2, 3]
    # the run's own initial weights given again on resume are no change (a script's habit)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    ckpt["config"]["weights"] = "start.pt"
    torch.save(ckpt, tmp_path / "run" / "last.pt")
    assert resumed_config(tmp_path / "run", overrides={"weights": "start.pt"}).weights is None


def test_paths_are_recorded_absolute_so_a_run_resumes_from_anywhere(tmp_path, monkeypatch):
    from mobilenets.training.engine import with_absolute_paths
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds").mkdir()
    (tmp_path / "w.pt").write_bytes(b"")
    cfg = with_absolute_paths(make_config(data="ds", weights="w.pt", teacher="mobilenet_v2_100",
                                          val="missing"))
    assert (cfg.data, cfg.weights) == (str(tmp_path / "ds"), str(tmp_path / "w.pt"))
    assert (cfg.teacher, cfg.val) == ("mobilenet_v2_100", "missing")     # names stay names
    fit(Regression(), make_config(**{**config(tmp_path, "run", 1).to_dict(), "data": "ds"}),
        progress=False)
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["config"]
    assert saved["data"] == str(tmp_path / "ds")
