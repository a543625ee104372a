"""bupose.codecs.SimCCLabel: equal to mmpose 1.x's SimCCLabel (fixtures made by
tests/fixtures/codecs_simcc_make_fixtures.py from the official code), round trips, batch decoding, config checks."""
import json
from pathlib import Path

import numpy as np
import pytest

from bupose.codecs import CODECS, SimCCLabel, build_codec
from bupose.errors import ConfigError

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "codecs_simcc_mmpose.npz")
CASES = json.loads(str(FIXTURE["cases"]))
ENCODE_CASES = [c for c in CASES if c["kind"] == "encode"]
DECODE_CASES = [c for c in CASES if c["kind"] == "decode"]


def case_id(case):
    args = "-".join(f"{k}={v}" for k, v in case["codec"].items() if k != "type")
    return f"{args}-{case['input_size'][0]}-{case.get('keypoints', '').split('/')[-1]}"


def codec_of(case):
    return build_codec(dict(case["codec"], input_size=case["input_size"]))


def test_registered():
    assert CODECS["SimCCLabel"] is SimCCLabel
    codec = build_codec({"type": "SimCCLabel", "input_size": (192, 256)})
    assert codec.simcc_size == (384, 512) and list(codec.sigma) == [6.0, 6.0] and codec.smoothing_type == "gaussian"


@pytest.mark.parametrize("case", ENCODE_CASES, ids=case_id)
def test_encode_matches_mmpose(case):
    keypoints = FIXTURE[case["keypoints"] + "/keypoints"]
    visible = FIXTURE[case["keypoints"] + "/keypoints_visible"]
    encoded = codec_of(case).encode(keypoints, visible)
    for field in ("keypoint_x_labels", "keypoint_y_labels", "keypoint_weights"):
        expected = FIXTURE[f"{case['expected']}/{field}"]
        assert encoded[field].dtype == np.float32 and encoded[field].shape == expected.shape, field
        np.testing.assert_allclose(encoded[field], expected, rtol=0, atol=1e-6, err_msg=field)


def test_fixture_covers_the_special_cases():
    weights = FIXTURE["192x256/encode/0/multi/keypoint_weights"]
    assert (weights == 0).any() and ((weights > 0) & (weights < 1)).any()
    assert (FIXTURE["192x256/decode/0/keypoints"] == -0.5).any()        # a non-positive row decodes to -1 / ratio
    assert "192x256/decode/4/visibility" in FIXTURE


@pytest.mark.parametrize("case", DECODE_CASES, ids=case_id)
def test_decode_matches_mmpose(case):
    codec = codec_of(case)
    xs, ys = FIXTURE[case["simcc"] + "/simcc_x"], FIXTURE[case["simcc"] + "/simcc_y"]
    for i, (x, y) in enumerate(zip(xs, ys)):
        keypoints, scores = codec.decode((x, y))
        if codec.decode_visibility:
            scores, visibility = scores
            np.testing.assert_allclose(visibility[0], FIXTURE[case["expected"] + "/visibility"][i], rtol=0,
                                       atol=1e-6)
        assert keypoints.shape == (1, x.shape[0], 2) and keypoints.dtype == np.float32
        np.testing.assert_allclose(keypoints[0], FIXTURE[case["expected"] + "/keypoints"][i], rtol=0, atol=1e-4)
        np.testing.assert_allclose(scores[0], FIXTURE[case["expected"] + "/scores"][i], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(xs, FIXTURE[case["simcc"] + "/simcc_x"])  # inputs untouched (mmpose's DARK is
    # in place; ours is not)


@pytest.mark.parametrize("case", DECODE_CASES, ids=case_id)
def test_decode_batch_equals_decode(case):
    codec = codec_of(case)
    xs, ys = FIXTURE[case["simcc"] + "/simcc_x"], FIXTURE[case["simcc"] + "/simcc_y"]
    batch_keypoints, batch_scores = codec.decode_batch((xs, ys))
    singles = [codec.decode((x, y)) for x, y in zip(xs, ys)]
    assert np.array_equal(batch_keypoints, np.concatenate([s[0] for s in singles]), equal_nan=True)
    if codec.decode_visibility:
        batch_scores, singles = batch_scores[0], [(k, s[0]) for k, s in singles]
    assert np.array_equal(batch_scores, np.concatenate([s[1] for s in singles]), equal_nan=True)


def inner_keypoints(seed, input_size, k=17):
    rng = np.random.default_rng(seed)
    w, h = input_size
    return np.stack([rng.uniform(0.1 * w, 0.9 * w, k), rng.uniform(0.1 * h, 0.9 * h, k)], -1)[None].astype(
        np.float32)


@pytest.mark.parametrize("cfg", [{"sigma": 6.0}, {"sigma": 6.0, "use_dark": True}, {"sigma": 3.0,
                                 "simcc_split_ratio": 3.0}, {"smoothing_type": "standard"},
                                 {"sigma": [4.9, 5.66], "normalize": False, "use_dark": True}])
def test_round_trip_is_within_half_a_bin(cfg):
    codec = SimCCLabel(input_size=(192, 256), **cfg)
    keypoints = inner_keypoints(3, (192, 256))
    enc = codec.encode(keypoints, None)
    assert enc["keypoint_x_labels"].shape == (1, 17, codec.simcc_size[0])
    assert enc["keypoint_y_labels"].shape == (1, 17, codec.simcc_size[1])
    assert (enc["keypoint_weights"] == 1).all()
    decoded, scores = codec.decode((enc["keypoint_x_labels"][0], enc["keypoint_y_labels"][0]))
    tolerance = 0.5 / codec.simcc_split_ratio + 1e-5
    assert np.abs(decoded - keypoints).max() <= tolerance
    # exactly the rounded bin without DARK
    if not codec.use_dark:
        np.testing.assert_allclose(decoded, np.around(keypoints * codec.simcc_split_ratio) / codec.simcc_split_ratio,
                                   atol=1e-5)
    peak = 1.0 if codec.smoothing_type == "standard" or not codec.normalize else 1 / (codec.sigma.min() * np.sqrt(
        2 * np.pi))
    np.testing.assert_allclose(scores, peak, rtol=1e-5)


def test_gaussian_labels_are_normalised_densities():
    codec = SimCCLabel(input_size=(192, 256), sigma=6.0)
    enc = codec.encode(np.array([[[96.3, 120.8]]], np.float32), np.ones((1, 1)))
    assert enc["keypoint_x_labels"].sum() == pytest.approx(1.0, abs=1e-4)
    assert enc["keypoint_y_labels"].sum() == pytest.approx(1.0, abs=1e-4)
    assert enc["keypoint_x_labels"][0, 0].argmax() == 193 and enc["keypoint_y_labels"][0, 0].argmax() == 242


def test_label_smoothing_spreads_the_weight():
    codec = SimCCLabel(input_size=(8, 6), smoothing_type="standard", label_smooth_weight=0.2, simcc_split_ratio=1)
    enc = codec.encode(np.array([[[3.0, 2.0], [9.0, 1.0]]]), np.array([[1.0, 1.0]]))
    x = enc["keypoint_x_labels"][0]
    assert x[0, 3] == pytest.approx(0.8) and np.allclose(np.delete(x[0], 3), 0.2 / 7)
    assert (x[1] == 0).all() and enc["keypoint_weights"].tolist() == [[1.0, 0.0]]  # outside: weight 0


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="smoothing_type"):
        SimCCLabel(input_size=(192, 256), smoothing_type="laplace")
    with pytest.raises(ConfigError, match="standard"):
        SimCCLabel(input_size=(192, 256), label_smooth_weight=0.1)
    with pytest.raises(ConfigError, match="label_smooth_weight"):
        SimCCLabel(input_size=(192, 256), smoothing_type="standard", label_smooth_weight=1.5)
    with pytest.raises(ConfigError, match="sigma"):
        SimCCLabel(input_size=(192, 256), sigma=0)
    with pytest.raises(ConfigError, match="did you mean 'sigma'"):
        build_codec({"type": "SimCCLabel", "input_size": (192, 256), "sigmas": 6})
    codec = SimCCLabel(input_size=(192, 256))
    with pytest.raises(ValueError, match="simcc_x"):
        codec.decode(np.zeros((17, 384), np.float32))
    with pytest.raises(ValueError, match="same leading axes"):
        codec.decode_batch((np.zeros((2, 17, 384), np.float32), np.zeros((2, 16, 512), np.float32)))
