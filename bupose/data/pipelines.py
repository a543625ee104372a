"""Input pipelines: from a :class:`~bupose.data.sample.Sample` to what a network and its losses consume.

All geometry comes from :mod:`bupose.data.geometry` (see its conventions: pixel centres at integer coordinates,
``(width, height)`` sizes, matrices applied in order by ``compose``). Every pipeline builds one 2x3 matrix per
source image and moves the image (one ``cv2.warpAffine``, one interpolation), its mask, its keypoints and its boxes
by that same matrix, so they stay aligned exactly.

* :class:`BottomUpAffine` -- the random square affine crop of bottom-up training (HigherHRNet, Cheng et al., CVPR
  2020; DEKR, Geng et al., CVPR 2021) with the unbiased (UDP, Huang et al., CVPR 2020) crop matrix, and its
  deterministic validation mode.
* :func:`letterbox`, :class:`Letterbox` -- YOLOv5-style letterbox (Jocher et al., Ultralytics) for one-stage
  methods; :class:`LetterboxTrain` -- YOLO-style training input: 4-image mosaic, random affine, flip.
* :class:`TestResize` -- test-time resize by the short side (multi-scale testing) with an exact inverse;
  :func:`to_image_coords` maps network-input or heatmap coordinates back to the image.
* :class:`Photometric` -- colour / blur / noise augmentation through albumentations, image only, seeded.
* :class:`HSV` -- YOLO-style random hue / saturation / value gains through lookup tables, image only, seeded.
* :func:`to_tensor` / :func:`denormalize` -- BGR uint8 <-> ImageNet-normalised RGB float tensors.

Masks: pipelines return ``mask`` as float32 **loss weights: 1 = use the pixel, 0 = ignore it** (the complement of
``Sample.ignore_mask``, where 1 means ignore).
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch

from bupose.data import geometry as G
from bupose.data.keypoints import KeypointSpec
from bupose.data.sample import Sample
from bupose.errors import ConfigError, DataError

__all__ = ["BottomUpAffine", "Letterbox", "LetterboxTrain", "TestResize", "Resized", "letterbox",
           "to_image_coords", "Photometric", "HSV", "to_tensor", "denormalize", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)  # RGB


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------
def _rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)  # an int seed


def _check_image(image, where: str) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise DataError(f"{where}: image must be a (H, W, 3) uint8 BGR array, got shape {img.shape} dtype "
                        f"{img.dtype}")
    return img


def _check_sample(sample: Sample, spec: KeypointSpec | None, where: str) -> None:
    if not isinstance(sample, Sample):
        raise DataError(f"{where}: expected a bupose Sample, got {type(sample).__name__}")
    name = f"{where} (image_id {sample.image_id}, {sample.file_name or 'no file name'})"
    img = _check_image(sample.image, name)
    shape = np.shape(sample.keypoints)
    n = shape[0] if len(shape) == 3 else 0
    k = spec.num_keypoints if spec is not None else shape[1] if len(shape) == 3 else 0
    if len(shape) != 3 or shape[1:] != (k, 3):
        raise DataError(f"{name}: keypoints must have shape (N, {k}, 3) for layout "
                        f"{spec.name if spec else '?'!r}, got {np.shape(sample.keypoints)}")
    if np.shape(sample.boxes) != (n, 4):
        raise DataError(f"{name}: boxes must have shape ({n}, 4) xyxy (one per person), got {np.shape(sample.boxes)}")
    if sample.ignore_mask is not None and np.shape(sample.ignore_mask) != img.shape[:2]:
        raise DataError(f"{name}: ignore_mask must have the image's shape {img.shape[:2]}, got "
                        f"{np.shape(sample.ignore_mask)}")


def _has_ignore(sample: Sample) -> bool:
    return sample.ignore_mask is not None and bool(np.any(sample.ignore_mask))


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _areas(sample: Sample) -> np.ndarray:
    """``Sample.areas``, or box area * 0.53 (the readers' fallback) where the sample has none."""
    a = np.asarray(sample.areas, np.float64).reshape(-1)
    return a if len(a) == sample.num_people else _box_areas(sample.boxes) * 0.53


def _copy_where(src: np.ndarray, mask: np.ndarray, dst: np.ndarray) -> None:
    """``dst[mask != 0] = src[mask != 0]`` in place (``dst`` may be a view); OpenCV's copyTo is ~100x faster than
    numpy's masked copy."""
    out = cv2.copyTo(src, mask, dst)
    if out is not dst and not np.shares_memory(out, dst):  # OpenCV made a new array: copy back
        dst[...] = out


def _image_size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])


# --------------------------------------------------------------------------------------------------------------
# (a) bottom-up random affine crop
# --------------------------------------------------------------------------------------------------------------
class BottomUpAffine:
    """Random square affine crop for bottom-up training (HigherHRNet / DEKR), with the UDP crop matrix.

    Training mode draws, per call, a rotation ``U(-max_rotation, max_rotation)`` degrees, a scale ``U(min_scale,
    max_scale)``, a translation ``U(-max_translate, max_translate)`` input pixels per axis and a horizontal flip with
    probability ``flip_prob``. The crop is centred on the image centre ``((W - 1) / 2, (H - 1) / 2)``; its source
    side is ``max(W, H) * scale`` -- so **scale > 1 zooms out** (people get smaller) and scale 1 fits the whole image
    -- mapped onto ``input_size`` pixels by :func:`~bupose.data.geometry.crop_matrix` (``mode``, UDP by default).
    A flip is applied after the crop (``x -> input_size - 1 - x``) inside the same matrix, and left/right keypoints
    are swapped with ``spec.flip_index``.

    Validation mode (``train=False``): no randomness; the whole image, centred, at scale 1, never flipped.

    Call: ``pipeline(sample, rng=None) -> dict`` with

    * ``image``: ``(S, S, 3)`` uint8 BGR, ``S = input_size``; areas outside the source are ``border_value``.
    * ``keypoints``: ``(N, K, 3)`` float32 in input pixels; ``v`` kept, set to 0 where the point leaves the input
      image (see :func:`~bupose.data.geometry.inside`); left/right swapped when flipped.
    * ``boxes``: ``(N, 4)`` float32 ``xyxy`` in input pixels: the box enclosing the warped box corners, not clipped.
    * ``areas``: ``(N,)`` float32 ``Sample.areas`` scaled by the matrix's area factor (box area * 0.53 where the
      sample has none).
    * ``mask``: ``(S / output_stride, S / output_stride)`` float32 **loss weights at output (heatmap) resolution:
      1 = use, 0 = ignore** -- the complement of ``Sample.ignore_mask``, warped with ``output_matrix`` (binarised at
      0.5). Areas outside the source image get 1 (nothing to find there), or 0 with ``ignore_padding=True``.
    * ``matrix``: ``(2, 3)`` float64, **original image pixels -> network input pixels** (flip included).
    * ``output_matrix``: ``(2, 3)`` image pixels -> output (heatmap) pixels, ``compose(matrix, stride_matrix)``
      where the stride step is :func:`~bupose.data.geometry.stride_matrix` (``stride_mode``).
    * ``flipped``: bool; ``rotation``, ``scale``, ``translate``: the drawn parameters.
    """

    def __init__(self, spec: KeypointSpec, input_size: int = 512, output_stride: int = 4, max_rotation: float = 30.0,
                 min_scale: float = 0.75, max_scale: float = 1.5, max_translate: float = 40.0, flip_prob: float = 0.5,
                 train: bool = True, mode: str = "udp", stride_mode: str = "area", ignore_padding: bool = False,
                 border_value: int = 0, antialias: bool = False):
        if not isinstance(spec, KeypointSpec):
            raise ConfigError(f"BottomUpAffine: spec must be a KeypointSpec, got {type(spec).__name__}")
        if int(input_size) != input_size or input_size < 2:
            raise ConfigError(f"BottomUpAffine: input_size must be an integer >= 2, got {input_size!r}")
        if int(output_stride) != output_stride or output_stride < 1 or input_size % output_stride:
            raise ConfigError(f"BottomUpAffine: input_size {input_size} must be a multiple of output_stride "
                              f"{output_stride!r}")
        if not 0 < min_scale <= max_scale:
            raise ConfigError(f"BottomUpAffine: need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        if not 0 <= flip_prob <= 1:
            raise ConfigError(f"BottomUpAffine: flip_prob must be in [0, 1], got {flip_prob}")
        if mode not in G.MODES or stride_mode not in G.STRIDE_MODES:
            raise ConfigError(f"BottomUpAffine: mode must be one of {G.MODES}, stride_mode one of {G.STRIDE_MODES}; got {mode!r}, "
                              f"{stride_mode!r}")
        self.spec = spec
        self.input_size = int(input_size)
        self.output_stride = int(output_stride)
        self.max_rotation = float(max_rotation)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.max_translate = float(max_translate)
        self.flip_prob = float(flip_prob)
        self.train = bool(train)
        self.mode, self.stride_mode = mode, stride_mode
        self.ignore_padding = bool(ignore_padding)
        self.border_value = border_value
        self.antialias = bool(antialias)

    @property
    def output_size(self) -> int:
        return self.input_size // self.output_stride

    @property
    def stride_matrix(self) -> np.ndarray:
        """Network input -> output (heatmap) pixels."""
        s = self.input_size
        return G.stride_matrix(self.output_stride, self.stride_mode, input_size=(s, s))

    def sample_params(self, rng=None) -> dict:
        """Draw ``rotation``, ``scale``, ``translate`` and ``flip`` (fixed values in validation mode)."""
        if not self.train:
            return {"rotation": 0.0, "scale": 1.0, "translate": (0.0, 0.0), "flip": False}
        rng = _rng(rng)
        rot = float(rng.uniform(-self.max_rotation, self.max_rotation)) if self.max_rotation > 0 else 0.0
        scale = float(rng.uniform(self.min_scale, self.max_scale))
        t = self.max_translate
        translate = (float(rng.uniform(-t, t)), float(rng.uniform(-t, t))) if t > 0 else (0.0, 0.0)
        flip = bool(rng.random() < self.flip_prob)
        return {"rotation": rot, "scale": scale, "translate": translate, "flip": flip}

    def matrix_for(self, image_size, rotation: float = 0.0, scale: float = 1.0, translate=(0.0, 0.0),
                   flip: bool = False) -> np.ndarray:
        """Image -> input matrix for an image of ``(W, H)`` and given augmentation parameters."""
        w, h = image_size
        m = G.crop_matrix(((w - 1) / 2.0, (h - 1) / 2.0), max(w, h) * scale, self.input_size, rotation=rotation,
                          translate=translate, mode=self.mode)
        if flip:
            m = G.compose(m, G.flip_matrix(self.input_size))
        return m

    def __call__(self, sample: Sample, rng=None) -> dict:
        _check_sample(sample, self.spec, "BottomUpAffine")
        p = self.sample_params(rng)
        s, o = self.input_size, self.output_size
        m = self.matrix_for(_image_size(sample.image), p["rotation"], p["scale"], p["translate"], p["flip"])
        out_m = G.compose(m, self.stride_matrix)

        image = G.warp_image(sample.image, m, (s, s), border_value=self.border_value, antialias=self.antialias)
        kps = G.warp_keypoints(np.asarray(sample.keypoints, np.float32), m, size=(s, s))
        if p["flip"]:
            kps = G.swap_keypoints(kps, self.spec.flip_index)
        boxes = G.warp_boxes(np.asarray(sample.boxes, np.float32), m)
        areas = (_areas(sample) * G.matrix_scale(m) ** 2).astype(np.float32)

        pad = 0.0 if self.ignore_padding else 1.0
        if _has_ignore(sample) or self.ignore_padding:
            use = np.ones(sample.image.shape[:2], np.float32)
            if _has_ignore(sample):
                use[np.asarray(sample.ignore_mask) > 0] = 0.0
            mask = G.warp_mask(use, out_m, (o, o), border_value=pad)
        else:
            mask = np.ones((o, o), np.float32)
        return {"image": image, "keypoints": kps.astype(np.float32), "boxes": boxes.astype(np.float32),
                "areas": areas, "mask": mask, "matrix": m, "output_matrix": out_m, "flipped": p["flip"],
                "rotation": p["rotation"], "scale": p["scale"], "translate": p["translate"]}


# --------------------------------------------------------------------------------------------------------------
# (b) letterbox, (c) test resize: deterministic resizes with an exact inverse
# --------------------------------------------------------------------------------------------------------------
class Resized(NamedTuple):
    """A network input made from an image by one matrix; unpacks as ``image, matrix, inverse``.

    ``matrix`` maps original image pixels to network-input pixels, ``inverse`` maps back.
    """

    image: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the network input."""
        return _image_size(self.image)

    def output_matrix(self, output_stride: int = 1, stride_mode: str = "area") -> np.ndarray:
        """Image -> output pixels of a network with ``output_stride`` (``1``: the input itself)."""
        if output_stride == 1:
            return self.matrix.copy()
        return G.compose(self.matrix, G.stride_matrix(output_stride, stride_mode, input_size=self.input_size))

    def to_image_coords(self, points, output_stride: int = 1, stride_mode: str = "area") -> np.ndarray:
        """Map network-input (or, with ``output_stride``, heatmap) coordinates back to the image; see
        :func:`to_image_coords`."""
        return to_image_coords(points, self.matrix, output_stride, stride_mode, input_size=self.input_size)


def to_image_coords(points, matrix, output_stride: int = 1, stride_mode: str = "area",
                    input_size=None) -> np.ndarray:
    """Map coordinates predicted on a network input (``output_stride == 1``) or on its output / heatmap (stride
    ``output_stride``) back to the original image, exactly inverting ``matrix`` (image -> input).

    Args:
        points: ``(..., C)`` with ``C >= 2``: the first two columns are ``x, y`` (keypoints ``(..., K, 3)``, points
            ``(..., 2)``); other columns (visibility, scores) are returned unchanged.
        matrix: ``(2, 3)`` image -> network input, as returned by the pipeline.
        output_stride: stride of the coordinates' grid relative to the input; the input -> output step is
            :func:`~bupose.data.geometry.stride_matrix` with ``stride_mode`` (``"udp"`` needs ``input_size``).
    Returns:
        a new float array of the same shape.
    """
    p = np.asarray(points)
    if p.ndim < 1 or p.shape[-1] < 2:
        raise ValueError(f"points must have shape (..., >=2), got {p.shape}")
    m = G.as_matrix(matrix)
    if output_stride != 1:
        m = G.compose(m, G.stride_matrix(output_stride, stride_mode, input_size=input_size))
    out = np.array(p, dtype=p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64, copy=True)
    out[..., :2] = G.warp_points(p[..., :2].astype(np.float64), G.invert(m))
    return out


def letterbox(image: np.ndarray, input_size=640, stride: int = 32, auto: bool = False, scaleup: bool = True,
              center: bool = True, pad_value: int = 114, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv5-style letterbox of a BGR image: scale to fit ``input_size`` keeping the aspect ratio, pad.

    See :func:`~bupose.data.geometry.letterbox_matrix` for ``input_size`` / ``stride`` / ``auto`` / ``scaleup`` /
    ``center``. The output's sides are multiples of ``stride``; padding is ``pad_value`` (YOLO's grey 114).

    Returns:
        ``(padded_image, matrix)`` with ``matrix`` the ``(2, 3)`` image -> padded-image map.
    """
    img = _check_image(image, "letterbox")
    m, size = G.letterbox_matrix(_image_size(img), input_size, stride, auto=auto, scaleup=scaleup, center=center)
    return G.warp_image(img, m, size, border_value=pad_value, antialias=antialias), m


class Letterbox:
    """Deterministic letterbox (validation / test input for one-stage methods); see :func:`letterbox`.

    ``Letterbox(...)(image)`` returns a :class:`Resized` (``image, matrix, inverse``). Called on a
    :class:`~bupose.data.sample.Sample` it returns a dict like :class:`LetterboxTrain`'s: ``image``, ``keypoints``
    (``v = 0`` outside), ``boxes`` (clipped to the input), ``areas``, ``mask`` (float32 at input resolution,
    1 = use, 0 = ignore; padding 1), ``matrix``, ``inverse``, ``flipped=False``.
    """

    def __init__(self, input_size=640, stride: int = 32, auto: bool = False, scaleup: bool = True,
                 center: bool = True, pad_value: int = 114, antialias: bool = True):
        G.letterbox_matrix((input_size, input_size) if np.isscalar(input_size) else input_size, input_size,
                           stride)  # validates
        self.input_size, self.stride, self.auto, self.scaleup = input_size, int(stride), auto, scaleup
        self.center, self.pad_value, self.antialias = center, pad_value, antialias

    def matrix_for(self, image_size) -> tuple[np.ndarray, tuple[int, int]]:
        return G.letterbox_matrix(image_size, self.input_size, self.stride, self.auto, self.scaleup, self.center)

    def __call__(self, image):
        if isinstance(image, Sample):
            return self._sample(image)
        img = _check_image(image, "Letterbox")
        m, size = self.matrix_for(_image_size(img))
        out = G.warp_image(img, m, size, border_value=self.pad_value, antialias=self.antialias)
        return Resized(out, m, G.invert(m))

    def _sample(self, sample: Sample) -> dict:
        _check_sample(sample, None, "Letterbox")
        m, size = self.matrix_for(_image_size(sample.image))
        image = G.warp_image(sample.image, m, size, border_value=self.pad_value, antialias=self.antialias)
        kps = G.warp_keypoints(np.asarray(sample.keypoints, np.float32), m, size=size)
        boxes = G.clip_boxes(G.warp_boxes(np.asarray(sample.boxes, np.float32), m), size)
        if _has_ignore(sample):
            mask = 1.0 - G.warp_mask((np.asarray(sample.ignore_mask) > 0).astype(np.float32), m, size)
        else:
            mask = np.ones(size[::-1], np.float32)
        areas = (_areas(sample) * G.matrix_scale(m) ** 2).astype(np.float32)
        return {"image": image, "keypoints": kps, "boxes": boxes.astype(np.float32), "areas": areas, "mask": mask,
                "matrix": m, "inverse": G.invert(m), "flipped": False}


class TestResize:
    """Test-time resize: the **short** side becomes ``input_size * scale`` (long side proportional), then the image
    is padded on the right / bottom to multiples of ``stride``.

    ``TestResize(512)(image, scale=1.0)`` returns a :class:`Resized` ``(image, matrix, inverse)``: ``matrix`` maps
    image pixels to network-input pixels (``"area"`` convention: ``x' = r (x + 0.5) - 0.5`` with ``r = input_size *
    scale / min(W, H)``, no offset since padding is right / bottom only), ``inverse`` maps back exactly. Heatmap
    coordinates map back with ``result.to_image_coords(points, output_stride=4)`` or :func:`to_image_coords`.
    Shrinking uses a Gaussian pre-blur (``antialias``) that does not move content.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, input_size: int = 512, stride: int = 32, pad_value: int = 0, antialias: bool = True):
        if input_size <= 0 or int(stride) != stride or stride < 1:
            raise ConfigError(f"TestResize: need input_size > 0 and an integer stride >= 1, got {input_size!r}, "
                              f"{stride!r}")
        self.input_size, self.stride, self.pad_value, self.antialias = input_size, int(stride), pad_value, antialias

    def matrix_for(self, image_size, scale: float = 1.0) -> tuple[np.ndarray, tuple[int, int]]:
        """``(matrix, (width, height))`` of the network input for an image of ``(W, H)``."""
        w, h = image_size
        if scale <= 0:
            raise ValueError(f"TestResize: scale must be > 0, got {scale}")
        r = self.input_size * scale / min(w, h)
        cw, ch = max(1, int(round(w * r))), max(1, int(round(h * r)))
        st = self.stride
        size = (int(math.ceil(cw / st)) * st, int(math.ceil(ch / st)) * st)
        return G.scale_matrix(r, r, center=(-0.5, -0.5)), size

    def __call__(self, image: np.ndarray, scale: float = 1.0) -> Resized:
        img = _check_image(image, "TestResize")
        m, size = self.matrix_for(_image_size(img), scale)
        out = G.warp_image(img, m, size, border_value=self.pad_value, antialias=self.antialias)
        return Resized(out, m, G.invert(m))


# --------------------------------------------------------------------------------------------------------------
# (b) YOLO-style training input: mosaic + random affine + flip
# --------------------------------------------------------------------------------------------------------------
class LetterboxTrain:
    """YOLO-style training input for one-stage methods (after YOLOv5 / YOLOv8-pose's mosaic and random affine).

    With probability ``mosaic_prob`` four samples are tiled around a random centre ``(xc, yc) ~ U(S/2, 3S/2)`` of
    a ``2S x 2S`` canvas, each scaled so that its long side is ``S = input_size``; otherwise one sample is
    letterboxed onto an ``S x S`` canvas. The canvas is then rotated by ``U(-degrees, degrees)``, scaled by
    ``U(1 - scale, 1 + scale)``, sheared by ``U(-shear, shear)`` degrees about its centre, moved so that its centre
    lands at the output centre plus ``U(-translate, translate) * S`` and cropped to ``S x S``; finally the output is
    flipped with probability ``flip_prob``. Each source image is warped **once**, straight to the output, by its
    own composed matrix; its tile of the canvas decides which output pixels it fills.

    Call: ``pipeline(samples, rng=None) -> dict``, ``samples`` a Sample or a sequence of them (exactly 4 when a
    mosaic is drawn; with a sequence and no mosaic, the first one is used). Keys:

    * ``image``: ``(S, S, 3)`` uint8 BGR, ``pad_value`` where no source covers.
    * ``keypoints``: ``(M, K, 3)`` float32 in input pixels, ``v = 0`` outside the input or outside the source's
      visible tile; left/right swapped when flipped.
    * ``boxes``: ``(M, 4)`` float32 ``xyxy``: the box enclosing each warped (tile-clipped) box, clipped to the input
      area ``[-0.5, S - 0.5]``. People whose box ends up narrower / shorter than ``min_box_size`` pixels, keeps less
      than ``min_area_ratio`` of its warped area, or is more elongated than ``max_aspect_ratio`` are dropped --
      their box and keypoints together.
    * ``areas``: ``(M,)`` float32 ``Sample.areas`` scaled by the matrix's area factor.
    * ``mask``: ``(S, S)`` float32 **loss weights at input resolution: 1 = use, 0 = ignore** (the warped complement
      of ``Sample.ignore_mask``; uncovered padding is 1, or 0 with ``ignore_padding=True``).
    * ``matrix``: ``(2, 3)`` image -> input for a single image, ``None`` for a mosaic; ``matrices``: one per
      source sample used (1 or 4).
    * ``source_index`` / ``person_index``: ``(M,)`` int64, which sample and which of its people each row is.
    * ``flipped``, ``mosaic``: bools.
    """

    def __init__(self, spec: KeypointSpec, input_size: int = 640, mosaic_prob: float = 1.0, degrees: float = 0.0,
                 translate: float = 0.1, scale: float = 0.5, shear: float = 0.0, flip_prob: float = 0.5,
                 pad_value: int = 114, min_box_size: float = 2.0, min_area_ratio: float = 0.1,
                 max_aspect_ratio: float = 20.0, ignore_padding: bool = False, antialias: bool = False):
        if not isinstance(spec, KeypointSpec):
            raise ConfigError(f"LetterboxTrain: spec must be a KeypointSpec, got {type(spec).__name__}")
        if int(input_size) != input_size or input_size < 32 or input_size % 32:
            raise ConfigError(f"LetterboxTrain: input_size must be a multiple of 32, got {input_size!r}")
        if not 0 <= mosaic_prob <= 1 or not 0 <= flip_prob <= 1:
            raise ConfigError(f"LetterboxTrain: mosaic_prob and flip_prob must be in [0, 1], got {mosaic_prob}, "
                              f"{flip_prob}")
        if not 0 <= scale < 1:
            raise ConfigError(f"LetterboxTrain: scale must be in [0, 1) (factor U(1 - scale, 1 + scale)), got {scale}")
        self.spec = spec
        self.input_size = int(input_size)
        self.mosaic_prob, self.degrees, self.translate = float(mosaic_prob), float(degrees), float(translate)
        self.scale, self.shear, self.flip_prob = float(scale), float(shear), float(flip_prob)
        self.pad_value = pad_value
        self.min_box_size, self.min_area_ratio = float(min_box_size), float(min_area_ratio)
        self.max_aspect_ratio = float(max_aspect_ratio)
        self.ignore_padding, self.antialias = bool(ignore_padding), bool(antialias)

    @property
    def num_samples(self) -> int:
        """How many samples a call may need (4 when mosaics can be drawn)."""
        return 4 if self.mosaic_prob > 0 else 1

    # -- layout on the canvas ----------------------------------------------------------------------------------
    def _mosaic_layout(self, samples: Sequence[Sample], rng) -> tuple[list, tuple[int, int]]:
        s = self.input_size
        xc, yc = (int(rng.uniform(0.5 * s, 1.5 * s)) for _ in range(2))
        layout = []
        for i, smp in enumerate(samples):
            w0, h0 = _image_size(smp.image)
            r = s / max(w0, h0)
            w, h = max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))
            ox = xc - w if i in (0, 2) else xc  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right of (xc, yc)
            oy = yc - h if i in (0, 1) else yc
            p = G.compose(G.scale_matrix(r, r, center=(-0.5, -0.5)), G.translation_matrix(ox, oy))
            layout.append((p, self._tile((ox, oy, ox + w, oy + h), (2 * s, 2 * s))))
        return layout, (2 * s, 2 * s)

    def _single_layout(self, sample: Sample) -> tuple[list, tuple[int, int]]:
        w0, h0 = _image_size(sample.image)
        p, size = G.letterbox_matrix((w0, h0), self.input_size, stride=32)
        r = p[0, 0]
        left, top = int(round(p[0, 2] - 0.5 * r + 0.5)), int(round(p[1, 2] - 0.5 * r + 0.5))
        rect = (left, top, left + max(1, int(round(w0 * r))), top + max(1, int(round(h0 * r))))
        return [(p, self._tile(rect, size))], size

    @staticmethod
    def _tile(rect, canvas_size) -> tuple[int, int, int, int]:
        """The canvas pixels ``[x0, x1) x [y0, y1)`` a source fills: its placed rectangle within the canvas."""
        x0, y0 = max(rect[0], 0), max(rect[1], 0)
        x1, y1 = min(rect[2], canvas_size[0]), min(rect[3], canvas_size[1])
        return x0, y0, max(x0, x1), max(y0, y1)

    def sample_params(self, rng=None) -> dict:
        rng = _rng(rng)
        return {"rotation": float(rng.uniform(-self.degrees, self.degrees)) if self.degrees > 0 else 0.0,
                "scale": float(rng.uniform(1 - self.scale, 1 + self.scale)) if self.scale > 0 else 1.0,
                "shear": tuple(float(rng.uniform(-self.shear, self.shear)) for _ in range(2)) if self.shear > 0
                else (0.0, 0.0),
                "translate": tuple(float(rng.uniform(-self.translate, self.translate)) * self.input_size
                                   for _ in range(2)) if self.translate > 0 else (0.0, 0.0),
                "flip": bool(rng.random() < self.flip_prob)}

    def canvas_matrix(self, canvas_size, rotation=0.0, scale=1.0, shear=(0.0, 0.0), translate=(0.0, 0.0),
                      flip=False) -> np.ndarray:
        """Canvas -> output matrix: about the canvas centre, rotate / scale / shear, then centre on the output."""
        cw, ch = canvas_size
        s = self.input_size
        m = G.compose(G.translation_matrix(-(cw - 1) / 2.0, -(ch - 1) / 2.0), G.rotation_matrix(rotation, scale=scale),
                      G.shear_matrix(*shear),
                      G.translation_matrix((s - 1) / 2.0 + translate[0], (s - 1) / 2.0 + translate[1]))
        return G.compose(m, G.flip_matrix(s)) if flip else m

    # -- call ----------------------------------------------------------------------------------------------------
    def __call__(self, samples, rng=None) -> dict:
        rng = _rng(rng)
        samples = [samples] if isinstance(samples, Sample) else list(samples)
        if not samples:
            raise DataError("LetterboxTrain: no sample given")
        mosaic = self.mosaic_prob > 0 and rng.random() < self.mosaic_prob
        if mosaic and len(samples) != 4:
            raise DataError(f"LetterboxTrain: a mosaic needs exactly 4 samples, got {len(samples)} (mosaic_prob="
                            f"{self.mosaic_prob}; see .num_samples)")
        used = samples if mosaic else samples[:1]
        for i, smp in enumerate(used):
            _check_sample(smp, self.spec, f"LetterboxTrain sample {i}")
        layout, canvas_size = self._mosaic_layout(used, rng) if mosaic else self._single_layout(used[0])
        p = self.sample_params(rng)
        a = self.canvas_matrix(canvas_size, p["rotation"], p["scale"], p["shear"], p["translate"], p["flip"])

        s = self.input_size
        image = np.full((s, s, 3), self.pad_value, np.uint8)
        ignore = np.zeros((s, s), np.uint8)
        covered = np.zeros((s, s), bool) if self.ignore_padding else None
        kps_out, boxes_out, areas_out, src_out, idx_out, matrices = [], [], [], [], [], []
        for i, (smp, (pm, tile)) in enumerate(zip(used, layout)):
            m = G.compose(pm, a)
            matrices.append(m)
            self._render(smp, m, a, tile, image, ignore, covered)
            k, b, ar, keep = self._people(smp, pm, a, m, tile)
            kps_out.append(k[keep])
            boxes_out.append(b[keep])
            areas_out.append(ar[keep])
            src_out.append(np.full(int(keep.sum()), i, np.int64))
            idx_out.append(np.flatnonzero(keep).astype(np.int64))

        kps = np.concatenate(kps_out).astype(np.float32)
        if p["flip"]:
            kps = G.swap_keypoints(kps, self.spec.flip_index)
        mask = 1.0 - ignore.astype(np.float32)
        if covered is not None:
            mask[~covered] = 0.0
        return {"image": image, "keypoints": kps, "boxes": np.concatenate(boxes_out).astype(np.float32),
                "areas": np.concatenate(areas_out).astype(np.float32), "mask": mask,
                "matrix": None if mosaic else matrices[0], "matrices": matrices,
                "source_index": np.concatenate(src_out), "person_index": np.concatenate(idx_out),
                "flipped": p["flip"], "mosaic": mosaic}

    def _render(self, smp: Sample, m, a, tile, image, ignore, covered) -> None:
        """Warp one source into its tile's part of the output (image, ignore mask, coverage)."""
        x0, y0, x1, y1 = tile
        if x1 <= x0 or y1 <= y0:
            return
        s = self.input_size
        corners = G.warp_points(np.array([[x0 - .5, y0 - .5], [x1 - .5, y0 - .5], [x1 - .5, y1 - .5],
                                          [x0 - .5, y1 - .5]]), a)
        rx0, ry0 = max(0, int(math.floor(corners[:, 0].min()))), max(0, int(math.floor(corners[:, 1].min())))
        rx1, ry1 = min(s, int(math.ceil(corners[:, 0].max())) + 1), min(s, int(math.ceil(corners[:, 1].max())) + 1)
        if rx1 <= rx0 or ry1 <= ry0:
            return
        roi = G.translation_matrix(-rx0, -ry0)
        size = (rx1 - rx0, ry1 - ry0)
        mr = G.compose(m, roi)
        warped = G.warp_image(smp.image, mr, size, border_mode=cv2.BORDER_REPLICATE, antialias=self.antialias)
        cov = cv2.warpAffine(np.ones((y1 - y0, x1 - x0), np.uint8),
                             G.compose(G.translation_matrix(x0, y0), a, roi), size, flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        _copy_where(warped, cov, image[ry0:ry1, rx0:rx1])
        if covered is not None:
            covered[ry0:ry1, rx0:rx1] |= cov.astype(bool)
        if _has_ignore(smp):
            ig = G.warp_mask((np.asarray(smp.ignore_mask) > 0).astype(np.uint8), mr, size)
            _copy_where(ig, cov, ignore[ry0:ry1, rx0:rx1])

    def _people(self, smp: Sample, pm, a, m, tile):
        """Warp one source's people; returns keypoints, boxes, areas and which to keep."""
        s = self.input_size
        x0, y0, x1, y1 = tile
        tile_area = ((x0 - 0.5, y0 - 0.5), (x1 - 0.5, y1 - 0.5))
        k = G.warp_keypoints(np.asarray(smp.keypoints, np.float64), pm)  # canvas
        (tx0, ty0), (tx1, ty1) = tile_area
        vis = (k[..., 0] >= tx0) & (k[..., 0] <= tx1) & (k[..., 1] >= ty0) & (k[..., 1] <= ty1)
        k[..., 2] = np.where(vis, k[..., 2], 0)
        k = G.warp_keypoints(k, a, size=(s, s))
        b = G.warp_boxes(np.asarray(smp.boxes, np.float64), pm)
        b[:, [0, 2]] = b[:, [0, 2]].clip(tx0, tx1)
        b[:, [1, 3]] = b[:, [1, 3]].clip(ty0, ty1)
        b = G.clip_boxes(G.warp_boxes(b, a), (s, s))
        scale2 = G.matrix_scale(m) ** 2
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        full = _box_areas(smp.boxes) * scale2
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(full > 0, bw * bh / np.maximum(full, 1e-12), 0.0)
            aspect = np.maximum(bw / np.maximum(bh, 1e-12), bh / np.maximum(bw, 1e-12))
        keep = (bw > self.min_box_size) & (bh > self.min_box_size) & (ratio > self.min_area_ratio) & \
               (aspect < self.max_aspect_ratio)
        areas = _areas(smp) * scale2
        return k, b, areas, keep


# --------------------------------------------------------------------------------------------------------------
# (d) photometric augmentation
# --------------------------------------------------------------------------------------------------------------
class Photometric:
    """Photometric augmentation of the image only, through albumentations; geometry is never touched.

    The default chain: brightness / contrast (``brightness``, ``contrast`` limits), hue / saturation / value shifts
    (``hue``, ``saturation``, ``value``, in OpenCV's HSV units) each with probability ``color_prob``; one of Gaussian
    / median blur with ``blur_prob`` (symmetric kernels, so nothing moves); Gaussian noise with ``noise_prob``
    (``noise_std`` as a fraction of 255); JPEG compression with ``jpeg_prob``; grey with ``gray_prob``. Pass
    ``transforms`` (a list of albumentations image-only transforms) to use your own chain instead.

    Call: ``photometric(x, rng=None)`` with ``x`` a ``(H, W, 3)`` uint8 BGR image (returns the new image) or a dict
    with an ``"image"`` entry (returns a shallow copy with only ``"image"`` replaced). The result is a function of
    the image and the seed drawn from ``rng`` (a ``numpy.random.Generator`` or an int seed); without ``rng``, from
    the instance's own generator seeded by ``seed``. Albumentations' HSV / grey transforms expect RGB, so the image
    is handed over as RGB and converted back.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, hue: int = 10, saturation: int = 30,
                 value: int = 20, color_prob: float = 0.5, blur_prob: float = 0.1, noise_prob: float = 0.1,
                 noise_std: tuple[float, float] = (0.01, 0.05), jpeg_prob: float = 0.0, gray_prob: float = 0.01,
                 transforms: list | None = None, seed: int | None = None):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A

        if transforms is None:
            transforms = [
                A.RandomBrightnessContrast(brightness_limit=brightness, contrast_limit=contrast, p=color_prob),
                A.HueSaturationValue(hue_shift_limit=hue, sat_shift_limit=saturation, val_shift_limit=value,
                                     p=color_prob),
                A.OneOf([A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2)), A.MedianBlur(blur_limit=3)],
                        p=blur_prob),
                A.GaussNoise(std_range=tuple(noise_std), p=noise_prob),
                A.ImageCompression(quality_range=(60, 95), p=jpeg_prob),
                A.ToGray(p=gray_prob),
            ]
            transforms = [t for t in transforms if t.p > 0]
        self.compose = A.Compose(transforms, seed=0)
        self._rng = np.random.default_rng(seed)

    def __call__(self, x, rng=None):
        rng = self._rng if rng is None else _rng(rng)
        seed = int(rng.integers(0, 2**31 - 1))
        if isinstance(x, dict):
            out = dict(x)
            out["image"] = self._apply(x["image"], seed)
            return out
        return self._apply(x, seed)

    def _apply(self, image: np.ndarray, seed: int) -> np.ndarray:
        img = _check_image(image, "Photometric")
        self.compose.set_random_seed(seed)
        rgb = np.ascontiguousarray(img[..., ::-1])
        out = self.compose(image=rgb)["image"]
        return np.ascontiguousarray(out[..., ::-1])


class HSV:
    """YOLO-style random HSV gains (YOLOv5's ``augment_hsv``, Jocher et al., Ultralytics): image only, seeded.

    Three gains ``r = 1 + uniform(-1, 1) * (hgain, sgain, vgain)`` are drawn per call; the image is converted to
    OpenCV's uint8 HSV (hue 0..179, saturation and value 0..255) and each channel goes through a 256-entry lookup
    table: saturation and value are scaled by their gain and clipped to 0..255; hue is either scaled by its gain
    (``hue_mode="scale"``, YOLOv5 and Ultralytics <= 8.3.78) or shifted by ``(r_h - 1) * 180`` (``"shift"``,
    Ultralytics >= 8.3.79), in both cases modulo 180 so that it wraps around the colour circle. Table values are
    truncated to integers, as in YOLOv5.

    Call: ``hsv(x, rng=None)`` with ``x`` a ``(H, W, 3)`` uint8 BGR image (returns a new image; the input is not
    modified) or a dict with an ``"image"`` entry (returns a shallow copy with only ``"image"`` replaced). The gains
    are drawn from ``rng`` (a ``numpy.random.Generator`` or an int seed); without ``rng``, from the instance's own
    generator seeded by ``seed``. With all three gains 0 the image is returned unchanged (a copy) and nothing is
    drawn.
    """

    def __init__(self, hgain: float = 0.015, sgain: float = 0.7, vgain: float = 0.4, hue_mode: str = "scale",
                 seed: int | None = None):
        for name, g in (("hgain", hgain), ("sgain", sgain), ("vgain", vgain)):
            if not (isinstance(g, (int, float)) and math.isfinite(g) and g >= 0):
                raise ConfigError(f"HSV: {name} is {g!r}, expected a finite number >= 0")
        if hue_mode not in ("scale", "shift"):
            raise ConfigError(f"HSV: hue_mode is {hue_mode!r}, expected 'scale' (YOLOv5) or 'shift' (Ultralytics "
                              f">= 8.3.79)")
        self.gains = np.array([hgain, sgain, vgain], np.float64)
        self.hue_mode = hue_mode
        self._rng = np.random.default_rng(seed)

    def __call__(self, x, rng=None):
        rng = self._rng if rng is None else _rng(rng)
        if isinstance(x, dict):
            out = dict(x)
            out["image"] = self._apply(x["image"], rng)
            return out
        return self._apply(x, rng)

    def tables(self, gains) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The uint8 lookup tables ``(hue, saturation, value)`` for drawn gains ``r`` (3 numbers around 1)."""
        rh, rs, rv = (float(g) for g in gains)
        x = np.arange(256, dtype=np.float64)
        hue = (x * rh if self.hue_mode == "scale" else x + (rh - 1.0) * 180.0) % 180
        sat = np.clip(x * rs, 0, 255)
        val = np.clip(x * rv, 0, 255)
        return hue.astype(np.uint8), sat.astype(np.uint8), val.astype(np.uint8)

    def _apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = _check_image(image, "HSV")
        if not self.gains.any():
            return img.copy()
        gains = 1.0 + rng.uniform(-1.0, 1.0, 3) * self.gains
        hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV)
        for c, table in enumerate(self.tables(gains)):
            hsv[..., c] = cv2.LUT(hsv[..., c], table)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


class YOLOXHSV:
    """YOLOX's HSV augmentation (Ge et al., "YOLOX: Exceeding YOLO Series in 2021"; mmpose's ``YOLOXHSVRandomAug``,
    used by RTMPose): additive deltas ``uniform(-1, 1) * (hue, saturation, value)`` truncated to integers, each
    kept with probability 1/2; OpenCV uint8 HSV, hue modulo 180, saturation and value clipped to 0..255.

    Call: ``hsv(image, rng)`` with a ``(H, W, 3)`` uint8 BGR image and a ``numpy.random.Generator`` (or int seed);
    returns a new image.
    """

    def __init__(self, hue: int = 5, saturation: int = 30, value: int = 30):
        self.deltas = np.array([hue, saturation, value], np.float64)

    def __call__(self, image: np.ndarray, rng=None) -> np.ndarray:
        rng = _rng(rng)
        img = _check_image(image, "YOLOXHSV")
        gains = rng.uniform(-1, 1, 3) * self.deltas * rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)
        hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180
        hsv[..., 1:] = np.clip(hsv[..., 1:] + gains[1:], 0, 255)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


class RTMPosePhotometric:
    """RTMPose's image-only augmentation of a top-down crop (Jiang et al., 2023; mmpose's RTMPose configs):
    :class:`YOLOXHSV`, then albumentations' ``Blur`` (p 0.1), ``MedianBlur`` (p 0.1) and one ``CoarseDropout`` hole
    of 0.2 to 0.4 of the crop's height and width filled with 0, with probability ``dropout_prob`` (stage 1: 1,
    stage 2: 0.5). Keypoints are not touched (a dropped keypoint keeps its label, as in mmpose).

    Call: ``aug(crop, rng)`` with a ``(h, w, 3)`` uint8 BGR crop and a ``numpy.random.Generator``; returns a new crop.
    """

    def __init__(self, dropout_prob: float = 1.0):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        import albumentations as A

        self.dropout_prob = dropout_prob
        self.hsv = YOLOXHSV()
        self.rest = Photometric(transforms=[
            A.Blur(p=0.1), A.MedianBlur(p=0.1),
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.2, 0.4), hole_width_range=(0.2, 0.4),
                            fill=0, p=dropout_prob)])

    def __call__(self, image: np.ndarray, rng=None) -> np.ndarray:
        rng = _rng(rng)
        return self.rest(self.hsv(image, rng), rng)


# --------------------------------------------------------------------------------------------------------------
# (e) tensors
# --------------------------------------------------------------------------------------------------------------
_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)


def to_tensor(image_bgr: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 BGR -> ``(3, H, W)`` float32 RGB tensor, ``/ 255`` then ImageNet mean / std normalised.

    A batch ``(N, H, W, 3)`` gives ``(N, 3, H, W)``.
    """
    img = np.asarray(image_bgr)
    if img.ndim not in (3, 4) or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise DataError(f"to_tensor: expected (H, W, 3) or (N, H, W, 3) uint8 BGR, got shape {img.shape} dtype "
                        f"{img.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(img[..., ::-1]))
    t = t.permute(0, 3, 1, 2) if img.ndim == 4 else t.permute(2, 0, 1)
    return t.float().div_(255.0).sub_(_MEAN).div_(_STD).contiguous()


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor` for drawing: ``(3, H, W)`` -> ``(H, W, 3)`` uint8 BGR (``(N, 3, H, W)`` ->
    ``(N, H, W, 3)``), rounded and clipped to 0..255."""
    t = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if t.ndim not in (3, 4) or t.shape[-3] != 3:
        raise ValueError(f"denormalize: expected (3, H, W) or (N, 3, H, W), got {tuple(t.shape)}")
    x = (t * _STD + _MEAN).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    x = x.permute(0, 2, 3, 1) if x.ndim == 4 else x.permute(1, 2, 0)
    return np.ascontiguousarray(x.numpy()[..., ::-1])
