"""``mobilenets.train``: the training loop (one process, or DDP under torchrun)."""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..data import (ImageFolderDataset, collate_skip_bad, eval_transform, mixup_cutmix,
                    resolve_split, train_transform)
from ..models import create_model
from ..weights import save
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, make_config
from .evaluate import evaluate_model
from .optim import build_optimizer, build_scheduler
from .sampling import EpochSampler, SeededView


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _build_model(cfg: TrainConfig, num_classes: int):
    options = {"num_classes": num_classes, "resolution": cfg.resolution}
    for key in ("dropout", "drop_path_rate", "bn_momentum"):
        if getattr(cfg, key) is not None:
            options[key] = getattr(cfg, key)
    if cfg.weights:
        options["weights"] = cfg.weights
    return create_model(cfg.model, **options)


def train(cfg: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          **overrides) -> dict:
    """Train ``cfg.model`` on ``cfg.data`` (the built-in sample when None); write ``last.pt``,
    ``best/``, ``metrics.jsonl``, ``train_config.json`` and ``curves.png`` into ``cfg.out``.
    Returns the last epoch's metrics."""
    cfg = cfg or make_config(**overrides)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = _device()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    train_dir, val_dir = resolve_split(cfg.data, cfg.val)
    train_raw = ImageFolderDataset(train_dir, strict=cfg.strict_data)
    val_raw = ImageFolderDataset(val_dir, classes=train_raw.classes, strict=cfg.strict_data)
    classes = list(train_raw.classes)
    model = _build_model(cfg, len(classes)).to(device)
    pre = dict(model.preprocess, resolution=cfg.resolution,
               resize=int(round(cfg.resolution / model.preprocess["crop_pct"])))
    model.preprocess = pre
    train_set = SeededView(train_raw, train_transform(
        cfg.resolution, pre, auto_augment=cfg.auto_augment, color_jitter=cfg.color_jitter,
        random_erasing=cfg.random_erasing), cfg.seed)
    val_set = SeededView(val_raw, eval_transform(pre), cfg.seed)
    sampler = EpochSampler(len(train_set), cfg.seed)
    loader_rng = torch.Generator().manual_seed(cfg.seed)   # keeps DataLoader off the global RNG
    steps_per_epoch = len(train_set) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"{len(train_set)} training images are fewer than one batch of "
                         f"{cfg.batch_size}; lower --batch-size")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                         use_buffers=True) if cfg.ema_decay > 0 else None)
    mix = mixup_cutmix(len(classes), cfg.mixup, cfg.cutmix)
    step_fn = torch.compile(model) if cfg.compile else model
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.amp else nullcontext())

    start_epoch, start_step, best = 0, 0, -1.0
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    if resume is not None:
        ckpt = load_checkpoint(Path(resume))
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, start_step, best = ckpt["epoch"], ckpt["step"], ckpt["best_top1"]
        set_rng_state(ckpt["rng"])
        _truncate_metrics(out / "metrics.jsonl", start_epoch)

    def checkpoint(epoch: int, step: int) -> None:
        save_checkpoint(out / "last.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch, "step": step, "best_top1": best, "rng": rng_state(),
            "config": cfg.to_dict(), "classes": classes})

    metrics = {}
    last_save = time.monotonic()
    for epoch in range(start_epoch, cfg.epochs):
        first = start_step if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first * cfg.batch_size)
        train_set.epoch = epoch
        loader = DataLoader(train_set, cfg.batch_size, sampler=sampler, drop_last=True,
                            num_workers=cfg.workers, collate_fn=collate_skip_bad,
                            generator=loader_rng, persistent_workers=False)
        model.train()
        t0, seen, loss_sum, bad = time.perf_counter(), 0, 0.0, 0
        bar = _progress(progress, steps_per_epoch - first, f"epoch {epoch + 1}/{cfg.epochs}")
        for step, (x, y, n_bad) in enumerate(loader, start=first):
            if step >= steps_per_epoch:
                break
            bad += n_bad
            if len(y) == 0:
                continue
            x, y = x.to(device), y.to(device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if mix is not None:
                x, target = mix(x, y)
            with autocast:
                logits = step_fn(x)
                loss = F.cross_entropy(logits.float(), target,
                                       label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            seen += len(y)
            loss_sum += loss.item() * len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1} step "
                                         f"{step}; lower the learning rate")
            due_steps = cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0
            due_time = (cfg.checkpoint_every_minutes
                        and time.monotonic() - last_save > 60 * cfg.checkpoint_every_minutes)
            if (due_steps or due_time) and step + 1 < steps_per_epoch:
                checkpoint(epoch, step + 1)
                last_save = time.monotonic()
        bar.close()
        elapsed = time.perf_counter() - t0
        eval_model = ema.module if ema is not None else model
        result = evaluate_model(eval_model, val_set, cfg.batch_size, cfg.workers, device)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                   "val_loss": result["loss"], "top1": result["top1"], "top5": result["top5"],
                   "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / elapsed,
                   "epoch_time_s": elapsed, "bad_images": bad}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        print(f"epoch {epoch + 1}: loss {metrics['train_loss']:.3f}  top-1 "
              f"{100 * metrics['top1']:.1f}%  top-5 {100 * metrics['top5']:.1f}%  "
              f"{metrics['images_per_s']:.0f} img/s", flush=True)
        if result["top1"] > best:
            best = result["top1"]
            eval_model.config["class_names"] = classes
            save(eval_model, out / "best", class_names=classes)
        checkpoint(epoch + 1, 0)
        last_save = time.monotonic()
    _plot_curves(out)
    return metrics


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric lines a killed run wrote after its last checkpoint."""
    if path.is_file():
        lines = path.read_text().splitlines()[:epochs_done]
        path.write_text("".join(line + "\n" for line in lines))


def _progress(enabled: bool, total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if enabled:
        return tqdm(total=total, desc=desc, leave=False)
    return _NoBar()


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def _plot_curves(out: Path) -> None:
    """``curves.png``: loss and top-1 per epoch (skipped when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [r["train_loss"] for r in rows], label="train")
    a.plot(epochs, [r["val_loss"] for r in rows], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(epochs, [100 * r["top1"] for r in rows], label="top-1")
    b.plot(epochs, [100 * r["top5"] for r in rows], label="top-5")
    b.set_xlabel("epoch"), b.set_ylabel("val accuracy (%)"), b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)


__all__ = ["train"]
