"""SimCC: keypoints as two 1-D classifications, one over x bins and one over y bins (Li et al., "SimCC: a Simple
Coordinate Classification Perspective for Human Pose Estimation", ECCV 2022), with mmpose 1.x's ``SimCCLabel``
names, keyword arguments and numerics.

Coordinates: keypoints are in input-crop pixels (``input_size = (w, h)``), pixel centres at integers. A keypoint's
bin is ``round(x * simcc_split_ratio)`` (round half to even, as numpy); there are ``Wx = round(w * ratio)`` x bins
and ``Wy = round(h * ratio)`` y bins, and a bin ``i`` decodes to ``i / ratio`` input pixels.

* ``smoothing_type='gaussian'``: per axis a Gaussian of ``sigma`` bins around the keypoint's bin, divided by
  ``sigma * sqrt(2 pi)`` with ``normalize`` (a density summing to about 1);
* ``smoothing_type='standard'``: one-hot vectors, or with ``label_smooth_weight = e`` ``1 - e`` at the bin and
  ``e / (W - 1)`` elsewhere.

Decoding takes the arg-max bin per axis; the keypoint score is the smaller of the two maxima (``-1`` locations where
it is <= 0). ``use_dark`` refines each arg-max with one Newton step on the log of the blurred vector (DARK's
distribution-aware decoding in 1-D: Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose
Estimation", CVPR 2020), the blur kernel following ``sigma`` as mmpose's. ``decode_visibility`` also returns the
smaller of the two soft-max peaks of the vectors scaled by ``decode_beta * sigma`` (RTMW's visibility), computed,
as in mmpose, on the DARK-modulated vectors when ``use_dark`` is on.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from bupose.codecs.base import BaseKeypointCodec, check_keypoints
from bupose.errors import ConfigError


def _number(value, name: str, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or (
            positive and not value > 0):
        raise ConfigError(f"SimCCLabel: {name} must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def simcc_maximum(simcc_x: np.ndarray, simcc_y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Arg-max bins ``(..., K, 2)`` float32 (x, y; ``-1`` where the score is <= 0) and scores ``(..., K)``: the
    smaller of the two vectors' maxima, for vectors ``(..., K, Wx)`` and ``(..., K, Wy)``."""
    locs = np.stack([np.argmax(simcc_x, axis=-1), np.argmax(simcc_y, axis=-1)], axis=-1).astype(np.float32)
    max_x, max_y = np.amax(simcc_x, axis=-1), np.amax(simcc_y, axis=-1)
    scores = np.where(max_x > max_y, max_y, max_x)
    locs[scores <= 0] = -1
    return locs, scores


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - np.max(v, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def blur_vectors(simcc: np.ndarray, kernel: int) -> np.ndarray:
    """Each vector ``(..., W)`` blurred by a ``kernel``-tap Gaussian (OpenCV's sigma for that size, zeros outside
    the vector) and rescaled to its original maximum; a new float32 array."""
    if kernel % 2 != 1 or kernel < 1:
        raise ValueError(f"blur kernel size must be a positive odd integer, got {kernel}")
    shape = simcc.shape
    rows = simcc.reshape(-1, shape[-1]).astype(np.float32)
    border = (kernel - 1) // 2
    padded = np.zeros((rows.shape[0], shape[-1] + 2 * border), dtype=np.float32)
    padded[:, border:border + shape[-1]] = rows
    if rows.shape[0]:
        padded = cv2.GaussianBlur(padded, (kernel, 1), 0)  # one row per vector: a 1-D blur along each
    blurred = padded[:, border:border + shape[-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        blurred = blurred * (rows.max(axis=1) / blurred.max(axis=1))[:, None]
    return np.ascontiguousarray(blurred, dtype=np.float32).reshape(shape)


def refine_simcc_dark(locs: np.ndarray, simcc: np.ndarray, kernel: int) -> Tuple[np.ndarray, np.ndarray]:
    """DARK in 1-D: arg-max bins ``(..., K)`` moved by ``-f' / f''`` of the log of the blurred vectors
    ``(..., K, W)`` (clipped to [1e-3, 50], edge-padded by 2, central differences at steps 1 and 2; a bin of ``-1``
    reads the padded vector from its end, as mmpose). Returns ``(refined bins float32, log vectors)``: the second,
    ``(..., K, W)``, is what mmpose leaves in the input array (it modulates in place)."""
    logs = np.log(np.clip(blur_vectors(simcc, kernel), np.float32(1e-3), np.float32(50.)))
    padded = np.pad(logs, [(0, 0)] * (logs.ndim - 1) + [(2, 2)], mode="edge")
    px = (locs + np.float32(2.5)).astype(np.int64)[..., None]
    at = lambda off: np.take_along_axis(padded, px + off, axis=-1)[..., 0]  # noqa: E731 (negative: from the end)
    dx = np.float32(0.5) * (at(1) - at(-1))
    dxx = np.float32(1e-9) + np.float32(0.25) * (at(2) - 2 * at(0) + at(-2))
    return (locs - dx / dxx).astype(np.float32), logs


class SimCCLabel(BaseKeypointCodec):
    """SimCC labels: per keypoint an x vector of ``Wx`` bins and a y vector of ``Wy`` bins.

    Args (mmpose's):
        input_size: (w, h) of the input crop.
        smoothing_type: ``'gaussian'`` or ``'standard'`` (one-hot, with optional label smoothing).
        sigma: the Gaussian's standard deviation in bins, one number or ``(sigma_x, sigma_y)``.
        simcc_split_ratio: bins per input pixel.
        label_smooth_weight: ``'standard'`` only: the mass ``e`` spread over the other bins, in [0, 1].
        normalize: ``'gaussian'``: divide the labels by ``sigma * sqrt(2 pi)``.
        use_dark: refine the decoded bins with 1-D DARK.
        decode_visibility: :meth:`decode` returns ``(keypoints, (scores, visibility))``.
        decode_beta: the soft-max temperature factor of the visibility.
    """

    def __init__(self, *, input_size: Sequence[int], smoothing_type: str = "gaussian",
                 sigma: Union[float, Sequence[float]] = 6.0, simcc_split_ratio: float = 2.0,
                 label_smooth_weight: float = 0.0, normalize: bool = True, use_dark: bool = False,
                 decode_visibility: bool = False, decode_beta: float = 150.0) -> None:
        super().__init__(input_size=input_size)
        if smoothing_type not in ("gaussian", "standard"):
            raise ConfigError(f"SimCCLabel: smoothing_type must be 'gaussian' or 'standard', got {smoothing_type!r}")
        sigmas = list(sigma) if isinstance(sigma, (list, tuple, np.ndarray)) else [sigma, sigma]
        if len(sigmas) != 2:
            raise ConfigError(f"SimCCLabel: sigma must be a number or two numbers (x, y), got {sigma!r}")
        self.sigma = np.array([_number(s, "sigma") for s in sigmas], dtype=np.float64)
        self.simcc_split_ratio = _number(simcc_split_ratio, "simcc_split_ratio")
        self.label_smooth_weight = _number(label_smooth_weight, "label_smooth_weight", positive=False)
        if not 0.0 <= self.label_smooth_weight <= 1.0:
            raise ConfigError(f"SimCCLabel: label_smooth_weight must be in [0, 1], got {label_smooth_weight!r}")
        if smoothing_type == "gaussian" and self.label_smooth_weight > 0:
            raise ConfigError("SimCCLabel: label_smooth_weight is for smoothing_type 'standard' only")
        self.smoothing_type = smoothing_type
        self.normalize, self.use_dark = bool(normalize), bool(use_dark)
        self.decode_visibility = bool(decode_visibility)
        self.decode_beta = _number(decode_beta, "decode_beta")
        w, h = self.input_size
        #: (Wx, Wy): the number of x and y bins of the labels
        self.simcc_size = (int(np.around(w * self.simcc_split_ratio)), int(np.around(h * self.simcc_split_ratio)))
        if min(self.simcc_size) < 2:
            raise ConfigError(f"SimCCLabel: input_size {self.input_size} x simcc_split_ratio "
                              f"{self.simcc_split_ratio} gives fewer than 2 bins")

    @property
    def blur_kernel_sizes(self) -> Tuple[int, int]:
        """mmpose's DARK blur kernels for ``sigma``: ``(20 sigma - 7) // 3``, made odd by subtracting 1."""
        sizes = [int((s * 20 - 7) // 3) for s in self.sigma]
        return tuple(max(1, k - int(k % 2 == 0)) for k in sizes)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """Labels for the people of one crop.

        Args:
            keypoints: (N, K, 2) in input-crop pixels.
            keypoints_visible: (N, K); keypoints with visibility < 0.5 get all-zero labels. None: all visible.

        Returns:
            ``keypoint_x_labels`` (N, K, Wx) and ``keypoint_y_labels`` (N, K, Wy) float32; ``keypoint_weights``
            (N, K) float32: the visibility, 0 for a visible keypoint off the label range ('gaussian': its 3-sigma
            interval misses the bins on either axis; 'standard': its bin is outside).
        """
        keypoints, keypoints_visible = check_keypoints("SimCCLabel", keypoints, keypoints_visible)
        wx, wy = self.simcc_size
        bins = np.around(keypoints * self.simcc_split_ratio).astype(np.int64)  # (N, K, 2), in the keypoints' dtype
        weights = np.asarray(keypoints_visible, dtype=np.float32).copy()
        drawn = np.asarray(keypoints_visible) >= 0.5
        size = np.array([wx, wy])
        if self.smoothing_type == "gaussian":
            radius = self.sigma * 3
            off = ((bins - radius >= size) | (bins + radius + 1 < 0)).any(axis=-1)
        else:
            off = ((bins >= size) | (bins < 0)).any(axis=-1)
        weights[drawn & off] = 0
        drawn &= ~off
        labels = [self._labels(bins[..., a], n, a) * drawn[..., None] for a, n in ((0, wx), (1, wy))]
        return {"keypoint_x_labels": labels[0].astype(np.float32), "keypoint_y_labels": labels[1].astype(np.float32),
                "keypoint_weights": weights}

    def _labels(self, mu: np.ndarray, n: int, axis: int) -> np.ndarray:
        """(N, K, n) labels of one axis for bins ``mu`` (N, K) (not masked)."""
        grid = np.arange(n, dtype=np.float32)
        if self.smoothing_type == "gaussian":
            sigma = self.sigma[axis]
            out = np.exp(-((grid - mu[..., None]) ** 2) / (2 * sigma ** 2)).astype(np.float32)
            if self.normalize:
                out /= sigma * np.sqrt(np.pi * 2)
            return out
        e = self.label_smooth_weight
        out = np.full(mu.shape + (n,), e / (n - 1) if e > 0 else 0.0, dtype=np.float32)
        np.put_along_axis(out, np.clip(mu, 0, n - 1)[..., None], np.float32(1.0 - e), axis=-1)
        return out

    # -- decoding ---------------------------------------------------------------------------------------------------
    def _check(self, encoded, ndim: Tuple[int, ...], where: str) -> Tuple[np.ndarray, np.ndarray]:
        if not isinstance(encoded, (tuple, list)) or len(encoded) != 2:
            raise ValueError(f"SimCCLabel.{where}: expected (simcc_x, simcc_y), got {type(encoded).__name__}")
        x, y = (np.asarray(v) for v in encoded)
        if x.ndim not in ndim or y.ndim != x.ndim or x.shape[:-1] != y.shape[:-1]:
            raise ValueError(f"SimCCLabel.{where}: simcc_x and simcc_y must be {' or '.join(f'{n}-D' for n in ndim)} "
                             f"with the same leading axes (..., K, Wx) / (..., K, Wy), got {x.shape} and {y.shape}")
        if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(y.dtype, np.floating)):
            raise ValueError(f"SimCCLabel.{where}: simcc vectors must be floating point, got {x.dtype}, {y.dtype}")
        return x, y

    def decode(self, encoded) -> Tuple[np.ndarray, Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]]:
        """Keypoints (1, K, 2) float32 in input-crop pixels and scores (1, K) from one crop's ``(simcc_x (K, Wx),
        simcc_y (K, Wy))`` (also ``(N, K, W)`` pairs, giving N rows). With ``decode_visibility`` the second item is
        ``(scores, visibility)``. The inputs are not modified."""
        x, y = self._check(encoded, (2, 3), "decode")
        if x.ndim == 2:
            x, y = x[None], y[None]
        return self.decode_batch((x, y))

    def decode_batch(self, encoded) -> Tuple[np.ndarray, Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]]:
        """``decode`` of B crops at once: ``(simcc_x (B, K, Wx), simcc_y (B, K, Wy))`` -> keypoints (B, K, 2),
        scores (B, K) (or ``(scores, visibility)``); crop for crop what :meth:`decode` gives."""
        x, y = self._check(encoded, (3,), "decode_batch")
        locs, scores = simcc_maximum(x, y)
        if self.use_dark:
            kx, ky = self.blur_kernel_sizes
            locs[..., 0], x = refine_simcc_dark(locs[..., 0], x, kx)
            locs[..., 1], y = refine_simcc_dark(locs[..., 1], y, ky)
        keypoints = (locs / np.float32(self.simcc_split_ratio)).astype(np.float32)
        if not self.decode_visibility:
            return keypoints, scores
        _, visibility = simcc_maximum(_softmax(x * self.decode_beta * self.sigma[0]),  # mmpose's order of products
                                      _softmax(y * self.decode_beta * self.sigma[1]))
        return keypoints, (scores, visibility)
