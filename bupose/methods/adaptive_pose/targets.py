"""AdaptivePose training targets at the output stride (Xiao et al., "AdaptivePose: Human Parts as Adaptive Points",
AAAI 2022; AdaptivePose++, arXiv 2210.04014), as the official ``multi_pose_wodet`` / ``multi_pose_crowdpose``
datasets build them on CenterNet's conventions (Zhou et al., "Objects as Points", 2019).

Coordinates are output-map pixels: cell ``(i, j)`` is the point ``(x, y) = (j, i)`` (the model's convention); with
the stride step ``x_out = x_in / 4`` (:func:`bupose.data.geometry.stride_matrix` mode ``"corner"``), which is
CenterNet's (its input and output affines share centre and scale, so an output pixel is a quarter input pixel).

Per person (keypoints ``(K, 3)``; a keypoint counts when labelled and inside the map, ``0 <= x < W``, ``0 <= y <
H``):

* centre ``c`` = mean of the counted keypoints, ``c_int = floor(c)``; the person is skipped when none counts, when
  the keypoints' extent has zero width or height, or when ``c_int`` is off the map (as officially);
* radius ``r = max(0, int(gaussian_radius(ceil(h), ceil(w))))`` of the extent (CenterNet's formula, min overlap
  0.7); the centre heatmap gets CenterNet's Gaussian (diameter ``2r + 1``, sigma ``(2r + 1) / 6``, peak exactly 1)
  max-merged at ``c_int``; each counted keypoint's auxiliary heatmap the same Gaussian at ``floor(kp)``;
* regression, for the first ``max_people`` drawn people: ``index = c_int.y * W + c_int.x``, offsets ``kp - c_int``
  ``(K, 2)`` with a 0/1 weight per keypoint, and the person's area (for the OKS loss).

Differences from the official code, on purpose:

* **ignored regions**: the official code has no ignore mask, so crowd regions and people without labelled keypoints
  are centre-heatmap background. Here the pipeline's mask (1 use, 0 ignore) goes along as ``mask`` and the loss
  gives those cells zero focal weight -- except on the Gaussians of real people (see
  :class:`~bupose.methods.adaptive_pose.loss.AdaptivePoseLoss`);
* **people beyond** ``max_people`` (official 32: the rest are dropped, i.e. background) still get their heatmaps;
  only their regression targets are dropped;
* **area**: the official code scales the annotation area by ``(input_res / s) / 16``, a linear factor where the
  area needs the square of the scale; here the area is scaled by the square (``Sample.areas`` through the
  pipeline's matrix, then ``/ stride^2``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's ``gaussian_radius((height, width))``: the smallest of its three quadratic-root radii (with the
    official formula's ``(b + sqrt(b^2 - 4ac)) / 2`` for every root, as CenterNet computes them)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def gaussian_kernel(radius: int) -> np.ndarray:
    """``(2r + 1, 2r + 1)`` CenterNet Gaussian, sigma ``(2r + 1) / 6``, peak 1; values below ``eps * max`` are 0."""
    d = 2 * radius + 1
    sigma = d / 6.0
    g = np.arange(-radius, radius + 1, dtype=np.float64)
    h = np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h


def draw_gaussian(channel: np.ndarray, x: int, y: int, radius: int) -> None:
    """Max-merge :func:`gaussian_kernel` ``(radius)`` centred on cell ``(x, y)`` into ``channel`` ``(H, W)``."""
    h, w = channel.shape
    g = gaussian_kernel(radius)
    left, right = min(x, radius), min(w - x, radius + 1)
    top, bottom = min(y, radius), min(h - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    window = channel[y - top:y + bottom, x - left:x + right]
    np.maximum(window, g[radius - top:radius + bottom, radius - left:radius + right], out=window)


@dataclass
class AdaptivePoseTargets:
    """Targets of one image (``M = max_people``, ``H, W`` the output map).

    Attributes:
        center_heatmap: ``(1, H, W)`` float32 centre heatmap (1 exactly at each drawn person's ``c_int``).
        aux_heatmap: ``(K, H, W)`` float32 keypoint heatmaps.
        mask: ``(1, H, W)`` float32 loss weights, 1 use / 0 ignore (crowd regions, people without keypoints).
        index: ``(M,)`` int64 flat index ``y * W + x`` of each person's integer centre (0 for empty slots).
        offset: ``(M, 2K)`` float32 ``(dx, dy)`` per keypoint from the integer centre, output pixels.
        offset_weight: ``(M, 2K)`` float32, 1 for counted keypoints (both channels), else 0.
        area: ``(M,)`` float32 person area in output pixels squared (the OKS scale ``s^2``).
        person_weight: ``(M,)`` float32, 1 for the slots that hold a person.
    """

    center_heatmap: np.ndarray
    aux_heatmap: np.ndarray
    mask: np.ndarray
    index: np.ndarray
    offset: np.ndarray
    offset_weight: np.ndarray
    area: np.ndarray
    person_weight: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(self.__dict__)


class AdaptivePoseTargetEncoder:
    """Keypoints in output-map pixels -> :class:`AdaptivePoseTargets` (see the module docstring).

    Args:
        num_joints: K.
        max_people: regression slots per image (official 32).
        min_overlap: CenterNet's Gaussian-radius overlap (0.7).
    """

    def __init__(self, *, num_joints: int, max_people: int = 32, min_overlap: float = 0.7):
        if num_joints < 1 or max_people < 1:
            raise ValueError(f"AdaptivePoseTargetEncoder: num_joints and max_people must be >= 1, got "
                             f"{num_joints}, {max_people}")
        self.num_joints = num_joints
        self.max_people = max_people
        self.min_overlap = min_overlap

    def __call__(self, keypoints: np.ndarray, output_size: tuple[int, int], mask: np.ndarray | None = None,
                 areas: np.ndarray | None = None) -> AdaptivePoseTargets:
        """
        Args:
            keypoints: ``(N, K, 3)`` x, y in output pixels, v (> 0 labelled).
            output_size: ``(H, W)`` of the maps.
            mask: ``(H, W)`` loss weights, 1 use / 0 ignore (None: all 1).
            areas: ``(N,)`` person areas in output pixels squared (None: the counted keypoints' extent ``w * h``).
        """
        k, m = self.num_joints, self.max_people
        h, w = output_size
        kp = np.asarray(keypoints, np.float64).reshape(-1, k, 3)
        center = np.zeros((1, h, w), np.float32)
        aux = np.zeros((k, h, w), np.float32)
        index = np.zeros((m,), np.int64)
        offset = np.zeros((m, 2 * k), np.float32)
        offset_weight = np.zeros((m, 2 * k), np.float32)
        area = np.zeros((m,), np.float32)
        person_weight = np.zeros((m,), np.float32)
        slot = 0
        for n, person in enumerate(kp):
            x, y = person[:, 0], person[:, 1]
            counted = (person[:, 2] > 0) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            if not counted.any():
                continue
            pts = person[counted, :2]
            cx, cy = pts.mean(0)
            ext_w, ext_h = pts.max(0) - pts.min(0)
            ix, iy = int(cx), int(cy)  # >= 0: the counted keypoints are
            if ext_w <= 0 or ext_h <= 0 or not (ix < w and iy < h):
                continue
            radius = max(0, int(gaussian_radius(math.ceil(ext_h), math.ceil(ext_w), self.min_overlap)))
            draw_gaussian(center[0], ix, iy, radius)
            for j in np.flatnonzero(counted):
                draw_gaussian(aux[j], int(x[j]), int(y[j]), radius)
            if slot >= m:
                continue
            index[slot] = iy * w + ix
            d = person[:, :2] - (ix, iy)
            offset[slot] = np.where(counted[:, None], d, 0.0).reshape(-1)
            offset_weight[slot] = np.repeat(counted, 2).astype(np.float32)
            area[slot] = ext_w * ext_h if areas is None else float(np.asarray(areas).reshape(-1)[n])
            person_weight[slot] = 1.0
            slot += 1
        mask_out = np.ones((1, h, w), np.float32) if mask is None else \
            np.asarray(mask, np.float32).reshape(1, h, w).copy()
        return AdaptivePoseTargets(center, aux, mask_out, index, offset, offset_weight, area, person_weight)
