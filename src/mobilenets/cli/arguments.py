"""Argument types shared by the commands: numbers checked when the command line is parsed,
so a bad value is a usage error naming the option, not a traceback later; and the check of
an output file before anything is computed; and the option definitions every command shares
(the model and its weights, --runtime, --format, --precision), so one word means one thing
on every command."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..deploy.runtimes import RUNTIMES as FILE_RUNTIMES

# The deployment vocabulary of every command: what runs a model, the file kind it is written
# to, and the number format of its weights and activations.
RUNTIMES = ("eager", *FILE_RUNTIMES)      # eager: PyTorch in this process
FORMATS = ("onnx", "pte")      # pte: an ExecuTorch program lowered to XNNPACK
PRECISIONS = ("fp32", "int8")
MODEL_HELP = ("saved-model folder (e.g. RUN/best), registered name (see `mobilenets list`; "
              "random weights unless --weights), or .onnx or .pte file")


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, counts, threads, top-k)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def counted(n: int, word: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker processes, warm-up calls, caps where 0 means none)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


# The files of a saved-model folder: never an output beside it
MODEL_FOLDER_FILES = ("model.safetensors", "config.json")


def output_file(out: Path, overwrite: bool, source: str | None = None,
                suffix: str | None = None) -> Path:
    """``out`` as a file to write: not a folder, not the input ``source`` nor a file of its
    saved-model folder, ending in ``suffix`` (the format written, so that it opens again by
    its name), and not an existing file unless ``overwrite`` (so a second export never
    replaces the first by accident)."""
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of the file to write")
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise ValueError(f"--out {out} is the input model; give another path")
    if (source is not None and Path(source).is_dir() and out.name in MODEL_FOLDER_FILES
            and out.resolve().parent == Path(source).resolve()):
        raise ValueError(f"--out {out} is a file of the input model {source}; give another "
                         f"path (e.g. {Path(source) / 'model.onnx'})")
    if suffix is not None and out.suffix.lower() != suffix:
        other = {".onnx": " (--format pte writes .pte)", ".pte": " (--format onnx writes .onnx)"}
        raise ValueError(f"--out {out} does not end in {suffix}, the format written: files are "
                         f"opened by their suffix; give --out {out.with_suffix(suffix).name}"
                         f"{other.get(suffix, '')}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it, or give "
                         f"another --out")
    return out


def add_overwrite_flag(p) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def add_model_argument(p, help: str = MODEL_HELP) -> None:
    """The positional MODEL."""
    p.add_argument("model", help=help)


def add_weights_flags(p, download: bool = True) -> None:
    """--weights for a registered name, and --allow-download for its 'torchvision' / 'timm'
    values (which otherwise read only the local cache)."""
    p.add_argument("--weights", default=None, metavar="FILE|torchvision|timm",
                   help="weights of a registered MODEL: a checkpoint file or folder, or "
                   "'torchvision' / 'timm' (that library's file, from its local cache)")
    if download:
        p.add_argument("--allow-download", action="store_true",
                       help="download --weights torchvision|timm when not in the local cache")


def add_runtime_option(p, help: str | None = None) -> None:
    """--runtime: what runs the model (eager: PyTorch in this process)."""
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=help or "what runs MODEL: eager (PyTorch) for a PyTorch model, "
                   "onnxruntime (default) or openvino for a .onnx file, executorch for a .pte "
                   "file")


def add_format_option(p, help: str | None = None) -> None:
    """--format: the kind of file written."""
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help=help or "file format to write: onnx (default; onnxruntime, openvino) "
                   "or pte (ExecuTorch with XNNPACK, the phone runtime)")


def add_precision_option(p, help: str | None = None) -> None:
    """--precision: fp32 or int8 (an int8 model is a quantized .onnx file)."""
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help=help or "fp32, or int8 (a .onnx or .pte file written by "
                   "`mobilenets quantize`); default: the file's own")


class DeprecatedOption(argparse.Action):
    """An old spelling kept for one release: stores its value, and warns (a
    DeprecationWarning, and a note on stderr, which a user sees) naming the new spelling."""

    def __init__(self, option_strings, dest, replacement: str = "", **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        message = (f"{option_string} is deprecated and will be removed in the next release; "
                   f"use {self.replacement}")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        print(f"note: {message}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_option(p, flag: str, choices, replacement: str) -> None:
    p.add_argument(flag, choices=choices, default=None, action=DeprecatedOption,
                   replacement=replacement, help=f"deprecated: use {replacement}")


__all__ = ["FORMATS", "MODEL_HELP", "PRECISIONS", "RUNTIMES", "DeprecatedOption",
           "add_deprecated_option", "add_format_option", "add_model_argument",
           "add_overwrite_flag", "add_precision_option", "add_runtime_option",
           "add_weights_flags", "non_negative_int", "output_file", "positive_int"]
