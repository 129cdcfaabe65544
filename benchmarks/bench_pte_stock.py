"""Is our int8 ``.pte`` as fast as ExecuTorch's stock recipe? One interleaved run per model:
onnxruntime fp32 (our file, the reference of every ratio), our int8 ``.pte``
(:func:`mobilenets.deploy.runtimes.executorch.quantize_pte`, calibrated on the built-in
sample), and the stock recipe the ExecuTorch proposal measured: timm's model with random
weights, ``torch.export``, ExecuTorch's ``XNNPACKQuantizer`` (symmetric, per-channel) with
torchao's ``prepare_pt2e``/``convert_pt2e`` calibrated on random inputs, lowered with the
``XnnpackPartitioner``, run from its file. Our file is timed twice: through the library's
:class:`PteModel` (as users call it) and called directly like the stock one (without the
session's checks and numpy conversions). The stock path is written here from ExecuTorch's
and torchao's APIs alone, not through the library, so it is an independent anchor: a CPU
where both int8 files take the same time caps what the library can reach there.

    .venv/bin/python benchmarks/bench_pte_stock.py                  # V2, V3-Large, B0 at 224 px
    .venv/bin/python benchmarks/bench_pte_stock.py --models mobilenet_v2_100 --repeats 9

Batch 1, ``--threads`` threads in every runtime (ExecuTorch's pool is process-wide).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

try:
    import timm
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
except ImportError as e:
    sys.exit(f"{e}: this benchmark needs timm, torchao and ExecuTorch (pip install -e "
             f"'.[dev]')")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_isa, cpu_model  # noqa: E402

import mobilenets  # noqa: E402
from mobilenets.data import SAMPLE_DIR  # noqa: E402
from mobilenets.deploy import OnnxModel, export_onnx  # noqa: E402
from mobilenets.deploy.compare import format_table, measure  # noqa: E402
from mobilenets.deploy.onnx_model import PteModel  # noqa: E402
from mobilenets.deploy.runtimes.executorch import quantize_pte, set_threads  # noqa: E402
from mobilenets.deploy.runtimes.executorch.session import portable_lib  # noqa: E402

REFERENCE = "onnxruntime fp32 (ours)"


def timm_name(name: str) -> str:
    """timm's spelling of a registered name (``mobilenet_v2_100`` -> ``mobilenetv2_100``)."""
    return name.replace("mobilenet_v", "mobilenetv")


def stock_int8(name: str, resolution: int, calib_batches: int, path: Path):
    """timm's ``name`` as an int8 ``.pte`` at ``path`` by the stock recipe, loaded; returns a
    callable of a batch-1 tensor."""
    torch.manual_seed(0)
    model = timm.create_model(timm_name(name), pretrained=False).eval()
    x = torch.randn(1, 3, resolution, resolution)
    graph = torch.export.export(model, (x,)).module()
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for _ in range(calib_batches):
            prepared(torch.randn(1, 3, resolution, resolution))
    converted = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(torch.export.export(converted, (x,)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(program.buffer)
    return raw_call(path)


def raw_call(path: Path):
    """The ``.pte`` at ``path`` loaded by ExecuTorch's bindings and called directly, without
    the library's session (its checks and numpy conversions)."""
    module = portable_lib()._load_for_executorch(str(path))
    return lambda t: module.forward((t,))[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+",
                   default=["mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0"],
                   help="registered names (timm's are the same without the underscore "
                        "after 'mobilenet')")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--calib-batches", type=int, default=16,
                   help="random inputs the stock recipe calibrates on (16)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    isa = " ".join(cpu_isa())
    print(f"torch {torch.__version__}  timm {timm.__version__}  threads {args.threads}  "
          f"cpu {cpu_model()}  isa {isa}", flush=True)
    results = {}
    x = torch.randn(1, 3, args.resolution, args.resolution,
                    generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            ours = mobilenets.create_model(name).eval()
            onnx32 = export_onnx(ours, Path(tmp) / f"{name}.onnx", resolution=args.resolution)
            pte8 = quantize_pte(ours, Path(tmp) / f"{name}-int8.pte", SAMPLE_DIR,
                                resolution=args.resolution)
            fns = {REFERENCE: OnnxModel(onnx32, threads=args.threads),
                   "executorch int8 (ours)": PteModel(pte8, threads=args.threads),
                   "executorch int8 (ours, raw call)": raw_call(pte8),
                   "executorch int8 (stock, timm)": stock_int8(
                       name, args.resolution, args.calib_batches, Path(tmp) / "stock.pte")}
            with torch.inference_mode():
                res = measure(fns, x, repeats=args.repeats, iters=args.iters,
                              reference=REFERENCE)
            print("\n" + format_table(name, res, args.resolution, args.threads,
                                      reference=REFERENCE), flush=True)
            results[name] = res
    if args.json:
        args.json.write_text(json.dumps({"isa": isa, "settings": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "torch": torch.__version__, "timm": timm.__version__, "models": results},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
