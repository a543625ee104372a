"""Integral-regression labels (mmpose 1.x's ``IntegralRegressionLabel``): the targets of heads that regress keypoints
as the expectation of a soft-max heatmap, so that both the heatmap and the coordinates it integrates to can be
supervised. The method is integral regression (Sun et al., "Integral Human Pose Regression", ECCV 2018, the IPR
configs); mmpose uses the same codec for DSNT (Nibali et al., "Numerical Coordinate Regression with Convolutional
Neural Networks", 2018) and for the debiased IPR variant (Gu et al., "Removing the Bias of Integral Pose Regression",
ICCV 2021), which differ only in their heads and losses.

The codec is ``MSRAHeatmap`` (the heatmap target) next to ``RegressionLabel`` (the coordinate target): see
``bupose/codecs/heatmap.py`` and ``bupose/codecs/regression.py``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from bupose.codecs.base import BaseKeypointCodec, check_keypoints, size_pair
from bupose.codecs.heatmap import MSRAHeatmap, _check_blur, _check_sigma
from bupose.codecs.regression import RegressionLabel
from bupose.errors import ConfigError

_NAME = "IntegralRegressionLabel"


def _check_flag(value, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise ConfigError(f"{_NAME}: {name} must be True or False, got {value!r}")


class IntegralRegressionLabel(BaseKeypointCodec):
    """Heatmap and normalised-coordinate targets for integral regression (IPR / DSNT heads).

    Coordinates: keypoints are in input-crop pixels (``input_size = (w, h)``, pixel centres at integers, x right, y
    down); heatmap pixel ``(i, j)`` covers input pixel ``(i, j) * (w / W, h / H)`` (MSRA's convention, ``heatmap_size
    = (W, H)``); the regression labels are the keypoints divided by ``(w, h)``, so that the crop spans ``[0, 1)``.

    ``encode(keypoints (N, K, 2), keypoints_visible (N, K) or None)`` gives, as mmpose:

    * ``keypoint_labels`` (N, K, 2) float32: ``keypoints / (w, h)``;
    * ``heatmaps`` (K, H, W) float32: MSRAHeatmap's Gaussians (DARK's sub-pixel ones with ``unbiased=True``), each
      map divided by its sum (+ 1e-24) with ``normalize=True`` (a soft-max target summing to 1; an undrawn keypoint's
      map stays 0), peak 1 otherwise;
    * ``keypoint_weights`` (N, K) float32: RegressionLabel's, 1 where the keypoint lies in ``[0, w - 1] x [0, h - 1]``
      and its visibility is above 0.5, else 0 (not the heatmap's weights).

    mmpose accepts N = 1 only (its MSRAHeatmap asserts it); here N > 1 draws the maximum over people, as bupose's
    MSRAHeatmap, and gives the labels and weights of every person.

    ``decode(encoded (K, 2) or (1, K, 2))``: the head's normalised coordinates -> keypoints (1, K, 2) in input-crop
    pixels (``x * (w, h)``) and scores (1, K) (ones; a (.., 4) input with two sigma columns scores ``mean(1 -
    sigma)``, as RegressionLabel). ``decode_batch(encoded (B, K, 2))`` does B crops at once.

    Args (mmpose's):
        input_size: (w, h) of the input crop.
        heatmap_size: (W, H) of the heatmaps.
        sigma: the Gaussian's standard deviation in heatmap pixels.
        unbiased: DARK's sub-pixel Gaussian (Zhang et al., CVPR 2020) for the heatmap target.
        blur_kernel_size: DARK's blur kernel (odd); kept for mmpose's signature (decoding reads coordinates only).
        normalize: divide each heatmap by its sum.
    """

    label_mapping_table = dict(keypoint_labels="keypoint_labels", keypoint_weights="keypoint_weights")
    field_mapping_table = dict(heatmaps="heatmaps")

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float, unbiased: bool = False,
                 blur_kernel_size: int = 11, normalize: bool = True) -> None:
        super().__init__(input_size=size_pair(input_size, f"{_NAME} input_size"))
        self.heatmap_size = size_pair(heatmap_size, f"{_NAME} heatmap_size")
        _check_sigma(sigma, _NAME)
        _check_blur(blur_kernel_size, _NAME)
        self.sigma = sigma
        self.unbiased = _check_flag(unbiased, "unbiased")
        self.blur_kernel_size = int(blur_kernel_size)
        self.normalize = _check_flag(normalize, "normalize")
        self._heatmap_codec = MSRAHeatmap(input_size=self.input_size, heatmap_size=self.heatmap_size, sigma=sigma,
                                          unbiased=self.unbiased, blur_kernel_size=self.blur_kernel_size)
        self._keypoint_codec = RegressionLabel(self.input_size)

    @property
    def heatmap_codec(self) -> MSRAHeatmap:
        """The MSRAHeatmap that draws the heatmap targets (mmpose's attribute)."""
        return self._heatmap_codec

    @property
    def keypoint_codec(self) -> RegressionLabel:
        """The RegressionLabel that makes the coordinate targets and decodes (mmpose's attribute)."""
        return self._keypoint_codec

    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """``keypoint_labels`` (N, K, 2), ``heatmaps`` (K, H, W) and ``keypoint_weights`` (N, K), all float32, for
        keypoints (N, K, 2) in input-crop pixels and visibilities (N, K) (None: all visible); see the class."""
        keypoints, keypoints_visible = check_keypoints(_NAME, keypoints, keypoints_visible)
        heatmaps = self._heatmap_codec.encode(keypoints, keypoints_visible)["heatmaps"]
        labels = self._keypoint_codec.encode(keypoints, keypoints_visible)
        if self.normalize:
            heatmaps = heatmaps / (heatmaps.sum(axis=(-1, -2)).reshape(-1, 1, 1) + np.float32(1e-24))
        return {"keypoint_labels": labels["keypoint_labels"], "heatmaps": heatmaps.astype(np.float32, copy=False),
                "keypoint_weights": labels["keypoint_weights"]}

    def decode(self, encoded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints (1, K, 2) in input-crop pixels and scores (1, K) from one crop's normalised coordinates (K, 2) or
        (1, K, 2) (or with two sigma columns, D = 4)."""
        encoded = np.asarray(encoded)
        if encoded.ndim == 2:
            encoded = encoded[None]
        if encoded.ndim != 3 or encoded.shape[0] != 1 or encoded.shape[-1] not in (2, 4):
            raise ValueError(f"{_NAME}.decode: encoded must be normalised coordinates of shape (K, 2) or (1, K, 2) "
                             f"(D = 4 with sigma), got {encoded.shape}")
        return self._keypoint_codec.decode_batch(encoded)

    def decode_batch(self, encoded: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``decode`` of B crops at once: normalised coordinates (B, K, 2) -> keypoints (B, K, 2), scores (B, K)."""
        encoded = np.asarray(encoded)
        if encoded.ndim != 3 or encoded.shape[-1] not in (2, 4):
            raise ValueError(f"{_NAME}.decode_batch: encoded must be normalised coordinates of shape (B, K, 2) "
                             f"(D = 4 with sigma), got {encoded.shape}")
        return self._keypoint_codec.decode_batch(encoded)

    def __repr__(self) -> str:
        args = ("input_size", "heatmap_size", "sigma", "unbiased", "blur_kernel_size", "normalize")
        return f"{_NAME}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in args) + ")"
