"""Predictor: image -> people, for any method, through the shared test engine."""
from __future__ import annotations

from pathlib import Path

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


def find_weights(cfg, run: str | Path | None = None) -> Path:
    """The weights a tool uses for ``cfg``: ``TEST.MODEL_FILE``, else the run's own ``model_best.pth``, else
    ``final_state.pth``, else ``checkpoint.pth`` in ``run`` (default ``OUTPUT_DIR/<dataset>/<config name>/``);
    CheckpointError when there is none."""
    from bupose.engine.trainer import default_output_dir
    from bupose.errors import CheckpointError

    if cfg.TEST.MODEL_FILE:
        return Path(cfg.TEST.MODEL_FILE)
    run = Path(run) if run is not None else default_output_dir(cfg)
    for name in ("model_best.pth", "final_state.pth", "checkpoint.pth"):
        if (run / name).is_file():
            return run / name
    raise CheckpointError(f"no TEST.MODEL_FILE given and no model_best.pth / final_state.pth / checkpoint.pth in "
                          f"{run}; train first or pass TEST.MODEL_FILE path/to/weights.pth")


def clip_boxes(boxes_xywh: np.ndarray, image_shape) -> np.ndarray:
    """``(N, 4)`` ``[x, y, w, h]`` boxes with both corners clipped into the image's pixel centres ``[0, W - 1] x
    [0, H - 1]`` (pixel centres at integer coordinates, the keypoints' convention); float32."""
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    h, w = image_shape[:2]
    x1, y1 = np.clip(b[:, 0], 0, w - 1), np.clip(b[:, 1], 0, h - 1)
    x2, y2 = np.clip(b[:, 0] + b[:, 2], 0, w - 1), np.clip(b[:, 1] + b[:, 3], 0, h - 1)
    return np.stack([x1, y1, x2 - x1, y2 - y1], 1).astype(np.float32)


class Predictor:
    """``Predictor(cfg, model)(image_bgr) -> [{"keypoints": (K, 3), "score": float, "bbox": [x, y, w, h]}]``.

    People come best first (sorted by score), those scoring below the person-score threshold dropped, with boxes
    clipped to the image (:func:`clip_boxes`); coordinates are image pixels with pixel centres at integer
    coordinates. Uses ``TEST.SCALE_FACTOR`` and ``TEST.FLIP_TEST``; the model is put in eval mode on ``cfg.DEVICE``.
    :meth:`draw` draws them (:func:`bupose.vis.draw_poses`).

    ``model`` is the method's ``nn.Module``, or an exported network run by onnxruntime: an
    :class:`bupose.export.OnnxModel` or the path of a ``.onnx`` file written by ``tools/export.py`` (checked against
    ``cfg``'s method and keypoint count). :meth:`from_config` builds the model and loads its weights.

    A top-down method (its decoder ``needs_boxes``) takes the image's person boxes, ``people(image, boxes=...)``;
    without them it runs the person detector of ``TEST.DETECTOR_CFG`` / ``TEST.DETECTOR_MODEL_FILE`` (built on first
    use) and raises ConfigError when none is set.

    Args:
        score_threshold: people scoring below it are dropped; None: ``TEST.SCORE_THRESHOLD`` (default 0: keep
            all).
    """

    def __init__(self, cfg, model, device: str | torch.device | None = None, score_threshold: float | None = None):
        from bupose.methods import build_method

        self.cfg = cfg
        self.method = build_method(cfg)
        self.decoder = self.method.decoder()
        self.device = resolve_device(cfg.DEVICE) if device is None else torch.device(device)
        if isinstance(model, (str, Path)):
            from bupose.export import OnnxModel

            model = OnnxModel(model)
        if hasattr(model, "check_config"):
            model.check_config(cfg)
        self.model = model.to(self.device).eval()
        self.engine = TestTimeAugmentation(cfg.TEST.SCALE_FACTOR, cfg.TEST.FLIP_TEST, self.device)
        if score_threshold is None:
            score_threshold = cfg.TEST.SCORE_THRESHOLD
        self.score_threshold = float(score_threshold)
        self._detector = None

    @classmethod
    def from_config(cls, cfg, weights: str | Path | None = None, device: str | torch.device | None = None,
                    score_threshold: float | None = None) -> "Predictor":
        """The predictor of ``cfg``'s model with ``weights``: a checkpoint (bupose or official) or an exported
        ``.onnx`` file; None: :func:`find_weights` (``TEST.MODEL_FILE``, else the run's own weights)."""
        from bupose import build_model, load_checkpoint

        weights = Path(weights) if weights is not None else find_weights(cfg)
        if weights.suffix.lower() == ".onnx":
            return cls(cfg, weights, device=device, score_threshold=score_threshold)
        model = build_model(cfg)
        load_checkpoint(model, weights)
        return cls(cfg, model, device=device, score_threshold=score_threshold)

    @property
    def spec(self):
        """The keypoint layout (names, skeleton, colours) of the people this predictor returns."""
        return self.method.spec

    def people(self, image_bgr: np.ndarray, boxes=None) -> People:
        """The people in one image (:class:`People`, image pixels, best first, boxes clipped to the image); raises
        DataError for anything but an image.

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
            return self._finish(self.engine(self.model, self.decoder, image_bgr), image_bgr.shape)
        if boxes is None:
            boxes = self._detect(image_bgr)
        return self._finish(self.engine(self.model, self.decoder, image_bgr, boxes=boxes), image_bgr.shape)

    def _finish(self, people: People, image_shape) -> People:
        """Best first, below the score threshold dropped, boxes clipped to the image."""
        scores = np.asarray(people.scores, np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        order = order[scores[order] >= self.score_threshold]
        boxes = clip_boxes(np.asarray(people.boxes).reshape(-1, 4)[order], image_shape)
        return People(np.asarray(people.keypoints)[order], np.asarray(people.scores)[order], boxes)

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

    def draw(self, image_bgr: np.ndarray, people=None, boxes=None, *, keypoint_threshold: float = 0.3,
             show_score: bool = False, show_box: bool = False) -> np.ndarray:
        """``image_bgr`` with ``people`` drawn (:func:`bupose.vis.draw_poses`: the skeleton of :attr:`spec`, joints
        scoring above ``keypoint_threshold``, optionally each person's score and box); ``people`` None: predicted
        now (``boxes`` as in :meth:`people`). Returns a new ``(H, W, 3)`` uint8 image."""
        from bupose.vis import draw_poses

        if people is None:
            people = self.people(image_bgr, boxes=boxes)
        return draw_poses(image_bgr, people, self.spec, keypoint_threshold=keypoint_threshold,
                          show_score=show_score, show_box=show_box)
