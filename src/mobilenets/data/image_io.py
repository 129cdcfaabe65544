"""Image files in and out as uint8 / uint16 C x H x W tensors: the one place the library
decodes and encodes images.

TorchCodec (>= 0.16) is the decoder: torchvision deprecated its own image decoding and
encoding in 0.29 in its favour (both use libjpeg-turbo and libpng; JPEG pixels are the same).
Where TorchCodec cannot be imported (not installed, or built for another torch),
torchvision.io does the same work.

Images are read as stored, **without applying an EXIF orientation tag**, as torchvision's
decoder did by default and as PIL (the classification folders' loader) does: a photo and the
mask or depth map drawn on it stay aligned. TorchCodec always applies the tag, so a file that
carries one other than "upright" is decoded by PIL instead; so is a palette PNG read
unchanged (a VOC mask: its indices, where TorchCodec would give colours).

A decode failure is a ``RuntimeError`` naming the file (an unsupported format or a broken
file), a missing file ``FileNotFoundError``, whichever backend ran.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

try:
    from torchcodec.decoders import decode_image as _codec_decode
    from torchcodec.decoders import decode_jpeg as _codec_decode_jpeg
    from torchcodec.encoders import PngEncoder as _PngEncoder
    BACKEND = "torchcodec"
except Exception:         # absent, or its native library does not load against this torch
    BACKEND = "torchvision"

Source = str | Path | bytes | bytearray | torch.Tensor

_EXIF_MARKERS = (b"Exif\x00\x00", b"eXIf", b"EXIF")     # JPEG APP1, PNG and WebP chunks
_ORIENTATION = 0x0112


def _encoded(source: Source) -> tuple[bytearray, str]:
    """The file's bytes (writable, for torch.frombuffer) and a name for messages."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        with open(path, "rb") as f:                       # FileNotFoundError names it
            data = bytearray(path.stat().st_size)
            f.readinto(data)
        return data, str(path)
    if isinstance(source, torch.Tensor):
        return bytearray(source.numpy().tobytes()), "image bytes"
    return bytearray(source), "image bytes"


def _is_palette_png(head: bytes) -> bool:
    return (len(head) >= 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
            and head[25] == 3)                            # IHDR colour type 3: palette


def _rotated(data: bytearray) -> bool:
    """True when the file carries an EXIF orientation other than 1 (upright); the bytes are
    searched for an EXIF block first, so most files cost no parse."""
    if not any(marker in data for marker in _EXIF_MARKERS):
        return False
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.getexif().get(_ORIENTATION, 1) not in (1, None)
    except Exception:                     # an unreadable EXIF block: leave it to the decoder
        return False


def _pil_decode(data: bytearray, rgb: bool, name: str) -> torch.Tensor:
    """PIL's decoding, as stored (no EXIF transpose): RGB, or the stored channels and bit
    depth (a palette's indices, 16-bit grey as uint16)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img.convert("RGB") if rgb else img)
    except (OSError, ValueError, SyntaxError) as e:
        raise RuntimeError(f"{name}: {e}") from None
    if array.dtype == bool:                               # 1-bit images
        array = array.astype(np.uint8)
    image = torch.from_numpy(array.copy())
    return image[None] if image.dim() == 2 else image.permute(2, 0, 1).contiguous()


def _torchvision():
    with warnings.catch_warnings():           # its deprecation notice: TorchCodec is absent
        warnings.simplefilter("ignore", DeprecationWarning)
        import torchvision.io as tvio
    return tvio


def _first_frame(image: torch.Tensor) -> torch.Tensor:
    return image[0] if image.dim() == 4 else image      # animated GIF / WebP: frame 0


def _decode(source: Source, rgb: bool, jpeg: bool = False) -> torch.Tensor:
    data, name = _encoded(source)
    if (not rgb and _is_palette_png(bytes(data[:26]))) or _rotated(data):
        return _first_frame(_pil_decode(data, rgb, name))
    encoded = torch.frombuffer(data, dtype=torch.uint8)
    if BACKEND == "torchcodec":
        decode = _codec_decode_jpeg if jpeg else _codec_decode
        options = {"mode": "RGB"} if rgb else {"mode": "UNCHANGED", "output_dtype": "auto"}
        try:
            return _first_frame(decode(encoded, **options))
        except (ValueError, RuntimeError) as e:   # unknown format / broken file
            raise RuntimeError(f"{name}: {e}") from None
    tvio = _torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decode = tvio.decode_jpeg if jpeg else tvio.decode_image
        mode = tvio.ImageReadMode.RGB if rgb else tvio.ImageReadMode.UNCHANGED
        try:
            image = _first_frame(decode(encoded, mode=mode))
        except RuntimeError as e:
            raise RuntimeError(f"{name}: {e}") from None
    if rgb and image.dtype != torch.uint8:        # 16-bit colour: rounded as TorchCodec does
        image = ((image.to(torch.int32) * 255 + 32895) >> 16).to(torch.uint8)
    return image


def decode_rgb(source: Source, jpeg: bool = False) -> torch.Tensor:
    """A uint8 3 x H x W RGB tensor from a path, the file's bytes or a 1-D uint8 tensor of
    them (an animated image: its first frame; 16-bit PNG colours brought to 8 bits).
    ``jpeg``: the bytes are known to be JPEG (skips format detection)."""
    return _decode(source, rgb=True, jpeg=jpeg)


def decode_unchanged(source: Source) -> torch.Tensor:
    """An image as stored: its channels and bit depth (a 16-bit PNG gives uint16), C x H x W;
    for label masks and depth maps. A palette PNG gives its indices (1 x H x W)."""
    return _decode(source, rgb=False)


def write_png(image: torch.Tensor, path: str | Path) -> None:
    """A uint8 1- or 3-channel C x H x W tensor as a PNG file at ``path``."""
    image = image.contiguous()
    if BACKEND == "torchcodec":
        _PngEncoder(image).to_file(str(path))
        return
    tvio = _torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tvio.write_png(image, str(path))


def write_png16(values: torch.Tensor, path: str | Path) -> None:
    """A 1 x H x W integer tensor of values in 0..65535 as a 16-bit grayscale PNG (depth
    maps, class ids above 255), through Pillow: the encoders above write 8 bits."""
    import numpy as np
    from PIL import Image
    if values.ndim != 3 or values.shape[0] != 1:
        raise ValueError(f"expected a 1 x H x W tensor, not shape {tuple(values.shape)}")
    if values.is_floating_point() or values.min() < 0 or values.max() > 65535:
        raise ValueError("16-bit PNG values are integers in 0..65535")
    array = values[0].to(torch.int32).numpy().astype(np.uint16)
    Image.fromarray(array).save(str(path), format="PNG")


__all__ = ["BACKEND", "decode_rgb", "decode_unchanged", "write_png", "write_png16"]
