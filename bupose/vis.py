"""Drawing poses on images and tiling images into grids (for demos, previews and debugging).

Coordinates are pixels with pixel centres at integer coordinates; images are BGR uint8 as OpenCV uses them.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .data.keypoints import KeypointSpec


def draw_people(image_bgr: np.ndarray, keypoints: np.ndarray, spec: KeypointSpec, score_threshold: float = 0.0,
                radius: int = 3, thickness: int = 2) -> np.ndarray:
    """Draw skeletons on a copy of an image.

    Limbs (``spec.skeleton``) are drawn in ``spec.limb_colors`` where both end joints are drawn; joints in
    ``spec.keypoint_colors`` with a dark border. A joint is drawn only when its third value (visibility or score) is
    greater than ``score_threshold`` and its coordinates are finite, so unlabelled joints (``v = 0``) never are.

    Args:
        image_bgr: ``(H, W, 3)`` uint8 (a grey ``(H, W)`` image is converted to BGR).
        keypoints: ``(N, K, 3)`` or ``(K, 3)`` x, y, visibility/score with ``K = spec.num_keypoints``.
        spec: the keypoint layout.
        score_threshold: joints with a third value ``<= score_threshold`` are skipped.
        radius: joint radius in pixels.
        thickness: limb thickness in pixels.
    Returns:
        A new ``(H, W, 3)`` uint8 image.
    """
    img = np.asarray(image_bgr)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"draw_people expects an (H, W, 3) BGR image, got shape {img.shape}")
    img = np.ascontiguousarray(img, dtype=np.uint8).copy()
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    k = spec.num_keypoints
    if kp.size == 0:
        return img
    if kp.ndim != 3 or kp.shape[1:] != (k, 3):
        raise ValueError(f"draw_people expects (N, {k}, 3) keypoints for layout {spec.name!r}, got shape {kp.shape}")
    shift = 4
    one = 1 << shift
    for person in kp:
        ok = (person[:, 2] > score_threshold) & np.isfinite(person).all(1)
        pts = np.round(np.where(ok[:, None], person[:, :2], 0) * one).astype(np.int64)
        for (a, b), col in zip(spec.skeleton, spec.limb_colors):
            if ok[a] and ok[b]:
                cv2.line(img, (int(pts[a, 0]), int(pts[a, 1])), (int(pts[b, 0]), int(pts[b, 1])), col,
                         thickness, cv2.LINE_AA, shift)
        for j in np.flatnonzero(ok):
            c = (int(pts[j, 0]), int(pts[j, 1]))
            cv2.circle(img, c, (radius + 1) * one, (0, 0, 0), -1, cv2.LINE_AA, shift)
            cv2.circle(img, c, radius * one, spec.keypoint_colors[j], -1, cv2.LINE_AA, shift)
    return img


def make_grid(images: Sequence[np.ndarray], labels: Sequence[str] | None = None, cols: int = 3,
              tile: tuple[int, int] = (256, 256), background: tuple[int, int, int] = (32, 32, 32)) -> np.ndarray:
    """Tile images into one image.

    Each image is scaled to fit a ``tile = (h, w)`` cell keeping its aspect ratio and centred on ``background``;
    ``labels[i]`` is written in the cell's top-left corner.

    Returns:
        ``(rows * h, cols * w, 3)`` uint8 BGR with ``rows = ceil(len(images) / cols)``.
    """
    if len(images) == 0:
        raise ValueError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"make_grid got {len(labels)} labels for {len(images)} images")
    cols = max(1, min(int(cols), len(images)))
    rows = -(-len(images) // cols)
    th, tw = int(tile[0]), int(tile[1])
    grid = np.empty((rows * th, cols * tw, 3), np.uint8)
    grid[:] = background
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        im = im[..., :3].astype(np.uint8, copy=False)
        h, w = im.shape[:2]
        s = min(th / h, tw / w)
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        r, c = divmod(i, cols)
        y0, x0 = r * th + (th - nh) // 2, c * tw + (tw - nw) // 2
        grid[y0:y0 + nh, x0:x0 + nw] = im
        if labels is not None and labels[i]:
            text = str(labels[i])
            (tw_, th_), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            bx, by = c * tw + 2, r * th + 2
            cv2.rectangle(grid, (bx, by), (bx + tw_ + 6, by + th_ + base + 4), (0, 0, 0), -1)
            cv2.putText(grid, text, (bx + 3, by + th_ + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return grid


def people_arrays(people, num_keypoints: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keypoints (N, K, 3), scores (N,), boxes (N, 4) [x, y, w, h])`` of ``people``: a
    :class:`bupose.inference.people.People`, the list of dicts ``bupose.Predictor`` returns, or an ``(N, K, 3)`` /
    ``(K, 3)`` keypoint array (scores 1, boxes the keypoints' extent)."""
    if hasattr(people, "keypoints") and hasattr(people, "scores"):
        kps, scores, boxes = people.keypoints, people.scores, people.boxes
    elif isinstance(people, (list, tuple)) and (len(people) == 0 or isinstance(people[0], dict)):
        kps = [p["keypoints"] for p in people]
        scores = [p.get("score", 1.0) for p in people]
        boxes = [p["bbox"] for p in people] if all("bbox" in p for p in people) else None
    else:
        kps, scores, boxes = people, None, None
    kps = np.asarray(kps, np.float64)
    if kps.size == 0:
        kps = kps.reshape(0, num_keypoints, 3)
    if kps.ndim == 2:
        kps = kps[None]
    if kps.ndim != 3 or kps.shape[1:] != (num_keypoints, 3):
        raise ValueError(f"expected (N, {num_keypoints}, 3) keypoints, got shape {kps.shape}")
    scores = np.ones(len(kps)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if boxes is None:
        lo, hi = kps[..., :2].min(1), kps[..., :2].max(1)
        boxes = np.concatenate([lo, hi - lo], 1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(scores) != len(kps) or len(boxes) != len(kps):
        raise ValueError(f"{len(kps)} people but {len(scores)} scores and {len(boxes)} boxes")
    return kps, scores, boxes


def draw_poses(image_bgr: np.ndarray, people, spec: KeypointSpec, *, keypoint_threshold: float = 0.3,
               show_score: bool = False, show_box: bool = False, radius: int = 3, thickness: int = 2,
               box_color: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """Draw predicted people on a copy of an image: skeletons (:func:`draw_people`), and optionally each person's
    box and score.

    Args:
        image_bgr: ``(H, W, 3)`` uint8 (or grey ``(H, W)``).
        people: what ``bupose.Predictor`` returns (a list of ``{"keypoints", "score", "bbox"}``), a ``People``, or an
            ``(N, K, 3)`` array; image pixels, pixel centres at integer coordinates.
        spec: the keypoint layout (``Predictor.spec``).
        keypoint_threshold: joints whose score is ``<=`` this are not drawn (nor their limbs).
        show_score: write each person's score above its box's top-left corner.
        show_box: draw each person's ``[x, y, w, h]`` box.
    Returns:
        A new ``(H, W, 3)`` uint8 image.
    """
    kps, scores, boxes = people_arrays(people, spec.num_keypoints)
    img = draw_people(image_bgr, kps, spec, score_threshold=keypoint_threshold, radius=radius, thickness=thickness)
    for score, (x, y, w, h) in zip(scores, boxes):
        if not np.isfinite([x, y, w, h]).all():
            continue
        p1, p2 = (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h)))
        if show_box:
            cv2.rectangle(img, p1, p2, box_color, 1)
        if show_score:
            text = f"{score:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            tx, ty = max(0, p1[0]), max(th + base, p1[1])
            cv2.rectangle(img, (tx, ty - th - base), (tx + tw + 2, ty), (0, 0, 0), -1)
            cv2.putText(img, text, (tx + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return img
