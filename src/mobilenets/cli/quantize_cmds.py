"""``mobilenets quantize``: an int8 ONNX (QDQ) file that ``eval``, ``predict``, ``bench`` take."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deploy.quantize import ACTIVATION_TYPES, CALIBRATE_METHODS
from .arguments import add_overwrite_flag, non_negative_int, output_file, positive_int
from .run_cmds import load_cli_model


def add_quantize_parser(sub) -> None:
    p = sub.add_parser("quantize", help="int8 quantization to an ONNX file (PTQ or QAT)")
    p.add_argument("model", help="saved-model folder, registered name (with --weights), or an "
                   "fp32 .onnx file (--backend onnxruntime only)")
    p.add_argument("--calib", required=True, help="image folder (its train/ if it has one): "
                   "calibration images, and the training data for --method qat")
    p.add_argument("--method", choices=["ptq", "qat"], default="ptq")
    p.add_argument("--backend", choices=["onnxruntime", "pt2e"], default=None,
                   help="quantizer: onnxruntime's quantize_static (ptq default) or torchao "
                   "PT2E (X86InductorQuantizer; qat always uses it)")
    p.add_argument("--out", default=None, help="output .onnx (default: NAME-int8.onnx)")
    add_overwrite_flag(p)
    p.add_argument("--weights", default=None)
    p.add_argument("--num-images", type=positive_int, default=128, help="calibration images")
    p.add_argument("--calibration", choices=CALIBRATE_METHODS,
                   default="percentile", help="how activation ranges are set from the "
                   "calibration images (onnxruntime backend; pt2e files are completed with "
                   "percentile): their 0.001%%-99.999%% percentiles (default), their "
                   "extremes, or by KL divergence")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size (default: model's)")
    p.add_argument("--exclude", default=None, choices=["classifier", "se", "classifier+se"],
                   help="keep these nodes in float (onnxruntime backend)")
    p.add_argument("--activations", choices=ACTIVATION_TYPES, default="uint8",
                   help="activation type (onnxruntime backend; uint8 is faster on x86)")
    p.add_argument("--channel-multiple", type=non_negative_int, default=16, metavar="M",
                   help="pad depthwise channel counts with zero channels to a multiple of M, "
                   "for onnxruntime's fast int8 depthwise kernels; same outputs; 0: off "
                   "(onnxruntime backend)")
    p.add_argument("--pt2e-graph-only", action="store_true", help="pt2e/qat: write the "
                   "quantized graph as torchao leaves it, without quantizing the activations "
                   "it keeps in float (onnxruntime then runs those convolutions in float)")
    p.add_argument("--epochs", type=positive_int, default=2, help="QAT fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="QAT learning rate")
    p.add_argument("--batch-size", type=positive_int, default=32, help="QAT batch size")
    p.add_argument("--max-steps", type=non_negative_int, default=0,
                   help="QAT steps per epoch cap (0: all)")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..deploy.onnx_model import OnnxModel, is_quantized
    backend = args.backend or ("pt2e" if args.method == "qat" else "onnxruntime")
    if args.method == "qat" and backend != "pt2e":
        raise ValueError("--method qat uses torchao's PT2E QAT: use --backend pt2e (or omit it)")
    if args.pt2e_graph_only and backend != "pt2e":
        raise ValueError("--pt2e-graph-only applies to PT2E files (--backend pt2e or --method "
                         "qat); onnxruntime's quantizer already writes a complete QDQ file")
    if not Path(args.calib).is_dir():
        raise FileNotFoundError(f"calibration folder {args.calib} does not exist")
    model = load_cli_model(args.model, args.weights)
    if isinstance(model, OnnxModel) and backend != "onnxruntime":
        raise ValueError(f"{args.model} is an ONNX file: PT2E ({args.method}) needs the PyTorch "
                         f"model (a saved-model folder or a name with --weights)")
    out = output_file(Path(args.out or f"{model.config['name']}-int8.onnx"), args.overwrite,
                      args.model)
    if backend == "onnxruntime":
        from ..deploy.quantize import quantize_onnx
        quantize_onnx(model, out, args.calib, num_images=args.num_images,
                      resolution=args.resolution, activation_type=args.activations,
                      exclude=args.exclude, channel_multiple=args.channel_multiple or None,
                      calibrate_method=args.calibration)
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
          f"{backend}); run it with `mobilenets eval|predict|bench {out}`")
    return 0
