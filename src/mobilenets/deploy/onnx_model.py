"""An exported file in a runtime, usable where our models are (evaluate, predict, bench): an
ONNX file in onnxruntime or OpenVINO (``OnnxModel``), an ExecuTorch ``.pte`` file
(``PteModel``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.transforms import at_resolution
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from .runtimes import FILE_SUFFIX, RUNTIMES, check_runtime_for, runtime as runtime_package

_IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.875,
             "interpolation": "bilinear"}


def _meta(meta: dict, key: str, default=None):
    try:
        return json.loads(meta[key]) if key in meta else default
    except ValueError:
        return default


class OnnxModel:
    """An exported ONNX file in a runtime, used like an eval-mode mobilenets model.

    ``OnnxModel(path, runtime="onnxruntime")`` (or ``"openvino"``; see
    :mod:`mobilenets.deploy.runtimes`). ``model(x)`` takes a float batch N x C x H x W that is
    already resized, cropped and normalised as ``model.preprocess`` says (e.g. with
    ``mobilenets.data.eval_transform(model.preprocess)``), as a torch tensor or numpy array,
    and returns torch tensors (a list for several outputs). ``config`` (with ``name`` and
    ``class_names``), ``preprocess`` and ``num_classes`` come from the file's metadata (or its
    shapes, for files from elsewhere). A file with a fixed batch size runs other batch sizes
    in chunks. ``threads``: the runtime's intra-op threads. ``rewrite``: onnxruntime only,
    apply its x86 passes (:mod:`mobilenets.deploy.runtimes.onnxruntime.rewrite`: same outputs
    for float graphs, within one quantization step for int8 ones); ``rewritten`` says whether
    one changed the graph.
    """

    training = False

    def __init__(self, path: str | Path, threads: int | None = None, rewrite: bool = True,
                 runtime: str = "onnxruntime"):
        self.path = Path(path)
        check_runtime_for(self.path, runtime)
        kind = "ExecuTorch (.pte)" if FILE_SUFFIX[runtime] == ".pte" else "ONNX"
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder; {type(self).__name__} opens a "
                                    f"{kind} file (a saved-model folder opens with "
                                    f"mobilenets.load or mobilenets.open_model)")
        if not self.path.is_file():
            raise FileNotFoundError(f"no {kind} file {self.path}")
        if self.path.stat().st_size == 0:
            raise ValueError(f"{self.path} is empty; export or copy it again")
        self.threads, self.runtime = threads, runtime
        if kind == "ONNX":
            from google.protobuf.message import DecodeError
        else:                         # the runtime raises ValueError for unreadable files
            DecodeError = ()
        try:
            self.session, self.rewritten = runtime_package(runtime).open_session(
                self.path, threads, rewrite)
        except DecodeError as e:      # not a readable ONNX protobuf
            raise ValueError(f"{self.path} is not a readable ONNX file ({str(e)[:300]}); if "
                             f"it is truncated or corrupt, export or copy it again") from e
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        self.config = dict(_meta(meta, "config", {}) or {})
        self.config["name"] = meta.get("model_name") or self.config.get("name") or self.path.stem
        self.config["class_names"] = _meta(meta, "class_names", self.config.get("class_names"))
        if isinstance(self.input_shape[1], int):
            self.config.setdefault("in_chans", self.input_shape[1])
        # a classifier's (N, classes) logits say the class count; a dense map's last
        # dimension is its width, not a class count
        out_shape = list(self.session.get_outputs()[0].shape)
        if (self.config.get("num_classes") is None and len(out_shape) == 2
                and isinstance(out_shape[-1], int)):
            self.config["num_classes"] = out_shape[-1]
        res = self.input_shape[-1] if isinstance(self.input_shape[-1], int) else 224
        default = at_resolution(_IMAGENET, res)
        self.preprocess = _meta(meta, "preprocess", None) or default

    @property
    def num_classes(self) -> int:
        return int(self.config.get("num_classes") or 0)

    @property
    def fixed_resolution(self) -> int | None:
        """The file's fixed input size in pixels, or None if it is symbolic."""
        res = self.input_shape[-1]
        return res if isinstance(res, int) else None

    @property
    def batch_size(self) -> int | None:
        """The file's fixed batch size, or None if the batch is dynamic."""
        b = self.input_shape[0]
        return b if isinstance(b, int) else None

    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        if mode:
            raise RuntimeError(f"an exported model ({self.path.name}) is eval-only and "
                               f"cannot be trained")
        return self

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the session on a float32 array; chunks the batch for fixed-batch files."""
        b = self.batch_size
        if b is None or x.shape[0] == b:
            return self.session.run(self.output_names, {self.input_name: x})
        parts = []
        for i in range(0, x.shape[0], b):
            chunk = x[i:i + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], chunk.dtype)])
            parts.append([o[:n] for o in self.session.run(self.output_names,
                                                          {self.input_name: chunk})])
        return [np.concatenate(outs) for outs in zip(*parts)]

    def check_input(self, x) -> None:
        """Raise ValueError/TypeError naming the file's expected input if ``x`` (a tensor or
        array) cannot be its input: a batch of float images, N x C x H x W."""
        dtype = getattr(x, "dtype", None)
        floating = (x.is_floating_point() if isinstance(x, torch.Tensor)
                    else np.issubdtype(dtype, np.floating))
        expected = ["N"] + [str(d) if isinstance(d, int) else "?" for d in self.input_shape[1:]]
        want = f"{self.path.name} takes float images of shape {' x '.join(expected)}"
        if not floating:
            raise TypeError(f"{want}, normalised as its preprocess says; got dtype {dtype} "
                            f"(convert images with the model's eval transform)")
        if x.ndim != len(self.input_shape):
            raise ValueError(f"{want}; got shape {tuple(x.shape)}")
        for axis in range(1, x.ndim):
            if isinstance(self.input_shape[axis], int) and x.shape[axis] != self.input_shape[axis]:
                raise ValueError(f"{want}; got shape {tuple(x.shape)}")

    def __call__(self, x: torch.Tensor | np.ndarray):
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise TypeError(f"an OnnxModel takes a torch tensor or numpy array, not "
                            f"{type(x).__name__}")
        self.check_input(x)
        arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else x
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.shape[0] == 0:                 # shapes of the outputs, from a one-image run
            outs = [o[:0] for o in self.run_numpy(np.zeros((1,) + arr.shape[1:], np.float32))]
        else:
            outs = self.run_numpy(arr)
        outs = [torch.from_numpy(np.ascontiguousarray(o)) for o in outs]
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, name={self.config['name']!r}, "
                f"input={self.input_shape}, threads={self.threads}, runtime={self.runtime!r})")


class PteModel(OnnxModel):
    """An ExecuTorch ``.pte`` file (written by
    :func:`mobilenets.deploy.runtimes.executorch.export_pte` or ``quantize_pte``) in
    ExecuTorch's runtime with XNNPACK, used like an eval-mode model: :class:`OnnxModel`'s
    interface (preprocessed float input, ``config``, ``preprocess``, ``num_classes``).
    ``threads`` resizes ExecuTorch's thread pool, which every ``.pte`` in the process shares.
    ``metadata`` holds the file's metadata method's entries (JSON-encoded, as ONNX's)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__(path, threads, runtime="executorch")


__all__ = ["RUNTIMES", "OnnxModel", "PteModel"]
