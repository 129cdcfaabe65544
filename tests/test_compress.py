"""Compression: inspect_model's shares, structured pruning (exact slicing, MACs targets,
save/load), and the inspect / prune commands."""

import json
import shutil

import pytest
import torch

import mobilenets
from mobilenets.cli.main import main
from mobilenets.compress import inspect_model, keep_count, prune, pruned_widths, recalibrate_bn
from mobilenets.data import SAMPLE_DIR

from conftest import randomize_bn

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def small(name: str, **kw) -> torch.nn.Module:
    return randomize_bn(mobilenets.create_model(name, resolution=64, **kw)).eval()


def test_keep_count_rounds_to_multiples_of_8():
    assert keep_count(96, 0.0) == 96 and keep_count(22, 0.0) == 22
    assert keep_count(96, 0.3) == 64 and keep_count(144, 0.5) == 72
    assert keep_count(16, 0.9) == 8 and keep_count(8, 0.5) == 8      # at least 8
    assert keep_count(22, 0.01) == 22                                # never more than n
    assert keep_count(6, 0.5) == 3                                   # below 8: plain rounding
    with pytest.raises(ValueError):
        keep_count(96, 1.0)


def test_ratio_zero_is_identity():
    model = small("mobilenet_v3_small_100")
    pruned = prune(model, ratio=0.0).eval()
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(pruned(X), model(X), rtol=0, atol=0)


def _zero_ir_channels(model, ratio, gen):
    """Expansion BN gamma = beta = 0 on the channels pruning will cut (and depthwise BN beta =
    running mean = 0 there), so those channels carry exact zeros: removing them changes
    nothing. For a fused block (EfficientNetV2), the fused conv's BN there."""
    widths = pruned_widths(model, ratio)
    with torch.no_grad():
        for row, wrow in zip(model.blocks, widths):
            for block, (_, mid, _) in zip(row, wrow):
                if hasattr(block, "fused"):
                    if not isinstance(block.project, torch.nn.Identity):
                        bn = block.fused.bn
                        drop = torch.randperm(bn.num_features, generator=gen)[
                            :bn.num_features - mid]
                        bn.weight[drop] = 0
                        bn.bias[drop] = 0
                    continue
                if not hasattr(block, "expand") or isinstance(block.expand, torch.nn.Identity):
                    continue                        # a Conv row, or no expansion
                n = block.expand.bn.num_features
                drop = torch.randperm(n, generator=gen)[:n - mid]
                for t in (block.expand.bn.weight, block.expand.bn.bias):
                    t[drop] = 0
                if not isinstance(block.dw, torch.nn.Identity):   # UIB without middle dw
                    block.dw.bn.bias[drop] = 0
                    block.dw.bn.running_mean[drop] = 0


@pytest.mark.parametrize("name,options", [
    pytest.param(n, o, id=n) for n, o in (("mobilenet_v3_small_100", {}), ("mobilenet_v2_050", {}),
                                          ("efficientnet_v2_s", {"depth_mult": 0.1}),
                                          ("mobilenet_v4_conv_small_100", {}))])
def test_removing_dead_hidden_channels_changes_nothing(name, options):
    """Inverted residuals (with squeeze-excite for V3 and EfficientNetV2), EfficientNetV2's
    fused blocks, MobileNetV4-Conv-S's UIBs (ExtraDW, IB, ConvNext) and Conv rows: the
    sliced model computes the same."""
    model = small(name, **options)
    _zero_ir_channels(model, 0.5, torch.Generator().manual_seed(0))
    ref = model(X)
    pruned = prune(model, ratio=0.5).eval()
    assert pruned.config["pruned"]["macs_after"] < pruned.config["pruned"]["macs_before"]
    torch.testing.assert_close(pruned(X), ref, rtol=1e-4, atol=1e-5)
    # the check has teeth: cutting other channels (L1 ranking) changes the output
    other = prune(model, ratio=0.5, criterion="l1").eval()
    assert (other(X) - ref).abs().max() > 1e-3


def test_removing_dead_pointwise_channels_changes_nothing():
    """MobileNetV1: pointwise outputs, next depthwise and pointwise inputs, classifier input."""
    model = small("mobilenet_v1_050", num_classes=10)
    widths = pruned_widths(model, 0.4)
    blocks = [b for row in model.blocks for b in row]
    outs = [w for row in widths for w in row]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, (block, (_, _, out)) in enumerate(zip(blocks, outs)):
            n = block.pw.bn.num_features
            drop = torch.randperm(n, generator=gen)[:n - out]
            block.pw.bn.weight[drop] = 0
            block.pw.bn.bias[drop] = 0
            if k + 1 < len(blocks):
                blocks[k + 1].dw.bn.bias[drop] = 0
                blocks[k + 1].dw.bn.running_mean[drop] = 0
    ref = model(X)
    pruned = prune(model, ratio=0.4).eval()
    assert pruned.classifier.in_features == outs[-1][2] == pruned.num_features
    torch.testing.assert_close(pruned(X), ref, rtol=1e-4, atol=1e-5)


def test_macs_ratio_is_met_and_pruned_model_trains_saves_and_reloads(tmp_path):
    model = small("mobilenet_v2_100", num_classes=10)
    pruned = prune(model, macs_ratio=0.3)
    before, after = mobilenets.profile(model), mobilenets.profile(pruned)
    assert abs(1 - after.macs / before.macs - 0.3) < 0.01
    assert after.macs == pruned.config["pruned"]["macs_after"]
    assert after.params < before.params
    for row, prow in zip(model.plan.rows, pruned.plan.rows):
        for spec, pspec in zip(row, prow):
            if spec.mid != spec.in_ch:
                assert pspec.mid % 8 == 0 and pspec.mid < spec.mid
    # forward / backward: every parameter gets a gradient
    pruned.train()
    pruned(X).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in pruned.parameters())
    # save / load round trip with identical outputs; num_classes re-initialises the classifier
    pruned.eval()
    mobilenets.save(pruned, tmp_path / "p", class_names=[str(i) for i in range(10)])
    loaded = mobilenets.load(tmp_path / "p").eval()
    torch.testing.assert_close(loaded(X), pruned(X), rtol=0, atol=0)
    assert loaded.config["block_widths"] == pruned.config["block_widths"]
    assert loaded.config["pruned"] == pruned.config["pruned"]
    assert loaded.config["class_names"][3] == "3"
    assert mobilenets.load(tmp_path / "p", num_classes=4)(X).shape == (2, 4)
    with pytest.raises(ValueError, match="cannot be reached"):
        prune(model, macs_ratio=0.95)


def test_a_pruned_model_saved_with_its_widths_only_in_pruned_still_loads(tmp_path):
    """Saved pruned models that record their widths as options["pruned"]["widths"] (and no
    block_widths option) rebuild with those widths."""
    import json
    pruned = prune(small("mobilenet_v2_035"), ratio=0.5).eval()
    folder = mobilenets.save(pruned, tmp_path / "p")
    config = json.loads((folder / "config.json").read_text())
    config["options"]["pruned"]["widths"] = config["options"].pop("block_widths")
    (folder / "config.json").write_text(json.dumps(config))
    loaded = mobilenets.load(folder).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["mobilenet_v1_050", "mobilenet_v3_small_100"])
def test_a_pruned_backbone_reports_its_own_feature_widths(name):
    widths = prune(small(name), ratio=0.5).config["block_widths"]
    backbone = mobilenets.create_model(name, features_only=True, block_widths=widths,
                                       resolution=64)
    maps = backbone(X)
    assert [m.shape[1] for m in maps] == [t.channels for t in backbone.feature_info]
    assert [t.module for t in backbone.feature_info] == \
        [t.module for t in mobilenets.create_model(name, features_only=True).feature_info]


def test_inspect_counts_zeroed_kernels_and_gammas():
    model = small("mobilenet_v3_small_100")
    layer = model.blocks[1][0].dw                    # 72 channels, 3x3
    with torch.no_grad():
        layer.conv.weight[:9] = 0                    # 9 dead kernels (both norms)
        layer.conv.weight[9:18] *= 1e-4              # 9 tiny ones
        layer.bn.weight[:36] = 1e-5                  # half the gammas
    result = inspect_model(model)
    stats = {s.name: s for s in result.layers}
    s = stats["blocks.1.0.dw"]
    assert (s.channels, s.kernel) == (72, 3)
    assert s.zero_linf == pytest.approx(18 / 72) and s.zero_l2 == pytest.approx(18 / 72)
    assert s.zero_gamma == pytest.approx(0.5)
    assert stats["blocks.0.0.dw"].zero_linf == 0.0 and stats["blocks.0.0.dw"].zero_gamma == 0.0
    assert len(result.layers) == 11                  # one depthwise conv per bneck
    assert result.to_dict()["by_type"] == mobilenets.profile(model).by_type()
    assert "blocks.1.0.dw" in result.table() and "Conv DW" in result.table()


def test_train_rejects_a_model_with_other_classes(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        mobilenets.train(model=small("mobilenet_v3_small_100", num_classes=3),
                         out=str(tmp_path), epochs=1, progress=False)


def test_recalibrate_bn_estimates_batch_statistics_and_restores_state():
    model = small("mobilenet_v2_050", drop_path_rate=0.2).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    params = {k: v.clone() for k, v in model.named_parameters()}
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stem = model.stem.conv(x)
    assert recalibrate_bn(model, [x]) == 4
    torch.testing.assert_close(model.stem.bn.running_mean, stem.mean((0, 2, 3)))
    torch.testing.assert_close(model.stem.bn.running_var, stem.var((0, 2, 3)))   # unbiased
    # every later BN too: eval-mode outputs then equal BN-in-train-mode outputs up to the
    # biased/unbiased variance factor n/(n-1), tiny at 4 x 32 x 32 positions per channel
    first_stats = [m.running_var.clone() for m in norms]
    assert recalibrate_bn(model, [x[:2], x[2:]]) == 4       # two equal batches: same mean
    torch.testing.assert_close(model.stem.bn.running_mean, stem.mean((0, 2, 3)))
    assert recalibrate_bn(model, [x]) == 4                   # deterministic: no drop-path
    for m, v in zip(norms, first_stats):
        torch.testing.assert_close(m.running_var, v)
    assert model.training and all(m.training for m in norms)
    assert [m.momentum for m in norms] == momenta
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    with pytest.raises(ValueError, match="no images"):
        recalibrate_bn(model, [])


def test_recalibration_recovers_a_pruned_models_outputs():
    """Statistics re-estimated after pruning bring the pruned model's eval outputs closer to
    what its BatchNorms see in train mode (the batch's own statistics) than stale ones do."""
    base = small("mobilenet_v2_050")
    x = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    recalibrate_bn(base, [x])                     # statistics that fit the unpruned model
    pruned = prune(base, ratio=0.5).eval()

    def gap(model):
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            stale = model(x)
            for m in norms:
                m.train()
            batch = model(x)
            for m in norms:
                m.eval()
        return (stale - batch).abs().max().item()
    before = gap(pruned)
    recalibrate_bn(pruned, [x])
    assert gap(pruned) < 0.2 * before


def test_cli_inspect_and_prune_then_fine_tune(tmp_path, capsys):
    assert main(["inspect", "mobilenet_v3_small_100", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["macs"] == mobilenets.profile(mobilenets.create_model("mobilenet_v3_small_100")).macs
    out = tmp_path / "run"
    assert main(["prune", "mobilenet_v3_small_100", "--macs-ratio", "0.25", "--criterion", "l1",
                 "--data", str(SAMPLE_DIR), "--out", str(out), "--epochs", "1",
                 "--max-steps-per-epoch", "2", "--batch-size", "8", "--resolution", "64",
                 "--recalibrate-images", "32", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "MACs" in text and "fine-tuned" in text and "re-estimated on 32 images" in text
    pruned = mobilenets.load(out / "pruned")
    best = mobilenets.load(out / "best")
    assert pruned.num_classes == 1000 and best.num_classes == 10
    assert best.config["block_widths"] == pruned.config["block_widths"]
    info = pruned.config["pruned"]
    assert abs(1 - info["macs_after"] / info["macs_before"] - 0.25) < 0.02
    # the fine-tune resumes on the pruned network
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2",
                 "--no-progress"]) == 0
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and mobilenets.load(out / "best").config["block_widths"] == \
        pruned.config["block_widths"]
    # its last.pt starts another run (as the resume refusals advise): the pruned network
    again = mobilenets.create_model("mobilenet_v3_small_100", weights=str(out / "last.pt"))
    assert again.config["block_widths"] == pruned.config["block_widths"]
    whole = mobilenets.create_model("mobilenet_v3_small_100", num_classes=10)
    macs = [mobilenets.profile(m, (3, 64, 64)).macs
            for m in (again, mobilenets.load(out / "best"), whole)]
    assert again.num_classes == 10 and macs[0] == macs[1] < macs[2]
    assert main(["prune", "mobilenet_v3_small_100", "--ratio", "0.3", "--out",
                 str(tmp_path / "r2"), "--epochs", "0", "--recalibrate-images", "0"]) == 0
    assert "re-estimated" not in capsys.readouterr().out
    assert (tmp_path / "r2" / "pruned" / "model.safetensors").is_file()
    assert not (tmp_path / "r2" / "best").exists()


def test_cli_prune_never_overwrites_its_source_or_an_earlier_run(tmp_path, capsys):
    source = tmp_path / "run" / "best"
    mobilenets.save(mobilenets.create_model("mobilenet_v2_035", num_classes=10), source)
    for out in (tmp_path / "run", source):
        assert main(["prune", str(source), "--ratio", "0.3", "--out", str(out),
                     "--epochs", "0", "--recalibrate-images", "0"]) == 2
        assert "contains the model to prune" in capsys.readouterr().err
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "metrics.jsonl").write_text("{}\n")
    args = ["prune", str(source), "--ratio", "0.3", "--out", str(tmp_path / "earlier"),
            "--epochs", "0", "--recalibrate-images", "0"]
    assert main(args) == 2 and "already holds a training run" in capsys.readouterr().err
    (tmp_path / "earlier" / "best").mkdir()
    assert main(args + ["--overwrite"]) == 0
    assert (tmp_path / "earlier" / "pruned" / "model.safetensors").is_file()
    # the replaced run's files are gone: its best/ would pass for the new pruned model
    assert not (tmp_path / "earlier" / "metrics.jsonl").exists()
    assert not (tmp_path / "earlier" / "best").exists()
    assert main(args) == 2 and "pruned exists" in capsys.readouterr().err
    # options of the fine-tune with --epochs 0 (none) are refused; the widths are the prune's
    assert main(args + ["--overwrite", "--resolution", "96"]) == 2
    assert "--resolution (resolution in Python) set the fine-tuning, and --epochs 0 runs none" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--overwrite", "--width-mult", "0.5"])
    assert "unrecognized arguments: --width-mult" in capsys.readouterr().err


def test_lowrank_refuses_to_factorise_a_classifier_that_fine_tuning_replaces(tmp_path, capsys):
    """Asked to factorise the classifier of a 1000-class model fine-tuned on 10 classes, it
    says so before any work (it failed after factorising and saving OUT/lowrank)."""
    assert main(["lowrank", "mobilenet_v3_small_075", "--rank", "0.5", "--layers", "classifier",
                 "blocks.*.project.conv", "--epochs", "1", "--out", str(tmp_path / "lr")]) == 2
    assert "cannot stay factorised; leave it out of the layers" in capsys.readouterr().err
    assert not (tmp_path / "lr" / "lowrank").exists()


def test_cli_prune_fine_tunes_with_distillation_from_the_unpruned_model(tmp_path, capsys):
    from mobilenets.data.folder import class_folders
    source = mobilenets.create_model("mobilenet_v2_035", num_classes=10)
    source.preprocess.update(resolution=48, resize=55)        # as trained at 48 px
    mobilenets.save(source, tmp_path / "source", class_folders(SAMPLE_DIR / "train"))
    out = tmp_path / "run"
    assert main(["prune", str(tmp_path / "source"), "--ratio", "0.3", "--data", str(SAMPLE_DIR),
                 "--teacher", str(tmp_path / "source"), "--kd-alpha", "0.9", "--out", str(out),
                 "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8",
                 "--recalibrate-images", "0", "--no-progress"]) == 0
    config = json.loads((out / "train_config.json").read_text())
    assert config["teacher"] == str(tmp_path / "source") and config["kd_alpha"] == 0.9
    assert config["resolution"] == 48              # the source's size, not the default 64
    # a folder of class folders with --val: BatchNorm re-estimated on the class folders
    flat = tmp_path / "flat"
    shutil.copytree(SAMPLE_DIR / "train", flat)
    assert main(["prune", str(tmp_path / "source"), "--ratio", "0.3", "--data", str(flat),
                 "--val", str(SAMPLE_DIR / "val"), "--out", str(tmp_path / "flat-run"),
                 "--epochs", "0", "--recalibrate-images", "16"]) == 0
    assert f"re-estimated on 16 images of {flat} at 48 px" in capsys.readouterr().out
    best = mobilenets.load(out / "best")
    assert best.config["block_widths"] == mobilenets.load(out / "pruned").config[
        "block_widths"]
    assert mobilenets.profile(best).macs < mobilenets.profile(source).macs


def test_pruned_folder_loads_through_create_model_weights(tmp_path):
    import mobilenets
    from mobilenets.compress import prune
    model = mobilenets.create_model("mobilenet_v2_050", num_classes=5).eval()
    pruned = prune(model, ratio=0.3).eval()
    mobilenets.save(pruned, tmp_path / "p")
    again = mobilenets.create_model("mobilenet_v2_050", weights=str(tmp_path / "p")).eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(pruned(x), again(x))
    assert mobilenets.profile(again).macs < mobilenets.profile(model).macs
