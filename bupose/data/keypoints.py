"""Keypoint metadata as data: names, flip index, OKS sigmas, skeleton and colours.

Every part of bupose that needs to know about a keypoint layout (augmentation, flip test, losses, evaluation,
drawing, the synthetic generator) reads it from a :class:`KeypointSpec` defined here, and nowhere else.

Conventions: keypoint indices are 0-based; ``skeleton`` holds 0-based index pairs; ``flip_index[k]`` is the index
of the keypoint that ``k`` becomes in a horizontally mirrored image; colours are BGR tuples (OpenCV order).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEFT_COLOR = (0, 160, 255)  # orange
RIGHT_COLOR = (255, 128, 0)  # blue
CENTER_COLOR = (0, 220, 0)  # green


@dataclass(frozen=True)
class KeypointSpec:
    """A keypoint layout.

    Attributes:
        name: short identifier (``"coco"``, ``"crowdpose"``).
        names: keypoint names, length K.
        flip_index: length K; an involution (``flip_index[flip_index[k]] == k``).
        sigmas: OKS per-keypoint constants (the COCO ``kpt_oks_sigmas``), length K.
        skeleton: 0-based pairs of keypoint indices drawn as limbs.
        upper_body_ids: indices of the upper body (head, arms, shoulders) for top-down half-body augmentation;
            empty: the layout has no half-body split (the augmentation is skipped).
        lower_body_ids: indices of the lower body (hips, legs); disjoint from ``upper_body_ids``.
    """

    name: str
    names: tuple[str, ...]
    flip_index: tuple[int, ...]
    sigmas: tuple[float, ...]
    skeleton: tuple[tuple[int, int], ...]
    keypoint_colors: tuple[tuple[int, int, int], ...] = field(default=())
    limb_colors: tuple[tuple[int, int, int], ...] = field(default=())
    upper_body_ids: tuple[int, ...] = field(default=())
    lower_body_ids: tuple[int, ...] = field(default=())

    def __post_init__(self):
        k = len(self.names)
        for attr in ("flip_index", "sigmas"):
            if len(getattr(self, attr)) != k:
                raise ValueError(f"KeypointSpec {self.name!r}: {attr} has {len(getattr(self, attr))} entries, "
                                 f"expected {k} (one per keypoint name)")
        for i, j in enumerate(self.flip_index):
            if not 0 <= j < k or self.flip_index[j] != i:
                raise ValueError(f"KeypointSpec {self.name!r}: flip_index is not an involution at index {i} "
                                 f"({self.names[i]!r} -> {j})")
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"KeypointSpec {self.name!r}: skeleton edge ({a}, {b}) out of range 0..{k - 1}")
        body = set(self.upper_body_ids) | set(self.lower_body_ids)
        if body and (len(body) != len(self.upper_body_ids) + len(self.lower_body_ids) or min(body) < 0
                     or max(body) >= k):
            raise ValueError(f"KeypointSpec {self.name!r}: upper_body_ids and lower_body_ids must be disjoint "
                             f"indices in 0..{k - 1}")
        if not self.keypoint_colors:
            object.__setattr__(self, "keypoint_colors", tuple(_side_color(n) for n in self.names))
        if not self.limb_colors:
            object.__setattr__(self, "limb_colors", tuple(
                _side_color(self.names[a]) if _side(self.names[a]) == _side(self.names[b]) else CENTER_COLOR
                for a, b in self.skeleton))

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def index(self, name: str) -> int:
        return self.names.index(name)


def _side(name: str) -> str:
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "center"


def _side_color(name: str) -> tuple[int, int, int]:
    return {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}[_side(name)]


COCO17 = KeypointSpec(
    name="coco",
    names=("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
           "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
           "right_knee", "left_ankle", "right_ankle"),
    flip_index=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    sigmas=tuple(s / 10.0 for s in (.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                                    .89, .89)),
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
              (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    upper_body_ids=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),  # face, shoulders, elbows, wrists (as the official HRNet)
    lower_body_ids=(11, 12, 13, 14, 15, 16),  # hips, knees, ankles
)

CROWDPOSE14 = KeypointSpec(
    name="crowdpose",
    names=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
           "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"),
    flip_index=(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13),
    sigmas=tuple(s / 10.0 for s in (.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79)),
    skeleton=((12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7), (6, 8), (8, 10),
              (7, 9), (9, 11)),
    upper_body_ids=(0, 1, 2, 3, 4, 5, 12, 13),  # shoulders, elbows, wrists, head, neck (as mmpose's CrowdPose)
    lower_body_ids=(6, 7, 8, 9, 10, 11),  # hips, knees, ankles
)

# OCHuman is annotated in the COCO-17 layout.
SPECS: dict[str, KeypointSpec] = {"coco": COCO17, "crowdpose": CROWDPOSE14, "ochuman": COCO17}


def get_spec(name: str) -> KeypointSpec:
    """Look a layout up by name (``coco``, ``crowdpose``, ``ochuman``)."""
    try:
        return SPECS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown keypoint layout {name!r}; known layouts: {sorted(SPECS)}") from None


# --- COCO-17 -> CrowdPose-14 -------------------------------------------------------------------------------
#: CrowdPose index -> COCO index for the 12 limb joints that both layouts share.
COCO_TO_CROWDPOSE_LIMBS = (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
_FACE = (0, 1, 2, 3, 4)  # nose, eyes, ears


def coco17_to_crowdpose14(keypoints: np.ndarray, head_extrapolation: float = 0.5) -> np.ndarray:
    """Map COCO-17 poses to the CrowdPose-14 layout, so that a COCO-trained model can be evaluated on CrowdPose.

    The 12 limb joints are copied. CrowdPose's two extra joints do not exist in COCO and are approximated:

    * ``neck`` = midpoint of the two shoulders; its score/visibility is the minimum of the two shoulders'.
    * ``head`` (CrowdPose's top of the head) = centre of the labelled face points (nose, eyes, ears) moved away
      from the neck by ``head_extrapolation`` times the neck-to-face distance; its score is the mean of the face
      points' scores. Without a labelled face point or neck it is unlabelled (0, 0, 0).

    Because head and neck are approximations, AP on CrowdPose of a COCO model is a lower bound.

    Args:
        keypoints: ``(..., 17, 3)`` array of x, y, score (or visibility; > 0 means labelled).
    Returns:
        ``(..., 14, 3)`` float array.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape[-2:] != (17, 3):
        raise ValueError(f"coco17_to_crowdpose14 expects (..., 17, 3) keypoints, got shape {kp.shape}")
    out = np.zeros(kp.shape[:-2] + (14, 3), dtype=np.float64)
    out[..., :12, :] = kp[..., COCO_TO_CROWDPOSE_LIMBS, :]
    ls, rs = kp[..., 5, :], kp[..., 6, :]
    neck_ok = (ls[..., 2] > 0) & (rs[..., 2] > 0)
    neck_xy = (ls[..., :2] + rs[..., :2]) / 2
    out[..., 13, :2] = np.where(neck_ok[..., None], neck_xy, 0)
    out[..., 13, 2] = np.where(neck_ok, np.minimum(ls[..., 2], rs[..., 2]), 0)
    face = kp[..., _FACE, :]
    labelled = face[..., 2] > 0
    n = labelled.sum(-1)
    face_ok = (n > 0) & neck_ok
    safe_n = np.maximum(n, 1)[..., None]
    face_xy = (face[..., :2] * labelled[..., None]).sum(-2) / safe_n
    head_xy = face_xy + head_extrapolation * (face_xy - neck_xy)
    out[..., 12, :2] = np.where(face_ok[..., None], head_xy, 0)
    out[..., 12, 2] = np.where(face_ok, (face[..., 2] * labelled).sum(-1) / safe_n[..., 0], 0)
    return out
