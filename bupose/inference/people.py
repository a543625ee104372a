"""The people a model finds in one image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class People:
    """Poses of one image.

    Attributes:
        keypoints: ``(N, K, 3)`` float: x, y in pixels of the image the poses belong to, and a per-keypoint score.
        scores: ``(N,)`` float person scores.
        detection_boxes: optional ``(N, 4)`` ``[x, y, w, h]`` boxes predicted with the poses (one-stage detectors);
            without them a person's box is the extent of its keypoints.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    detection_boxes: np.ndarray | None = None

    @classmethod
    def empty(cls, num_joints: int) -> "People":
        return cls(np.zeros((0, num_joints, 3), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` ``[x, y, w, h]``: the detection boxes when the method predicts them, else the extent of each
        pose's keypoints."""
        if self.detection_boxes is not None:
            return np.asarray(self.detection_boxes)
        if len(self) == 0:
            return np.zeros((0, 4), np.float32)
        xy = self.keypoints[..., :2]
        lo, hi = xy.min(1), xy.max(1)
        return np.concatenate([lo, hi - lo], axis=1)

    def to_list(self) -> list[dict]:
        """``[{"keypoints": (K, 3) array, "score": float, "bbox": [x, y, w, h]}, ...]``."""
        return [{"keypoints": kp, "score": float(s), "bbox": [float(v) for v in b]}
                for kp, s, b in zip(self.keypoints, self.scores, self.boxes)]
