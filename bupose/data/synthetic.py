"""Synthetic crowds: the built-in default dataset.

The generator draws scenes of articulated, human-like figures on textured backgrounds and writes them as JPEG images
with keypoint annotations in two layouts, CrowdPose-14 and COCO-17 (same images, same people, same ids)::

    <root>/images/train/000001.jpg ...           <root>/images/val/000001.jpg ...
    <root>/annotations/crowdpose_train.json      <root>/annotations/crowdpose_val.json
    <root>/annotations/coco_train.json           <root>/annotations/coco_val.json
    <root>/manifest.json                         (generator version and parameters)

How a scene is made (all randomness comes from one ``numpy`` generator seeded by ``(seed, split, index)``, so an image
is the same whatever the number of worker processes):

* **Figures.** A 3-D skeleton in units of body height (body frame: x = the person's left, y = down, z = forward) with
  the 17 COCO joints plus CrowdPose's ``head`` (top of the head) and ``neck`` (base of the neck, between the
  shoulders). Joint angles are drawn from a few pose families (standing, walking, arms raised, reaching, hands on
  hips, crouching, running) within plausible ranges; the body is turned by a random yaw (front, back or profile
  views), projected orthographically, rotated in the image plane (mostly upright, some up to ~45 degrees), scaled
  to a height of about 50-300 px and placed. Body parts (tapered limbs, a torso hull, neck, an elliptical head,
  hands, feet) are filled shapes with a dark outline, drawn in depth order within the person.
* **Left and right.** Flip-independent cues: the face (eyes, nose, mouth; hair covers the head seen from behind),
  the shirt's front (collar and buttons, absent from behind), feet pointing where the person faces, and near-side
  limbs drawn over far-side ones. In addition, the left arm and leg carry transverse stripes.
* **Crowds.** Each image gets a target crowd level (easy / medium / hard, a third each); it sets the number of people
  (1-12), their size and how tightly they are packed (rows of people with overlapping boxes). A layout is re-drawn
  a few times, tighter or looser, until its crowd index falls in the target level. People are drawn far to near.
* **Labels.** A joint outside the image is unlabelled (``0, 0, 0``). A labelled joint covered by the drawn body of a
  nearer person has visibility 1, otherwise 2. Face points on the far side of the head (eyes and nose seen from
  behind, the far ear in profile) are unlabelled. Self-occlusion (an arm behind the own torso) keeps visibility 2.
  People whose body is less than ~25 % visible are not drawn at all.
* **Ignored regions.** A few % of images contain a clump of tiny figures annotated as one ``iscrowd: 1`` region
  (convex polygon, box, no keypoints), and some contain a tiny person annotated with ``num_keypoints: 0`` and zero
  keypoints; people cut off so that no joint lies inside the image also get ``num_keypoints: 0``.
* **Clutter.** Backgrounds are smooth noise, gradients, stripes, blobs or tiles; distractors (polygons, ellipses,
  sticks and jointed stick chains) are drawn behind the people; then mild blur, noise and brightness changes.

Conventions: pixel centres are at integer coordinates (pixel ``(x, y)`` covers ``[x - 0.5, x + 0.5]``), as in the
rest of bupose; a joint is inside the image when ``0 <= x <= W - 1`` and ``0 <= y <= H - 1``. ``bbox`` is
``[x, y, w, h]`` of the drawn body's pixels clipped to the image, in the convention of ``pycocotools``' mask-to-box
(pixel columns ``x0..x1`` give ``x = x0, w = x1 - x0 + 1``). COCO ``area`` is the body's pixel count inside the image
(the whole body, also where a nearer person covers it); ``segmentation`` is the convex hull of those pixels.
CrowdPose files have no ``area`` and no person ``segmentation``, and their ``num_keypoints`` counts labelled joints
among the first 12 only, as in the official files. Image ids are ``index + 1`` for train and ``1_000_000 + index + 1``
for val; annotation ids are ``image_id * 100 + slot``.

The crowd index follows CrowdPose: ``crowdIndex = (1/n) sum_i N_b(i) / N_a(i)`` over the people ``i`` with
``N_a(i) > 0`` labelled CrowdPose joints, where ``N_b(i)`` counts the labelled CrowdPose joints of the other people
(crowd regions excluded) that lie inside person ``i``'s box; it is stored rounded to 2 decimals. Levels: easy
``< 0.2``, medium ``0.2 <= ci < 0.8``, hard ``>= 0.8`` (see :func:`crowd_level`).
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from ..errors import DataError
from .keypoints import COCO17, CROWDPOSE14, KeypointSpec

#: Bump when the output for the same parameters changes; :func:`ensure_synthetic` then regenerates.
GENERATOR_VERSION = 1
SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 0, "val": 1}
_IMAGE_ID_BASE = {"train": 0, "val": 1_000_000}
LEVELS = ("easy", "medium", "hard")
DEFAULT_ROOT = "datasets/synthetic"


def preset_folder(preset: str = "crowds") -> str:
    """The folder name of a preset's dataset under ``DATASET.ROOT``: ``synthetic`` or ``synthetic_<preset>``."""
    return "synthetic" if preset == "crowds" else f"synthetic_{preset}"

JPEG_QUALITY = 92

#: Internal joint layout: the 17 COCO joints, then CrowdPose's ``head`` (top of head) and ``neck``.
JOINT_NAMES: tuple[str, ...] = COCO17.names + ("head", "neck")
NUM_JOINTS = len(JOINT_NAMES)
#: Internal joint index of each COCO-17 / CrowdPose-14 keypoint.
COCO_JOINTS = tuple(JOINT_NAMES.index(n) for n in COCO17.names)
CROWDPOSE_JOINTS = tuple(JOINT_NAMES.index(n) for n in CROWDPOSE14.names)
_J = {n: i for i, n in enumerate(JOINT_NAMES)}

# --------------------------------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticImage:
    """One rendered scene with everything needed to annotate (and to check the annotation of) it.

    People are in drawing order, far to near: person ``j`` is nearer than person ``i`` when ``j > i``.

    Attributes:
        image: ``(H, W, 3)`` uint8 BGR, before JPEG encoding.
        joints: ``(N, 19, 3)`` float64 x, y, visibility in the internal layout :data:`JOINT_NAMES`; visibility 0 for
            unlabelled joints (whose x, y are 0), 1 covered by a nearer person, 2 visible. Not rounded.
        occluder: ``(N, 19)`` int, for a joint with visibility 1 the index of the nearest person whose body covers
            it, else -1.
        masks: ``(N, H, W)`` bool, each person's whole drawn body (outline included) inside the image.
        annotated: ``(N,)`` bool; False for people deliberately left without keypoints (tiny figures), whose
            ``joints`` are all zero.
        crowd_masks: ``(M, H, W)`` bool, the regions annotated ``iscrowd: 1`` (clumps of tiny figures).
        level: the target crowd level the layout was drawn for (``easy``, ``medium``, ``hard``); the actual level,
            ``crowd_level(crowd_index)``, differs in rare cases where no attempt hit the target.
        crowd_index: the crowd index of the annotations (see :func:`crowd_index`), rounded to 2 decimals as stored.
    """

    image: np.ndarray
    joints: np.ndarray
    occluder: np.ndarray
    masks: np.ndarray
    annotated: np.ndarray
    crowd_masks: np.ndarray
    level: str
    crowd_index: float

    @property
    def num_people(self) -> int:
        return int(self.joints.shape[0])

    def keypoints(self, spec: KeypointSpec) -> np.ndarray:
        """``(N, K, 3)`` keypoints in the layout ``spec`` (COCO17 or CROWDPOSE14)."""
        return self.joints[:, _layout_joints(spec)]


def _layout_joints(spec: KeypointSpec) -> tuple[int, ...]:
    if spec.names == COCO17.names:
        return COCO_JOINTS
    if spec.names == CROWDPOSE14.names:
        return CROWDPOSE_JOINTS
    return tuple(JOINT_NAMES.index(n) for n in spec.names)  # raises ValueError for unknown names


# --------------------------------------------------------------------------------------------------------------
# Crowd index
# --------------------------------------------------------------------------------------------------------------


def crowd_index(keypoints: np.ndarray, boxes: np.ndarray) -> float:
    """CrowdPose's crowd index of one image.

    Args:
        keypoints: ``(N, K, 3)`` x, y, visibility of the people (not crowd regions); visibility > 0 is labelled.
        boxes: ``(N, 4)`` person boxes ``[x, y, w, h]``; a joint at ``(x, y)`` is inside when
            ``bx <= x <= bx + w`` and ``by <= y <= by + h``.
    Returns:
        ``(1/n) sum_i N_b(i) / N_a(i)`` over the ``n`` people with ``N_a(i) > 0`` labelled joints, ``N_b(i)`` being
        the number of labelled joints of the other people inside box ``i``; 0.0 when ``n == 0``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return 0.0
    kp = np.asarray(keypoints, dtype=np.float64).reshape(len(boxes), -1, 3)
    labelled = kp[..., 2] > 0
    n_a = labelled.sum(1)
    ratios = []
    for i in range(len(boxes)):
        if n_a[i] == 0:
            continue
        x, y, w, h = boxes[i]
        inside = ((kp[..., 0] >= x) & (kp[..., 0] <= x + w) & (kp[..., 1] >= y) & (kp[..., 1] <= y + h)
                  & labelled)
        inside[i] = False
        ratios.append(inside.sum() / n_a[i])
    return float(np.mean(ratios)) if ratios else 0.0


def crowd_level(ci: float) -> str:
    """``easy`` for ``ci < 0.2``, ``medium`` for ``0.2 <= ci < 0.8``, ``hard`` for ``ci >= 0.8`` (CrowdPose)."""
    return "easy" if ci < 0.2 else "medium" if ci < 0.8 else "hard"


# --------------------------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------------------------

_SHIFT = 4
_ONE = 1 << _SHIFT
_D = math.pi / 180.0


def _rot(axis, angle: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (unit 3-vector) by ``angle`` radians (Rodrigues)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


_FWD_LEAN = (-1.0, 0.0, 0.0)  # rotating "up" (0,-1,0) toward "forward" (0,0,1)
_SIDE_BEND = (0.0, 0.0, 1.0)  # rotating "up" toward the person's left (+x)
_TWIST = (0.0, 1.0, 0.0)  # rotating "forward" toward the left; also the global yaw


def _dir(abd: float, flex: float, side: float) -> np.ndarray:
    """Limb direction from straight down: ``abd`` outward (toward ``side`` = +1 left, -1 right), ``flex`` forward."""
    return np.array([side * math.sin(abd) * math.cos(flex), math.cos(abd) * math.cos(flex), math.sin(flex)])


def _fix(p) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


# --------------------------------------------------------------------------------------------------------------
# Drawing primitives. A primitive is a tuple:
#   ("cap", p0, p1, r0, r1)   tapered capsule (2-D points, radii in px)
#   ("poly", pts)             filled convex polygon, pts (n, 2)
#   ("ell", c, (ax, ay), ang) filled ellipse, half axes in px, angle in degrees
# --------------------------------------------------------------------------------------------------------------


def _draw_prim(img: np.ndarray, prim, color, grow: float, aa: bool, off=(0.0, 0.0)) -> None:
    lt = cv2.LINE_AA if aa else cv2.LINE_8
    ox, oy = off
    kind = prim[0]
    if kind == "cap":
        _, p0, p1, r0, r1 = prim
        x0, y0 = float(p0[0]) - ox, float(p0[1]) - oy
        x1, y1 = float(p1[0]) - ox, float(p1[1]) - oy
        r0, r1 = r0 + grow, r1 + grow
        f = _ONE
        cv2.circle(img, (int(round(x0 * f)), int(round(y0 * f))), max(1, int(round(r0 * f))), color, -1, lt, _SHIFT)
        cv2.circle(img, (int(round(x1 * f)), int(round(y1 * f))), max(1, int(round(r1 * f))), color, -1, lt, _SHIFT)
        dx, dy = x1 - x0, y1 - y0
        ln = math.hypot(dx, dy)
        if ln > 1e-6:
            nx, ny = -dy / ln, dx / ln
            quad = np.array([[x0 + nx * r0, y0 + ny * r0], [x1 + nx * r1, y1 + ny * r1],
                             [x1 - nx * r1, y1 - ny * r1], [x0 - nx * r0, y0 - ny * r0]])
            cv2.fillConvexPoly(img, np.round(quad * f).astype(np.int32), color, lt, _SHIFT)
    elif kind == "poly":
        pts = np.asarray(prim[1], dtype=np.float64) - (ox, oy)
        ipts = np.round(pts * _ONE).astype(np.int32)
        cv2.fillConvexPoly(img, ipts, color, lt, _SHIFT)
        if grow > 0:
            cv2.polylines(img, [ipts], True, color, max(1, int(round(2 * grow))), lt, _SHIFT)
    elif kind == "ell":
        _, c, (ax, ay), ang = prim
        axes = (max(1, int(round((ax + grow) * _ONE))), max(1, int(round((ay + grow) * _ONE))))
        cv2.ellipse(img, _fix((c[0] - ox, c[1] - oy)), axes, float(ang), 0, 360, color, -1, lt, _SHIFT)
    else:  # pragma: no cover
        raise ValueError(kind)


def _prim_bounds(prim, grow: float) -> tuple[float, float, float, float]:
    kind = prim[0]
    if kind == "cap":
        _, p0, p1, r0, r1 = prim
        r = max(r0, r1) + grow
        xs, ys = (p0[0], p1[0]), (p0[1], p1[1])
        return min(xs) - r, min(ys) - r, max(xs) + r, max(ys) + r
    if kind == "poly":
        pts = np.asarray(prim[1])
        return (pts[:, 0].min() - grow, pts[:, 1].min() - grow, pts[:, 0].max() + grow, pts[:, 1].max() + grow)
    _, c, (ax, ay), _ = prim
    r = max(ax, ay) + grow
    return c[0] - r, c[1] - r, c[0] + r, c[1] + r


# --------------------------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------------------------

_SKIN = np.array([[60, 90, 140], [80, 120, 180], [100, 150, 210], [120, 170, 225], [140, 190, 235],
                  [45, 65, 100], [90, 135, 190]], dtype=np.float64)  # BGR
_HAIR = np.array([[20, 20, 25], [30, 40, 60], [40, 60, 100], [70, 110, 160], [160, 170, 180], [30, 30, 110]],
                 dtype=np.float64)


def _hsv_color(rng: np.random.Generator, s_range=(0.35, 0.95), v_range=(0.35, 0.95)) -> np.ndarray:
    h = rng.uniform(0, 180)
    s = rng.uniform(*s_range) * 255
    v = rng.uniform(*v_range) * 255
    px = np.uint8([[[h, s, v]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def _c(col) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(round(float(v))))) for v in col)


# --------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------

_ARM_MODES = ("hang", "swing", "raise", "reach", "akimbo", "bent")
_ARM_P = (0.30, 0.20, 0.15, 0.12, 0.10, 0.13)
_LEG_MODES = ("stand", "walk", "wide", "crouch", "run")
_LEG_P = (0.35, 0.28, 0.15, 0.10, 0.12)


def _arm_angles(rng, mode: str, swing_sign: float):
    """(abd, flex, forearm abd, forearm flex) in radians."""
    u = rng.uniform
    if mode == "hang":
        a, f, b, psi = u(4, 22), u(-15, 25), u(0, 35), u(-20, 60)
    elif mode == "swing":
        a, f, b, psi = u(4, 15), swing_sign * u(15, 40), u(10, 50), u(40, 90)
    elif mode == "raise":
        a, f, b, psi = u(60, 165), u(-10, 35), u(0, 70), u(-90, 60)
    elif mode == "reach":
        a, f, b, psi = u(-10, 35), u(55, 115), u(0, 45), u(0, 90)
    elif mode == "akimbo":
        a, f, b, psi = u(30, 60), u(-25, 5), u(90, 125), u(80, 100)
    else:  # bent: forearm across the body / phone
        a, f, b, psi = u(0, 20), u(0, 40), u(95, 145), u(20, 70)
    # forearm: bend b split into forward flexion (psi = 0) and inward (psi = 90) / outward (psi < 0) components
    fa = a - b * math.sin(psi * _D)
    ff = f + b * math.cos(psi * _D)
    return a * _D, f * _D, fa * _D, ff * _D


def _leg_angles(rng, mode: str, side_first: bool):
    """(abd, flex, shin abd, shin flex) in radians, for one leg; ``side_first`` distinguishes the two legs."""
    u = rng.uniform
    if mode == "stand":
        a, f, k = u(0, 9), u(-8, 10), u(0, 10)
    elif mode == "walk":
        f = u(12, 35) if side_first else -u(10, 30)
        a, k = u(0, 7), (u(0, 20) if side_first else u(15, 55))
    elif mode == "wide":
        a, f, k = u(10, 28), u(-5, 10), u(0, 25)
    elif mode == "crouch":
        a, f, k = u(5, 25), u(55, 100), u(60, 125)
    else:  # run
        if side_first:
            a, f, k = u(0, 10), u(35, 80), u(30, 100)
        else:
            a, f, k = u(0, 10), -u(5, 35), u(30, 90)
    return a * _D, f * _D, (a * 0.5 + u(-4, 4)) * _D, (f - k) * _D


@dataclass
class _Figure:
    """A posed figure in pixels: joints (19, 2), depth-sorted parts and decorations."""

    joints: np.ndarray  # (19, 2) px
    face_visible: np.ndarray  # (19,) bool: False for face points on the far side of the head
    parts: list  # [(z, prim, fill_bgr, [(deco prim, bgr)], [False = no outline])], far to near
    outline: float  # px
    outline_col: tuple
    bounds: tuple  # x0, y0, x1, y1 (px, incl. outline)
    height: float


def _make_figure(rng: np.random.Generator, height: float, *, yaw: float | None = None, roll: float | None = None,
                 detail: bool = True) -> _Figure:
    """Pose, project and dress one figure of ``height`` px with its bounding box centred at (0, 0)."""
    u = rng.uniform
    # --- proportions (units of body height) ---
    j = lambda v: v * u(0.93, 1.07)  # noqa: E731
    build = u(0.85, 1.2)
    torso, sho, hipw = j(0.30), j(0.105) * build, j(0.072) * build
    uarm, farm, thigh, shin = j(0.165), j(0.145), j(0.245), j(0.245)
    neck_len, head_r = j(0.095), j(0.062)
    # --- pose ---
    arm_mode = _ARM_MODES[rng.choice(len(_ARM_MODES), p=_ARM_P)]
    leg_mode = _LEG_MODES[rng.choice(len(_LEG_MODES), p=_LEG_P)]
    arm_mode2 = arm_mode if u() < 0.6 else _ARM_MODES[rng.choice(len(_ARM_MODES), p=_ARM_P)]
    if leg_mode == "walk" or leg_mode == "run":
        arm_mode, arm_mode2 = "swing", "swing"
    lean = u(-6, 12) if leg_mode != "crouch" else u(10, 35)
    Rt = (_rot(_TWIST, u(-15, 15) * _D) @ _rot(_FWD_LEAN, lean * _D) @ _rot(_SIDE_BEND, u(-7, 7) * _D))
    Rh = Rt @ _rot(_TWIST, u(-35, 35) * _D) @ _rot(_FWD_LEAN, u(-15, 20) * _D) @ _rot(_SIDE_BEND, u(-15, 15) * _D)
    left_first = u() < 0.5

    P = np.zeros((NUM_JOINTS, 3))
    pelvis = np.zeros(3)
    neck = Rt @ np.array([0.0, -torso, 0.0])
    P[_J["neck"]] = neck + Rt @ np.array([0, 0.012, 0])
    for side, sname in ((1.0, "left"), (-1.0, "right")):
        s_pt = neck + Rt @ np.array([side * sho, 0.03, 0.0])
        first = (side > 0) == left_first
        mode = arm_mode if side > 0 else arm_mode2
        a, f, fa, ff = _arm_angles(rng, mode, 1.0 if first else -1.0)
        e_pt = s_pt + Rt @ _dir(a, f, side) * uarm
        w_pt = e_pt + Rt @ _dir(fa, ff, side) * farm
        P[_J[f"{sname}_shoulder"]], P[_J[f"{sname}_elbow"]], P[_J[f"{sname}_wrist"]] = s_pt, e_pt, w_pt
        la, lf, sa, sf = _leg_angles(rng, leg_mode, not first)
        h_pt = pelvis + np.array([side * hipw, 0.0, 0.0])
        k_pt = h_pt + _dir(la, lf, side) * thigh
        a_pt = k_pt + _dir(sa, sf, side) * shin
        P[_J[f"{sname}_hip"]], P[_J[f"{sname}_knee"]], P[_J[f"{sname}_ankle"]] = h_pt, k_pt, a_pt
    head_c = neck + Rt @ np.array([0.0, -neck_len, 0.012])
    P[_J["head"]] = head_c + Rh @ np.array([0.0, -0.93 * head_r * 1.12, 0.0])
    P[_J["nose"]] = head_c + Rh @ np.array([0.0, 0.18, 1.02]) * head_r
    eye = (math.sin(33 * _D), -0.12, math.cos(33 * _D))
    P[_J["left_eye"]] = head_c + Rh @ np.array([eye[0], eye[1], eye[2]]) * 0.92 * head_r
    P[_J["right_eye"]] = head_c + Rh @ np.array([-eye[0], eye[1], eye[2]]) * 0.92 * head_r
    P[_J["left_ear"]] = head_c + Rh @ np.array([0.98, 0.06, -0.12]) * head_r
    P[_J["right_ear"]] = head_c + Rh @ np.array([-0.98, 0.06, -0.12]) * head_r

    # --- view: global yaw (front / back / profile) and in-plane roll ---
    if yaw is None:
        r = u()
        yaw = (u(-40, 40) if r < 0.5 else u(140, 220) if r < 0.75 else
               (u(40, 140) if u() < 0.5 else u(-140, -40)))
    if roll is None:
        roll = rng.normal(0, 4) if u() < 0.85 else u(-45, 45)
    Ry = _rot(_TWIST, yaw * _D)
    cam = (Ry @ P.T).T  # camera frame: x right, y down, z toward the camera
    cr, sr = math.cos(roll * _D), math.sin(roll * _D)
    R2 = np.array([[cr, -sr], [sr, cr]]) * height

    M = (R2 @ Ry[:2]).T  # (3, 2): body frame -> image plane
    zrow = Ry[2]

    def to2d(p3):
        return np.atleast_2d(p3) @ M

    def camz(v3):  # depth of a body-frame vector toward the camera
        return float(zrow @ v3)

    J2 = cam[:, :2] @ R2.T
    facing_h = lambda v: camz(Rh @ np.asarray(v, dtype=np.float64))  # noqa: E731
    face_vis = np.ones(NUM_JOINTS, bool)
    face_vis[_J["nose"]] = facing_h((0, 0, 1)) > -0.3
    face_vis[_J["left_eye"]] = facing_h((math.sin(33 * _D), 0, math.cos(33 * _D))) > 0.1
    face_vis[_J["right_eye"]] = facing_h((-math.sin(33 * _D), 0, math.cos(33 * _D))) > 0.1
    face_vis[_J["left_ear"]] = facing_h((1, 0, 0)) > -0.3
    face_vis[_J["right_ear"]] = facing_h((-1, 0, 0)) > -0.3

    # --- clothes ---
    skin = _SKIN[rng.integers(len(_SKIN))] * u(0.9, 1.1)
    hair = _HAIR[rng.integers(len(_HAIR))] * u(0.85, 1.15)
    shirt = _hsv_color(rng)
    pants = _hsv_color(rng, (0.2, 0.8), (0.2, 0.75))
    shoes = _hsv_color(rng, (0.0, 0.6), (0.1, 0.5))
    long_sleeves = u() < 0.5
    shorts = u() < 0.25
    accent = np.full(3, 235.0) if shirt.mean() < 140 else np.full(3, 25.0)
    accent_p = np.full(3, 235.0) if pants.mean() < 140 else np.full(3, 25.0)
    front = camz(Rt @ np.array([0, 0, 1.0]))  # > 0: the chest faces the camera
    shade = 0.72 + 0.28 * max(0.0, front)
    outline = float(np.clip(0.011 * height, 1.0, 3.0))

    parts = []
    H = height

    def limb(a_name, b_name, r0, r1, col, z_bias=0.0, stripes=None):
        a3, b3 = P[_J[a_name]], P[_J[b_name]]
        p0, p1 = to2d(a3)[0], to2d(b3)[0]
        z = camz((a3 + b3) / 2) + z_bias
        deco = []
        if stripes is not None and detail:
            for t in (0.35, 0.62):
                c = p0 + (p1 - p0) * t
                d = p1 - p0
                ln = float(np.hypot(*d))
                if ln < 1e-6:
                    continue
                dd = d / ln * max(0.6, 0.045 * ln)
                rr = (r0 + (r1 - r0) * t) * H
                n = np.array([-d[1], d[0]]) / ln * rr * 0.98
                deco.append((("poly", np.array([c - dd + n, c + dd + n, c + dd - n, c - dd - n])), stripes))
        parts.append((z, ("cap", p0, p1, r0 * H, r1 * H), col, deco))

    for side, sname in ((1.0, "left"), (-1.0, "right")):
        is_left = side > 0
        st_shirt = accent if is_left else None
        st_pants = accent_p if is_left else None
        w3 = P[_J[f"{sname}_wrist"]]
        e3 = P[_J[f"{sname}_elbow"]]
        hand3 = w3 + (w3 - e3) / max(np.linalg.norm(w3 - e3), 1e-6) * 0.035
        limb(f"{sname}_shoulder", f"{sname}_elbow", 0.034 * build, 0.028 * build, shirt, 0.0, st_shirt)
        limb(f"{sname}_elbow", f"{sname}_wrist", 0.027 * build, 0.021 * build,
             shirt if long_sleeves else skin, 0.001, st_shirt if long_sleeves else None)
        hz = camz(hand3)
        parts.append((hz + 0.002, ("ell", to2d(hand3)[0], (0.027 * H, 0.027 * H), 0.0), skin, []))
        limb(f"{sname}_hip", f"{sname}_knee", 0.052 * build, 0.040 * build, pants, -0.03, st_pants)
        limb(f"{sname}_knee", f"{sname}_ankle", 0.038 * build, 0.028 * build, skin if shorts else pants, -0.029,
             None if shorts else st_pants)
        # foot: perpendicular to the shin, toward the front
        a3, k3 = P[_J[f"{sname}_ankle"]], P[_J[f"{sname}_knee"]]
        d = (a3 - k3) / max(np.linalg.norm(a3 - k3), 1e-6)
        fw = np.array([0, 0, 1.0]) - d[2] * d
        fw = fw / max(np.linalg.norm(fw), 1e-6) if np.linalg.norm(fw) > 0.2 else np.array([0, 0, 1.0])
        toe3 = a3 + fw * 0.075 + d * 0.02
        parts.append((camz((a3 + toe3) / 2) - 0.028, ("cap", to2d(a3 + d * 0.01)[0], to2d(toe3)[0],
                                                     0.03 * H, 0.024 * H), shoes, []))

    # torso hull
    ls, rs = P[_J["left_shoulder"]], P[_J["right_shoulder"]]
    pts3 = []
    for sx in (1, -1):
        for sz in (1, -1):
            pts3.append(neck + Rt @ np.array([sx * (sho + 0.012 * build), 0.035, sz * 0.05]))
            pts3.append(neck + Rt @ np.array([sx * sho * 0.55, -0.008, sz * 0.045]))
            pts3.append(pelvis + np.array([sx * (hipw + 0.04 * build), 0.035, sz * 0.05]))
    pts2 = to2d(np.array(pts3))
    hull = cv2.convexHull(pts2.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    tz = camz((neck + pelvis) / 2)
    deco = []
    if detail:
        low3 = []
        for sx in (1, -1):
            for sz in (1, -1):
                low3.append(pelvis + np.array([sx * (hipw + 0.04 * build), 0.035, sz * 0.05]))
                low3.append(pelvis + (neck - pelvis) * 0.2 + Rt @ np.array([sx * (hipw + 0.045 * build), 0,
                                                                            sz * 0.05]))
        low = cv2.convexHull(to2d(np.array(low3)).astype(np.float32)).reshape(-1, 2).astype(np.float64)
        deco.append((("poly", low), pants))
        if front > 0.15:  # collar and buttons on the chest
            v3 = [neck + Rt @ np.array([0.035, -0.004, 0.05]), neck + Rt @ np.array([-0.035, -0.004, 0.05]),
                  neck + Rt @ np.array([0.0, 0.07, 0.053])]
            deco.append((("poly", to2d(np.array(v3))), skin))
            if H > 70:
                for t in (0.12, 0.18, 0.24):
                    b = to2d(neck + Rt @ np.array([0.0, t, 0.054]))[0]
                    deco.append((("ell", b, (0.008 * H, 0.008 * H), 0.0), accent))
    parts.append((tz, ("poly", hull), shirt * shade, deco))

    # neck and head
    nk0, nk1 = to2d(neck)[0], to2d(head_c)[0]
    parts.append((tz + 0.0005, ("cap", nk0, nk1, 0.028 * H, 0.026 * H), skin * 0.9, []))
    hc2 = nk1
    up2 = to2d(head_c + Rh @ np.array([0, -1.0, 0]) * head_r)[0] - hc2
    ang = math.degrees(math.atan2(up2[0], -up2[1]))
    head_axes = (0.86 * head_r * H, 1.1 * head_r * H)
    hz = max(tz + 0.001, camz(head_c))
    hdeco = []
    fz = facing_h((0, 0, 1))
    if detail:
        fwd2 = to2d(head_c + Rh @ np.array([0, 0, 1.0]) * head_r)[0] - hc2  # facing direction, projected
        if fz > -0.25:
            # face region: skin ellipse shifted toward the facing direction, hair on top
            hdeco.append((("ell", hc2, head_axes, ang), hair))
            fc = hc2 + fwd2 * 0.28 - up2 * 0.12
            fa = (head_axes[0] * (0.55 + 0.25 * max(fz, 0)), head_axes[1] * 0.72)
            hdeco.append((("ell", fc, fa, ang), skin))
            er = max(0.6, 0.16 * head_r * H)
            for nm in ("left_eye", "right_eye"):
                if face_vis[_J[nm]]:
                    hdeco.append((("ell", J2[_J[nm]], (er, er), 0.0), (30, 25, 25)))
            if face_vis[_J["nose"]] and H > 60:  # a part (no outline): it may stick out of the head
                nb = to2d(head_c + Rh @ np.array([0.0, 0.05, 0.8]) * head_r)[0]
                parts.append((hz + 1e-4, ("cap", nb, J2[_J["nose"]], 0.10 * head_r * H, 0.14 * head_r * H),
                              skin * 0.75, [], False))
            if fz > 0.1 and H > 80:
                m0 = to2d(head_c + Rh @ np.array([-0.3, 0.55, 0.83]) * head_r)[0]
                m1 = to2d(head_c + Rh @ np.array([0.3, 0.55, 0.83]) * head_r)[0]
                hdeco.append((("cap", m0, m1, 0.05 * head_r * H, 0.05 * head_r * H), (40, 40, 150)))
        else:  # seen from behind: hair only
            hdeco.append((("ell", hc2 - up2 * 0.05, (head_axes[0] * 0.97, head_axes[1] * 0.95), ang), hair))
        for nm in ("left_ear", "right_ear"):  # parts behind the head: they stick out of it
            if face_vis[_J[nm]] and abs(fz) < 0.97 and H > 60:
                parts.append((hz - 1e-4, ("ell", J2[_J[nm]], (0.22 * head_r * H, 0.3 * head_r * H), ang),
                              skin * 0.85, []))
    parts.append((hz, ("ell", hc2, head_axes, ang), skin, hdeco))

    parts.sort(key=lambda t: t[0])
    # centre the figure on its bounding box
    b = np.array([_prim_bounds(p[1], outline) for p in parts])
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    fig = _Figure(J2, face_vis, parts, outline, (20, 20, 20), (x0, y0, x1, y1), height)
    return _translate(fig, -c)


def _translate_prim(prim, t):
    kind = prim[0]
    if kind == "cap":
        return ("cap", prim[1] + t, prim[2] + t, prim[3], prim[4])
    if kind == "poly":
        return ("poly", np.asarray(prim[1]) + t)
    return ("ell", np.asarray(prim[1]) + t, prim[2], prim[3])


def _translate(fig: _Figure, t) -> _Figure:
    t = np.asarray(t, dtype=np.float64)
    parts = [(z, _translate_prim(p, t), col, [(_translate_prim(dp, t), dc) for dp, dc in deco]) + tuple(rest)
             for z, p, col, deco, *rest in fig.parts]
    x0, y0, x1, y1 = fig.bounds
    return _Figure(fig.joints + t, fig.face_visible, parts, fig.outline, fig.outline_col,
                   (x0 + t[0], y0 + t[1], x1 + t[0], y1 + t[1]), fig.height)


def _figure_mask(fig: _Figure, h: int, w: int):
    """Body mask of ``fig`` clipped to the image: ``(x0, y0, crop bool array)`` or None if nothing is inside."""
    bx0, by0, bx1, by1 = fig.bounds
    x0, y0 = max(0, int(math.floor(bx0)) - 1), max(0, int(math.floor(by0)) - 1)
    x1, y1 = min(w, int(math.ceil(bx1)) + 2), min(h, int(math.ceil(by1)) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for part in fig.parts:
        _draw_prim(crop, part[1], 1, fig.outline, False, (x0, y0))
    if not crop.any():
        return None
    return x0, y0, crop.astype(bool)


def _draw_figure(img: np.ndarray, fig: _Figure) -> None:
    for part in fig.parts:
        _, prim, col, deco = part[:4]
        if len(part) == 4:  # outlined (the default)
            _draw_prim(img, prim, _c(np.asarray(col, dtype=np.float64) * 0.35), fig.outline, True)
        _draw_prim(img, prim, _c(col), 0.0, True)
        for dprim, dcol in deco:
            _draw_prim(img, dprim, _c(dcol), 0.0, True)


# --------------------------------------------------------------------------------------------------------------
# Backgrounds and distractors
# --------------------------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, h: int, w: int, kinds: int = 5) -> np.ndarray:
    u = rng.uniform
    kind = rng.integers(kinds)
    if kind == 0:  # smooth noise
        g = rng.integers(2, 9)
        small = rng.uniform(0, 255, (g, g, 3)).astype(np.float32)
        img = cv2.resize(cv2.resize(small, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC), (w, h),
                         interpolation=cv2.INTER_LINEAR)
    elif kind == 1:  # gradient
        c0, c1 = _hsv_color(rng, (0, 0.8), (0.2, 1)), _hsv_color(rng, (0, 0.8), (0.2, 1))
        a = u(0, 2 * math.pi)
        yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None]
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = c0[None, None].astype(np.float32) * (1 - t[..., None]) + c1[None, None].astype(np.float32) * t[..., None]
    elif kind == 2:  # stripes
        c0, c1 = _hsv_color(rng, (0, 0.8), (0.2, 1)), _hsv_color(rng, (0, 0.8), (0.2, 1))
        a = u(0, math.pi)
        period = u(8, 60)
        yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None]
        t = 0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period))
        if u() < 0.5:
            t = (t > 0.5).astype(np.float32)
        img = c0[None, None].astype(np.float32) * (1 - t[..., None]) + c1[None, None].astype(np.float32) * t[..., None]
    elif kind == 3:  # blobs
        img = np.empty((h, w, 3), np.float32)
        img[:] = _hsv_color(rng, (0, 0.7), (0.2, 1))
        for _ in range(rng.integers(8, 30)):
            c = (int(u(0, w)), int(u(0, h)))
            ax = (int(u(5, w / 4)), int(u(5, h / 4)))
            cv2.ellipse(img, c, ax, u(0, 180), 0, 360, _c(_hsv_color(rng, (0, 0.8), (0.15, 1))), -1)
        k = int(rng.integers(1, 4)) * 2 + 1
        img = cv2.GaussianBlur(img, (k * 3, k * 3), 0)
    else:  # tiles / floor and wall
        c0, c1 = _hsv_color(rng, (0, 0.6), (0.2, 1)), _hsv_color(rng, (0, 0.6), (0.2, 1))
        s = u(16, 64)
        yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None]
        t = ((np.floor(xx / s) + np.floor(yy / s)) % 2)[..., None]
        img = c0[None, None].astype(np.float32) * (1 - t) + c1[None, None].astype(np.float32) * t
        horizon = int(u(0.2, 0.6) * h)
        img[:horizon] = _hsv_color(rng, (0, 0.6), (0.3, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    u = rng.uniform
    for _ in range(rng.integers(3, 14)):
        col = _c(_hsv_color(rng, (0, 1), (0.1, 1)))
        kind = rng.integers(5)
        cx, cy = u(0, w), u(0, h)
        s = u(10, 0.3 * min(h, w))
        if kind == 0:  # polygon
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = rng.uniform(0.4, 1.0, n) * s
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
            cv2.fillPoly(img, [np.round(pts * _ONE).astype(np.int32)], col, cv2.LINE_AA, _SHIFT)
        elif kind == 1:  # ellipse
            cv2.ellipse(img, (int(cx), int(cy)), (int(s), int(s * u(0.2, 1))), u(0, 180), 0, 360, col, -1,
                        cv2.LINE_AA)
        elif kind == 2:  # rectangle
            pts = cv2.boxPoints(((cx, cy), (s, s * u(0.1, 1)), u(0, 180)))
            cv2.fillPoly(img, [np.round(pts * _ONE).astype(np.int32)], col, cv2.LINE_AA, _SHIFT)
        else:  # sticks and jointed chains (limb-like hard negatives)
            n = 1 if kind == 3 else int(rng.integers(2, 4))
            p = np.array([cx, cy])
            r = u(2, 0.05 * min(h, w) + 3)
            ang = u(0, 2 * math.pi)
            for _ in range(n):
                ang += u(-1.5, 1.5)
                q = p + s * u(0.4, 1.0) * np.array([math.cos(ang), math.sin(ang)])
                _draw_prim(img, ("cap", p, q, r, r * u(0.6, 1.0)), _c(np.asarray(col) * 0.35), 1.0, True)
                _draw_prim(img, ("cap", p, q, r, r * u(0.6, 1.0)), col, 0.0, True)
                p = q


# --------------------------------------------------------------------------------------------------------------
# Scene layout
# --------------------------------------------------------------------------------------------------------------

#: per level: people (min, max), person height as a fraction of the image height (min, max), initial gap between
#: neighbours in units of a shoulder width, number of rows (min, max)
_LEVEL_PARAMS = {
    "easy": dict(n=(1, 4), h=(0.42, 0.85), gap=(1.6, 2.6), rows=(1, 1)),
    "medium": dict(n=(3, 7), h=(0.3, 0.65), gap=(0.7, 1.3), rows=(1, 2)),
    "hard": dict(n=(6, 12), h=(0.24, 0.5), gap=(0.6, 1.1), rows=(2, 3)),
}


#: accepted crowd index range per target level (hard is capped so that scenes stay readable)
_LEVEL_RANGE = {"easy": (0.0, 0.2), "medium": (0.2, 0.8), "hard": (0.8, 1.6)}


@dataclass(frozen=True)
class Preset:
    """How hard the generated scenes are.

    Attributes:
        size: (min, max) image height and width in px.
        levels: per crowd level the layout parameters of :data:`_LEVEL_PARAMS`.
        backgrounds: how many of the background kinds (smooth noise, gradient, stripes, blobs, tiles) are used.
        distractors: whether shapes and stick chains are drawn behind the people.
        crowd_region_p: probability of a clump of tiny figures annotated as one ``iscrowd`` region.
        tiny_person_p: probability of a tiny person annotated with ``num_keypoints: 0``.
        outside_p: probability that a person is shifted partly out of the image.
        foot_y: (min, max) height of the front row's feet as a fraction of the image height.
    """

    size: tuple[int, int]
    levels: dict
    backgrounds: int = 5
    distractors: bool = True
    crowd_region_p: float = 0.05
    tiny_person_p: float = 0.10
    outside_p: float = 0.12
    foot_y: tuple[float, float] = (0.62, 1.08)


#: ``crowds``: the default dataset, cluttered scenes of 1-12 people. ``simple``: small images (160-224 px) with 1-4
#: large people on plain backgrounds, still in the three crowd levels; a model learns it in minutes on a CPU (the
#: README quick start).
PRESETS = {
    "crowds": Preset((320, 512), _LEVEL_PARAMS),
    "simple": Preset((160, 224), {
        "easy": dict(n=(1, 2), h=(0.6, 0.9), gap=(1.8, 2.6), rows=(1, 1)),
        "medium": dict(n=(2, 3), h=(0.55, 0.85), gap=(0.8, 1.3), rows=(1, 1)),
        "hard": dict(n=(3, 4), h=(0.5, 0.8), gap=(0.6, 1.0), rows=(1, 1)),
    }, backgrounds=2, distractors=False, crowd_region_p=0.0, tiny_person_p=0.0, outside_p=0.05,
        foot_y=(0.9, 1.0)),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def _layout(rng: np.random.Generator, level: str, h: int, w: int, preset: Preset) -> list[dict]:
    """People for ``level`` in rows (back to front), posed and centred; :func:`_place` positions them."""
    u = rng.uniform
    prm = preset.levels[level]
    n = int(rng.integers(prm["n"][0], prm["n"][1] + 1))
    rows = int(rng.integers(prm["rows"][0], prm["rows"][1] + 1))
    rows = min(rows, n)
    base_h = u(*prm["h"]) * h
    gap = u(*prm["gap"])
    per_row = np.full(rows, n // rows)
    per_row[: n % rows] += 1
    group_x = u(0.3, 0.7) * w
    plan = []
    # back rows are higher up and smaller; the front row may be cut off by the bottom edge
    for r in range(rows):
        depth = (rows - 1 - r)  # 0 = front row
        ph = float(np.clip(base_h * 0.82 ** depth * u(0.9, 1.1), 50, 300))
        m = int(per_row[r])
        row = {"m": m, "spacing": 0.22 * ph * gap, "cx": group_x + rng.normal(0, 0.08 * w),
               "foot_y": h * u(*preset.foot_y) - depth * ph * u(0.18, 0.35), "people": []}
        for k in rng.permutation(m):
            hh = float(np.clip(ph * u(0.85, 1.15), 50, 300))
            fig = _make_figure(rng, hh)
            single_x = u(0.2 * w, 0.8 * w) if level == "easy" and m == 1 else None
            out = ((1 if u() < 0.5 else -1) * u(0.1, 0.35) * w  # partly outside the image
                   if u() < preset.outside_p else 0.0)
            row["people"].append((int(k), fig, rng.normal(0, 0.15), rng.normal(0, 0.04 * hh), single_x, out))
        plan.append(row)
    return plan


def _place(plan: list[dict], w: int, tight: float) -> list[_Figure]:
    """Figures of ``plan`` placed with the gaps between neighbours scaled by ``tight``, far to near."""
    figs = []
    for row in plan:
        m = row["m"]
        spacing = max(row["spacing"] * tight, 6.0)
        slack = max(0.0, 0.5 * w - 0.5 * spacing * (m - 1)) * 0.8
        cx = float(np.clip(row["cx"], 0.5 * w - slack, 0.5 * w + slack))
        for k, fig, jx, jy, single_x, out in row["people"]:
            x = cx + (k - (m - 1) / 2 + jx) * spacing if single_x is None else single_x
            y = row["foot_y"] + jy - (fig.bounds[3] - fig.bounds[1]) / 2
            figs.append(_translate(fig, (x + out, y)))
    return figs


def _annotate_people(figs: list[_Figure], annotated: list[bool], h: int, w: int, min_visible: float = 0.25):
    """Masks, drop hidden people, visibility. Returns (kept figs, annotated, masks (x0, y0, crop), joints, occluder)."""
    masks = [_figure_mask(f, h, w) for f in figs]
    keep = [m is not None for m in masks]
    union = np.zeros((h, w), bool)
    for i in range(len(figs) - 1, -1, -1):  # near to far
        if not keep[i]:
            continue
        x0, y0, crop = masks[i]
        region = union[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        total = crop.sum()
        vis = np.count_nonzero(crop & ~region)
        if vis < min_visible * total or vis < 12:
            keep[i] = False
            continue
        region |= crop
    idx = [i for i in range(len(figs)) if keep[i]]
    figs = [figs[i] for i in idx]
    annotated = [annotated[i] for i in idx]
    masks = [masks[i] for i in idx]
    label = np.full((h, w), -1, np.int32)
    for i, (x0, y0, crop) in enumerate(masks):
        label[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]][crop] = i
    n = len(figs)
    joints = np.zeros((n, NUM_JOINTS, 3))
    occluder = np.full((n, NUM_JOINTS), -1, np.int64)
    for i, f in enumerate(figs):
        if not annotated[i]:
            continue
        xy = f.joints
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1) & f.face_visible
        for k in np.flatnonzero(inside):
            px, py = int(round(xy[k, 0])), int(round(xy[k, 1]))
            top = label[py, px]
            joints[i, k, :2] = xy[k]
            if top > i:
                joints[i, k, 2] = 1
                occluder[i, k] = top
            else:
                joints[i, k, 2] = 2
    return figs, annotated, masks, joints, occluder


def _boxes(masks) -> np.ndarray:
    out = np.zeros((len(masks), 4))
    for i, (x0, y0, crop) in enumerate(masks):
        ys = np.flatnonzero(crop.any(1))
        xs = np.flatnonzero(crop.any(0))
        out[i] = (x0 + xs[0], y0 + ys[0], xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1)
    return out


def _round_joints(joints: np.ndarray) -> np.ndarray:
    out = joints.copy()
    out[..., :2] = np.round(out[..., :2], 2)
    return out


def _scene_crowd_index(joints: np.ndarray, masks) -> float:
    if len(masks) == 0:
        return 0.0
    return crowd_index(_round_joints(joints)[:, CROWDPOSE_JOINTS], _boxes(masks))


def _full_mask(m, h, w) -> np.ndarray:
    out = np.zeros((h, w), bool)
    x0, y0, crop = m
    out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return out


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]))


def generate_image(index: int, split: str = "train", seed: int = 0, preset: str = "crowds") -> SyntheticImage:
    """Render scene ``index`` of ``split`` for ``seed`` (deterministic; this is exactly what the dataset files hold).

    Args:
        index: 0-based image index within the split (the file is ``images/<split>/{index + 1:06d}.jpg``).
        split: ``train`` or ``val`` (different scenes for the same index).
        seed: dataset seed.
        preset: a name in :data:`PRESETS`.
    Returns:
        A :class:`SyntheticImage`: the BGR image (``(H, W, 3)``, H and W in the preset's size range), people far to
        near with joints ``(N, 19, 3)`` in the internal layout, their full-body masks and the crowd regions.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pre = get_preset(preset)
    rng = _rng(seed, split, index)
    u = rng.uniform
    h, w = int(rng.integers(pre.size[0], pre.size[1] + 1)), int(rng.integers(pre.size[0], pre.size[1] + 1))
    level = LEVELS[int(rng.integers(3))]
    lo, hi = _LEVEL_RANGE[level]

    # optional background extras, drawn before (= behind) the people
    extras: list[_Figure] = []
    extra_annotated: list[bool] = []
    crowd_figs: list[_Figure] = []
    if u() < pre.crowd_region_p:  # a clump of tiny figures -> one iscrowd region
        ccx, ccy = u(0.15 * w, 0.85 * w), u(0.15 * h, 0.6 * h)
        cw = u(50, 150)
        for _ in range(int(rng.integers(8, 22))):
            th = u(12, 26)
            f = _make_figure(rng, th, detail=False, roll=rng.normal(0, 3))
            crowd_figs.append(_translate(f, (ccx + u(-cw / 2, cw / 2), ccy + u(-0.25, 0.25) * cw * 0.5)))
        crowd_figs.sort(key=lambda f: f.bounds[3])
    if u() < pre.tiny_person_p:  # a tiny person annotated with num_keypoints 0
        th = u(16, 30)
        f = _make_figure(rng, th, detail=False)
        extras.append(_translate(f, (u(0.05 * w, 0.95 * w), u(0.1 * h, 0.7 * h))))
        extra_annotated.append(False)

    best = None
    tight = 1.0
    for attempt in range(8):
        if attempt % 4 == 0:
            plan = _layout(rng, level, h, w, pre)
        figs = _place(plan, w, tight)
        ann = extra_annotated + [True] * len(figs)
        res = _annotate_people(extras + figs, ann, h, w)
        ci = round(_scene_crowd_index(res[3], res[2]), 2)
        dist = 0.0 if lo <= ci < hi else (lo - ci if ci < lo else ci - hi + 1e-9)
        if best is None or dist < best[0]:
            best = (dist, res, ci)
        if dist == 0.0:
            break
        tight = float(np.clip(tight * (0.7 if ci < lo else 1.45), 0.35, 3.0))
    _, (figs, annotated, masks, joints, occluder), ci = best

    # draw: background, distractors, crowd clump, people far to near, then photometric noise
    img = _background(rng, h, w, pre.backgrounds)
    if pre.distractors:
        _distractors(rng, img)
    crowd_masks = []
    if crowd_figs:
        cm = np.zeros((h, w), np.uint8)
        for f in crowd_figs:
            _draw_figure(img, f)
            m = _figure_mask(f, h, w)
            if m is not None:
                x0, y0, crop = m
                cm[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] |= crop.astype(np.uint8)
        if cm.sum() > 30:
            crowd_masks.append(cm.astype(bool))
    for f in figs:
        _draw_figure(img, f)
    if u() < 0.35:
        s = u(0.4, 1.0)
        img = cv2.GaussianBlur(img, (0, 0), s)
    gain, bias = u(0.8, 1.15), u(-20, 20)
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(u(2, 8))
    img = np.clip(img.astype(np.float32) * np.float32(gain) + (np.float32(bias) + noise), 0, 255).astype(np.uint8)

    full = (np.stack([_full_mask(m, h, w) for m in masks]) if masks else np.zeros((0, h, w), bool))
    cmasks = np.stack(crowd_masks) if crowd_masks else np.zeros((0, h, w), bool)
    return SyntheticImage(img, joints, occluder, full, np.asarray(annotated, bool), cmasks, level, ci)


# --------------------------------------------------------------------------------------------------------------
# Annotation files
# --------------------------------------------------------------------------------------------------------------


def _hull_polygon(mask: np.ndarray) -> list[float]:
    """Convex hull of a mask's pixel centres as a flat polygon ``[x1, y1, x2, y2, ...]`` (at least 3 points)."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    x0, y0 = int(xs[0]), int(ys[0])
    crop = np.ascontiguousarray(mask[y0:ys[-1] + 1, x0:xs[-1] + 1], dtype=np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]) + (x0, y0)
    hull = cv2.convexHull(pts.astype(np.int32)).reshape(-1, 2)
    if len(hull) < 3 or cv2.contourArea(hull) < 1:  # a line of pixels: their box, given a positive area
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0) + 1
        hull = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return [float(v) for v in hull.reshape(-1)]


def _mask_box(mask: np.ndarray) -> list[float]:
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


def image_id_of(split: str, index: int) -> int:
    """Image id of image ``index`` (0-based) of ``split``: ``index + 1`` (train), ``1_000_000 + index + 1`` (val)."""
    return _IMAGE_ID_BASE[split] + index + 1


def file_name_of(index: int) -> str:
    """File name (relative to ``images/<split>/``) of image ``index``: ``{index + 1:06d}.jpg``."""
    return f"{index + 1:06d}.jpg"


def annotate(scene: SyntheticImage, image_id: int, file_name: str) -> dict:
    """COCO-17 and CrowdPose-14 records of one scene.

    Returns:
        ``{"coco": (image, annotations), "crowdpose": (image, annotations)}`` in the JSON structure of the files
        (keypoints rounded to 2 decimals, unlabelled joints ``0, 0, 0``).
    """
    h, w = scene.image.shape[:2]
    joints = _round_joints(scene.joints)
    img_coco = {"id": image_id, "file_name": file_name, "width": w, "height": h,
                "crowdIndex": round(float(scene.crowd_index), 2)}
    img_cp = dict(img_coco)
    coco, cp = [], []

    def kp_list(kp):
        out = []
        for x, y, v in kp:
            out += [0.0, 0.0, 0] if v == 0 else [float(x), float(y), int(v)]
        return out

    for i in range(scene.num_people):
        m = scene.masks[i]
        box = _mask_box(m)
        ann_id = image_id * 100 + i + 1
        kc = joints[i, COCO_JOINTS]
        kp = joints[i, CROWDPOSE_JOINTS]
        coco.append({"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kp_list(kc),
                     "num_keypoints": int((kc[:, 2] > 0).sum()), "bbox": box, "iscrowd": 0,
                     "area": float(m.sum()), "segmentation": [_hull_polygon(m)]})
        cp.append({"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kp_list(kp),
                   "num_keypoints": int((kp[:12, 2] > 0).sum()), "bbox": box, "iscrowd": 0})
    for j, m in enumerate(scene.crowd_masks):
        ann_id = image_id * 100 + 90 + j
        box, seg = _mask_box(m), [_hull_polygon(m)]
        coco.append({"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": [0.0, 0.0, 0] * 17,
                     "num_keypoints": 0, "bbox": box, "iscrowd": 1, "area": float(m.sum()), "segmentation": seg})
        cp.append({"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": [0.0, 0.0, 0] * 14,
                   "num_keypoints": 0, "bbox": box, "iscrowd": 1, "segmentation": seg})
    return {"coco": (img_coco, coco), "crowdpose": (img_cp, cp)}


def categories(spec: KeypointSpec) -> list[dict]:
    """The one person category of a file in layout ``spec`` (1-based skeleton, as COCO files have it)."""
    return [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(spec.names),
             "skeleton": [[a + 1, b + 1] for a, b in spec.skeleton]}]


# --------------------------------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------------------------------


def _work(args) -> dict:
    split, index, seed, out_dir, preset = args
    scene = generate_image(index, split, seed, preset)
    name = file_name_of(index)
    ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise DataError(f"could not encode synthetic image {split}/{name}")
    buf.tofile(os.path.join(out_dir, name))
    rec = annotate(scene, image_id_of(split, index), name)
    rec["level"] = scene.level
    return rec


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


def generate_split(root: str | os.PathLike, split: str, num_images: int, seed: int = 0, workers: int = 2,
                   progress: Callable[[int, int], None] | None = None, preset: str = "crowds") -> dict:
    """Write ``images/<split>/*.jpg`` and the two annotation files of one split; return statistics.

    Args:
        root: dataset folder.
        split: ``train`` or ``val``.
        num_images: number of images.
        seed: dataset seed.
        workers: processes (1 = in this process); the output does not depend on it.
        progress: called as ``progress(done, total)`` after each image.
        preset: a name in :data:`PRESETS`.
    Returns:
        ``{"images": n, "people": n, "crowd_regions": n, "unlabelled_people": n,
        "levels": {"easy": n, "medium": n, "hard": n}}`` (levels from the stored crowdIndex).
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    get_preset(preset)
    root = Path(root)
    img_dir = root / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    for p in img_dir.iterdir():  # stale images of an earlier run
        if re.fullmatch(r"\d{6}\.jpg", p.name):
            p.unlink()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    jobs = [(split, i, seed, str(img_dir), preset) for i in range(num_images)]
    recs = []
    if workers <= 1 or num_images < 4:
        for k, job in enumerate(jobs):
            recs.append(_work(job))
            if progress:
                progress(k + 1, num_images)
    else:
        ctx = mp.get_context("spawn")  # fork is unsafe with OpenCV's / torch's thread pools
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            for k, rec in enumerate(pool.imap(_work, jobs, chunksize=max(1, min(16, num_images // (4 * workers))))):
                recs.append(rec)
                if progress:
                    progress(k + 1, num_images)
    stats = {"images": num_images, "people": 0, "crowd_regions": 0, "unlabelled_people": 0,
             "levels": {lv: 0 for lv in LEVELS}}
    for layout, spec in (("coco", COCO17), ("crowdpose", CROWDPOSE14)):
        images, anns = [], []
        for rec in recs:
            im, a = rec[layout]
            images.append(im)
            anns.extend(a)
        _write_json(root / "annotations" / f"{layout}_{split}.json",
                    {"images": images, "annotations": anns, "categories": categories(spec)})
    for rec in recs:
        im, anns = rec["coco"]
        stats["levels"][crowd_level(im["crowdIndex"])] += 1
        for a in anns:
            if a["iscrowd"]:
                stats["crowd_regions"] += 1
            else:
                stats["people"] += 1
                stats["unlabelled_people"] += a["num_keypoints"] == 0
    return stats


def _params(num_train: int, num_val: int, seed: int, preset: str) -> dict:
    return {"num_train": int(num_train), "num_val": int(num_val), "seed": int(seed), "preset": preset}


def generate_dataset(root: str | os.PathLike = DEFAULT_ROOT, num_train: int = 1600, num_val: int = 400,
                     seed: int = 0, workers: int = 2, progress: Callable[[str, int, int], None] | None = None,
                     preset: str = "crowds") -> dict:
    """Generate both splits under ``root`` and write ``root/manifest.json`` last; return the manifest.

    The manifest holds ``generator``, ``version`` (:data:`GENERATOR_VERSION`), ``params`` (``num_train``,
    ``num_val``, ``seed``, ``preset``), per-split statistics and the generation time in seconds.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    man_path = root / "manifest.json"
    if man_path.exists():
        man_path.unlink()  # an interrupted run must not look complete
    t0 = time.perf_counter()
    stats = {}
    for split, n in (("train", num_train), ("val", num_val)):
        cb = (lambda d, t, s=split: progress(s, d, t)) if progress else None
        stats[split] = generate_split(root, split, n, seed, workers, cb, preset)
    manifest = {"generator": "bupose.data.synthetic", "version": GENERATOR_VERSION,
                "params": _params(num_train, num_val, seed, preset), "stats": stats,
                "seconds": round(time.perf_counter() - t0, 1)}
    _write_json(man_path, manifest)
    return manifest


def is_up_to_date(root: str | os.PathLike, num_train: int = 1600, num_val: int = 400, seed: int = 0,
                  preset: str = "crowds") -> bool:
    """True when ``root/manifest.json`` matches this generator version and these parameters and the files exist."""
    root = Path(root)
    try:
        man = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if (not isinstance(man, dict) or man.get("version") != GENERATOR_VERSION
            or man.get("params") != _params(num_train, num_val, seed, preset)):
        return False
    for split, n in (("train", num_train), ("val", num_val)):
        for layout in ("coco", "crowdpose"):
            if not (root / "annotations" / f"{layout}_{split}.json").is_file():
                return False
        if n and not (root / "images" / split / file_name_of(n - 1)).is_file():
            return False
    return True


def progress_bars(name: str = "") -> Callable[[str, int, int], None]:
    """A ``progress(split, done, total)`` for :func:`generate_dataset` / :func:`ensure_synthetic`: one tqdm bar per
    split on stderr, labelled ``generating <name> <split>``."""
    from tqdm import tqdm

    bars: dict = {}

    def progress(split: str, done: int, total: int) -> None:
        if split not in bars:
            bars[split] = tqdm(total=total, desc=" ".join(filter(None, ("generating", name, split))), unit="img")
        bars[split].update(done - bars[split].n)
        if done == total:
            bars[split].close()

    return progress


def ensure_synthetic(root: str | os.PathLike = DEFAULT_ROOT, num_train: int = 1600, num_val: int = 400,
                     seed: int = 0, workers: int = 2, progress: Callable[[str, int, int], None] | None = None,
                     preset: str = "crowds") -> Path:
    """Generate the synthetic dataset under ``root`` unless an up-to-date copy is there (see :func:`is_up_to_date`).

    With ``workers > 1`` the images are made in ``spawn``-started processes, so a calling script needs the usual
    ``if __name__ == "__main__":`` guard. Two processes must not generate into the same ``root`` at once.

    Returns:
        ``Path(root)``.
    """
    root = Path(root)
    if not is_up_to_date(root, num_train, num_val, seed, preset):
        generate_dataset(root, num_train, num_val, seed, workers, progress, preset)
    return root


# --------------------------------------------------------------------------------------------------------------
# Preview
# --------------------------------------------------------------------------------------------------------------


def write_preview(root: str | os.PathLike, path: str | os.PathLike, split: str = "val", per_level: int = 2,
                  cols: int = 3, tile: tuple[int, int] = (340, 340)) -> Path:
    """A grid of ``per_level`` images of each crowd level of ``split`` with their CrowdPose skeletons drawn.

    Occluded joints (v=1) get a white ring. Tiles are labelled with the level and the crowd index.
    """
    from ..vis import draw_people, make_grid

    root = Path(root)
    data = json.loads((root / "annotations" / f"crowdpose_{split}.json").read_text(encoding="utf-8"))
    by_img: dict[int, list] = {}
    for a in data["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    chosen: dict[str, list] = {lv: [] for lv in LEVELS}
    for im in data["images"]:
        lv = crowd_level(im["crowdIndex"])
        if len(chosen[lv]) < per_level:
            chosen[lv].append(im)
    tiles, labels = [], []
    for col in range(per_level):
        for lv in LEVELS:
            if col >= len(chosen[lv]):
                continue
            im = chosen[lv][col]
            img = cv2.imread(str(root / "images" / split / im["file_name"]), cv2.IMREAD_COLOR)
            anns = [a for a in by_img.get(im["id"], []) if not a["iscrowd"]]
            kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), -1, 3)
            img = draw_people(img, kp, CROWDPOSE14, radius=2, thickness=1)
            for x, y, v in kp.reshape(-1, 3):
                if v == 1:
                    cv2.circle(img, (int(round(x)), int(round(y))), 5, (255, 255, 255), 1, cv2.LINE_AA)
            for a in by_img.get(im["id"], []):
                if a["iscrowd"] or a["num_keypoints"] == 0:
                    x, y, bw, bh = a["bbox"]
                    cv2.rectangle(img, (int(x), int(y)), (int(x + bw), int(y + bh)), (0, 0, 255), 1)
            tiles.append(img)
            labels.append(f"{lv} ci={im['crowdIndex']:.2f}")
    grid = make_grid(tiles, labels, cols=cols, tile=tile)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return path


def level_counts(crowd_indices: Iterable[float]) -> dict[str, int]:
    """Number of images per crowd level."""
    out = {lv: 0 for lv in LEVELS}
    for ci in crowd_indices:
        out[crowd_level(ci)] += 1
    return out
