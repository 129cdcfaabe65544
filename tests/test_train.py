"""Training end to end on tiny generated data: outputs, exact resume after SIGKILL, eval and
predict commands."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import mobilenets
from mobilenets.cli.main import main
from mobilenets import train
from mobilenets.training import ema_lag, make_config

COMMON = dict(model="mobilenet_v3_small_075", resolution=32, batch_size=4, lr=0.05,
              workers=0, seed=3, ema_decay=0.9, color_jitter=0.1, label_smoothing=0.1,
              dropout=0.2, drop_path_rate=0.1)


def make_folder(root: Path, classes=("a", "b", "c"), n_train=8, n_val=4, size=40) -> Path:
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                base = torch.zeros(3, size, size)
                base[c % 3] = 0.6
                pixels = (base + 0.4 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
                arr = (pixels.permute(1, 2, 0) * 255).byte().numpy()
                Image.fromarray(arr).save(d / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"))


def test_ema_lag_warns_only_when_the_average_spans_much_of_the_run():
    assert ema_lag(0.0, 100) is None                       # EMA off
    assert ema_lag(0.9998, 1_250_000) is None              # timm's ImageNet setting: 0.4%
    message = ema_lag(0.998, 3600)                         # 500 steps of 3600: 14%
    assert message and "~500 steps, 14%" in message
    suggested = float(message.split("use --ema-decay ")[1].split()[0])
    assert ema_lag(suggested, 3600) is None and ema_lag(suggested + 1e-3, 3600)
    assert "--ema-decay 0 (off)" in ema_lag(0.9, 6)        # no decay fits 5% of 6 steps
    assert "--ema-decay 0 (off)" in ema_lag(0.99, 100)     # 0.8 would average 5 steps: off


def test_train_writes_every_output(data, tmp_path):
    out = tmp_path / "run"
    # 2 epochs of 6 steps: EMA decay 0.9 (a 10-step horizon) spans most of the run
    with pytest.warns(UserWarning, match=r"--ema-decay 0\.9 averages .* 12 steps"):
        metrics = train(make_config(data=str(data), out=str(out), epochs=2, **COMMON),
                        progress=False)
    assert metrics["epoch"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "top1", "lr", "images_per_s", "epoch_time_s"):
        assert key in rows[0]
    assert "top5" not in rows[0]            # 3 classes: every image is in the top 5
    assert (out / "curves.png").stat().st_size > 0
    assert json.loads((out / "train_config.json").read_text())["epochs"] == 2
    best = mobilenets.load(out / "best")
    assert best.config["class_names"] == ["a", "b", "c"] and best.num_classes == 3
    with pytest.raises(ValueError, match="is a training run's folder; its model is .*best"):
        mobilenets.load(out)
    # Fine-tuning from those weights: the EMA starts at a trained model, so no lag warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*ema-decay")
        train(make_config(data=str(data), out=str(tmp_path / "ft"), epochs=1,
                          weights=str(out / "best"), **COMMON), progress=False)
    # ... but with fewer classes the classifier starts afresh, and the warning stays
    two = make_folder(tmp_path / "two", classes=("a", "b"))
    with pytest.warns(UserWarning, match="--ema-decay 0.9 averages"):
        train(make_config(data=str(two), out=str(tmp_path / "ft2"), epochs=1,
                          weights=str(out / "best" / "model.safetensors"), **COMMON),
              progress=False)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 0


def test_sigkill_then_resume_gives_identical_last_checkpoint(data, tmp_path):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in COMMON.items()]
    args += ["--data", str(data), "--epochs", "3", "--checkpoint-every-steps", "2",
             "--no-progress"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    cmd = [sys.executable, "-m", "mobilenets", "train"] + args
    subprocess.run(cmd + ["--out", str(full)], check=True, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (cut / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(cut / "last.pt", weights_only=True)
    assert (killed_at["epoch"], killed_at["step"]) < (3, 0), "the run finished before the kill"
    subprocess.run(cmd + ["--out", str(cut), "--resume", str(cut / "last.pt")], check=True,
                   capture_output=True)
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["scheduler"] == b["scheduler"]
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_output_folder_is_protected_and_resume_continues_its_own_run(data, tmp_path, capsys):
    """A new run never replaces an earlier one by accident; --resume takes the checkpoint's
    options and folder; a finished run, another architecture and bad numbers are refused."""
    out = tmp_path / "run"
    quick = ["--data", str(data), "--resolution", "32", "--batch-size", "4",
             "--max-steps-per-epoch", "2", "--no-progress"]
    assert main(["train", "--model", "mobilenet_v3_small_075", "--epochs", "1", "--out",
                 str(out), *quick]) == 0
    best = (out / "best" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "--model", "mobilenet_v2_035", "--epochs", "1", "--out", str(out),
                 *quick]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (out / "best" / "model.safetensors").read_bytes() == best
    # resumed with no --out and no --model: the checkpoint's run, in its folder (named by
    # the folder, as by its last.pt)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert f"weights of {out / 'last.pt'} (resuming at epoch 2)" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    config = json.loads((out / "train_config.json").read_text())
    assert config["model"] == "mobilenet_v3_small_075" and config["max_steps_per_epoch"] == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "last.pt"), "--no-progress",
                 "--warmup-epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "has trained 2 epochs, as many as --epochs 2" in err
    assert "warmup_epochs" not in err          # no warning about a run that is refused
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "3", "--recipe",
                 "mobilenet_v2", "--no-progress"]) == 2
    assert "a resumed run keeps its options" in capsys.readouterr().err
    other = make_folder(tmp_path / "other", classes=("a", "b", "x"))
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "3", "--data",
                 str(other), "--no-progress"]) == 2
    assert "was trained on the classes ['a', 'b', 'c']" in capsys.readouterr().err
    torch.save({"model": {}}, tmp_path / "bare.pt")
    assert main(["train", "--resume", str(tmp_path / "bare.pt"), "--no-progress"]) == 2
    assert "holds no run options" in capsys.readouterr().err
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "3", "--model",
                 "mobilenet_v2_035", "--no-progress"]) == 2
    assert "is a checkpoint of mobilenet_v3_small_075" in capsys.readouterr().err
    assert main(["train", "--model", "mobilenet_v2_035", "--epochs", "1", "--out", str(out),
                 "--overwrite", *quick]) == 0
    assert mobilenets.load(out / "best").config["name"] == "mobilenet_v2_035"
    capsys.readouterr()
    assert main(["train", "--epochs", "0", "--out", str(tmp_path / "zero"), *quick]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "neg"), *quick,
                 "--max-steps-per-epoch", "-1"]) == 2
    assert "--max-steps-per-epoch) must be a number >= 0" in capsys.readouterr().err
    assert main(["train", "--out", str(data / "train" / "a" / "0.jpg"), *quick]) == 2
    assert "is a file" in capsys.readouterr().err
    # distillation options without a teacher are refused, not ignored
    assert main(["train", "--out", str(tmp_path / "kd"), "--kd-alpha", "0.9", *quick]) == 2
    assert "--kd-alpha sets up distillation, which needs a teacher" in capsys.readouterr().err
    # a run that fails before writing anything leaves no empty folder behind
    (tmp_path / "no-images" / "train").mkdir(parents=True)
    assert main(["train", "--out", str(tmp_path / "failed" / "a" / "b"), "--data",
                 str(tmp_path / "no-images"), "--no-progress"]) == 2
    assert not (tmp_path / "failed").exists()


def test_loader_workers_kept_across_epochs_augment_like_the_main_process(data, tmp_path):
    """Loader workers live for the whole run (persistent_workers): each sample must still be
    augmented for the epoch it is drawn in, so the weights equal a run without workers."""
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        with pytest.warns(UserWarning, match="ema-decay"):
            train(make_config(data=str(data), out=str(out), epochs=3,
                              **{**COMMON, "workers": workers}), progress=False)
        runs[workers] = torch.load(out / "last.pt", weights_only=True)["model"]
    for k, v in runs[0].items():
        assert torch.equal(v, runs[2][k]), f"{k} differs with 2 loader workers"


def test_eval_and_predict_commands(data, tmp_path, capsys):
    out = tmp_path / "run"
    train(make_config(data=str(data), out=str(out), epochs=1, **COMMON), progress=False)
    capsys.readouterr()
    png = tmp_path / "cm.png"
    assert main(["eval", str(out / "best"), "--data", str(data), "--json",
                 "--confusion-png", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["top1"] <= 1 and result["top5"] is None and result["images"] == 12
    # a registered name with the run's last.pt: the class names come with it (were lost)
    last = mobilenets.create_model("mobilenet_v3_small_075", weights=out / "last.pt")
    assert last.config["class_names"] == ["a", "b", "c"]
    assert set(result["per_class"]) == {"a", "b", "c"} and png.stat().st_size > 0
    same = mobilenets.evaluate(mobilenets.load(out / "best"), data)
    assert same["top1"] == result["top1"] and same["count"] == 12
    image = next((data / "val" / "b").iterdir())
    assert main(["predict", str(out / "best"), str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    probs = [float(line.split()[-1]) for line in lines[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_top5_counts_the_five_highest_logits_and_is_none_for_five_classes_or_fewer():
    from mobilenets.tasks.classification.evaluate import evaluate_model

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.num_classes = logits.shape[1]

        def forward(self, x):
            return self.logits

    # label 0 ranks 1st, 5th and 6th among 7 classes: top-1 1/3, top-5 2/3
    logits = torch.tensor([[9., 0, 0, 0, 0, 0, 0], [5., 9, 8, 7, 6, 0, 0],
                           [1., 9, 8, 7, 6, 5, 0]])
    result = evaluate_model(Fixed(logits), [(torch.zeros(3, 1), torch.zeros(3).long(), 0)])
    assert result["top1"] == pytest.approx(1 / 3) and result["top5"] == pytest.approx(2 / 3)
    result = evaluate_model(Fixed(logits[:, :5]), [(torch.zeros(3, 1), torch.zeros(3).long(), 0)])
    assert result["top1"] == pytest.approx(1 / 3) and result["top5"] is None


def test_bad_training_options(data, tmp_path):
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        make_config("nope")
    with pytest.raises(TypeError, match="unknown training option"):
        make_config(learning_rate=0.1)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(make_config(data=str(data), out=str(tmp_path / "x"), epochs=1,
                          **dict(COMMON, batch_size=64)), progress=False)


def test_recipes_load():
    from mobilenets.training import list_recipes
    names = list_recipes()
    assert {"mobilenet_v2", "mobilenet_v3", "efficientnet", "fd_mobilenet",
            "efficientnet_v2", "small-data"} <= set(names)
    cfg = make_config("mobilenet_v2", epochs=2)
    assert cfg.optimizer == "rmsprop" and cfg.lr == 0.045 and cfg.decay_rate == 0.98
    assert cfg.epochs == 2
    for name in names:                                 # every shipped recipe builds a config
        assert make_config(name).recipe == name
    v3 = make_config("mobilenet_v3")
    assert v3.optimizer == "rmsprop" and v3.ema_decay == 0.9999


def test_bad_recipe_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('lr = "0.1" "x"\n')
    with pytest.raises(ValueError, match=f"recipe {bad} is not valid TOML"):
        make_config(str(bad))


def test_a_run_stuck_above_chance_is_told_what_to_change():
    from mobilenets.tasks.classification import ClassificationTask
    task = ClassificationTask()
    task.classes, task.cfg = [str(i) for i in range(10)], make_config(lr=0.5)
    assert task.epoch_note({"epoch": 1, "train_loss": 9.0}) is None      # too early to tell
    note = task.epoch_note({"epoch": 2, "train_loss": 4.0})
    assert "above chance level (ln 10 = 2.30)" in note and "--lr (now 0.5)" in note
    assert "--recipe small-data" in note
    assert task.epoch_note({"epoch": 2, "train_loss": 2.5}) is None    # learning, augmented
    task.cfg = make_config("small-data")
    assert "--recipe" not in task.epoch_note({"epoch": 2, "train_loss": 4.0})


def test_depthwise_weight_decay_applies_to_the_depthwise_kernels_only():
    """--depthwise-weight-decay: its own group holds exactly the depthwise kernels; one SGD
    step with zero gradients shrinks those by lr * their decay and the others by lr * the
    common decay; without the option there are the usual two groups."""
    from mobilenets.training.optim import build_optimizer
    model = mobilenets.create_model("mobilenet_v1_025", num_classes=10)
    depthwise = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                 and m.groups > 1 and m.groups == m.in_channels]
    assert len(depthwise) == 13                      # V1's 13 depthwise separable layers
    assert len(build_optimizer(model, make_config(weight_decay=0.1)).param_groups) == 2
    opt = build_optimizer(model, make_config(optimizer="sgd", lr=0.5, momentum=0.0,
                                             weight_decay=0.1, depthwise_weight_decay=0.0))
    assert {id(p) for p in opt.param_groups[2]["params"]} == {id(p) for p in depthwise}
    pointwise = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                     and m.groups == 1 and m.kernel_size == (1, 1))
    before_dw, before_pw = depthwise[0].detach().clone(), pointwise.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(depthwise[0], before_dw)
    assert torch.allclose(pointwise, before_pw * (1 - 0.5 * 0.1))
    with pytest.raises(ValueError, match="depthwise_weight_decay"):
        make_config(depthwise_weight_decay=-1.0)


def test_run_folder_inside_the_class_folders_is_refused(data, tmp_path, capsys):
    quick = ["--model", "mobilenet_v3_small_075", "--resolution", "32", "--batch-size", "4",
             "--max-steps-per-epoch", "1", "--epochs", "1", "--no-progress"]
    out = data / "train" / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *quick]) == 2
    assert "is inside the training class folders" in capsys.readouterr().err
    assert not (out / "best").exists()
    # a flat folder of class folders given as its own --val: trains, with a warning
    with pytest.warns(UserWarning, match="is the training folder"):
        assert main(["train", "--data", str(data / "train"), "--val", str(data / "train"),
                     "--out", str(tmp_path / "same"), *quick]) == 0


def test_width_mult_trains_the_width_profile_costs(data, tmp_path, capsys):
    out = tmp_path / "half"
    quick = ["--data", str(data), "--resolution", "32", "--batch-size", "4",
             "--max-steps-per-epoch", "1", "--epochs", "1", "--no-progress"]
    assert main(["train", "--model", "mobilenet_v3_small_100", "--width-mult", "0.5",
                 "--out", str(out), *quick]) == 0
    assert "model: mobilenet_v3_small_100 at width 0.5 at 32 px" in capsys.readouterr().out
    trained = mobilenets.load(out / "best")
    reference = mobilenets.create_model("mobilenet_v3_small_100", width_mult=0.5,
                                        num_classes=3)
    assert trained.config["width_mult"] == 0.5
    assert ([p.shape for p in trained.parameters()]
            == [p.shape for p in reference.parameters()])
    # resumed, the network is rebuilt at its saved width: another one is refused
    assert main(["train", "--resume", str(out), "--epochs", "2", "--width-mult", "0.75",
                 "--no-progress"]) == 2
    assert "trained mobilenet_v3_small_100 at width 0.5; resume it at that width" in \
        capsys.readouterr().err
    # a head takes it as one of its model options; given twice, the two must agree
    from mobilenets.training.config import TrainConfig
    from mobilenets.training.task import Task
    cfg = TrainConfig(width_mult=0.5, bn_momentum=0.01)
    assert Task.with_config_options(cfg, {"num_classes": 3}) == {
        "num_classes": 3, "width_mult": 0.5, "bn_momentum": 0.01}
    with pytest.raises(ValueError, match="--width-mult 0.5 and model_options' width_mult "
                                         "0.75 disagree"):
        Task.with_config_options(cfg, {"width_mult": 0.75})


def test_fine_tuning_from_weights_of_other_classes_of_the_same_count_warns(data, tmp_path):
    model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=3)
    for names, words in ((["c", "b", "a"], "the same classes in another order"),
                         (["apple", "mango", "zebra"], "other classes")):
        folder = mobilenets.save(model, tmp_path / words.replace(" ", "-"), class_names=names)
        with pytest.warns(UserWarning, match=f"were trained on {words} .* row k now meaning"):
            train(make_config(data=str(data), out=str(tmp_path / f"run-{names[0]}"), epochs=1,
                              weights=str(folder), max_steps_per_epoch=1,
                              **dict(COMMON, ema_decay=0.0)), progress=False)
    folder = mobilenets.save(model, tmp_path / "same", class_names=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(make_config(data=str(data), out=str(tmp_path / "run-same"), epochs=1,
                          weights=str(folder), max_steps_per_epoch=1,
                          **dict(COMMON, ema_decay=0.0)), progress=False)
