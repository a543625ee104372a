"""RTMPose's training recipe pieces in the shared top-down training set and config: the truncated-normal box
jitter, the image-only augmentation (YOLOX HSV, blur, coarse dropout) and the two-stage switch."""
import numpy as np
import pytest
from test_topdown_train import _dataset

from bupose.config import load_config
from bupose.data.pipelines import RTMPosePhotometric, YOLOXHSV
from bupose.errors import ConfigError
from bupose.methods.topdown.method import two_stages
from bupose.methods.topdown.train_data import truncated_normal

pytestmark = pytest.mark.usefixtures("one_thread")


def test_truncated_normal_stays_in_minus_one_to_one_with_the_truncnorm_moments():
    x = truncated_normal(np.random.default_rng(0), 200_000)
    assert np.abs(x).max() <= 1 and abs(x.mean()) < 0.01
    # variance of N(0, 1) truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1)
    phi = np.exp(-0.5) / np.sqrt(2 * np.pi)
    assert x.var() == pytest.approx(1 - 2 * phi / 0.6826894921370859, abs=0.003)


def test_rtmpose_draws_keep_scale_rotation_and_shift_inside_their_ranges():
    ds = _dataset(augmentation="rtmpose", scale_factor=0.4, rotation_factor=80, rotation_prob=0.6, shift_factor=0.16,
                  shift_prob=0.3)
    center, size = np.array([50.0, 60.0]), np.array([40.0, 80.0])
    kps = np.zeros((14, 3))
    draws = [ds.augment(kps, center, size, np.random.default_rng(i)) for i in range(400)]
    scales = np.array([s[1][0] / 40 for s in draws])
    rotations = np.array([s[2] for s in draws])
    shifts = np.array([(s[0] - center) / size for s in draws])
    assert scales.min() >= 0.6 and scales.max() <= 1.4 and scales.std() > 0.15
    assert np.abs(rotations).max() <= 80 and 0.5 < (rotations != 0).mean() < 0.7
    moved = np.abs(shifts).max(1) > 0
    assert np.abs(shifts).max() <= 0.16 and 0.2 < moved.mean() < 0.4
    hrnet = _dataset(scale_factor=0.4, rotation_factor=40)
    rot = np.array([hrnet.augment(kps, center, size, np.random.default_rng(i))[2] for i in range(400)])
    assert np.abs(rot).max() > 40  # the official law: N(0, r) clipped to 2r


def test_the_rtmpose_photometric_chain_changes_only_the_image_and_is_seeded():
    crop = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    aug = RTMPosePhotometric(dropout_prob=1.0)
    a, b = aug(crop, np.random.default_rng(5)), aug(crop, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == crop.shape and a.dtype == np.uint8
    holes = (a == 0).all(2)
    assert 0.2 * 0.2 * 0.9 <= holes.mean() <= 0.4 * 0.4 + 0.05  # one hole of 0.2..0.4 of each side
    assert not (RTMPosePhotometric(dropout_prob=0.0)(crop, np.random.default_rng(5)) == 0).all(2).any()
    grey = np.full((8, 8, 3), 128, np.uint8)
    out = [YOLOXHSV()(grey, np.random.default_rng(i)) for i in range(20)]
    assert any(not np.array_equal(o, grey) for o in out) and all(o.dtype == np.uint8 for o in out)


def test_the_second_stage_switches_the_augmentation_at_its_epoch_and_back_on_resume():
    ds = _dataset(augmentation="rtmpose", scale_factor=0.4, rotation_factor=80, stage2_epoch=8,
                  stage2={"scale_factor": 0.25, "rotation_factor": 60, "dropout_prob": 0.5})
    ds.set_epoch(7)
    assert (ds.scale_factor, ds.rotation_factor, ds.dropout_prob) == (0.4, 80, 1.0)
    ds.set_epoch(8)
    assert (ds.scale_factor, ds.rotation_factor, ds.dropout_prob) == (0.25, 60, 0.5)
    assert ds._photometric().dropout_prob == 0.5
    ds.set_epoch(0)  # a run resumed earlier gets stage 1 back
    assert ds.scale_factor == 0.4
    item = ds[0]
    assert item["image"].shape == (3, 128, 96)
    with pytest.raises(ValueError, match="stage2 cannot set"):
        _dataset(stage2={"sigma": 3})


def test_the_config_maps_onto_the_two_stages_and_refuses_half_a_switch():
    cfg = load_config(None, ["TRAIN.END_EPOCH", "20", "TRAIN.STAGE2_EPOCHS", "5", "DATASET.STAGE2",
                             "{SCALE_FACTOR: 0.25, ROT_FACTOR: 60, DROPOUT_PROB: 0.5}"])
    assert two_stages(cfg) == (15, {"scale_factor": 0.25, "rotation_factor": 60.0, "dropout_prob": 0.5})
    assert two_stages(load_config(None, [])) == (None, {})
    with pytest.raises(ConfigError, match="TRAIN.STAGE2_EPOCHS"):
        two_stages(load_config(None, ["DATASET.STAGE2", "{FLIP: 0}"]))
    # a run shortened below the second stage's length trains stage 1 only
    assert two_stages(load_config(None, ["TRAIN.END_EPOCH", "5", "TRAIN.STAGE2_EPOCHS", "5", "DATASET.STAGE2",
                                         "{FLIP: 0}"])) == (None, {})
    with pytest.raises(ConfigError, match="did you mean 'SCALE_FACTOR'"):
        load_config(None, ["DATASET.STAGE2", "{SCALE_FACTR: 0.2}"])
    with pytest.raises(ConfigError, match="DATASET.DROPOUT_PROB"):
        load_config(None, ["DATASET.STAGE2", "{DROPOUT_PROB: 2}"])


def test_the_config_accepts_exactly_the_keys_the_training_set_can_switch():
    from bupose.config import NESTED_KEYS
    from bupose.methods.topdown.train_data import STAGE_KEYS, TopDownTrainingSet

    assert NESTED_KEYS["DATASET.STAGE2"] == ("DATASET", tuple(STAGE_KEYS))
    assert TopDownTrainingSet.STAGE_ATTRIBUTES == tuple(STAGE_KEYS.values())
