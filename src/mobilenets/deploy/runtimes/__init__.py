"""Runtimes that run exported files: one folder each, behind one small interface.

Each runtime package gives:

- ``open_session(path, threads=None, rewrite=True) -> (session, rewritten)``: a session with
  the subset of ``onnxruntime.InferenceSession`` that :class:`~mobilenets.deploy.OnnxModel`
  uses (``get_inputs()`` / ``get_outputs()`` with ``.name`` and ``.shape``,
  ``get_modelmeta().custom_metadata_map``, ``run(output_names, feeds)``), and whether one of
  the runtime's own graph passes changed the file for it;
- ``profile(path, x, iters, warmup)``: time by layer type and kernel, as rows for ``bench
  --profile``.

A runtime's graph passes (onnxruntime's x86 rewrites, channel padding, QDQ completion) live
in its folder. Runtimes are imported when first used, so an uninstalled one costs nothing.
onnxruntime and openvino read ``.onnx`` files; executorch reads ``.pte`` files (ExecuTorch
programs lowered to XNNPACK, written by its folder's ``export`` and ``quantize``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

RUNTIMES = ("onnxruntime", "openvino", "executorch")
# the file each runtime reads, by suffix; the first runtime of a suffix is its default
FILE_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".onnx", "executorch": ".pte"}


def runtime(name: str):
    """The package of runtime ``name``."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def runtimes_for(path) -> tuple[str, ...]:
    """The runtimes that run the file ``path`` (by its suffix), its default first; () for
    other files."""
    suffix = Path(path).suffix.lower()
    return tuple(name for name in RUNTIMES if FILE_SUFFIX[name] == suffix)


def check_runtime_for(path, runtime: str) -> None:
    """Raise ValueError, naming the runtimes to use, if ``runtime`` cannot run ``path``."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    fits = runtimes_for(path)
    if fits and runtime not in fits:
        kind = "an ExecuTorch (.pte)" if FILE_SUFFIX[fits[0]] == ".pte" else "an ONNX"
        other = ("export it with --format pte (mobilenets.deploy.runtimes.executorch."
                 "export_pte)" if runtime == "executorch" else "export it as ONNX (the "
                 "default --format)")
        raise ValueError(f"{path} is {kind} file: it runs with runtime {' or '.join(fits)}, "
                         f"not {runtime}; for {runtime}, {other}")


__all__ = ["FILE_SUFFIX", "RUNTIMES", "check_runtime_for", "runtime", "runtimes_for"]
