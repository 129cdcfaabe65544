"""Low-rank factorisation: exact at full rank and on rank-r weights, ranks by energy as
documented, the report's counts, save/load and fine-tuning through the engine, the command."""

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.cli.main import main
from mobilenets.compress import factorise, prune
from mobilenets.compress.lowrank import candidates, energy_rank, layer_rank
from mobilenets.data import SAMPLE_DIR
from mobilenets.models.low_rank import LowRank

from conftest import randomize_bn

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def small(name: str = "mobilenet_v3_small_100", **kw) -> nn.Module:
    return randomize_bn(mobilenets.create_model(name, resolution=64, **kw)).eval()


def test_rank_selection_by_energy_and_by_rank():
    s = torch.tensor([4.0, 2.0, 1.0])            # shares of sum(s^2) = 21: 16, 4, 1
    assert energy_rank(s, 0.5) == 1                # 16/21 = 0.762 >= 0.5
    assert energy_rank(s, 0.9) == 2                # 0.762 < 0.9 <= 20/21 = 0.952
    assert energy_rank(s, 0.96) == 3 and energy_rank(s, 1.0) == 3
    assert energy_rank(torch.zeros(4), 0.9) == 1
    ten = torch.ones(10)
    assert layer_rank(ten, rank=4) == 4 and layer_rank(ten, rank=100) == 10
    assert layer_rank(ten, rank=0.25) == 3 and layer_rank(ten, rank=1.0) == 10
    for bad in ({"rank": 0}, {"rank": 1.5}, {"energy": 0.0}, {"rank": 2, "energy": 0.9}, {}):
        with pytest.raises(ValueError):
            layer_rank(ten, **bad)


def test_full_rank_factorisation_equals_the_original():
    model = small(num_classes=10)
    new, report = factorise(model, rank=1.0, only_if_smaller=False)
    names = candidates(model)
    assert "classifier" in names and "head.conv" in names and "pre_logits.0" in names
    assert not any(".se." in n for n in names)
    assert set(new.config["low_rank"]) == set(names) and "low_rank" not in model.config
    assert all(isinstance(new.get_submodule(n), LowRank) for n in names)
    assert report.params_after > report.params_before      # full rank costs more
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(X), model(X), rtol=1e-5, atol=1e-5)


def test_rank_r_weight_is_exact_and_energy_finds_its_rank():
    model = small("mobilenet_v2_050", num_classes=10)
    conv = model.blocks[2][0].expand.conv                   # 16 -> 96, 1x1
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        low = torch.randn(96, 3, generator=g) @ torch.randn(3, 16, generator=g)
        conv.weight.copy_(low.reshape(96, 16, 1, 1))
    name = "blocks.2.0.expand.conv"
    new, report = factorise(model, energy=0.9999, layers=[name])
    assert report.ranks == {name: 3}
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(X), model(X), rtol=1e-5, atol=1e-5)
    (layer,) = report.layers
    hw = 16 * 16                                           # that block runs at 64 / 4
    assert (layer.macs_before, layer.macs_after) == (hw * 16 * 96, hw * 3 * (16 + 96))
    assert (layer.params_before, layer.params_after) == (16 * 96, 3 * (16 + 96))
    assert report.macs_before - report.macs_after == layer.macs_before - layer.macs_after
    assert mobilenets.profile(new).macs == report.macs_after


def test_layers_without_saving_stay_whole_and_bias_goes_to_the_second_layer():
    model = small(num_classes=10)
    new, report = factorise(model, rank=0.5)
    for lr in report.layers:
        assert lr.factorised == (lr.rank * (lr.in_features + lr.out_features)
                                 < lr.in_features * lr.out_features)
        assert isinstance(new.get_submodule(lr.name), LowRank) == lr.factorised
    clf = new.classifier                                    # 1024 -> 10 at rank 5
    assert isinstance(clf, LowRank) and clf.rank == 5 and clf[0].bias is None
    torch.testing.assert_close(clf[1].bias, model.classifier.bias)
    assert "kept: no saving" in report.table()


def test_save_load_create_model_and_fuse(tmp_path):
    model = small(num_classes=10)
    new, report = factorise(model, energy=0.8)
    mobilenets.save(new, tmp_path / "lr")
    loaded = mobilenets.load(tmp_path / "lr").eval()
    assert loaded.config["low_rank"] == report.ranks
    rebuilt = mobilenets.create_model("mobilenet_v3_small_100", num_classes=10,
                                      low_rank=report.ranks)
    assert rebuilt.state_dict().keys() == new.state_dict().keys()
    with torch.no_grad():
        ref = new.eval()(X)
        torch.testing.assert_close(loaded(X), ref, rtol=0, atol=0)
        torch.testing.assert_close(mobilenets.fuse(loaded)(X), ref, rtol=1e-4, atol=1e-5)


def test_bad_requests_are_refused():
    model = small(num_classes=10)
    with pytest.raises(ValueError, match="not 1x1 convolutions"):
        factorise(model, rank=2, layers=["blocks.*.dw.conv"])
    with pytest.raises(ValueError, match="match no module"):
        factorise(model, rank=2, layers=["nothing"])
    new, _ = factorise(model, rank=0.25)
    with pytest.raises(ValueError, match="factorised already"):
        factorise(new, rank=2)
    with pytest.raises(ValueError, match="prune the model first"):
        prune(new, ratio=0.3)
    with pytest.raises(ValueError, match="without memory_split"):
        factorise(small(num_classes=10, memory_split=2), rank=2)
    with pytest.raises(ValueError, match="integer from 1 to 10"):
        mobilenets.create_model("mobilenet_v3_small_100", num_classes=10,
                                low_rank={"classifier": 11})


def test_cli_lowrank_then_fine_tune_on_the_engine(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["lowrank", "mobilenet_v3_small_100", "--energy", "0.8", "--data",
                 str(SAMPLE_DIR), "--out", str(out), "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--batch-size", "8", "--resolution", "64",
                 "--recalibrate-images", "16", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "classifier left whole" in text and "factorised" in text and "fine-tuned" in text
    saved = mobilenets.load(out / "lowrank")
    best = mobilenets.load(out / "best")
    assert "classifier" not in saved.config["low_rank"]
    assert best.config["low_rank"] == saved.config["low_rank"] and best.num_classes == 10
    assert mobilenets.profile(best).macs < mobilenets.profile(
        mobilenets.create_model("mobilenet_v3_small_100", num_classes=10)).macs
    assert main(["lowrank", "mobilenet_v3_small_100", "--rank", "0.5", "--out",
                 str(tmp_path / "r2"), "--epochs", "0", "--recalibrate-images", "0"]) == 0
    assert (tmp_path / "r2" / "lowrank" / "model.safetensors").is_file()
    assert "classifier" in mobilenets.load(tmp_path / "r2" / "lowrank").config["low_rank"]


def test_a_factorised_runs_last_pt_loads_as_weights_with_a_whole_new_classifier(tmp_path):
    """A factorised run's last.pt starts a new run as its network (checkpoint_structure); a new
    classifier (other classes, or none) is a whole layer, not a random rank-r pair."""
    from mobilenets.compress import factorise
    from mobilenets.training.engine import model_spec
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v3_small_075", num_classes=10).eval()
    small, _ = factorise(model, rank=0.5)
    assert "classifier" in small.config["low_rank"]
    torch.save({"model": small.state_dict(), "model_spec": model_spec(small)},
               tmp_path / "last.pt")
    x = torch.randn(1, 3, 64, 64)
    same = mobilenets.create_model("mobilenet_v3_small_075", weights=str(tmp_path / "last.pt"))
    torch.testing.assert_close(same.eval()(x), small(x))
    for classes, layer in ((20, torch.nn.Linear), (5, torch.nn.Linear), (0, torch.nn.Identity)):
        with pytest.warns(UserWarning):
            other = mobilenets.create_model("mobilenet_v3_small_075", num_classes=classes,
                                            weights=str(tmp_path / "last.pt"))
        assert type(other.classifier) is layer
        assert "classifier" not in other.config["low_rank"]
        assert other.config["low_rank"] == {k: v for k, v in small.config["low_rank"].items()
                                            if k != "classifier"}
