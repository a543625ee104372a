"""The top-down test path, run by the shared engine :mod:`bupose.inference.tta`: the person boxes of an image come in
at ``begin``, every pass is one batch of crops, heatmaps are flipped back and averaged in crop space, and ``finish``
decodes, maps to the image, rescores and suppresses duplicates.

It reproduces the official HRNet / SimpleBaseline test (Sun et al., "Deep High-Resolution Representation Learning
for Human Pose Estimation", CVPR 2019; Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking",
ECCV 2018; ``lib/core/function.py:validate`` and ``lib/dataset/coco.py:evaluate``):

* crops: :mod:`bupose.methods.topdown.crops` (box -> centre / extent with the input's aspect ratio and 1.25
  padding, the affine crop, RGB, ImageNet normalisation), all crops of an image in one batch;
* flip test: the mirrored crops' heatmaps flipped back with left / right channels swapped, shifted one pixel right
  (``TEST.SHIFT_HEATMAP``), and averaged with the plain ones (:func:`bupose.inference.flip.flip_back_maps`);
* decoding: without a codec (``MODEL.CODEC`` empty: the official models), the official ``get_final_preds``: the
  arg-max (``(0, 0)`` where the maximum is <= 0), with ``TEST.POST_PROCESS`` a quarter-pixel step towards the
  higher neighbour where ``1 < x < W - 1`` and ``1 < y < H - 1``, mapped back by ``transform_preds``; with a codec
  (DARK, UDP) the codec's decode and mmpose's map back (:func:`~bupose.methods.topdown.crops.input_to_image`);
  keypoint scores are the heatmap maxima;
* rescoring: person score = box score x the mean of the keypoint scores above ``TEST.IN_VIS_THRE`` (0 when none);
* OKS NMS (or soft OKS NMS) at ``TEST.OKS_THRE`` over the image's people, the OKS scale being the mean of the two
  crop areas (:func:`bupose.inference.nms.oks_nms_mean_area`), with the keypoint layout's sigmas.

Multi-scale (not in the official code): scale ``s`` crops ``s`` times the box extent; each pass's heatmaps are
resampled into the scale-1 crop's heatmap frame (bilinear, zeros outside) and averaged there, so memory stays at
one pass's heatmaps.

SimCC (Li et al., "SimCC: a Simple Coordinate Classification Perspective for Human Pose Estimation", ECCV 2022;
a :class:`~bupose.codecs.SimCCLabel` codec, outputs ``simcc_x`` / ``simcc_y``) takes mmpose's test path: the mirrored
crops' vectors flipped back by :func:`bupose.inference.flip.flip_back_vectors` (x bins reversed, left / right
swapped, no shift) and averaged with the plain ones, the codec's ``decode_batch`` (arg-max bins, optional 1-D
DARK; scores: the smaller of the two maxima), mmpose's map back; rescoring and NMS as above. Multi-scale resamples
each pass's vectors into the scale-1 crop's bins (linear, the end values repeated outside: the vectors are logits).

RLE (Li et al., "Human Pose Regression with Residual Log-likelihood Estimation", ICCV 2021; a
:class:`~bupose.codecs.RegressionLabel` codec, output ``coords (N, K, 4)``: mu normalised to the crop, sigma) takes
mmpose's test path: the mirrored crops' coordinates flipped back by :func:`bupose.inference.flip.flip_back_coordinates`
(``x -> 1 - x - 1 / w``, mmpose's ``shift_coords``; left / right swapped) and averaged with the plain ones (mu and
sigma), the codec's ``decode_batch`` (input-crop pixels; scores ``1 - mean sigma``), the crop's map back; rescoring
and NMS as above. Multi-scale maps each pass's normalised mu into the scale-1 crop (``(x - 0.5) * s + 0.5``) and
averages mu and sigma.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bupose.errors import DataError
from bupose.inference import flip
from bupose.inference.nms import oks_nms_mean_area, soft_oks_nms_mean_area
from bupose.inference.people import People
from bupose.inference.tta import DEFAULT_MAX_INPUT_PIXELS
from bupose.methods.topdown import crops
from bupose.methods.topdown.boxes import PersonBoxes, as_person_boxes


@dataclass
class TopDownView:
    """One pass over an image's people: ``tensor`` ``(N, 3, h, w)`` crops, their ``centers`` / ``sizes`` ``(N, 2)``
    (the box extent times ``scale``)."""

    tensor: torch.Tensor
    centers: np.ndarray
    sizes: np.ndarray
    scale: float


def heatmap_maxima(heatmaps: np.ndarray, post_process: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The official ``get_max_preds`` (+ the ``POST_PROCESS`` step of ``get_final_preds``), vectorised.

    Args:
        heatmaps: ``(N, K, H, W)`` float32.
    Returns:
        ``(locations (N, K, 2) float32 heatmap pixels, maxima (N, K) float32)``; a map whose maximum is <= 0 gives
        ``(0, 0)``. With ``post_process`` each location moves 0.25 px along x and along y towards the higher
        neighbour when ``1 < x < W - 1`` and ``1 < y < H - 1``.
    """
    hm = np.asarray(heatmaps, np.float32)
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)
    index = np.argmax(flat, axis=2)
    maxima = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    idx = index.astype(np.float32)
    locs = np.stack([idx % w, np.floor(idx / w)], axis=2) * (maxima > 0)[..., None].astype(np.float32)
    if post_process and n and k:
        px, py = np.floor(locs[..., 0] + 0.5).astype(int), np.floor(locs[..., 1] + 0.5).astype(int)
        ok = (1 < px) & (px < w - 1) & (1 < py) & (py < h - 1)
        bi, ki = np.indices((n, k))
        cx, cy = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
        diff = np.stack([hm[bi, ki, cy, cx + 1] - hm[bi, ki, cy, cx - 1],
                         hm[bi, ki, cy + 1, cx] - hm[bi, ki, cy - 1, cx]], axis=2)
        locs = locs + np.where(ok[..., None], np.sign(diff) * np.float32(0.25), np.float32(0))
    return locs.astype(np.float32), maxima


def to_scale_one_frame(heatmaps: torch.Tensor, scale: float, udp: bool = False) -> torch.Tensor:
    """Heatmaps ``(N, K, H, W)`` of crops ``scale`` times the box extent, resampled into the heatmap frame of the
    scale-1 crops (same centre): frame pixel ``k`` reads the map at ``(k - c) / scale + c``, ``c`` the centre pixel
    (``W / 2``; UDP ``(W - 1) / 2``); bilinear, zeros outside."""
    if scale == 1.0:
        return heatmaps
    n, _, h, w = heatmaps.shape
    dev, dt = heatmaps.device, heatmaps.dtype
    ccx, ccy = ((w - 1) / 2.0, (h - 1) / 2.0) if udp else (w / 2.0, h / 2.0)
    kx = (torch.arange(w, device=dev, dtype=dt) - ccx) / scale + ccx
    ky = (torch.arange(h, device=dev, dtype=dt) - ccy) / scale + ccy
    gy, gx = torch.meshgrid(2 * ky / (h - 1) - 1, 2 * kx / (w - 1) - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=2)[None].expand(n, h, w, 2)
    return F.grid_sample(heatmaps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def vectors_to_scale_one_frame(vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """SimCC vectors ``(N, K, W)`` of crops ``scale`` times the box extent, resampled into the bins of the scale-1
    crops (same centre): bin ``k`` reads the vector at ``(k - W / 2) / scale + W / 2`` (linear interpolation, the
    end values outside, since the vectors are unbounded logits)."""
    if scale == 1.0:
        return vectors
    w = vectors.shape[-1]
    pos = (torch.arange(w, device=vectors.device, dtype=vectors.dtype) - w / 2.0) / scale + w / 2.0
    pos = pos.clamp(0, w - 1)
    lo = pos.floor().long().clamp(max=w - 1)
    hi = (lo + 1).clamp(max=w - 1)
    t = pos - lo.to(pos.dtype)
    return vectors[..., lo] * (1 - t) + vectors[..., hi] * t


def coords_to_scale_one_frame(coords: torch.Tensor, scale: float) -> torch.Tensor:
    """Regression outputs ``(N, K, D)`` (x, y normalised to crops ``scale`` times the box extent, then sigma) in the
    scale-1 crops' normalised units (same centre): ``x' = (x - 0.5) * scale + 0.5``, same for y; the other columns
    (sigma, a confidence) as they are."""
    if scale == 1.0:
        return coords
    out = coords.clone()
    out[..., :2] = (coords[..., :2] - 0.5) * scale + 0.5
    return out


class TopDownDecoder:
    """Top-down heatmap outputs of an image's person crops -> people (see the module docstring).

    Args:
        flip_index: the keypoint layout's flip index (K). sigmas: its OKS sigmas (K).
        input_size: crop (network input) size ``(w, h)``. heatmap_size: ``(W, H)``.
        codec: a heatmap codec (``decode_batch(heatmaps (N, K, H, W)) -> (keypoints (N, K, 2) input-crop pixels,
            scores (N, K))``) used with ``post_process``; None: the official HRNet decoding. A
            :class:`~bupose.codecs.SimCCLabel` switches to the SimCC path (``simcc_x`` / ``simcc_y`` outputs; always
            decoded by the codec); a :class:`~bupose.codecs.RegressionLabel` to RLE's (``coords`` output).
        udp: UDP crops (with a UDP codec).
        post_process: refine the maxima (the official quarter step, or the codec's decode); False: plain arg-max.
        shift_heatmap: shift the flipped-back heatmaps one pixel right (official; not for UDP).
        in_vis_thre: keypoint scores above this enter the person score. oks_thre: OKS NMS threshold.
        soft_nms: soft OKS NMS (the official: at most 20 people per image) instead of OKS NMS.
        color_rgb: the network takes RGB crops. padding: box enlargement (1.25).
        output_key: the model output holding the heatmaps (the model may also return the tensor itself).
        max_input_pixels: the engine runs each pass's crops in chunks of at most this many input pixels
            (``TEST.MAX_INPUT_PIXELS``; 2^23: 170 crops of 256 x 192), so many boxes do not blow up the forward pass.

    The engine calls ``begin(image, scales, boxes=...)`` with the image's :class:`~bupose.methods.topdown.boxes.
    PersonBoxes` (or an ``(xywh, scores)`` pair); the boxes are kept on the decoder until the next ``begin``, so one
    decoder serves one image at a time.
    """

    #: the engine / predictor must pass person boxes to :meth:`begin`
    needs_boxes = True

    def __init__(self, *, flip_index: Sequence[int], sigmas: Sequence[float], input_size: Sequence[int],
                 heatmap_size: Sequence[int], codec=None, udp: bool = False, post_process: bool = True,
                 shift_heatmap: bool = True, in_vis_thre: float = 0.2, oks_thre: float = 0.9, soft_nms: bool = False,
                 color_rgb: bool = True, padding: float = crops.PADDING, output_key: str = "heatmaps",
                 max_input_pixels: int = DEFAULT_MAX_INPUT_PIXELS):
        self.flip_index = [int(i) for i in flip_index]
        self.num_joints = len(self.flip_index)
        self.sigmas = torch.as_tensor(np.asarray(sigmas, np.float64))
        if len(self.sigmas) != self.num_joints:
            raise ValueError(f"TopDownDecoder: {len(self.sigmas)} sigmas for {self.num_joints} keypoints")
        self.input_size = tuple(int(v) for v in input_size)
        self.heatmap_size = tuple(int(v) for v in heatmap_size)
        self.aspect_ratio = self.input_size[0] * 1.0 / self.input_size[1]
        self.codec, self.udp, self.post_process = codec, bool(udp), bool(post_process)
        self.shift = 1 if shift_heatmap else 0
        self.in_vis_thre, self.oks_thre, self.soft_nms = in_vis_thre, oks_thre, bool(soft_nms)
        self.color_rgb, self.padding, self.output_key = bool(color_rgb), padding, output_key
        self.max_input_pixels = int(max_input_pixels)
        self.simcc = type(codec).__name__ == "SimCCLabel"
        self.regression = type(codec).__name__ == "RegressionLabel"
        self._people: tuple[PersonBoxes, np.ndarray, np.ndarray] | None = None

    # -- the engine's contract ----------------------------------------------------------------------------------
    def begin(self, image: np.ndarray, scales: Sequence[float], boxes=None) -> dict:
        if boxes is None:
            raise DataError("TopDownDecoder.begin: a top-down model needs the image's person boxes (boxes=PersonBoxes "
                            "or (xywh (N, 4), scores (N,)))")
        boxes = as_person_boxes(boxes, "TopDownDecoder.begin boxes")
        centers, sizes = crops.box_to_center_scale(boxes.xywh, aspect_ratio=self.aspect_ratio, padding=self.padding)
        self._people = (boxes, centers, sizes)
        return {"scales": list(scales), "sum": None, "passes": 0}

    def prepare(self, image: np.ndarray, scale: float) -> TopDownView:
        if self._people is None:
            raise RuntimeError("TopDownDecoder.prepare before begin")
        _, centers, sizes = self._people
        sizes = sizes * np.float32(scale) if scale != 1.0 else sizes
        tensor = crops.crop_batch(image, centers, sizes, self.input_size, udp=self.udp, color_rgb=self.color_rgb)
        return TopDownView(tensor, centers, sizes, float(scale))

    def flip_input(self, x: torch.Tensor) -> torch.Tensor:
        return flip.flip_input(x)

    def add_scale(self, state: dict, outputs, flipped, view: TopDownView, scale: float) -> None:
        if self.simcc:
            return self._add_simcc(state, outputs, flipped, scale)
        if self.regression:
            return self._add_coords(state, outputs, flipped, scale)
        heatmaps = self._heatmaps(outputs).float()
        if flipped is not None:
            back = flip.flip_back_maps(self._heatmaps(flipped).float(), self.flip_index, shift=self.shift)
            heatmaps = (heatmaps + back) * 0.5
        heatmaps = to_scale_one_frame(heatmaps, scale, self.udp)
        state["sum"] = heatmaps if state["sum"] is None else state["sum"] + heatmaps
        state["passes"] += 1

    def finish(self, state: dict) -> People:
        boxes, centers, sizes = self._people
        if state["sum"] is None or len(boxes.xywh) == 0:
            return People.empty(self.num_joints)
        if self.regression:
            coords = (state["sum"] / state["passes"]).cpu().numpy().astype(np.float32, copy=False)
            locs, maxima = self.codec.decode_batch(coords)
            return self._people_of(locs, maxima, boxes, centers, sizes)
        if self.simcc:
            x, y = (v / state["passes"] for v in state["sum"])
            locs, maxima = self.codec.decode_batch((x.cpu().numpy().astype(np.float32, copy=False),
                                                    y.cpu().numpy().astype(np.float32, copy=False)))
            if isinstance(maxima, tuple):  # decode_visibility: (scores, visibility)
                maxima = maxima[0]
            return self._people_of(locs, maxima, boxes, centers, sizes)
        heatmaps = (state["sum"] / state["passes"]).cpu().numpy().astype(np.float32, copy=False)
        if self.codec is not None and self.post_process:
            decode = getattr(self.codec, "decode_batch", None)
            if decode is not None:
                locs, maxima = decode(heatmaps)
            else:
                pairs = [self.codec.decode(hm) for hm in heatmaps]
                locs, maxima = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
            xy = crops.input_to_image(locs, centers, sizes, self.input_size)
        else:
            locs, maxima = heatmap_maxima(heatmaps, self.post_process and self.codec is None)
            xy = crops.heatmap_to_image(locs, centers, sizes, self.heatmap_size, udp=self.udp)
        return self._finish_people(xy, maxima, boxes, sizes)

    def _people_of(self, locs, maxima, boxes, centers, sizes) -> People:
        return self._finish_people(crops.input_to_image(locs, centers, sizes, self.input_size), maxima, boxes, sizes)

    def _finish_people(self, xy, maxima, boxes, sizes) -> People:
        """Image keypoints ``(N, K, 2)`` and keypoint scores ``(N, K)`` -> rescored people after NMS."""
        maxima = np.asarray(maxima, np.float64)
        poses = np.concatenate([xy, maxima[..., None]], axis=2)
        scores = boxes.scores * self.keypoint_score(maxima)
        keep = self._nms(poses, scores, sizes).numpy()
        return People(poses[keep], scores[keep], detection_boxes=boxes.xywh[keep])

    # -- pieces ---------------------------------------------------------------------------------------------------
    def keypoint_score(self, maxima: np.ndarray) -> np.ndarray:
        """``(N,)``: the mean of each person's keypoint scores ``(N, K)`` above ``in_vis_thre`` (0 when none)."""
        valid = maxima > self.in_vis_thre
        n = valid.sum(1)
        return np.where(n > 0, (maxima * valid).sum(1) / np.maximum(n, 1), 0.0)

    def _nms(self, poses: np.ndarray, scores: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
        areas = torch.from_numpy((sizes[:, 0] * sizes[:, 1]).astype(np.float64))  # float32 product, as officially
        nms = soft_oks_nms_mean_area if self.soft_nms else oks_nms_mean_area
        return nms(torch.from_numpy(poses), torch.from_numpy(scores), areas, self.sigmas, self.oks_thre)

    def _add_simcc(self, state: dict, outputs, flipped, scale: float) -> None:
        x, y = self._vectors(outputs)
        if flipped is not None:
            fx, fy = flip.flip_back_vectors(*self._vectors(flipped), self.flip_index)
            x, y = (x + fx) * 0.5, (y + fy) * 0.5
        x, y = vectors_to_scale_one_frame(x, scale), vectors_to_scale_one_frame(y, scale)
        state["sum"] = (x, y) if state["sum"] is None else (state["sum"][0] + x, state["sum"][1] + y)
        state["passes"] += 1

    def _add_coords(self, state: dict, outputs, flipped, scale: float) -> None:
        coords = self._coords(outputs)
        if flipped is not None:
            back = flip.flip_back_coordinates(self._coords(flipped), self.flip_index, input_width=self.input_size[0])
            coords = (coords + back) * 0.5
        coords = coords_to_scale_one_frame(coords, scale)
        state["sum"] = coords if state["sum"] is None else state["sum"] + coords
        state["passes"] += 1

    @staticmethod
    def _coords(outputs) -> torch.Tensor:
        coords = outputs["coords"] if isinstance(outputs, dict) else outputs[0] if isinstance(
            outputs, (list, tuple)) else outputs
        return coords.float()

    @staticmethod
    def _vectors(outputs) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(outputs, dict):
            return outputs["simcc_x"].float(), outputs["simcc_y"].float()
        return outputs[0].float(), outputs[1].float()

    def _heatmaps(self, outputs) -> torch.Tensor:
        if isinstance(outputs, dict):
            return outputs[self.output_key]
        if isinstance(outputs, (list, tuple)):
            return outputs[-1]
        return outputs


def build_decoder(cfg, spec, codec) -> TopDownDecoder:
    """The config's ``TEST.*`` keys mapped onto :class:`TopDownDecoder`.

    ``MODEL.CODEC`` empty (the official HRNet / SimpleBaseline models): the official decoding, whatever ``codec``
    (the default MSRA codec) is; otherwise ``codec`` decodes (DARK, UDP), and a ``UDPHeatmap`` codec selects UDP
    crops without the flip shift (its flip is exact, as mmpose's UDP configs set ``shift_heatmap=False``).
    Sizes come from the codec when given, else ``MODEL.IMAGE_SIZE`` / ``MODEL.HEATMAP_SIZE``.
    """
    m, t = cfg.MODEL, cfg.TEST
    udp = codec is not None and type(codec).__name__ == "UDPHeatmap"
    input_size = tuple(getattr(codec, "input_size", None) or m.IMAGE_SIZE)
    heatmap_size = tuple(getattr(codec, "heatmap_size", None) or m.HEATMAP_SIZE)
    return TopDownDecoder(flip_index=spec.flip_index, sigmas=spec.sigmas, input_size=input_size,
                          heatmap_size=heatmap_size, codec=codec if m.CODEC else None, udp=udp,
                          post_process=t.POST_PROCESS, shift_heatmap=t.SHIFT_HEATMAP and not udp,
                          in_vis_thre=t.IN_VIS_THRE, oks_thre=t.OKS_THRE, soft_nms=t.SOFT_NMS,
                          color_rgb=cfg.DATASET.COLOR_RGB, max_input_pixels=t.MAX_INPUT_PIXELS)
