"""AdaptivePose losses (Xiao et al., "AdaptivePose: Human Parts as Adaptive Points", AAAI 2022; AdaptivePose++,
arXiv 2210.04014), as the official ``MultiPoseLoss`` of ``multi_pose_wodet`` (COCO) / ``multi_pose_crowdpose``.

``loss = center_factor * focal(centre) + offset_factor * L1(offsets) + aux_factor * focal(keypoint heatmaps)
+ oks_factor * (1 - OKS)``:

* focal: CenterNet's penalty-reduced focal loss (alpha 2, beta 4) on ``sigmoid(logits)`` clamped to ``[1e-4,
  1 - 1e-4]``: ``-(sum_pos (1-p)^2 log p + sum_neg (1-y)^4 p^2 log(1-p)) / num_pos`` (positives: target exactly
  1; without positives the sum is not divided). Each cell is weighted by the target's ``mask`` (0 on crowd regions
  and people without keypoints) raised to 1 wherever the target is above 0 (the Gaussians of real people) -- the
  official code has no mask;
* offsets: L1 between the predicted offsets gathered at each person's centre cell and the targets, over the counted
  keypoints, divided by their number (``+ 1e-4``). With ``bone`` (AdaptivePose++, official on CrowdPose) the mean
  of that and the same L1 on bone vectors ``kp[b] - kp[a]`` over the edges whose two keypoints both count;
* OKS (official on COCO, weight 5; off on CrowdPose): ``1 - OKS`` per person with a counted keypoint, the pose
  ``c_int + offset``, ``OKS = mean over counted k of exp(-d_k^2 / (2 area (2 sigma_k)^2))``, averaged over people.

Under DistributedDataParallel (``world_size > 1``, ``all_reduce`` summing a tensor over processes) the
normalisers (positives, counted keypoints, people) are global-batch counts, so the averaged gradients equal those of
one process holding the whole batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bupose.data.keypoints import KeypointSpec

#: the official bone edges of the bone-vector L1 (``RegWeightedL1Loss_coco`` / ``_crowdpose``), by keypoint name
OFFICIAL_BONES: dict[str, tuple[tuple[str, str], ...]] = {
    "coco": (("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
             ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
             ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"), ("left_shoulder", "left_hip"),
             ("right_shoulder", "right_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
             ("right_hip", "right_knee"), ("right_knee", "right_ankle")),
    "crowdpose": (("neck", "right_shoulder"), ("left_shoulder", "left_elbow"), ("left_shoulder", "neck"),
                  ("neck", "head"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
                  ("right_elbow", "right_wrist"), ("left_hip", "right_hip"), ("left_hip", "left_knee"),
                  ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("right_knee", "right_ankle")),
}


def bone_edges(spec: KeypointSpec) -> tuple[tuple[int, int], ...]:
    """The official bone edges of ``spec``'s layout as index pairs; the spec's skeleton for other layouts."""
    if spec.name in OFFICIAL_BONES:
        return tuple((spec.index(a), spec.index(b)) for a, b in OFFICIAL_BONES[spec.name])
    return tuple(spec.skeleton)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               num_pos: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's focal loss (see the module docstring). ``logits``, ``target``, ``weight``: same shape.
    ``num_pos``: the normaliser (default: the number of target cells equal to 1)."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).to(p.dtype)
    neg = 1.0 - pos
    loss = pos * (1 - p) ** 2 * torch.log(p) + neg * (1 - target) ** 4 * p ** 2 * torch.log(1 - p)
    if weight is not None:
        loss = loss * weight
    if num_pos is None:
        num_pos = pos.sum()
    total = -loss.sum()
    return torch.where(num_pos > 0, total / num_pos.clamp(min=1e-12), total)


def gather_at(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``maps (B, C, H, W)``, ``index (B, M)`` flat ``y * W + x`` -> ``(B, M, C)``: the channel vectors there."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).transpose(1, 2)


class AdaptivePoseLoss(nn.Module):
    """The AdaptivePose training loss (see the module docstring); official weights as defaults (COCO).

    Args:
        sigmas: ``(K,)`` OKS sigmas of the layout.
        center_factor, offset_factor, aux_factor, oks_factor: the terms' weights (official: 1, 1, 1, 5 on COCO;
            1, 1, 1, 0 on CrowdPose).
        bone_edges: ``((a, b), ...)`` keypoint index pairs for the bone-vector L1, or None for none (official:
            CrowdPose's 12 edges, :func:`bone_edges`).

    ``forward(outputs, batch)``: ``outputs`` the model's (``center``, ``offset``, ``aux_heatmap`` -- needed when
    ``aux_factor > 0``), ``batch`` the collated :class:`~bupose.methods.adaptive_pose.targets.AdaptivePoseTargets`
    fields. Returns ``{"loss", "center_loss", "offset_loss", "aux_loss", "oks_loss"}`` (the terms weighted,
    detached).
    """

    def __init__(self, *, sigmas: Sequence[float], center_factor: float = 1.0, offset_factor: float = 1.0,
                 aux_factor: float = 1.0, oks_factor: float = 5.0,
                 bone_edges: Sequence[tuple[int, int]] | None = None):
        super().__init__()
        self.register_buffer("sigmas", torch.as_tensor(list(sigmas), dtype=torch.float32), persistent=False)
        self.center_factor, self.offset_factor = center_factor, offset_factor
        self.aux_factor, self.oks_factor = aux_factor, oks_factor
        self.bone_edges = tuple((int(a), int(b)) for a, b in bone_edges) if bone_edges else None

    def forward(self, outputs: dict, batch: dict, world_size: int = 1, all_reduce=None) -> dict[str, torch.Tensor]:
        def count(x: torch.Tensor) -> torch.Tensor:
            x = x.detach().float()
            return all_reduce(x) / world_size if all_reduce is not None and world_size > 1 else x

        zero = outputs["center"].new_zeros(())
        mask = batch["mask"]
        target = batch["center_heatmap"]
        center = focal_loss(outputs["center"], target, torch.maximum(mask, (target > 0).to(mask.dtype)),
                            count(target.eq(1).sum()))

        aux = zero
        if self.aux_factor:
            if "aux_heatmap" not in outputs:
                raise KeyError("AdaptivePoseLoss: aux_factor > 0 needs the model's 'aux_heatmap' output (a model "
                               "built with MODEL.SPEC.AUX_HEATMAP true, in training mode); set the aux factor to 0 "
                               "otherwise")
            t = batch["aux_heatmap"]
            aux = focal_loss(outputs["aux_heatmap"], t, torch.maximum(mask.expand_as(t), (t > 0).to(t.dtype)),
                             count(t.eq(1).sum()))

        pred = gather_at(outputs["offset"], batch["index"])  # (B, M, 2K)
        tgt, w = batch["offset"], batch["offset_weight"]
        offset = ((pred - tgt).abs() * w).sum() / (count(w.sum()) + 1e-4)
        if self.bone_edges:
            b, m = tgt.shape[:2]
            a_idx = [a for a, _ in self.bone_edges]
            b_idx = [e for _, e in self.bone_edges]
            pv, tv, wv = (x.reshape(b, m, -1, 2) for x in (pred, tgt, w))
            bone_w = wv[:, :, a_idx] * wv[:, :, b_idx]
            bone = (((pv[:, :, b_idx] - pv[:, :, a_idx]) - (tv[:, :, b_idx] - tv[:, :, a_idx])).abs()
                    * bone_w).sum() / (count(bone_w.sum()) + 1e-4)
            offset = (offset + bone) / 2

        oks = zero
        if self.oks_factor:
            oks = self._oks_loss(pred, tgt, w, batch["area"], count)

        center, offset = center * self.center_factor, offset * self.offset_factor
        aux, oks = aux * self.aux_factor, oks * self.oks_factor
        return {"loss": center + offset + aux + oks, "center_loss": center.detach(),
                "offset_loss": offset.detach(), "aux_loss": aux.detach(), "oks_loss": oks.detach()}

    def _oks_loss(self, pred, tgt, w, area, count) -> torch.Tensor:
        b, m = tgt.shape[:2]
        vis = w.reshape(b, m, -1, 2)[..., 0]  # (B, M, K)
        d2 = ((pred - tgt).reshape(b, m, -1, 2) ** 2).sum(-1)  # the integer centre cancels out
        var = (2 * self.sigmas.to(pred)) ** 2
        e = torch.exp(-d2 / (2 * area.clamp(min=1e-6)[..., None] * var))
        n = vis.sum(-1)
        valid = n > 0
        oks = (e * vis).sum(-1) / n.clamp(min=1)
        people = count(valid.sum())
        return ((1 - oks) * valid).sum() / people.clamp(min=1)
