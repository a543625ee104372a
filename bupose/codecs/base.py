"""The codec interface of the top-down family: training targets from keypoints (``encode``) and keypoints from network
outputs (``decode``). Names and arguments follow mmpose 1.x's ``BaseKeypointCodec`` so that an mmpose codec config
maps one to one, without its registry.

Coordinates: keypoints are in pixels of the network's input crop (``input_size = (w, h)``), pixel centres at
integer coordinates, x to the right and y down.
"""
from __future__ import annotations

import abc
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from bupose.errors import ConfigError


class BaseKeypointCodec(abc.ABC):
    """A pair ``encode`` / ``decode``.

    ``encode(keypoints (N, K, 2), keypoints_visible (N, K) or None) -> dict`` of targets (arrays);
    ``decode(encoded) -> (keypoints (N, K, 2), scores (N, K))`` for one crop (mmpose returns N = 1);
    ``decode_batch(encoded_batch) -> (keypoints (B, K, 2), scores (B, K))`` for B crops at once.
    """

    def __init__(self, *, input_size: Sequence[int]) -> None:
        self.input_size = size_pair(input_size, "input_size")

    @abc.abstractmethod
    def encode(self, keypoints: np.ndarray, keypoints_visible: Optional[np.ndarray] = None) -> dict:
        """Targets for the people of one crop; keypoints (N, K, 2) in input-crop pixels, visibilities (N, K)."""

    @abc.abstractmethod
    def decode(self, encoded: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints (1, K, 2) in input-crop pixels and scores (1, K) from one crop's network output."""

    def decode_batch(self, encoded: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints (B, K, 2) and scores (B, K) for a batch of crops: ``encoded`` is an array (or a tuple of arrays)
        with a leading batch axis B. This default decodes crop by crop; codecs override it with a vectorised one."""
        items = list(zip(*encoded)) if isinstance(encoded, tuple) else list(encoded)
        if not items:
            raise ValueError(f"{type(self).__name__}.decode_batch: got an empty batch")
        outs = [self.decode(item) for item in items]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "scale_factor")
        return f"{type(self).__name__}({args})"


def size_pair(value: Sequence[int], name: str) -> Tuple[int, int]:
    """``value`` as a ``(w, h)`` tuple of positive ints; ConfigError otherwise."""
    try:
        w, h = (int(v) for v in value)
        ok = w > 0 and h > 0 and all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be two positive integers (w, h), got {value!r}")
    return w, h


def check_keypoints(codec: str, keypoints: np.ndarray,
                    keypoints_visible: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Validated ``keypoints`` (N, K, 2) (dtype kept, as mmpose computes in it) and ``keypoints_visible`` (N, K)
    (ones of float32 when None, as mmpose)."""
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"{codec}.encode: keypoints must have shape (N, K, 2) (x, y in input-crop pixels), "
                         f"got {keypoints.shape}")
    if not np.issubdtype(keypoints.dtype, np.floating):
        keypoints = keypoints.astype(np.float64)
    if keypoints_visible is None:
        return keypoints, np.ones(keypoints.shape[:2], dtype=np.float32)
    keypoints_visible = np.asarray(keypoints_visible)
    if keypoints_visible.shape != keypoints.shape[:2]:
        raise ValueError(f"{codec}.encode: keypoints_visible must have shape (N, K) = {keypoints.shape[:2]}, "
                         f"got {keypoints_visible.shape}")
    return keypoints, keypoints_visible


def check_heatmaps(codec: str, heatmaps: np.ndarray, heatmap_size: Tuple[int, int], ndim: int) -> np.ndarray:
    """``heatmaps`` as an array of ``ndim`` axes ending in (H, W) = heatmap_size[::-1]; ValueError otherwise."""
    heatmaps = np.asarray(heatmaps)
    w, h = heatmap_size
    names = "(K, H, W)" if ndim == 3 else "(B, K, H, W)"
    if heatmaps.ndim != ndim or heatmaps.shape[-2:] != (h, w):
        raise ValueError(f"{codec}: heatmaps must have shape {names} with (H, W) = ({h}, {w}) (heatmap_size "
                         f"{heatmap_size} is (W, H)), got {heatmaps.shape}")
    if not np.issubdtype(heatmaps.dtype, np.floating):
        raise ValueError(f"{codec}: heatmaps must be floating point, got {heatmaps.dtype}")
    return heatmaps
