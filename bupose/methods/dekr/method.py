"""DEKR as a bupose method: the config mapped onto DEKR's model, training data, loss and decoder, in one place."""
from __future__ import annotations

import numpy as np
import torch

from bupose.methods.base import SeededTrainingSet, keypoint_spec
from bupose.data import geometry as G
from bupose.data.build import prepare_dataset
from bupose.data.pipelines import BottomUpAffine, Photometric, to_tensor
from bupose.errors import ConfigError
from bupose.methods.dekr.convert import SIGNATURE_KEYS
from bupose.methods.dekr.decode import DEKRDecoder
from bupose.methods.dekr.loss import DEKRLoss
from bupose.methods.dekr.model import DEKR, build_dekr
from bupose.methods.dekr.targets import DEKRTargetEncoder, person_areas, person_centers

STRIDE_MODE = "corner"  # x_out = x_in / 4: the convention of the official weights and test code


class DEKRTrainingSet(SeededTrainingSet):
    """Samples of a reader turned into DEKR inputs and targets.

    Augmentation is seeded by ``(seed, epoch, index)``, so an epoch yields the same batches whatever the number of
    workers or processes, and a resumed run repeats an interrupted epoch exactly. Items: ``image (3, S, S)``,
    ``heatmap`` / ``heatmap_weight`` ``(K+1, S/4, S/4)``, ``offset`` / ``offset_weight`` ``(2K, S/4, S/4)``.
    """

    def __init__(self, reader, pipeline: BottomUpAffine, encoder: DEKRTargetEncoder, photometric=None,
                 seed: int = 0, limit: int = 0):
        super().__init__(reader, seed, limit)
        self.pipeline, self.encoder, self.photometric = pipeline, encoder, photometric

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        sample = self.reader[index]
        out = self.pipeline(sample, rng)
        image = out["image"]
        if self.photometric is not None:
            image = self.photometric(image, rng)
        stride = self.pipeline.output_stride
        to_output = G.compose(out["matrix"], G.stride_matrix(stride, STRIDE_MODE))
        centers = person_centers(sample.keypoints)
        centers[:, :2] = G.warp_points(centers[:, :2], to_output)
        areas = person_areas(sample.keypoints) * G.matrix_scale(to_output) ** 2
        kps = out["keypoints"].astype(np.float64)
        kps[..., :2] = G.warp_points(kps[..., :2], G.stride_matrix(stride, STRIDE_MODE))
        size = self.pipeline.input_size // stride
        t = self.encoder(kps, (size, size), out["mask"], centers, areas)
        return {"image": to_tensor(image), "heatmap": torch.from_numpy(t.heatmap),
                "heatmap_weight": torch.from_numpy(t.heatmap_weight), "offset": torch.from_numpy(t.offset),
                "offset_weight": torch.from_numpy(t.offset_weight)}


class DEKRMethod:
    """``MODEL.NAME: hrnet_dekr``."""

    name = "hrnet_dekr"
    title = "DEKR"
    official_keys = SIGNATURE_KEYS  # the checkpoint hook (bupose.methods): recognises official DEKR checkpoints

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = keypoint_spec(cfg)
        if not cfg.MODEL.SPEC:
            raise ConfigError("MODEL.SPEC is empty: hrnet_dekr needs the STAGES / HEAD_HEATMAP / HEAD_OFFSET "
                              "structure (see experiments/*/dekr_*.yaml)")

    def build_model(self) -> DEKR:
        return build_dekr(self.cfg.MODEL.SPEC, self.spec.num_keypoints, self.cfg.MODEL.ADAPTIVE_CONV)

    def train_dataset(self) -> DEKRTrainingSet:
        d, c = self.cfg.DATASET, self.cfg
        reader = prepare_dataset(c, d.TRAIN_SET, min_people=1)
        pipeline = BottomUpAffine(self.spec, input_size=d.INPUT_SIZE, output_stride=d.OUTPUT_STRIDE,
                                  max_rotation=d.MAX_ROTATION, min_scale=d.MIN_SCALE, max_scale=d.MAX_SCALE,
                                  max_translate=d.MAX_TRANSLATE, flip_prob=d.FLIP, stride_mode=STRIDE_MODE)
        encoder = DEKRTargetEncoder(self.spec.num_keypoints, sigma=d.SIGMA, center_sigma=d.CENTER_SIGMA,
                                    bg_weight=d.BG_WEIGHT, radius=d.OFFSET_RADIUS)
        photometric = Photometric() if d.PHOTOMETRIC else None
        return DEKRTrainingSet(reader, pipeline, encoder, photometric, seed=c.SEED, limit=d.MAX_TRAIN_IMAGES)

    def loss_module(self) -> DEKRLoss:
        return DEKRLoss(self.cfg.LOSS.HEATMAPS_LOSS_FACTOR, self.cfg.LOSS.OFFSETS_LOSS_FACTOR)

    def decoder(self) -> DEKRDecoder:
        t = self.cfg.TEST
        rescore = None
        if t.RESCORE_FILE:
            from bupose.methods.dekr.rescore import load_rescore_net, rescore as apply_rescore

            net = load_rescore_net(t.RESCORE_FILE, self.spec)
            rescore = lambda people: apply_rescore(people, net, self.spec)  # noqa: E731
        return DEKRDecoder(self.spec.flip_index, input_size=self.cfg.DATASET.INPUT_SIZE,
                           output_stride=self.cfg.DATASET.OUTPUT_STRIDE, max_people=t.MAX_NUM_PEOPLE,
                           keypoint_threshold=t.KEYPOINT_THRESHOLD, nms_dist=t.NMS_THRE, nms_num=t.NMS_NUM_THRE,
                           decrease=t.DECREASE, pool_thresholds=(t.POOL_THRESHOLD1, t.POOL_THRESHOLD2),
                           flip_shift=t.FLIP_SHIFT, rescore=rescore,
                           max_input_pixels=t.MAX_INPUT_PIXELS)
