"""The training engine: one run of any task, in one process or under DDP (torchrun).

``fit(task, cfg)`` runs the processes, optimiser and schedule, AMP, EMA, gradient clipping,
checkpoints with exact resume (even after SIGKILL), progress, ``metrics.jsonl``, curves and
TensorBoard, and the distillation mix; the :class:`~mobilenets.training.task.Task` says what
the data, model, loss and metrics are.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import Dist, convert_sync_bn, setup
from .optim import build_optimizer, build_scheduler
from .precision import float32_depthwise_under_cpu_autocast
from .reporting import Reporter, progress_bar
from .sampling import EpochSampler
from .task import Task


def fit(task: Task, cfg: TrainConfig, resume: str | Path | None = None, progress: bool = True,
        model: torch.nn.Module | None = None, overwrite: bool = False) -> dict:
    """Train ``task`` as ``cfg`` says; write ``last.pt``, ``best/``, ``metrics.jsonl``,
    ``train_config.json``, ``curves.png`` (and TensorBoard events when tensorboard is
    installed) into ``cfg.out``. Under ``torchrun`` every process calls this and trains one
    shard of each global batch (DDP); rank 0 writes the files.
    ``model``: an already-built network to train instead of ``task.build_model(cfg)``.
    ``resume``: a ``last.pt`` to continue. A ``cfg.out`` that already holds another run is
    refused unless ``overwrite`` (see :func:`check_out_folder`).
    Returns the last epoch's metrics."""
    if resume is not None and Path(resume).is_dir():      # a run folder: its last.pt
        resume = Path(resume) / "last.pt"
    cfg = with_absolute_paths(cfg)
    out = Path(cfg.out)
    check_out_folder(out, resume, overwrite)
    task.check_run_folder(cfg)
    task.check_config(cfg)
    created = _missing_folders(out)
    dist = setup()
    try:
        return _Run(task, cfg, dist, model, progress, resume).fit()
    except BaseException:
        for folder in created:         # a run that failed before writing anything leaves
            try:                       # none of the folders it made behind
                folder.rmdir()
            except OSError:            # not empty (or already gone): keep what is there
                break
        raise
    finally:
        dist.close()


# Options that name local files or folders: recorded absolute, so that a run resumes from
# any working directory
PATH_OPTIONS = ("data", "val", "weights", "teacher", "teacher_weights")


def with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its :data:`PATH_OPTIONS` that name an existing path made absolute (a
    registered name, ``"torchvision"`` or a URL stays as it is)."""
    changed = {k: str(Path(v).resolve()) for k in PATH_OPTIONS
               if isinstance(v := getattr(cfg, k), str) and v and Path(v).exists()}
    return dataclasses.replace(cfg, **changed) if changed else cfg


def _missing_folders(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


# Training steps between reads of the loss (each read waits for the device).
SYNC_EVERY = 10

# What a run writes into its folder; any of them there means the folder holds a run (its
# train_config.json alone, from a run that failed before its first epoch or checkpoint, is
# written again).
RUN_FILES = ("last.pt", "best", "metrics.jsonl")

# Options the checkpoint's optimiser state fixes (its param groups hold them): a resumed run
# keeps them, so another value given on resume is refused rather than ignored.
FIXED_ON_RESUME = ("optimizer", "lr", "momentum", "weight_decay", "depthwise_weight_decay",
                   "rmsprop_decay", "rmsprop_eps")


def check_out_folder(out: Path, resume=None, overwrite: bool = False,
                     can_resume: bool = True) -> None:
    """Refuse to start a run in ``out`` when it is a file, or when it holds another run (its
    checkpoint, best model and metrics would be replaced), unless ``overwrite`` (then the old
    TensorBoard events go, so the curves do not mix) or ``resume`` is that run's own
    ``last.pt``. ``can_resume``: the caller has a --resume to suggest."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output folder {out} is a file; give a folder with --out")
    if resume is not None and out.resolve() == Path(resume).resolve().parent:
        return
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        resume_it = (f"continue it with --resume {out / 'last.pt'}, "
                     if can_resume and "last.pt" in found else "")
        python = "resume=, overwrite=True" if can_resume else "overwrite=True"
        raise ValueError(f"{out} already holds a training run ({', '.join(found)}); "
                         f"{resume_it}write to another --out, or pass --overwrite to replace it "
                         f"({python} in Python)")
    if found or (out / "train_config.json").exists():    # also a run that died before its
        shutil.rmtree(out / "tensorboard", ignore_errors=True)   # first checkpoint


def remove_run_files(out: Path) -> None:
    """Remove a training run's files from ``out`` (what ``--overwrite`` replaces): its
    checkpoint, best model, metrics, config, curves and TensorBoard events."""
    for name in (*RUN_FILES, "train_config.json", "curves.png", "tensorboard"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def ema_lag(decay: float, total_steps: int, share: float = 0.05) -> str | None:
    """A warning when model EMA with ``decay`` averages over more than ``share`` of a run's
    ``total_steps`` (its horizon is 1/(1-decay) steps), else None.

    Why: the averaged weights of a BatchNorm network that moves fast at a high learning rate
    do not match the averaged BatchNorm statistics, so an EMA whose horizon is a large share
    of a short run sits near chance for most of it (docs/results/2026-11-24-imagenette-gpu.md);
    timm's ImageNet default (0.9998 over about 1.25M steps) is a 0.4% horizon."""
    if not 0 < decay < 1 or total_steps <= 0:
        return None
    horizon = 1 / (1 - decay)
    if horizon <= share * total_steps:
        return None
    within = 1 - 1 / (share * total_steps)        # the decay whose horizon is share of the run
    # a horizon under 10 steps averages next to nothing: then EMA is better off
    advice = (f"use --ema-decay {within:.4g} or lower, or train longer" if within >= 0.9 else
              "this run is too short for EMA: use --ema-decay 0 (off), or train longer")
    return (f"--ema-decay {decay} averages the weights over the last ~{horizon:.0f} steps, "
            f"{100 * horizon / total_steps:.0f}% of this run's {total_steps} steps: on a run this "
            f"short the EMA model lags the trained one and can sit near chance for most of it; "
            f"{advice}")


def eval_loader(dataset, collate, batch_size: int = 64, workers: int = 0,
                device: torch.device | str = "cpu", dist=None,
                persistent: bool = False) -> DataLoader:
    """A loader over ``dataset`` in order: this process's share of the items under ``dist``;
    ``persistent`` keeps its worker processes between passes (per-epoch validation)."""
    if dist is not None and dist.enabled:
        dataset = Subset(dataset, range(dist.rank, len(dataset), dist.world))
    # its own generator: a loader without one draws its workers' base seed from the global
    # RNG at every pass, so dropout in the next epoch would depend on the worker count
    return DataLoader(dataset, batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate, persistent_workers=persistent and workers > 0,
                      pin_memory=torch.device(device).type == "cuda",
                      generator=torch.Generator().manual_seed(0))


def model_spec(model) -> dict:
    """What rebuilds ``model``'s architecture on resume: its ``config`` (builder options) and
    ``preprocess``, as plain values (empty for a model without them)."""
    spec = {k: getattr(model, k) for k in ("config", "preprocess")
            if isinstance(getattr(model, k, None), dict)}
    return json.loads(json.dumps(spec, default=str))


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU in hardware (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True                       # cannot tell: no warning


class _Run:
    """One training run: data, model, optimiser and the files it writes."""

    def __init__(self, task: Task, cfg: TrainConfig, dist: Dist, model, progress: bool,
                 resume=None):
        self.task, self.cfg, self.dist, self.device = task, cfg, dist, dist.device
        self.resume = resume
        self.ckpt = load_checkpoint(Path(resume)) if resume is not None else None
        self.progress = progress and dist.main
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)

        self.train_set, val_set = task.datasets(cfg)
        task.resuming = ((self.resume, self.ckpt["epoch"], self.ckpt["step"])
                         if self.ckpt is not None else None)
        if dist.main:
            print(task.summary(self.train_set, val_set), flush=True)
        if cfg.epochs < 1:        # after the summary: what would have been trained on
            raise ValueError(f"epochs must be >= 1 to train, not {cfg.epochs}")
        finished = self.ckpt is not None and self.ckpt["epoch"] >= cfg.epochs   # refused below
        if dist.main and cfg.warmup_epochs >= cfg.epochs and not finished:
            print(f"warning: warmup_epochs {cfg.warmup_epochs:g} >= epochs {cfg.epochs}: the "
                  f"learning rate never reaches lr {cfg.lr:g}; give fewer warm-up epochs "
                  f"(--warmup-epochs) or more epochs", file=sys.stderr, flush=True)
        if model is None:          # when resuming: the network the checkpoint was trained as
            model = task.build_model(cfg, (self.ckpt or {}).get("model_spec"))
        # a built one too: --task may name another task than the model's
        task.check_model(model)
        task.model_ready(model)
        if dist.rank > 0:      # own dropout/mixup draws per process; rank 0 = a 1-process run
            torch.manual_seed(cfg.seed + 7919 * dist.rank)
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, rank=dist.rank,
                                    world=dist.world)
        if cfg.device_data:        # decoded once, augmented on the device
            self.train_loader, self.val_loader = task.device_loaders(
                self.sampler, cfg, self.device, dist)
        elif (streams := task.stream_loaders(self.train_set, val_set, self.sampler, cfg,
                                                  self.device, dist)) is not None:
            self.train_loader, self.val_loader = streams     # streamed data, e.g. tar shards
        else:
            # one loader each for the whole run: their worker processes (if any) start once,
            # not every epoch
            self.train_loader = DataLoader(
                self.train_set, cfg.batch_size, sampler=self.sampler, drop_last=True,
                num_workers=cfg.workers, collate_fn=task.collate,
                generator=torch.Generator().manual_seed(cfg.seed),      # off the global RNG
                persistent_workers=cfg.workers > 0, pin_memory=self.device.type == "cuda")
            self.val_loader = eval_loader(val_set, task.collate, cfg.batch_size, cfg.workers,
                                          self.device, dist, persistent=True)
        global_batch = cfg.batch_size * dist.world
        self.steps_per_epoch = len(self.train_set) // global_batch
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.train_set)} training items are fewer than one global "
                             f"batch of {global_batch}; lower --batch-size")

        if cfg.sync_bn and dist.enabled:
            model = convert_sync_bn(model, self.device)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.amp and self.device.type == "cpu":
            model = float32_depthwise_under_cpu_autocast(model)
        self.model = model
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                  use_buffers=True) if cfg.ema_decay > 0 else None)
        # From weights trained for this task the average starts at a trained model, so a long
        # horizon is the point (fine-tuning), not a lag behind a network far from converged.
        lag = (None if task.starts_trained(cfg) else
               ema_lag(cfg.ema_decay, self.steps_per_epoch * cfg.epochs))
        if lag and dist.main:
            warnings.warn(lag, stacklevel=2)
        net = model
        if dist.enabled:
            net = DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.net = torch.compile(net) if cfg.compile else net
        self.autocast, self.scaler = self._amp()
        self.teacher = task.build_teacher(cfg, self.device)
        if self.teacher is not None and cfg.amp and self.device.type == "cpu":
            self.teacher = float32_depthwise_under_cpu_autocast(self.teacher)
        self.best = None
        self.partial = None          # mid-epoch: (loss sum, images, unreadable) so far
        self.step_lr = self.optimizer.param_groups[0]["lr"]

    def _amp(self):
        cfg, kind = self.cfg, self.device.type
        if cfg.amp_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be bfloat16 or float16, not {cfg.amp_dtype!r}")
        fp16 = cfg.amp and cfg.amp_dtype == "float16"
        if fp16 and kind != "cuda":
            raise ValueError("float16 autocast needs a GPU; use --amp-dtype bfloat16 on CPU")
        scaler = torch.amp.GradScaler(kind, enabled=fp16)
        if not cfg.amp:
            return nullcontext(), scaler
        if kind == "cpu" and not cpu_has_bf16():
            warnings.warn("this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX; "
                          "oneDNN reports none), so --amp emulates bfloat16 and trains many "
                          "times slower than float32 (more than 8x for MobileNetV2 on an "
                          "AVX2 CPU): leave --amp out here", stacklevel=2)
        return torch.autocast(kind, dtype=getattr(torch, cfg.amp_dtype)), scaler

    def _skip_step(self) -> None:
        """The schedule's step without an optimiser step."""
        with warnings.catch_warnings():     # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def save_best(self, model: torch.nn.Module) -> None:
        """``best/`` replaced whole: written beside it, then swapped in, so no file of an
        older best model (an exported model.onnx) stays beside the new weights."""
        final, new, old = (self.out / "best", self.out / ".best-new", self.out / ".best-old")
        if old.is_dir() and not final.exists():        # stopped between the two renames
            old.rename(final)
        for stale in (new, old):
            shutil.rmtree(stale, ignore_errors=True)
        self.task.save_best(model, new)
        if final.exists():
            final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    # checkpoints ------------------------------------------------------------------------------
    def checkpoint(self, epoch: int, step: int) -> None:
        """Collective: every process hands its RNG state (and mid-epoch its running sums) to
        rank 0, which writes last.pt."""
        own = (rng_state(), self.partial if step else None)
        states = [own]
        if self.dist.enabled:
            states = [None] * self.dist.world
            torch_dist.all_gather_object(states, own)
        if not self.dist.main:
            return
        save_checkpoint(self.out / "last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": epoch, "step": step, "best": self.best,
            "best_metric": self.task.best_metric, "rng": [r for r, _ in states],
            # per process, mid-epoch: the epoch's loss sum, images and unreadable ones so far
            "partial": [p for _, p in states] if step else None, "world": self.dist.world,
            "steps_per_epoch": self.steps_per_epoch,
            "config": self.cfg.to_dict(), "model_spec": model_spec(self.model),
            "task": self.task.state()})

    def restore(self) -> tuple[int, int]:
        ckpt, path = self.ckpt, self.resume
        epoch, step = ckpt["epoch"], ckpt["step"]
        world = ckpt.get("world", 1)
        arch = ckpt.get("config", {}).get("model")
        if arch and arch != self.cfg.model:
            raise ValueError(f"{path} is a checkpoint of {arch}, not {self.cfg.model}; resume "
                             f"it with --model {arch} (or leave --model out)")
        width = ckpt.get("config", {}).get("width_mult")
        if self.cfg.width_mult != width:          # the network is rebuilt at its saved width
            raise ValueError(f"{path} trained {arch} at width "
                             f"{'of its name' if width is None else f'{width:g}'}; resume it "
                             f"at that width (leave --width-mult out)")
        saved_metric = ckpt.get("best_metric", self.task.best_metric)
        if saved_metric != self.task.best_metric:
            raise ValueError(f"{path} picked its best model by {saved_metric!r}, this task by "
                             f"{self.task.best_metric!r}; resume it with the task it was "
                             f"trained with")
        self.task.check_resume(ckpt.get("task", ckpt), path)   # older: the state at top level
        if epoch >= self.cfg.epochs:
            done = f"{epoch} epochs" + (f" and {step} steps of the next" if step else "")
            raise ValueError(f"{path} has trained {done}, as many as --epochs "
                             f"{self.cfg.epochs} asks for; to train on, resume with --epochs "
                             f"greater than {epoch}")
        if step and world != self.dist.world:
            raise ValueError(f"{path} was written mid-epoch by {world} process(es); resume it "
                             f"with the same number of processes ({world})")
        saved = ckpt.get("config") or {}
        changed = [f"--{k.replace('_', '-')} {getattr(self.cfg, k)} (the run's: {saved[k]})"
                   for k in FIXED_ON_RESUME if k in saved and saved[k] != getattr(self.cfg, k)]
        if changed:
            raise ValueError(f"{', '.join(changed)}: a resumed run keeps the optimiser its "
                             f"checkpoint holds; leave {'it' if len(changed) == 1 else 'them'} "
                             f"out, or start a new run from this run's weights with --weights "
                             f"{self.task.restart_weights(Path(path).parent)}")
        # the steps per epoch it was written with (older files: from the scheduler's count)
        old_steps = ckpt.get("steps_per_epoch")
        same_steps = (old_steps == self.steps_per_epoch if old_steps is not None else
                      ckpt["scheduler"].get("last_epoch", 0)
                      == epoch * self.steps_per_epoch + step)
        if step and not same_steps:
            raise ValueError(f"{path} was written mid-epoch with other steps per epoch (global "
                             f"batch {saved.get('batch_size', '?')} x {world} process(es), "
                             f"--max-steps-per-epoch {saved.get('max_steps_per_epoch', 0)}); "
                             f"resume it with the same batch")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if not same_steps:
            # at an epoch boundary with another global batch: the schedule goes on from the
            # same point in epochs, counted in this run's steps
            self.scheduler.last_epoch = epoch * self.steps_per_epoch - 1
            self._skip_step()                 # the scheduler sets the lr of that step
        partial = ckpt.get("partial")
        if step and partial:
            self.partial = partial[self.dist.rank] if self.dist.rank < len(partial) else None
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if "best" in ckpt:
            self.best = ckpt["best"]
        else:                         # older checkpoints: top-1, with -1 for "nothing yet"
            self.best = ckpt.get("best_top1")
            self.best = None if self.best is None or self.best < 0 else self.best
        rngs = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        self.ckpt = None                  # the tensors are in the model and optimiser now
        return epoch, step

    # the loop ---------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, resume = self.cfg, self.resume
        start_epoch, start_step = self.restore() if resume is not None else (0, 0)
        source = Path(resume).parent if resume is not None else self.out
        if self.dist.main and source.resolve() != self.out.resolve():
            # resumed into another folder: it starts with the run's best model and history
            # (the restored best score is only beaten by a better model)
            for name in ("best", "metrics.jsonl"):    # (any there: --overwrite's to replace)
                if (source / name).exists():
                    if (self.out / name).is_dir():
                        shutil.rmtree(self.out / name)
                    copy = shutil.copytree if name == "best" else shutil.copy2
                    copy(source / name, self.out / name)
        if self.dist.main:
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        report = Reporter(self.out, enabled=self.dist.main, tensorboard=cfg.tensorboard,
                          resume_step=(start_epoch * self.steps_per_epoch + start_step
                                       if resume is not None else None),
                          metrics=self.task.metrics)
        report.truncate(start_epoch)
        metrics, noted = {}, False
        for epoch in range(start_epoch, cfg.epochs):
            first = start_step if epoch == start_epoch else 0
            train_stats = self.train_epoch(epoch, first, report)
            metrics = self.end_epoch(epoch, train_stats)
            report.epoch(metrics, (epoch + 1) * self.steps_per_epoch)
            note = None if noted else self.task.epoch_note(metrics)
            if note and self.dist.main:
                warnings.warn(note, stacklevel=2)
            noted = noted or bool(note)
        report.close()
        self.dist.barrier()
        return dict(metrics, best=self.best)     # the best/ model's score (of best_metric)

    def loss(self, x, target) -> torch.Tensor:
        cfg = self.cfg
        with self.autocast:
            outputs = self.net(x)
            loss = self.task.loss(outputs, target)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_outputs = self.teacher(x)
                loss = ((1 - cfg.kd_alpha) * loss + cfg.kd_alpha
                        * self.task.distillation_loss(outputs, teacher_outputs, cfg))
        return loss

    def train_epoch(self, epoch: int, first: int, report: Reporter) -> dict:
        cfg, steps = self.cfg, self.steps_per_epoch
        self.sampler.set_epoch(epoch, first * cfg.batch_size)
        self.train_set.epoch = epoch     # for plain indexing; the loader's keys carry the epoch
        self.task.start_epoch(self.model, epoch)
        self.task.set_mode(self.model, True)
        # loss, images, unreadable ones; then the images trained since this call (its speed)
        t0, sums = time.perf_counter(), torch.zeros(4, dtype=torch.float64)
        # the loss sum stays on the device: reading a loss waits for the GPU, so it is read
        # only every SYNC_EVERY steps (progress, TensorBoard, the divergence check)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        before = (self.partial or (0.0, 0, 0)) if first else (0.0, 0, 0)   # resumed mid-epoch
        self.partial = None
        loss_sum += before[0]
        sums[1:3] += torch.tensor(before[1:], dtype=torch.float64)
        last_save = time.monotonic()
        bar = progress_bar(self.progress, steps - first, f"epoch {epoch + 1}/{cfg.epochs}")
        for step, (x, y, n_bad) in enumerate(self.train_loader, start=first):
            if step >= steps:
                break
            sums[2] += n_bad
            if len(y) == 0 or (n_bad and len(y) == 1 < cfg.batch_size and not self.dist.enabled):
                # a batch that unreadable items left with one image is skipped too: BatchNorm
                # after global pooling (DeepLabV3's ASPP) cannot train on one. (Under DDP every
                # process must take each step, so there only an empty batch is skipped.) The
                # schedule still moves on, so that step k of an epoch has the same lr on resume.
                self._skip_step()
                continue
            x, target, count = self.task.prepare(x, y, self.device)
            if cfg.channels_last and isinstance(x, torch.Tensor):
                x = x.contiguous(memory_format=torch.channels_last)
            loss = self.loss(x, target)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step_lr = self.optimizer.param_groups[0]["lr"]      # the lr this step used
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            loss_sum += loss.detach().double() * count
            sums[1] += count
            sums[3] += count
            bar.update(1)
            if step % SYNC_EVERY == 0 or step + 1 == steps:
                value = loss.item()
                if not math.isfinite(value) or not math.isfinite(loss_sum.item()):
                    raise FloatingPointError(
                        f"loss is not finite by epoch {epoch + 1} step {step} ({value} "
                        f"there); lower the learning rate")
                bar.set_postfix(loss=f"{value:.3f}")
                report.step(epoch * steps + step, value, self.step_lr)
            due = bool(cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0)
            if cfg.checkpoint_every_minutes:      # decided together: checkpoint() is collective
                due |= self.dist.any(time.monotonic() - last_save
                                     > 60 * cfg.checkpoint_every_minutes)
            if due and step + 1 < steps:
                self.partial = (loss_sum.item(), int(sums[1]), int(sums[2]))
                self.checkpoint(epoch, step + 1)
                last_save = time.monotonic()
        bar.close()
        sums[0] = loss_sum.item()
        elapsed = time.perf_counter() - t0
        loss_sum, seen, bad, since_start = self.dist.sum(sums).tolist()
        if seen == 0:
            raise ValueError(f"epoch {epoch + 1} trained on no image ({int(bad)} unreadable, "
                             f"see the warnings above); mend or remove those files")
        return {"train_loss": loss_sum / seen, "images_per_s": since_start / elapsed,
                "epoch_time_s": elapsed, "bad_images": int(bad)}

    def end_epoch(self, epoch: int, train_stats: dict) -> dict:
        lr = self.step_lr                  # the lr of the epoch's last step
        if (epoch + 1) % self.cfg.val_every and epoch + 1 < self.cfg.epochs:
            self.checkpoint(epoch + 1, 0)      # no validation this epoch: best/ stays
            return {"epoch": epoch + 1, "lr": lr, **train_stats}
        eval_model = self.ema.module if self.ema is not None else self.model
        self.task.set_mode(eval_model, False)
        with torch.no_grad():
            result = self.task.evaluate(eval_model, self.val_loader, self.device, self.dist)
        metrics = {"epoch": epoch + 1, "train_loss": train_stats["train_loss"],
                   "val_loss": result["loss"],
                   **{k: v for k, v in result.items() if k != "loss"},
                   "lr": lr, **train_stats}
        score = result[self.task.best_metric]
        if not math.isfinite(result["loss"]):
            raise FloatingPointError(
                f"the validation loss is {result['loss']} after epoch {epoch + 1}: the weights "
                f"diverged. last.pt and best/ are those of before; train again with a lower "
                f"--lr than {self.cfg.lr:g} (from those weights: --weights "
                f"{self.task.restart_weights(self.out)})")
        # a score that is not a number (nothing scored: the task's epoch note says why) never
        # makes a best model
        if math.isfinite(score) and (self.best is None or (
                score > self.best if self.task.higher_is_better else score < self.best)):
            self.best = score
            if self.dist.main:
                self.save_best(eval_model)
        self.checkpoint(epoch + 1, 0)
        return metrics


__all__ = ["RUN_FILES", "check_out_folder", "ema_lag", "eval_loader", "fit", "remove_run_files"]
