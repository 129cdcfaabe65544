"""A ``.pte`` file run by ExecuTorch's runtime (its Python bindings), behind onnxruntime's
session interface.

ExecuTorch is the runtime Android and iOS apps built on PyTorch ship; its pip wheel runs the
same ``.pte`` files on x86 and ARM Linux and macOS. Our files are lowered to XNNPACK, its CPU
backend; the metadata (name, preprocessing, class names, task, outputs, batch) is a constant
method ``metadata`` returning one JSON object, since a ``.pte`` has no key-value metadata.

Threads: XNNPACK runs on ExecuTorch's one process-wide thread pool, so ``threads`` resizes
that pool (``_unsafe_reset_threadpool``) for every ``.pte`` in the process, not for one
session. A method is not safe to run from two threads at once: calls are serialised by a lock.

The runtime validates inputs only loosely (a dynamic-shape input passes when its element
count fits the bound, ExecuTorch issue 20546): the session checks rank, dtype, every fixed
dimension and the batch bound itself, and says what the file takes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..session_types import Arg, Meta

METADATA_METHOD = "metadata"
INPUT_NAME = "input"




def _flush_c_stdio() -> None:
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):      # no C library to flush (not POSIX)
        pass


@contextlib.contextmanager
def captured_stderr():
    """Collect ExecuTorch's log lines (every error, and its CPU probing) into the yielded
    list's one string instead of the terminal. Its Python bindings write them to Python's
    ``sys.stderr`` where there is one and its C++ code to file descriptor 2, so both are
    redirected."""
    out: list[str] = []
    text = io.StringIO()
    try:
        saved = os.dup(2)
    except OSError:                 # no file descriptor 2 (e.g. a detached process)
        saved = None
    with tempfile.TemporaryFile() as sink, contextlib.redirect_stderr(text):
        if saved is not None:
            _flush_c_stdio()
            os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            if saved is not None:
                _flush_c_stdio()
                os.dup2(saved, 2)
                os.close(saved)
            sink.seek(0)
            out.append(text.getvalue() + sink.read().decode(errors="replace"))


_PORTABLE_LIB = None


def portable_lib():
    """ExecuTorch's runtime bindings, imported once, with its start-up logging (CPU probing
    when the thread pool is created) kept off the terminal."""
    global _PORTABLE_LIB
    if _PORTABLE_LIB is None:
        import warnings
        try:
            with warnings.catch_warnings(), captured_stderr():
                warnings.simplefilter("ignore")      # "experimental API" on import
                from executorch.extension.pybindings import portable_lib as lib
                lib._threadpool_get_thread_count()    # creates the pool
        except ImportError:
            raise ImportError("the executorch runtime needs ExecuTorch: pip install "
                              "'mobilenets[mobile]'") from None
        _PORTABLE_LIB = lib
    return _PORTABLE_LIB


def set_threads(threads: int | None) -> int:
    """Resize ExecuTorch's process-wide thread pool to ``threads`` (None: leave it) and return
    its size. Only between calls: a run in progress on another thread would lose its pool."""
    lib = portable_lib()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, not {threads!r}")
        if lib._threadpool_get_thread_count() != threads:
            with captured_stderr():              # "Resetting threadpool to N threads."
                lib._unsafe_reset_threadpool(threads)
    return lib._threadpool_get_thread_count()


def _log_lines(text: str) -> str:
    """The messages of ExecuTorch's log lines (``[file.cpp:12] message``), joined."""
    lines = [line.split("] ", 1)[-1].strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines)


def read_metadata(module) -> dict:
    """The JSON object a file's ``metadata`` method returns ({} for a .pte from elsewhere)."""
    if METADATA_METHOD not in module.method_names():
        return {}
    (text,) = module.run_method(METADATA_METHOD, ())
    return json.loads(text)


class ExecuTorchSession:
    """The subset of ``onnxruntime.InferenceSession`` that OnnxModel uses (get_inputs,
    get_outputs, get_modelmeta, run) for the ``.pte`` file ``path``, with ``threads`` in
    ExecuTorch's thread pool (process-wide; None leaves it as it is)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        lib = portable_lib()
        self.path = Path(path)
        with captured_stderr() as log:
            try:
                self.module = lib._load_for_executorch(str(self.path))
                methods = self.module.method_names()
            except RuntimeError as e:
                error = e
            else:
                error = None
        if error is not None:
            why = _log_lines(log[0]) or str(error)
            raise ValueError(f"{self.path} is not a readable ExecuTorch program ({why[:400]}); "
                             f"if it is truncated or corrupt, export or copy it again") from None
        if "forward" not in methods:
            raise ValueError(f"{self.path} has no forward method (it has {sorted(methods)}); "
                             f"export it with mobilenets.deploy.runtimes.executorch.export_pte")
        self.threads = set_threads(threads)
        meta = self.module.method_meta("forward")
        if meta.num_inputs() != 1:
            raise ValueError(f"{self.path} takes {meta.num_inputs()} inputs; mobilenets runs "
                             f"files with one image input")
        info = meta.input_tensor_meta(0)
        self.input_dtype = info.dtype()
        self.metadata = read_metadata(self.module)
        batch = self.metadata.get("batch") or {}
        self.dynamic_batch = bool(batch.get("dynamic"))
        # the runtime's bound is the planned size (exports may cap it below the one asked for)
        self.max_batch = int(info.sizes()[0])
        first = "batch" if self.dynamic_batch else self.max_batch
        self._inputs = [Arg(INPUT_NAME, [first, *info.sizes()[1:]])]
        names = [o["name"] for o in self.metadata.get("outputs", [])]
        self._outputs = []
        for i in range(meta.num_outputs()):
            sizes = list(meta.output_tensor_meta(i).sizes())
            if self.dynamic_batch and sizes:
                sizes[0] = "batch"
            self._outputs.append(Arg(names[i] if i < len(names) else f"output_{i}", sizes))
        self._meta = Meta({k: v if isinstance(v, str) else json.dumps(v)
                            for k, v in self.metadata.items()})
        self._lock = threading.Lock()

    def get_inputs(self) -> list[Arg]:
        return self._inputs

    def get_outputs(self) -> list[Arg]:
        return self._outputs

    def get_modelmeta(self) -> Meta:
        return self._meta

    def _check(self, x: np.ndarray) -> None:
        shape = self._inputs[0].shape
        want = (f"{self.path.name} takes float32 arrays of shape "
                f"{' x '.join(str(d) for d in shape)}"
                + (f" (batch 1 to {self.max_batch})" if self.dynamic_batch else ""))
        if x.dtype != np.float32:
            raise TypeError(f"{want}; got dtype {x.dtype}")
        if x.ndim != len(shape) or any(isinstance(d, int) and x.shape[i] != d
                                       for i, d in enumerate(shape)) or x.shape[0] < 1:
            raise ValueError(f"{want}; got shape {tuple(x.shape)}")

    def run(self, output_names, feeds: dict) -> list[np.ndarray]:
        """Outputs ``output_names`` (all if None) for ``feeds`` ({"input": array}), as
        onnxruntime's ``run``. A dynamic-batch file runs batches above its bound in chunks."""
        import torch
        if set(feeds) != {INPUT_NAME}:
            raise ValueError(f"the model's inputs are ['{INPUT_NAME}'], but {sorted(feeds)} "
                             f"were given")
        x = feeds[INPUT_NAME]
        self._check(x)
        names = [o.name for o in self._outputs]
        wanted = [names.index(n) for n in (output_names or names)]
        step = self.max_batch if self.dynamic_batch else x.shape[0]
        parts = []
        with self._lock:
            for i in range(0, x.shape[0], step):
                chunk = torch.from_numpy(np.ascontiguousarray(x[i:i + step]))
                try:
                    outs = self.module.forward((chunk,))
                except RuntimeError as e:
                    raise RuntimeError(f"ExecuTorch could not run {self.path.name} on an "
                                       f"input of shape {tuple(chunk.shape)}: {e}") from None
                parts.append([outs[j].numpy() for j in wanted])
        return [np.concatenate(p) if len(p) > 1 else p[0] for p in zip(*parts)]


__all__ = ["ExecuTorchSession", "INPUT_NAME", "METADATA_METHOD", "captured_stderr",
           "portable_lib", "read_metadata", "set_threads"]
