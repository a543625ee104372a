"""Heatmap decoding, vectorised over crops and keypoints, with mmpose 1.x's numerics (``codecs/utils/
post_processing.py`` and ``refinement.py``):

* ``heatmap_maximum``: the arg-max pixel and its value; (-1, -1) where the peak is <= 0;
* ``refine_quarter``: the MSRA quarter-pixel step towards the higher neighbour (Xiao et al., ECCV 2018);
* ``blur_heatmaps`` + ``refine_dark``: DARK's distribution-aware decoding (Zhang et al., "Distribution-Aware
  Coordinate Representation for Human Pose Estimation", CVPR 2020): blur, log, one Newton (second-order Taylor) step;
* ``refine_dark_udp``: the same step with UDP's finite differences (Huang et al., "The Devil is in the Details:
  Delving into Unbiased Data Processing for Human Pose Estimation", CVPR 2020).

Shapes: heatmaps (B, K, H, W); locations (B, K, 2) float32 as (x, y) in heatmap pixels (pixel centres at integers).
Decoding a batch gives, crop for crop, what decoding each crop alone gives.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np


def heatmap_maximum(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Arg-max locations (..., 2) float32 (x, y; the first maximum in row-major order; -1 where the maximum is <= 0)
    and maximum values (...) of heatmaps (..., H, W)."""
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.reshape(*heatmaps.shape[:-2], h * w)
    index = np.argmax(flat, axis=-1)
    values = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    locs = np.stack([index % w, index // w], axis=-1).astype(np.float32)
    locs[values <= 0] = -1
    return locs, values


def _gather(heatmaps: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """heatmaps[b, k, y[b, k], x[b, k]] for (B, K) index arrays (clipped into the map; mask the result yourself)."""
    h, w = heatmaps.shape[-2:]
    b, k = np.indices(x.shape)
    return heatmaps[b, k, np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]


def refine_quarter(locs: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """MSRA refinement: each arg-max moves 0.25 px along x (y) towards the higher of its two neighbours. Keeps
    mmpose's conditions exactly (x step only for 1 < x < W - 1, y step only for 1 < y < H - 1). Returns (B, K, 2)."""
    h, w = heatmaps.shape[-2:]
    x, y = locs[..., 0].astype(int), locs[..., 1].astype(int)
    ok_x = (1 < x) & (x < w - 1) & (0 < y) & (y < h)
    ok_y = (1 < y) & (y < h - 1) & (0 < x) & (x < w)
    dx = np.where(ok_x, _gather(heatmaps, x + 1, y) - _gather(heatmaps, x - 1, y), 0)
    dy = np.where(ok_y, _gather(heatmaps, x, y + 1) - _gather(heatmaps, x, y - 1), 0)
    step = np.sign(np.stack([dx, dy], axis=-1)).astype(np.float32) * np.float32(0.25)
    return locs + step


def blur_heatmaps(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """DARK's modulation: each map (..., H, W) blurred by a ``kernel`` x ``kernel`` Gaussian (OpenCV's sigma for
    that size; zero outside the map), then rescaled to its original maximum. Returns a new float32 array. An
    all-zero map gives NaN (0 / 0), as in mmpose."""
    if kernel % 2 != 1:
        raise ValueError(f"blur kernel size must be odd, got {kernel}")
    shape = heatmaps.shape
    maps = heatmaps.reshape(-1, *shape[-2:])
    border = (kernel - 1) // 2
    padded = np.zeros((maps.shape[0], shape[-2] + 2 * border, shape[-1] + 2 * border), dtype=np.float32)
    blurred = padded[:, border:-border, border:-border]
    blurred[...] = maps
    for m in padded:  # one map at a time: OpenCV's result is bit-identical to mmpose's this way
        cv2.GaussianBlur(m, (kernel, kernel), 0, dst=m)
    with np.errstate(divide="ignore", invalid="ignore"):
        blurred *= (maps.max(axis=(1, 2)) / blurred.max(axis=(1, 2)))[:, None, None]
    return blurred.reshape(shape)


def refine_dark(locs: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """DARK refinement of arg-max locations (B, K, 2) on heatmaps (B, K, H, W): x <- x - H^-1 g on the log of the
    blurred map, with central differences at step 1 (gradient) and 2 (Hessian). Only for 1 < x < W - 2 and
    1 < y < H - 2, and a non-singular Hessian (float32, as mmpose). Returns (B, K, 2) float32."""
    h, w = heatmaps.shape[-2:]
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.maximum(blur_heatmaps(heatmaps, blur_kernel_size), np.float32(1e-10)))
    x, y = locs[..., 0].astype(int), locs[..., 1].astype(int)
    at = lambda ox, oy: _gather(logs, x + ox, y + oy)  # noqa: E731
    half, quarter = np.float32(0.5), np.float32(0.25)
    centre = at(0, 0)
    dx, dy = half * (at(1, 0) - at(-1, 0)), half * (at(0, 1) - at(0, -1))
    dxx = quarter * (at(2, 0) - 2 * centre + at(-2, 0))
    dyy = quarter * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = quarter * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (1 < x) & (x < w - 2) & (1 < y) & (y < h - 2) & (dxx * dyy - dxy ** 2 != 0)
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)  # (B, K, 2, 2) float32
    hessian[~ok] = np.eye(2, dtype=np.float32)
    gradient = np.stack([dx, dy], -1)[..., None]
    offset = -(np.linalg.inv(hessian) @ gradient)[..., 0]
    return locs + np.where(ok[..., None], offset, np.float32(0))


def refine_dark_udp(locs: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int) -> np.ndarray:
    """UDP's DARK refinement of arg-max locations (B, K, 2) on heatmaps (B, K, H, W): log of the blurred map clipped
    to [1e-3, 50], edge-padded by one pixel, central differences at step 1, x <- x - (H + eps I)^-1 g.

    Applied to every keypoint (no border test). Neighbours are read from the crop's flattened (K, H + 2, W + 2)
    stack as mmpose does, so a location of (-1, -1) (non-positive peak) reads the previous keypoint's map, or for
    the first one wraps to the end of the stack; the result then is meaningless (often NaN), as in mmpose.
    Returns (B, K, 2) float32."""
    b, k, h, w = heatmaps.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.clip(blur_heatmaps(heatmaps, blur_kernel_size), np.float32(1e-3), np.float32(50.0)))
    stride = w + 2
    flat = np.pad(logs, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").reshape(b, -1)
    length = flat.shape[1]
    index = (locs[..., 0] + 1 + (locs[..., 1] + 1) * stride).astype(np.float32)
    index = (index + (stride * (h + 2) * np.arange(k))).astype(int)  # (B, K), as mmpose's float index
    rows = np.arange(b)[:, None]
    at = lambda offset: flat[rows, np.mod(index + offset, length)]  # noqa: E731
    i, ix1, ix1_, iy1, iy1_ = at(0), at(1), at(-1), at(stride), at(-stride)
    ix1y1, ix1_y1_ = at(stride + 1), at(-stride - 1)
    half = np.float32(0.5)
    gradient = np.stack([half * (ix1 - ix1_), half * (iy1 - iy1_)], -1)[..., None]
    dxx = ix1 - 2 * i + ix1_
    dyy = iy1 - 2 * i + iy1_
    dxy = half * (ix1y1 - ix1 - iy1 + i + i - ix1_ - iy1_ + ix1_y1_)
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)
    hessian = hessian + np.finfo(np.float32).eps * np.eye(2)  # float64 from here on, as mmpose
    with np.errstate(invalid="ignore", over="ignore"):
        step = (np.linalg.inv(hessian) @ gradient)[..., 0]
        return (locs.astype(np.float64) - step).astype(np.float32)
