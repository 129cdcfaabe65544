"""``mobilenets export`` (ONNX) and ``mobilenets bench`` (CPU latency of a backend)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .arguments import add_overwrite_flag, non_negative_int, output_file, positive_int
from .run_cmds import is_onnx_file, load_cli_model


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to a self-contained ONNX file")
    p.add_argument("model", help="saved-model folder, or registered name (with --weights)")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", default=None, help="output file (default: NAME.onnx)")
    add_overwrite_flag(p)
    p.add_argument("--weights", default=None)
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="input size (default: model's)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or newer (default 18)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import export_onnx
    model = load_cli_model(args.model, args.weights)
    if not hasattr(model, "state_dict"):
        raise ValueError(f"{args.model} is already an ONNX file")
    out = output_file(Path(args.out or f"{model.config['name']}.onnx"), args.overwrite)
    export_onnx(model, out, resolution=args.resolution, dynamic_batch=args.dynamic_batch,
                opset=args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {args.opset}, "
          f"{'dynamic' if args.dynamic_batch else 'batch 1'}, "
          f"{args.resolution or model.preprocess.get('resolution')} px)")
    return 0


def add_bench_parser(sub) -> None:
    from ..deploy.bench import BACKENDS
    p = sub.add_parser("bench", help="CPU latency and throughput of a model on a backend")
    p.add_argument("model", help="saved-model folder, registered name, or .onnx file")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="default: eager (onnxruntime for a .onnx file; int8 runs an int8 "
                        ".onnx file in onnxruntime, openvino any .onnx file or model)")
    p.add_argument("--weights", default=None)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op threads")
    p.add_argument("--resolution", type=positive_int, default=None)
    p.add_argument("--warmup", type=non_negative_int, default=10)
    p.add_argument("--iters", type=positive_int, default=50)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--profile", action="store_true",
                   help="also print kernel time per operator kind (onnxruntime, int8 and "
                        "openvino backends; --iters profiled calls)")
    p.set_defaults(func=cmd_bench)


def _onnx_backend(args: argparse.Namespace) -> str:
    from ..deploy.bench import ONNX_BACKENDS
    from ..deploy.onnx_model import is_quantized
    backend = args.backend or "onnxruntime"
    if backend == "int8" and not is_quantized(args.model):
        raise ValueError(f"{args.model} is not an int8 (quantized) ONNX file; make one "
                         f"with `mobilenets quantize MODEL --calib DIR`")
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"{args.model} is an ONNX file: it runs on the "
                         f"{', '.join(ONNX_BACKENDS)} backends, not {backend}")
    return backend


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np
    import torch

    from ..deploy import OnnxModel
    from ..deploy.bench import BackendError, bench_model, exported_model, runtime_of
    from ..deploy.openvino_session import profile_openvino
    from ..deploy.ort_profile import format_profile, profile_onnx
    backend, resolution = args.backend or "eager", args.resolution
    run_as = backend
    if is_onnx_file(args.model):
        backend = _onnx_backend(args)
        run_as = runtime_of(backend)
        model = OnnxModel(args.model, threads=args.threads, runtime=run_as)
        fixed, res = model.batch_size, model.fixed_resolution
        if fixed is not None and fixed != args.batch:
            raise ValueError(f"{args.model} has a fixed batch size of {fixed}; use --batch "
                             f"{fixed} or export with --dynamic-batch")
        if res is not None:
            if resolution and res != resolution:
                raise ValueError(f"{args.model} takes {res} px inputs, not {resolution}")
            resolution = res
    else:
        model = load_cli_model(args.model, args.weights)
    if args.profile and run_as not in ("onnxruntime", "openvino"):
        raise ValueError("--profile times onnxruntime's or OpenVINO's kernels: use it with "
                         "--backend onnxruntime or openvino, or on a .onnx file")
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
        r["backend"] = backend
        if args.profile:
            x = np.random.default_rng(0).standard_normal(
                (r["batch"], model.config.get("in_chans", 3), r["resolution"], r["resolution"]),
                dtype=np.float32)
            profile = profile_openvino if run_as == "openvino" else profile_onnx
            r["profile"] = profile(model.path, x, args.iters, args.warmup, args.threads)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']}  {backend}  batch {r['batch']}  {r['resolution']} px  "
          f"{r['threads'] or 'default'} threads: median {r['median_ms']:.2f} ms  "
          f"p90 {r['p90_ms']:.2f} ms  {r['images_per_s']:.1f} images/s")
    if args.profile:
        print(format_profile(r["profile"]))
    return 0
