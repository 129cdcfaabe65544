"""``mobilenets quantize``: an int8 ONNX (QDQ) file, or an int8 ExecuTorch ``.pte`` file
(``--format pte``: XNNPACK's quantizer, lowered to XNNPACK), that ``eval``, ``predict``,
``bench`` take."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from ..deploy.bench import time_calls
from ..deploy.quantize import ACTIVATION_TYPES, CALIBRATE_METHODS
from .arguments import (add_deprecated_option, add_format_option, add_model_argument,
                        add_overwrite_flag, add_runtime_option, add_weights_flags,
                        non_negative_int, output_file, positive_int)
from .deploy_cmds import default_output
from .run_cmds import load_cli_model

QUANTIZERS = ("onnxruntime", "pt2e")
# int8 taking more than this share of the float file's time is reported as not faster
SLOW_INT8_RATIO = 0.95


EXCLUDE_PRESETS = ("classifier", "se", "output", "predictions", "none")


def exclude_presets(text: str) -> str:
    """``--exclude``'s value: presets of :data:`EXCLUDE_PRESETS` joined by ``+``."""
    unknown = [p for p in text.split("+") if p not in EXCLUDE_PRESETS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown preset(s) {', '.join(map(repr, unknown))}: use "
            f"{', '.join(EXCLUDE_PRESETS)}, several joined by '+' (e.g. classifier+se)")
    return text


def add_quantize_parser(sub) -> None:
    p = sub.add_parser("quantize", help="int8 quantization to an ONNX file or, with --format "
                       "pte, an ExecuTorch file for XNNPACK (PTQ or QAT)")
    add_model_argument(p, "saved-model folder (e.g. RUN/best), registered name (see "
                       "`mobilenets list`; with --weights), or an fp32 .onnx file (--quantizer "
                       "onnxruntime only; not for --format pte)")
    p.add_argument("--calib", required=True, help="image folder (its train/ if it has one): "
                   "calibration images, and the training data for --method qat; for a "
                   "detector also a YOLO data set (its folder or data YAML: its train split)")
    p.add_argument("--method", choices=["ptq", "qat"], default="ptq",
                   help="post-training quantization (default), or quantization-aware training")
    p.add_argument("--quantizer", choices=QUANTIZERS, default=None,
                   help="onnxruntime's quantize_static (the ptq default) or torchao PT2E "
                   "(X86InductorQuantizer; qat always uses it). --format pte always uses "
                   "PT2E with ExecuTorch's XNNPACKQuantizer")
    add_deprecated_option(p, "--backend", QUANTIZERS, "--quantizer onnxruntime|pt2e")
    add_format_option(p)
    add_runtime_option(p, "the runtime the int8 file is for: its recipe's defaults for "
                       "--activations and --channel-multiple (onnxruntime, the default, or "
                       "openvino; the file is standard QDQ either way); executorch goes with "
                       "--format pte")
    p.add_argument("--out", default=None, help="output file (default: MODEL/model-int8.onnx "
                   "for a saved-model folder, X-int8.onnx beside an X.onnx input, "
                   "NAME-int8.onnx here for a registered name; -int8.pte for --format pte)")
    add_overwrite_flag(p)
    add_weights_flags(p)
    p.add_argument("--no-check-speed", dest="check_speed", action="store_false",
                   help="skip timing the int8 file against the float model afterwards (a "
                   "warning when int8 is not faster)")
    p.add_argument("--num-images", type=positive_int, default=128,
                   help="calibration images (default 128)")
    p.add_argument("--calibration", choices=CALIBRATE_METHODS,
                   default="percentile", help="how activation ranges are set from the "
                   "calibration images (onnxruntime backend; pt2e files are completed with "
                   "percentile): plus or minus a percentile of their absolute values "
                   "(default; --percentile), their extremes, or by KL divergence")
    p.add_argument("--percentile", type=float, default=None, metavar="P",
                   help="--calibration percentile (onnxruntime backend): keep P%% of each "
                   "activation's values inside its int8 range (default 99.999; lower clips "
                   "more and rounds finer)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size (default: model's)")
    p.add_argument("--exclude", default=None, type=exclude_presets, metavar="PRESETS",
                   help="keep these nodes in float (onnxruntime backend): classifier (the "
                   "last linear layer), se (the squeeze-excite gates), output (a dense "
                   "model's last two convolutions: a depth map shows their rounding "
                   "directly), predictions (a detector's prediction convolutions; the "
                   "default for detectors), none, several joined by '+', e.g. "
                   "classifier+se")
    p.add_argument("--refit", action="store_true",
                   help="onnxruntime quantizer: refit each convolution to the float model's "
                   "outputs from the int8 file's own inputs: its weights and bias by least "
                   "squares (AdaQuant-style), its bias alone, or nothing, whichever does best "
                   "on held-out calibration images (slower to make)")
    p.add_argument("--weight-bits", type=int, choices=(7, 8), default=None,
                   help="onnxruntime quantizer: int8 weights in 7 bits (-64..64), which x86 "
                   "CPUs without VNNI need, or the full 8 (default: 7 on an x86 CPU with AVX2 "
                   "but no VNNI, else 8; give 8 for a file made here to run on a VNNI server)")
    p.add_argument("--activations", choices=ACTIVATION_TYPES, default=None,
                   help="activation type (--quantizer onnxruntime; default: the --runtime's "
                   "recipe, uint8, which is faster on x86)")
    p.add_argument("--channel-multiple", type=non_negative_int, default=None, metavar="M",
                   help="pad depthwise channel counts with zero channels to a multiple of M "
                   "(same outputs); 0: off. Default: the --runtime's recipe (16 for "
                   "onnxruntime's fast int8 depthwise kernels, off for openvino)")
    p.add_argument("--pt2e-graph-only", action="store_true", help="pt2e/qat: write the "
                   "quantized graph as torchao leaves it, without quantizing the activations "
                   "it keeps in float (onnxruntime then runs those convolutions in float)")
    p.add_argument("--epochs", type=positive_int, default=2, help="QAT fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="QAT learning rate")
    p.add_argument("--batch-size", type=positive_int, default=32, help="QAT batch size")
    p.add_argument("--max-steps", type=non_negative_int, default=0,
                   help="QAT steps per epoch cap (0: all)")
    p.set_defaults(func=cmd_quantize)


def check_calib(calib: str) -> None:
    """FileNotFoundError unless ``calib`` is a folder or a data YAML (a detector's)."""
    path = Path(calib)
    if not (path.is_dir() or (path.is_file() and path.suffix.lower() in (".yaml", ".yml"))):
        what = "is a file, not a folder of images" if path.is_file() else "does not exist"
        raise FileNotFoundError(f"calibration folder {calib} {what}: give a folder of images "
                                f"(class folders or loose images), or a detector's YOLO data "
                                f"set (its folder or data YAML)")


def cmd_quantize(args: argparse.Namespace) -> int:
    if args.format == "pte" or args.runtime == "executorch":
        return quantize_to_pte(args)
    from ..deploy import OnnxModel
    from ..deploy.onnx_graph import is_quantized
    if args.quantizer and args.backend and args.quantizer != args.backend:
        raise ValueError(f"--quantizer {args.quantizer} and --backend {args.backend} "
                         f"(deprecated) disagree: give --quantizer alone")
    backend = (args.quantizer or args.backend
               or ("pt2e" if args.method == "qat" else "onnxruntime"))
    if args.method == "qat" and backend != "pt2e":
        raise ValueError("--method qat uses torchao's PT2E QAT: use --quantizer pt2e (or omit "
                         "it)")
    if args.percentile is not None and backend != "onnxruntime":
        raise ValueError("--percentile sets onnxruntime's calibration (--quantizer "
                         "onnxruntime); PT2E files are completed with the default percentile")
    if args.refit and backend != "onnxruntime":
        raise ValueError("--refit refits the convolutions of onnxruntime's QDQ files "
                         "(--quantizer onnxruntime); PT2E files are not refitted")
    if args.weight_bits is not None and backend != "onnxruntime":
        raise ValueError("--weight-bits sets onnxruntime's weight range (--quantizer "
                         "onnxruntime); PT2E files take torchao's X86 quantizer's weights")
    if args.pt2e_graph_only and backend != "pt2e":
        raise ValueError("--pt2e-graph-only applies to PT2E files (--quantizer pt2e or "
                         "--method qat); onnxruntime's quantizer already writes a complete "
                         "QDQ file")
    if args.runtime == "eager":
        raise ValueError("--runtime eager runs PyTorch models; an int8 file is for "
                         "--runtime onnxruntime (the default) or openvino")
    check_calib(args.calib)
    if Path(args.model).suffix.lower() == ".pte":
        raise ValueError(f"{args.model} is an ExecuTorch program, which cannot be quantized "
                         f"again: quantize the PyTorch model (a saved-model folder or a name "
                         f"with --weights) with --format pte, or its .onnx export")
    model = load_cli_model(args.model, args.weights, purpose="int8 outputs",
                           allow_download=args.allow_download)
    if isinstance(model, OnnxModel) and backend != "onnxruntime":
        raise ValueError(f"{args.model} is an ONNX file: PT2E ({args.method}) needs the PyTorch "
                         f"model (a saved-model folder or a name with --weights)")
    out = output_file(Path(args.out) if args.out else
                      default_output(args.model, model, "-int8.onnx"), args.overwrite,
                      args.model, ".onnx")
    if backend == "onnxruntime":
        from ..deploy.quantize import quantize_onnx
        given = {}                               # the rest: the target's recipe
        if args.activations is not None:
            given["activation_type"] = args.activations
        if args.channel_multiple is not None:
            given["channel_multiple"] = args.channel_multiple or None
        if args.percentile is not None:
            given["percentile"] = args.percentile
        if args.weight_bits is not None:
            given["reduce_range"] = args.weight_bits == 7
        quantize_onnx(model, out, args.calib, num_images=args.num_images,
                      resolution=args.resolution, exclude=args.exclude,
                      calibrate_method=args.calibration, target=args.runtime or "onnxruntime",
                      refit=args.refit, **given)
    else:
        from ..deploy.quantize_pt2e import export_pt2e_onnx, qat_pt2e, quantize_pt2e
        if args.method == "qat":
            qmodel = qat_pt2e(model, args.calib, epochs=args.epochs, lr=args.lr,
                              batch_size=args.batch_size, resolution=args.resolution,
                              max_steps=args.max_steps)
        else:
            qmodel = quantize_pt2e(model, args.calib, num_images=args.num_images,
                                   resolution=args.resolution)
        export_pt2e_onnx(qmodel, out, None if args.pt2e_graph_only else args.calib,
                         num_images=args.num_images)
    if not is_quantized(out):
        raise ValueError(f"{out} has no quantized operators")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, int8 QDQ, {args.method} via "
          f"{backend}); run it with `mobilenets eval|predict|bench {out}`", flush=True)
    if args.check_speed:
        check_int8_speed(model, out, runtime=args.runtime or "onnxruntime",
                         calib=args.calib)
    return 0


# options that shape onnxruntime's QDQ files, and do not apply to a .pte
_ONNX_ONLY = {"quantizer": "--quantizer", "backend": "--backend", "exclude": "--exclude",
              "activations": "--activations", "channel_multiple": "--channel-multiple",
              "pt2e_graph_only": "--pt2e-graph-only", "percentile": "--percentile",
              "refit": "--refit", "weight_bits": "--weight-bits"}


def quantize_to_pte(args: argparse.Namespace) -> int:
    """``quantize --format pte``: PT2E with ExecuTorch's XNNPACK quantizer (PTQ on --calib's
    images, or QAT on them), lowered to XNNPACK, written as an int8 .pte file."""
    from ..deploy.open import is_exported_file
    if args.format != "pte":
        raise ValueError("--runtime executorch runs .pte files: give --format pte")
    if args.runtime not in (None, "executorch"):
        raise ValueError(f"--format pte files run in executorch, not {args.runtime}: leave "
                         f"--runtime out or give --runtime executorch")
    given = [flag for key, flag in _ONNX_ONLY.items()            # 0 counts as given
             if (v := getattr(args, key, None)) is not None and v is not False and v != "pt2e"]
    if args.calibration != "percentile":
        given.append("--calibration")
    if given:
        raise ValueError(f"{', '.join(given)} apply to ONNX files; --format pte always uses "
                         f"ExecuTorch's XNNPACK quantizer (histogram calibration)")
    if is_exported_file(args.model):
        raise ValueError(f"{args.model} is an exported file: --format pte quantizes the "
                         f"PyTorch model (a saved-model folder or a name with --weights)")
    check_calib(args.calib)
    from ..deploy.runtimes.executorch.export import export_pte
    from ..deploy.runtimes.executorch.quantize import quantize_xnnpack
    model = load_cli_model(args.model, args.weights, purpose="int8 outputs",
                           allow_download=args.allow_download)
    out = output_file(Path(args.out) if args.out else
                      default_output(args.model, model, "-int8.pte"), args.overwrite, args.model,
                      ".pte")
    qat = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
               max_steps=args.max_steps) if args.method == "qat" else {}
    qmodel = quantize_xnnpack(model, args.calib, num_images=args.num_images,
                              resolution=args.resolution, method=args.method, **qat)
    export_pte(qmodel, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, int8 ExecuTorch for XNNPACK, "
          f"{args.method} via PT2E XNNPACKQuantizer); run it with `mobilenets "
          f"eval|predict|bench {out}`", flush=True)
    if args.check_speed:
        check_int8_speed(model, out, runtime="executorch", calib=args.calib)
    return 0


def detector_resize(model) -> str | None:
    """How a detector's input is resized (``stretch`` or ``letterbox``); None for a model that
    is not a detector (a PyTorch model or an opened ONNX file)."""
    from torch import nn

    from ..deploy.detection_export import input_resize, is_detector
    if isinstance(model, nn.Module):
        return input_resize(model) if is_detector(model) else None
    metadata = getattr(model, "metadata", {}) or {}
    if metadata.get("task") != "detection":
        return None
    entry = metadata.get("detection")
    entry = json.loads(entry) if isinstance(entry, str) else (entry or {})
    return entry.get("resize", "stretch")


def check_int8_speed(model, int8_path: Path, budget_s: float = 2.0,
                     runtime: str = "onnxruntime", calib=None) -> float:
    """Time the int8 file against the float model in ``runtime``, in this process, and warn on
    stderr when int8 takes more than SLOW_INT8_RATIO of the float time (small models at small
    resolutions can be slower in int8: the quantize/dequantize work outweighs the faster
    convolutions). The calls alternate between the two, so that a change of machine load hits
    both alike; each side's time is the median of its calls. The input is noise, or for a
    detector one image of ``calib`` prepared as its input. Returns int8 / float time."""
    import tempfile

    import torch

    from ..deploy import OnnxModel, export_onnx, open_model
    int8 = open_model(int8_path, runtime=runtime)
    resolution = int8.fixed_resolution or model.preprocess.get("resolution", 224)
    resize = detector_resize(model)
    image = resize is not None and calib is not None
    if image:
        # a detector's NMS work follows its scores, which noise does not give: time an image
        from ..deploy.quantize import detection_batches
        x = detection_batches(calib, resize, resolution, model.preprocess, 1,
                              int8.batch_size or 1)[0]
    else:
        x = torch.rand(int8.batch_size or 1, model.config.get("in_chans", 3), resolution,
                       resolution, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, OnnxModel):
            fp32 = OnnxModel(model.path, runtime=runtime)
        elif runtime == "executorch":      # the float model lowered the same way
            from ..deploy.runtimes.executorch.export import export_pte
            fp32 = open_model(export_pte(model, Path(tmp) / "fp32.pte", resolution=resolution))
        else:
            fp32 = OnnxModel(export_onnx(model, Path(tmp) / "fp32.onnx", resolution=resolution),
                             runtime=runtime)
        times = {"fp32": [], "int8": []}
        for fn in (fp32, int8):                       # warm-up: first calls allocate
            time_calls(fn, x, 2)
        start = time.perf_counter()
        for round_ in range(30):                      # at least 5 rounds, then within budget
            times["fp32"] += time_calls(fp32, x, 2)
            times["int8"] += time_calls(int8, x, 2)
            if round_ >= 4 and time.perf_counter() - start > budget_s:
                break
    fp32_ms, int8_ms = (1e3 * statistics.median(times[k]) for k in ("fp32", "int8"))
    ratio = int8_ms / fp32_ms
    where = (f"{runtime}, batch {x.shape[0]}, {resolution} px, {torch.get_num_threads()} "
             f"threads, input {'an image of --calib' if image else 'noise'}")
    if ratio > SLOW_INT8_RATIO:
        print(f"warning: the int8 file is not faster than the float model here: {int8_ms:.2f} "
              f"ms against {fp32_ms:.2f} ms per call ({ratio:.2f}x; {where}); small models at "
              f"small resolutions often gain nothing from int8 (check with `mobilenets bench`, "
              f"or keep the float model; --no-check-speed skips this check)", file=sys.stderr)
    else:
        print(f"int8 speed: {int8_ms:.2f} ms against {fp32_ms:.2f} ms for the float model "
              f"({1 / ratio:.2f}x faster; {where})")
    return ratio
