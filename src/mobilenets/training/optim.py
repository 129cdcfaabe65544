"""Optimisers and per-step learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

OPTIMIZERS = ("sgd", "rmsprop", "adamw")
SCHEDULES = ("cosine", "step", "exponential", "constant")


def param_groups(model: nn.Module, weight_decay: float,
                 depthwise_weight_decay: float | None = None) -> list[dict]:
    """No weight decay on BatchNorm parameters and biases (1-D tensors); depthwise kernels
    (convolutions with one input channel per group) get ``depthwise_weight_decay`` when it is
    given (MobileNetV1 §3.2: "very little or no weight decay on the depthwise filters"), the
    common ``weight_decay`` otherwise."""
    depthwise = set()
    if depthwise_weight_decay is not None:
        depthwise = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)
                     and m.groups > 1 and m.groups == m.in_channels}
    decay, no_decay, dw = [], [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else dw if id(p) in depthwise else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if depthwise_weight_decay is not None:
        groups.append({"params": dw, "weight_decay": depthwise_weight_decay})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.depthwise_weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.momentum > 0)
    if cfg.optimizer == "rmsprop":
        # TensorFlow's RMSProp adds eps inside the square root, PyTorch's outside: TF's eps
        # e corresponds to PyTorch eps sqrt(e) (the papers use e = 1e-3 with decay 0.9)
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.rmsprop_decay,
                                   eps=math.sqrt(cfg.rmsprop_eps), momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (linear warmup, then the schedule)."""
    epoch = step / steps_per_epoch
    warm = cfg.warmup_epochs
    if warm > 0 and epoch < warm:
        return (step + 1) / (warm * steps_per_epoch)
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    if cfg.schedule == "cosine":
        total = max(cfg.epochs - warm, 1e-9)
        progress = min((epoch - warm) / total, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return max(cfg.decay_rate ** math.floor(epoch / cfg.decay_epochs), floor)
    if cfg.schedule == "exponential":
        return max(cfg.decay_rate ** (epoch / cfg.decay_epochs), floor)
    if cfg.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))
