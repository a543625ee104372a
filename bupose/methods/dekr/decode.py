"""DEKR at test time: input resizing, flip, the dense multi-scale merge and the pose NMS, as the official
``tools/valid.py`` path (Geng et al., CVPR 2021), run by the shared engine :mod:`bupose.inference.tta`.

Reproduced on purpose so that official weights give the official poses:

* resizing: the short side becomes ``input_size * scale`` and the long side ``ceil64(input_size * long / short)
  * scale``, the image centred by an affine warp (:func:`dekr_resize`);
* the mirrored input is shifted 3 pixels left (``x[..., :-3] = x[..., 3:]``) before the forward pass, which aligns
  it with the stride-4 grid; the outputs are mirrored back, keypoint channels swapped, x mirrored as ``w - 1 - x``
  (all through :mod:`bupose.inference.flip`);
* per scale: heatmaps and regressed pose maps of the two passes are averaged; heatmaps are upsampled to the scale-1
  input resolution and summed; centres are local maxima (max-pool kernel 3/5/7 chosen by the map size), top
  ``max_people`` above ``keypoint_threshold``, their poses scaled to the scale-1 input;
* at the end: centre scores of the other scales normalised to the scale-1 maximum times ``decrease``, each
  keypoint's score multiplied by the averaged heatmap at its (floored) location, the pose NMS, the top
  ``max_people`` by mean heat value, the person score = mean keypoint score, and the map back to the image through
  the (centred) resize of the last, smallest scale.

Bounded memory (not in the official code): when the largest scale's input would exceed ``max_input_pixels``
(:data:`bupose.inference.tta.DEFAULT_MAX_INPUT_PIXELS`), the image's input size -- the short side at scale 1 -- is
lowered in steps of 64 until it fits, for all scales together (the maps are merged at one resolution); the official
rule then applies unchanged with that size, so the map back stays exact. Images within the limit are untouched; an
image that needs more even at 64 (an aspect ratio in the hundreds) is refused with a
:class:`~bupose.errors.DataError` (:func:`fit_input_size`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bupose.data.pipelines import to_tensor
from bupose.inference.flip import flip_back_maps, flip_back_poses, flip_input
from bupose.inference.nms import dekr_pose_nms
from bupose.inference.people import People
from bupose.inference.tta import DEFAULT_MAX_INPUT_PIXELS, MIN_SHORT_SIDE, too_large


def _ceil64(v: float) -> int:
    return int((v + 63) // 64 * 64)


def centered_affine(center, src_width: float, dst_size: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """``(2, 3)`` matrix scaling a source width ``src_width`` about ``center`` onto ``dst_size`` = ``(w, h)``,
    ``center`` landing on ``(w / 2, h / 2)``; solved from three float32 points as the HRNet-family code does
    (``inverse``: the map back, solved the same way rather than inverted)."""
    w, h = dst_size
    c = np.asarray(center, np.float32)
    src = np.array([c, c + [0, -src_width * 0.5], c + [-src_width * 0.5, 0]], np.float32)
    dst_c = np.array([w * 0.5, h * 0.5], np.float32)
    dst = np.array([dst_c, dst_c + [0, -w * 0.5], dst_c + [-w * 0.5, 0]], np.float32)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def dekr_resize(image_shape, input_size: int, scale: float):
    """The official multi-scale size. Returns ``(size (w, h), center (cx, cy), src_width)``."""
    h, w = image_shape[:2]
    center = np.array([int(w / 2.0 + 0.5), int(h / 2.0 + 0.5)])
    base = _ceil64(input_size)
    if w < h:
        size = (int(base * scale), int(_ceil64(base / w * h) * scale))
        src_width = float(w)
    else:
        size = (int(_ceil64(base / h * w) * scale), int(base * scale))
        src_width = size[0] / size[1] * h
    return size, center, src_width


def _pixels(image_shape, input_size: int, scale: float) -> int:
    w, h = dekr_resize(image_shape, input_size, scale)[0]
    return w * h


def fit_input_size(image_shape, input_size: int, largest_scale: float, max_pixels: int) -> int:
    """The input size (short side at scale 1) for an image whose largest pass is at ``largest_scale``:
    ``input_size`` itself when that pass has at most ``max_pixels`` input pixels, else the largest multiple of 64
    that fits. Raises :class:`~bupose.errors.DataError` when not even 64 fits."""
    if _pixels(image_shape, input_size, largest_scale) <= max_pixels:
        return input_size
    h, w = image_shape[:2]
    ratio = max(h, w) / max(min(h, w), 1)
    size = min(_ceil64(input_size) - 64, int(math.sqrt(max_pixels / ratio) / largest_scale) // 64 * 64)
    while size >= MIN_SHORT_SIDE and _pixels(image_shape, size, largest_scale) > max_pixels:
        size -= 64
    if size < MIN_SHORT_SIDE:
        raise too_large(image_shape, largest_scale, max_pixels, _pixels(image_shape, MIN_SHORT_SIDE, largest_scale),
                        "DEKR")
    return size


@dataclass
class DEKRView:
    tensor: torch.Tensor  # (1, 3, h, w)
    size: tuple[int, int]  # (w, h) of the network input
    center: np.ndarray
    src_width: float


def up_interpolate(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample ``(B, C, h, w)`` to ``size = (H, W)`` by an integer factor: align-corners bilinear onto
    ``(H - f + 1, W - f + 1)``, then replicate the last row/column ``f - 1`` times (the official upsampling)."""
    fh, fw = int(size[0] / x.shape[2]), int(size[1] / x.shape[3])
    y = F.interpolate(x, size=[size[0] - fh + 1, size[1] - fw + 1], mode="bilinear", align_corners=True)
    return F.pad(y, (0, fw - 1, 0, fh - 1), mode="replicate")


def offsets_to_poses(offset: torch.Tensor) -> torch.Tensor:
    """``(1, 2K, h, w)`` offsets -> ``(h*w, K, 2)`` poses: ``location - offset`` at every location."""
    _, c, h, w = offset.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=offset.device),
                            torch.arange(w, dtype=torch.float32, device=offset.device), indexing="ij")
    loc = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)[:, None, :]
    return loc - offset[0].permute(1, 2, 0).reshape(h * w, c // 2, 2)


def pose_map(offset: torch.Tensor, flip_index: Sequence[int] | None = None) -> torch.Tensor:
    """``(1, 2K, h, w)`` pose map (x, y per joint); with ``flip_index`` the outputs of a mirrored input are
    turned into poses of the original (joints swapped, ``x -> w - 1 - x``) and the map mirrored back."""
    _, c, h, w = offset.shape
    poses = offsets_to_poses(offset)
    if flip_index is not None:
        poses = flip_back_poses(poses, w, flip_index)
    out = poses.reshape(h * w, c).permute(1, 0).reshape(1, c, h, w)
    return flip_back_maps(out) if flip_index is not None else out


class DEKRDecoder:
    """DEKR outputs -> people, with multi-scale and flip (see the module docstring).

    Args:
        flip_index: the keypoint layout's flip index (length K).
        input_size: base input size (short side at scale 1).
        output_stride: input pixels per output cell (4).
        max_people: centres kept per scale and people kept at the end.
        keypoint_threshold: centre heat below this is not a person.
        nms_dist: pose NMS distance threshold, relative to the pose size (official: COCO 0.15, CrowdPose 0.05).
        nms_num: pose NMS: more than this many close keypoints make a duplicate (COCO 10, CrowdPose 7).
        decrease: score factor of the scales other than 1 (COCO 1.0, CrowdPose 0.8).
        pool_thresholds: map sizes above which the centre max-pool kernel is 7, else 5, else 3.
        flip_shift: input pixels the mirrored image is shifted left (official: 3).
        rescore: optional ``people -> people`` applied at the very end (the rescoring net,
            :mod:`bupose.methods.dekr.rescore`, as the official ``RESCORE.VALID``).
        max_input_pixels: the most input pixels of one pass (see the module docstring; ``TEST.MAX_INPUT_PIXELS``).

    ``begin`` fits the input size of the image to the limit and keeps it on the decoder for the ``prepare`` calls
    that follow, so one decoder serves one image at a time.
    """

    def __init__(self, flip_index: Sequence[int], input_size: int = 512, output_stride: int = 4,
                 max_people: int = 30, keypoint_threshold: float = 0.01, nms_dist: float = 0.15, nms_num: int = 10,
                 decrease: float = 1.0, pool_thresholds: tuple[float, float] = (300, 200), flip_shift: int = 3,
                 rescore=None, max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS):
        self.flip_index = list(flip_index)
        self.num_joints = len(self.flip_index)
        self.input_size = input_size
        self.output_stride = output_stride
        self.max_people = max_people
        self.keypoint_threshold = keypoint_threshold
        self.nms_dist = nms_dist
        self.nms_num = nms_num
        self.decrease = decrease
        self.pool_thresholds = pool_thresholds
        self.flip_shift = flip_shift
        self.rescore = rescore
        self.max_input_pixels = int(max_input_pixels)
        self._fitted: tuple | None = None  # (image (h, w), largest scale, input size) of the last begin

    # -- the engine's contract ----------------------------------------------------------------------------------
    def begin(self, image: np.ndarray, scales: Sequence[float]) -> dict:
        largest = max(scales)
        input_size = fit_input_size(image.shape, self.input_size, largest, self.max_input_pixels)
        self._fitted = (tuple(image.shape[:2]), largest, input_size)
        base_size = dekr_resize(image.shape, input_size, 1.0)[0]
        return {"scales": list(scales), "heatmap_sum": 0, "poses": [], "view": None, "base_size": base_size}

    def prepare(self, image: np.ndarray, scale: float) -> DEKRView:
        size, center, src_width = dekr_resize(image.shape, self._input_size(image.shape, scale), scale)
        m = centered_affine(center, src_width, size)
        resized = cv2.warpAffine(image, m, size)
        return DEKRView(to_tensor(resized)[None], size, center, src_width)

    def flip_input(self, x: torch.Tensor) -> torch.Tensor:
        return flip_input(x, shift=self.flip_shift)

    def add_scale(self, state: dict, outputs: dict, flipped: dict | None, view: DEKRView, scale: float) -> None:
        heatmap, posemap = outputs["heatmap"], pose_map(outputs["offset"])
        if flipped is not None:
            heat_index = self.flip_index + [self.num_joints]  # the centre channel stays
            heatmap = (heatmap + flip_back_maps(flipped["heatmap"], heat_index)) / 2.0
            posemap = (posemap + pose_map(flipped["offset"], self.flip_index)) / 2.0
        reverse_scale = self.output_stride / scale
        h, w = heatmap.shape[2:]
        # to the scale-1 input size: the official int(reverse_scale * h) is that size for scales 0.5, 1 and 2, but
        # a pixel off for others (0.8, 1.25, ...), where the official code then fails to add the maps
        base_w, base_h = state["base_size"]
        state["heatmap_sum"] = state["heatmap_sum"] + up_interpolate(heatmap, (base_h, base_w))
        index, centre_score = self._centres(heatmap[0, -1:])
        poses = reverse_scale * posemap[0].permute(1, 2, 0).reshape(h * w, -1, 2)[index]
        score = centre_score[:, None, None].expand(-1, poses.shape[1], 1)
        state["poses"].append((scale, torch.cat([poses, score], dim=2)))
        state["view"] = view

    def finish(self, state: dict) -> People:
        heatmap_avg = state["heatmap_sum"] / len(state["scales"])
        poses = self._normalise_scale_scores(state["poses"])
        if poses.shape[0] == 0:
            return People.empty(self.num_joints)
        coords, pose_score = poses[:, :, :2], poses[:, :, 2:]
        heatval = self._heat_values(coords, heatmap_avg[0])
        heat_score = heatval.sum(1)[:, 0] / self.num_joints
        poses = torch.cat([coords, pose_score * heatval], dim=2)
        keep = dekr_pose_nms(coords, heat_score, self.nms_dist, self.nms_num)
        poses, heat_score = poses[keep], heat_score[keep]
        if len(keep) > self.max_people:
            heat_score, top = torch.topk(heat_score, self.max_people)
            poses = poses[top]
        poses = poses.cpu().numpy().astype(np.float64)
        scores = poses[:, :, 2].mean(1)
        # back to the image: the scale-1 input size with the last (smallest) scale's source width, as officially
        view = state["view"]
        inv = centered_affine(view.center, view.src_width, state["base_size"], inverse=True)
        poses[:, :, :2] = poses[:, :, :2] @ inv[:, :2].T + inv[:, 2]
        people = People(poses, scores)
        return self.rescore(people) if self.rescore is not None else people

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _input_size(self, image_shape, scale: float) -> int:
        """The input size fitted by ``begin`` for this image (or, called without ``begin``, for ``scale`` alone)."""
        if self._fitted is not None and self._fitted[0] == tuple(image_shape[:2]) and scale <= self._fitted[1]:
            return self._fitted[2]
        return fit_input_size(image_shape, self.input_size, scale, self.max_input_pixels)

    def _centres(self, centre_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        map_size = (centre_map.shape[1] + centre_map.shape[2]) / 2.0
        kernel = 7 if map_size > self.pool_thresholds[0] else 5 if map_size > self.pool_thresholds[1] else 3
        maxm = F.max_pool2d(centre_map[None], kernel, 1, (kernel - 1) // 2)
        peaks = centre_map * torch.eq(maxm, centre_map).float()
        scores, index = peaks.view(-1).topk(min(self.max_people, peaks.numel()))
        keep = scores > self.keypoint_threshold
        return index[keep], scores[keep]

    def _normalise_scale_scores(self, per_scale: list) -> torch.Tensor:
        scales = [s for s, _ in per_scale]
        ref = scales.index(min(scales, key=lambda s: abs(s - 1.0)))  # scale 1 (official: must be present)
        ref_pose = per_scale[ref][1]
        max_score = ref_pose[:, :, 2].max() if ref_pose.shape[0] else 1
        out = []
        for i, (_, pose) in enumerate(per_scale):
            if i != ref:
                max_here = pose[:, :, 2].max() if pose.shape[0] else 1
                pose = pose.clone()
                pose[:, :, 2] = pose[:, :, 2] / max_here * max_score * self.decrease
            out.append(pose)
        return torch.cat(out, dim=0)

    @staticmethod
    def _heat_values(coords: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
        """``(N, K, 1)`` heat of each keypoint's own channel at its floored, clamped location."""
        _, h, w = heatmap.shape
        flat = heatmap[:-1].flatten(1, 2).transpose(0, 1)
        y = torch.clamp(torch.floor(coords[:, :, 1]), 0, h - 1).long()
        x = torch.clamp(torch.floor(coords[:, :, 0]), 0, w - 1).long()
        return torch.gather(flat, 0, y * w + x).unsqueeze(-1)
