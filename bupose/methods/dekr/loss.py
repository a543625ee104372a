"""DEKR losses: masked heatmap MSE plus the size-normalised smooth-L1 offset loss (Geng et al., CVPR 2021)."""
from __future__ import annotations

import torch
from torch import nn


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)


class DEKRLoss(nn.Module):
    """``heatmap_factor * masked MSE + offset_factor * smooth-L1``.

    The heatmap term is the mean of ``(pred - target)^2 * weight`` over all cells and channels. The offset term
    sums ``smooth_l1(pred - target) * weight`` (weight ``1/sqrt(person area)``, see :mod:`targets`) and divides by
    the number of supervised offset values, as the paper's normalised loss.

    Inputs are the model outputs and the batched :class:`~bupose.methods.dekr.targets.DEKRTargets` fields:
    heatmap ``(B, K+1, H, W)``, offset ``(B, 2K, H, W)``. Under DistributedDataParallel (``world_size > 1``,
    ``all_reduce`` summing a tensor over processes) the offset term is normalised by the count over the global
    batch, so that the averaged gradients equal those of one process holding the whole batch.
    """

    def __init__(self, heatmap_factor: float = 1.0, offset_factor: float = 0.03, beta: float = 1.0 / 9):
        super().__init__()
        self.heatmap_factor = heatmap_factor
        self.offset_factor = offset_factor
        self.beta = beta

    def forward(self, outputs: dict, targets: dict, world_size: int = 1, all_reduce=None) -> dict[str, torch.Tensor]:
        heat = ((outputs["heatmap"] - targets["heatmap"]) ** 2 * targets["heatmap_weight"]).mean()
        w = targets["offset_weight"]
        num = (w > 0).sum()
        if all_reduce is not None and world_size > 1:
            num = all_reduce(num) / world_size
        off = (smooth_l1(outputs["offset"], targets["offset"], self.beta) * w).sum() / num.clamp(min=1)
        heat, off = heat * self.heatmap_factor, off * self.offset_factor
        return {"loss": heat + off, "heatmap_loss": heat.detach(), "offset_loss": off.detach()}
