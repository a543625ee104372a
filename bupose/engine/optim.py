"""Optimisers, learning-rate schedules and the weight EMA of the shared trainer.

Two recipes are covered by the same few settings:

* HRNet / DEKR: Adam, one parameter group, step schedule (``TRAIN.LR_STEP`` / ``LR_FACTOR``), set per epoch.
* YOLOv5 / YOLO-Pose: SGD with Nesterov momentum and three parameter groups (norm weights and biases without
  weight decay), a linear warm-up over ``max(WARMUP_EPOCHS * iterations, WARMUP_MIN_ITERS)`` iterations (biases
  from ``WARMUP_BIAS_LR`` down, the rest from 0 up, momentum from ``WARMUP_MOMENTUM`` up), then a cosine or linear
  decay to ``LR * LR_FINAL`` per epoch; gradients accumulated up to a nominal batch of 64 with weight decay scaled
  accordingly; and an exponential moving average of the weights.

RTMPose (Jiang et al., 2023) adds the ``flat_cosine`` schedule (``TRAIN.LR`` for ``FLAT_EPOCHS``, then a cosine to
``LR * LR_FINAL`` by iteration, mmengine's ``CosineAnnealingLR`` with ``convert_to_iter_based``); ViTPose (Xu et al.,
NeurIPS 2022) layer-wise learning-rate decay (``TRAIN.LAYER_DECAY``, :func:`layer_decay_groups`).

Everything is a function of ``(epoch, iteration)``, so a resumed run reproduces the schedule exactly.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from bupose.errors import ConfigError

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = True) -> list[dict]:
    """One group with ``weight_decay`` for everything, or (``decay_norm_and_bias=False``) three groups in YOLOv5's
    order: ``norm`` (weights of normalisation layers, no decay), ``weight`` (the rest, with decay), ``bias`` (no
    decay). Each group carries its ``name``; the bias group is the one warm-up treats differently."""
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay, "name": "all"}]
    norm, weight, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif isinstance(module, _NORMS):
                norm.append(p)
            else:
                weight.append(p)
    return [{"params": norm, "weight_decay": 0.0, "name": "norm"},
            {"params": weight, "weight_decay": weight_decay, "name": "weight"},
            {"params": bias, "weight_decay": 0.0, "name": "bias"}]


def _no_decay(name: str, p: torch.Tensor) -> bool:
    """ViTPose's rule: no weight decay on vectors (norms, biases) and position embeddings."""
    return p.ndim == 1 or name.endswith(".bias") or "pos_embed" in name


def layer_decay_groups(model: nn.Module, weight_decay: float, decay_rate: float) -> list[dict]:
    """Parameter groups for layer-wise learning-rate decay (ViTPose's ``LayerDecayOptimWrapperConstructor``).

    The backbone numbers its parameters (``backbone.layer_id(name)`` for a name relative to the backbone,
    ``backbone.num_layers`` blocks: 0 for the embeddings, ``i + 1`` for block ``i``, ``num_layers + 1`` for the
    rest); every other parameter (the head) is ``num_layers + 1``. Group ``layer_{id}_{decay|no_decay}`` has
    ``lr_scale = decay_rate ** (num_layers + 1 - id)`` (the schedule multiplies its learning rate by it) and weight
    decay 0 for vectors and position embeddings. Raises ConfigError for a model whose backbone has no layers.
    """
    model = getattr(model, "module", model)
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "layer_id") or not hasattr(backbone, "num_layers"):
        raise ConfigError(f"TRAIN.LAYER_DECAY {decay_rate} needs a backbone made of numbered layers (a ViT: MODEL.NAME "
                          f"topdown_vit); {type(model).__name__} has none (set TRAIN.LAYER_DECAY 1)")
    top = backbone.num_layers + 1
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = backbone.layer_id(name[len("backbone."):]) if name.startswith("backbone.") else top
        decay = "no_decay" if _no_decay(name, p) else "decay"
        key = f"layer_{layer}_{decay}"
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if decay == "no_decay" else weight_decay,
                           "name": key, "lr_scale": decay_rate ** (top - layer)}
        groups[key]["params"].append(p)
    return list(groups.values())


def accumulation_steps(cfg, global_batch: int) -> int:
    """Optimiser steps happen every this many iterations (``TRAIN.NOMINAL_BATCH`` / global batch, at least 1)."""
    nominal = cfg.TRAIN.NOMINAL_BATCH
    return max(round(nominal / global_batch), 1) if nominal > 0 else 1


def build_optimizer(cfg, model: nn.Module, global_batch: int | None = None) -> torch.optim.Optimizer:
    """The optimiser of ``TRAIN.OPTIMIZER`` over :func:`parameter_groups`. With ``TRAIN.NOMINAL_BATCH``, weight
    decay is scaled by ``global_batch * accumulation / NOMINAL_BATCH`` as YOLOv5 does."""
    t = cfg.TRAIN
    wd = t.WD
    if t.NOMINAL_BATCH > 0 and global_batch:
        wd = wd * global_batch * accumulation_steps(cfg, global_batch) / t.NOMINAL_BATCH
    if t.LAYER_DECAY < 1:
        groups = layer_decay_groups(model, wd, t.LAYER_DECAY)
    else:
        groups = parameter_groups(model, wd, t.DECAY_NORM_AND_BIAS)
    if t.OPTIMIZER == "adam":
        return torch.optim.Adam(groups, lr=t.LR)
    if t.OPTIMIZER == "adamw":
        return torch.optim.AdamW(groups, lr=t.LR)
    if t.OPTIMIZER == "sgd":
        return torch.optim.SGD(groups, lr=t.LR, momentum=t.MOMENTUM, nesterov=t.NESTEROV)
    raise ConfigError(f"TRAIN.OPTIMIZER {t.OPTIMIZER!r} is not one of adam, adamw, sgd")


def epoch_factor(cfg, epoch: float) -> float:
    """The learning-rate multiplier of ``epoch`` (0-based) after warm-up.

    ``step``: ``LR_FACTOR ** (milestones <= epoch)``; ``cosine``: ``1 -> LR_FINAL`` along half a cosine over
    ``END_EPOCH`` epochs; ``linear``: ``1 -> LR_FINAL`` reached at the last epoch (YOLOv5's two lambdas);
    ``flat_cosine``: 1 before ``FLAT_EPOCHS``, then ``1 -> LR_FINAL`` along half a cosine ending at ``END_EPOCH``
    (``epoch`` fractional: the schedule moves every iteration).
    """
    t = cfg.TRAIN
    if t.LR_SCHEDULE == "flat_cosine":
        if t.FLAT_EPOCHS >= t.END_EPOCH:
            raise ConfigError(f"TRAIN.FLAT_EPOCHS {t.FLAT_EPOCHS} must be below TRAIN.END_EPOCH {t.END_EPOCH} with "
                              f"the flat_cosine schedule")
        if epoch < t.FLAT_EPOCHS:
            return 1.0
        progress = (epoch - t.FLAT_EPOCHS) / (t.END_EPOCH - t.FLAT_EPOCHS)
        return t.LR_FINAL + (1 - t.LR_FINAL) * (1 + math.cos(math.pi * progress)) / 2
    if t.LR_SCHEDULE == "step":
        return t.LR_FACTOR ** sum(epoch >= s for s in t.LR_STEP)
    if t.LR_SCHEDULE == "cosine":
        return ((1 - math.cos(epoch * math.pi / t.END_EPOCH)) / 2) * (t.LR_FINAL - 1) + 1
    if t.LR_SCHEDULE == "linear":
        return (1 - epoch / max(t.END_EPOCH - 1, 1)) * (1.0 - t.LR_FINAL) + t.LR_FINAL
    raise ConfigError(f"TRAIN.LR_SCHEDULE {t.LR_SCHEDULE!r} is not one of step, cosine, linear, flat_cosine")


def learning_rate(cfg, epoch: float) -> float:
    """Learning rate of ``epoch`` after warm-up: ``TRAIN.LR * epoch_factor`` (before a group's ``lr_scale``)."""
    return cfg.TRAIN.LR * epoch_factor(cfg, epoch)


def warmup_iterations(cfg, iters_per_epoch: int) -> int:
    w = cfg.TRAIN.WARMUP_EPOCHS
    return max(round(w * iters_per_epoch), cfg.TRAIN.WARMUP_MIN_ITERS) if w > 0 else 0


class Schedule:
    """Sets learning rate, momentum (SGD warm-up) and the accumulation count for each iteration.

    Args:
        cfg: the config (``TRAIN.*``).
        iters_per_epoch: iterations (batches per process) in an epoch.
        global_batch: images per iteration over all processes.
    """

    def __init__(self, cfg, iters_per_epoch: int, global_batch: int):
        self.cfg = cfg
        self.iters_per_epoch = iters_per_epoch
        self.warmup = warmup_iterations(cfg, iters_per_epoch)
        self.accumulate = accumulation_steps(cfg, global_batch)

    def accumulation(self, epoch: int, it: int) -> int:
        """Iterations per optimiser step at this point; during warm-up it ramps from 1 up, as YOLOv5."""
        ni = epoch * self.iters_per_epoch + it
        if ni < self.warmup:
            return max(1, int(np.interp(ni, [0, self.warmup], [1, self.accumulate]).round()))
        return self.accumulate

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, it: int) -> float:
        """Set the groups' ``lr`` (and ``momentum`` during warm-up) for iteration ``it`` of ``epoch``; returns the
        learning rate of the weight group."""
        t = self.cfg.TRAIN
        per_iteration = t.LR_SCHEDULE == "flat_cosine"
        base = learning_rate(self.cfg, epoch + it / self.iters_per_epoch if per_iteration else epoch)
        ni = epoch * self.iters_per_epoch + it
        warm = ni < self.warmup
        lr = base
        for group in optimizer.param_groups:
            scale = group.get("lr_scale", 1.0)
            target = base * scale
            if warm:
                start = t.WARMUP_BIAS_LR if group.get("name") == "bias" else 0.0
                group["lr"] = float(np.interp(ni, [0, self.warmup], [start, target]))
                if "momentum" in group:
                    group["momentum"] = float(np.interp(ni, [0, self.warmup], [t.WARMUP_MOMENTUM, t.MOMENTUM]))
            else:
                group["lr"] = target
                if "momentum" in group:
                    group["momentum"] = t.MOMENTUM
            if group.get("name") in ("weight", "all") or (group.get("name", "").endswith("_decay") and scale == 1):
                lr = group["lr"]
        return lr


class ModelEMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers), as YOLOv5's ModelEMA:
    after each optimiser step ``ema = d * ema + (1 - d) * model`` with ``d = decay * (1 - exp(-updates / tau))``,
    so early averages follow the model closely. ``ema.module`` is the averaged model (in eval mode)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(getattr(model, "module", model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        current = getattr(model, "module", model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(current[k].detach(), alpha=1 - d)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
