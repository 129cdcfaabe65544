"""Where a YOLO data set's images and labels are (its folder or its data YAML, as ultralytics
reads one), images torchvision cannot decode, and calibration images prepared as the
detector file is fed. Synthetic data: runs without ../shared."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import DataError, read_rgb
from mobilenets.deploy.exported_detector import DetectionInput
from mobilenets.deploy.quantize import detection_batches, detection_images
from mobilenets.tasks.detection.data import YoloDetection, split_dirs, yolo_data


def _images(folder, labels, n, suffix=".png", size=(48, 64)):
    folder.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), np.uint8)).save(folder / f"{i}{suffix}")
        (labels / f"{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.5\n")


def test_yaml_path_key_and_split_folders(tmp_path, monkeypatch):
    """A YAML elsewhere names the root with ``path:`` (relative to the YAML's folder, else the
    current one) and the splits as image folders; ``images/<name>`` is the split ``<name>``."""
    root = tmp_path / "data"
    _images(root / "images" / "tr", root / "labels" / "tr", 3)
    _images(root / "images" / "va", root / "labels" / "va", 2)
    (root / "config.yaml").write_text("names: [wrong]\n")          # not the YAML named below
    cfg = tmp_path / "cfg" / "mine.yaml"
    cfg.parent.mkdir()
    cfg.write_text("path: ../data\ntrain: images/tr\nval: images/va\nnames: [a, b]\n")
    spec = yolo_data(cfg)
    assert (spec.root.resolve(), spec.names_file, spec.train, spec.val) == (
        root.resolve(), cfg, "tr", "va")
    assert len(YoloDetection(spec.root, spec.val, ["a", "b"])) == 2
    monkeypatch.chdir(tmp_path)                                   # relative to the cwd
    cfg.write_text("path: data\ntrain: images/tr\nval: images/va\nnames: [a, b]\n")
    assert yolo_data(cfg).root.resolve() == root.resolve()
    # the folder itself: its own YAML, whatever ``path:`` the named one has
    assert yolo_data(root).names_file == root / "config.yaml"


def test_split_images_folders_find_their_labels(tmp_path):
    """Roboflow's layout (``train/images`` beside ``train/labels``): labels are where the last
    ``images`` part of the path becomes ``labels``, as ultralytics finds them."""
    root = tmp_path / "rf"
    _images(root / "train" / "images", root / "train" / "labels", 3)
    _images(root / "valid" / "images", root / "valid" / "labels", 2)
    (root / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [a, b]\n")
    spec = yolo_data(root / "data.yaml")
    assert (spec.train, spec.val) == ("train/images", "valid/images")
    assert split_dirs(spec.root, spec.val) == (root / "valid" / "images",
                                               root / "valid" / "labels")
    data = YoloDetection(spec.root, spec.train, ["a", "b"])
    assert len(data) == 3 and not data.background and data.num_boxes == 3
    # Roboflow's own data.yaml names the splits from one level up; an absolute path works
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n"
                                    "names: [a, b]\n")
    spec = yolo_data(root / "data.yaml")
    assert split_dirs(spec.root, spec.train) == (root / "train" / "images",
                                                 root / "train" / "labels")
    absolute = str((root / "valid" / "images").resolve())
    assert split_dirs(tmp_path, absolute) == (Path(absolute),
                                              Path(absolute).parent / "labels")
    assert YoloDetection(tmp_path, absolute, ["a", "b"]).num_boxes == 2


@pytest.mark.parametrize("text, message", [
    ("train: [images/a, images/b]\nnames: [a]\n", "one folder of images per split"),
    ("train: train.txt\nnames: [a]\n", "one folder of images per split"),
    ("path: nowhere\nnames: [a]\n", "path: nowhere is not a folder"),
])
def test_yaml_entries_that_are_not_supported_say_so(tmp_path, text, message):
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(DataError, match=message):
        yolo_data(tmp_path / "data.yaml")


def test_missing_data_and_wrong_files_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        yolo_data(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a data YAML"):
        yolo_data(tmp_path / "notes.txt")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "data.yaml").write_text("train: pics\nnames: [a]\n")
    (tmp_path / "flat" / "pics").mkdir()
    with pytest.raises(DataError, match="no 'images' part"):
        split_dirs(tmp_path / "flat", "pics")


def test_bmp_and_tiff_images_are_read(tmp_path):
    """torchvision's decoder reads neither; the detection, segmentation and depth loaders and
    predict read them as the classification loader does (PIL)."""
    root = tmp_path / "d"
    _images(root / "images" / "train", root / "labels" / "train", 2, suffix=".bmp")
    pixels = np.array(Image.open(root / "images" / "train" / "0.bmp").convert("RGB"))
    Image.fromarray(pixels).save(tmp_path / "x.tif")
    for path in (root / "images" / "train" / "0.bmp", tmp_path / "x.tif"):
        image = read_rgb(path)
        assert image.dtype == torch.uint8 and torch.equal(image.permute(1, 2, 0),
                                                          torch.from_numpy(pixels))
    (item, target), _ = YoloDetection(root, "train", ["a", "b"], strict=True)[0]
    assert item.shape == (3, 48, 64) and len(target["boxes"]) == 1
    (tmp_path / "bad.bmp").write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.bmp is not an image"):
        read_rgb(tmp_path / "bad.bmp")


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_detector_calibration_is_prepared_as_the_file_is_fed(tmp_path, resize):
    """A YOLO data set calibrates on its training split only, each image resized as the
    detector file's input is (stretch or letterbox), not centre-cropped as a classifier's."""
    root = tmp_path / "d"
    _images(root / "images" / "train", root / "labels" / "train", 3, size=(40, 80))
    _images(root / "images" / "val", root / "labels" / "val", 2, size=(40, 80))
    (root / "config.yaml").write_text("names: [a, b]\n")
    assert detection_images(root) == detection_images(root / "config.yaml") == \
        root / "images" / "train"
    pre = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}
    batches = detection_batches(root, resize, 32, pre, num_images=10, batch_size=2)
    assert [len(b) for b in batches] == [2, 1]             # the 3 training images only
    got = torch.cat(batches)
    images = [read_rgb(p).float() / 255 for p in sorted((root / "images" / "train").iterdir())]
    want, _ = DetectionInput(resize, 32, pre["mean"], pre["std"])(images)
    # the same images, in the draw's order
    assert all(any(torch.allclose(g, w, atol=1e-6) for w in want) for g in got)
    if resize == "letterbox":        # the canvas's padding rows are there, unlike a crop
        assert torch.allclose(got[:, :, 0], got[:1, :, 0, :1].expand_as(got[:, :, 0]))
