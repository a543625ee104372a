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
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bupose.inference.people import People


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
        for scale in self.scales:
            view = decoder.prepare(image, scale)
            if view.tensor.shape[0] == 0:
                continue
            x = view.tensor.to(self.device)
            outputs = model(x)
            flipped = model(decoder.flip_input(x)) if self.flip else None
            del x
            decoder.add_scale(state, outputs, flipped, view, scale)
            del outputs, flipped
        return decoder.finish(state)
