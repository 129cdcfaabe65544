"""``mobilenets.train``: the training loop (one process, or DDP under torchrun)."""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..data import (ImageFolderDataset, at_resolution, collate_skip_bad, eval_transform,
                    mixup_cutmix, resolve_split, train_transform)
from ..weights import create_model
from ..weights import save
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, make_config
from .distributed import Dist, convert_sync_bn, setup
from .evaluate import eval_loader, evaluate_model
from .optim import build_optimizer, build_scheduler
from .reporting import Reporter, progress_bar
from .sampling import EpochSampler, SeededView


def train(cfg: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          model: torch.nn.Module | None = None, overwrite: bool = False, **overrides) -> dict:
    """Train ``cfg.model`` on ``cfg.data`` (the built-in sample when None); write ``last.pt``,
    ``best/``, ``metrics.jsonl``, ``train_config.json``, ``curves.png`` (and TensorBoard events
    when tensorboard is installed) into ``cfg.out``. Under ``torchrun`` every process calls this
    and trains one shard of each global batch (DDP); rank 0 writes the files.
    ``model``: an already-built network to train instead (e.g. a pruned one to fine-tune).
    ``resume``: a ``last.pt`` to continue. A ``cfg.out`` that already holds another run is
    refused unless ``overwrite`` (see :func:`check_out_folder`).
    Returns the last epoch's metrics."""
    cfg = cfg or make_config(**overrides)
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1 to train, not {cfg.epochs}")
    out = Path(cfg.out)
    check_out_folder(out, resume, overwrite)
    created = _missing_folders(out)
    dist = setup()
    try:
        return _Run(cfg, dist, model, progress).fit(resume)
    except BaseException:
        for folder in created:         # a run that failed before writing anything leaves
            try:                       # none of the folders it made behind
                folder.rmdir()
            except OSError:            # not empty (or already gone): keep what is there
                break
        raise
    finally:
        dist.close()


def _missing_folders(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


# What a run writes into its folder; any of them there means the folder holds a run.
RUN_FILES = ("last.pt", "best", "metrics.jsonl", "train_config.json")


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
        raise ValueError(f"{out} already holds a training run ({', '.join(found)}); "
                         f"{resume_it}write to another --out, or pass --overwrite to replace it")
    if found:
        import shutil
        shutil.rmtree(out / "tensorboard", ignore_errors=True)


def _build_model(cfg: TrainConfig, num_classes: int):
    if cfg.extra.get("pruned_model"):      # a prune fine-tune resumed: the pruned network
        from ..weights import load
        model = load(cfg.extra["pruned_model"])
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)
        return model
    options = {"num_classes": num_classes, "resolution": cfg.resolution}
    for key in ("dropout", "drop_path_rate", "bn_momentum"):
        if getattr(cfg, key) is not None:
            options[key] = getattr(cfg, key)
    if cfg.weights:
        options["weights"] = cfg.weights
    return create_model(cfg.model, **options)


def _load_teacher(cfg: TrainConfig, classes: list[str], device) -> torch.nn.Module:
    """The distillation teacher: a saved-model folder, or a registered name + teacher_weights."""
    from ..weights import load
    from ..weights.saved import is_saved_model
    if is_saved_model(Path(cfg.teacher)):
        teacher = load(cfg.teacher)
    elif cfg.teacher_weights:
        teacher = create_model(cfg.teacher, weights=cfg.teacher_weights)
    else:
        raise ValueError(f"teacher {cfg.teacher!r} is not a saved-model folder; give a trained "
                         f"model folder (e.g. OUT/best) or a registered name with "
                         f"--teacher-weights FILE")
    if teacher.num_classes != len(classes):
        raise ValueError(f"the teacher predicts {teacher.num_classes} classes but the data has "
                         f"{len(classes)}; distil from a teacher trained on these classes")
    names = teacher.config.get("class_names")
    if names and list(names) != classes:
        raise ValueError("the teacher's class names differ from the data's class folders; "
                         "distil from a teacher trained on this data")
    return teacher.to(device).eval().requires_grad_(False)


def _loads_trained_classifier(cfg: TrainConfig, num_classes: int) -> bool:
    """True when ``--weights`` is a file (or saved-model folder) whose classifier has
    ``num_classes`` outputs, so the whole network, head included, starts trained."""
    from ..weights import classifier_classes, is_saved_model, read_state_dict
    if not cfg.weights or cfg.weights in ("torchvision", "timm"):
        return False
    path = Path(cfg.weights)
    path = path / "model.safetensors" if is_saved_model(path) else path
    return path.is_file() and classifier_classes(read_state_dict(path)) == num_classes


def ema_lag(decay: float, total_steps: int, share: float = 0.05) -> str | None:
    """A warning when model EMA with ``decay`` averages over more than ``share`` of a run's
    ``total_steps`` (its horizon is 1/(1-decay) steps), else None.

    Measured (GPU, Imagenette, mobilenet_v2_100, 100 epochs of 36 steps, lr 0.2): decay
    0.998, a 500-step horizon (14% of the run), kept the EMA model near chance for 60 epochs
    (without EMA the same run passed 80% by epoch 48) and ended 1.1 points below the run
    without EMA. The averaged weights of a BatchNorm network moving fast at a high learning
    rate do not match the averaged BatchNorm statistics; timm's ImageNet default (0.9998 over
    about 1.25M steps) is a 0.4% horizon."""
    if not 0 < decay < 1 or total_steps <= 0:
        return None
    horizon = 1 / (1 - decay)
    if horizon <= share * total_steps:
        return None
    within = 1 - 1 / (share * total_steps)        # the decay whose horizon is share of the run
    advice = (f"use --ema-decay {within:.4g} or lower, or train longer" if within > 0 else
              "this run is too short for EMA: use --ema-decay 0 (off), or train longer")
    return (f"--ema-decay {decay} averages the weights over the last ~{horizon:.0f} steps, "
            f"{100 * horizon / total_steps:.0f}% of this run's {total_steps} steps: on a run this "
            f"short the EMA model lags the trained one and can sit near chance for most of it; "
            f"{advice}")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015, eq. 2 scaled by T^2: KL(softmax(t/T) || softmax(s/T)) * T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1),
                    reduction="batchmean", log_target=True) * (t * t)


class _Run:
    """One training run: data, model, optimiser and the files it writes."""

    def __init__(self, cfg: TrainConfig, dist: Dist, model, progress: bool):
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.progress = progress and dist.main
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)

        train_dir, val_dir = resolve_split(cfg.data, cfg.val)
        train_raw = ImageFolderDataset(train_dir, strict=cfg.strict_data)
        val_raw = ImageFolderDataset(val_dir, classes=train_raw.classes, strict=cfg.strict_data)
        self.classes = list(train_raw.classes)
        if model is None:
            model = _build_model(cfg, len(self.classes))
        elif model.num_classes != len(self.classes):
            raise ValueError(f"the given model has {model.num_classes} classes but the data has "
                             f"{len(self.classes)}; use model.reset_classifier("
                             f"{len(self.classes)})")
        if dist.rank > 0:      # own dropout/mixup draws per process; rank 0 = a 1-process run
            torch.manual_seed(cfg.seed + 7919 * dist.rank)
        model.preprocess = at_resolution(model.preprocess, cfg.resolution)
        self.train_set = SeededView(train_raw, train_transform(
            cfg.resolution, model.preprocess, auto_augment=cfg.auto_augment,
            color_jitter=cfg.color_jitter, random_erasing=cfg.random_erasing,
            scale=(cfg.crop_min_scale, 1.0)), cfg.seed)
        self.val_set = SeededView(val_raw, eval_transform(model.preprocess), cfg.seed)
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, rank=dist.rank,
                                    world=dist.world)
        # one loader each for the whole run: their worker processes (if any) start once, not
        # every epoch (on a GPU, restarting 14 of them cost about 1.8 s per epoch)
        self.train_loader = DataLoader(
            self.train_set, cfg.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=cfg.workers, collate_fn=collate_skip_bad,
            generator=torch.Generator().manual_seed(cfg.seed),      # off the global RNG
            persistent_workers=cfg.workers > 0, pin_memory=self.device.type == "cuda")
        self.val_loader = eval_loader(self.val_set, cfg.batch_size, cfg.workers, self.device,
                                      dist, persistent=True)
        global_batch = cfg.batch_size * dist.world
        self.steps_per_epoch = len(self.train_set) // global_batch
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.train_set)} training images are fewer than one global "
                             f"batch of {global_batch}; lower --batch-size")

        if cfg.sync_bn and dist.enabled:
            model = convert_sync_bn(model, self.device)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                                  use_buffers=True) if cfg.ema_decay > 0 else None)
        # From --weights with their classifier the average starts at a trained model, so a
        # long horizon is the point (fine-tuning), not a lag behind a network far from converged.
        lag = (None if _loads_trained_classifier(cfg, len(self.classes)) else
               ema_lag(cfg.ema_decay, self.steps_per_epoch * cfg.epochs))
        if lag and dist.main:
            warnings.warn(lag, stacklevel=2)
        self.mix = mixup_cutmix(len(self.classes), cfg.mixup, cfg.cutmix)
        net = model
        if dist.enabled:
            net = DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.net = torch.compile(net) if cfg.compile else net
        self.autocast, self.scaler = self._amp()
        self.teacher = _load_teacher(cfg, self.classes, self.device) if cfg.teacher else None
        self.best = -1.0

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
        return torch.autocast(kind, dtype=getattr(torch, cfg.amp_dtype)), scaler

    # checkpoints ------------------------------------------------------------------------------
    def checkpoint(self, epoch: int, step: int) -> None:
        """Collective: every process hands its RNG state to rank 0, which writes last.pt."""
        rngs = [rng_state()]
        if self.dist.enabled:
            rngs = [None] * self.dist.world
            torch_dist.all_gather_object(rngs, rng_state())
        if not self.dist.main:
            return
        save_checkpoint(self.out / "last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": epoch, "step": step, "best_top1": self.best, "rng": rngs,
            "world": self.dist.world, "config": self.cfg.to_dict(), "classes": self.classes})

    def restore(self, path) -> tuple[int, int]:
        ckpt = load_checkpoint(Path(path))
        epoch, step = ckpt["epoch"], ckpt["step"]
        world = ckpt.get("world", 1)
        arch = ckpt.get("config", {}).get("model")
        if arch and arch != self.cfg.model:
            raise ValueError(f"{path} is a checkpoint of {arch}, not {self.cfg.model}; resume "
                             f"it with --model {arch} (or leave --model out)")
        if ckpt.get("classes") and list(ckpt["classes"]) != self.classes:
            raise ValueError(f"{path} was trained on the classes {ckpt['classes']}, but the "
                             f"data has {self.classes}; resume it on the same data")
        if epoch >= self.cfg.epochs:
            done = f"{epoch} epochs" + (f" and {step} steps of the next" if step else "")
            raise ValueError(f"{path} has trained {done}, as many as --epochs "
                             f"{self.cfg.epochs} asks for; to train on, resume with --epochs "
                             f"greater than {epoch}")
        if step and world != self.dist.world:
            raise ValueError(f"{path} was written mid-epoch by {world} process(es); resume it "
                             f"with the same number of processes ({world})")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.best = ckpt["best_top1"]
        rngs = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        return epoch, step

    # the loop ---------------------------------------------------------------------------------
    def fit(self, resume) -> dict:
        cfg = self.cfg
        start_epoch, start_step = self.restore(resume) if resume is not None else (0, 0)
        if self.dist.main:
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        report = Reporter(self.out, enabled=self.dist.main, tensorboard=cfg.tensorboard,
                          resume_step=(start_epoch * self.steps_per_epoch + start_step
                                       if resume is not None else None))
        report.truncate(start_epoch)
        metrics = {}
        for epoch in range(start_epoch, cfg.epochs):
            first = start_step if epoch == start_epoch else 0
            train_stats = self.train_epoch(epoch, first, report)
            metrics = self.end_epoch(epoch, train_stats)
            report.epoch(metrics, (epoch + 1) * self.steps_per_epoch)
        report.close()
        self.dist.barrier()
        return metrics

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        with self.autocast:
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(x).float()
                loss = ((1 - cfg.kd_alpha) * loss
                        + cfg.kd_alpha * kd_loss(logits.float(), teacher_logits,
                                                 cfg.kd_temperature))
        return loss

    def train_epoch(self, epoch: int, first: int, report: Reporter) -> dict:
        cfg, steps = self.cfg, self.steps_per_epoch
        self.sampler.set_epoch(epoch, first * cfg.batch_size)
        self.train_set.epoch = epoch     # for plain indexing; the loader's keys carry the epoch
        loader = self.train_loader
        self.model.train()
        t0, sums = time.perf_counter(), torch.zeros(3, dtype=torch.float64)  # loss, seen, bad
        last_save = time.monotonic()
        bar = progress_bar(self.progress, steps - first, f"epoch {epoch + 1}/{cfg.epochs}")
        for step, (x, y, n_bad) in enumerate(loader, start=first):
            if step >= steps:
                break
            sums[2] += n_bad
            if len(y) == 0:
                continue
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if self.mix is not None:
                x, target = self.mix(x, y)
            loss = self.loss(x, target)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at epoch {epoch + 1} step {step}; "
                                         f"lower the learning rate")
            sums[0] += value * len(y)
            sums[1] += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if step % 10 == 0:
                report.step(epoch * steps + step, value, self.optimizer.param_groups[0]["lr"])
            due = bool(cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0)
            if cfg.checkpoint_every_minutes:      # decided together: checkpoint() is collective
                due |= self.dist.any(time.monotonic() - last_save
                                     > 60 * cfg.checkpoint_every_minutes)
            if due and step + 1 < steps:
                self.checkpoint(epoch, step + 1)
                last_save = time.monotonic()
        bar.close()
        elapsed = time.perf_counter() - t0
        loss_sum, seen, bad = self.dist.sum(sums).tolist()
        return {"train_loss": loss_sum / max(seen, 1), "images_per_s": seen / elapsed,
                "epoch_time_s": elapsed, "bad_images": int(bad)}

    def end_epoch(self, epoch: int, train_stats: dict) -> dict:
        eval_model = self.ema.module if self.ema is not None else self.model
        result = evaluate_model(eval_model, self.val_loader, device=self.device,
                                num_classes=len(self.classes), dist=self.dist)
        metrics = {"epoch": epoch + 1, "train_loss": train_stats["train_loss"],
                   "val_loss": result["loss"], "top1": result["top1"], "top5": result["top5"],
                   "lr": self.optimizer.param_groups[0]["lr"], **train_stats}
        if result["top1"] > self.best:
            self.best = result["top1"]
            if self.dist.main:
                eval_model.config["class_names"] = self.classes
                save(eval_model, self.out / "best", class_names=self.classes)
        self.checkpoint(epoch + 1, 0)
        return metrics


__all__ = ["ema_lag", "kd_loss", "train"]
