"""Predictor: image -> people, for any method, through the shared test engine."""
from __future__ import annotations

import numpy as np
import torch

from bupose.errors import DataError
from bupose.inference.people import People
from bupose.inference.tta import TestTimeAugmentation


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Predictor:
    """``Predictor(cfg, model)(image_bgr) -> [{"keypoints": (K, 3), "score": float, "bbox": [x, y, w, h]}]``.

    Uses ``TEST.SCALE_FACTOR`` and ``TEST.FLIP_TEST``; the model is put in eval mode on ``cfg.DEVICE``.
    """

    def __init__(self, cfg, model: torch.nn.Module, device: str | torch.device | None = None):
        from bupose.methods import build_method

        self.method = build_method(cfg)
        self.decoder = self.method.decoder()
        self.device = resolve_device(cfg.DEVICE) if device is None else torch.device(device)
        self.model = model.to(self.device).eval()
        self.engine = TestTimeAugmentation(cfg.TEST.SCALE_FACTOR, cfg.TEST.FLIP_TEST, self.device)

    def people(self, image_bgr: np.ndarray) -> People:
        """The people in one image (:class:`People`, image pixels); raises DataError for anything but an image."""
        if not isinstance(image_bgr, np.ndarray):
            hint = " (cv2.imread returns None for a file it cannot read)" if image_bgr is None else \
                " (read the file first, e.g. with cv2.imread)" if isinstance(image_bgr, (str, bytes)) else ""
            raise DataError(f"Predictor expects an (H, W, 3) BGR uint8 numpy image, got "
                            f"{type(image_bgr).__name__}{hint}")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8 or image_bgr.size == 0:
            raise DataError(f"Predictor expects an (H, W, 3) BGR uint8 image, got shape {image_bgr.shape} dtype "
                            f"{image_bgr.dtype}")
        return self.engine(self.model, self.decoder, image_bgr)

    def __call__(self, image_bgr: np.ndarray) -> list[dict]:
        return self.people(image_bgr).to_list()
