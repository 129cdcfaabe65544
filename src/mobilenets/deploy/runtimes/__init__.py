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
"""

from __future__ import annotations

import importlib
RUNTIMES = ("onnxruntime", "openvino")


def runtime(name: str):
    """The package of runtime ``name``."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    return importlib.import_module(f"{__name__}.{name}")


__all__ = ["RUNTIMES", "runtime"]
