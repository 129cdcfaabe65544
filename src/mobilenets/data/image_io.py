"""Image files in and out as uint8 / uint16 C x H x W tensors: the one place the library
decodes and encodes images.

TorchCodec (>= 0.16) is the decoder: torchvision deprecated its own image decoding and
encoding in 0.29 in its favour (same libjpeg-turbo / libpng results). Where TorchCodec cannot
be imported (not installed, or built for another torch), torchvision.io does the same work.

A decode failure is a ``RuntimeError`` (an unsupported format or a broken file), a missing
file ``FileNotFoundError``, whichever backend ran.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

try:
    from torchcodec.decoders import decode_image as _codec_decode
    from torchcodec.decoders import decode_jpeg as _codec_decode_jpeg
    from torchcodec.encoders import PngEncoder as _PngEncoder
    BACKEND = "torchcodec"
except Exception:         # absent, or its native library does not load against this torch
    BACKEND = "torchvision"

Source = str | Path | bytes | torch.Tensor


def _as_codec_source(source: Source):
    return str(source) if isinstance(source, Path) else source


def _as_torchvision_source(source: Source):
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return torch.frombuffer(bytearray(source), dtype=torch.uint8)
    return source


def _torchvision():
    with warnings.catch_warnings():           # its deprecation notice: TorchCodec is absent
        warnings.simplefilter("ignore", DeprecationWarning)
        import torchvision.io as tvio
    return tvio


def _first_frame(image: torch.Tensor) -> torch.Tensor:
    return image[0] if image.dim() == 4 else image      # animated GIF / WebP: frame 0


def decode_rgb(source: Source, jpeg: bool = False) -> torch.Tensor:
    """A uint8 3 x H x W RGB tensor from a path, the file's bytes or a 1-D uint8 tensor of
    them (an animated image: its first frame; 16-bit PNG colours brought to 8 bits).
    ``jpeg``: the bytes are known to be JPEG (skips format detection)."""
    if BACKEND == "torchcodec":
        decode = _codec_decode_jpeg if jpeg else _codec_decode
        try:
            image = decode(_as_codec_source(source), mode="RGB")
        except ValueError as e:                   # torchcodec: format not recognised
            raise RuntimeError(str(e)) from None
        return _first_frame(image)
    tvio = _torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decode = tvio.decode_jpeg if jpeg else tvio.decode_image
        image = decode(_as_torchvision_source(source), mode=tvio.ImageReadMode.RGB)
    image = _first_frame(image)
    if image.dtype != torch.uint8:
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _palette_png(source: Source) -> bytes | None:
    """The file's bytes when ``source`` is a palette PNG (colour type 3: VOC's masks), else
    None. Read from the 26-byte header; a missing file is left to the decoder."""
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as f:
                head = f.read(26)
        except OSError:
            return None
        return Path(source).read_bytes() if _is_palette(head) else None
    data = bytes(source.numpy()) if isinstance(source, torch.Tensor) else bytes(source)
    return data if _is_palette(data[:26]) else None


def _is_palette(head: bytes) -> bool:
    return (len(head) >= 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
            and head[25] == 3)


def decode_unchanged(source: Source) -> torch.Tensor:
    """An image as stored: its channels and bit depth (a 16-bit PNG gives uint16), C x H x W;
    for label masks and depth maps. A palette PNG gives its indices (1 x H x W), as
    torchvision's and PIL's decoders do (TorchCodec would expand it to RGB; PIL reads it)."""
    palette = _palette_png(source)
    if palette is not None:
        import io

        import numpy as np
        from PIL import Image
        with Image.open(io.BytesIO(palette)) as img:
            return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())[None]
    if BACKEND == "torchcodec":
        try:
            image = _codec_decode(_as_codec_source(source), mode="UNCHANGED",
                                  output_dtype="auto")
        except ValueError as e:
            raise RuntimeError(str(e)) from None
        return _first_frame(image)
    tvio = _torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        image = tvio.decode_image(_as_torchvision_source(source),
                                  mode=tvio.ImageReadMode.UNCHANGED)
    return _first_frame(image)


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


__all__ = ["BACKEND", "decode_rgb", "decode_unchanged", "write_png"]
