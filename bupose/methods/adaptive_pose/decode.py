"""AdaptivePose at test time (Xiao et al., "AdaptivePose: Human Parts as Adaptive Points", AAAI 2022): decoding,
flip and multi-scale merging, run by the shared engine :mod:`bupose.inference.tta`.

One pass: ``sigmoid`` of the centre logits, 5x5 max-pool peaks, the top ``max_people`` above ``threshold``; the
person at peak cell ``(i, j)`` has keypoint ``k`` at ``(j + dx_k, i + dy_k)`` output pixels and the peak value as its
score (the official ``multi_pose_decode_wodet``). Output pixels map to input pixels as ``x_in = stride * x_out``
(mode ``"corner"`` of :func:`bupose.data.geometry.stride_matrix`, CenterNet's), then to the image through the exact
inverse of the resize.

As officially:

* **input**: the short side becomes ``int(input_size * scale)`` (long side ``int(long * input_size / short *
  scale)``), the image is centred on a canvas padded to ``(n | 31) + 1`` per side (:func:`official_resize`), and
  normalised as CenterNet does: BGR order, mean / std :data:`CENTERNET_MEAN` / :data:`CENTERNET_STD`
  (:func:`to_centernet_tensor`; bupose trains AdaptivePose with the same, so official weights fit);
* **multi-scale**: the people of all scales are pooled and merged by CenterNet's Gaussian soft-NMS (sigma 0.5) on the
  boxes of their keypoints (``nms="soft"``); a single scale gets no NMS (the centre max-pool is the NMS).

Flip (``flip``; the mirror and flip-back by :mod:`bupose.inference.flip`):

* ``"official"``: the centre heatmap is averaged with the mirrored pass's, mirrored back on the output grid; the
  keypoints come from the un-mirrored pass only (the official test; its grid mirror is 3 input pixels off the
  input mirror under the ``corner`` convention, as officially);
* ``"fuse"``: both passes are decoded; the mirrored pass's people are un-mirrored in input pixels (``x -> W_in - 1
  - x``, exact) with left/right keypoints swapped; people of the two passes whose centres are within the centre
  max-pool's reach of each other (``kernel // 2`` cells, plus the ``stride - 1`` pixels between the grid and its
  mirror, in x and in y) are matched, nearest first, and fused: keypoints the score-weighted mean, score the mean
  of the two; an unmatched person keeps half its score, as if the other pass had scored 0 there. This is the
  per-person analogue of averaging the heatmaps (two peaks that close would have merged), so the pair counts as
  one decoding, as the official flip does (no NMS at a single scale). With a resize that is itself mirror
  symmetric (an even resized width), the people of a mirrored image are exactly the mirrored people, whatever the
  weights.

``"fuse"`` is the default but **has not been measured against** ``"official"`` on a real dataset yet (on a toy --
a tiny model trained and tested on 16 synthetic images -- AP 0.166 fuse, 0.151 official, 0.137 without flip).

Bounded memory (not in the official code): a pass whose canvas would exceed ``max_input_pixels``
(:data:`bupose.inference.tta.DEFAULT_MAX_INPUT_PIXELS`) is resized with the largest smaller input size (short side
at scale 1) that fits, by the same official rule, so its map back stays exact; each pass is fitted on its own (the
people of the passes are merged in image pixels). Passes within the limit are untouched; an image that needs more
even at input size 64 is refused with a :class:`~bupose.errors.DataError` (:func:`fit_resize`).

Coordinates: the official code maps back with the pixel-corner convention (``x / r``), bupose with the exact inverse
of the image -> input matrix (pixel centres at integers, ``(x + 0.5) / r - 0.5``): the two differ by ``0.5 (1 / r -
1)`` image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import math

import numpy as np
import torch
import torch.nn.functional as F

from bupose.data import geometry as G
from bupose.errors import DataError
from bupose.inference.flip import flip_back_maps, flip_back_points, flip_back_poses, flip_input
from bupose.inference.nms import oks_nms, soft_nms
from bupose.inference.people import People
from bupose.inference.tta import DEFAULT_MAX_INPUT_PIXELS, MIN_SHORT_SIDE, too_large

#: CenterNet's input mean and std, per channel in **BGR** order (the image is not converted to RGB)
CENTERNET_MEAN = (0.40789654, 0.44719302, 0.47026115)
CENTERNET_STD = (0.28863828, 0.27408164, 0.27809835)
_MEAN = torch.tensor(CENTERNET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(CENTERNET_STD, dtype=torch.float32).view(3, 1, 1)

FLIP_MODES = ("official", "fuse")
NMS_KINDS = ("soft", "oks", "none")


def to_centernet_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 BGR -> ``(3, H, W)`` float32, still BGR, ``(x / 255 - mean) / std`` (CenterNet's input,
    which the official AdaptivePose weights expect)."""
    img = np.asarray(image_bgr)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise DataError(f"to_centernet_tensor: expected an (H, W, 3) uint8 BGR image, got shape {img.shape} dtype "
                        f"{img.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    return t.sub_(_MEAN).div_(_STD).contiguous()


def official_resize(image_size: tuple[int, int], input_size: int, scale: float = 1.0,
                    divisor: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """The official test resize of an image of ``(W, H)``: ``(matrix image -> input, (w_in, h_in))``.

    The short side becomes ``int(input_size * scale)``, the long one ``int(long * input_size / short * scale)``
    (``cv2.resize``'s per-axis ``"area"`` mapping); the result is centred (``new // 2`` onto ``w_in / 2``) on a canvas
    of ``(n | (divisor - 1)) + 1`` pixels per side -- the next multiple of ``divisor`` strictly above ``n``."""
    w, h = image_size
    if h > w:  # the official float operations, in order (they decide how int() rounds)
        new_w, new_h = input_size, h * (input_size / w)
    else:
        new_w, new_h = w * (input_size / h), input_size
    new_w, new_h = max(1, int(new_w * scale)), max(1, int(new_h * scale))
    in_w, in_h = (new_w | (divisor - 1)) + 1, (new_h | (divisor - 1)) + 1
    m = G.compose(G.resize_matrix((w, h), (new_w, new_h), "area"),
                  G.translation_matrix(in_w / 2 - new_w // 2, in_h / 2 - new_h // 2))
    return m, (in_w, in_h)


def fit_resize(image_size: tuple[int, int], input_size: int, scale: float,
               max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`official_resize` with the largest input size ``<= input_size`` whose canvas has at most
    ``max_pixels`` pixels (``input_size`` itself when it fits). Raises :class:`~bupose.errors.DataError` when not
    even :data:`~bupose.inference.tta.MIN_SHORT_SIDE` fits."""
    m, size = official_resize(image_size, input_size, scale)
    if size[0] * size[1] <= max_pixels:
        return m, size
    w, h = image_size
    ratio = max(w, h) / max(min(w, h), 1)
    fitted = min(input_size - 1, int(math.sqrt(max_pixels / ratio) / scale))
    while fitted >= MIN_SHORT_SIDE:
        m, size = official_resize(image_size, fitted, scale)
        if size[0] * size[1] <= max_pixels:
            return m, size
        fitted -= max(1, fitted // 64)
    _, size = official_resize(image_size, MIN_SHORT_SIDE, scale)
    raise too_large((h, w), scale, max_pixels, size[0] * size[1], "AdaptivePose")


@dataclass
class AdaptivePoseView:
    tensor: torch.Tensor  # (1, 3, h, w) network input
    matrix: np.ndarray  # image -> input
    size: tuple[int, int]  # (w, h) of the input


def decode_centres(center_prob: torch.Tensor, offset: torch.Tensor, max_people: int, threshold: float = 0.0,
                   kernel: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """People of one pass in output pixels.

    Args:
        center_prob: ``(h, w)`` centre probabilities. offset: ``(2K, h, w)`` keypoint offsets ``(dx, dy)``.
    Returns:
        ``(scores (N,), keypoints (N, K, 2), centres (N, 2))``, best first: the peaks of a ``kernel`` max-pool, at
        most ``max_people``, with score above ``threshold``; centre ``(j, i)`` and keypoints ``(j + dx, i + dy)``.
    """
    h, w = center_prob.shape
    hmax = F.max_pool2d(center_prob[None, None], kernel, 1, (kernel - 1) // 2)[0, 0]
    peaks = center_prob * (hmax == center_prob).to(center_prob.dtype)
    scores, index = peaks.reshape(-1).topk(min(max_people, h * w))
    keep = scores > threshold
    scores, index = scores[keep], index[keep]
    xy = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], 1).to(offset.dtype)
    kps = offset.reshape(offset.shape[0], -1)[:, index].T.reshape(len(index), offset.shape[0] // 2, 2)
    return scores, kps + xy[:, None, :], xy


class AdaptivePoseDecoder:
    """AdaptivePose outputs -> people, with multi-scale and flip (see the module docstring).

    Args:
        flip_index: the keypoint layout's flip index (length K). sigmas: ``(K,)`` OKS sigmas.
        input_size: short side at scale 1. output_stride: input pixels per output cell (4).
        max_people: people per pass (the official top K, 20) and at the end.
        threshold: a centre score at or below this is not a person (official: none, 0).
        flip: ``"fuse"`` (default) or ``"official"``.
        nms: how the pooled people of several scales are merged: ``"soft"`` (official Gaussian soft-NMS on
            keypoint boxes), ``"oks"`` (greedy OKS NMS at ``oks_threshold``) or ``"none"``.
        oks_threshold: OKS NMS threshold.
        soft_sigma, soft_threshold: soft-NMS Gaussian sigma (0.5) and the score below which a decayed person is
            dropped (0.001).
        pool_kernel: centre max-pool kernel (5).
        max_input_pixels: the most canvas pixels of one pass (see the module docstring; ``TEST.MAX_INPUT_PIXELS``).
    """

    def __init__(self, *, flip_index: Sequence[int], sigmas: Sequence[float], input_size: int = 512,
                 output_stride: int = 4, max_people: int = 20, threshold: float = 0.0, flip: str = "fuse",
                 nms: str = "soft", oks_threshold: float = 0.7, soft_sigma: float = 0.5,
                 soft_threshold: float = 0.001, pool_kernel: int = 5,
                 max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS):
        if flip not in FLIP_MODES:
            raise ValueError(f"AdaptivePoseDecoder: flip must be one of {FLIP_MODES}, got {flip!r}")
        if nms not in NMS_KINDS:
            raise ValueError(f"AdaptivePoseDecoder: nms must be one of {NMS_KINDS}, got {nms!r}")
        self.flip_index = list(flip_index)
        self.num_joints = len(self.flip_index)
        self.sigmas = torch.as_tensor(np.asarray(sigmas, np.float32))
        if len(self.sigmas) != self.num_joints:
            raise ValueError(f"AdaptivePoseDecoder: {len(self.sigmas)} sigmas for {self.num_joints} keypoints")
        self.input_size, self.output_stride = input_size, output_stride
        self.max_people, self.threshold = max_people, threshold
        self.flip, self.nms = flip, nms
        self.oks_threshold = oks_threshold
        self.soft_sigma, self.soft_threshold = soft_sigma, soft_threshold
        self.pool_kernel = pool_kernel
        self.max_input_pixels = int(max_input_pixels)

    # -- the engine's contract ----------------------------------------------------------------------------------
    def begin(self, image: np.ndarray, scales: Sequence[float] = (1.0,)) -> dict:
        return {"keypoints": [], "scores": [], "scales": 0}

    def prepare(self, image: np.ndarray, scale: float) -> AdaptivePoseView:
        m, size = fit_resize((image.shape[1], image.shape[0]), self.input_size, scale, self.max_input_pixels)
        resized = G.warp_image(image, m, size)
        return AdaptivePoseView(to_centernet_tensor(resized)[None], m, size)

    def flip_input(self, x: torch.Tensor) -> torch.Tensor:
        return flip_input(x)

    def add_scale(self, state: dict, outputs: dict, flipped: dict | None, view: AdaptivePoseView,
                  scale: float) -> None:
        center = outputs["center"][0, 0].float().sigmoid().cpu()
        offset = outputs["offset"][0].float().cpu()
        if flipped is not None and self.flip == "official":
            center = (center + flip_back_maps(flipped["center"])[0, 0].float().sigmoid().cpu()) / 2
            flipped = None
        scores, kps, centres = self._pass(center, offset, view, mirrored=False)
        state["scales"] += 1
        if flipped is not None:
            f_scores, f_kps, f_centres = self._pass(flipped["center"][0, 0].float().sigmoid().cpu(),
                                                    flipped["offset"][0].float().cpu(), view, mirrored=True)
            scores, kps = self._fuse_pair(scores, kps, centres, f_scores, f_kps, f_centres)
        state["scores"].append(scores)
        state["keypoints"].append(kps)

    def finish(self, state: dict) -> People:
        if not state["scores"]:
            return People.empty(self.num_joints)
        scores, kps = torch.cat(state["scores"]), torch.cat(state["keypoints"])
        if scores.numel() == 0:
            return People.empty(self.num_joints)
        if state["scales"] > 1 and self.nms == "soft":
            keep, new_scores = soft_nms(_boxes(kps), scores, self.soft_sigma, self.soft_threshold)
            kps, scores = kps[keep], new_scores[keep]
        elif state["scales"] > 1 and self.nms == "oks":
            keep = oks_nms(_with_scores(kps, scores), scores, _box_areas(kps), self.sigmas.to(kps.dtype),
                           self.oks_threshold)
            kps, scores = kps[keep], scores[keep]
        order = torch.argsort(scores, descending=True)[:self.max_people]
        kps, scores = kps[order], scores[order]
        poses = _with_scores(kps, scores).numpy().astype(np.float64)
        return People(poses, scores.numpy().astype(np.float64))

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _pass(self, center: torch.Tensor, offset: torch.Tensor, view: AdaptivePoseView,
              mirrored: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scores (N,), keypoints (N, K, 2) image pixels, centres (N, 2) input pixels)`` of one pass; a mirrored
        pass un-mirrored."""
        scores, kps, cells = decode_centres(center, offset, self.max_people, self.threshold, self.pool_kernel)
        kps = kps.double() * self.output_stride  # input pixels
        centres = cells.double() * self.output_stride
        if mirrored:
            kps = flip_back_poses(kps, view.size[0], self.flip_index)
            centres = flip_back_points(centres, view.size[0])
        inv = torch.as_tensor(G.invert(view.matrix), dtype=torch.float64)
        kps = kps @ inv[:, :2].T + inv[:, 2]
        return scores.double(), kps, centres

    def _fuse_pair(self, sa, ka, ca, sb, kb, cb) -> tuple[torch.Tensor, torch.Tensor]:
        """Match the people of a pass (``a``) and its mirrored pass (``b``) by their centres and fuse them (see the
        module docstring). ``s*`` scores, ``k*`` keypoints, ``c*`` centres in input pixels."""
        na, nb = len(sa), len(sb)
        match_b = torch.full((na,), -1, dtype=torch.long)
        taken = torch.zeros(nb, dtype=torch.bool)
        if na and nb:
            dist = (ca[:, None, :] - cb[None, :, :]).abs().amax(-1).reshape(-1)  # (na * nb,) Chebyshev
            both = (sa[:, None] + sb[None, :]).reshape(-1)
            order = torch.argsort(-both, stable=True)  # ties in distance: the higher scores first
            order = order[torch.argsort(dist[order], stable=True)]
            reach = self.output_stride * (self.pool_kernel // 2) + self.output_stride - 1
            for flat in order.tolist():
                if dist[flat] > reach:
                    break
                i, j = divmod(flat, nb)
                if match_b[i] < 0 and not taken[j]:
                    match_b[i], taken[j] = j, True
        scores, kps = sa / 2, ka.clone()
        has = match_b >= 0
        if has.any():
            j = match_b[has]
            wa, wb = sa[has, None, None], sb[j, None, None]
            kps[has] = (wa * ka[has] + wb * kb[j]) / (wa + wb).clamp(min=1e-12)
            scores[has] = (sa[has] + sb[j]) / 2
        return torch.cat([scores, sb[~taken] / 2]), torch.cat([kps, kb[~taken]])


def _with_scores(kps: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``(N, K, 2)`` + ``(N,)`` -> ``(N, K, 3)`` with the person score as every keypoint's score."""
    return torch.cat([kps, scores[:, None, None].expand(-1, kps.shape[1], 1).to(kps.dtype)], 2)


def _boxes(kps: torch.Tensor) -> torch.Tensor:
    return torch.cat([kps.amin(1), kps.amax(1)], 1)


def _box_areas(kps: torch.Tensor) -> torch.Tensor:
    wh = kps.amax(1) - kps.amin(1)
    return wh[:, 0] * wh[:, 1]
