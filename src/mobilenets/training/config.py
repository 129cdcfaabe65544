"""Training options, named recipes (TOML files in ``recipes/``) and command-line overrides."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class TrainConfig:
    """Every option of ``mobilenets train``; a recipe sets some, the command line the rest."""

    model: str = "mobilenet_v3_small_100"
    width_mult: float | None = None    # None: the name's (mobilenet_v2_050: 0.5)
    data: str | None = None            # None: the built-in sample
    val: str | None = None
    out: str = "runs/train"
    weights: str | None = None         # initial weights (fine-tuning)
    epochs: int = 10
    resolution: int = 64
    batch_size: int = 32
    workers: int = 0
    seed: int = 0
    # optimiser
    optimizer: str = "sgd"             # sgd (nesterov) | rmsprop (TF-style eps) | adamw
    lr: float = 0.0125                 # 0.1 per 256 images at batch 32 (linear scaling rule)
    momentum: float = 0.9
    weight_decay: float = 4e-5
    depthwise_weight_decay: float | None = None   # None: weight_decay (0: none on them)
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1e-3
    # schedule (per step)
    schedule: str = "cosine"           # cosine | step | exponential | constant
    warmup_epochs: float = 0.0
    decay_epochs: float = 30.0         # step: every decay_epochs; exponential: per decay_epochs
    decay_rate: float = 0.1
    min_lr: float = 0.0
    # regularisation
    label_smoothing: float = 0.0
    dropout: float | None = None
    drop_path_rate: float | None = None
    ema_decay: float = 0.0             # 0 disables model EMA
    grad_clip: float = 0.0
    bn_momentum: float | None = None
    # augmentation
    crop_min_scale: float = 0.08       # RandomResizedCrop's smallest area fraction (Inception)
    auto_augment: str | None = None
    color_jitter: float = 0.0
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    # distillation (Hinton et al. 2015): loss = (1 - a) CE + a T^2 KL(teacher_T || student_T)
    teacher: str | None = None         # saved-model folder, or registered name + teacher_weights
    teacher_weights: str | None = None
    kd_temperature: float = 4.0
    kd_alpha: float = 0.5
    # speed, processes and checkpoints
    amp: bool = False                  # autocast: bf16 on CPU; amp_dtype on GPU
    amp_dtype: str = "bfloat16"        # bfloat16 | float16 (GPU only; with a gradient scaler)
    channels_last: bool = False
    compile: bool = False
    device_data: bool = False          # decode once, keep on the device, augment batches there
    sync_bn: bool = False              # synchronised BatchNorm under torchrun (DDP)
    tensorboard: bool = True           # TensorBoard events in OUT/tensorboard when installed
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 0.0
    strict_data: bool = False
    max_steps_per_epoch: int = 0       # 0: the whole epoch (a cap for quick runs and tests)
    val_every: int = 1                 # validate every N epochs and after the last one
    recipe: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        bad = [f"{name} (--{name.replace('_', '-')}) must be a number {rule}, not {value!r}"
               for name, rule in _RULES.items() if (value := getattr(self, name)) is not None
               and (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or not _TESTS[rule](value))]
        bad += [f"{name} (--{name.replace('_', '-')}) must be a whole number, not {value!r}"
                for name in _WHOLE if not isinstance(value := getattr(self, name), Integral)
                and not any(b.startswith(f"{name} ") for b in bad)]
        if not bad and self.min_lr > self.lr and self.schedule != "constant":
            bad.append(f"min_lr (--min-lr) {self.min_lr:g} is above the peak lr (--lr) "
                       f"{self.lr:g}: the schedule would raise the lr; give --min-lr below it")
        if bad:
            raise ValueError("; ".join(bad))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))

# The range each numeric option must lie in, checked when a TrainConfig is made.
_TESTS = {">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, "> 0": lambda v: v > 0,
          "in [0, 1]": lambda v: 0 <= v <= 1, "in [0, 1)": lambda v: 0 <= v < 1,
          "in (0, 1]": lambda v: 0 < v <= 1}
# Options that count something: an int, not 1.5
_WHOLE = ("epochs", "resolution", "batch_size", "workers", "seed", "checkpoint_every_steps",
          "max_steps_per_epoch", "val_every")
_RULES = {
    "epochs": ">= 0", "resolution": ">= 1", "batch_size": ">= 1", "workers": ">= 0",
    "lr": "> 0", "momentum": "in [0, 1]", "weight_decay": ">= 0", "depthwise_weight_decay": ">= 0",
    "warmup_epochs": ">= 0", "val_every": ">= 1",
    "decay_epochs": "> 0", "decay_rate": "in (0, 1]", "min_lr": ">= 0",
    "label_smoothing": "in [0, 1)", "dropout": "in [0, 1)", "drop_path_rate": "in [0, 1)",
    "ema_decay": "in [0, 1)", "grad_clip": ">= 0", "crop_min_scale": "in (0, 1]",
    "color_jitter": ">= 0", "random_erasing": "in [0, 1]", "mixup": ">= 0", "cutmix": ">= 0",
    "kd_temperature": "> 0", "kd_alpha": "in [0, 1]", "checkpoint_every_steps": ">= 0",
    "checkpoint_every_minutes": ">= 0", "max_steps_per_epoch": ">= 0",   # 0: whole epoch
}


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str) -> dict:
    """A recipe by name (``recipes/NAME.toml``) or path; unknown keys are an error."""
    path = Path(name_or_path)
    if not path.is_file():
        path = RECIPES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name_or_path!r}; available: "
                         f"{', '.join(list_recipes())} (or a path to a .toml file)")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"recipe {path} is not valid TOML: {e}") from None
    values.pop("description", None)
    unknown = sorted(set(values) - OPTION_NAMES)
    if unknown:
        raise ValueError(f"recipe {path} has unknown option(s) {', '.join(unknown)}")
    return values


def make_config(recipe: str | None = None, **overrides) -> TrainConfig:
    """Defaults, then the recipe, then explicit overrides (``None`` values are ignored)."""
    values = load_recipe(recipe) if recipe else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["recipe"] = recipe
    unknown = sorted(set(values) - OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown training option(s) {', '.join(unknown)}")
    return TrainConfig(**values)


def resumed_config(checkpoint, recipe: str | None = None,
                   overrides: dict | None = None) -> TrainConfig:
    """The options of the run saved in ``checkpoint`` (a ``last.pt``; they already include
    its recipe's), with the given ``overrides`` (None values: not given) on top; ``out``
    defaults to the checkpoint's folder. The initial ``weights`` are not loaded again (the
    checkpoint holds the weights: giving others is refused), nor is another ``recipe`` than
    the run's."""
    from .checkpoint import load_checkpoint
    if Path(checkpoint).is_dir():                     # a run folder: its last.pt
        checkpoint = Path(checkpoint) / "last.pt"
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    saved = load_checkpoint(Path(checkpoint), mmap=True).get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{checkpoint} holds no run options; it is not a last.pt written by "
                         f"mobilenets train")
    if recipe and recipe != saved.get("recipe"):
        raise ValueError(f"{checkpoint} is a run of recipe {saved.get('recipe')!r}, and a "
                         f"resumed run keeps its options: leave --recipe out, and give the "
                         f"options to change one by one")
    given, own = overrides.get("weights"), saved.get("weights")
    if given and str(given) != str(own) and (
            own is None or Path(given).resolve() != Path(own).resolve()):
        raise ValueError(f"--weights {overrides['weights']} with --resume: a resumed run "
                         f"continues from the weights in {checkpoint}; leave --weights out "
                         f"(or start a new run from them without --resume)")
    overrides.pop("weights", None)          # the run's own: the checkpoint holds them now
    unknown = sorted(set(overrides) - OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown training option(s) {', '.join(unknown)}")
    values = {k: v for k, v in saved.items() if k in OPTION_NAMES}
    values.update(out=str(Path(checkpoint).parent), weights=None)
    values.update(overrides)
    return TrainConfig(**values)

