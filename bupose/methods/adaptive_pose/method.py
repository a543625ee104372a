"""AdaptivePose as a bupose method (Xiao et al., "AdaptivePose: Human Parts as Adaptive Points", AAAI 2022): the
config mapped onto the model, the training data, the loss and the decoder, in one place.

Training data come from bupose's square affine crop (:class:`~bupose.data.pipelines.BottomUpAffine`, as DEKR),
not CenterNet's affine: the official random crop (scale from {0.6, ..., 1.3}, a random centre at least 128 pixels
inside the image, rotation N(0, 15) clipped at 30 with probability 0.5, flip 0.5, CenterNet's lighting jitter) is
approximated by the ``DATASET.*`` ranges of the experiment files (uniform scale 0.6-1.3, translation, rotation
+-15, flip 0.5, :class:`~bupose.data.pipelines.Photometric`). Parity of the training crops is not needed: nothing
learned depends on how a crop is drawn, only on the geometry staying consistent, which one matrix per sample
guarantees. The output stride step is ``x_out = x_in / 4`` (``"corner"``), the convention of the official weights
and of the decoder; the input is normalised as CenterNet's (BGR, its mean / std), as the official weights expect.
"""
from __future__ import annotations

import numpy as np
import torch

from bupose.methods.base import SeededTrainingSet, keypoint_spec
from bupose.data import geometry as G
from bupose.data.build import prepare_dataset
from bupose.data.pipelines import BottomUpAffine, Photometric
from bupose.errors import ConfigError
from bupose.methods.adaptive_pose.convert import DLA_SIGNATURE_KEYS, SIGNATURE_KEYS
from bupose.methods.adaptive_pose.decode import FLIP_MODES, NMS_KINDS, AdaptivePoseDecoder, to_centernet_tensor
from bupose.methods.adaptive_pose.loss import AdaptivePoseLoss, bone_edges
from bupose.methods.adaptive_pose.model import (AdaptivePose, DLAAdaptivePose, build_adaptive_pose,
                                                build_dla_adaptive_pose)
from bupose.methods.adaptive_pose.targets import AdaptivePoseTargetEncoder
from bupose.models.layers import set_adaptive_impl

STRIDE_MODE = "corner"  # x_out = x_in / 4: CenterNet's convention, that of the official weights and the decoder
OUTPUT_STRIDE = 4  # the model's (HRNet's highest-resolution branch; DLA-34's up-sampled level 2)


class AdaptivePoseTrainingSet(SeededTrainingSet):
    """Samples of a reader turned into AdaptivePose inputs and targets.

    Augmentation is seeded by ``(seed, epoch, index)``, so an epoch yields the same batches whatever the number of
    workers or processes. Items (``S`` the input size, ``s = S / 4``, ``M`` the encoder's ``max_people``): ``image
    (3, S, S)`` (CenterNet-normalised BGR), ``center_heatmap`` / ``mask (1, s, s)``, ``aux_heatmap (K, s, s)``,
    ``index (M,)``, ``offset`` / ``offset_weight (M, 2K)``, ``area``, ``person_weight (M,)`` -- the fields of
    :class:`~bupose.methods.adaptive_pose.targets.AdaptivePoseTargets`.
    """

    def __init__(self, reader, pipeline: BottomUpAffine, encoder: AdaptivePoseTargetEncoder, photometric=None,
                 seed: int = 0, limit: int = 0):
        if pipeline.stride_mode != STRIDE_MODE:
            raise ConfigError(f"AdaptivePoseTrainingSet: the pipeline's stride_mode must be {STRIDE_MODE!r} (the "
                              f"mask must match the targets), got {pipeline.stride_mode!r}")
        super().__init__(reader, seed, limit)
        self.pipeline, self.encoder, self.photometric = pipeline, encoder, photometric

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        out = self.pipeline(self.reader[index], rng)
        image = out["image"]
        if self.photometric is not None:
            image = self.photometric(image, rng)
        stride = self.pipeline.output_stride
        kps = out["keypoints"].astype(np.float64)
        kps[..., :2] = G.warp_points(kps[..., :2], G.stride_matrix(stride, STRIDE_MODE))
        size = self.pipeline.output_size
        t = self.encoder(kps, (size, size), out["mask"], out["areas"].astype(np.float64) / stride ** 2)
        return {"image": to_centernet_tensor(image), **{k: torch.from_numpy(v) for k, v in t.as_dict().items()}}


class AdaptivePoseMethod:
    """``MODEL.NAME: hrnet_adaptive_pose``: AdaptivePose on HRNet."""

    name = "hrnet_adaptive_pose"
    backbone = "HRNet"
    title = "AdaptivePose on HRNet"
    official_keys = SIGNATURE_KEYS  # the checkpoint hook (bupose.methods): recognises official checkpoints

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = keypoint_spec(cfg)
        d, t = cfg.DATASET, cfg.TEST
        self.check_spec(cfg.MODEL.SPEC)
        if d.OUTPUT_STRIDE != OUTPUT_STRIDE:
            raise ConfigError(f"DATASET.OUTPUT_STRIDE is {d.OUTPUT_STRIDE}; {self.name} outputs at stride "
                              f"{OUTPUT_STRIDE}")
        if d.INPUT_SIZE % 32:
            raise ConfigError(f"DATASET.INPUT_SIZE is {d.INPUT_SIZE}; {self.name} needs a multiple of 32 "
                              f"(the {self.backbone}'s lowest resolution is 1/32)")
        if t.FLIP_MODE not in FLIP_MODES:
            raise ConfigError(f"TEST.FLIP_MODE is {t.FLIP_MODE!r}; expected one of {list(FLIP_MODES)}")
        if t.POSE_NMS not in NMS_KINDS:
            raise ConfigError(f"TEST.POSE_NMS is {t.POSE_NMS!r}; expected one of {list(NMS_KINDS)}")
        if t.MAX_NUM_PEOPLE < 1:
            raise ConfigError(f"TEST.MAX_NUM_PEOPLE is {t.MAX_NUM_PEOPLE}; expected at least 1")

    def check_spec(self, spec) -> None:
        if not spec:
            raise ConfigError("MODEL.SPEC is empty: hrnet_adaptive_pose needs at least the HRNet STAGES (see "
                              "experiments/*/adaptive_pose_*.yaml)")

    def make_model(self) -> AdaptivePose:
        return build_adaptive_pose(self.cfg.MODEL.SPEC, self.spec)

    def build_model(self) -> AdaptivePose | DLAAdaptivePose:
        return set_adaptive_impl(self.make_model(), self.cfg.MODEL.ADAPTIVE_CONV)  # the DCNv2 layers

    def train_dataset(self) -> AdaptivePoseTrainingSet:
        d, c = self.cfg.DATASET, self.cfg
        reader = prepare_dataset(c, d.TRAIN_SET, min_people=1)
        pipeline = BottomUpAffine(self.spec, input_size=d.INPUT_SIZE, output_stride=OUTPUT_STRIDE,
                                  max_rotation=d.MAX_ROTATION, min_scale=d.MIN_SCALE, max_scale=d.MAX_SCALE,
                                  max_translate=d.MAX_TRANSLATE, flip_prob=d.FLIP, stride_mode=STRIDE_MODE)
        encoder = AdaptivePoseTargetEncoder(num_joints=self.spec.num_keypoints)
        photometric = Photometric() if d.PHOTOMETRIC else None
        return AdaptivePoseTrainingSet(reader, pipeline, encoder, photometric, seed=c.SEED, limit=d.MAX_TRAIN_IMAGES)

    def loss_module(self) -> AdaptivePoseLoss:
        loss = self.cfg.LOSS
        aux = loss.AUX_FOCAL_FACTOR
        if aux and not self.cfg.MODEL.SPEC.get("AUX_HEATMAP", True):
            raise ConfigError("LOSS.AUX_FOCAL_FACTOR > 0 needs the auxiliary heatmap head: set MODEL.SPEC.AUX_HEATMAP "
                              "true or LOSS.AUX_FOCAL_FACTOR 0")
        return AdaptivePoseLoss(sigmas=self.spec.sigmas, center_factor=loss.CENTER_FOCAL_FACTOR,
                                offset_factor=loss.POSE_L1_FACTOR, aux_factor=aux, oks_factor=loss.OKS_FACTOR,
                                bone_edges=bone_edges(self.spec) if loss.BONE_L1 else None)

    def decoder(self) -> AdaptivePoseDecoder:
        t = self.cfg.TEST
        return AdaptivePoseDecoder(flip_index=self.spec.flip_index, sigmas=self.spec.sigmas,
                                   input_size=self.cfg.DATASET.INPUT_SIZE, output_stride=OUTPUT_STRIDE,
                                   max_people=t.MAX_NUM_PEOPLE, threshold=t.KEYPOINT_THRESHOLD, flip=t.FLIP_MODE,
                                   nms=t.POSE_NMS, oks_threshold=t.OKS_THRESHOLD,
                                   max_input_pixels=t.MAX_INPUT_PIXELS)


class DLAAdaptivePoseMethod(AdaptivePoseMethod):
    """``MODEL.NAME: dla_adaptive_pose``: AdaptivePose on DLA-34 (the official ``--arch dla_34`` model); the same
    data, loss and decoding as :class:`AdaptivePoseMethod`. ``MODEL.SPEC`` may be empty (the official model)."""

    name = "dla_adaptive_pose"
    backbone = "DLA-34"
    title = "AdaptivePose on DLA-34"
    official_keys = DLA_SIGNATURE_KEYS

    def check_spec(self, spec) -> None:
        pass  # every field is optional; build_dla_adaptive_pose checks them

    def make_model(self) -> DLAAdaptivePose:
        return build_dla_adaptive_pose(self.cfg.MODEL.SPEC, self.spec)
