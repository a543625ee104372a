"""All 2D geometry of bupose's input pipelines, in one place: 2x3 affine matrices and what they move.

Every pipeline (:mod:`bupose.data.pipelines`) and every decoder that maps predictions back to the image builds its
transforms from the functions here, so that image pixels, keypoints, boxes and masks always move by the *same*
matrix.

Conventions
-----------
* **Pixel centres are at integer coordinates.** Pixel ``(row i, column j)`` covers ``[j - 0.5, j + 0.5) x
  [i - 0.5, i + 0.5)``. An image of width ``W`` therefore spans ``x`` in ``[-0.5, W - 0.5]`` (its *area*) and its
  outermost pixel centres are ``0`` and ``W - 1``.
* **Sizes** are ``(width, height)`` tuples (an ``int`` means a square), as in OpenCV's ``dsize``; array shapes stay
  ``(H, W, ...)``.
* **Matrices** are ``float64`` arrays of shape ``(2, 3)``: ``M`` maps ``(x, y)`` to ``M @ (x, y, 1)``. With the
  convention above, ``cv2.warpAffine(src, M, size)`` (without ``WARP_INVERSE_MAP``) fills output pixel ``q`` with the
  source value at ``M^-1 q``, so the content at ``p`` lands exactly at ``M p``: points and pixels move together.
  :func:`warp_image` / :func:`warp_mask` are the only places that call ``cv2.warpAffine``.
* :func:`compose` takes matrices **in the order they are applied**: ``compose(a, b)`` first applies ``a``, then
  ``b`` (that is ``b @ a`` in homogeneous form).
* **Horizontal flip** of an image of width ``W`` maps ``x -> W - 1 - x`` (:func:`flip_matrix`); left/right keypoints
  are then swapped with a :class:`~bupose.data.keypoints.KeypointSpec`'s ``flip_index``. The flip helpers here
  (:func:`hflip_points`, :func:`hflip_keypoints`, :func:`hflip_boxes`, :func:`swap_keypoints`) are the one
  implementation of the mirror and the swap, for numpy arrays and torch tensors; test-time flipping (mirrored
  network inputs, flip-back of dense maps and of decoded poses) builds on them in :mod:`bupose.inference.flip`.
* **Inside**: a point is inside an image of size ``(W, H)`` when it lies in the image area, ``-0.5 <= x <= W - 0.5``
  and ``-0.5 <= y <= H - 0.5`` (:func:`inside`). Boxes are clipped to the same area (:func:`clip_boxes`). This closed
  interval maps onto itself under a flip.
* **Rotation** angles are in degrees; a positive angle turns the image content counter-clockwise as displayed
  (OpenCV's ``getRotationMatrix2D`` convention, y pointing down).
* **Keypoints** are ``(..., K, 3)`` arrays of ``x, y, v``; warping changes ``x, y`` and keeps ``v`` (optionally set
  to 0 for points that leave the output image). Coordinates of unlabelled points (``v == 0``) are warped like the
  others and carry no meaning.

Resize conventions (``mode``)
-----------------------------
``"area"``
    Scale by ``s`` about the pixel *edges*: ``x' = s (x + 0.5) - 0.5``. The image area ``[-0.5, W - 0.5]`` maps to
    ``[-0.5, sW - 0.5]``; this is what ``cv2.resize`` does. Used for letterbox / test resize and, as the default, for
    the input -> heatmap stride (``x_in = stride * x_out + (stride - 1) / 2``): a fully convolutional network is
    translation equivariant, so the input position of a heatmap pixel must be ``stride * x_out + constant`` whatever
    the input size, and this constant keeps flips consistent (a flip of the input is exactly a flip of the heatmap).
``"udp"``
    Unbiased Data Processing (Huang et al., "The Devil is in the Details: Delving into Unbiased Data Processing for
    Human Pose Estimation", CVPR 2020): distances are measured between outermost pixel *centres*, so a scale is
    ``(n_out - 1) / (n_in - 1)`` and the first and last pixel centres map onto the first and last pixel centres.
    Default for the square training crop (:func:`crop_matrix`), whose centre also maps exactly onto the output
    centre ``((w - 1) / 2, (h - 1) / 2)`` -- the half-pixel shift of the classic ``center -> size / 2`` crop of
    HigherHRNet / DEKR is what UDP removes.

The square crop follows the random affine augmentation of HigherHRNet (Cheng et al., CVPR 2020) and DEKR (Geng et
al., CVPR 2021); :func:`letterbox_matrix` follows the letterbox of YOLOv5 (Jocher et al., Ultralytics).
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import cv2
import numpy as np
import torch

SizeLike = Union[int, float, Sequence[float]]
MODES = ("area", "udp")
STRIDE_MODES = ("area", "udp", "corner")

__all__ = [
    "MODES", "as_matrix", "to_homogeneous", "identity", "compose", "invert", "translation_matrix", "scale_matrix",
    "rotation_matrix", "shear_matrix", "flip_matrix", "crop_matrix", "center_crop_matrix", "resize_matrix",
    "stride_matrix", "letterbox_matrix", "matrix_scale", "warp_points", "warp_keypoints", "warp_boxes", "inside",
    "clip_boxes", "warp_image", "warp_mask", "hflip_image", "hflip_points", "hflip_keypoints", "hflip_boxes",
    "swap_keypoints", "boxes_from_keypoints", "antialias_sigma",
]


# --------------------------------------------------------------------------------------------------------------
# matrices
# --------------------------------------------------------------------------------------------------------------
def _size2(size: SizeLike, what: str = "size") -> tuple[float, float]:
    if np.isscalar(size):
        return float(size), float(size)
    s = tuple(float(v) for v in size)
    if len(s) != 2:
        raise ValueError(f"{what} must be a number or a (width, height) pair, got {size!r}")
    return s


def _isize2(size: SizeLike, what: str = "size") -> tuple[int, int]:
    w, h = _size2(size, what)
    if w != int(w) or h != int(h) or w < 1 or h < 1:
        raise ValueError(f"{what} must be positive whole numbers of pixels, got {size!r}")
    return int(w), int(h)


def as_matrix(m) -> np.ndarray:
    """Return ``m`` as a new ``(2, 3)`` float64 matrix; a ``(3, 3)`` homogeneous matrix must have last row 0 0 1."""
    a = np.array(m, dtype=np.float64)
    if a.shape == (3, 3):
        if not np.allclose(a[2], (0.0, 0.0, 1.0)):
            raise ValueError(f"a 3x3 matrix must be affine (last row 0 0 1), got last row {a[2]}")
        a = a[:2].copy()
    if a.shape != (2, 3):
        raise ValueError(f"an affine matrix must have shape (2, 3), got {a.shape}")
    return a


def to_homogeneous(m) -> np.ndarray:
    """``(2, 3)`` -> ``(3, 3)`` with last row ``0 0 1``."""
    out = np.eye(3)
    out[:2] = as_matrix(m)
    return out


def identity() -> np.ndarray:
    return np.eye(2, 3)


def compose(*matrices) -> np.ndarray:
    """The single matrix that applies ``matrices`` **in the given order** (``compose(a, b)(p) == b(a(p))``)."""
    out = np.eye(3)
    for m in matrices:
        out = to_homogeneous(m) @ out
    return out[:2].copy()


def invert(m) -> np.ndarray:
    """Inverse of an affine matrix (float64; raises ``ValueError`` if singular)."""
    h = to_homogeneous(m)
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError(f"affine matrix is singular and cannot be inverted:\n{h[:2]}")
    return np.linalg.inv(h)[:2].copy()


def translation_matrix(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def scale_matrix(sx: float, sy: float | None = None, center=(0.0, 0.0)) -> np.ndarray:
    """Scale by ``(sx, sy)`` about ``center`` (which stays fixed)."""
    sy = sx if sy is None else sy
    cx, cy = center
    return np.array([[sx, 0.0, cx - sx * cx], [0.0, sy, cy - sy * cy]])


def rotation_matrix(degrees: float, center=(0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    """Rotate by ``degrees`` (positive: counter-clockwise as displayed) and scale by ``scale`` about ``center``."""
    a = math.radians(degrees)
    c, s = scale * math.cos(a), scale * math.sin(a)
    cx, cy = center
    return np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy]])


def shear_matrix(shear_x_deg: float, shear_y_deg: float = 0.0, center=(0.0, 0.0)) -> np.ndarray:
    """Shear about ``center``: ``x' = x + tan(shear_x) y``, ``y' = y + tan(shear_y) x`` (relative to the centre)."""
    tx, ty = math.tan(math.radians(shear_x_deg)), math.tan(math.radians(shear_y_deg))
    return compose(translation_matrix(-center[0], -center[1]), np.array([[1.0, tx, 0.0], [ty, 1.0, 0.0]]),
                   translation_matrix(center[0], center[1]))


def flip_matrix(width: int) -> np.ndarray:
    """Horizontal flip of an image of width ``width``: ``x -> width - 1 - x`` (an involution)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def _axis_scale(n_in: float, n_out: float, mode: str) -> float:
    if mode == "area":
        return n_out / n_in
    if mode == "udp":
        if n_in <= 1 or n_out <= 1:
            raise ValueError(f"mode 'udp' needs sizes above 1 pixel (got {n_in} -> {n_out})")
        return (n_out - 1.0) / (n_in - 1.0)
    raise ValueError(f"unknown resize mode {mode!r}; expected one of {MODES}")


def crop_matrix(center, size: SizeLike, output_size: SizeLike, rotation: float = 0.0, translate=(0.0, 0.0),
                mode: str = "udp") -> np.ndarray:
    """Affine crop as in HigherHRNet / DEKR training: a (rotated) ``size`` box of the source onto ``output_size``.

    The source point ``center`` maps onto the output centre ``((w_out - 1) / 2, (h_out - 1) / 2)``, the content is
    rotated by ``rotation`` degrees about it (positive: counter-clockwise as displayed), scaled so that the source
    extent ``size`` fills the output, then shifted by ``translate`` output pixels.

    Args:
        center: ``(x, y)`` in source pixels. The centre of a whole ``W x H`` image is ``((W - 1) / 2, (H - 1) / 2)``.
        size: source extent, a number (square) or ``(width, height)``, in source pixels; may be fractional.
        output_size: output image size, a number or ``(width, height)``.
        mode: ``"udp"`` (default; scale ``(out - 1) / (size - 1)``: with ``size = W`` the outermost pixel centres of
            the source map onto those of the output) or ``"area"`` (scale ``out / size``: the source area maps onto
            the output area). Either way the centre maps exactly onto the output centre.
    Returns:
        ``(2, 3)`` float64 matrix, source -> output.
    """
    sw, sh = _size2(size, "size")
    ow, oh = _size2(output_size, "output_size")
    sx, sy = _axis_scale(sw, ow, mode), _axis_scale(sh, oh, mode)
    cx, cy = center
    return compose(translation_matrix(-cx, -cy), rotation_matrix(rotation), scale_matrix(sx, sy),
                   translation_matrix((ow - 1.0) / 2.0 + translate[0], (oh - 1.0) / 2.0 + translate[1]))


def center_crop_matrix(center, src_width: float, output_size: SizeLike, rotation: float = 0.0,
                       inverse: bool = False) -> np.ndarray:
    """The classic top-down crop of SimpleBaseline / HRNet (Xiao et al., ECCV 2018; Sun et al., CVPR 2019), their
    ``get_affine_transform``: ``center`` maps onto ``(w_out / 2, h_out / 2)`` (not the pixel-centre middle
    ``(w_out - 1) / 2`` of :func:`crop_matrix`; UDP removes that half-pixel shift), the content is rotated by
    ``rotation`` degrees about it (positive: counter-clockwise as displayed, as :func:`rotation_matrix`) and scaled
    by ``w_out / src_width`` along both axes.

    Solved as the official code does, from three float32 point pairs with ``cv2.getAffineTransform``, so that crops
    and mapped-back keypoints agree with the official models' test path bit for bit.

    Args:
        center: ``(x, y)`` in source pixels. src_width: the source extent that fills the output width.
        output_size: ``(width, height)`` of the output (or a number for a square).
        inverse: return the output -> source matrix, solved from the same points (not inverted).
    Returns:
        ``(2, 3)`` float64 matrix, source -> output (output -> source with ``inverse``).
    """
    ow, oh = _size2(output_size, "output_size")
    c = np.asarray(center, dtype=np.float32).reshape(2)
    half = np.float32(src_width) * np.float32(-0.5)
    a = np.pi * rotation / 180
    sn, cs = float(np.sin(a)), float(np.cos(a))
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = c
    src[1] = c.astype(np.float64) + (-float(half) * sn, float(half) * cs)
    dst[0] = (ow * 0.5, oh * 0.5)
    dst[1] = (ow * 0.5, oh * 0.5 - ow * 0.5)
    for pts in (src, dst):  # the third point: the second turned by 90 degrees about the first, in float32
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    m = cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)
    return m.astype(np.float64)


def resize_matrix(src_size: SizeLike, dst_size: SizeLike, mode: str = "area") -> np.ndarray:
    """Matrix that resizes an image of ``src_size`` to ``dst_size`` (``(width, height)``), per axis.

    ``"area"``: ``x' = (x + 0.5) * w_dst / w_src - 0.5`` (the image areas coincide; ``cv2.resize``'s mapping).
    ``"udp"``: ``x' = x * (w_dst - 1) / (w_src - 1)`` (the outermost pixel centres coincide).
    """
    sw, sh = _size2(src_size, "src_size")
    dw, dh = _size2(dst_size, "dst_size")
    sx, sy = _axis_scale(sw, dw, mode), _axis_scale(sh, dh, mode)
    if mode == "area":
        return scale_matrix(sx, sy, center=(-0.5, -0.5))
    return scale_matrix(sx, sy)


def stride_matrix(stride: int, mode: str = "area", input_size: SizeLike | None = None) -> np.ndarray:
    """Network input -> output (heatmap) coordinates for an output stride (e.g. input 512 -> heatmap 128, stride 4).

    ``"area"`` (default): ``x_out = (x_in + 0.5) / stride - 0.5``, i.e. heatmap pixel ``h`` sits at input
    ``stride * h + (stride - 1) / 2``, the centre of the ``stride x stride`` input block it covers. Independent of
    the input size (matches a translation-equivariant network at any test size) and flip consistent.

    ``"udp"``: ``x_out = x_in * (n_in / stride - 1) / (n_in - 1)`` (UDP); needs ``input_size`` (``(width,
    height)``, each a multiple of ``stride``) because the factor depends on it.

    ``"corner"``: ``x_out = x_in / stride`` (heatmap pixel ``h`` sits at input ``stride * h``): the convention of
    HigherHRNet and DEKR, whose checkpoints were trained with it and whose test code multiplies by the stride.
    """
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if mode == "area":
        return scale_matrix(1.0 / stride, 1.0 / stride, center=(-0.5, -0.5))
    if mode == "corner":
        return scale_matrix(1.0 / stride, 1.0 / stride)
    if mode == "udp":
        if input_size is None:
            raise ValueError("stride_matrix(mode='udp') needs input_size=(width, height)")
        w, h = _isize2(input_size, "input_size")
        if w % stride or h % stride:
            raise ValueError(f"input_size {(w, h)} is not a multiple of stride {stride}")
        return resize_matrix((w, h), (w // stride, h // stride), mode="udp")
    raise ValueError(f"unknown stride mode {mode!r}; expected one of {STRIDE_MODES}")


def letterbox_matrix(src_size: SizeLike, input_size: SizeLike = 640, stride: int = 32, auto: bool = False,
                     scaleup: bool = True, center: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """YOLOv5-style letterbox: scale by one factor to fit ``input_size``, then pad (as a matrix).

    The image is scaled by ``r = min(w_in / W, h_in / H)`` (capped at 1 unless ``scaleup``) in the ``"area"``
    convention, and padded by a whole number of pixels: centred if ``center`` (the left / top pad is half the slack,
    rounded), else on the right / bottom only.

    Args:
        src_size: ``(W, H)`` of the image.
        input_size: target ``(width, height)`` or a number for a square; must be multiples of ``stride``.
        auto: pad only up to the next multiple of ``stride`` (the "minimum rectangle") instead of ``input_size``.
    Returns:
        ``(matrix, output_size)``: image -> letterboxed matrix, and the ``(width, height)`` of the padded image,
        always a multiple of ``stride``.
    """
    sw, sh = _size2(src_size, "src_size")
    iw, ih = _isize2(input_size, "input_size")
    if iw % stride or ih % stride:
        raise ValueError(f"letterbox input_size {(iw, ih)} must be a multiple of stride {stride}")
    r = min(iw / sw, ih / sh)
    if not scaleup:
        r = min(r, 1.0)
    cw, ch = sw * r, sh * r  # content extent in output pixels
    if auto:
        ow, oh = (int(math.ceil(round(cw, 6) / stride)) * stride, int(math.ceil(round(ch, 6) / stride)) * stride)
    else:
        ow, oh = iw, ih
    if center:
        left, top = math.floor((ow - cw) / 2.0 + 0.5), math.floor((oh - ch) / 2.0 + 0.5)
    else:
        left = top = 0
    m = compose(scale_matrix(r, r, center=(-0.5, -0.5)), translation_matrix(left, top))
    return m, (ow, oh)


def matrix_scale(m) -> float:
    """Isotropic scale factor of a matrix, ``sqrt(|det|)`` (areas scale by its square)."""
    a = as_matrix(m)
    return float(math.sqrt(abs(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0])))


# --------------------------------------------------------------------------------------------------------------
# points, keypoints, boxes
# --------------------------------------------------------------------------------------------------------------
def _float_like(a: np.ndarray) -> np.dtype:
    return a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)


def warp_points(points, m) -> np.ndarray:
    """Apply ``m`` to points ``(..., 2)``; returns a new array of the input's float dtype (float64 for ints)."""
    p = np.asarray(points)
    if p.shape[-1:] != (2,):
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    a = as_matrix(m)
    q = p.astype(np.float64) @ a[:, :2].T + a[:, 2]
    return q.astype(_float_like(p))


def inside(points, size: SizeLike) -> np.ndarray:
    """Boolean ``(...)``: which points ``(..., >=2)`` lie in the area of an image of ``size`` ``(width, height)``,
    ``-0.5 <= x <= W - 0.5`` and ``-0.5 <= y <= H - 0.5``."""
    w, h = _size2(size)
    p = np.asarray(points)
    x, y = p[..., 0], p[..., 1]
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def warp_keypoints(keypoints, m, size: SizeLike | None = None) -> np.ndarray:
    """Apply ``m`` to keypoints ``(..., K, 3)`` (``x, y, v``); ``v`` is kept, and set to 0 where the warped point
    falls outside an image of ``size`` ``(width, height)`` when that is given. Returns a new array."""
    k = np.asarray(keypoints)
    if k.ndim < 2 or k.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (..., K, 3), got {k.shape}")
    out = k.astype(_float_like(k), copy=True)
    out[..., :2] = warp_points(k[..., :2], m)
    if size is not None:
        out[..., 2] = np.where(inside(out, size), out[..., 2], 0)
    return out


def warp_boxes(boxes, m) -> np.ndarray:
    """Apply ``m`` to ``xyxy`` boxes ``(N, 4)``: the axis-aligned box enclosing the four warped corners."""
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) xyxy, got {b.shape}")
    corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
    w = warp_points(corners.astype(np.float64), m)
    out = np.concatenate([w.min(axis=1), w.max(axis=1)], axis=1) if len(b) else np.zeros((0, 4))
    return out.astype(_float_like(b))


def clip_boxes(boxes, size: SizeLike) -> np.ndarray:
    """Clip ``xyxy`` boxes ``(N, 4)`` to the area of an image of ``size``: ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``."""
    w, h = _size2(size)
    b = np.array(boxes, dtype=_float_like(np.asarray(boxes)), copy=True)
    b[:, [0, 2]] = b[:, [0, 2]].clip(-0.5, w - 0.5)
    b[:, [1, 3]] = b[:, [1, 3]].clip(-0.5, h - 0.5)
    return b


def boxes_from_keypoints(keypoints, margin: float = 0.0) -> np.ndarray:
    """``xyxy`` boxes ``(N, 4)`` enclosing each person's labelled keypoints (``v > 0``) of ``(N, K, 3)``.

    ``margin`` enlarges each box by that fraction of its width / height on every side. People with no labelled
    keypoint get an all-zero box.
    """
    k = np.asarray(keypoints, dtype=np.float64)
    if k.ndim != 3 or k.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (N, K, 3), got {k.shape}")
    lab = k[..., 2] > 0
    big = np.inf
    x0 = np.where(lab, k[..., 0], big).min(axis=1, initial=big)
    y0 = np.where(lab, k[..., 1], big).min(axis=1, initial=big)
    x1 = np.where(lab, k[..., 0], -big).max(axis=1, initial=-big)
    y1 = np.where(lab, k[..., 1], -big).max(axis=1, initial=-big)
    out = np.stack([x0, y0, x1, y1], axis=1)
    if margin:
        dw, dh = (x1 - x0) * margin, (y1 - y0) * margin
        out += np.stack([-dw, -dh, dw, dh], axis=1)
    out[~lab.any(axis=1)] = 0.0
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# images and masks
# --------------------------------------------------------------------------------------------------------------
def antialias_sigma(m) -> float:
    """Gaussian sigma (source pixels) that :func:`warp_image` blurs with before shrinking by ``m``: ``(1/s - 1) / 2``
    for an isotropic scale ``s < 1`` (as scikit-image does), 0 when ``s >= 2/3`` (sigma below 0.25)."""
    s = matrix_scale(m)
    if s <= 0:
        return 0.0
    sigma = (1.0 / s - 1.0) / 2.0
    return sigma if sigma >= 0.25 else 0.0


def warp_image(image: np.ndarray, m, size: SizeLike, interpolation: int = cv2.INTER_LINEAR,
               border_mode: int = cv2.BORDER_CONSTANT, border_value=0, antialias: bool = False) -> np.ndarray:
    """Warp an image ``(H, W[, C])`` by ``m`` into an output of ``size`` ``(width, height)``.

    Content at source point ``p`` lands at ``m @ p`` exactly (see the module conventions). With ``antialias``, the
    source is first blurred with a Gaussian of :func:`antialias_sigma` when ``m`` shrinks it noticeably; the blur is
    symmetric, so it does not move anything. Areas outside the source get ``border_value``.
    """
    ow, oh = _isize2(size, "size")
    a = as_matrix(m)
    src = image
    if antialias:
        sigma = antialias_sigma(a)
        if sigma > 0:
            src = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    if np.isscalar(border_value) and image.ndim == 3:
        border_value = (border_value,) * min(image.shape[2], 4)
    return cv2.warpAffine(src, a, (ow, oh), flags=interpolation, borderMode=border_mode, borderValue=border_value)


def warp_mask(mask: np.ndarray, m, size: SizeLike, border_value: float = 0, threshold: float | None = 0.5,
              interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Warp a single-channel mask ``(H, W)`` by ``m`` into ``size`` ``(width, height)``.

    The mask is interpolated as float32 (linear by default), then, if ``threshold`` is given, binarised (``>=
    threshold`` -> 1, else 0) and returned in the input's dtype (bool stays bool); with ``threshold=None`` the soft
    float32 result is returned. Areas outside the source get ``border_value``.
    """
    mk = np.asarray(mask)
    if mk.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {mk.shape}")
    ow, oh = _isize2(size, "size")
    w = cv2.warpAffine(mk.astype(np.float32), as_matrix(m), (ow, oh), flags=interpolation,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=float(border_value))
    if threshold is None:
        return w
    return (w >= threshold).astype(mk.dtype)


# --------------------------------------------------------------------------------------------------------------
# horizontal flip
# --------------------------------------------------------------------------------------------------------------
def _flip_index(flip_index) -> np.ndarray:
    fi = getattr(flip_index, "flip_index", flip_index)  # a KeypointSpec or a sequence
    return np.asarray(fi, dtype=np.int64)


def _float_copy(a):
    """A float copy of a numpy array or a torch tensor (integers become float64)."""
    if torch.is_tensor(a):
        return a.clone() if a.is_floating_point() else a.to(torch.float64)
    return np.array(a, dtype=_float_like(np.asarray(a)), copy=True)


def _mirror_axis(width: float, pixel_centre: float) -> float:
    """``c`` of the mirror ``x -> c - x`` of an image of ``width`` whose pixel 0 is centred at ``pixel_centre``."""
    return width - 1 + 2 * pixel_centre


def hflip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an image ``(H, W, ...)`` left-right (``x -> W - 1 - x``); returns a contiguous copy."""
    return np.ascontiguousarray(image[:, ::-1])


def hflip_points(points, width: int, pixel_centre: float = 0.0):
    """Mirror points ``(..., 2)`` (or ``(..., >=2)``; only ``x`` changes) in an image of ``width``.

    ``x -> W - 1 - x`` in bupose's convention (``pixel_centre=0``: pixel centres at integers). Coordinates whose
    pixel ``j`` is centred at ``j + pixel_centre`` mirror as ``x -> W - 1 + 2 pixel_centre - x``; e.g. ``0.5`` (pixel
    corners at integers, YOLO's decoded grid) gives ``x -> W - x``. Works on numpy arrays and torch tensors alike
    and returns a new float array / tensor of the same kind (integers become float64).
    """
    p = _float_copy(points)
    p[..., 0] = _mirror_axis(width, pixel_centre) - p[..., 0]
    return p


def swap_keypoints(keypoints, flip_index):
    """Reorder the keypoint axis ``(..., K, D)`` left <-> right: ``out[..., k, :] = in[..., flip_index[k], :]``.

    ``flip_index`` is a :class:`~bupose.data.keypoints.KeypointSpec` or its ``flip_index`` sequence. ``keypoints``
    is a numpy array or a torch tensor; returns a new one of the same kind.
    """
    fi = _flip_index(flip_index)
    shape = tuple(keypoints.shape) if torch.is_tensor(keypoints) else np.shape(keypoints)
    if len(shape) < 2 or shape[-2] != len(fi):
        raise ValueError(f"keypoints {shape} do not match a flip_index of {len(fi)} keypoints")
    if torch.is_tensor(keypoints):
        return keypoints[..., torch.as_tensor(fi, device=keypoints.device), :]
    return np.asarray(keypoints)[..., fi, :].copy()


def hflip_keypoints(keypoints, width: int, flip_index, pixel_centre: float = 0.0):
    """Mirror keypoints ``(..., K, D)`` (``D >= 2``; x first) in an image of ``width`` (:func:`hflip_points`) and
    swap left/right with ``flip_index`` (:func:`swap_keypoints`). Numpy arrays or torch tensors."""
    return swap_keypoints(hflip_points(keypoints, width, pixel_centre), flip_index)


def hflip_boxes(boxes, width: int, pixel_centre: float = 0.0):
    """Mirror ``xyxy`` boxes ``(N, 4)`` in an image of ``width``: ``x1' = W - 1 - x2``, ``x2' = W - 1 - x1`` (with
    ``pixel_centre`` as in :func:`hflip_points`). Numpy arrays or torch tensors."""
    b = boxes if torch.is_tensor(boxes) else np.asarray(boxes)
    out = _float_copy(b)
    c = _mirror_axis(width, pixel_centre)
    out[:, 0] = c - b[:, 2]
    out[:, 2] = c - b[:, 0]
    return out
