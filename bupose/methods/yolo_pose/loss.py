"""YOLO-Pose training losses: YOLOv5 anchor matching, CIoU box loss, objectness / class BCE and the OKS keypoint
loss of YOLO-Pose (Maji et al., "YOLO-Pose: Enhancing YOLO for Multi Person Pose Estimation Using Object Keypoint
Similarity Loss", CVPRW 2022), after its official ``ComputeLoss`` (TexasInstruments/edgeai-yolov5, branch
``yolo-pose``, itself YOLOv5's loss by Jocher et al., Ultralytics). CIoU: Zheng et al., "Distance-IoU Loss", AAAI
2020.

Coordinates
-----------
Targets come in **input pixels** with bupose's convention (pixel centres at integers, the input spans
``[-0.5, W - 0.5]``, see :mod:`bupose.data.geometry`). At a level of stride ``s`` they are converted to **grid
units**, where cell ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``: a position ``p`` becomes ``(p + 0.5) / s`` and a
size ``w`` becomes ``w / s``. This is exactly the official ``normalised * grid size`` (the official normalised
coordinates are measured from the image's left edge), and it is the inverse of the decoding
``pixel = s * grid - 0.5``. Predictions, as in the official loss, decode per matched cell to box centre
``2 sigmoid(t_xy) - 0.5`` and size ``(2 sigmoid(t_wh))^2 * anchor``, keypoints ``2 t - 0.5`` (no sigmoid), both
relative to the cell's corner ``(j, i)`` in grid units.

Mask convention
---------------
``batch["mask"]`` (loss weights at input resolution) is sampled at each cell's centre: the cell centre lies at
input position ``s * (j + 0.5) - 0.5`` (between two pixels for even ``s``); we take the pixel just after it,
``s * j + s // 2`` (clamped to the image), for columns and rows alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bupose.errors import ConfigError, DataError

# Neighbour-cell offsets of YOLOv5's matching, in this order: the cell itself, then left, up, right, down (as
# amounts subtracted from the centre before truncation).
_OFFSETS = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]])
_NEIGHBOUR_BIAS = 0.5


def official_gains(num_levels: int = 4, num_classes: int = 1, input_size: int = 640) -> dict[str, float]:
    """The loss gains the official training actually uses, as constructor keywords.

    ``data/hyp.scratch.yaml`` sets ``box=0.05, obj=1.0, cls=0.5, kpt=0.10``; ``train.py`` then scales
    ``box *= 3 / nl``, ``cls *= nc / 80 * 3 / nl`` and ``obj *= (imgsz / 640)^2 * 3 / nl`` (``kpt`` is not scaled).
    The keypoint-confidence BCE is multiplied by the (scaled) ``cls`` gain. For a 4-level model, one class, 640
    input: ``box 0.0375, obj 0.75, cls = kpt_conf 0.0046875, kpt 0.10``.
    """
    nl, nc = float(num_levels), float(num_classes)
    cls = 0.5 * (nc / 80.0 * 3.0 / nl)
    return {"box_gain": 0.05 * (3.0 / nl), "obj_gain": 1.0 * ((input_size / 640) ** 2 * 3.0 / nl),
            "cls_gain": cls, "kpt_gain": 0.10, "kpt_conf_gain": cls}


def official_balance(num_levels: int) -> list[float]:
    """Per-level objectness weights of the official loss (finest level first): ``[4, 1, 0.4]`` for 3 levels, else
    the first ``num_levels`` of ``[4, 1, 0.25, 0.06, 0.02]``."""
    if num_levels == 3:
        return [4.0, 1.0, 0.4]
    if not 1 <= num_levels <= 5:
        raise ConfigError(f"YOLOPoseLoss: the official objectness balance covers 1 to 5 levels, got {num_levels}; "
                          f"pass balance= explicitly")
    return [4.0, 1.0, 0.25, 0.06, 0.02][:num_levels]


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired ``xywh`` boxes ``(N, 4)`` and ``(N, 4)`` -> ``(N,)``.

    ``CIoU = IoU - rho^2 / c^2 - alpha v`` with ``rho`` the centre distance, ``c`` the diagonal of the enclosing box,
    ``v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2`` and ``alpha = v / (1 - IoU + v)`` (no gradient through
    ``alpha``). ``eps`` is placed as YOLOv5 does (added to heights, union, ``c^2`` and ``alpha``'s denominator), so
    values agree with the official loss to float precision.
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    l1, r1, t1, b1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    l2, r2, t2, b2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(r1, r2) - torch.max(l1, l2)).clamp(0) * (torch.min(b1, b2) - torch.max(t1, t2)).clamp(0)
    w1, h1 = r1 - l1, b1 - t1 + eps
    w2, h2 = r2 - l2, b2 - t2 + eps
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    c2 = (torch.max(r1, r2) - torch.min(l1, l2)) ** 2 + (torch.max(b1, b2) - torch.min(t1, t2)) ** 2 + eps
    rho2 = ((l2 + r2 - l1 - r1) ** 2 + (t2 + b2 - t1 - b1) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@dataclass
class LevelTargets:
    """The positives of one level (``n`` candidates, in the official order: neighbour offset, anchor, target).

    ``batch``, ``anchor``, ``gy``, ``gx``: ``(n,)`` int64 cell indices (clamped to the grid); ``box``: ``(n, 4)``
    target ``xywh`` in grid units, ``xy`` relative to the cell corner; ``keypoints``: ``(n, K, 2)`` relative to the
    cell corner (0 where unlabelled); ``visible``: ``(n, K)`` bool, labelled (``v > 0``); ``cls``: ``(n,)`` int64;
    ``target``: ``(n,)`` int64 row of ``batch["targets"]``.
    """

    batch: torch.Tensor
    anchor: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    box: torch.Tensor
    keypoints: torch.Tensor
    visible: torch.Tensor
    cls: torch.Tensor
    target: torch.Tensor

    def __len__(self) -> int:
        return int(self.batch.shape[0])


class YOLOPoseLoss(nn.Module):
    """The official YOLO-Pose loss (``ComputeLoss(kpt_label=True)``), with an ignore mask and an optional L1 term.

    ``loss = (lbox + lobj + lcls + lkpt + lkpt_conf [+ l1_kpt]) * batch_size * world_size`` where, summed over
    levels ``l``:

    * ``lbox = box_gain * mean(1 - CIoU)`` over the level's positives;
    * ``lobj = obj_gain * balance[l] * BCE(t_obj, target)``, the target being ``CIoU.detach().clamp(0)`` at positives
      (``gr = 1``) and 0 elsewhere. Each candidate's BCE is weighted by the mask at its cell centre, matched positives
      always by 1, and the sum is divided by the number of candidates with non-zero weight: with an all-ones mask
      this is the official mean;
    * ``lcls = cls_gain * mean BCE`` of the class logits against one-hot (optionally smoothed) targets, only when
      ``num_classes > 1`` (the official skips it for one class);
    * ``lkpt = kpt_gain * sum(labelled (1 - exp(-d^2 / ((2 sigma)^2 * area + 1e-9)))) / #labelled``, ``d`` and
      ``area = w * h`` of the target box in grid units. This is the official ``kpt_loss_factor * mean(...)`` with
      ``kpt_loss_factor = (#labelled + #unlabelled) / #labelled``. It is *not* the COCO OKS exponent
      ``d^2 / (2 area (2 sigma)^2)``: the official loss lacks the factor 2 and uses the box area; we keep that;
    * ``lkpt_conf = kpt_conf_gain * mean BCE`` of every keypoint's confidence logit against "labelled";
    * ``l1_kpt = l1_kpt_gain * sum(labelled (|dx| + |dy|) / sqrt(area)) / #labelled`` (off by default). The OKS
      term's gradient ``exp(-d^2 / c) 2 d / c`` vanishes once ``d^2 >> c = 4 sigma^2 area``, so a keypoint predicted
      far off (early training, a wrong person) gets no pull back; the L1 gradient has constant magnitude
      ``1 / sqrt(area)`` whatever the distance.

    Keypoints are labelled where ``v > 0``; the official labels mark unlabelled keypoints by ``x = y = 0`` and mask
    with ``x != 0``, which is the same set except for the measure-zero case of a labelled point at exactly a cell
    corner. Deviations from the official code, none of which changes its results on valid input: class logits are
    ``[5, 5 + nc)`` and keypoints start at ``5 + nc`` (the official hard-codes 6 and takes every channel after 5 as
    class logits, which only works for one class); a level whose positives have no labelled keypoint adds 0 to
    ``lkpt`` (the official gives NaN).

    Distributed training: like the official ``train.py`` the loss is multiplied by ``world_size`` (DDP averages the
    gradients). With ``all_reduce`` (summing a tensor over processes) and ``world_size > 1`` every normaliser
    (positives, labelled keypoints, weighted candidates) is the global count divided by ``world_size``, which
    equals the official per-process count when the processes have the same counts and otherwise makes N processes
    follow one process holding the whole batch.

    Args:
        anchors: ``(L, A, 2)`` anchor ``(w, h)`` in input pixels, finest level first.
        strides: ``(L,)`` level strides.
        num_keypoints: ``K``.
        sigmas: ``(K,)`` the dataset's OKS sigmas (COCO: 0.026 ... 0.107).
        num_classes: ``nc``.
        box_gain, obj_gain, cls_gain, kpt_gain, kpt_conf_gain: defaults are the official effective gains for
            4 levels, one class and 640 input (:func:`official_gains`; other settings: :meth:`official`).
        anchor_t: a target matches an anchor when both ``w/w_a``, ``h/h_a`` and their inverses are below this.
        balance: ``(L,)`` per-level objectness weights; ``None``: :func:`official_balance`.
        label_smoothing: class BCE targets ``1 - eps/2`` and ``eps/2``.
        l1_kpt_gain: gain of the bounded-gradient L1 keypoint term (0: off, as official).
    """

    def __init__(self, anchors, strides: Sequence[int], num_keypoints: int, sigmas, num_classes: int = 1,
                 box_gain: float = 0.0375, obj_gain: float = 0.75, cls_gain: float = 0.0046875,
                 kpt_gain: float = 0.10, kpt_conf_gain: float = 0.0046875, anchor_t: float = 4.0,
                 balance: Optional[Sequence[float]] = None, label_smoothing: float = 0.0, l1_kpt_gain: float = 0.0):
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        strides = [int(s) for s in strides]
        if anchors.ndim != 3 or anchors.shape[-1] != 2 or anchors.shape[0] != len(strides):
            raise ConfigError(f"YOLOPoseLoss: anchors must have shape (L, A, 2) with L = {len(strides)} levels (one "
                              f"per stride), got {tuple(anchors.shape)}")
        if not bool((anchors > 0).all()) or min(strides) <= 0:
            raise ConfigError("YOLOPoseLoss: anchors and strides must be positive")
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
        if int(num_keypoints) < 1 or sigmas.numel() != num_keypoints or not bool((sigmas > 0).all()):
            raise ConfigError(f"YOLOPoseLoss: sigmas must hold num_keypoints = {num_keypoints} positive values, got "
                              f"{sigmas.numel()}")
        if int(num_classes) < 1:
            raise ConfigError(f"YOLOPoseLoss: num_classes must be >= 1, got {num_classes}")
        balance = official_balance(len(strides)) if balance is None else [float(b) for b in balance]
        if len(balance) != len(strides):
            raise ConfigError(f"YOLOPoseLoss: balance needs one weight per level ({len(strides)}), got {len(balance)}")
        if anchor_t <= 1:
            raise ConfigError(f"YOLOPoseLoss: anchor_t must be > 1, got {anchor_t}")
        self.strides = strides
        self.anchors_grid = [anchors[i] / s for i, s in enumerate(strides)]  # (A, 2) per level, grid units
        self.num_anchors = int(anchors.shape[1])
        self.num_keypoints, self.num_classes = int(num_keypoints), int(num_classes)
        self.sigmas = sigmas
        self.box_gain, self.obj_gain, self.cls_gain = float(box_gain), float(obj_gain), float(cls_gain)
        self.kpt_gain, self.kpt_conf_gain, self.l1_kpt_gain = float(kpt_gain), float(kpt_conf_gain), float(l1_kpt_gain)
        self.anchor_t, self.balance = float(anchor_t), balance
        self.cls_pos, self.cls_neg = 1.0 - 0.5 * label_smoothing, 0.5 * label_smoothing

    @classmethod
    def official(cls, anchors, strides: Sequence[int], num_keypoints: int, sigmas, num_classes: int = 1,
                 input_size: int = 640, **kwargs) -> "YOLOPoseLoss":
        """The loss with the official gains scaled to ``len(strides)`` levels, ``num_classes`` and ``input_size``
        exactly as the official ``train.py`` does (:func:`official_gains`); ``kwargs`` override anything."""
        gains = official_gains(len(strides), num_classes, input_size)
        return cls(anchors, strides, num_keypoints, sigmas, num_classes=num_classes, **{**gains, **kwargs})

    @property
    def num_channels(self) -> int:
        """Channels per anchor the head must predict: ``5 + nc + 3K``."""
        return 5 + self.num_classes + 3 * self.num_keypoints

    # -- targets --------------------------------------------------------------------------------------------------
    def check_targets(self, targets: torch.Tensor, batch_size: int) -> None:
        k, cols = self.num_keypoints, 6 + 3 * self.num_keypoints
        if not isinstance(targets, torch.Tensor) or targets.ndim != 2 or targets.shape[1] != cols:
            shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise DataError(f"batch['targets'] must be an (M, 6 + 3K) = (M, {cols}) tensor for K = {k} keypoints, "
                            f"rows [batch_index, class, cx, cy, w, h, x_1, y_1, v_1, ..., x_K, y_K, v_K] in input "
                            f"pixels; got {shape}")
        if targets.shape[0] == 0:
            return
        b, c, wh = targets[:, 0], targets[:, 1], targets[:, 4:6]
        bad = torch.stack([((b < 0) | (b >= batch_size) | (b != b.round())).any(),
                           ((c < 0) | (c >= self.num_classes) | (c != c.round())).any(),
                           ~(wh > 0).all(), ~torch.isfinite(targets[:, :6]).all()]).tolist()
        what = [f"batch indices must be integers in [0, {batch_size})",
                f"classes must be integers in [0, {self.num_classes})", "box widths and heights must be > 0",
                "batch index, class and box must be finite"]
        errors = [w for w, x in zip(what, bad) if x]
        if errors:
            raise DataError("batch['targets']: " + "; ".join(errors))

    def build_targets(self, targets: torch.Tensor, grid_sizes: Sequence[tuple[int, int]]) -> list[LevelTargets]:
        """Match targets ``(M, 6 + 3K)`` (input pixels) to anchors and cells of each level (grid ``(H_l, W_l)``).

        A target matches anchor ``a`` of level ``l`` when ``max(w / w_a, h / h_a, w_a / w, h_a / h) < anchor_t``.
        Each match takes the cell holding the box centre and, along each axis, the neighbour nearer to the centre
        (left when the fractional part is < 0.5, right when it is > 0.5) unless the centre lies in the first / last
        cell: usually 3 cells. Exactly YOLOv5's ``build_targets`` (offset bias 0.5), including its ordering.
        """
        dev = targets.device
        k = self.num_keypoints
        out = []
        for level, (gh, gw) in enumerate(grid_sizes):
            s = float(self.strides[level])
            anchors = self.anchors_grid[level].to(dev)
            xy = (targets[:, 2:4] + 0.5) / s
            wh = targets[:, 4:6] / s
            kpts = targets[:, 6:].reshape(-1, k, 3)
            kxy, vis = (kpts[..., :2] + 0.5) / s, kpts[..., 2] > 0

            ratio = wh[None] / anchors[:, None]  # (A, M, 2)
            matched = torch.max(ratio, 1.0 / ratio).amax(2) < self.anchor_t  # (A, M)
            inv = torch.tensor([gw, gh], dtype=xy.dtype, device=dev) - xy
            lo = (xy % 1.0 < _NEIGHBOUR_BIAS) & (xy > 1.0)  # (M, 2): take the left / upper neighbour
            hi = (inv % 1.0 < _NEIGHBOUR_BIAS) & (inv > 1.0)  # right / lower neighbour
            use = torch.stack([torch.ones_like(lo[:, 0]), lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]])  # (5, M)
            o, a, m = (use[:, None] & matched[None]).nonzero(as_tuple=True)

            gxy = xy[m]
            gij = (gxy - _OFFSETS.to(dev, xy.dtype)[o]).long()  # truncation, as the official .long()
            v = vis[m]
            kp = torch.where(v[..., None], kxy[m] - gij[:, None].to(kxy.dtype), torch.zeros_like(kxy[m]))
            out.append(LevelTargets(batch=targets[m, 0].long(), anchor=a, gy=gij[:, 1].clamp(0, gh - 1),
                                    gx=gij[:, 0].clamp(0, gw - 1), box=torch.cat([gxy - gij, wh[m]], 1),
                                    keypoints=kp, visible=v, cls=targets[m, 1].long(), target=m))
        return out

    def cell_weights(self, mask: torch.Tensor, grid_size: tuple[int, int], stride: int) -> torch.Tensor:
        """Mask ``(B, H, W)`` at input resolution -> ``(B, H_l, W_l)`` sampled at the cell centres (module doc)."""
        gh, gw = grid_size
        h, w = mask.shape[-2:]
        rows = (torch.arange(gh, device=mask.device) * stride + stride // 2).clamp(max=h - 1)
        cols = (torch.arange(gw, device=mask.device) * stride + stride // 2).clamp(max=w - 1)
        return mask[:, rows][:, :, cols]

    # -- loss -------------------------------------------------------------------------------------------------------
    def _check_levels(self, levels, batch_size: int, height: int, width: int) -> list[tuple[int, int]]:
        if not isinstance(levels, (list, tuple)) or len(levels) != len(self.strides):
            got = f"{len(levels)} tensors" if isinstance(levels, (list, tuple)) else type(levels).__name__
            raise DataError(f"outputs['levels'] must be a list of {len(self.strides)} tensors (one per stride "
                            f"{self.strides}), got {got}")
        sizes = []
        for t, s in zip(levels, self.strides):
            want = (batch_size, self.num_anchors, None, None, self.num_channels)
            if (t.ndim != 5 or t.shape[0] != batch_size or t.shape[1] != self.num_anchors
                    or t.shape[4] != self.num_channels
                    or abs(t.shape[2] - height / s) >= 1 or abs(t.shape[3] - width / s) >= 1):
                raise DataError(f"outputs['levels'] at stride {s}: expected shape (B, A, H/s, W/s, 5 + nc + 3K) = "
                                f"{want[:2]} + ({height / s:g}, {width / s:g}, {self.num_channels}) for a "
                                f"{height}x{width} input, got {tuple(t.shape)}")
            sizes.append((int(t.shape[2]), int(t.shape[3])))
        return sizes

    def forward(self, outputs: dict, batch: dict, world_size: int = 1,
                all_reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict[str, torch.Tensor]:
        """``outputs["levels"]``: ``L`` raw head outputs ``(B, A, H_l, W_l, 5 + nc + 3K)``; ``batch``: ``image``
        ``(B, 3, H, W)``, ``targets`` ``(M, 6 + 3K)`` (input pixels) and optionally ``mask`` ``(B, H, W)``.

        Returns ``loss`` (for backward, scaled by batch size and ``world_size``) and the detached, gain-weighted
        terms ``box_loss, obj_loss, cls_loss, kpt_loss, kpt_conf_loss`` (+ ``l1_kpt_loss`` when enabled), not
        scaled by the batch size (as the official logs them).
        """
        image = batch["image"]
        bsz, height, width = image.shape[0], image.shape[-2], image.shape[-1]
        levels = outputs["levels"]
        grid_sizes = self._check_levels(levels, bsz, height, width)
        dev = levels[0].device
        targets = batch["targets"]
        self.check_targets(targets, bsz)
        targets = targets.to(dev, torch.float32)
        mask = batch.get("mask")
        if mask is not None and tuple(mask.shape) != (bsz, height, width):
            raise DataError(f"batch['mask'] must have shape (B, H, W) = {(bsz, height, width)}, got "
                            f"{tuple(mask.shape)}")

        matches = self.build_targets(targets, grid_sizes)
        weights, counts = [], []
        for level, (m, size) in enumerate(zip(matches, grid_sizes)):
            if mask is None:
                w = torch.ones((bsz, self.num_anchors, *size), device=dev)
            else:
                cell = self.cell_weights(mask.to(dev, torch.float32), size, self.strides[level])
                w = cell[:, None].expand(-1, self.num_anchors, -1, -1).clone()
            w[m.batch, m.anchor, m.gy, m.gx] = 1.0
            weights.append(w)
            counts.append(torch.stack([torch.tensor(float(len(m)), device=dev), m.visible.sum().float(),
                                       (w > 0).sum().float()]))
        counts = torch.stack(counts)  # (L, 3): positives, labelled keypoints, weighted candidates
        if all_reduce is not None and world_size > 1:
            counts = all_reduce(counts) / world_size
        counts = torch.where(counts > 0, counts, torch.ones_like(counts))  # a zero count has a zero sum

        zero = levels[0].new_zeros(())
        box = obj = cls = kpt = kconf = l1 = zero
        k, nc = self.num_keypoints, self.num_classes
        sigmas = self.sigmas.to(dev)
        for level, (pred, m, w) in enumerate(zip(levels, matches, weights)):
            n_pos, n_vis, n_obj = counts[level].unbind()
            tobj = torch.zeros_like(pred[..., 4])
            n = len(m)
            if n:
                ps = pred[m.batch, m.anchor, m.gy, m.gx]  # (n, C)
                pxy = ps[:, :2].sigmoid() * 2.0 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2.0) ** 2 * self.anchors_grid[level].to(dev)[m.anchor]
                iou = bbox_ciou(torch.cat([pxy, pwh], 1), m.box)
                box = box + (1.0 - iou).sum() / n_pos

                kp = ps[:, 5 + nc:].reshape(n, k, 3)
                delta = kp[..., :2] * 2.0 - 0.5 - m.keypoints  # (n, K, 2)
                area = m.box[:, 2:4].prod(1, keepdim=True)  # (n, 1)
                vis = m.visible.to(delta.dtype)
                oks = 1.0 - torch.exp(-delta.pow(2).sum(-1) / (area * (4.0 * sigmas ** 2) + 1e-9))
                kpt = kpt + (oks * vis).sum() / n_vis
                kconf = kconf + F.binary_cross_entropy_with_logits(kp[..., 2], vis, reduction="sum") / (n_pos * k)
                if self.l1_kpt_gain > 0:
                    dist = delta.abs().sum(-1) / area.clamp_min(1e-9).sqrt()
                    l1 = l1 + (dist * vis).sum() / n_vis
                tobj[m.batch, m.anchor, m.gy, m.gx] = iou.detach().clamp(0).to(tobj.dtype)
                if nc > 1:
                    onehot = torch.full_like(ps[:, 5:5 + nc], self.cls_neg)
                    onehot[torch.arange(n, device=dev), m.cls] = self.cls_pos
                    cls = cls + F.binary_cross_entropy_with_logits(ps[:, 5:5 + nc], onehot,
                                                                   reduction="sum") / (n_pos * nc)
            bce = F.binary_cross_entropy_with_logits(pred[..., 4], tobj, reduction="none")
            obj = obj + (bce * w).sum() / n_obj * self.balance[level]

        terms = {"box_loss": box * self.box_gain, "obj_loss": obj * self.obj_gain, "cls_loss": cls * self.cls_gain,
                 "kpt_loss": kpt * self.kpt_gain, "kpt_conf_loss": kconf * self.kpt_conf_gain}
        if self.l1_kpt_gain > 0:
            terms["l1_kpt_loss"] = l1 * self.l1_kpt_gain
        total = sum(terms.values()) * (bsz * world_size)
        return {"loss": total, **{name: v.detach() for name, v in terms.items()}}
