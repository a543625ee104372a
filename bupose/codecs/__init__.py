"""Keypoint codecs of the top-down family: training targets from keypoints (``encode``) and keypoints from network
outputs (``decode``), with mmpose 1.x's class names, keyword arguments and numerics, so that an mmpose codec config
dict builds the same codec here::

    codec = build_codec({"type": "UDPHeatmap", "input_size": (192, 256), "heatmap_size": (48, 64), "sigma": 2})
    targets = codec.encode(keypoints, keypoints_visible)       # (N, K, 2), (N, K) in input-crop pixels
    keypoints, scores = codec.decode(heatmaps)                 # (K, H, W) -> (1, K, 2), (1, K)
    keypoints, scores = codec.decode_batch(batch_heatmaps)     # (B, K, H, W) -> (B, K, 2), (B, K)

Codecs (mmpose ``type`` names): ``MSRAHeatmap`` (Gaussian heatmaps; DARK with ``unbiased=True``), ``UDPHeatmap``
(UDP Gaussian or combined disc + offset maps), ``SimCCLabel`` (1-D x / y classification vectors), ``RegressionLabel``
(normalised coordinates; RLE) and ``IntegralRegressionLabel`` (normalised coordinates plus MSRA heatmaps, normalised
to sum 1; integral regression: IPR / DSNT); the last two decode coordinates, not heatmaps.

``CODECS`` maps each ``type`` to its class; a new codec is one line here.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Mapping

from bupose.codecs.base import BaseKeypointCodec
from bupose.codecs.heatmap import MSRAHeatmap, UDPHeatmap
from bupose.codecs.integral import IntegralRegressionLabel
from bupose.codecs.regression import RegressionLabel
from bupose.codecs.simcc import SimCCLabel
from bupose.errors import ConfigError

#: mmpose codec ``type`` -> class
CODECS = {
    "MSRAHeatmap": MSRAHeatmap,
    "UDPHeatmap": UDPHeatmap,
    "SimCCLabel": SimCCLabel,
    "RegressionLabel": RegressionLabel,
    "IntegralRegressionLabel": IntegralRegressionLabel,
}


def build_codec(cfg: Mapping) -> BaseKeypointCodec:
    """The codec for an mmpose-style config ``{"type": name, **keyword arguments}``; ConfigError (naming the closest
    valid type or argument) for an unknown type or argument, or a missing required argument."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ConfigError(f"a codec config is a dict with a 'type' key (one of {sorted(CODECS)}), got {cfg!r}")
    kwargs = dict(cfg)
    name = kwargs.pop("type")
    if name not in CODECS:
        hint = difflib.get_close_matches(str(name), list(CODECS), n=1, cutoff=0.0)
        raise ConfigError(f"unknown codec type {name!r}; known: {sorted(CODECS)}; did you mean {hint[0]!r}?")
    cls = CODECS[name]
    params = {p.name: p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}
    for key in kwargs:
        if key not in params:
            hint = difflib.get_close_matches(str(key), list(params), n=1, cutoff=0.0)
            raise ConfigError(f"{name}: unknown argument {key!r}; arguments: {list(params)}"
                              + (f"; did you mean {hint[0]!r}?" if hint else ""))
    missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise ConfigError(f"{name}: missing required argument(s) {missing}")
    return cls(**kwargs)


__all__ = ["BaseKeypointCodec", "CODECS", "IntegralRegressionLabel", "MSRAHeatmap", "RegressionLabel", "SimCCLabel",
           "UDPHeatmap", "build_codec"]
