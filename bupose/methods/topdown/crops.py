"""Person box -> crop: the box's centre and extent, the affine crop (standard or UDP) and the map back.

The standard crop is that of SimpleBaseline / HRNet (Xiao et al., "Simple Baselines for Human Pose Estimation and
Tracking", ECCV 2018; Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR
2019), reproduced with the official numerics so that results match the official test path:

* a box ``[x, y, w, h]`` becomes a centre ``(x + w / 2, y + h / 2)`` and an extent widened or heightened to the
  network input's aspect ratio (w / h of ``MODEL.IMAGE_SIZE``), times 1.25 (``box_to_center_scale``; the official
  ``_box2cs`` stores the extent in units of ``pixel_std = 200`` as float32, and the extent here is exactly that
  float32 value times 200);
* the crop maps the centre onto ``(w_in / 2, h_in / 2)`` and scales by ``w_in / extent_w`` along both axes
  (:func:`bupose.data.geometry.center_crop_matrix`, the official ``get_affine_transform``); heatmap pixels map back
  to the image by the same construction at the heatmap size (the official ``transform_preds``).

The UDP crop (Huang et al., "The Devil is in the Details: Delving into Unbiased Data Processing for Human Pose
Estimation", CVPR 2020; mmpose's ``get_udp_warp_matrix``) maps the centre onto ``((w_in - 1) / 2, (h_in - 1) / 2)``
and scales by ``(w_in - 1) / extent_w`` and ``(h_in - 1) / extent_h``.

Coordinates are image pixels with pixel centres at integers (:mod:`bupose.data.geometry`); boxes are ``[x, y, w, h]``
(COCO). Sizes are ``(width, height)``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bupose.data import geometry as G
from bupose.data.pipelines import to_tensor

#: the official ``pixel_std``: box extents are stored as multiples of it
PIXEL_STD = 200.0
#: the official box enlargement before the crop
PADDING = 1.25


def clean_boxes(boxes_xywh, image_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The official ground-truth box clean-up (HRNet's ``_load_coco_keypoint_annotation_kernal``), vectorised.

    Each box is clipped to the image as ``x1 = max(0, x)``, ``x2 = min(W - 1, x1 + max(0, w - 1))`` (and the same in
    y) and becomes ``[x1, y1, x2 - x1, y2 - y1]``; it is valid when ``x2 >= x1`` and ``y2 >= y1``.

    Args:
        boxes_xywh: ``(N, 4)`` boxes. image_size: ``(width, height)``.
    Returns:
        ``(boxes (N, 4) float64, valid (N,) bool)``.
    """
    b = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    width, height = image_size
    x1 = np.maximum(0.0, b[:, 0])
    y1 = np.maximum(0.0, b[:, 1])
    x2 = np.minimum(width - 1, x1 + np.maximum(0.0, b[:, 2] - 1))
    y2 = np.minimum(height - 1, y1 + np.maximum(0.0, b[:, 3] - 1))
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), (x2 >= x1) & (y2 >= y1)


def clean_box(box_xywh, image_size: Sequence[int]) -> np.ndarray | None:
    """:func:`clean_boxes` of one box: the cleaned ``(4,)`` box, or None when nothing of it is in the image."""
    boxes, valid = clean_boxes(box_xywh, image_size)
    return boxes[0] if valid[0] else None


def box_to_center_scale(boxes_xywh, *, aspect_ratio: float, padding: float = PADDING,
                        pixel_std: float = PIXEL_STD) -> tuple[np.ndarray, np.ndarray]:
    """Box centre and crop extent, as the official ``_box2cs``.

    The extent is widened (or heightened) to ``aspect_ratio`` (w / h of the network input), stored as float32
    multiples of ``pixel_std``, enlarged ``padding`` times in float32 and returned in pixels (times ``pixel_std``,
    in float32, as the official ``get_affine_transform`` computes it).

    Args:
        boxes_xywh: ``(4,)`` or ``(N, 4)`` boxes ``[x, y, w, h]``.
    Returns:
        ``(center, size)``: float32 ``(2,)`` / ``(N, 2)`` each; ``size`` is ``(width, height)`` in pixels.
    """
    b = np.asarray(boxes_xywh, np.float64)
    single = b.ndim == 1
    b = b.reshape(-1, 4)
    x, y, w, h = b.T
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=1).astype(np.float32)
    wide, tall = w > aspect_ratio * h, w < aspect_ratio * h
    w, h = np.where(tall, h * aspect_ratio, w), np.where(wide, w * 1.0 / aspect_ratio, h)
    scale = np.stack([w * 1.0 / pixel_std, h * 1.0 / pixel_std], axis=1).astype(np.float32)
    size = scale * np.float32(padding) * np.float32(pixel_std)
    return (center[0], size[0]) if single else (center, size)


def crop_matrix(center, size, output_size: Sequence[int], *, rotation: float = 0.0, udp: bool = False,
                inverse: bool = False) -> np.ndarray:
    """The ``(2, 3)`` image -> crop matrix of a box ``center`` / ``size`` (pixels, ``(width, height)``) onto
    ``output_size``; ``inverse`` gives crop -> image.

    Standard: :func:`bupose.data.geometry.center_crop_matrix` (the centre onto ``output_size / 2``, scale
    ``w_out / size_w`` along both axes; ``size_h`` is implied by the aspect ratio). UDP: the centre onto
    ``(output_size - 1) / 2``, scales ``(w_out - 1) / size_w`` and ``(h_out - 1) / size_h``. ``rotation`` (degrees,
    counter-clockwise as displayed) turns the content about the centre in both.
    """
    if not udp:
        return G.center_crop_matrix(center, np.float32(size[0]), output_size, rotation, inverse=inverse)
    ow, oh = output_size
    cx, cy = (float(v) for v in center)
    m = G.compose(G.translation_matrix(-cx, -cy), G.rotation_matrix(rotation),
                  G.scale_matrix((ow - 1.0) / float(size[0]), (oh - 1.0) / float(size[1])),
                  G.translation_matrix((ow - 1.0) / 2.0, (oh - 1.0) / 2.0))
    return G.invert(m) if inverse else m


def crop_images(image: np.ndarray, centers: np.ndarray, sizes: np.ndarray, input_size: Sequence[int], *,
                udp: bool = False) -> np.ndarray:
    """``(N, h, w, 3)`` uint8 crops of ``image`` ``(H, W, 3)`` (bilinear, zeros outside, as the official
    ``cv2.warpAffine`` call) for boxes ``centers`` / ``sizes`` ``(N, 2)``; ``input_size`` is ``(w, h)``."""
    w, h = (int(v) for v in input_size)
    out = np.zeros((len(centers), h, w, image.shape[2]), image.dtype)
    for i, (c, s) in enumerate(zip(centers, sizes)):
        out[i] = G.warp_image(image, crop_matrix(c, s, (w, h), udp=udp), (w, h))
    return out


def crop_batch(image_bgr: np.ndarray, centers: np.ndarray, sizes: np.ndarray, input_size: Sequence[int], *,
               udp: bool = False, color_rgb: bool = True) -> torch.Tensor:
    """The network input of all crops of one image: ``(N, 3, h, w)`` float32, ``/ 255`` then ImageNet mean / std
    (the official ``ToTensor`` + ``Normalize``). ``color_rgb``: channels in RGB order (``DATASET.COLOR_RGB``); else
    BGR, normalised with the same RGB-ordered mean / std, as the official code does."""
    crops = crop_images(image_bgr, centers, sizes, input_size, udp=udp)
    return to_tensor(crops if color_rgb else np.ascontiguousarray(crops[..., ::-1]))


def heatmap_to_image(points: np.ndarray, centers: np.ndarray, sizes: np.ndarray, heatmap_size: Sequence[int], *,
                     udp: bool = False) -> np.ndarray:
    """Heatmap pixels ``(N, K, 2)`` of each crop -> image pixels (float64).

    Standard: the official ``transform_preds``, the inverse crop matrix built at the heatmap size (so heatmap pixel
    ``W / 2`` is the box centre and ``W`` heatmap pixels span ``size_w``). UDP: heatmap pixel ``(W - 1) / 2`` is the
    centre and ``W - 1`` pixels span the extent (``x = k size_w / (W - 1) + c_x - size_w / 2``).
    """
    p = np.asarray(points, np.float64)
    out = np.empty_like(p)
    hw, hh = heatmap_size
    for i, (c, s) in enumerate(zip(centers, sizes)):
        if udp:
            out[i] = p[i] * (float(s[0]) / (hw - 1), float(s[1]) / (hh - 1)) + (c - s / 2.0)
        else:
            out[i] = G.warp_points(p[i], crop_matrix(c, s, heatmap_size, inverse=True))
    return out


def input_to_image(points: np.ndarray, centers: np.ndarray, sizes: np.ndarray,
                   input_size: Sequence[int]) -> np.ndarray:
    """A codec's keypoints ``(N, K, 2)`` (input-crop pixels, mmpose's convention: the input's width spans the crop
    extent) -> image pixels: ``x = x_in * size_w / w_in + c_x - size_w / 2`` (mmpose's ``TopdownPoseEstimator``).

    For the standard crop this is the crop's exact inverse; UDP codecs decode to ``k / (W - 1) * w_in`` so that the
    same formula is the UDP crop's inverse.
    """
    p = np.asarray(points, np.float64)
    c = np.asarray(centers, np.float64)[:, None, :]
    s = np.asarray(sizes, np.float64)[:, None, :]
    return p / np.asarray(input_size, np.float64) * s + c - s / 2.0
