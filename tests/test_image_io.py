"""The library's image decoding and encoding (``mobilenets.data.image_io``): TorchCodec's,
checked against torchvision's deprecated decoder and PIL on real files."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data import image_io
from mobilenets.data.folder import read_rgb
from mobilenets.data.shards import decode_image_bytes


def _torchvision_decode(path, mode):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image
        return decode_image(str(path), mode=getattr(ImageReadMode, mode))


def test_rgb_jpeg_and_png_match_torchvision(tmp_path, backend):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "grey.png")
    for name in ("a.jpg", "a.png", "grey.png"):
        ours = image_io.decode_rgb(tmp_path / name)
        assert ours.shape == (3, 37, 53) and ours.dtype == torch.uint8
        assert torch.equal(ours, _torchvision_decode(tmp_path / name, "RGB"))
    assert torch.equal(image_io.decode_rgb(tmp_path / "a.png"),
                       torch.from_numpy(pixels).permute(2, 0, 1))          # lossless
    data = (tmp_path / "a.jpg").read_bytes()
    assert torch.equal(decode_image_bytes(data, "jpg"), image_io.decode_rgb(tmp_path / "a.jpg"))
    assert torch.equal(image_io.decode_rgb(data), image_io.decode_rgb(tmp_path / "a.jpg"))


def test_unchanged_keeps_16_bit_values_and_channels(tmp_path, backend):
    codes = np.arange(0, 60000, 25, dtype=np.uint16).reshape(40, 60)
    Image.fromarray(codes).save(tmp_path / "depth.png")
    depth = image_io.decode_unchanged(tmp_path / "depth.png")
    assert depth.dtype == torch.uint16 and depth.shape == (1, 40, 60)
    assert torch.equal(depth.to(torch.int32)[0], torch.from_numpy(codes.astype(np.int32)))
    Image.fromarray(np.full((5, 7), 3, np.uint8)).save(tmp_path / "mask.png")
    mask = image_io.decode_unchanged((tmp_path / "mask.png").read_bytes())
    assert mask.dtype == torch.uint8 and mask.shape == (1, 5, 7) and int(mask.max()) == 3


def test_write_png_round_trips(tmp_path):
    image = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8)
    image_io.write_png(image[:, :, ::2].permute(0, 2, 1).permute(0, 2, 1), tmp_path / "o.png")
    assert torch.equal(image_io.decode_rgb(tmp_path / "o.png"), image[:, :, ::2])
    image_io.write_png(image[:1], tmp_path / "g.png")
    assert torch.equal(image_io.decode_unchanged(tmp_path / "g.png"), image[:1])


@pytest.fixture(params=["torchcodec", "torchvision"])
def backend(request, monkeypatch):
    """Each test that takes it runs with TorchCodec and with the torchvision.io fallback."""
    if request.param == "torchcodec" and image_io.BACKEND != "torchcodec":
        pytest.skip("TorchCodec does not load here")
    monkeypatch.setattr(image_io, "BACKEND", request.param)
    return request.param


def test_exif_orientation_is_not_applied(tmp_path, backend):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (250, 0, 0)                           # left half red
    exif = Image.Exif()
    exif[0x0112] = 6                                       # "rotate 90 degrees to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=95)
    with Image.open(tmp_path / "rotated.jpg") as img:
        assert img.getexif()[0x0112] == 6
    rotated = image_io.decode_rgb(tmp_path / "rotated.jpg")
    assert rotated.shape == (3, 40, 60)                    # as stored, like the mask beside it
    assert rotated[0, :, :25].float().mean() > 200 and rotated[0, :, 35:].float().mean() < 50
    assert torch.equal(read_rgb(tmp_path / "rotated.jpg"), rotated)
    assert (rotated.int() - image_io.decode_rgb(tmp_path / "plain.jpg").int()).abs().max() <= 1
    data = (tmp_path / "rotated.jpg").read_bytes()
    assert torch.equal(decode_image_bytes(data, "jpg"), rotated)


def test_failures_are_runtime_errors_naming_the_file(tmp_path, backend):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(RuntimeError, match="broken.jpg"):
        image_io.decode_rgb(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError):
        image_io.decode_unchanged(tmp_path / "missing.png")
    mask = Image.fromarray(np.zeros((6, 6), np.uint8), mode="P")
    mask.putpalette([0, 0, 0] * 256)
    mask.save(tmp_path / "palette.png")
    broken = (tmp_path / "palette.png").read_bytes()
    (tmp_path / "palette-broken.png").write_bytes(broken[:60])       # inside PLTE
    with pytest.raises(RuntimeError, match="palette-broken.png"):
        image_io.decode_unchanged(tmp_path / "palette-broken.png")


def test_failures_are_runtime_errors_and_read_rgb_falls_back_to_pil(tmp_path):
    Image.fromarray(np.full((6, 8, 3), 200, np.uint8)).save(tmp_path / "a.bmp")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    for name in ("a.bmp", "broken.jpg"):
        with pytest.raises(RuntimeError):
            image_io.decode_rgb(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        image_io.decode_rgb(tmp_path / "missing.png")
    assert torch.equal(read_rgb(tmp_path / "a.bmp"), torch.full((3, 6, 8), 200, dtype=torch.uint8))
    with pytest.raises(OSError, match="broken.jpg is not an image"):
        read_rgb(tmp_path / "broken.jpg")


def test_palette_png_gives_its_indices(tmp_path, backend):
    indices = np.random.default_rng(1).integers(0, 21, (12, 10), dtype=np.uint8)
    indices[0, 0] = 255                                   # VOC's border code
    mask = Image.fromarray(indices, mode="P")
    mask.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    mask.save(tmp_path / "voc.png")
    for source in (tmp_path / "voc.png", (tmp_path / "voc.png").read_bytes()):
        decoded = image_io.decode_unchanged(source)
        assert decoded.shape == (1, 12, 10) and decoded.dtype == torch.uint8
        assert torch.equal(decoded[0], torch.from_numpy(indices))
    assert torch.equal(decoded, _torchvision_decode(tmp_path / "voc.png", "UNCHANGED"))
