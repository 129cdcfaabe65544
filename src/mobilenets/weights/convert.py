"""Map a torchvision, timm or mobilenets state dict onto one of our models, or say exactly why
not: never a silent partial load."""

from __future__ import annotations

import torch
from torch import nn

from .files import CheckpointError
from .layouts import detect_layout, ordered_tensors


def _norm_shape(t: torch.Tensor) -> tuple[int, ...]:
    """A 1x1 convolution and a linear layer hold the same matrix."""
    if t.dim() == 4 and t.shape[2:] == (1, 1):
        return tuple(t.shape[:2])
    return tuple(t.shape)


def shape_signature(state: dict[str, torch.Tensor], layout: str | None = None,
                    drop_classifier: bool = True) -> list[tuple[int, ...]]:
    layout = layout or detect_layout(state)
    drop = set(classifier_keys(state)) if drop_classifier else set()
    return [_norm_shape(t) for k, t in ordered_tensors(state, layout) if k not in drop]


def classifier_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of the final classifier layer (``classifier.weight``/``.bias``, or ``_fc.*``;
    torchvision's ``classifier.N.*`` with the highest N), or [] for a headless checkpoint."""
    for name in ("classifier", "_fc"):          # _fc: efficientnet_pytorch
        if f"{name}.weight" in state:
            return [k for k in (f"{name}.weight", f"{name}.bias") if k in state]
    indices = [int(k.split(".")[1]) for k in state
               if k.startswith("classifier.") and k.split(".")[1].isdigit()]
    if not indices:
        return []
    last = max(indices)
    return [k for k in (f"classifier.{last}.weight", f"classifier.{last}.bias") if k in state]


def classifier_classes(state: dict[str, torch.Tensor]) -> int:
    """Number of classes of a state dict's classifier; 0 when it has none."""
    keys = classifier_keys(state)
    return int(state[keys[0]].shape[0]) if keys else 0


# options that change a registered model's tensor shapes (num_classes aside)
SHAPE_OPTIONS = ("width_mult", "depth_mult", "in_chans", "block_widths", "reduced_tail")


def looks_like(state: dict[str, torch.Tensor], into: nn.Module | None = None) -> str:
    """'looks like NAME' for the registered model whose layers match the file, else a hint;
    when that is the model ``into`` was built as, the options that made ``into`` differ."""
    from ..models import create_model, list_models
    try:
        target = shape_signature(state)
    except ValueError as e:
        return str(e)
    for name in list_models(task="classification"):
        with torch.device("meta"):
            model = create_model(name)
        if shape_signature(model.state_dict(), "mobilenets") == target:
            built = (into.config if into is not None else {})
            if built.get("name") != name:
                return f"the file looks like {name}"
            changed = [f"{k}={built[k]!r}" for k in SHAPE_OPTIONS
                       if k in built and built[k] != model.config.get(k)]
            return (f"the file is {name} as registered, built here with "
                    f"{', '.join(changed) or 'other options'}: leave "
                    f"{'them' if len(changed) > 1 else 'that'} out to load it")
    return "the file matches no registered architecture at its registered width"


def convert_state_dict(state: dict[str, torch.Tensor], model: nn.Module,
                       skip_classifier: bool = False) -> dict[str, torch.Tensor]:
    """Our keys -> the file's tensors, every shape checked. ``skip_classifier`` leaves the
    classifier out (fine-tuning to another number of classes)."""
    name = model.config.get("name", type(model).__name__)
    try:
        layout = detect_layout(state)
    except ValueError as e:
        raise CheckpointError(f"cannot load into {name}: {e}") from None
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if skip_classifier:
        ours = {k: v for k, v in ours.items() if not k.startswith("classifier.")}
    if layout == "mobilenets":
        theirs = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        if skip_classifier:
            theirs = {k: v for k, v in theirs.items() if not k.startswith("classifier.")}
        missing = sorted(set(ours) - set(theirs))
        unexpected = sorted(set(theirs) - set(ours))
        if missing or unexpected:
            raise CheckpointError(
                f"cannot load into {name}: missing keys {_few(missing)}; unexpected keys "
                f"{_few(unexpected)}; {looks_like(state, model)}")
        pairs = [(k, k, theirs[k]) for k in ours]
    else:
        theirs = ordered_tensors(state, layout)
        if skip_classifier:
            drop = set(classifier_keys(state))
            theirs = [(k, v) for k, v in theirs if k not in drop]
        if len(theirs) != len(ours):
            raise CheckpointError(
                f"cannot load this {layout} checkpoint into {name}: it has {len(theirs)} "
                f"weight tensors, {name} has {len(ours)}; {looks_like(state, model)}")
        pairs = [(k, tk, tv) for k, (tk, tv) in zip(ours, theirs)]
    out = {}
    for key, their_key, tensor in pairs:
        mine = ours[key]
        if tensor.shape != mine.shape:
            if _norm_shape(tensor) != _norm_shape(mine):
                raise CheckpointError(
                    f"cannot load into {name}: {their_key} has shape {tuple(tensor.shape)} but "
                    f"{key} needs {tuple(mine.shape)}; {looks_like(state, model)}")
            tensor = tensor.reshape(mine.shape)
        out[key] = tensor.to(mine.dtype)
    return out


def _few(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
