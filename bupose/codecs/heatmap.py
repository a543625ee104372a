"""Heatmap codecs with mmpose 1.x's names, arguments and numerics:

* ``MSRAHeatmap``: Gaussian heatmaps, arg-max + quarter-pixel decoding (Xiao et al., "Simple Baselines for Human
  Pose Estimation and Tracking", ECCV 2018; the HRNet target of Sun et al., CVPR 2019); ``unbiased=True`` is DARK
  (Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose Estimation", CVPR 2020): a Gaussian at
  the exact sub-pixel location and distribution-aware decoding;
* ``UDPHeatmap``: Unbiased Data Processing (Huang et al., "The Devil is in the Details: Delving into Unbiased Data
  Processing for Human Pose Estimation", CVPR 2020): heatmap pixels spaced (w - 1) / (W - 1) input pixels apart,
  sub-pixel Gaussian targets, DARK-UDP decoding; ``heatmap_type='combined'`` (a binary disc + x/y offset maps per
  keypoint) as in mmpose.

Keypoints are in input-crop pixels (``input_size = (w, h)``), heatmaps (K, H, W) with ``heatmap_size = (W, H)``.
MSRA maps input -> heatmap by x * W / w. UDP encodes by x * (W - 1) / (w - 1) but decodes, as mmpose, by
x_hm * w / (W - 1): its decoded keypoints are meant for mmpose's crop -> image step ``k / input_size * bbox_scale +
bbox_center - bbox_scale / 2``, with which they are exactly the inverse of UDP's crop warp; read in the UDP crop's
own pixels they are larger by w / (w - 1) (decode(encode(x)) = x * w / (w - 1)).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from bupose.codecs.base import BaseKeypointCodec, check_heatmaps, check_keypoints, size_pair
from bupose.codecs.gaussian import gaussian_heatmaps, udp_gaussian_heatmaps, unbiased_gaussian_heatmaps
from bupose.codecs.refine import heatmap_maximum, refine_dark, refine_dark_udp, refine_quarter
from bupose.errors import ConfigError


def _check_sigma(sigma: float, name: str) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) or not sigma > 0:
        raise ConfigError(f"{name}: sigma must be a positive number, got {sigma!r}")


def _check_blur(blur_kernel_size: int, name: str) -> None:
    if isinstance(blur_kernel_size, bool) or int(blur_kernel_size) != blur_kernel_size or blur_kernel_size < 1 \
            or blur_kernel_size % 2 != 1:
        raise ConfigError(f"{name}: blur_kernel_size must be a positive odd integer, got {blur_kernel_size!r}")


class MSRAHeatmap(BaseKeypointCodec):
    """Gaussian heatmaps (MSRA / SimpleBaseline / HRNet), or DARK with ``unbiased=True``.

    Args (mmpose's):
        input_size: (w, h) of the input crop.
        heatmap_size: (W, H) of the heatmaps.
        sigma: the Gaussian's standard deviation in heatmap pixels.
        unbiased: DARK's unbiased encoding and distribution-aware decoding.
        blur_kernel_size: DARK's blur kernel (odd); mmpose pairs 11 with sigma 2 and 17 with sigma 3.
    """

    def __init__(self, *, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float,
                 unbiased: bool = False, blur_kernel_size: int = 11) -> None:
        super().__init__(input_size=input_size)
        self.heatmap_size = size_pair(heatmap_size, "MSRAHeatmap heatmap_size")
        _check_sigma(sigma, "MSRAHeatmap")
        _check_blur(blur_kernel_size, "MSRAHeatmap")
        self.sigma = sigma
        self.unbiased = bool(unbiased)
        self.blur_kernel_size = int(blur_kernel_size)
        #: input pixels per heatmap pixel, (2,) float32 (x, y)
        self.scale_factor = (np.array(self.input_size) / self.heatmap_size).astype(np.float32)

    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """Targets for the people of one crop.

        Args:
            keypoints: (N, K, 2) in input-crop pixels. mmpose accepts N = 1 only; N > 1 takes the maximum over
                people, as mmpose's generator functions.
            keypoints_visible: (N, K); keypoints with visibility < 0.5 are not drawn. None: all visible.

        Returns:
            ``heatmaps`` (K, H, W) float32, peak 1 at each drawn keypoint; ``keypoint_weights`` (N, K) float32: the
            visibility, 0 for a visible keypoint whose 3-sigma square lies wholly off the heatmap.
        """
        keypoints, keypoints_visible = check_keypoints("MSRAHeatmap", keypoints, keypoints_visible)
        generate = unbiased_gaussian_heatmaps if self.unbiased else gaussian_heatmaps
        heatmaps, weights = generate(heatmap_size=self.heatmap_size, keypoints=keypoints / self.scale_factor,
                                     keypoints_visible=keypoints_visible, sigma=self.sigma)
        return {"heatmaps": heatmaps, "keypoint_weights": weights}

    def decode(self, encoded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints (1, K, 2) float32 in input-crop pixels and scores (1, K) float32 (the heatmap maxima) from
        heatmaps (K, H, W). A map whose maximum is <= 0 decodes to (-1, -1) * scale_factor, as mmpose."""
        heatmaps = check_heatmaps("MSRAHeatmap.decode", encoded, self.heatmap_size, ndim=3)
        return self.decode_batch(heatmaps[None])

    def decode_batch(self, encoded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``decode`` of B crops at once: heatmaps (B, K, H, W) -> keypoints (B, K, 2), scores (B, K)."""
        heatmaps = check_heatmaps("MSRAHeatmap.decode_batch", encoded, self.heatmap_size, ndim=4)
        heatmaps = heatmaps.astype(np.float32, copy=False)
        locs, scores = heatmap_maximum(heatmaps)
        if self.unbiased:
            locs = refine_dark(locs, heatmaps, self.blur_kernel_size)
        else:
            locs = refine_quarter(locs, heatmaps)
        return (locs * self.scale_factor).astype(np.float32), scores.astype(np.float32)


class UDPHeatmap(BaseKeypointCodec):
    """UDP heatmaps: ``'gaussian'`` (sub-pixel Gaussian targets, DARK-UDP decoding) or ``'combined'`` (per keypoint a
    binary disc of radius ``radius_factor * max(W, H)`` and x / y offset maps divided by that radius: K * 3 maps).

    Args (mmpose's):
        input_size: (w, h) of the input crop.
        heatmap_size: (W, H) of the heatmaps.
        heatmap_type: 'gaussian' or 'combined'.
        sigma: the Gaussian's standard deviation in heatmap pixels ('gaussian').
        radius_factor: the disc radius as a fraction of max(W, H) ('combined').
        blur_kernel_size: the decoding blur kernel (odd); 'combined' blurs with 2 * blur_kernel_size + 1.
    """

    def __init__(self, *, input_size: Sequence[int], heatmap_size: Sequence[int], heatmap_type: str = "gaussian",
                 sigma: float = 2., radius_factor: float = 0.0546875, blur_kernel_size: int = 11) -> None:
        super().__init__(input_size=input_size)
        self.heatmap_size = size_pair(heatmap_size, "UDPHeatmap heatmap_size")
        if min(self.heatmap_size) < 2:
            raise ConfigError(f"UDPHeatmap: heatmap_size must be at least 2 x 2, got {self.heatmap_size}")
        if heatmap_type not in ("gaussian", "combined"):
            raise ConfigError(f"UDPHeatmap: heatmap_type must be 'gaussian' or 'combined', got {heatmap_type!r}")
        _check_sigma(sigma, "UDPHeatmap")
        _check_blur(blur_kernel_size, "UDPHeatmap")
        if not radius_factor > 0:
            raise ConfigError(f"UDPHeatmap: radius_factor must be positive, got {radius_factor!r}")
        self.heatmap_type = heatmap_type
        self.sigma = sigma
        self.radius_factor = radius_factor
        self.blur_kernel_size = int(blur_kernel_size)
        #: heatmap pixel spacing in input pixels for encoding, (2,) float32: (w - 1) / (W - 1), (h - 1) / (H - 1)
        self.scale_factor = ((np.array(self.input_size) - 1) / (np.array(self.heatmap_size) - 1)).astype(np.float32)

    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """Targets for the people of one crop.

        Args:
            keypoints: (N, K, 2) in input-crop pixels (mmpose: N = 1; N > 1 takes the maximum over people for
                'gaussian'; for 'combined' a later person overwrites an earlier one's maps, as mmpose's generator).
            keypoints_visible: (N, K); keypoints with visibility < 0.5 are not drawn. None: all visible.

        Returns:
            ``heatmaps`` (K, H, W) ('gaussian') or (K * 3, H, W) ('combined': disc, x offset, y offset per
            keypoint) float32; ``keypoint_weights`` (N, K) float32 ('gaussian': 0 for a visible keypoint whose
            3-sigma square misses the map; 'combined': the visibilities).
        """
        keypoints, keypoints_visible = check_keypoints("UDPHeatmap", keypoints, keypoints_visible)
        keypoints = keypoints / self.scale_factor
        if self.heatmap_type == "gaussian":
            heatmaps, weights = udp_gaussian_heatmaps(heatmap_size=self.heatmap_size, keypoints=keypoints,
                                                      keypoints_visible=keypoints_visible, sigma=self.sigma)
        else:
            heatmaps, weights = self._combined_maps(keypoints, keypoints_visible)
        return {"heatmaps": heatmaps, "keypoint_weights": weights}

    def _combined_maps(self, keypoints: np.ndarray, keypoints_visible: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        w, h = self.heatmap_size
        n_people, k_points = keypoints.shape[:2]
        maps = np.zeros((k_points, 3, h, w), dtype=np.float32)
        radius = self.radius_factor * max(w, h)
        grid_x, grid_y = np.arange(0, w, 1), np.arange(0, h, 1)[:, None]
        for n in range(n_people):
            for k in range(k_points):
                if keypoints_visible[n, k] < 0.5:
                    continue
                off_x = (keypoints[n, k, 0] - grid_x) / radius
                off_y = (keypoints[n, k, 1] - grid_y) / radius
                maps[k, 0] = np.where(off_x ** 2 + off_y ** 2 <= 1, 1., 0.)
                maps[k, 1], maps[k, 2] = off_x, off_y
        return maps.reshape(k_points * 3, h, w), np.asarray(keypoints_visible, dtype=np.float32).copy()

    def decode(self, encoded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints (1, K, 2) float32 and scores (1, K) float32 from heatmaps (K, H, W) ('gaussian') or
        (K * 3, H, W) ('combined'). Keypoints are in mmpose's UDP output units, x_hm * w / (W - 1) (see the module
        docstring). A map whose maximum is <= 0 gives a meaningless keypoint (often NaN), as in mmpose."""
        heatmaps = check_heatmaps("UDPHeatmap.decode", encoded, self.heatmap_size, ndim=3)
        return self.decode_batch(heatmaps[None])

    def decode_batch(self, encoded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``decode`` of B crops at once: heatmaps (B, C, H, W) -> keypoints (B, K, 2), scores (B, K)."""
        heatmaps = check_heatmaps("UDPHeatmap.decode_batch", encoded, self.heatmap_size, ndim=4)
        heatmaps = heatmaps.astype(np.float32, copy=False)
        w, h = self.heatmap_size
        if self.heatmap_type == "gaussian":
            locs, scores = heatmap_maximum(heatmaps)
            locs = refine_dark_udp(locs, heatmaps, self.blur_kernel_size)
        else:
            locs, scores = self._decode_combined(heatmaps)
        keypoints = locs / np.array([w - 1, h - 1]) * np.array(self.input_size)
        return keypoints.astype(np.float32), scores.astype(np.float32)

    def _decode_combined(self, heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        b, c, h, w = heatmaps.shape
        if c % 3:
            raise ValueError(f"UDPHeatmap('combined').decode: heatmaps need K * 3 channels, got {c}")
        maps = heatmaps.reshape(b, c // 3, 3, h, w)
        ks = 2 * self.blur_kernel_size + 1
        disc = np.stack([[cv2.GaussianBlur(m, (ks, ks), 0) for m in crop] for crop in maps[:, :, 0]])
        locs, scores = heatmap_maximum(disc)
        radius = self.radius_factor * max(w, h)
        # read the offsets through each crop's flat (K, H, W) index, as mmpose: a (-1, -1) location (a non-positive
        # peak) then reads the previous keypoint's maps (the last one's for the first keypoint)
        k = c // 3
        index = (locs[..., 0] + locs[..., 1] * w + w * h * np.arange(k)).astype(int)
        index = np.mod(index, k * h * w)
        rows = np.arange(b)[:, None]
        offsets = np.stack([maps[:, :, 1].reshape(b, -1)[rows, index],
                            maps[:, :, 2].reshape(b, -1)[rows, index]], -1) * radius
        return (locs + offsets).astype(np.float32), scores
