"""Predictor: image -> people, for any method, through the shared test engine."""
from __future__ import annotations

import numpy as np
import torch

from bupose.errors import ConfigError, DataError
from bupose.inference.people import People
from bupose.inference.tta import TestTimeAugmentation


def resolve_device(name: str) -> torch.device:
    """``DEVICE`` as a torch device: ``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N``.

    Raises ConfigError for another name, and for ``cuda`` / ``cuda:N`` when torch sees no such GPU (rather than
    failing later, inside the first ``.to(device)``).
    """
    from bupose.config import check_value

    name = check_value("DEVICE", name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        _check_cuda_visible(device, name)
    return device


def _check_cuda_visible(device: torch.device, name: str) -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "check CUDA_VISIBLE_DEVICES and the driver")
        raise ConfigError(f"DEVICE is {name!r} but torch sees no CUDA GPU ({why}); use DEVICE cpu, or auto to take "
                          f"a GPU when there is one")
    if device.index is not None and device.index >= count:
        raise ConfigError(f"DEVICE is {name!r} but torch sees {count} CUDA GPU(s): cuda:0 .. cuda:{count - 1}")


class Predictor:
    """``Predictor(cfg, model)(image_bgr) -> [{"keypoints": (K, 3), "score": float, "bbox": [x, y, w, h]}]``.

    Uses ``TEST.SCALE_FACTOR`` and ``TEST.FLIP_TEST``; the model is put in eval mode on ``cfg.DEVICE``.

    A top-down method (its decoder ``needs_boxes``) takes the image's person boxes, ``people(image, boxes=...)``;
    without them it runs the person detector of ``TEST.DETECTOR_CFG`` / ``TEST.DETECTOR_MODEL_FILE`` (built on first
    use) and raises ConfigError when none is set.
    """

    def __init__(self, cfg, model: torch.nn.Module, device: str | torch.device | None = None):
        from bupose.methods import build_method

        self.cfg = cfg
        self.method = build_method(cfg)
        self.decoder = self.method.decoder()
        self.device = resolve_device(cfg.DEVICE) if device is None else torch.device(device)
        self.model = model.to(self.device).eval()
        self.engine = TestTimeAugmentation(cfg.TEST.SCALE_FACTOR, cfg.TEST.FLIP_TEST, self.device)
        self._detector = None

    def people(self, image_bgr: np.ndarray, boxes=None) -> People:
        """The people in one image (:class:`People`, image pixels); raises DataError for anything but an image.

        ``boxes``: top-down methods only, the image's person boxes (a ``PersonBoxes``, an ``(xywh (N, 4), scores
        (N,))`` pair or an ``(N, 4)`` ``[x, y, w, h]`` array); None: from ``TEST.DETECTOR_CFG``'s detector.
        """
        if not isinstance(image_bgr, np.ndarray):
            hint = " (cv2.imread returns None for a file it cannot read)" if image_bgr is None else \
                " (read the file first, e.g. with cv2.imread)" if isinstance(image_bgr, (str, bytes)) else ""
            raise DataError(f"Predictor expects an (H, W, 3) BGR uint8 numpy image, got "
                            f"{type(image_bgr).__name__}{hint}")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8 or image_bgr.size == 0:
            raise DataError(f"Predictor expects an (H, W, 3) BGR uint8 image, got shape {image_bgr.shape} dtype "
                            f"{image_bgr.dtype}")
        if not getattr(self.decoder, "needs_boxes", False):
            if boxes is not None:
                raise DataError(f"Predictor.people: boxes are for top-down methods; {self.cfg.MODEL.NAME!r} finds the "
                                f"people itself")
            return self.engine(self.model, self.decoder, image_bgr)
        if boxes is None:
            boxes = self._detect(image_bgr)
        return self.engine(self.model, self.decoder, image_bgr, boxes=boxes)

    def _detect(self, image_bgr: np.ndarray):
        """The person boxes of ``TEST.DETECTOR_CFG``'s detector (built on first use)."""
        if self._detector is None:
            from bupose.errors import ConfigError
            from bupose.methods.topdown.boxes import DetectorBoxes, build_detector

            if not self.cfg.TEST.DETECTOR_CFG:
                raise ConfigError(f"{self.cfg.MODEL.NAME!r} is a top-down method and needs person boxes: pass "
                                  f"people(image, boxes=...), or set TEST.DETECTOR_CFG and TEST.DETECTOR_MODEL_FILE "
                                  f"(a bottom-up / one-stage model as the person detector)")
            self._detector = DetectorBoxes(build_detector(self.cfg, device=self.device),
                                           image_thre=self.cfg.TEST.IMAGE_THRE)
        return self._detector(None, image_bgr)

    def __call__(self, image_bgr: np.ndarray, boxes=None) -> list[dict]:
        return self.people(image_bgr, boxes=boxes).to_list()
