"""``mobilenets export`` (ONNX, or an ExecuTorch ``.pte``) and ``mobilenets bench`` (CPU latency
of a model on a runtime, at a precision)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .arguments import (MODEL_HELP, add_deprecated_option, add_format_option,
                        add_model_argument, add_overwrite_flag, add_precision_option,
                        add_runtime_option, add_weights_flags, non_negative_int, output_file,
                        positive_int)
from ..deploy.open import is_exported_file
from .run_cmds import load_cli_model


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to a self-contained ONNX file, or an "
                       "ExecuTorch .pte file lowered to XNNPACK (--format pte)")
    add_model_argument(p, "saved-model folder (e.g. RUN/best), or registered name (see "
                       "`mobilenets list`; random weights unless --weights)")
    add_format_option(p)
    p.add_argument("--out", default=None, help="output file (default: MODEL/model.onnx for a "
                   "saved-model folder, NAME.onnx here for a registered name; .pte for "
                   "--format pte)")
    add_overwrite_flag(p)
    add_weights_flags(p)
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size in pixels (default: the model's)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension "
                   "(--format pte: 1 to --max-batch, larger batches run in chunks)")
    p.add_argument("--max-batch", type=positive_int, default=None,
                   help="--format pte with --dynamic-batch: the largest batch the file's memory "
                   "is planned for (default 8)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 18 or newer (default "
                   "18)")
    p.add_argument("--conf", type=float, default=None, help="detectors: lowest box score the "
                   "graph keeps (--format pte: the default of the NMS after the program; "
                   "default: the model's score_thresh)")
    p.add_argument("--iou", type=float, default=None, help="detectors: the graph's NMS IoU "
                   "(default: the model's nms_thresh)")
    p.add_argument("--max-det", type=positive_int, default=None, help="detectors: boxes per "
                   "image, the padded outputs' size (default: the model's detections_per_img)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import export_onnx
    if is_exported_file(args.model):
        raise ValueError(f"{args.model} is already an exported file; export the PyTorch model "
                         f"(a saved-model folder or a registered name)")
    pte = args.format == "pte"
    if pte and args.opset is not None:
        raise ValueError("--opset applies to ONNX files, not to --format pte")
    if args.max_batch is not None and not (pte and args.dynamic_batch):
        raise ValueError("--max-batch applies to --format pte with --dynamic-batch")
    model = load_cli_model(args.model, args.weights, allow_download=args.allow_download)
    out = output_file(Path(args.out) if args.out else
                      default_output(args.model, model, f".{args.format}"), args.overwrite,
                      args.model, f".{args.format}")
    px = args.resolution or model.preprocess.get("resolution")
    detection = {k: v for k, v in (("score_thresh", args.conf), ("nms_thresh", args.iou),
                                   ("max_det", args.max_det)) if v is not None}
    if pte:
        from ..deploy.runtimes.executorch import export_pte
        from ..deploy.runtimes.executorch.export import DEFAULT_MAX_BATCH
        export_pte(model, out, resolution=args.resolution, dynamic_batch=args.dynamic_batch,
                   max_batch=args.max_batch or DEFAULT_MAX_BATCH, **detection)
        batch = (f"batch 1 to {args.max_batch or DEFAULT_MAX_BATCH}" if args.dynamic_batch
                 else "batch 1")
        nms = ("; NMS runs after the program, as its metadata says" if
               getattr(model, "task", None) == "detection" else "")
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, ExecuTorch, XNNPACK fp32, "
              f"{batch}, {px} px{nms})")
        return 0
    opset = args.opset if args.opset is not None else 18
    export_onnx(model, out, resolution=args.resolution, dynamic_batch=args.dynamic_batch,
                opset=opset, **detection)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {opset}, "
          f"{'dynamic' if args.dynamic_batch else 'batch 1'}, {px} px)")
    return 0


def default_output(model_arg: str, model, suffix: str) -> Path:
    """Where export (``suffix`` .onnx or .pte) and quantize (-int8.onnx, -int8.pte) write
    without --out: beside
    the input, so two runs never share a file: into a saved-model folder (RUN/best ->
    RUN/best/model.onnx), beside an .onnx file (x.onnx -> x-int8.onnx); a registered name
    (random or --weights weights) writes NAME.onnx in the current folder."""
    from ..weights.saved import is_saved_model
    source = Path(model_arg)
    if is_exported_file(model_arg):
        return source.with_name(source.stem + suffix)
    if is_saved_model(source):
        return source / f"model{suffix}"
    return Path(f"{model.config['name']}{suffix}")


# bench's former --backend values, as the runtime, precision and --optimize they stand for
_BACKEND_ALIASES = {"eager": ("eager", None, "none"), "fused": ("eager", None, "fuse"),
                    "compile": ("eager", None, "compile"),
                    "onnxruntime": ("onnxruntime", None, "none"),
                    "int8": ("onnxruntime", "int8", "none"),
                    "openvino": ("openvino", None, "none")}
OPTIMIZE = ("none", "fuse", "compile")


def backend_for(runtime: str, precision: str, optimize: str = "none") -> str:
    """The deploy.bench backend name for a runtime, precision and (eager only) optimisation."""
    if precision == "int8":
        if runtime == "eager":
            raise ValueError("--precision int8 runs an int8 .onnx file in onnxruntime or "
                             "openvino, or an int8 .pte file in executorch: make one with "
                             "`mobilenets quantize MODEL --calib DIR [--format pte]`, then "
                             "`mobilenets bench FILE`")
        return "int8" if runtime == "onnxruntime" else runtime
    if runtime == "eager":
        return {"none": "eager", "fuse": "fused", "compile": "compile"}[optimize]
    return runtime


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="CPU latency and throughput of a model on a runtime")
    add_model_argument(p, MODEL_HELP)
    add_runtime_option(p, "what runs MODEL: eager (PyTorch; the default for a PyTorch model), "
                       "onnxruntime (the default for a .onnx file; a PyTorch model is exported "
                       "first), openvino, or executorch (the default for a .pte file; a "
                       "PyTorch model is lowered to a .pte first)")
    add_precision_option(p)
    p.add_argument("--optimize", choices=OPTIMIZE, default=None,
                   help="--runtime eager only: none (default), fuse (BatchNorm folded into "
                   "the convolutions) or compile (fused, then torch.compile)")
    add_deprecated_option(p, "--backend", tuple(_BACKEND_ALIASES),
                          "--runtime eager|onnxruntime|openvino, --precision int8, "
                          "--optimize fuse|compile")
    add_weights_flags(p)
    p.add_argument("--batch", type=positive_int, default=1, help="images per call (default 1)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="intra-op threads (default: the runtime's)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size in pixels (default: the model's)")
    p.add_argument("--width-mult", type=float, default=None,
                   help="a registered MODEL at this channel width multiplier (default: the "
                   "name's), as `profile --width-mult`")
    p.add_argument("--warmup", type=non_negative_int, default=10,
                   help="untimed calls first (default 10)")
    p.add_argument("--iters", type=positive_int, default=50, help="timed calls (default 50)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--profile", action="store_true",
                   help="also print kernel time per operator kind (onnxruntime and openvino "
                        "runtimes; --iters profiled calls; not executorch)")
    g = p.add_argument_group("every runtime side by side (--all-runtimes)")
    g.add_argument("--all-runtimes", action="store_true",
                   help="time the PyTorch model MODEL in eager PyTorch, onnxruntime, OpenVINO "
                        "and ExecuTorch, fp32 and int8, batch 1, interleaved in one run; one "
                        "table, ratios against onnxruntime fp32")
    g.add_argument("--repeats", type=positive_int, default=None,
                   help="--all-runtimes: interleaved rounds of --iters calls (default 5)")
    g.add_argument("--calib", default=None, metavar="DIR",
                   help="--all-runtimes: int8 calibration images (default: the built-in "
                        "sample)")
    g.add_argument("--num-images", type=positive_int, default=None,
                   help="--all-runtimes: calibration images (default 128)")
    g.add_argument("--no-openvino", action="store_true",
                   help="--all-runtimes: leave OpenVINO out")
    p.set_defaults(func=cmd_bench)


def cmd_bench_all(args: argparse.Namespace) -> int:
    """``bench MODEL --all-runtimes``: :func:`mobilenets.deploy.compare.compare_runtimes`
    for one PyTorch model, printed as one table (or one JSON object)."""
    import sys

    from ..data import SAMPLE_DIR
    from ..deploy.compare import compare_runtimes, format_table
    if is_exported_file(args.model):
        raise ValueError(f"--all-runtimes exports and quantizes a PyTorch model for every "
                         f"runtime, and {args.model} is already an exported file: give the "
                         f"saved-model folder or registered name it came from")
    given = [flag for flag, value in (("--runtime", args.runtime), ("--precision",
             args.precision), ("--optimize", args.optimize), ("--backend", args.backend),
             ("--profile", args.profile or None)) if value is not None]
    if given:
        raise ValueError(f"--all-runtimes runs every runtime at both precisions: leave out "
                         f"{', '.join(given)}")
    if args.batch != 1:
        raise ValueError("--all-runtimes times batch 1 (the int8 .pte file has a fixed "
                         "batch of 1): leave out --batch")
    calib = Path(args.calib) if args.calib else SAMPLE_DIR
    if not calib.is_dir():
        raise FileNotFoundError(f"calibration folder {calib} does not exist")
    model = load_cli_model(args.model, args.weights, allow_download=args.allow_download,
                           width_mult=args.width_mult)
    r = compare_runtimes(model, calib, resolution=args.resolution, threads=args.threads,
                         num_images=args.num_images or 128, warmup=args.warmup,
                         repeats=args.repeats or 5, iters=args.iters,
                         openvino=not args.no_openvino,
                         log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    if args.width_mult is not None:
        r["width_mult"] = args.width_mult
        r["model"] = f"{r['model']} at width {args.width_mult:g}"
    if args.json:
        print(json.dumps(r))
        return 0
    print(format_table(r["model"], r["results"], r["resolution"], r["threads"]))
    for runtime, why in r["skipped"].items():
        print(f"  {runtime}: {why}")
    return 0


def bench_options(args: argparse.Namespace) -> tuple[str, str, str]:
    """(runtime, precision, optimize) from --runtime/--precision/--optimize, or from the
    deprecated --backend; the defaults: a .onnx file in onnxruntime and a .pte file in
    executorch at its own precision, a PyTorch model eager in fp32."""
    runtime, precision, optimize = args.runtime, args.precision, args.optimize
    if args.backend is not None:
        given = [f for f, v in (("--runtime", runtime), ("--precision", precision),
                                ("--optimize", optimize)) if v is not None]
        if given:
            raise ValueError(f"--backend (deprecated) and {', '.join(given)} both given: "
                             f"use {', '.join(given)} alone")
        runtime, precision, optimize = _BACKEND_ALIASES[args.backend]
    from ..deploy.runtimes import check_runtime_for, runtimes_for
    onnx_file = is_exported_file(args.model)
    runtime = runtime or (runtimes_for(args.model)[0] if onnx_file else "eager")
    optimize = optimize or "none"
    if optimize != "none" and runtime != "eager":
        raise ValueError(f"--optimize {optimize} applies to --runtime eager (PyTorch), not "
                         f"{runtime}")
    if onnx_file:
        if runtime == "eager":
            raise ValueError(f"{args.model} is an exported file: it runs with --runtime "
                             f"{' or '.join(runtimes_for(args.model))}, not eager")
        check_runtime_for(args.model, runtime)
        quantized = is_quantized_file(args.model)
        if precision == "int8" and not quantized:
            raise ValueError(f"{args.model} is not an int8 (quantized) file; make one "
                             f"with `mobilenets quantize MODEL --calib DIR`")
        if precision == "fp32" and quantized:
            raise ValueError(f"{args.model} is an int8 (quantized) file, not fp32; "
                             f"give --precision int8 or leave it out")
        precision = "int8" if quantized else "fp32"
    elif precision == "int8":
        raise ValueError(f"--precision int8 runs an int8 .onnx file, and {args.model} is a "
                         f"PyTorch model: make one with `mobilenets quantize {args.model} "
                         f"--calib DIR`, then `mobilenets bench FILE.onnx`")
    precision = precision or "fp32"
    return runtime, precision, optimize


def is_quantized_file(path) -> bool:
    """Whether the exported file ``path`` is int8: quantized operators in an ONNX graph, a
    ``quantization`` entry in a ``.pte`` file's metadata."""
    if Path(path).suffix.lower() == ".pte":
        from ..deploy import open_model
        return "quantization" in open_model(path).metadata
    from ..deploy.onnx_graph import is_quantized
    return is_quantized(path)


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np
    import torch

    from ..deploy import OnnxModel, open_model
    from ..deploy.bench import BackendError, bench_model, exported_model, runtime_of
    from ..deploy.runtimes.openvino import profile as profile_openvino
    from ..deploy.runtimes.onnxruntime import format_profile
    from ..deploy.runtimes.onnxruntime import profile as profile_onnx
    if args.all_runtimes:
        return cmd_bench_all(args)
    only = [flag for flag, value in (("--repeats", args.repeats), ("--calib", args.calib),
            ("--num-images", args.num_images), ("--no-openvino", args.no_openvino or None))
            if value is not None]
    if only:
        raise ValueError(f"{', '.join(only)} apply to --all-runtimes")
    runtime, precision, optimize = bench_options(args)
    backend, resolution = backend_for(runtime, precision, optimize), args.resolution
    run_as = runtime_of(backend)
    if is_exported_file(args.model):
        for flag, value in (("--weights", args.weights), ("--width-mult", args.width_mult)):
            if value is not None:
                raise ValueError(f"{flag} does not apply to the exported file {args.model}")
        model = open_model(args.model, runtime=run_as, threads=args.threads)
        fixed, res = model.batch_size, model.fixed_resolution
        if fixed is not None and fixed != args.batch:
            raise ValueError(f"{args.model} has a fixed batch size of {fixed}; use --batch "
                             f"{fixed} or export with --dynamic-batch")
        if res is not None:
            if resolution and res != resolution:
                raise ValueError(f"{args.model} takes {res} px inputs, not {resolution}: "
                                 f"bench it at its own size (leave --resolution out), or "
                                 f"export it again at {resolution} px")
            resolution = res
    else:
        model = load_cli_model(args.model, args.weights, allow_download=args.allow_download,
                               width_mult=args.width_mult)
    if args.profile and run_as not in ("onnxruntime", "openvino"):
        raise ValueError("--profile times onnxruntime's or OpenVINO's kernels: use it with "
                         "--runtime onnxruntime or openvino, or on a .onnx file (the "
                         "ExecuTorch wheel has no event tracer for .pte files)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile and not isinstance(model, OnnxModel):   # one export, timed and profiled
            resolution = resolution or model.preprocess.get("resolution", 224)
            shape = (args.batch, model.config.get("in_chans", 3), resolution, resolution)
            model = exported_model(model, torch.empty(shape), args.threads, tmp,
                                      runtime=run_as)
        try:
            r = bench_model(model, run_as, args.batch, resolution, args.threads, args.warmup,
                            args.iters)
        except BackendError as e:
            raise ValueError(str(e)) from None
        r.update(backend=backend, runtime=runtime, precision=precision)
        if args.width_mult is not None:
            r["width_mult"] = args.width_mult
        if args.profile:
            x = np.random.default_rng(0).standard_normal(
                (r["batch"], model.config.get("in_chans", 3), r["resolution"], r["resolution"]),
                dtype=np.float32)
            profile = profile_openvino if run_as == "openvino" else profile_onnx
            r["profile"] = profile(model.path, x, args.iters, args.warmup, args.threads)
    if args.json:
        print(json.dumps(r))
        return 0
    what = f"{runtime} {precision}" + (f" {optimize}" if optimize != "none" else "")
    width = f" at width {args.width_mult:g}" if args.width_mult is not None else ""
    print(f"{r['model']}{width}  {what}  batch {r['batch']}  {r['resolution']} px  "
          f"{r['threads'] or 'default'} threads: median {r['median_ms']:.2f} ms  "
          f"p90 {r['p90_ms']:.2f} ms  {r['images_per_s']:.1f} images/s")
    if args.profile:
        print(format_profile(r["profile"]))
    return 0
