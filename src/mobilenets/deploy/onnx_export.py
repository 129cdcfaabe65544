"""Export a model to one self-contained ONNX file (torch.onnx's dynamo-based exporter).

The file carries the model's name, config, class names and eval preprocessing as JSON in
``metadata_props``, so :class:`~mobilenets.deploy.OnnxModel` (and ``mobilenets eval``,
``predict`` and ``bench``) can use it without the Python model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..tasks import TASKS
from ..version import __version__
from ..weights.saved import check_class_names
from .detection_export import OUTPUTS as DETECTION_OUTPUTS
from .detection_export import (TRANSLATIONS, detection_graph, detection_metadata,
                               detection_options, is_detector)
from .fuse import fuse as fuse_model
from .onnx_graph import node_attrs
from .quantized_model import QuantizedModel

MIN_OPSET = 18


def _json(value) -> str:
    return json.dumps(value, default=str)


def output_names(model: nn.Module, task: str = "classification") -> list[str]:
    """The graph's output names, as ``task`` describes them (e.g. ``logits``)."""
    return [name for name, _ in task_outputs(model, task)]


def task_outputs(model: nn.Module, task: str = "classification") -> list[tuple[str, str]]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]().outputs(model)


def export_preprocess(model: nn.Module, resolution: int) -> dict:
    """The model's eval preprocessing, moved to ``resolution`` with the same crop ratio."""
    pre = dict(model.preprocess)
    if pre.get("resolution") != resolution:
        pre["resolution"] = resolution
        if pre.get("crop_pct"):
            pre["resize"] = int(round(resolution / pre["crop_pct"]))
    return pre


def named_outputs(model: nn.Module, sample, task: str) -> list[tuple[str, str]]:
    """The graph's outputs (name, meaning). A model whose forward returns a dict (torchvision's
    segmentation convention: ``{"out", "aux"}``) names them by its keys, described by the task
    where it is registered; any other model by its task (:func:`task_outputs`)."""
    if not isinstance(sample, dict):
        return task_outputs(model, task)
    meanings = dict(task_outputs(model, task)) if task in TASKS else {}
    return [(k, meanings.get(k, f"{task} output {k!r}, N x "
                                f"{' x '.join(map(str, v.shape[1:]))}")) for k, v in sample.items()]


def metadata(model: nn.Module, resolution: int, fused: bool,
             task: str = "classification",
             outputs: list[tuple[str, str]] | None = None) -> dict[str, str]:
    config = dict(model.config, resolution=resolution)     # the file's input size
    for key in ("weights", "backbone_weights"):    # a path on this machine: its name only
        if isinstance(config.get(key), str) and os.path.isabs(config[key]):
            config[key] = os.path.basename(config[key].rstrip("/"))
    outputs = [{"name": n, "meaning": m}
               for n, m in (outputs if outputs is not None else task_outputs(model, task))]
    return {"model_name": str(config.get("name", type(model).__name__)),
            "preprocess": _json(export_preprocess(model, resolution)),
            "class_names": _json(config.get("class_names")),
            "config": _json(config), "fused": _json(fused), "task": task,
            "outputs": _json(outputs), "producer": f"mobilenets {__version__}"}


def value_shapes(proto) -> dict[str, list]:
    """Tensor name -> inferred shape (ints, symbolic names, None where unknown), from
    ``onnx.shape_inference`` over the graph's inputs, outputs and intermediate values."""
    import onnx
    graph = onnx.shape_inference.infer_shapes(proto).graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                     for d in v.type.tensor_type.shape.dim]
            for v in list(graph.value_info) + list(graph.input) + list(graph.output)}


def mean_to_global_pool(proto) -> int:
    """Replace each ReduceMean over the two spatial axes of a 4-D tensor (keepdims) by the
    equal GlobalAveragePool; returns how many. torch's exporter writes the global pooling of
    squeeze-excite and of the head as ReduceMean, which onnxruntime runs neither in int8 nor
    in its blocked NCHWc layout (each one cost a reorder of the feature map)."""
    from onnx import numpy_helper
    consts = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    ranks = {name: len(shape) for name, shape in value_shapes(proto).items()}
    count = 0
    for node in proto.graph.node:
        attrs = node_attrs(node)
        axes = consts.get(node.input[1]) if len(node.input) > 1 else attrs.get("axes")
        if (node.op_type != "ReduceMean" or ranks.get(node.input[0]) != 4 or axes is None
                or attrs.get("keepdims", 1) != 1 or sorted(int(a) % 4 for a in axes) != [2, 3]):
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        count += 1
    used = {i for n in proto.graph.node for i in n.input}
    unused = [i for i in proto.graph.initializer if i.name not in used]
    for init in unused:
        proto.graph.initializer.remove(init)
    return count


def _check_exportable(model) -> None:
    """Raise TypeError/ValueError, saying what to do, for models this export cannot write."""
    if isinstance(model, QuantizedModel):
        raise TypeError("this is a PT2E int8 model: write it with "
                        "mobilenets.deploy.quantize_pt2e.export_pt2e_onnx")
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError("export_onnx() takes a model made by mobilenets.create_model or load")
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers()
                                                      if b.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(f"export_onnx() writes float32 files and this model holds "
                         f"{sorted(map(str, dtypes - {torch.float32}))}: call model.float() "
                         f"first (quantize the float32 file for int8)")
    check_class_names(model.config.get("class_names"), getattr(model, "num_classes", None))


def export_onnx(model: nn.Module, path: str | Path, *, resolution: int | None = None,
                dynamic_batch: bool = False, opset: int = MIN_OPSET, fuse: bool = True,
                task: str | None = None, **detection) -> Path:
    """Write ``model`` (BatchNorm folded when ``fuse``) to the ONNX file ``path``.

    ``task`` (a name in ``mobilenets.tasks.TASKS``; default: the model's ``task`` attribute,
    else ``"classification"``) names the outputs and describes them in the metadata
    (``task``, ``outputs``: name and meaning of each). A model returning a dict of outputs
    (the segmentation heads' ``{"out", "aux"}``) gets one graph output per key, named by it.

    The input is ``input`` of shape (batch, C, resolution, resolution); the batch is 1, or a
    symbolic ``batch`` with ``dynamic_batch``. Weights are stored inside the file (no external
    ``.data``). Spatial means are written as GlobalAveragePool (:func:`mean_to_global_pool`).
    The file is checked with ``onnx.checker`` before it replaces ``path`` (so an existing
    file survives a failed export). The metadata's ``fused`` says whether the graph is free of
    BatchNormalization; torch's exporter folds it in eval mode even with ``fuse=False``.

    A detector (task ``detection`` with an ``export_forward``) is written with its
    post-processing in the graph (:mod:`.detection_export`: decoding, NMS as ONNX
    ``NonMaxSuppression``, padded outputs ``boxes``, ``scores``, ``labels``,
    ``num_detections``); ``detection`` takes its options ``score_thresh``, ``nms_thresh``,
    ``max_det`` and ``topk_candidates`` (default: the model's), recorded in the metadata's
    ``detection`` entry. Returns ``path``.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({e}); install them with "
                          f"pip install 'mobilenets[deploy]'") from None
    _check_exportable(model)
    task = task or getattr(model, "task", "classification")
    detector = is_detector(model, task)
    if detector:
        detection = detection_options(model, detection)
    elif detection:
        raise TypeError(f"{', '.join(sorted(detection))}: export options of detectors, and "
                        f"this is a {task} model")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset {opset!r} is not supported: ONNX export needs opset "
                         f"{MIN_OPSET} or newer, up to {newest} (the newest the installed "
                         f"onnx {onnx.__version__} knows)")
    if resolution is None:
        resolution = int(model.preprocess.get("resolution") or model.config.get("resolution")
                         or 224)
    elif isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int (square inputs), not "
                         f"{resolution!r}")
    was_training = model.training
    net = fuse_model(model) if fuse else model.eval()
    in_chans = model.config.get("in_chans", 3)
    x = torch.randn(2 if dynamic_batch else 1, in_chans, resolution, resolution)
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with torch.no_grad():
            if detector:
                net, outputs = detection_graph(net, detection), list(DETECTION_OUTPUTS)
            else:
                outputs = named_outputs(model, net(x), task)
            program = torch.onnx.export(net, (x,), dynamo=True, opset_version=opset,
                                        verbose=False, input_names=["input"],
                                        output_names=[n for n, _ in outputs],
                                        dynamic_shapes=dynamic,
                                        custom_translation_table=TRANSLATIONS if detector
                                        else None)
    finally:
        if not fuse:
            model.train(was_training)
    for node in program.model.graph.all_nodes():
        node.metadata_props.clear()       # stack traces with this machine's source paths
    proto = program.model_proto
    mean_to_global_pool(proto)
    written = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if written != {opset}:       # the exporter logs a failed conversion and goes on
        raise RuntimeError(f"the exporter wrote opset {sorted(written)}, not the {opset} "
                           f"asked for; export with opset={MIN_OPSET}")
    # "fused" says what the file holds: torch's exporter folds BatchNorm itself in eval mode
    folded = not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    meta = metadata(model, resolution, folded, task, outputs)
    if detector:
        # the file takes the resized, normalised batch (OnnxDetector makes it from images)
        meta["preprocess"] = _json(dict(json.loads(meta["preprocess"]), in_model=False))
        meta["detection"] = _json(detection_metadata(model, detection))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    return save_checked(proto, path)


def save_checked(proto, path: str | Path) -> Path:
    """Write the ONNX ``proto`` to ``path`` through a temporary file that must pass
    ``onnx.checker``: an existing file is replaced only by a good one. Returns ``path``."""
    import onnx
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of the .onnx file to write "
                                f"(e.g. {path / 'model.onnx'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")   # concurrent writers apart
    try:
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["MIN_OPSET", "export_onnx", "export_preprocess", "mean_to_global_pool", "save_checked",
           "value_shapes"]
