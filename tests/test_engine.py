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
