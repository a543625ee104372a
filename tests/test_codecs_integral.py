"""IntegralRegressionLabel (mmpose 1.x's integral-regression codec: Sun et al., ECCV 2018; DSNT): equal to mmpose's
on the fixture made by tests/fixtures/codecs_integral_make_fixtures.py from mmpose's own code, plus round trips,
the registry and argument checks."""
import json
from pathlib import Path

import numpy as np
import pytest

from bupose.codecs import CODECS, IntegralRegressionLabel, MSRAHeatmap, RegressionLabel, build_codec
from bupose.errors import ConfigError

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "codecs_integral_mmpose.npz")
README = json.loads(str(FIXTURE["README"]))
CASES = json.loads(str(FIXTURE["cases"]))
ENCODE_CASES = [c for c in CASES if c["kind"] == "encode"]
DECODE_CASES = [c for c in CASES if c["kind"] == "decode"]


def case_id(case):
    args = "-".join(f"{k}={v}" for k, v in case["codec"].items())
    name = case["keypoints"].split("/")[-1] if case["kind"] == "encode" else case["encoded"].split("/")[-2]
    return f"{case['input_size'][0]}x{case['input_size'][1]}-{args}-{name}"


def codec_of(case):
    return build_codec(dict(case["codec"], type="IntegralRegressionLabel", input_size=case["input_size"],
                            heatmap_size=case["heatmap_size"]))


@pytest.mark.parametrize("case", ENCODE_CASES, ids=case_id)
def test_encode_matches_mmpose(case):
    keypoints = FIXTURE[case["keypoints"] + "/keypoints"]
    visible = FIXTURE[case["keypoints"] + "/keypoints_visible"]
    encoded = codec_of(case).encode(keypoints, visible)
    assert set(encoded) == {"keypoint_labels", "heatmaps", "keypoint_weights"}
    for key in ("keypoint_labels", "heatmaps", "keypoint_weights"):
        expected = FIXTURE[f"{case['expected']}/{key}"]
        assert encoded[key].dtype == np.float32 and encoded[key].shape == expected.shape, key
        np.testing.assert_allclose(encoded[key], expected, rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_array_equal(keypoints, FIXTURE[case["keypoints"] + "/keypoints"])  # inputs untouched


def test_fixture_covers_the_special_cases():
    assert README["mmpose_rejects_multi"]  # mmpose's codec asserts N = 1; bupose takes the maximum over people
    cfgs = {json.dumps(c["codec"], sort_keys=True) for c in ENCODE_CASES}
    assert any('"unbiased": true' in c for c in cfgs) and any('"normalize": false' in c for c in cfgs)
    assert len({c["codec"].get("sigma") for c in ENCODE_CASES}) >= 3
    assert {c["keypoints"].split("/")[-1] for c in ENCODE_CASES} == {"single", "random", "multi"}
    single = "192x256/encode/0/single"
    # inside, just left of the crop, far outside, on the last pixel, half a pixel beyond it, invisible
    assert FIXTURE[single + "/keypoint_weights"].tolist() == [[1, 0, 0, 1, 0, 0]]
    sums = FIXTURE[single + "/heatmaps"].sum(axis=(1, 2))
    np.testing.assert_allclose(sums[[0, 1, 3]], 1, atol=1e-5)      # normalised, also the clipped Gaussian
    assert sums[2] == 0 and sums[5] == 0                             # far outside, invisible: nothing drawn
    assert FIXTURE["192x256/encode/1/single/heatmaps"].max() == 1   # normalize=False keeps the peak 1


@pytest.mark.parametrize("case", DECODE_CASES, ids=case_id)
def test_decode_and_decode_batch_match_mmpose(case):
    codec = codec_of(case)
    x = FIXTURE[case["encoded"]]
    expected_keypoints = FIXTURE[case["expected"] + "/keypoints"]
    expected_scores = FIXTURE[case["expected"] + "/scores"]
    for i in range(len(x)):
        for item in (x[i], x[i][None]):
            keypoints, scores = codec.decode(item)
            assert keypoints.shape == (1, x.shape[1], 2) and scores.shape == (1, x.shape[1])
            np.testing.assert_allclose(keypoints[0], expected_keypoints[i], rtol=0, atol=1e-4)
            np.testing.assert_allclose(scores[0], expected_scores[i], rtol=0, atol=1e-6)
    keypoints, scores = codec.decode_batch(x)
    np.testing.assert_allclose(keypoints, expected_keypoints, rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(x, FIXTURE[case["encoded"]])  # inputs untouched


def test_is_msra_heatmaps_next_to_regression_labels():
    keypoints = np.array([[[40.2, 80.9], [150.0, 30.5], [191.0, 255.0]]], np.float32)
    visible = np.array([[1.0, 1.0, 0.0]], np.float32)
    for unbiased in (False, True):
        codec = IntegralRegressionLabel(input_size=(192, 256), heatmap_size=(48, 64), sigma=2, unbiased=unbiased,
                                        normalize=False)
        msra = MSRAHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2, unbiased=unbiased)
        enc = codec.encode(keypoints, visible)
        np.testing.assert_array_equal(enc["heatmaps"], msra.encode(keypoints, visible)["heatmaps"])
        labels = RegressionLabel(input_size=(192, 256)).encode(keypoints, visible)
        np.testing.assert_array_equal(enc["keypoint_labels"], labels["keypoint_labels"])
        np.testing.assert_array_equal(enc["keypoint_weights"], labels["keypoint_weights"])
    assert isinstance(codec.heatmap_codec, MSRAHeatmap) and isinstance(codec.keypoint_codec, RegressionLabel)


def test_round_trip_registry_and_multi_instance():
    assert CODECS["IntegralRegressionLabel"] is IntegralRegressionLabel
    # mmpose's IPR / DSNT config
    codec = build_codec(dict(type="IntegralRegressionLabel", input_size=(256, 256), heatmap_size=(64, 64), sigma=2.0,
                             normalize=True))
    assert codec.normalize and not codec.unbiased and codec.blur_kernel_size == 11
    assert repr(codec).startswith("IntegralRegressionLabel(input_size=(256, 256), heatmap_size=(64, 64)")
    kpts = np.array([[[0.0, 0.0], [255.0, 255.0], [10.5, 20.25]]], np.float32)
    enc = codec.encode(kpts)  # None: all visible
    assert enc["keypoint_weights"].tolist() == [[1, 1, 1]]
    np.testing.assert_allclose(enc["heatmaps"].sum(axis=(1, 2)), 1, atol=1e-5)
    back, scores = codec.decode(enc["keypoint_labels"][0])
    np.testing.assert_allclose(back, kpts, atol=1e-4)
    assert scores.tolist() == [[1.0, 1.0, 1.0]]
    # N = 2 (mmpose: single instance only): labels and weights per person, heatmaps the maximum over people
    two = codec.encode(np.concatenate([kpts, kpts + 100]), np.ones((2, 3)))
    assert two["keypoint_labels"].shape == (2, 3, 2) and two["keypoint_weights"].tolist() == [[1, 1, 1], [1, 0, 1]]
    assert two["heatmaps"].shape == (3, 64, 64)
    np.testing.assert_allclose(two["heatmaps"].sum(axis=(1, 2)), 1, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(heatmap_size=(48, 64)), "missing required.*sigma"),
    (dict(heatmap_size=(48, 64), sigma=2, normalise=True), "did you mean 'normalize'"),
    (dict(heatmap_size=(48, 64), sigma=0), "IntegralRegressionLabel: sigma"),
    (dict(heatmap_size=(48,), sigma=2), "IntegralRegressionLabel heatmap_size"),
    (dict(heatmap_size=(48, 64), sigma=2, blur_kernel_size=10), "IntegralRegressionLabel: blur_kernel_size.*odd"),
    (dict(heatmap_size=(48, 64), sigma=2, normalize="False"), "IntegralRegressionLabel: normalize"),
    (dict(heatmap_size=(48, 64), sigma=2, unbiased=None), "IntegralRegressionLabel: unbiased"),
])
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_codec(dict(type="IntegralRegressionLabel", input_size=(192, 256), **kwargs))


def test_bad_input_size_and_shapes_raise_clear_errors():
    with pytest.raises(ConfigError, match="IntegralRegressionLabel input_size"):
        IntegralRegressionLabel(input_size=(192, 0), heatmap_size=(48, 64), sigma=2)
    codec = IntegralRegressionLabel((192, 256), (48, 64), 2.0)  # positional, as mmpose's signature
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        codec.encode(np.zeros((17, 2)))
    with pytest.raises(ValueError, match="keypoints_visible"):
        codec.encode(np.zeros((1, 17, 2)), np.ones(17))
    with pytest.raises(ValueError, match=r"\(K, 2\) or \(1, K, 2\)"):
        codec.decode(np.zeros((17, 64, 48), np.float32))  # heatmaps are not what it decodes
    with pytest.raises(ValueError, match=r"\(K, 2\) or \(1, K, 2\)"):
        codec.decode(np.zeros((2, 17, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        codec.decode_batch(np.zeros((17, 2), np.float32))


def test_a_topdown_config_with_this_codec_is_refused_early_naming_what_is_missing():
    from bupose.config import load_config
    from bupose.errors import ConfigError
    from bupose.methods import build_method

    cfg = load_config(None, ["MODEL.NAME", "topdown_resnet", "MODEL.SPEC", "{NUM_LAYERS: 18}", "DATASET.NUM_JOINTS",
                             "14", "MODEL.CODEC", "{type: IntegralRegressionLabel, sigma: 2}"])
    with pytest.raises(ConfigError, match="no integral-regression"):
        build_method(cfg)
