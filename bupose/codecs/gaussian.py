"""Gaussian heatmap targets, with mmpose 1.x's numerics (``codecs/utils/gaussian_heatmap.py``):

* ``gaussian_heatmaps``: the MSRA / SimpleBaseline target (Xiao et al., "Simple Baselines for Human Pose Estimation
  and Tracking", ECCV 2018): a (2r+1)^2 patch, r = 3 sigma, centred on the keypoint rounded to a pixel;
* ``udp_gaussian_heatmaps``: the same patch with its centre shifted to the sub-pixel keypoint (Huang et al., "The
  Devil is in the Details: Delving into Unbiased Data Processing for Human Pose Estimation", CVPR 2020);
* ``unbiased_gaussian_heatmaps``: DARK's target (Zhang et al., "Distribution-Aware Coordinate Representation for
  Human Pose Estimation", CVPR 2020): a Gaussian at the sub-pixel keypoint over the whole map.

All take keypoints (N, K, 2) in heatmap pixels (x, y; pixel centres at integers) and visibilities (N, K), and return
heatmaps (K, H, W) float32 (the maximum over people) and keypoint_weights (N, K) float32: the visibility, set to 0
for a visible keypoint whose 3-sigma square misses the map. Keypoints with visibility < 0.5 are not drawn (their
weight keeps the visibility value, as mmpose).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def _patch_heatmaps(heatmap_size: Tuple[int, int], keypoints: np.ndarray, keypoints_visible: np.ndarray,
                    sigma: float, subpixel: bool) -> Tuple[np.ndarray, np.ndarray]:
    w, h = heatmap_size
    n_people, k_points = keypoints.shape[:2]
    heatmaps = np.zeros((k_points, h, w), dtype=np.float32)
    weights = np.asarray(keypoints_visible, dtype=np.float32).copy()
    radius = sigma * 3
    size = 2 * radius + 1
    grid_x = np.arange(0, size, 1, dtype=np.float32)
    grid_y = grid_x[:, None]
    for n in range(n_people):
        for k in range(k_points):
            if keypoints_visible[n, k] < 0.5:
                continue
            # integer centre: round half up, computed as mmpose does (astype truncates towards zero)
            centre = (keypoints[n, k] + 0.5).astype(np.int64)
            left, top = (centre - radius).astype(np.int64)
            right, bottom = (centre + radius + 1).astype(np.int64)
            if left >= w or top >= h or right < 0 or bottom < 0:
                weights[n, k] = 0
                continue
            cx = cy = size // 2
            if subpixel:  # UDP: the patch's peak moves by the keypoint's offset from its integer centre
                cx = cx + (keypoints[n, k, 0] - centre[0])
                cy = cy + (keypoints[n, k, 1] - centre[1])
            patch = np.exp(-((grid_x - cx) ** 2 + (grid_y - cy) ** 2) / (2 * sigma ** 2))
            hx1, hx2, hy1, hy2 = max(0, left), min(w, right), max(0, top), min(h, bottom)
            region = heatmaps[k, hy1:hy2, hx1:hx2]
            np.maximum(region, patch[hy1 - top:hy2 - top, hx1 - left:hx2 - left], out=region)
    return heatmaps, weights


def gaussian_heatmaps(*, heatmap_size: Tuple[int, int], keypoints: np.ndarray, keypoints_visible: np.ndarray,
                      sigma: float) -> Tuple[np.ndarray, np.ndarray]:
    """MSRA targets: heatmaps (K, H, W) and keypoint_weights (N, K); keypoints (N, K, 2) in heatmap pixels."""
    return _patch_heatmaps(heatmap_size, keypoints, keypoints_visible, sigma, subpixel=False)


def udp_gaussian_heatmaps(*, heatmap_size: Tuple[int, int], keypoints: np.ndarray, keypoints_visible: np.ndarray,
                          sigma: float) -> Tuple[np.ndarray, np.ndarray]:
    """UDP targets: heatmaps (K, H, W) and keypoint_weights (N, K); keypoints (N, K, 2) in heatmap pixels."""
    return _patch_heatmaps(heatmap_size, keypoints, keypoints_visible, sigma, subpixel=True)


def unbiased_gaussian_heatmaps(*, heatmap_size: Tuple[int, int], keypoints: np.ndarray,
                               keypoints_visible: np.ndarray, sigma: float) -> Tuple[np.ndarray, np.ndarray]:
    """DARK targets: heatmaps (K, H, W) and keypoint_weights (N, K); keypoints (N, K, 2) in heatmap pixels."""
    w, h = heatmap_size
    n_people, k_points = keypoints.shape[:2]
    heatmaps = np.zeros((k_points, h, w), dtype=np.float32)
    weights = np.asarray(keypoints_visible, dtype=np.float32).copy()
    radius = sigma * 3
    grid_x = np.arange(0, w, 1, dtype=np.float32)
    grid_y = np.arange(0, h, 1, dtype=np.float32)[:, None]
    for n in range(n_people):
        for k in range(k_points):
            if keypoints_visible[n, k] < 0.5:
                continue
            mu_x, mu_y = keypoints[n, k]
            if mu_x - radius >= w or mu_y - radius >= h or mu_x + radius + 1 < 0 or mu_y + radius + 1 < 0:
                weights[n, k] = 0
                continue
            gaussian = np.exp(-((grid_x - mu_x) ** 2 + (grid_y - mu_y) ** 2) / (2 * sigma ** 2))
            np.maximum(gaussian, heatmaps[k], out=heatmaps[k])
    return heatmaps, weights
