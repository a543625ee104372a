"""YOLO-Pose decoding and its per-instance multi-scale + flip merging (Maji et al., "YOLO-Pose: Enhancing YOLO for
Multi Person Pose Estimation Using Object Keypoint Similarity Loss", CVPRW 2022).

Raw head outputs become candidates as in the official code: for level ``l`` with stride ``s``, anchor ``a`` and cell
``(i, j)``, box centre ``(sigmoid(t_xy) * 2 - 0.5 + (j, i)) * s``, size ``(sigmoid(t_wh) * 2)^2 * anchor``,
keypoints ``(t_xy * 2 - 0.5 + (j, i)) * s`` (no sigmoid), objectness, class and keypoint confidences by sigmoid.
These coordinates put pixel ``x``'s centre at ``x + 0.5`` (the official normalised-label grid); bupose's input
pixels have centres at integers, so ``0.5`` is subtracted before mapping back to the image (see
:mod:`bupose.methods.yolo_pose.loss` for the matching target convention).

Test-time augmentation is per instance (the shared engine, :mod:`bupose.inference.tta`): every pass -- each scale,
and the mirrored image -- is decoded, its candidates above the confidence threshold are mapped to image pixels (the
mirrored ones un-mirrored, ``x -> W - 1 - x`` in the input, and their left/right keypoints swapped, by
:mod:`bupose.inference.flip`) and pooled; :meth:`YOLOPoseDecoder.finish` runs one NMS over the pool. Neither the
official code (its TTA de-scales only boxes and averages flipped anchors without mirroring or swapping keypoints)
nor Ultralytics (no pose TTA) has a working pose TTA.

Bounded memory: the letterbox is a square of ``input_size * scale`` (rounded to the largest stride) whatever the
image, so only the scale matters; a side whose square exceeds ``max_input_pixels``
(:data:`bupose.inference.tta.DEFAULT_MAX_INPUT_PIXELS`) is lowered to the largest multiple of the stride that fits.
An extreme aspect ratio only makes the resized image thin (at least one pixel): nothing is refused.

Official coordinates (``official_coordinates``), for parity with official weights:

* ``"detect"`` (or ``True``): the official ``detect.py``: ``letterbox(img, size, auto=False)`` and ``scale_coords``
  without ``ratio_pad``: ``(x - pad) / gain`` with ``gain = min(size / h0, size / w0)`` and the unrounded pad
  (:func:`official_letterbox`);
* ``"test"``: the official ``test.py``, which gives the published numbers: ``load_image`` (the long side to
  ``size`` by ``int()``, ``INTER_AREA`` when shrinking), then ``letterbox`` onto the ``size`` square without
  scaling, and ``scale_coords`` with ``ratio_pad``: ``gain = h / h0``, the **height** ratio of the resize, for x and
  y alike, and the letterbox's pad (:func:`official_test_letterbox`). The official test batches images of similar
  shape onto one rectangle (``rect``); one image at a time, the square is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torchvision

from bupose.data import geometry as G
from bupose.inference.flip import flip_back_boxes, flip_back_poses, flip_input
from bupose.inference.nms import oks_nms
from bupose.inference.people import People
from bupose.inference.tta import DEFAULT_MAX_INPUT_PIXELS

#: ``official_coordinates`` values (``True`` means ``"detect"``)
OFFICIAL_MODES = (False, "detect", "test")


def decode_levels(levels: Sequence[torch.Tensor], anchors: torch.Tensor, strides: Sequence[int],
                  num_keypoints: int) -> torch.Tensor:
    """Raw head outputs -> candidates, as the official inference.

    Args:
        levels: per level ``(B, A, H_l, W_l, 5 + nc + 3K)`` raw outputs.
        anchors: ``(L, A, 2)`` anchor sizes in input pixels. strides: ``(L,)``. num_keypoints: K.
    Returns:
        ``(B, N, 5 + nc + 3K)``: box centre x, y, w, h (input pixels, the official grid: pixel centres at ``+0.5``),
        objectness, class scores, then per keypoint x, y, confidence.
    """
    out = []
    for t, anchor, s in zip(levels, anchors, strides):
        b, a, h, w, c = t.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=t.device, dtype=t.dtype),
                                torch.arange(w, device=t.device, dtype=t.dtype), indexing="ij")
        grid = torch.stack([xs, ys], -1)[None, None]  # (1, 1, h, w, 2)
        y = torch.empty_like(t)
        y[..., 0:2] = (t[..., 0:2].sigmoid() * 2 - 0.5 + grid) * s
        y[..., 2:4] = (t[..., 2:4].sigmoid() * 2) ** 2 * anchor.to(t).view(1, a, 1, 1, 2)
        y[..., 4:] = t[..., 4:].sigmoid()  # objectness, classes, keypoint confidences (coordinates overwritten next)
        k0 = c - 3 * num_keypoints  # first keypoint channel, after 5 + nc
        kx, ky = t[..., k0::3], t[..., k0 + 1::3]
        y[..., k0::3] = (kx * 2 - 0.5 + grid[..., 0:1]) * s
        y[..., k0 + 1::3] = (ky * 2 - 0.5 + grid[..., 1:2]) * s
        out.append(y.reshape(b, -1, c))
    return torch.cat(out, 1)


@dataclass
class LetterboxView:
    tensor: torch.Tensor  # (1, 3, h, w) RGB in [0, 1]
    size: tuple[int, int]  # (w, h) of the input
    to_image: np.ndarray  # (2, 3): decoded (official-grid) input coordinates -> output image coordinates
    bounds: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max that outputs are clipped to


def official_letterbox(image: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, float, tuple]:
    """The official ``letterbox(img, size, auto=False)`` of YOLOv5 / YOLO-Pose: ``cv2.resize`` (bilinear) to
    ``round(side * gain)``, then grey borders of ``round(pad -/+ 0.1)``. Returns ``(image, gain, (pad_x, pad_y))``
    with the unrounded pads that the official ``scale_coords`` subtracts."""
    h0, w0 = image.shape[:2]
    gain = min(size / h0, size / w0)
    nw, nh = max(1, int(round(w0 * gain))), max(1, int(round(h0 * gain)))  # officially 0 (a crash) when thinner
    dw, dh = (size - nw) / 2, (size - nh) / 2
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w0, h0) else image
    img = cv2.copyMakeBorder(img, int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)),
                             int(round(dw + 0.1)), cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return img, gain, ((size - w0 * gain) / 2, (size - h0 * gain) / 2)


def official_test_letterbox(image: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, float, tuple]:
    """The official ``test.py`` input of YOLOv5 / YOLO-Pose: ``load_image`` (``r = size / max(h0, w0)``,
    ``cv2.resize`` to ``(int(w0 * r), int(h0 * r))``, ``INTER_AREA`` when ``r < 1``, else bilinear), then
    ``letterbox(img, size, auto=False, scaleup=False)`` (grey borders of ``round(pad -/+ 0.1)``, no resize). Returns
    ``(image, gain, (pad_x, pad_y))`` as ``scale_coords`` uses them with ``ratio_pad``: ``gain = h / h0`` (the height
    ratio, for both axes) and the letterbox's unrounded pads."""
    h0, w0 = image.shape[:2]
    r = size / max(h0, w0)
    img = image
    if r != 1:
        img = cv2.resize(image, (max(1, int(w0 * r)), max(1, int(h0 * r))),
                         interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    h, w = img.shape[:2]
    dw, dh = (size - w) / 2, (size - h) / 2
    img = cv2.copyMakeBorder(img, int(round(dh - 0.1)), int(round(dh + 0.1)), int(round(dw - 0.1)),
                             int(round(dw + 0.1)), cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    return img, h / h0, (dw, dh)


def to_yolo_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 BGR -> ``(3, H, W)`` float RGB in [0, 1] (YOLO's input: no mean / std)."""
    rgb = np.ascontiguousarray(image_bgr[..., ::-1].transpose(2, 0, 1))
    return torch.from_numpy(rgb).float().div_(255.0)


class YOLOPoseDecoder:
    """YOLO-Pose outputs -> people, with per-instance multi-scale and flip merging.

    Args:
        anchors: ``(L, A, 2)`` anchors in input pixels; strides: ``(L,)``.
        flip_index: the keypoint layout's flip index (length K); sigmas: ``(K,)`` OKS sigmas (for ``nms="oks"``).
        input_size: letterbox size at scale 1 (scales round it to a multiple of the largest stride).
        conf_threshold: candidates with ``objectness * class`` below this are dropped (official 0.001).
        iou_threshold: box NMS IoU (official 0.65); also the IoU that groups candidates for keypoint fusion.
        max_people: people kept per image (official 300).
        nms: ``"box"`` (official, torchvision NMS on boxes) or ``"oks"`` (pose NMS by OKS, ``oks_threshold``).
        score: ``"box"`` (objectness x class, official) or ``"box_x_keypoint"`` (that times the mean keypoint
            confidence: ranks well-localised poses first in crowds).
        fuse_keypoints: replace each kept person's keypoints by the average over the candidates its NMS
            suppressed (IoU above ``iou_threshold``), weighted by candidate score x keypoint confidence.
        letterbox_auto: pad to the next multiple of the stride (minimum rectangle) instead of a square.
        official_coordinates: letterbox and map back exactly as the official code: ``"detect"`` (or ``True``) its
            ``detect.py``, ``"test"`` its ``test.py`` (see the module docstring; pixel corners at integers, clipped
            to ``[0, W]``) -- for parity with official weights; by default (``False``) bupose's letterbox matrix
            (antialiased) and its inverse (pixel centres at integers, clipped to the image area
            ``[-0.5, W - 0.5]``).
        max_input_pixels: the most input pixels of one pass (see the module docstring; ``TEST.MAX_INPUT_PIXELS``).
    """

    def __init__(self, anchors, strides: Sequence[int], flip_index: Sequence[int], sigmas, input_size: int = 640,
                 conf_threshold: float = 0.001, iou_threshold: float = 0.65, max_people: int = 300,
                 nms: str = "box", oks_threshold: float = 0.7, score: str = "box", fuse_keypoints: bool = False,
                 letterbox_auto: bool = False, official_coordinates: bool | str = False, pad_value: int = 114,
                 max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS):
        if nms not in ("box", "oks"):
            raise ValueError(f"YOLOPoseDecoder: nms must be 'box' or 'oks', got {nms!r}")
        if score not in ("box", "box_x_keypoint"):
            raise ValueError(f"YOLOPoseDecoder: score must be 'box' or 'box_x_keypoint', got {score!r}")
        if isinstance(official_coordinates, bool):
            official_coordinates = "detect" if official_coordinates else False
        if official_coordinates not in OFFICIAL_MODES:
            raise ValueError(f"YOLOPoseDecoder: official_coordinates must be False, True, 'detect' or 'test', got "
                             f"{official_coordinates!r}")
        self.anchors = torch.as_tensor(anchors, dtype=torch.float32)
        self.strides = [int(s) for s in strides]
        self.flip_index = list(flip_index)
        self.num_joints = len(self.flip_index)
        self.sigmas = torch.as_tensor(np.asarray(sigmas, np.float32))
        self.input_size = input_size
        self.conf_threshold, self.iou_threshold = conf_threshold, iou_threshold
        self.max_people, self.nms, self.oks_threshold = max_people, nms, oks_threshold
        self.score, self.fuse_keypoints = score, fuse_keypoints
        self.letterbox_auto, self.pad_value = letterbox_auto, pad_value
        self.official_coordinates = official_coordinates
        self.max_input_pixels = int(max_input_pixels)

    # -- the engine's contract ----------------------------------------------------------------------------------
    def bind(self, model: torch.nn.Module) -> None:
        """Take anchors and strides from the model (an official checkpoint may carry auto-anchor adjusted ones)."""
        model = getattr(model, "module", model)
        self.anchors = model.anchors.detach().float().cpu()
        self.strides = [int(s) for s in model.strides]

    def begin(self, image: np.ndarray, scales: Sequence[float]) -> dict:
        return {"candidates": []}

    def prepare(self, image: np.ndarray, scale: float) -> LetterboxView:
        stride = max(self.strides)
        size = self.letterbox_side(scale)
        h0, w0 = image.shape[:2]
        if self.official_coordinates:
            letterbox = official_test_letterbox if self.official_coordinates == "test" else official_letterbox
            img, gain, (px, py) = letterbox(image, size, self.pad_value)
            to_image = np.array([[1 / gain, 0, -px / gain], [0, 1 / gain, -py / gain]])
            return LetterboxView(to_yolo_tensor(img)[None], (img.shape[1], img.shape[0]), to_image,
                                 (0.0, 0.0, float(w0), float(h0)))
        m, out_size = G.letterbox_matrix((w0, h0), size, stride, auto=self.letterbox_auto)
        img = G.warp_image(image, m, out_size, border_value=self.pad_value, antialias=True)
        # decoded coordinates put pixel centres at +0.5: shift onto bupose's integer centres, then invert
        to_image = G.compose(G.translation_matrix(-0.5, -0.5), G.invert(m))
        return LetterboxView(to_yolo_tensor(img)[None], out_size, to_image, (-0.5, -0.5, w0 - 0.5, h0 - 0.5))

    def flip_input(self, x: torch.Tensor) -> torch.Tensor:
        return flip_input(x)

    def letterbox_side(self, scale: float) -> int:
        """The letterbox square's side at ``scale``: ``input_size * scale`` rounded to the largest stride, lowered
        to the largest multiple of the stride whose square has at most ``max_input_pixels`` pixels."""
        stride = max(self.strides)
        side = max(stride, int(round(self.input_size * scale / stride)) * stride)
        return min(side, max(stride, math.isqrt(self.max_input_pixels) // stride * stride))

    def add_scale(self, state: dict, outputs: dict, flipped: dict | None, view: LetterboxView, scale: float) -> None:
        state["bounds"] = view.bounds
        state["candidates"].append(self._candidates(outputs, view, mirrored=False))
        if flipped is not None:
            state["candidates"].append(self._candidates(flipped, view, mirrored=True))

    def finish(self, state: dict) -> People:
        cand = torch.cat(state["candidates"]) if state["candidates"] else torch.zeros((0, 5 + 3 * self.num_joints))
        if cand.shape[0] == 0:
            return People.empty(self.num_joints)
        boxes, conf = cand[:, :4], cand[:, 4]
        kps = cand[:, 5:].reshape(-1, self.num_joints, 3)
        score = conf * kps[:, :, 2].mean(1) if self.score == "box_x_keypoint" else conf
        if self.nms == "box":
            keep = torchvision.ops.nms(boxes, score, self.iou_threshold)
        else:
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
            keep = oks_nms(kps, score, wh[:, 0] * wh[:, 1], self.sigmas, self.oks_threshold)
        keep = keep[: self.max_people]
        out_kps = self._fuse(boxes, score, kps, keep) if self.fuse_keypoints else kps[keep].clone()
        # clipped to the image only now: NMS compares the unclipped boxes, as the official code
        lo, hi = torch.tensor(state["bounds"][:2]), torch.tensor(state["bounds"][2:])
        out_kps[..., :2] = torch.maximum(torch.minimum(out_kps[..., :2], hi), lo)
        kp = out_kps.numpy().astype(np.float64)
        xyxy = torch.maximum(torch.minimum(boxes[keep].view(-1, 2, 2), hi), lo).view(-1, 4).numpy().astype(np.float64)
        return People(kp, score[keep].numpy().astype(np.float64),
                      np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1))

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _candidates(self, outputs: dict, view: LetterboxView, mirrored: bool) -> torch.Tensor:
        """``(N, 5 + 3K)``: box xyxy, confidence, keypoints (x, y, conf) in image pixels, for one pass."""
        pred = decode_levels(outputs["levels"], self.anchors, self.strides, self.num_joints)[0].float()
        k = self.num_joints
        k0 = pred.shape[1] - 3 * k
        conf = pred[:, 4] * pred[:, 5:k0].amax(1) if k0 > 5 else pred[:, 4]
        sel = (pred[:, 4] > self.conf_threshold) & (conf > self.conf_threshold)
        pred, conf = pred[sel].cpu(), conf[sel].cpu()  # only the candidates leave the device
        xy, wh = pred[:, 0:2], pred[:, 2:4]
        kps = pred[:, k0:].reshape(-1, k, 3).clone()
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)  # (N, 4) xyxy
        if mirrored:  # on the official grid a mirror is x -> W - x (pixel centres at +0.5)
            boxes = flip_back_boxes(boxes, view.size[0], pixel_centre=0.5)
            kps = flip_back_poses(kps, view.size[0], self.flip_index, pixel_centre=0.5)
        m = torch.as_tensor(view.to_image, dtype=torch.float32)
        corners = boxes.view(-1, 2, 2) @ m[:, :2].T + m[:, 2]  # (N, 2, 2): the two corners
        kps[..., :2] = kps[..., :2] @ m[:, :2].T + m[:, 2]
        return torch.cat([corners.reshape(-1, 4), conf[:, None], kps.reshape(-1, 3 * k)], 1)

    def _fuse(self, boxes, score, kps, keep) -> torch.Tensor:
        iou = torchvision.ops.box_iou(boxes[keep], boxes)  # (M, N)
        member = iou > self.iou_threshold
        member[torch.arange(len(keep)), keep] = True
        w = member[:, :, None].float() * score[None, :, None] * kps[None, :, :, 2]  # (M, N, K)
        total = w.sum(1).clamp(min=1e-12)
        xy = (w[..., None] * kps[None, :, :, :2]).sum(1) / total[..., None]
        out = kps[keep].clone()
        out[:, :, :2] = xy
        return out
