"""Non-maximum suppression of poses, used by every method that needs it."""
from __future__ import annotations

import torch


def pose_extent_sq(poses: torch.Tensor) -> torch.Tensor:
    """``(N,)``: ``w^2 + h^2`` of each pose's keypoint extent. ``poses``: ``(N, K, >=2)``."""
    ext = poses[..., :2].amax(1) - poses[..., :2].amin(1)
    return (ext ** 2).sum(-1)


def dekr_pose_nms(poses: torch.Tensor, scores: torch.Tensor, dist_thresh: float, num_thresh: int) -> list[int]:
    """DEKR's pose NMS: two poses are duplicates when more than ``num_thresh`` of their keypoints lie closer than
    ``dist_thresh * sqrt(w^2 + h^2)`` (the size of the first pose).

    Greedy in index order, as the official code: pose ``i`` not yet suppressed takes its duplicate group, keeps the
    group's highest-scoring member (unless that one was suppressed before) and suppresses the rest.

    Args:
        poses: ``(N, K, 2)`` keypoint coordinates. scores: ``(N,)``.
    Returns:
        indices of the kept poses, in the order they were kept.
    """
    n, k, _ = poses.shape
    area = pose_extent_sq(poses)[:, None, None].expand(n, n, k)
    dist = ((poses[:, None, :, :] - poses[None]) ** 2).sum(3).sqrt()
    close = (dist < dist_thresh * area.sqrt()).sum(2) > num_thresh
    suppressed: set[int] = set()
    keep: list[int] = []
    for i in range(n):
        if i in suppressed:
            continue
        group = close[i].nonzero()[:, 0].tolist() or [i]  # a zero-size pose is not close to itself
        best = group[int(torch.argmax(scores[group]))]
        if best in suppressed:
            continue
        keep.append(best)
        suppressed.update(group)
    return keep


def pairwise_oks(poses: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` object keypoint similarity between poses, row ``i`` taken as the reference (its area, and its
    keypoints with score > 0 as the labelled ones; a pose without any counts all keypoints).

    Args:
        poses: ``(N, K, 3)`` x, y, score. areas: ``(N,)`` the OKS scale ``s^2`` (e.g. box area). sigmas: ``(K,)``.
    """
    var = (2 * sigmas) ** 2
    d2 = ((poses[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1)  # (N, N, K)
    e = torch.exp(-d2 / (2 * var * (areas[:, None, None] + torch.finfo(poses.dtype).eps)))
    vis = poses[:, :, 2] > 0
    vis = torch.where(vis.any(1, keepdim=True), vis, torch.ones_like(vis))
    w = vis[:, None, :].to(poses.dtype)
    return (e * w).sum(-1) / w.sum(-1)


def oks_nms(poses: torch.Tensor, scores: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor,
            threshold: float, max_candidates: int = 1000) -> torch.Tensor:
    """Greedy pose NMS by OKS: in descending score order, a pose is dropped when its OKS with a kept pose (the kept
    one as reference) exceeds ``threshold``. Only the ``max_candidates`` best-scored poses take part (the OKS matrix
    is quadratic in their number). Returns the kept indices, best first."""
    order = torch.argsort(scores, descending=True)[:max_candidates]
    if order.numel() == 0:
        return order
    return order[greedy_keep(pairwise_oks(poses[order], areas[order], sigmas), threshold)]


def greedy_keep(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    """The greedy loop of every NMS here: rows in order (best first), keep a row that is still alive and drop every
    later one whose ``similarity`` with it (that row as reference) exceeds ``threshold``.

    Args:
        similarity: ``(N, N)``, rows and columns sorted best first.
    Returns:
        the kept row indices (long), ascending.
    """
    alive = torch.ones(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    keep = []
    for i in range(similarity.shape[0]):
        if not alive[i]:
            continue
        keep.append(i)
        alive &= similarity[i] <= threshold
        alive[i] = False
    return torch.tensor(keep, dtype=torch.long, device=similarity.device)


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, sigma: float = 0.5, score_threshold: float = 0.001,
             method: str = "gaussian", iou_threshold: float = 0.3,
             pixel_offset: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code", ICCV 2017), as
    CenterNet's ``soft_nms`` / ``soft_nms_39``: repeatedly take the box with the highest current score and decay the
    scores of the others by their IoU ``o`` with it: ``exp(-o^2 / sigma)`` (``"gaussian"``), ``1 - o`` above
    ``iou_threshold`` (``"linear"``) or 0 above it (``"hard"``, plain NMS); a box whose decayed score falls below
    ``score_threshold`` is dropped.

    IoU counts whole pixels as CenterNet does: a box's width is ``x2 - x1 + pixel_offset`` (1: inclusive pixel
    ends; 0: continuous boxes).

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2``. scores: ``(N,)``.
    Returns:
        ``(keep, new_scores)``: kept indices in the order taken (best first) and ``(N,)`` decayed scores.
    """
    if method not in ("gaussian", "linear", "hard"):
        raise ValueError(f"soft_nms: method must be 'gaussian', 'linear' or 'hard', got {method!r}")
    scores = scores.clone()
    n = scores.numel()
    b = boxes.to(scores.dtype)
    area = (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)
    alive = torch.ones(n, dtype=torch.bool, device=scores.device)
    keep = []
    for _ in range(n):
        if not alive.any():
            break
        i = int(torch.where(alive, scores, torch.full_like(scores, -torch.inf)).argmax())
        keep.append(i)
        alive[i] = False
        iw = (torch.minimum(b[i, 2], b[:, 2]) - torch.maximum(b[i, 0], b[:, 0]) + pixel_offset).clamp(min=0)
        ih = (torch.minimum(b[i, 3], b[:, 3]) - torch.maximum(b[i, 1], b[:, 1]) + pixel_offset).clamp(min=0)
        inter = iw * ih
        iou = inter / (area[i] + area - inter).clamp(min=torch.finfo(scores.dtype).tiny)
        if method == "gaussian":
            decay = torch.exp(-iou * iou / sigma)
        elif method == "linear":
            decay = torch.where(iou > iou_threshold, 1 - iou, torch.ones_like(iou))
        else:
            decay = torch.where(iou > iou_threshold, torch.zeros_like(iou), torch.ones_like(iou))
        hit = alive & (inter > 0)  # CenterNet leaves boxes that do not overlap alone
        scores = torch.where(hit, scores * decay, scores)
        alive &= ~(hit & (scores < score_threshold))
    return torch.tensor(keep, dtype=torch.long, device=scores.device), scores


def pairwise_oks_mean_area(poses: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor,
                           in_vis_thre: float | None = None) -> torch.Tensor:
    """``(N, N)`` OKS as the official top-down HRNet / SimpleBaseline ``oks_iou``: between poses ``i`` and ``j`` the
    scale is the mean of their areas, ``exp(-d^2 / (2 (2 sigma)^2 ((a_i + a_j) / 2 + eps)))`` averaged over the
    keypoints; with ``in_vis_thre`` only over the keypoints of pose ``j`` (the column) scoring above it (0 when
    none; the official ``list(vg > t) and list(vd > t)`` keeps ``vd``'s mask). Symmetric without ``in_vis_thre``.

    Args:
        poses: ``(N, K, 3)`` x, y, score. areas: ``(N,)`` (the official: crop box area ``s_w * s_h``). sigmas: ``(K,)``.
    """
    var = (2 * sigmas.to(poses.dtype)) ** 2
    d2 = ((poses[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1)  # (N, N, K)
    scale = (areas[:, None] + areas[None, :]) / 2 + torch.finfo(torch.float64).eps
    e = torch.exp(-d2 / var / scale[..., None].to(poses.dtype) / 2)
    if in_vis_thre is None:
        return e.mean(-1)
    w = (poses[:, :, 2] > in_vis_thre).to(poses.dtype)[None, :, :].expand_as(e)
    n = w.sum(-1)
    return torch.where(n > 0, (e * w).sum(-1) / n.clamp(min=1), torch.zeros_like(n))


def oks_nms_mean_area(poses: torch.Tensor, scores: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor,
                      threshold: float, in_vis_thre: float | None = None) -> torch.Tensor:
    """The official top-down ``oks_nms``: in descending score order, keep a pose and drop every remaining one whose
    :func:`pairwise_oks_mean_area` with it exceeds ``threshold``. Returns the kept indices, best first."""
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    return order[greedy_keep(pairwise_oks_mean_area(poses[order], areas[order], sigmas, in_vis_thre), threshold)]


def soft_oks_nms_mean_area(poses: torch.Tensor, scores: torch.Tensor, areas: torch.Tensor, sigmas: torch.Tensor,
                           threshold: float, max_dets: int = 20, in_vis_thre: float | None = None) -> torch.Tensor:
    """The official top-down ``soft_oks_nms``: repeatedly keep the best-scored remaining pose and decay the scores
    of the rest by ``exp(-oks^2 / threshold)`` (:func:`pairwise_oks_mean_area` with it), at most ``max_dets`` (20)
    poses. Returns the kept indices in the order taken; the decayed scores only order the selection."""
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    oks = pairwise_oks_mean_area(poses, areas, sigmas, in_vis_thre)
    current = scores[order].to(torch.float64)
    keep = []
    while order.numel() > 0 and len(keep) < max_dets:
        i = order[0]
        keep.append(int(i))
        order, current = order[1:], current[1:] * torch.exp(-oks[i, order[1:]].to(torch.float64) ** 2 / threshold)
        resort = torch.argsort(current, descending=True, stable=True)
        order, current = order[resort], current[resort]
    return torch.tensor(keep, dtype=torch.long, device=poses.device)
