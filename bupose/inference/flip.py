"""Test-time horizontal flip, in one place: the mirrored network input, and the flip-back of what the network says
about it (dense maps, or decoded poses / points / boxes), for every method's decoder.

Conventions (those of :mod:`bupose.data.geometry`): pixel centres are at integer coordinates and a mirror of an
image of width ``W`` maps ``x -> W - 1 - x``. Column ``j`` of a mirrored tensor is column ``W - 1 - j`` of the
original, so mirroring is ``torch.flip(x, [-1])`` and is its own inverse. Left/right keypoints are swapped with a
``flip_index`` (a :class:`~bupose.data.keypoints.KeypointSpec` or its sequence): ``out[k] = in[flip_index[k]]``.

Two optional shifts reproduce official test paths:

* ``flip_input(x, shift=s)``: the mirrored input moved ``s`` pixels **left**, ``out[..., :-s] = mirrored[..., s:]``,
  its last ``s`` columns left as mirrored -- DEKR's ``tools/valid.py`` (Geng et al., "Bottom-Up Human Pose Estimation
  via Disentangled Keypoint Regression", CVPR 2021) with ``s = 3``;
* ``flip_back_maps(maps, flip_index, shift=s)``: the flipped-back maps moved ``s`` pixels **right**, ``out[..., s:]
  = back[..., :-s]``, its first ``s`` columns left as they were -- the top-down HRNet test's ``TEST.SHIFT_HEATMAP``
  (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019) with ``s = 1``.

1-D coordinate classifications (SimCC's x / y vectors, Li et al., ECCV 2022) flip back with
:func:`flip_back_vectors`, mmpose's ``flip_vectors``: the x bins reversed, no shift (bin ``i`` -> ``Wx - 1 - i``,
so with ``r`` bins per pixel a point at ``x`` comes back at ``x + (1 - 1 / r)`` px relative to the exact mirror
``W - 1 - x``; 0.5 px for ``r = 2``, as in mmpose's flip test).

Normalised coordinates of regression heads (RLE, Li et al., ICCV 2021) flip back with
:func:`flip_back_coordinates`, mmpose's ``flip_coordinates``: ``x -> 1 - x - 1 / W`` (the pixel mirror) and the
left / right keypoints swapped.

Per-instance results (keypoints, points, boxes) are mirrored by the helpers of :mod:`bupose.data.geometry`, the
single implementation, on numpy arrays or torch tensors. ``pixel_centre`` names where the coordinates put pixel 0's
centre when a decoder works in another grid: ``0`` (bupose) mirrors ``x -> W - 1 - x``, ``0.5`` (pixel corners at
integers, YOLO-Pose's decoded grid) mirrors ``x -> W - x``; both are the same mirror of the image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bupose.data import geometry as G

__all__ = ["flip_input", "flip_back_maps", "flip_back_vectors", "flip_back_coordinates", "pair_flip_index",
           "flip_back_offsets", "flip_back_poses", "flip_back_points", "flip_back_boxes"]


def _flip_w(a):
    """Mirror the last axis of a torch tensor or a numpy array (a new, contiguous one)."""
    return torch.flip(a, [-1]) if torch.is_tensor(a) else np.ascontiguousarray(a[..., ::-1])


def _index_list(flip_index) -> list[int]:
    return [int(i) for i in getattr(flip_index, "flip_index", flip_index)]  # a KeypointSpec or a sequence


def _check_shift(shift: int, width: int) -> int:
    if int(shift) != shift or not 0 <= shift < width:
        raise ValueError(f"shift must be a whole number of pixels in [0, {width}), got {shift!r}")
    return int(shift)


def flip_input(x: torch.Tensor, shift: int = 0) -> torch.Tensor:
    """The mirrored network input.

    Args:
        x: ``(B, C, H, W)`` input batch (not modified).
        shift: after mirroring, move the content this many pixels left: ``out[..., :W - shift] = mirrored[...,
            shift:]``; the last ``shift`` columns keep the mirrored values (DEKR's official flip test: 3).
    Returns:
        ``(B, C, H, W)``: column ``j`` holds the input's column ``W - 1 - (j + shift)`` (``W - 1 - j`` in the last
        ``shift`` columns).
    """
    out = torch.flip(x, [3])
    s = _check_shift(shift, x.shape[3])
    if s:
        out[..., :-s] = out[..., s:].clone()
    return out


def flip_back_maps(maps, flip_index: Sequence[int] | None = None, shift: int = 0):
    """Dense outputs of a mirrored input -> maps of the original input.

    Args:
        maps: ``(B, C, H, W)`` torch tensor or numpy array, the network's maps for a mirrored input (not modified).
        flip_index: ``(C,)`` channel permutation, ``out[:, c] = back[:, flip_index[c]]``: a keypoint layout's
            ``flip_index`` for ``(B, K, H, W)`` heatmaps; for more channels extend it (DEKR's heatmaps plus a centre
            channel: ``list(flip_index) + [K]``; interleaved x/y channel pairs: :func:`pair_flip_index`). ``None``:
            the channels stay.
        shift: move the flipped-back maps this many pixels right, ``out[..., shift:] = back[..., :-shift]``, the
            first ``shift`` columns kept as they are (the top-down HRNet ``TEST.SHIFT_HEATMAP``: 1).
    Returns:
        ``(B, C, H, W)`` of the same kind: ``out[:, c, :, j] = maps[:, flip_index[c], :, W - 1 - (j - shift)]`` for
        ``j >= shift``.

    Maps whose values are x displacements (offsets) also change sign under a mirror: see :func:`flip_back_offsets`.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must have shape (B, C, H, W), got {tuple(maps.shape)}")
    s = _check_shift(shift, maps.shape[3])
    out = _flip_w(maps)
    if flip_index is not None:
        fi = _index_list(flip_index)
        if len(fi) != maps.shape[1]:
            raise ValueError(f"flip_index has {len(fi)} entries for {maps.shape[1]} channels; extend it for extra "
                             f"channels (e.g. list(flip_index) + [K] for a centre channel)")
        out = out[:, torch.as_tensor(fi, device=out.device)] if torch.is_tensor(out) else out[:, fi]
    if s:
        out[..., s:] = out[..., :-s].clone() if torch.is_tensor(out) else out[..., :-s].copy()
    return out


def flip_back_vectors(simcc_x, simcc_y, flip_index: Sequence[int]):
    """SimCC vectors of a mirrored input -> those of the original input (mmpose's ``flip_vectors``).

    Args:
        simcc_x: ``(B, K, Wx)`` torch tensor or numpy array, x-bin vectors for a mirrored input (not modified).
        simcc_y: ``(B, K, Wy)`` y-bin vectors (not modified).
        flip_index: the keypoint layout's ``(K,)`` flip index (or a KeypointSpec).
    Returns:
        ``(x, y)`` new arrays / tensors of the same kind: ``x[:, k, i] = simcc_x[:, flip_index[k], Wx - 1 - i]``,
        ``y[:, k] = simcc_y[:, flip_index[k]]`` (no shift; see the module docstring).
    """
    if simcc_x.ndim != 3 or simcc_y.ndim != 3 or simcc_x.shape[:2] != simcc_y.shape[:2]:
        raise ValueError(f"simcc_x / simcc_y must have shapes (B, K, Wx) / (B, K, Wy), got {tuple(simcc_x.shape)} "
                         f"and {tuple(simcc_y.shape)}")
    fi = _index_list(flip_index)
    if len(fi) != simcc_x.shape[1]:
        raise ValueError(f"flip_index has {len(fi)} entries for {simcc_x.shape[1]} keypoints")
    if torch.is_tensor(simcc_x):
        index = torch.as_tensor(fi, device=simcc_x.device)
        return _flip_w(simcc_x[:, index]), simcc_y[:, torch.as_tensor(fi, device=simcc_y.device)].clone()
    return _flip_w(simcc_x[:, fi]), simcc_y[:, fi].copy()


def flip_back_coordinates(coords, flip_index: Sequence[int], input_width: int | None = None):
    """Normalised coordinates of a mirrored input -> those of the original input (mmpose's ``flip_coordinates``,
    for regression heads such as RLE: Li et al., ICCV 2021).

    Args:
        coords: ``(B, K, D)`` torch tensor or numpy array (D >= 2: x, y normalised to the input crop, then any
            per-keypoint values such as RLE's sigma, which are only swapped); not modified.
        flip_index: the keypoint layout's ``(K,)`` flip index (or a KeypointSpec).
        input_width: the crop width ``W`` in pixels: ``x -> 1 - x - 1 / W``, the exact mirror of pixel ``i`` to
            ``W - 1 - i`` (mmpose's ``shift_coords=True``, its RLE test); None: ``x -> 1 - x``.
    Returns:
        A new array / tensor of the same kind: ``out[:, k] = coords[:, flip_index[k]]`` with x mirrored. Applying it
        twice gives ``coords`` back.
    """
    if coords.ndim != 3 or coords.shape[-1] < 2:
        raise ValueError(f"coords must have shape (B, K, D >= 2), got {tuple(coords.shape)}")
    fi = _index_list(flip_index)
    if len(fi) != coords.shape[1]:
        raise ValueError(f"flip_index has {len(fi)} entries for {coords.shape[1]} keypoints")
    shift = 0.0 if input_width is None else 1.0 / float(input_width)
    if torch.is_tensor(coords):
        out = coords[:, torch.as_tensor(fi, device=coords.device)].clone()
    else:
        out = np.array(coords[:, fi], copy=True)
    out[..., 0] = 1.0 - out[..., 0] - shift
    return out


def pair_flip_index(flip_index: Sequence[int]) -> list[int]:
    """The channel flip index of maps with an ``(x, y)`` channel pair per keypoint, ``(x_0, y_0, x_1, y_1, ...)``:
    ``[2 f_0, 2 f_0 + 1, 2 f_1, 2 f_1 + 1, ...]`` for ``flip_index = (f_0, f_1, ...)``."""
    return [c for f in _index_list(flip_index) for c in (2 * f, 2 * f + 1)]


def flip_back_offsets(offsets, flip_index: Sequence[int], shift: int = 0):
    """Displacement maps of a mirrored input -> those of the original input.

    Args:
        offsets: ``(B, 2K, H, W)`` torch tensor or numpy array, per keypoint an ``(dx, dy)`` channel pair
            (``x_0, y_0, x_1, y_1, ...``) of displacements in pixels, for a mirrored input (not modified).
        flip_index: the keypoint layout's ``(K,)`` flip index. shift: as in :func:`flip_back_maps`.
    Returns:
        ``(B, 2K, H, W)``: un-mirrored along ``W``, keypoint pairs swapped, every ``dx`` negated (a mirror reverses
        x displacements; ``dy`` stays).
    """
    out = flip_back_maps(offsets, pair_flip_index(flip_index), shift)
    out[:, 0::2] = -out[:, 0::2]
    return out


def flip_back_poses(keypoints, width: int, flip_index: Sequence[int] | None, pixel_centre: float = 0.0):
    """Poses decoded from a mirrored input -> poses of the original input.

    Args:
        keypoints: ``(..., K, D)``, ``D >= 2`` (x, y, then anything, e.g. scores, which stay), numpy or torch, in
            pixels of the mirrored input of ``width`` (not modified).
        flip_index: the keypoint layout's ``(K,)`` flip index (or a KeypointSpec); ``None`` only mirrors.
        pixel_centre: where the coordinates centre pixel 0: ``0`` (bupose: ``x -> W - 1 - x``) or ``0.5`` (pixel
            corners at integers: ``x -> W - x``).
    Returns:
        A new ``(..., K, D)`` float array / tensor of the same kind: mirrored, and left/right swapped.
    """
    if flip_index is None:
        return G.hflip_points(keypoints, width, pixel_centre)
    return G.hflip_keypoints(keypoints, width, flip_index, pixel_centre)


def flip_back_points(points, width: int, pixel_centre: float = 0.0):
    """Points ``(..., >=2)`` (e.g. person centres ``(N, 2)``) of a mirrored input of ``width`` -> the original
    input's: ``x -> W - 1 + 2 pixel_centre - x``. Numpy or torch; returns a new float array / tensor."""
    return G.hflip_points(points, width, pixel_centre)


def flip_back_boxes(boxes, width: int, pixel_centre: float = 0.0):
    """``xyxy`` boxes ``(N, 4)`` of a mirrored input of ``width`` -> the original input's (``x1`` and ``x2`` mirrored
    and exchanged, so ``x1 <= x2`` still). Numpy or torch; returns a new float array / tensor."""
    return G.hflip_boxes(boxes, width, pixel_centre)
