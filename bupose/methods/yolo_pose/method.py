"""YOLO-Pose as a bupose method: the config mapped onto the model, letterbox training data, loss and decoder, in one
place (Maji et al., "YOLO-Pose", CVPRW 2022)."""
from __future__ import annotations

import numpy as np
import torch

from bupose.methods.base import SeededTrainingSet, keypoint_spec
from bupose.data.build import prepare_dataset
from bupose.data.pipelines import HSV, LetterboxTrain
from bupose.errors import ConfigError
from bupose.methods.yolo_pose.convert import SIGNATURE_KEYS, read_pickled_checkpoint
from bupose.methods.yolo_pose.decode import YOLOPoseDecoder, to_yolo_tensor
from bupose.methods.yolo_pose.loss import YOLOPoseLoss
from bupose.methods.yolo_pose.model import YOLOPose, build_yolo_pose

_GAIN_KEYS = {"BOX": "box_gain", "OBJ": "obj_gain", "CLS": "cls_gain", "KPT": "kpt_gain",
              "KPT_CONF": "kpt_conf_gain", "L1_KPT": "l1_kpt_gain"}


def person_targets(keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(M, 6 + 3K)`` loss targets ``[0, class 0, cx, cy, w, h, x_1, y_1, v_1, ...]`` (input pixels) of the
    people with at least one labelled keypoint inside the input; the batch index (column 0) is set by
    :meth:`YOLOPoseTrainingSet.collate`."""
    labelled = (keypoints[..., 2] > 0).any(1)
    kps, b = keypoints[labelled], boxes[labelled]
    rows = np.zeros((len(kps), 6 + kps.shape[1] * 3), np.float32)
    rows[:, 2] = (b[:, 0] + b[:, 2]) / 2
    rows[:, 3] = (b[:, 1] + b[:, 3]) / 2
    rows[:, 4] = b[:, 2] - b[:, 0]
    rows[:, 5] = b[:, 3] - b[:, 1]
    rows[:, 6:] = kps.reshape(len(kps), 3 * keypoints.shape[1])
    return rows


class YOLOPoseTrainingSet(SeededTrainingSet):
    """Samples of a reader as YOLO-Pose inputs: mosaic / letterbox with random affine and flip, HSV.

    A mosaic takes the item's own sample and three more drawn from the item's generator, which is seeded by
    ``(seed, epoch, index)`` as every bupose training set. Items: ``image (3, S, S)`` RGB in [0, 1], ``targets
    (M, 6 + 3K)`` (:func:`person_targets`), ``mask (S, S)`` loss weights (0 on crowd regions and on people without
    labelled keypoints: the loss gives candidates there no objectness loss, instead of calling them background).
    """

    def __init__(self, reader, pipeline: LetterboxTrain, hsv: HSV | None = None, seed: int = 0, limit: int = 0):
        super().__init__(reader, seed, limit)
        self.pipeline, self.hsv = pipeline, hsv

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        indices = [index]
        if self.pipeline.num_samples == 4:
            indices += [int(i) for i in rng.integers(0, self.length, 3)]
        out = self.pipeline([self.reader[i] for i in indices], rng)
        image = self.hsv(out["image"], rng) if self.hsv is not None else out["image"]
        return {"image": to_yolo_tensor(image), "targets": torch.from_numpy(person_targets(out["keypoints"],
                                                                                             out["boxes"])),
                "mask": torch.from_numpy(out["mask"])}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        targets = []
        for b, item in enumerate(items):
            t = item["targets"].clone()
            t[:, 0] = b
            targets.append(t)
        return {"image": torch.stack([i["image"] for i in items]), "mask": torch.stack([i["mask"] for i in items]),
                "targets": torch.cat(targets)}


class YOLOPoseMethod:
    """``MODEL.NAME: yolo_pose``."""

    name = "yolo_pose"
    title = "YOLO-Pose"
    # the checkpoint hook (bupose.methods): official checkpoints' keys, the reader of official pickled files
    official_keys = SIGNATURE_KEYS
    read_pickled_checkpoint = staticmethod(read_pickled_checkpoint)

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = keypoint_spec(cfg)
        unknown = sorted(set(cfg.LOSS.GAINS) - set(_GAIN_KEYS))
        if unknown:
            raise ConfigError(f"LOSS.GAINS has unknown keys {unknown}; known: {sorted(_GAIN_KEYS)}")
        self._template = build_yolo_pose(cfg.MODEL.SPEC, self.spec.num_keypoints)  # validates MODEL.SPEC early

    @property
    def anchors(self) -> torch.Tensor:
        return self._template.anchors.clone()

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self._template.strides)

    def build_model(self) -> YOLOPose:
        return build_yolo_pose(self.cfg.MODEL.SPEC, self.spec.num_keypoints)

    def train_dataset(self) -> YOLOPoseTrainingSet:
        d, c = self.cfg.DATASET, self.cfg
        reader = prepare_dataset(c, d.TRAIN_SET, min_people=0)
        pipeline = LetterboxTrain(self.spec, input_size=d.INPUT_SIZE, mosaic_prob=d.MOSAIC, degrees=d.MAX_ROTATION,
                                  translate=d.TRANSLATE, scale=d.SCALE_JITTER, shear=d.SHEAR, flip_prob=d.FLIP)
        hsv = HSV(*d.HSV) if any(g > 0 for g in d.HSV) else None
        return YOLOPoseTrainingSet(reader, pipeline, hsv, seed=c.SEED, limit=d.MAX_TRAIN_IMAGES)

    def loss_module(self) -> YOLOPoseLoss:
        gains = {_GAIN_KEYS[k]: float(v) for k, v in self.cfg.LOSS.GAINS.items()}
        return YOLOPoseLoss.official(self.anchors, self.strides, self.spec.num_keypoints, self.spec.sigmas,
                                     input_size=self.cfg.DATASET.INPUT_SIZE, **gains)

    def decoder(self) -> YOLOPoseDecoder:
        t = self.cfg.TEST
        return YOLOPoseDecoder(self.anchors, self.strides, self.spec.flip_index, self.spec.sigmas,
                               input_size=self.cfg.DATASET.INPUT_SIZE, conf_threshold=t.KEYPOINT_THRESHOLD,
                               iou_threshold=t.IOU_THRESHOLD, max_people=t.MAX_NUM_PEOPLE, nms=t.NMS_KIND,
                               oks_threshold=t.OKS_THRESHOLD, score=t.SCORE_KIND, fuse_keypoints=t.FUSE_KEYPOINTS,
                               official_coordinates=t.OFFICIAL_PATH if t.OFFICIAL_COORDINATES else False,
                               max_input_pixels=t.MAX_INPUT_PIXELS)
