"""The top-down family as bupose methods: the config mapped onto the codec, the model, the training set, the loss,
the test-time decoder and the person-box source, in one place.

``MODEL.NAME`` ``topdown_hrnet`` (Sun et al., "Deep High-Resolution Representation Learning for Human Pose
Estimation", CVPR 2019) and ``topdown_resnet`` (Xiao et al., "Simple Baselines for Human Pose Estimation and
Tracking", ECCV 2018); ``MODEL.CODEC`` selects the heatmap codec: MSRA (default), DARK (``unbiased: true``; Zhang et
al., CVPR 2020) or UDP (``UDPHeatmap``, which also switches the crops to the UDP convention; Huang et al., CVPR
2020); ``MODEL.CODEC: {type: SimCCLabel, ...}`` makes the same backbones SimCC models (Li et al., "SimCC: a Simple
Coordinate Classification Perspective for Human Pose Estimation", ECCV 2022): the SimCC head, the KL loss
(``KLDiscretLoss``) and the 1-D decoding; ``MODEL.CODEC: {type: RegressionLabel}`` makes them RLE models (Li et al.,
"Human Pose Regression with Residual Log-likelihood Estimation", ICCV 2021): the regression head with its flow, the
RLE loss and coordinate decoding.
"""
from __future__ import annotations

import logging

from bupose.codecs import IntegralRegressionLabel, RegressionLabel, SimCCLabel, UDPHeatmap, build_codec
from bupose.errors import ConfigError
from bupose.methods.base import keypoint_spec
from bupose.methods.topdown.convert import HRNET_SIGNATURE_KEYS, RESNET_SIGNATURE_KEYS
from bupose.methods.topdown.loss import (KeypointMSELoss, KeypointOHKMMSELoss, KLDiscretLoss, TopDownHeatmapLoss,
                                        TopDownRLELoss, TopDownSimCCLoss)
from bupose.methods.topdown.train_data import STAGE_KEYS, TopDownTrainingSet

log = logging.getLogger("bupose")

MODEL_STRIDE = 4  # the heatmap heads of HRNet and SimpleBaseline output 1/4 of the input size


def codec_config(cfg) -> dict:
    """The mmpose-style codec dict of ``cfg``: ``MODEL.CODEC`` with ``input_size`` / ``heatmap_size`` from
    ``MODEL.IMAGE_SIZE`` / ``HEATMAP_SIZE`` (they must agree where both are given) and ``sigma`` from ``MODEL.SIGMA``
    when missing; empty: ``MSRAHeatmap`` with ``MODEL.SIGMA``. ``SimCCLabel`` takes ``input_size`` only (its
    ``sigma``, in bins, is its own: mmpose's default 6)."""
    m = cfg.MODEL
    codec = dict(m.CODEC) if m.CODEC else {"type": "MSRAHeatmap"}
    sizes = (("input_size", "IMAGE_SIZE", m.IMAGE_SIZE), ("heatmap_size", "HEATMAP_SIZE", m.HEATMAP_SIZE))
    for key, name, value in sizes[:1] if codec.get("type") in ("SimCCLabel", "RegressionLabel") else sizes:
        value = tuple(int(v) for v in value)
        given = codec.setdefault(key, value)
        if tuple(int(v) for v in given) != value:
            raise ConfigError(f"MODEL.CODEC.{key} {list(given)} differs from MODEL.{name} {list(value)}; give it "
                              f"in one place")
    if codec.get("type") in ("MSRAHeatmap", "UDPHeatmap"):
        codec.setdefault("sigma", m.SIGMA)
    return codec


def two_stages(cfg) -> tuple[int | None, dict]:
    """``(first epoch of the second stage, its training-set attributes)`` from ``TRAIN.STAGE2_EPOCHS`` and
    ``DATASET.STAGE2`` (RTMPose's switch ``stage2_num_epochs`` before the end); ``(None, {})`` for one stage."""
    n, stage2 = cfg.TRAIN.STAGE2_EPOCHS, dict(cfg.DATASET.STAGE2)
    if not n and not stage2:
        return None, {}
    if not n or not stage2:
        given, missing = ("DATASET.STAGE2", "TRAIN.STAGE2_EPOCHS") if stage2 else ("TRAIN.STAGE2_EPOCHS",
                                                                                   "DATASET.STAGE2")
        raise ConfigError(f"{given} is set but {missing} is not: a second augmentation stage needs both (the number "
                          f"of last epochs, and the DATASET keys that change)")
    if n >= cfg.TRAIN.END_EPOCH:  # a shortened run (TRAIN.END_EPOCH 1 for a smoke test): stage 1 only
        log.warning("TRAIN.STAGE2_EPOCHS %d is not below TRAIN.END_EPOCH %d: the run trains with the first stage's "
                    "augmentation only", n, cfg.TRAIN.END_EPOCH)
        return None, {}
    return cfg.TRAIN.END_EPOCH - n, {STAGE_KEYS[k]: v for k, v in stage2.items()}


class TopDownMethod:
    """A top-down heatmap method; the subclasses fix ``MODEL.NAME``."""

    name = ""
    title = ""

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = keypoint_spec(cfg)
        if not cfg.MODEL.SPEC:
            raise ConfigError(f"MODEL.SPEC is empty: {self.name} needs the official MODEL.EXTRA block (see "
                              f"experiments/coco/topdown_*.yaml)")
        w, h = cfg.MODEL.IMAGE_SIZE
        hw, hh = cfg.MODEL.HEATMAP_SIZE
        if (w, h) != (hw * MODEL_STRIDE, hh * MODEL_STRIDE):
            raise ConfigError(f"MODEL.HEATMAP_SIZE {[hw, hh]} must be MODEL.IMAGE_SIZE {[w, h]} / {MODEL_STRIDE} "
                              f"(the models' output stride)")
        self.codec = build_codec(codec_config(cfg))
        if isinstance(self.codec, IntegralRegressionLabel):
            raise ConfigError("MODEL.CODEC IntegralRegressionLabel: bupose has this codec (targets and decoding, equal "
                              "to mmpose's) but no integral-regression (DSNT / IPR) head to train with it; use "
                              "MSRAHeatmap, UDPHeatmap, SimCCLabel or RegressionLabel")
        self.udp = isinstance(self.codec, UDPHeatmap)
        self.simcc = isinstance(self.codec, SimCCLabel)
        if self.simcc and cfg.LOSS.USE_OHKM:
            raise ConfigError("LOSS.USE_OHKM is a heatmap loss option; a SimCC codec trains with KLDiscretLoss")
        self.regression = isinstance(self.codec, RegressionLabel)
        if self.regression and cfg.LOSS.USE_OHKM:
            raise ConfigError("LOSS.USE_OHKM is a heatmap loss option; a RegressionLabel codec trains with RLELoss")
        self._rle_loss = None  # the RLE head's loss (its flow is a part of the model), set by build_model

    def build_model(self):
        from bupose.methods.topdown.model import build_topdown_model

        model = build_topdown_model(self.name, spec=self.cfg.MODEL.SPEC, num_joints=self.spec.num_keypoints,
                                    codec=self.codec)
        if self.regression:  # the trainer's loss uses this model's flow (see loss_module)
            model.head.loss_module.use_target_weight = bool(self.cfg.LOSS.USE_TARGET_WEIGHT)
            self._rle_loss = model.head.loss_module
        return model

    def load_pretrained(self, model, path) -> None:
        """``MODEL.PRETRAINED``: ImageNet weights into the backbone only (``MODEL.SPEC.PRETRAINED_LAYERS``), as the
        official ``init_weights``; the trainer calls this instead of its generic loader."""
        from bupose.methods.topdown.convert import load_pretrained_backbone

        got = load_pretrained_backbone(getattr(model, "module", model), path)
        log.info("MODEL.PRETRAINED: %d backbone entries loaded from %s (%d of the file unused)", len(got["loaded"]),
                 path, len(got["unused"]))

    def train_dataset(self) -> TopDownTrainingSet:
        from bupose.data.build import prepare_dataset

        d, c = self.cfg.DATASET, self.cfg
        reader = prepare_dataset(c, d.TRAIN_SET, min_people=1)
        photometric = None
        if d.PHOTOMETRIC and d.AUGMENTATION == "hrnet":
            from bupose.data.pipelines import Photometric

            photometric = Photometric()
        stage2_epoch, stage2 = two_stages(c)
        return TopDownTrainingSet(reader, spec=self.spec, codec=self.codec, udp=self.udp,
                                  scale_factor=d.SCALE_FACTOR, rotation_factor=d.ROT_FACTOR, flip_prob=d.FLIP,
                                  half_body_prob=d.PROB_HALF_BODY, half_body_min_keypoints=d.NUM_JOINTS_HALF_BODY,
                                  color_rgb=d.COLOR_RGB, photometric=photometric, augmentation=d.AUGMENTATION,
                                  shift_factor=d.SHIFT_FACTOR, shift_prob=d.SHIFT_PROB, dropout_prob=d.DROPOUT_PROB,
                                  stage2_epoch=stage2_epoch, stage2=stage2, seed=c.SEED, limit=d.MAX_TRAIN_IMAGES)

    def loss_module(self) -> TopDownHeatmapLoss | TopDownSimCCLoss | TopDownRLELoss:
        """The trainer's loss. RLE (a RegressionLabel codec): the RLE loss of the model built last by
        :meth:`build_model` (its flow is that model's ``head.loss_module.flow_model``, trained with it)."""
        loss = self.cfg.LOSS
        if self.regression:
            if self._rle_loss is None:
                raise RuntimeError("RLE's loss uses the model's flow: call build_model() before loss_module()")
            return TopDownRLELoss(self._rle_loss)
        if self.simcc:  # mmpose's SimCC configs: KLDiscretLoss(use_target_weight=True), beta 1, no label soft-max
            return TopDownSimCCLoss(KLDiscretLoss(use_target_weight=loss.USE_TARGET_WEIGHT))
        if loss.USE_OHKM:
            return TopDownHeatmapLoss(KeypointOHKMMSELoss(use_target_weight=loss.USE_TARGET_WEIGHT, topk=loss.TOPK))
        return TopDownHeatmapLoss(KeypointMSELoss(use_target_weight=loss.USE_TARGET_WEIGHT))

    def decoder(self):
        from bupose.methods.topdown.decode import build_decoder

        return build_decoder(self.cfg, self.spec, self.codec)

    def box_source(self, reader):
        """Where the test-time person boxes of ``reader``'s images come from (``TEST.USE_GT_BBOX``,
        ``TEST.COCO_BBOX_FILE`` or ``TEST.DETECTOR_CFG``)."""
        from bupose.methods.topdown.boxes import build_box_source

        return build_box_source(self.cfg, reader, self.spec)


class TopDownHRNetMethod(TopDownMethod):
    """``MODEL.NAME: topdown_hrnet``; ``MODEL.SPEC`` is the official HRNet ``MODEL.EXTRA`` block."""

    name = "topdown_hrnet"
    title = "top-down HRNet"
    official_keys = HRNET_SIGNATURE_KEYS  # the checkpoint hook (bupose.methods): recognises official checkpoints


class TopDownResNetMethod(TopDownMethod):
    """``MODEL.NAME: topdown_resnet`` (SimpleBaseline); ``MODEL.SPEC`` is the official pose_resnet ``MODEL.EXTRA``
    block."""

    name = "topdown_resnet"
    title = "top-down SimpleBaseline (ResNet)"
    official_keys = RESNET_SIGNATURE_KEYS
