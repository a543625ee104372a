"""DEKR training targets at the output stride (Geng et al., "Bottom-Up Human Pose Estimation Via Disentangled
Keypoint Regression", CVPR 2021).

Coordinates here are output-map pixels (``x_out = x_input / stride``, the convention DEKR's test path inverts by
multiplying by the stride); pixel centres are at integer coordinates.

Two slips of the official code are not reproduced (README, "DEKR"):

* the offset weight ``1 / sqrt(area)`` is meant to normalise by the person's size; the official "area" is
  ``max_x^2 + max_y^2`` because unlabelled joints at (0, 0) enter the extent, i.e. the distance of the person from
  the image origin. Here ``area = w^2 + h^2`` of the labelled keypoints' extent (the squared diagonal of the person).
* the official heatmap generator gives the centre channel ``sigma`` instead of ``center_sigma`` whenever there are
  fewer than 17 keypoints (CrowdPose), because 17 is hard-coded. Here the centre always gets ``center_sigma``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def person_centers(keypoints: np.ndarray) -> np.ndarray:
    """``(N, 3)``: mean of the labelled keypoints of each person, v = 1 (0 when none is labelled)."""
    kp = np.asarray(keypoints, np.float64)
    vis = kp[..., 2] > 0
    n = vis.sum(1)
    xy = (kp[..., :2] * vis[..., None]).sum(1) / np.maximum(n, 1)[:, None]
    return np.concatenate([xy, (n > 0)[:, None].astype(np.float64)], axis=1)


def person_areas(keypoints: np.ndarray) -> np.ndarray:
    """``(N,)``: ``w^2 + h^2`` of the extent of the labelled keypoints (the person's squared diagonal)."""
    kp = np.asarray(keypoints, np.float64)
    vis = (kp[..., 2] > 0)[..., None]
    hi = np.where(vis, kp[..., :2], -np.inf).max(1, initial=-np.inf)
    lo = np.where(vis, kp[..., :2], np.inf).min(1, initial=np.inf)
    ext = np.where(vis.any(1), hi - lo, 0.0)  # no labelled keypoint: area 0
    return (ext ** 2).sum(1)


@dataclass
class DEKRTargets:
    """Targets of one image.

    Attributes:
        heatmap: ``(K+1, H, W)`` float32 Gaussian heatmaps, person centre last.
        heatmap_weight: ``(K+1, H, W)`` float32 loss weights: 1 near keypoints, ``bg_weight`` elsewhere, 0 on
            ignored regions.
        offset: ``(2K, H, W)`` float32, channels (x0, y0, x1, y1, ...): ``location - keypoint`` (the official
            sign, so that ``keypoint = location - offset``).
        offset_weight: ``(2K, H, W)`` float32: ``1 / sqrt(area)`` of the person owning the location, else 0.
    """

    heatmap: np.ndarray
    heatmap_weight: np.ndarray
    offset: np.ndarray
    offset_weight: np.ndarray


class DEKRTargetEncoder:
    """Keypoints in output-map coordinates -> :class:`DEKRTargets`.

    Args:
        num_joints: K.
        sigma: Gaussian sigma of keypoint heatmaps (output pixels).
        center_sigma: Gaussian sigma of the centre heatmap.
        bg_weight: heatmap loss weight away from keypoints.
        radius: offsets are regressed in the ``2 radius x 2 radius`` window ``[c - radius, c + radius)`` around
            each person's (integer) centre location.
    """

    def __init__(self, num_joints: int, sigma: float = 2.0, center_sigma: float = 4.0, bg_weight: float = 0.1,
                 radius: int = 4):
        self.num_joints = num_joints
        self.sigma = sigma
        self.center_sigma = center_sigma
        self.bg_weight = bg_weight
        self.radius = radius

    def __call__(self, keypoints: np.ndarray, output_size: tuple[int, int], ignore_weight: np.ndarray | None = None,
                 centers: np.ndarray | None = None, areas: np.ndarray | None = None) -> DEKRTargets:
        """
        Args:
            keypoints: ``(N, K, 3)`` x, y in output pixels, v (> 0 labelled).
            output_size: ``(H, W)`` of the maps.
            ignore_weight: ``(H, W)`` 1 where the loss counts, 0 on ignored regions (None: all 1).
            centers: ``(N, 3)`` person centres (x, y, v); default :func:`person_centers` of ``keypoints``. Pass
                the centres computed before cropping when a crop cut keypoints away.
            areas: ``(N,)`` person areas for the offset weights; default :func:`person_areas`.
        """
        kp = np.asarray(keypoints, np.float64).reshape(-1, self.num_joints, 3)
        h, w = output_size
        k = self.num_joints
        centers = person_centers(kp) if centers is None else np.asarray(centers, np.float64)
        areas = person_areas(kp) if areas is None else np.asarray(areas, np.float64)

        heatmap = np.zeros((k + 1, h, w), np.float32)
        near = np.zeros((k + 1, h, w), bool)
        for j in range(k + 1):
            pts = kp[:, j] if j < k else centers
            sigma = self.sigma if j < k else self.center_sigma
            for x, y, v in pts:
                if v > 0 and 0 <= x < w and 0 <= y < h:
                    _splat_gaussian(heatmap[j], near[j], x, y, sigma)
        heatmap_weight = np.where(near, 1.0, self.bg_weight).astype(np.float32)
        if ignore_weight is not None:
            heatmap_weight *= np.asarray(ignore_weight, np.float32)[None]

        offset = np.zeros((2 * k, h, w), np.float32)
        offset_weight = np.zeros((2 * k, h, w), np.float32)
        owner_area = np.full((k, h, w), np.inf)
        r = self.radius
        for (cx, cy, cv), person, area in zip(centers, kp, areas):
            ix, iy = int(cx), int(cy)
            if cv < 1 or not (0 <= cx < w and 0 <= cy < h) or area <= 0:
                continue
            x0, x1 = max(ix - r, 0), min(ix + r, w)
            y0, y1 = max(iy - r, 0), min(iy + r, h)
            gy, gx = np.mgrid[y0:y1, x0:x1]
            for j, (x, y, v) in enumerate(person):
                if v <= 0 or not (0 <= x < w and 0 <= y < h):
                    continue
                win = owner_area[j, y0:y1, x0:x1]
                mine = area < win  # the smaller person wins where windows overlap
                win[mine] = area
                offset[2 * j, y0:y1, x0:x1][mine] = (gx - x)[mine]
                offset[2 * j + 1, y0:y1, x0:x1][mine] = (gy - y)[mine]
                offset_weight[2 * j:2 * j + 2, y0:y1, x0:x1][:, mine] = 1.0 / np.sqrt(area)
        return DEKRTargets(heatmap, heatmap_weight, offset, offset_weight)


def _splat_gaussian(channel: np.ndarray, near: np.ndarray, x: float, y: float, sigma: float) -> None:
    """Max-merge ``exp(-d^2 / 2 sigma^2)`` into the window ``[x - 3 sigma - 1, x + 3 sigma + 2)``; mark it near."""
    h, w = channel.shape
    x0, y0 = max(int(np.floor(x - 3 * sigma - 1)), 0), max(int(np.floor(y - 3 * sigma - 1)), 0)
    x1, y1 = min(int(np.ceil(x + 3 * sigma + 2)), w), min(int(np.ceil(y + 3 * sigma + 2)), h)
    gx = np.arange(x0, x1) - x
    gy = np.arange(y0, y1) - y
    g = np.exp(-(gy[:, None] ** 2 + gx[None, :] ** 2) / (2 * sigma ** 2))
    np.maximum(channel[y0:y1, x0:x1], g, out=channel[y0:y1, x0:x1])
    near[y0:y1, x0:x1] = True
