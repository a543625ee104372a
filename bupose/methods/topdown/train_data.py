"""Top-down training data: one item per labelled person, cropped around the person's box with the augmentation of
SimpleBaseline / HRNet, targets from the codec.

Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018; Sun et al., "Deep High-Resolution
Representation Learning for Human Pose Estimation", CVPR 2019 (random scale, rotation, flip and the half-body crop);
Huang et al., "The Devil is in the Details: Delving into Unbiased Data Processing for Human Pose Estimation", CVPR
2020 (the UDP crop).

Augmentation of one person, each draw from the item's generator (seeded by ``(seed, epoch, index)``, see
:class:`~bupose.methods.base.SeededTrainingSet`), in the official order:

1. half-body, with probability ``half_body_prob`` when more than ``half_body_min_keypoints`` keypoints are labelled:
   the box becomes the labelled keypoints of one body half (upper when a standard normal draw is below 0.5, as the
   official code, and the half has more than 2 points; else lower when it has more than 2; else upper), made to the
   crop's aspect ratio and enlarged 1.5 times;
2. scale: the crop extent times ``clip(1 + N(0, 1) * scale_factor, 1 - scale_factor, 1 + scale_factor)``;
3. rotation: ``clip(N(0, 1) * rotation_factor, -2 rotation_factor, 2 rotation_factor)`` degrees, with probability
   ``rotation_prob`` (0.6), else 0;
4. flip with probability ``flip_prob``: the image is mirrored (``x -> W - 1 - x``, the crop centre with it) and
   left / right keypoints swap with the KeypointSpec's ``flip_index``.

With ``augmentation="rtmpose"`` (RTMPose, Jiang et al., 2023; mmpose's ``RandomBBoxTransform``) steps 2 and 3
draw from a normal truncated to [-1, 1] instead: scale ``1 + t * scale_factor``, rotation ``t * rotation_factor``
(probability ``rotation_prob``); and the crop goes through :class:`~bupose.data.pipelines.RTMPosePhotometric`
(YOLOX HSV, blur, median blur, a coarse dropout hole with ``dropout_prob``) instead of ``photometric``. Either way,
with ``shift_factor`` the box centre moves by ``shift * size`` with probability ``shift_prob`` (hrnet: ``N(0, s)``
clipped to ``[-s, s]`` per axis; rtmpose: ``t * s``) before scaling. ``stage2`` (with ``stage2_epoch``): attribute
values used from that epoch on (RTMPose's two-stage switch), e.g. ``{"scale_factor": 0.25, "rotation_factor": 60,
"shift_factor": 0, "dropout_prob": 0.5}``.

The crop is one affine warp of the source image (the flip composed in) onto ``input_size``; the keypoints move by
the same matrix, and the codec turns them into heatmaps and keypoint weights (its visibility and inside-the-heatmap
rules). Crop conventions (:mod:`bupose.methods.topdown.crops`): the standard crop maps the centre onto
``(w / 2, h / 2)`` with scale ``w / extent`` (the official ``get_affine_transform``), the UDP crop onto
``((w - 1) / 2, (h - 1) / 2)`` with scale ``(w - 1) / extent``; each pairs with its codec's input -> heatmap mapping.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from bupose.data import geometry as G
from bupose.data.keypoints import KeypointSpec
from bupose.data.pipelines import to_tensor
from bupose.errors import DataError
from bupose.methods.base import SeededTrainingSet
from bupose.methods.topdown import crops

log = logging.getLogger("bupose")

HALF_BODY_PADDING = 1.5  # the official half-body box enlargement


def half_body_box(keypoints: np.ndarray, spec: KeypointSpec, aspect_ratio: float, upper_first: bool):
    """``(center (2,), size (2,))`` of the half-body crop of one person ``(K, 3)``, or None when the chosen half has
    fewer than 2 labelled keypoints.

    ``upper_first``: prefer the upper half when it has more than 2 labelled keypoints (the official choice draws it
    as ``randn() < 0.5``). The box encloses the half's labelled keypoints, centred on their mean, widened or
    heightened to ``aspect_ratio`` (w / h) and enlarged :data:`HALF_BODY_PADDING` times.
    """
    labelled = keypoints[:, 2] > 0
    upper_ids = np.zeros(len(keypoints), bool)
    upper_ids[list(spec.upper_body_ids)] = True
    upper = keypoints[labelled & upper_ids, :2]
    lower = keypoints[labelled & ~upper_ids, :2]  # the official code: every labelled point not in the upper half
    if upper_first and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    center = chosen.mean(axis=0)
    w, h = chosen.max(axis=0) - chosen.min(axis=0)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    return center.astype(np.float64), np.array([w, h], np.float64) * HALF_BODY_PADDING


#: the DATASET keys of a second augmentation stage (``DATASET.STAGE2``) -> the training-set attributes they set
STAGE_KEYS = {"SCALE_FACTOR": "scale_factor", "ROT_FACTOR": "rotation_factor", "SHIFT_FACTOR": "shift_factor",
              "SHIFT_PROB": "shift_prob", "DROPOUT_PROB": "dropout_prob", "PROB_HALF_BODY": "half_body_prob",
              "FLIP": "flip_prob"}


def truncated_normal(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` draws of a standard normal truncated to [-1, 1] (by rejection; scipy's ``truncnorm(-1, 1)`` law)."""
    out = np.empty(n)
    filled = 0
    while filled < n:
        x = rng.standard_normal(2 * (n - filled))
        x = x[np.abs(x) <= 1][:n - filled]
        out[filled:filled + len(x)] = x
        filled += len(x)
    return out


class TopDownTrainingSet(SeededTrainingSet):
    """The labelled people of a reader's first ``limit`` images (all when 0), one item each.

    The index (image, person) is built once from the reader's annotations (``get_annotations``) without decoding
    any image. Items: ``image (3, h, w)`` float32 (``h, w`` from ``input_size``), ``heatmaps (K, h', w')`` (a
    SimCC codec: ``keypoint_x_labels (K, Wx)`` and ``keypoint_y_labels (K, Wy)``; a RegressionLabel codec:
    ``keypoint_labels (K, 2)``) and ``target_weight (K,)`` from
    ``codec.encode``. The image is ``/ 255`` then ImageNet mean / std normalised, in RGB
    order with ``color_rgb`` and BGR otherwise (as the official code, and as
    :func:`~bupose.methods.topdown.crops.crop_batch` at test time). :meth:`sample` returns the same item with the
    crop matrix and the crop's keypoints, for inspection.

    People are those of the reader (labelled keypoints) whose box, cleaned as the official code does
    (:func:`~bupose.methods.topdown.crops.clean_box`), lies in the image and whose area is positive; the crop box is
    :func:`~bupose.methods.topdown.crops.box_to_center_scale` of it (the input's aspect ratio, ``padding``).

    Args:
        reader: a COCO-format or YOLO reader (``get_annotations(i)``, ``load_image(i)``, ``len``).
        spec: the keypoint layout (flip index, upper / lower body).
        codec: a heatmap codec (``encode(keypoints (1, K, 2), visible (1, K))``), its ``input_size`` the crop size.
        udp: crop in the UDP convention (with a UDPHeatmap codec).
        scale_factor, rotation_factor, rotation_prob, flip_prob, half_body_prob, half_body_min_keypoints: the
            augmentation above (``DATASET.SCALE_FACTOR``, ``ROT_FACTOR``, ``FLIP``, ``PROB_HALF_BODY``,
            ``NUM_JOINTS_HALF_BODY``); zeros switch a step off.
        padding: box enlargement before the crop (1.25, the official value).
        color_rgb: network input in RGB order (``DATASET.COLOR_RGB``).
        photometric: optional image-only augmentation ``photometric(crop, rng)`` applied to the crop.
        augmentation: ``"hrnet"`` or ``"rtmpose"`` (see above); shift_factor, shift_prob, dropout_prob: its box
            shift and (rtmpose) dropout (``DATASET.AUGMENTATION``, ``SHIFT_FACTOR``, ``SHIFT_PROB``, ``DROPOUT_PROB``).
        stage2_epoch, stage2: the second stage's first epoch and its attribute values (``TRAIN.STAGE2_EPOCHS``,
            ``DATASET.STAGE2``); None / empty: one stage.
        seed, limit: see :class:`~bupose.methods.base.SeededTrainingSet` (``limit`` counts images).
    """

    #: the attributes a second stage may change (the values of :data:`STAGE_KEYS`)
    STAGE_ATTRIBUTES = tuple(STAGE_KEYS.values())

    def __init__(self, reader, *, spec: KeypointSpec, codec, udp: bool = False, scale_factor: float = 0.35,
                 rotation_factor: float = 45.0, rotation_prob: float = 0.6, flip_prob: float = 0.5,
                 half_body_prob: float = 0.3, half_body_min_keypoints: int = 8, padding: float = 1.25,
                 color_rgb: bool = True, photometric=None, augmentation: str = "hrnet", shift_factor: float = 0.0,
                 shift_prob: float = 0.3, dropout_prob: float = 1.0, stage2_epoch: int | None = None,
                 stage2: dict | None = None, seed: int = 0, limit: int = 0):
        super().__init__(reader, seed, limit)
        if augmentation not in ("hrnet", "rtmpose"):
            raise ValueError(f"augmentation must be 'hrnet' or 'rtmpose', got {augmentation!r}")
        self.spec, self.codec, self.udp = spec, codec, udp
        self.input_size = tuple(int(v) for v in codec.input_size)  # (w, h)
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.scale_factor, self.rotation_factor, self.rotation_prob = scale_factor, rotation_factor, rotation_prob
        self.flip_prob, self.half_body_prob = flip_prob, half_body_prob
        self.half_body_min_keypoints, self.padding = half_body_min_keypoints, padding
        self.color_rgb, self.photometric = color_rgb, photometric
        self.augmentation, self.shift_factor, self.shift_prob = augmentation, shift_factor, shift_prob
        self.dropout_prob = dropout_prob
        if half_body_prob > 0 and not (spec.upper_body_ids and spec.lower_body_ids):
            log.warning("keypoint layout %r defines no upper / lower body: no half-body augmentation", spec.name)
            self.half_body_prob = 0.0
        unknown = sorted(set(stage2 or {}) - set(self.STAGE_ATTRIBUTES))
        if unknown:
            raise ValueError(f"stage2 cannot set {unknown}; it takes {list(self.STAGE_ATTRIBUTES)}")
        self.stage1 = {k: getattr(self, k) for k in self.STAGE_ATTRIBUTES}
        self.stage2, self.stage2_epoch = dict(stage2 or {}), stage2_epoch
        self._rtmpose_photometric = {}  # dropout_prob -> RTMPosePhotometric, built on first use
        num_images = self.length
        self.people = self._index(num_images)
        self.length = len(self.people)
        if not self.length:
            raise DataError(f"{getattr(reader, 'source', reader)}: no person with labelled keypoints and a box in "
                            f"the first {num_images} images")

    def _index(self, num_images: int) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """``(image index, keypoints (K, 3) float64, box center (2,), box size (2,))`` per usable person."""
        people = []
        for i in range(num_images):
            rec = self.reader.get_annotations(i)
            for kp, box, area in zip(rec.keypoints, rec.boxes, rec.areas):
                if not (kp[:, 2] > 0).any() or not area > 0:
                    continue
                xywh = np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]], np.float64)
                box = crops.clean_box(xywh, (rec.width, rec.height))
                if box is None:
                    continue
                center, size = crops.box_to_center_scale(box, aspect_ratio=self.aspect_ratio, padding=self.padding)
                people.append((i, kp.astype(np.float64), center, size))
        return people

    def set_epoch(self, epoch: int) -> None:
        """The epoch's seeds, and its stage's augmentation (the second from ``stage2_epoch`` on)."""
        super().set_epoch(epoch)
        second = self.stage2_epoch is not None and epoch >= self.stage2_epoch
        for k, v in {**self.stage1, **(self.stage2 if second else {})}.items():
            setattr(self, k, v)

    # --- one item ------------------------------------------------------------------------------------------
    def augment(self, keypoints: np.ndarray, center: np.ndarray, size: np.ndarray, rng: np.random.Generator):
        """The random draws for one person: ``(center, size, rotation, flip)`` (before any flip of the image)."""
        if (self.half_body_prob > 0 and (keypoints[:, 2] > 0).sum() > self.half_body_min_keypoints
                and rng.random() < self.half_body_prob):
            half = half_body_box(keypoints, self.spec, self.aspect_ratio, upper_first=rng.standard_normal() < 0.5)
            if half is not None:
                center, size = half
        sf, rf, shift = self.scale_factor, self.rotation_factor, self.shift_factor
        if self.augmentation == "rtmpose":
            draws = truncated_normal(rng, 4)
            if shift > 0 and rng.random() < self.shift_prob:
                center = center + draws[:2] * shift * size
            size = size * (1 + draws[2] * sf)
            rotation = float(draws[3] * rf) if rng.random() < self.rotation_prob else 0.0
        else:
            if shift > 0 and rng.random() < self.shift_prob:
                center = center + np.clip(rng.standard_normal(2) * shift, -shift, shift) * size
            size = size * np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
            rotation = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf)) \
                if rng.random() <= self.rotation_prob else 0.0
        flip = bool(rng.random() < self.flip_prob)
        return center, size, rotation, flip

    def _photometric(self):
        """The image-only augmentation of the crops (None: none)."""
        if self.augmentation != "rtmpose":
            return self.photometric
        if self.dropout_prob not in self._rtmpose_photometric:
            from bupose.data.pipelines import RTMPosePhotometric

            self._rtmpose_photometric[self.dropout_prob] = RTMPosePhotometric(dropout_prob=self.dropout_prob)
        return self._rtmpose_photometric[self.dropout_prob]

    def sample(self, index: int) -> dict:
        """Item ``index`` of the current epoch with what made it: numpy ``crop (h, w, 3)`` BGR uint8, ``keypoints
        (K, 3)`` in crop pixels (visibilities as labelled), ``matrix`` (image -> crop), ``heatmaps``,
        ``target_weight``, ``center`` / ``size`` (the crop box in the, possibly mirrored, image), ``rotation``,
        ``flip`` and ``image_index``."""
        rng = self.rng(index)
        image_index, image, keypoints, center, size = self._person(index)
        center, size, rotation, flip = self.augment(keypoints, center, size, rng)
        to_image = G.identity()
        kps = keypoints.copy()
        if flip:  # mirror the image (as a matrix), the box centre and the keypoints, swapping left and right
            to_image = G.flip_matrix(image.shape[1])
            center = G.warp_points(center, to_image)
            kps = G.swap_keypoints(G.warp_keypoints(kps, to_image), self.spec)
        to_crop = crops.crop_matrix(center, size, self.input_size, rotation=rotation, udp=self.udp)
        matrix = G.compose(to_image, to_crop)
        kps[:, :2] = G.warp_points(kps[:, :2], to_crop)
        crop = G.warp_image(image, matrix, self.input_size)
        photometric = self._photometric()
        if photometric is not None:
            crop = photometric(crop, rng)
        labelled = (kps[:, 2] > 0).astype(np.float32)
        targets = self.codec.encode(kps[None, :, :2], labelled[None])
        return {"crop": crop, "keypoints": kps, "matrix": matrix, **self._targets(targets),
                "target_weight": targets["keypoint_weights"][0], "center": center, "size": size,
                "rotation": rotation, "flip": flip, "image_index": image_index}

    @staticmethod
    def _targets(encoded: dict) -> dict:
        """The codec's targets of one person under their names: ``heatmaps (K, h', w')``, or SimCC's
        ``keypoint_x_labels (K, Wx)`` and ``keypoint_y_labels (K, Wy)``."""
        if "keypoint_labels" in encoded:  # RegressionLabel (RLE): normalised coordinates (K, 2)
            return {"keypoint_labels": encoded["keypoint_labels"][0]}
        if "keypoint_x_labels" in encoded:
            return {"keypoint_x_labels": encoded["keypoint_x_labels"][0],
                    "keypoint_y_labels": encoded["keypoint_y_labels"][0]}
        return {"heatmaps": encoded["heatmaps"]}

    def __getitem__(self, index: int) -> dict:
        s = self.sample(index)
        crop = s["crop"] if self.color_rgb else np.ascontiguousarray(s["crop"][..., ::-1])  # to_tensor swaps to RGB
        names = ("heatmaps",) if "heatmaps" in s else ("keypoint_labels",) if "keypoint_labels" in s else (
            "keypoint_x_labels", "keypoint_y_labels")
        return {"image": to_tensor(crop),
                **{k: torch.from_numpy(np.ascontiguousarray(s[k], dtype=np.float32)) for k in names},
                "target_weight": torch.from_numpy(np.ascontiguousarray(s["target_weight"], dtype=np.float32))}

    def _person(self, index: int):
        """``(image index, image, keypoints, box centre, box size)`` of person ``index``; with the reader's
        ``on_error="skip"``, of the first person after it whose image can be read."""
        skip = getattr(self.reader, "on_error", "raise") == "skip"
        for step in range(self.length):
            image_index, keypoints, center, size = self.people[(index + step) % self.length]
            try:
                return image_index, self.reader.load_image(image_index), keypoints, center, size
            except DataError as e:
                if not skip:
                    raise
                log.warning("skipping a person whose image cannot be read: %s", e)
        raise DataError(f"{getattr(self.reader, 'source', self.reader)}: no readable image")
