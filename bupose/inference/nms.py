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
