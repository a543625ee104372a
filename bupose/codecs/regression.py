"""Coordinate-regression labels (mmpose 1.x's ``RegressionLabel``): keypoints in input-crop pixels divided by the
crop size, so that the network regresses normalised coordinates in ``[0, 1]``. Used by RLE (Li et al., "Human Pose
Regression with Residual Log-likelihood Estimation", ICCV 2021), whose head also predicts a per-coordinate
``sigma`` that gives the keypoint score ``1 - mean(sigma)``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from bupose.codecs.base import BaseKeypointCodec, check_keypoints


class RegressionLabel(BaseKeypointCodec):
    """``encode``: ``keypoint_labels (N, K, 2) = keypoints / (w, h)`` (float32) and ``keypoint_weights (N, K)``: 1
    where the keypoint lies in ``[0, w - 1] x [0, h - 1]`` and its visibility is above 0.5, else 0.

    ``decode(encoded (K, 2) or (K, 4), or (1, K, D))``: keypoints ``(1, K, 2)`` in input-crop pixels (``x * (w, h)``)
    and scores ``(1, K)``: ones for 2 columns, ``mean(1 - sigma)`` over the two sigma columns for 4 (mmpose's RLE
    head). ``decode_batch(encoded (B, K, D))`` does B crops at once.

    Args:
        input_size: ``(w, h)`` of the input crop.
    """

    label_mapping_table = dict(keypoint_labels="keypoint_labels", keypoint_weights="keypoint_weights")

    def __init__(self, input_size) -> None:
        super().__init__(input_size=input_size)

    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        keypoints, keypoints_visible = check_keypoints("RegressionLabel", keypoints, keypoints_visible)
        w, h = self.input_size
        inside = ((keypoints >= 0) & (keypoints <= [w - 1, h - 1])).all(axis=-1)
        valid = inside & (keypoints_visible > 0.5)
        return {"keypoint_labels": (keypoints / np.array([w, h])).astype(np.float32),
                "keypoint_weights": np.where(valid, 1.0, 0.0).astype(np.float32)}

    def decode(self, encoded) -> Tuple[np.ndarray, np.ndarray]:
        encoded = np.asarray(encoded)
        if encoded.ndim == 2:
            encoded = encoded[None]
        if encoded.ndim != 3 or encoded.shape[0] != 1:
            raise ValueError(f"RegressionLabel.decode: encoded must have shape (K, 2|4) or (1, K, 2|4), got "
                             f"{encoded.shape}")
        return self.decode_batch(encoded)

    def decode_batch(self, encoded) -> Tuple[np.ndarray, np.ndarray]:
        encoded = np.asarray(encoded)
        if encoded.ndim != 3 or encoded.shape[-1] not in (2, 4):
            raise ValueError(f"RegressionLabel.decode_batch: encoded must have shape (B, K, 2) or (B, K, 4) (with "
                             f"sigma), got {encoded.shape}")
        if encoded.shape[-1] == 2:
            scores = np.ones(encoded.shape[:2], dtype=np.float32)
        else:
            scores = (1 - encoded[..., 2:4]).mean(axis=-1)
        w, h = self.input_size
        return encoded[..., :2] * np.array([w, h]), scores
