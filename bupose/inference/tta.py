"""THE multi-scale + flip test engine, shared by every method.

For each scale (largest first, as the official DEKR code) the engine asks the method to prepare the network input,
runs the model on it and, with flip testing, on its mirror image, then hands both outputs to the method, which folds
them into a running aggregate. Only that aggregate survives a scale, so memory stays near that of the largest
single pass whatever the number of scales.

The contract a method's decoder fulfils (see :class:`bupose.methods.dekr.decode.DEKRDecoder`)::

    decoder.bind(model)                                  # optional: read what decoding needs from the model
    state = decoder.begin(image, scales)                 # image: (H, W, 3) uint8 BGR
    state = decoder.begin(image, scales, boxes=boxes)    # top-down: the image's person boxes
    view = decoder.prepare(image, scale)                 # view.tensor: (1, 3, h, w) network input
    flipped = decoder.flip_input(view.tensor)            # the mirrored input
    decoder.add_scale(state, outputs, flipped_outputs_or_None, view, scale)
    people = decoder.finish(state)                       # People in image pixels

Dense methods (DEKR) average maps inside ``add_scale``; per-instance methods decode each pass there, map the poses
to image coordinates and pool them for an NMS in ``finish``. Top-down methods get the image's person boxes at
``begin`` and return a batch of crops from ``prepare``; a pass with an empty batch (no boxes) is not run.

Bounded memory: no forward pass gets more than ``max_input_pixels`` network-input pixels (``batch x h x w``; the
decoder's ``max_input_pixels`` attribute, default :data:`DEFAULT_MAX_INPUT_PIXELS`). Each decoder sizes its inputs
to fit (a pass that the official resize would make larger gets a shorter short side, its map back to the image
still exact; an image that cannot fit even with a short side of :data:`MIN_SHORT_SIDE` input pixels is refused by
:func:`too_large`, before anything is allocated); the engine runs a batch of crops (top-down) in chunks that fit,
and refuses a single input over the limit.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bupose.errors import DataError
from bupose.inference.people import People

#: the default limit of network-input pixels per forward pass (2^23: 2048 x 4096, or 170 crops of 256 x 192); it
#: lets the official sizes through up to an aspect ratio of 8 at a short side of 1024 (DEKR 512 at scale 2)
DEFAULT_MAX_INPUT_PIXELS = 2 ** 23
#: a method's input size (the short side at scale 1) shrunk to fit the limit stays at least this (a person needs more
#: than a few output cells); below, the image is refused
MIN_SHORT_SIDE = 64


def too_large(image_shape, scale: float, limit: int, need: int, method: str) -> DataError:
    """The error for an image whose pass at ``scale`` needs ``need`` input pixels even at the minimum input size."""
    h, w = image_shape[:2]
    return DataError(f"{method}: image {w}x{h} (aspect ratio {max(w, h) / max(min(w, h), 1):.0f}) at test scale "
                     f"{scale:g} needs {need} network-input pixels even at input size {MIN_SHORT_SIDE} (short side at "
                     f"scale 1), over the limit of {limit} per pass (TEST.MAX_INPUT_PIXELS); crop or split the image")


class TestTimeAugmentation:
    """Multi-scale and flip testing.

    Args:
        scales: test scales (multiples of the method's base input size).
        flip: also run the horizontally mirrored image.
        device: where the model runs; the inputs are moved there.
    """

    __test__ = False  # not a pytest class

    def __init__(self, scales: Sequence[float] = (1.0,), flip: bool = True, device: str | torch.device = "cpu"):
        if not scales:
            raise ValueError("TestTimeAugmentation needs at least one scale")
        self.scales = sorted((float(s) for s in scales), reverse=True)
        self.flip = flip
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, decoder, image: np.ndarray, boxes=None) -> People:
        """The people in ``image``; ``boxes`` (top-down methods: the image's person boxes) go to ``begin``."""
        if hasattr(decoder, "bind"):
            decoder.bind(model)
        if boxes is None:
            state = decoder.begin(image, self.scales)
        else:
            state = decoder.begin(image, self.scales, boxes=boxes)
        limit = int(getattr(decoder, "max_input_pixels", DEFAULT_MAX_INPUT_PIXELS))
        for scale in self.scales:
            view = decoder.prepare(image, scale)
            if view.tensor.shape[0] == 0:
                continue
            x = view.tensor.to(self.device)
            outputs = _chunked(model, x, limit)
            flipped = _chunked(model, decoder.flip_input(x), limit) if self.flip else None
            del x
            decoder.add_scale(state, outputs, flipped, view, scale)
            del outputs, flipped
        return decoder.finish(state)


def _chunked(model: torch.nn.Module, x: torch.Tensor, limit: int):
    """``model(x)`` with at most ``limit`` input pixels per call: a batch (of crops) runs in chunks whose outputs
    (tensors, or dicts / lists / tuples of them) are concatenated along the batch."""
    per_sample = x.shape[2] * x.shape[3]
    if per_sample > limit:
        raise DataError(f"TestTimeAugmentation: a network input of {x.shape[3]}x{x.shape[2]} pixels is over the "
                        f"limit of {limit} input pixels per pass (TEST.MAX_INPUT_PIXELS)")
    chunk = max(1, limit // per_sample)
    if x.shape[0] <= chunk:
        return model(x)
    return _concat([model(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, 0)
    if isinstance(first, dict):
        return {k: _concat([p[k] for p in parts]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat([p[i] for p in parts]) for i in range(len(first)))
    raise TypeError(f"TestTimeAugmentation: cannot concatenate model outputs of type {type(first).__name__}")
