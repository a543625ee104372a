"""Top-down heatmap losses: the weighted heatmap MSE of SimpleBaseline / HRNet and its online hard keypoint mining
variant.

Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018; Sun et al., "Deep High-Resolution
Representation Learning for Human Pose Estimation", CVPR 2019; OHKM from Chen et al., "Cascaded Pyramid Network for
Multi-Person Pose Estimation", CVPR 2018.

Shapes: predicted and target heatmaps ``(B, K, H, W)``; target weights ``(B, K)`` or ``(B, K, 1)`` (0 for keypoints
that are unlabelled or whose Gaussian misses the heatmap). Both losses equal the official HRNet code
(``JointsMSELoss`` / ``JointsOHKMMSELoss``): the weight multiplies prediction and target before the squared error
(so it enters squared) and every term carries a factor 0.5.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bupose.methods.topdown.realnvp import RealNVP


def keypoint_mse(pred: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None) -> torch.Tensor:
    """``0.5 * mean over the pixels of (w * (pred - target))^2`` for every sample and keypoint: ``(B, K)``."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"heatmaps must both be (B, K, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    diff = (pred - target).flatten(2)
    if target_weight is not None:
        w = target_weight.reshape(pred.shape[0], pred.shape[1], 1).to(diff.dtype)
        if target_weight.numel() != pred.shape[0] * pred.shape[1]:
            raise ValueError(f"target_weight {tuple(target_weight.shape)} does not match heatmaps "
                             f"{tuple(pred.shape)}: expected (B, K) or (B, K, 1)")
        diff = diff * w
    return 0.5 * diff.pow(2).mean(dim=2)


class KeypointMSELoss(nn.Module):
    """Mean over samples and keypoints of :func:`keypoint_mse`: ``forward(pred, target, target_weight) -> scalar``.

    Args:
        use_target_weight: weight each keypoint's error by its target weight (``LOSS.USE_TARGET_WEIGHT``).
    """

    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        return keypoint_mse(pred, target, target_weight if self.use_target_weight else None).mean()


class KeypointOHKMMSELoss(nn.Module):
    """Online hard keypoint mining: per sample, the mean of its ``topk`` largest keypoint losses
    (:func:`keypoint_mse`), averaged over the batch.

    Args:
        use_target_weight: as :class:`KeypointMSELoss`.
        topk: keypoints kept per sample (``LOSS.TOPK``; at most the number of keypoints).
    """

    def __init__(self, use_target_weight: bool = True, topk: int = 8):
        super().__init__()
        if topk < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        self.use_target_weight, self.topk = use_target_weight, topk

    def forward(self, pred: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
        per_keypoint = keypoint_mse(pred, target, target_weight if self.use_target_weight else None)
        if self.topk > per_keypoint.shape[1]:
            raise ValueError(f"LOSS.TOPK {self.topk} is more than the {per_keypoint.shape[1]} keypoints")
        return per_keypoint.topk(self.topk, dim=1, sorted=False).values.mean()


class TopDownHeatmapLoss(nn.Module):
    """The trainer's loss: ``forward(outputs, batch) -> {"loss", "heatmap_loss"}`` with ``outputs["heatmaps"]``,
    ``batch["heatmaps"]`` ``(B, K, H, W)`` and ``batch["target_weight"]``.

    Every process averages over its own (equally sized) share of the global batch, so the gradients averaged by
    DistributedDataParallel equal those of one process holding the whole batch; ``world_size`` and ``all_reduce``
    are accepted for the trainer's protocol and need no use.
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, outputs: dict, batch: dict, world_size: int = 1, all_reduce=None) -> dict[str, torch.Tensor]:
        loss = self.criterion(outputs["heatmaps"], batch["heatmaps"], batch["target_weight"])
        return {"loss": loss, "heatmap_loss": loss.detach()}


class KLDiscretLoss(nn.Module):
    """SimCC's loss (Li et al., "SimCC: a Simple Coordinate Classification Perspective for Human Pose Estimation",
    ECCV 2022), as mmpose 1.x's ``KLDiscretLoss``: per keypoint and axis, the KL divergence of the soft-max of
    ``beta * pred`` from the label (or, with ``label_softmax``, from the soft-max of ``label_beta * label``), averaged
    over the bins, times the keypoint's weight; summed over samples, keypoints and both axes, divided by K (not by
    the batch size).

    ``forward((pred_x (B, K, Wx), pred_y (B, K, Wy)), (label_x, label_y), target_weight (B, K)) -> scalar``.

    Args:
        beta: temperature of the predictions' soft-max. label_softmax: turn labels into distributions by a soft-max.
        label_beta: temperature of the labels' soft-max (mmpose's default 10). use_target_weight: weight by
            ``target_weight`` (else every keypoint counts).
    """

    def __init__(self, beta: float = 1.0, label_softmax: bool = False, label_beta: float = 10.0,
                 use_target_weight: bool = True):
        super().__init__()
        self.beta, self.label_softmax, self.label_beta = beta, label_softmax, label_beta
        self.use_target_weight = use_target_weight

    def criterion(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(R, W), (R, W) -> (R,)``: mean over bins of ``labels * (log labels - log_softmax(beta pred))`` (0 where
        a label is 0)."""
        log_pt = torch.log_softmax(pred * self.beta, dim=1)
        if self.label_softmax:
            labels = torch.softmax(labels * self.label_beta, dim=1)
        return torch.nn.functional.kl_div(log_pt, labels, reduction="none").mean(dim=1)

    def forward(self, pred_simcc, gt_simcc, target_weight: torch.Tensor) -> torch.Tensor:
        b, k, _ = pred_simcc[0].shape
        weight = target_weight.reshape(-1).to(pred_simcc[0].dtype) if self.use_target_weight else 1.0
        if self.use_target_weight and weight.numel() != b * k:
            raise ValueError(f"target_weight {tuple(target_weight.shape)} does not match (B, K) = ({b}, {k})")
        loss = 0.0
        for pred, target in zip(pred_simcc, gt_simcc):
            if pred.shape != target.shape:
                raise ValueError(f"SimCC prediction {tuple(pred.shape)} and label {tuple(target.shape)} differ")
            loss = loss + (self.criterion(pred.reshape(-1, pred.shape[-1]),
                                          target.reshape(-1, target.shape[-1])) * weight).sum()
        return loss / k


class TopDownSimCCLoss(nn.Module):
    """The trainer's loss for SimCC: ``forward(outputs, batch) -> {"loss", "simcc_loss"}`` with ``outputs["simcc_x"]``
    / ``["simcc_y"]``, ``batch["keypoint_x_labels"]`` / ``["keypoint_y_labels"]`` and ``batch["target_weight"]``.

    As mmpose's, the criterion sums over the samples, so a process's loss (and its gradients) scale with its share of
    the batch; DistributedDataParallel's averaging then gives the loss of one process's share, as mmpose's training.
    ``world_size`` and ``all_reduce`` are accepted for the trainer's protocol.
    """

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, outputs: dict, batch: dict, world_size: int = 1, all_reduce=None) -> dict[str, torch.Tensor]:
        loss = self.criterion((outputs["simcc_x"], outputs["simcc_y"]),
                              (batch["keypoint_x_labels"], batch["keypoint_y_labels"]), batch["target_weight"])
        return {"loss": loss, "simcc_loss": loss.detach()}


class RLELoss(nn.Module):
    """RLE's loss (Li et al., "Human Pose Regression with Residual Log-likelihood Estimation", ICCV 2021), as mmpose
    1.x's ``RLELoss``: with ``sigma = sigmoid(sigma_logits)`` and the normalised residual
    ``e = (pred - target) / (sigma + 1e-9)`` per keypoint,

    ``loss = log sigma - log p_flow(e)`` (the flow's log density, shared by x and y) ``+ log(2 sigma) + |e|``
    (``residual``, Laplace ``q``; Gaussian: ``log(sigma sqrt(2 pi)) + e^2 / 2``),

    per coordinate ``(B, K, 2)``, times the target weight (``use_target_weight``), divided by B (``size_average``),
    summed. The flow (:class:`~bupose.methods.topdown.realnvp.RealNVP`) is ``flow_model``, mmpose's name.

    ``forward(pred (B, K, 2), sigma_logits (B, K, 2), target (B, K, 2), target_weight (B, K, 1) or (B, K))``.
    :meth:`from_sigma` takes ``sigma`` after the sigmoid.
    """

    def __init__(self, use_target_weight: bool = False, size_average: bool = True, residual: bool = True,
                 q_distribution: str = "laplace"):
        super().__init__()
        if q_distribution not in ("laplace", "gaussian"):
            raise ValueError(f"q_distribution must be 'laplace' or 'gaussian', got {q_distribution!r}")
        self.use_target_weight, self.size_average = use_target_weight, size_average
        self.residual, self.q_distribution = residual, q_distribution
        self.flow_model = RealNVP()

    def forward(self, pred, sigma_logits, target, target_weight=None) -> torch.Tensor:
        return self.from_sigma(pred, sigma_logits.sigmoid(), target, target_weight)

    def from_sigma(self, pred, sigma, target, target_weight=None) -> torch.Tensor:
        """The loss with ``sigma`` in (0, 1) already (the sigmoid applied)."""
        if pred.shape != target.shape or sigma.shape != target.shape or target.shape[-1] != 2:
            raise ValueError(f"RLELoss: pred {tuple(pred.shape)}, sigma {tuple(sigma.shape)} and target "
                             f"{tuple(target.shape)} must all be (B, K, 2)")
        b, k = target.shape[:2]
        error = (pred - target) / (sigma + 1e-9)
        log_phi = self.flow_model.log_prob(error.reshape(-1, 2)).reshape(b, k, 1)
        loss = torch.log(sigma) - log_phi
        if self.residual:
            if self.q_distribution == "laplace":
                loss = loss + torch.log(sigma * 2) + error.abs()
            else:
                loss = loss + torch.log(sigma * math.sqrt(2 * math.pi)) + 0.5 * error ** 2
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("RLELoss: use_target_weight needs target_weight")
            loss = loss * target_weight.reshape(b, k, 1).to(loss.dtype)
        if self.size_average:
            loss = loss / b
        return loss.sum()


class TopDownRLELoss(nn.Module):
    """The trainer's loss for RLE: ``forward(outputs, batch) -> {"loss", "rle_loss"}`` with ``outputs["coords"]``
    ``(B, K, 4)`` (mu normalised to the crop, sigma after the sigmoid), ``batch["keypoint_labels"]`` ``(B, K, 2)`` and
    ``batch["target_weight"]`` ``(B, K)``.

    ``criterion`` is the model head's :class:`RLELoss` (``head.loss_module``, whose flow is a part of the model, so
    the optimiser trains it and checkpoints keep it, as mmpose's). Held outside this module's parameters (the model
    owns them). As mmpose's, the loss is divided by the process's batch; ``world_size`` and ``all_reduce`` are
    accepted for the trainer's protocol.
    """

    def __init__(self, criterion: RLELoss):
        super().__init__()
        self.__dict__["criterion"] = criterion  # not a submodule: the model owns (and optimises) the flow

    def forward(self, outputs: dict, batch: dict, world_size: int = 1, all_reduce=None) -> dict[str, torch.Tensor]:
        coords = outputs["coords"]
        loss = self.criterion.from_sigma(coords[..., :2], coords[..., 2:4], batch["keypoint_labels"].to(coords.dtype),
                                         batch["target_weight"])
        return {"loss": loss, "rle_loss": loss.detach()}
