"""``mobilenets train / eval / predict`` on the dense tasks: the task picked from the model
name, ``--task-option``, the task's metrics in the "done:" line and in ``eval --json`` (equal
to the task's own evaluation), and ``predict`` pictures, on tiny synthetic data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from mobilenets.data.image_io import decode_unchanged

import mobilenets
from mobilenets import load
from mobilenets.cli.dense_cmds import model_task, parse_task_options
from mobilenets.cli.main import main
from mobilenets.tasks.segmentation import evaluate as segmentation_evaluate

COLOURS = [(20, 20, 20), (200, 40, 40), (40, 200, 40), (40, 40, 200)]
RUN = ["--epochs", "1", "--resolution", "64", "--batch-size", "2", "--workers", "0",
       "--optimizer", "adamw", "--lr", "0.01", "--no-progress", "--no-tensorboard"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scene(h=48, w=64, seed=0):
    """A label map of coloured rectangles and its image."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 4] = 1
    for k in (2, 3):
        y, x = rng.integers(0, h - 12), rng.integers(w // 4, w - 16)
        mask[y:y + 12, x:x + 16] = k
    return np.array(COLOURS, np.uint8)[mask], mask


def _segmentation_data(root, n_train=4, n_val=2):
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("ground\nleft\nbox\nother\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            image, mask = _scene(seed=i + 10 * (split == "val"))
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{i:03d}.png")
    return root


def test_task_from_model_name_and_task_options():
    assert model_task("lraspp_mobilenet_v2_100") == "segmentation"
    assert model_task("fastdepth_mobilenet_v2_100") == "depth"
    assert model_task("ssdlite320_mobilenet_v3_large") == "detection"
    assert model_task("mobilenet_v2_100") == "classification"
    assert parse_task_options(["hflip=0", "label_set=voc", 'model_options={"a": [1, 2]}',
                               "scale=[0.5, 1.5]"]) == {
        "hflip": 0, "label_set": "voc", "model_options": {"a": [1, 2]}, "scale": [0.5, 1.5]}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_task_options(["hflip"])


def test_colour_masks_are_refused_before_training(tmp_path, capsys):
    data = _segmentation_data(tmp_path / "data", n_train=3, n_val=1)
    for path in sorted((data / "masks").rglob("*.png")):      # colour-coded, as drawn
        mask = np.asarray(Image.open(path))
        Image.fromarray(np.stack([mask * 60] * 3, axis=-1)).save(path)
    out = tmp_path / "run"
    assert main(["train", "--model", "lraspp_mobilenet_v3_small_100", "--data", str(data),
                 "--out", str(out), *RUN]) == 2
    printed = capsys.readouterr()
    assert "masks/train/000.png has 3 channels" in printed.err
    assert "not colour images" in printed.err
    assert "model:" not in printed.out                     # refused before the model is built
    assert not (out / "last.pt").exists() and not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("flag", [["--mixup", "0.2"], ["--label-smoothing", "0.1"],
                                  ["--auto-augment", "randaugment"], ["--dropout", "0.3"],
                                  ["--teacher", "mobilenet_v2_100"]])
def test_classification_flags_are_refused_by_a_dense_run(flag, tmp_path, capsys):
    """A flag only a classifier uses is refused by a segmentation run before training, not
    silently ignored (every such run printed the same mIoU)."""
    data = _segmentation_data(tmp_path / "data", n_train=2, n_val=1)
    out = tmp_path / "run"
    assert main(["train", "--model", "lraspp_mobilenet_v3_small_100", "--data", str(data),
                 "--out", str(out), *RUN, *flag]) == 2
    err = capsys.readouterr().err
    assert f"{flag[0]} (" in err and "not used by a segmentation run" in err, err
    assert not out.exists()


def test_dense_tasks_refuse_options_they_ignore_and_name_bad_option_types(tmp_path, capsys):
    from mobilenets.tasks.depth.task import DepthOptions, DepthTask
    from mobilenets.tasks.detection.task import DetectionOptions, DetectionTask
    from mobilenets.tasks.segmentation.task import SegmentationOptions, SegmentationTask
    from mobilenets.training import TrainConfig
    for task in (SegmentationTask(), DepthTask()):      # their photos take colour jitter
        task.check_config(TrainConfig(color_jitter=0.4, epochs=3))
    for task in (SegmentationTask(), DepthTask(), DetectionTask()):
        with pytest.raises(ValueError, match=r"--mixup \(mixup=0.5\), --kd-alpha"):
            task.check_config(TrainConfig(kd_alpha=0.9, mixup=0.5))
    with pytest.raises(ValueError, match="--color-jitter .* not used by a detection run"):
        DetectionTask().check_config(TrainConfig(color_jitter=0.4))
    from mobilenets.training import make_config
    recipe = make_config("small-data")        # its classification settings: the recipe's
    assert recipe.label_smoothing > 0 or recipe.mixup > 0 or recipe.auto_augment
    SegmentationTask().check_config(recipe)
    SegmentationTask().check_config(TrainConfig(dropout=0.0, drop_path_rate=0.0))
    with pytest.raises(ValueError, match="--mixup"):
        SegmentationTask().check_config(make_config("small-data", mixup=0.7))
    for options, match in (
            (lambda: SegmentationOptions(scale=0.5), r"scale must be a list of numbers "
                                                     r"\(default \[0.5, 2.0\]\), not 0.5"),
            (lambda: SegmentationOptions(hflip="yes"), "hflip must be a number"),
            (lambda: DepthOptions(zoom=1.2), "zoom must be a list of numbers"),
            (lambda: DepthOptions(invalid=[0, "x"]), "invalid must be a list of numbers"),
            (lambda: DepthOptions(train_range=5), "train_range must be a list of numbers"),
            (lambda: DetectionOptions(mosaic="often"), "mosaic must be a number"),
            (lambda: DetectionOptions(model_options=[1]), "model_options must be a dict")):
        with pytest.raises(ValueError, match=match):
            options()
    DepthOptions(train_range=[0, 8], invalid=[0])             # lists are the JSON form
    out = tmp_path / "run"
    assert main(["train", "--model", "lraspp_mobilenet_v3_small_100", "--data",
                 str(_segmentation_data(tmp_path / "data", n_train=2, n_val=1)), "--out",
                 str(out), *RUN, "--task-option", "scale=0.5"]) == 2
    assert "segmentation option scale must be a list of numbers" in capsys.readouterr().err


def test_segmentation_train_eval_predict(tmp_path, capsys):
    data = _segmentation_data(tmp_path / "data")
    out = tmp_path / "run"
    model = "lraspp_mobilenet_v3_small_100"
    # an unknown option is refused by the task, naming it
    assert main(["train", "--model", model, "--data", str(data), "--out", str(out),
                 "--task-option", "hflipp=0", *RUN]) == 2
    assert "unknown segmentation option(s) hflipp" in capsys.readouterr().err
    # a classifier refuses task options
    assert main(["train", "--model", "mobilenet_v2_035", "--task-option", "hflip=0",
                 "--out", str(tmp_path / "c"), *RUN]) == 2
    assert "--task-option" in capsys.readouterr().err

    assert main(["train", "--model", model, "--data", str(data), "--out", str(out),
                 "--task-option", 'model_options={"width_mult": 0.25}',
                 "--task-option", "hflip=0.0", *RUN]) == 0
    done = capsys.readouterr().out.strip().splitlines()[-1]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert done.startswith(f"done: mIoU {100 * last['miou']:.1f}%  pixel accuracy "
                           f"{100 * last['pixel_acc']:.1f}% after 1 epoch;")
    assert done.endswith(f"best model (mIoU {100 * last['miou']:.1f}%) in {out / 'best'}")
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["options"]["width_mult"] == 0.25          # the task option reached the model
    # a resumed run keeps the task and its options (saved in the checkpoint's config)
    assert main(["train", "--resume", str(out / "last.pt"),
                 "--epochs", "2", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("done: mIoU ")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]

    assert main(["eval", str(out / "best"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    direct = segmentation_evaluate(load(out / "best"), data)
    assert result["task"] == "segmentation" and result["images"] == 2
    assert result["miou"] == pytest.approx(direct["miou"])
    assert result["pixel_acc"] == pytest.approx(direct["pixel_acc"])
    assert set(result["per_class_iou"]) == {"ground", "left", "box", "other"}
    assert main(["eval", str(out / "best"), "--data", str(data), "--confusion-png",
                 str(tmp_path / "confusion.png")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 images: mIoU ") and "confusion matrix:" in printed
    assert decode_unchanged(tmp_path / "confusion.png").shape[0] in (3, 4)

    image = data / "images" / "val" / "001.png"
    pictures = tmp_path / "pictures"
    assert main(["predict", str(out / "best"), str(image), "--out", str(pictures),
                 "--json", "--save-raw"]) == 0
    answer = json.loads(capsys.readouterr().out)["predictions"][0]
    picture = decode_unchanged(pictures / "001.png")
    assert picture.shape == (3, 48, 128)                     # input | mask, side by side
    assert torch.equal(picture[:, :, :64], decode_unchanged(image))
    assert sum(answer["class_fractions"].values()) == pytest.approx(1, abs=1e-3)
    colours = {tuple(c) for c in picture[:, :, 64:].flatten(1).T.tolist()}
    assert len(colours) == len(answer["class_fractions"])   # one colour per predicted class
    # --save-raw: the class ids themselves, which the picture's colours are of
    labels = decode_unchanged(Path(answer["labels"]))
    assert labels.shape == (1, 48, 64) and labels.dtype == torch.uint8
    from mobilenets.cli.dense_cmds import label_palette
    assert torch.equal(label_palette(4)[labels[0].long()].permute(2, 0, 1),
                       picture[:, :, 64:])
    names = load(out / "best").config["class_names"]
    for k, name in enumerate(names):
        share = (labels == k).float().mean().item()
        assert share == pytest.approx(answer["class_fractions"].get(name, 0), abs=1e-4)
    palette = label_palette(256)                             # VOC's: no two classes alike
    assert len({tuple(c) for c in palette.tolist()}) == 256 and palette[0].sum() == 0
    # two images of one stem: two pictures (the second replaced the first)
    twin = tmp_path / "other" / "001.png"
    twin.parent.mkdir()
    twin.write_bytes(image.read_bytes())
    assert main(["predict", str(out / "best"), str(image), str(twin), "--out",
                 str(tmp_path / "twins"), "--json"]) == 0
    outputs = [p["output"] for p in json.loads(capsys.readouterr().out)["predictions"]]
    assert [Path(o).name for o in outputs] == ["001.png", "001-2.png"]
    assert all(Path(o).is_file() for o in outputs)


def _write_pair(folder, stem, rgb, codes):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(folder / f"{stem}.color.png")
    Image.fromarray(np.asarray(codes, dtype=np.uint16)).save(folder / f"{stem}.depth.png")


def test_train_takes_evals_dense_flags(tmp_path, capsys):
    data = tmp_path / "pairs"
    for i in range(5):
        codes = np.linspace(1000, 8000, 48 * 64).reshape(48, 64) + 200 * i
        _write_pair(data, f"frame-{i:03d}", np.full((48, 64, 3), 40 * i), codes)
    out = tmp_path / "run"
    train = ["train", "--model", "fastdepth_mobilenet_v2_100", "--data", str(data),
             "--out", str(out), "--task-option", 'model_options={"width_mult": 0.25}', *RUN]
    for flags, message in ((("--label-set", "voc"), "--label-set is for segmentation models"),
                           (("--depth-scale", "2000", "--task-option", "scale=2000"),
                            "--depth-scale and --task-option scale=... set the same option")):
        assert main([*train, *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--model", "mobilenet_v1_025", "--invalid", "0"]) == 2
    assert "--invalid is for depth models" in capsys.readouterr().err
    assert not out.exists()

    assert main([*train, "--depth-scale", "2000", "--invalid", "0"]) == 0
    preprocess = json.loads((out / "best" / "config.json").read_text())["preprocess"]
    assert preprocess["depth_scale"] == 2000.0 and preprocess["depth_invalid"] == [0]
    capsys.readouterr()
    scores = {}
    for flags in ((), ("--depth-scale", "2000", "--invalid", "0"), ("--depth-scale", "1000")):
        assert main(["eval", str(out / "best"), "--data", str(data), "--json", *flags]) == 0
        scores[flags] = json.loads(capsys.readouterr().out)["abs_rel"]
    assert scores[()] == scores[("--depth-scale", "2000", "--invalid", "0")]
    assert scores[()] != scores[("--depth-scale", "1000")]


def test_dense_calibration_reads_photos_not_masks_or_depth(tmp_path, capsys):
    """A segmentation or depth data set given as the calibration folder gives its training
    photos, not its label masks (8-bit PNGs like photos) or depth maps; a plain folder of
    images is taken as it is. A classifier is refused by the segmentation task up front."""
    from mobilenets.deploy.quantize import task_images
    seg = _segmentation_data(tmp_path / "seg")
    assert task_images(seg, "segmentation") == sorted((seg / "images" / "train").iterdir())
    depth = tmp_path / "depth"
    for split, n in (("train", 3), ("val", 1)):
        (depth / split / "images").mkdir(parents=True)
        (depth / split / "depth").mkdir(parents=True)
        for i in range(n):
            folder = depth / split
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "images" / f"{i}.png")
            Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(folder / "depth" / f"{i}.png")
    assert task_images(depth, "depth") == [depth / "train" / "images" / f"{i}.png"
                                           for i in range(3)]
    assert task_images(seg / "images", "segmentation") == seg / "images"    # not a data set
    assert task_images(seg, "classification") == seg

    assert main(["train", "--model", "mobilenet_v3_small_100", "--task", "segmentation",
                 "--data", str(seg), "--out", str(tmp_path / "run"), *RUN]) == 2
    assert "not 'segmentation'" in capsys.readouterr().err
    # a folder with annotation folders that is not the model's layout: refused, never masks
    from mobilenets.data import DataError
    from mobilenets.data.calibration import calibration_batches
    (seg / "classes.txt").unlink()                     # no longer a segmentation folder
    assert task_images(seg, "segmentation") == seg
    with pytest.raises(DataError, match=r"has masks/ beside its images.*give .* the folder of "
                                        r"its photos"):
        calibration_batches(seg, None, num_images=2)
    # class folders of a classifier may be called "masks" (a face-mask classifier's)
    faces = tmp_path / "faces"
    for name in ("masks", "no_masks"):
        (faces / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(faces / name / "0.png")
    pre = dict(mobilenets.create_model("mobilenet_v3_small_100").preprocess, resolution=8,
               resize=8)
    batches = calibration_batches(faces, pre, num_images=2)
    assert sum(len(b) for b in batches) == 2 and batches[0].shape[1:] == (3, 8, 8)


def test_depth_train_eval_predict(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    for i in range(5):
        codes = np.linspace(500, 4000, 48 * 64).reshape(48, 64) + 100 * i
        _write_pair(data, f"frame-{i:03d}", rng.integers(0, 255, (48, 64, 3)), codes)
    out = tmp_path / "run"
    assert main(["train", "--model", "fastdepth_mobilenet_v2_100", "--data", str(data),
                 "--out", str(out), "--task-option", 'model_options={"width_mult": 0.25}',
                 "--task-option", "loss=l1", *RUN]) == 0
    done = capsys.readouterr().out.strip().splitlines()[-1]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert done.startswith(f"done: AbsRel {last['abs_rel']:.4f}  delta1 "
                           f"{100 * last['delta1']:.1f}%")
    assert last["images"] == 1                               # the last 20% of 5 pairs

    assert main(["eval", str(out / "best"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "depth" and result["images"] == 5     # every pair in DATA
    assert result["abs_rel"] > 0 and 0 <= result["delta1"] <= 1

    # the scale the model was trained on (1000, the default) is saved with it
    scores = {}
    for flags in ((), ("--depth-scale", "1000"), ("--depth-scale", "2000")):
        assert main(["eval", str(out / "best"), "--data", str(data), "--json", *flags]) == 0
        scores[flags] = json.loads(capsys.readouterr().out)["abs_rel"]
    assert scores[()] == scores[("--depth-scale", "1000")] != scores[("--depth-scale", "2000")]
    assert json.loads((out / "best" / "config.json").read_text())["preprocess"][
        "depth_scale"] == 1000.0

    # a folder of pairs: the photos, not the 16-bit depth maps beside them
    assert main(["predict", str(out / "best"), str(data), "--json",
                 "--out", str(tmp_path / "all")]) == 0
    listed = [Path(r["image"]).name for r in json.loads(capsys.readouterr().out)["predictions"]]
    assert listed == [f"frame-{i:03d}.color.png" for i in range(5)]
    assert main(["predict", str(out / "best"), str(data / "frame-000.depth.png")]) == 2
    assert "a depth or label map" in capsys.readouterr().err

    assert main(["predict", str(out / "best"), str(data / "frame-000.color.png"),
                 "--out", str(tmp_path / "pictures"), "--save-raw"]) == 0
    depth = decode_unchanged(tmp_path / "pictures" / "frame-000.color-depth.png")
    assert depth.shape == (1, 48, 64) and depth.dtype == torch.uint16   # millimetres
    assert 0 < depth.float().mean() < 65535
    picture = decode_unchanged(tmp_path / "pictures" / "frame-000.color.png")
    assert picture.shape == (3, 48, 128)
    assert torch.equal(picture[:, :, :64], decode_unchanged(data / "frame-000.color.png"))
    assert picture[:, :, 64:].flatten(1).unique(dim=1).shape[1] > 1     # a colour-mapped map


def test_quantize_keeps_a_dense_models_output_layers_in_float(tmp_path, capsys):
    import onnx
    from mobilenets import create_model, save
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    for i in range(4):
        codes = np.linspace(500, 4000, 48 * 64).reshape(48, 64) + 100 * i
        _write_pair(data, f"frame-{i:03d}", rng.integers(0, 255, (48, 64, 3)), codes)
    save(create_model("fastdepth_mobilenet_v1_025", resolution=64), tmp_path / "depth")
    out = tmp_path / "int8.onnx"
    assert main(["quantize", str(tmp_path / "depth"), "--calib", str(data), "--num-images",
                 "4", "--exclude", "output", "--out", str(out)]) == 0
    graph = onnx.load(str(out)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert [n.name for n in convs if n.input[1] not in dequantized] == \
        [n.name for n in convs[-2:]]                    # the rest have int8 weights
    with pytest.raises(SystemExit):
        main(["quantize", str(tmp_path / "depth"), "--calib", str(data), "--exclude",
              "classifier+heads"])
    assert "unknown preset(s) 'heads'" in capsys.readouterr().err


def _yolo_data(root, n_train=4, n_val=2):
    """Images of one or two filled rectangles with their YOLO labels (class, cx, cy, w, h)."""
    (root).mkdir(parents=True)
    (root / "config.yaml").write_text("names: [red, green]\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            image = np.full((96, 128, 3), 30, np.uint8)
            image[20:60, 10 + 8 * i:60 + 8 * i] = (220, 30, 30)
            image[50:90, 80:120] = (30, 220, 30)
            Image.fromarray(image).save(root / "images" / split / f"{i:03d}.png")
            (root / "labels" / split / f"{i:03d}.txt").write_text(
                f"0 {(35 + 8 * i) / 128} {40 / 96} {50 / 128} {40 / 96}\n"
                f"1 {100 / 128} {70 / 96} {40 / 128} {40 / 96}\n")
    return root


def test_detection_train_eval_predict(tmp_path, capsys):
    data = _yolo_data(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--model", "ssdlite_mobilenet_v3_small_100", "--data", str(data),
                 "--out", str(out), "--task-option", "augment=flip",
                 *RUN[:2], "--resolution", "128", *RUN[4:]]) == 0
    done = capsys.readouterr().out.strip().splitlines()[-1]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert done.startswith(f"done: mAP {100 * last['map']:.1f}%  mAP50 "
                           f"{100 * last['map50']:.1f}%")

    assert main(["eval", str(out / "best"), "--data", str(data), "--json"]) == 0

    def strict(constant):            # NaN, Infinity: not JSON (a class without AP is null)
        raise ValueError(f"eval --json printed {constant}")
    result = json.loads(capsys.readouterr().out, parse_constant=strict)
    assert result["task"] == "detection" and result["count"] == 2
    assert result["map"] == pytest.approx(last["map"])        # the same val split and model

    image = data / "images" / "val" / "001.png"

    def predict(*options):
        assert main(["predict", str(out / "best"), str(image), "--out", str(tmp_path / "p"),
                     "--json", *options]) == 0
        return json.loads(capsys.readouterr().out)["predictions"][0]["detections"]
    every = predict("--conf", "0.0")
    assert len(every) > 3 and {d["label"] for d in every} <= {"red", "green"}
    scores = [d["score"] for d in every]
    assert scores == sorted(scores, reverse=True)
    assert predict("--conf", "0.0", "--max-det", "3") == every[:3]    # detections_per_img
    k = next(i for i in range(2, len(scores)) if scores[i] > scores[i + 1])
    threshold = (scores[k] + scores[k + 1]) / 2      # between two (rounded) scores
    above = predict("--conf", str(threshold))                         # score_thresh
    assert above == every[:k + 1]
    # without --conf, the boxes scoring 0.25 or more (ultralytics' predict default)
    assert predict() == [d for d in every if d["score"] >= 0.25]
    picture = decode_unchanged(tmp_path / "p" / "001.png")
    assert picture.shape == (3, 96, 128)
    assert not torch.equal(picture, decode_unchanged(image))      # boxes were drawn


def test_detection_cli_reads_a_data_yaml_and_trains_at_the_model_size(tmp_path, capsys):
    """``--data`` may be the data YAML (its ``path:`` and splits); without --resolution a
    detector trains at its own input size (SSDLite's 320 px), not the classifier default;
    quantize calibrates on the YAML's training split."""
    data = _yolo_data(tmp_path / "data")
    (data / "config.yaml").unlink()
    yaml = tmp_path / "cfg" / "two.yaml"
    yaml.parent.mkdir()
    yaml.write_text("path: ../data\ntrain: images/train\nval: images/val\nnames: [red, green]\n")
    out = tmp_path / "run"
    assert main(["train", "--model", "ssdlite_mobilenet_v3_small_100", "--data", str(yaml),
                 "--out", str(out), "--task-option", 'model_options={"width_mult": 0.25}',
                 *RUN[:2], *RUN[4:]]) == 0
    assert json.loads((out / "train_config.json").read_text())["resolution"] == 320
    assert "ssdlite_mobilenet_v3_small_100 at 320 px" in capsys.readouterr().out
    assert main(["eval", str(out / "best"), "--data", str(yaml), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2
    assert main(["export", str(out / "best"), "--out", str(tmp_path / "det.onnx")]) == 0
    assert main(["quantize", str(tmp_path / "det.onnx"), "--calib", str(yaml), "--out",
                 str(tmp_path / "det-int8.onnx"), "--num-images", "8"]) == 0
    said = capsys.readouterr()
    said = said.out + said.err
    assert "ms against" in said and "input an image of --calib" in said
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "det-int8.onnx"),
                                              load_external_data=False).metadata_props}
    quantization = json.loads(meta["quantization"])
    assert quantization["num_images"] == 4                   # the training split's 4 images
    assert quantization["calibration_resize"] == "stretch"


def test_eval_report_leaves_out_classes_absent_from_the_data():
    from mobilenets.cli.dense_cmds import eval_report
    text = eval_report("detection", {"count": 2, "map": 0.5, "map50": 0.75,
                                     "per_class": {"red": 0.5, "green": float("nan"),
                                                   "blue": None}})
    lines = text.splitlines()
    assert lines[1].split() == ["red", "50.00%"] and "nan" not in text
    assert lines[2].strip() == "(2 of 3 classes absent from the data, not listed)"


def test_int8_speed_check_knows_a_detectors_input_resize():
    """The speed check prepares a detector's image as its input (stretch or letterbox; its
    use on a real image is checked by the data-YAML CLI test above); a classifier gets
    noise."""
    from mobilenets import create_model
    from mobilenets.cli.quantize_cmds import detector_resize
    assert detector_resize(create_model("ssdlite_mobilenet_v3_small_100")) == "stretch"
    assert detector_resize(create_model("yolov4_mobilenet_v3_small_100")) == "letterbox"
    assert detector_resize(create_model("mobilenet_v3_small_100")) is None


def _saved(tmp_path, name, class_names=None, **options):
    """A random-weight model of ``name`` saved with a 64 px preprocess resolution."""
    from mobilenets import create_model, save
    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    model.preprocess.update(resolution=64, resize=64)
    return save(model, tmp_path / name, class_names)


def test_eval_depth_scale_and_invalid_codes(tmp_path, capsys):
    from mobilenets.tasks.depth import DepthPairs, depth_eval_transform, evaluate_model, find_pairs
    from mobilenets.training.sampling import SeededView
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    for i in range(2):                       # 0.1-0.8 m at 5000 codes per metre, code 7: none
        codes = np.linspace(500, 4000, 48 * 64).reshape(48, 64)
        codes[:10] = 7
        _write_pair(data, f"frame-{i:03d}", rng.integers(0, 255, (48, 64, 3)), codes)
    folder = _saved(tmp_path, "fastdepth_mobilenet_v2_100", width_mult=0.25)
    model = load(folder).eval()

    def direct(scale, invalid):
        pairs = DepthPairs(find_pairs(data), scale, invalid)
        return evaluate_model(model, SeededView(pairs, depth_eval_transform(64, model.preprocess),
                                                0))["abs_rel"]

    def cli(*flags):
        code = main(["eval", str(folder), "--data", str(data), "--json", *flags])
        return code, capsys.readouterr()

    runs = {}
    for flags in ((), ("--depth-scale", "5000", "--invalid", "7"), ("--invalid", "7"),
                  ("--invalid",)):
        code, out = cli(*flags)
        assert code == 0
        runs[flags] = json.loads(out.out)["abs_rel"]
    default, scaled, masked, none = runs.values()
    assert default == pytest.approx(direct(1000.0, (0, 65535)), rel=1e-6)   # code 7 = 7 mm
    assert scaled == pytest.approx(direct(5000.0, (7,)), rel=1e-6)
    assert masked == pytest.approx(direct(1000.0, (7,)), rel=1e-6)
    assert none == pytest.approx(default, rel=1e-6)                 # no 0 or 65535 here
    assert len({default, scaled, masked}) == 3
    with pytest.raises(SystemExit):                                 # argparse: not a code
        cli("--invalid", "-1")
    for flags, message in ((("--depth-scale", "0"), "depth scale must be > 0"),
                           (("--label-set", "voc"), "--label-set is for segmentation models")):
        code, out = cli(*flags)
        assert code == 2 and message in out.err


def test_eval_label_set_on_coco_panoptic_masks(tmp_path, capsys):
    from mobilenets.tasks.segmentation.data import VOC_CLASSES
    root = tmp_path / "coco"
    (root / "images" / "val").mkdir(parents=True)
    (root / "semantic_segmentation" / "masks" / "val").mkdir(parents=True)
    (root / "semantic_segmentation" / "config.yaml").write_text(
        "val:\n  images: ../images/val\n  masks: masks/val\n"
        "classes:\n  0: unlabeled\n  1: person\n  3: car\n  50: spoon\n")
    rng = np.random.default_rng(0)
    for i in range(2):                  # quarters: unlabeled, person, car, spoon (not in VOC)
        ids = np.repeat(np.repeat(np.array([[0, 1], [3, 50]], np.uint8), 24, 0), 32, 1)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            root / "images" / "val" / f"{i}.png")
        Image.fromarray(ids).save(root / "semantic_segmentation" / "masks" / "val" / f"{i}.png")
    folder = _saved(tmp_path, "lraspp_mobilenet_v3_small_100", num_classes=21,
                    class_names=list(VOC_CLASSES))
    assert main(["eval", str(folder), "--data", str(root), "--label-set", "voc", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    want = segmentation_evaluate(load(folder), root, "val", label_set="voc")
    assert result["miou"] == pytest.approx(want["miou"]) and result["images"] == 2
    # VOC: unlabeled and spoon are background, so every pixel of the 64 x 64 inputs is scored
    assert result["pixels"] == 2 * 64 * 64
    present = {k for k, v in result["per_class_iou"].items() if v is not None}
    assert {"__background__", "person", "car"} <= present
    for flags, message in (((), "trained on the classes"),          # coco: person, car, spoon
                           (("--depth-scale", "1000"), "--depth-scale is for depth models")):
        assert main(["eval", str(folder), "--data", str(root), *flags]) == 2
        assert message in capsys.readouterr().err
    # a model trained with label_set voc records it, and eval reads the masks that way again
    (root / "semantic_segmentation" / "config.yaml").write_text(
        "train:\n  images: ../images/val\n  masks: masks/val\n"
        "val:\n  images: ../images/val\n  masks: masks/val\n"
        "classes:\n  0: unlabeled\n  1: person\n  3: car\n  50: spoon\n")
    out = tmp_path / "voc-run"
    assert main(["train", "--model", "lraspp_mobilenet_v3_small_100", "--data", str(root),
                 "--out", str(out), *RUN, "--task-option", "label_set=voc"]) == 0
    assert load(out / "best").preprocess["label_set"] == "voc"
    capsys.readouterr()
    assert main(["eval", str(out / "best"), "--data", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pixels"] == 2 * 64 * 64
    # on a folder of another layout (VOC's 21 classes as label masks) it scores as before
    voc = _segmentation_data(tmp_path / "voc-folder", n_train=1, n_val=1)
    (voc / "classes.txt").write_text("\n".join(VOC_CLASSES) + "\n")
    assert main(["eval", str(out / "best"), "--data", str(voc), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1


def test_predict_and_eval_resolution(tmp_path, capsys):
    """`predict --resolution` runs a segmentation model (and a classifier) at that input size:
    the labels written equal the model's on the image resized to it; a detector, which resizes
    to its own size, and an exported file of one input size refuse another, naming why."""
    from torchvision.transforms import v2
    from mobilenets.data import at_resolution, eval_transform
    from mobilenets.data import read_rgb
    data = _segmentation_data(tmp_path / "seg", n_train=1, n_val=1)
    image = data / "images" / "val" / "000.png"
    folder = _saved(tmp_path, "lraspp_mobilenet_v3_small_100", num_classes=4)
    assert main(["predict", str(folder), str(image), "--resolution", "96", "--save-raw",
                 "--out", str(tmp_path / "pred")]) == 0
    labels = decode_unchanged(tmp_path / "pred" / "000-labels.png")[0].long()
    model, rgb = load(folder).eval(), read_rgb(image)
    x = v2.Normalize(model.preprocess["mean"], model.preprocess["std"])(
        v2.Resize((96, 96), antialias=True)(rgb).float() / 255)[None]
    with torch.no_grad():
        logits = model(x)["out"]
    want = torch.nn.functional.interpolate(logits, size=rgb.shape[-2:], mode="bilinear",
                                           align_corners=False).argmax(1)[0]
    assert torch.equal(labels, want)
    capsys.readouterr()
    # a classifier at 96 px: the eval transform of its preprocess at that size
    classifier = _saved(tmp_path, "mobilenet_v3_small_075", num_classes=3)
    assert main(["predict", str(classifier), str(image), "--resolution", "96", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["predictions"][0]
    net = load(classifier).eval()
    with torch.no_grad():
        probs = net(eval_transform(at_resolution(net.preprocess, 96))(
            Image.open(image).convert("RGB"))[None]).softmax(1)[0]
    assert printed["probabilities"][0] == pytest.approx(probs.max().item(), rel=1e-5)
    # refused: a detector at another size; a 64 px ONNX file at 96 px
    detector = _saved(tmp_path, "ssdlite_mobilenet_v3_small_100", num_classes=3)
    for command in (["predict", str(detector), str(image)], ["eval", str(detector), "--data",
                                                             str(tmp_path / "seg")]):
        assert main([*command, "--resolution", "96"]) == 2
        assert "a detector runs at its own input size (64 px), not 96" in capsys.readouterr().err
    onnx_file = tmp_path / "seg.onnx"
    assert main(["export", str(folder), "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    for command in (["predict", str(onnx_file), str(image)],
                    ["eval", str(onnx_file), "--data", str(data)]):
        assert main([*command, "--resolution", "96"]) == 2
        assert "takes 64 px inputs, not 96" in capsys.readouterr().err
