"""bupose.codecs: equal to mmpose 1.x's codecs (fixtures made by tests/fixtures/codecs_make_fixtures.py from the
official code), round trips, batch decoding, config building and input checks."""
import json
from pathlib import Path

import numpy as np
import pytest

from bupose.codecs import CODECS, BaseKeypointCodec, MSRAHeatmap, UDPHeatmap, build_codec
from bupose.errors import ConfigError

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "codecs_mmpose.npz")
CASES = json.loads(str(FIXTURE["cases"]))
ENCODE_CASES = [c for c in CASES if c["kind"] == "encode"]
DECODE_CASES = [c for c in CASES if c["kind"] == "decode"]


def case_id(case):
    args = "-".join(f"{k}={v}" for k, v in case["codec"].items() if k != "type")
    return f"{case['codec']['type']}-{args}-{case['input_size'][0]}-{case.get('keypoints', '').split('/')[-1]}"


def codec_of(case):
    return build_codec(dict(case["codec"], input_size=case["input_size"], heatmap_size=case["heatmap_size"]))


@pytest.mark.parametrize("case", ENCODE_CASES, ids=case_id)
def test_encode_matches_mmpose(case):
    keypoints = FIXTURE[case["keypoints"] + "/keypoints"]
    visible = FIXTURE[case["keypoints"] + "/keypoints_visible"]
    encoded = codec_of(case).encode(keypoints, visible)
    expected = FIXTURE[case["expected"] + "/heatmaps"]
    assert encoded["heatmaps"].dtype == np.float32 and encoded["heatmaps"].shape == expected.shape
    np.testing.assert_allclose(encoded["heatmaps"], expected, rtol=0, atol=1e-6)
    assert encoded["keypoint_weights"].dtype == np.float32
    np.testing.assert_allclose(encoded["keypoint_weights"], FIXTURE[case["expected"] + "/keypoint_weights"],
                               rtol=0, atol=1e-7)


def test_fixture_covers_the_special_cases():
    weights = FIXTURE["192x256/encode/0/multi/keypoint_weights"]
    assert (weights == 0).any() and ((weights > 0) & (weights < 1)).any()  # off-map / invisible and fractional
    assert np.isnan(FIXTURE["192x256/decode/3/keypoints"]).any()           # UDP on an all-zero map (mmpose: NaN)
    assert (FIXTURE["192x256/decode/0/keypoints"] == -4).any()              # MSRA on a non-positive peak


@pytest.mark.parametrize("case", DECODE_CASES, ids=case_id)
def test_decode_matches_mmpose(case):
    codec = codec_of(case)
    heatmaps = FIXTURE[case["heatmaps"]]
    for i, hm in enumerate(heatmaps):
        keypoints, scores = codec.decode(hm)
        assert keypoints.shape == (1, hm.shape[0] // (3 if "combined" in case["codec"].values() else 1), 2)
        np.testing.assert_allclose(keypoints[0], FIXTURE[case["expected"] + "/keypoints"][i], rtol=0, atol=1e-4)
        np.testing.assert_allclose(scores[0], FIXTURE[case["expected"] + "/scores"][i], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", DECODE_CASES, ids=case_id)
def test_decode_batch_equals_decode(case):
    codec = codec_of(case)
    heatmaps = FIXTURE[case["heatmaps"]]
    batch_keypoints, batch_scores = codec.decode_batch(heatmaps)
    singles = [codec.decode(hm) for hm in heatmaps]
    assert np.array_equal(batch_keypoints, np.concatenate([s[0] for s in singles]), equal_nan=True)
    assert np.array_equal(batch_scores, np.concatenate([s[1] for s in singles]), equal_nan=True)
    assert not np.shares_memory(batch_keypoints, heatmaps)
    np.testing.assert_array_equal(heatmaps, FIXTURE[case["heatmaps"]])  # inputs untouched


def inner_keypoints(seed, input_size, k=17):
    rng = np.random.default_rng(seed)
    w, h = input_size
    return np.stack([rng.uniform(0.15 * w, 0.85 * w, k), rng.uniform(0.15 * h, 0.85 * h, k)], -1)[None].astype(
        np.float32)


@pytest.mark.parametrize("input_size,heatmap_size", [((192, 256), (48, 64)), ((288, 384), (72, 96))])
def test_dark_round_trip_is_sub_pixel(input_size, heatmap_size):
    keypoints = inner_keypoints(1, input_size)
    codec = MSRAHeatmap(input_size=input_size, heatmap_size=heatmap_size, sigma=2, unbiased=True)
    decoded, scores = codec.decode(codec.encode(keypoints)["heatmaps"])
    assert np.abs(decoded - keypoints).max() < 0.05
    assert (scores > 0.9).all()


@pytest.mark.parametrize("input_size,heatmap_size", [((192, 256), (48, 64)), ((288, 384), (72, 96))])
def test_udp_round_trip_is_sub_pixel_in_mmpose_output_units(input_size, heatmap_size):
    keypoints = inner_keypoints(2, input_size)
    for cfg in ({"heatmap_type": "gaussian", "sigma": 2}, {"heatmap_type": "combined"}):
        codec = UDPHeatmap(input_size=input_size, heatmap_size=heatmap_size, **cfg)
        decoded, _ = codec.decode(codec.encode(keypoints)["heatmaps"])
        # mmpose decodes x_hm * w / (W - 1): encode(x) then decode gives x * w / (w - 1)
        stretch = np.array(input_size) / (np.array(input_size) - 1)
        assert np.abs(decoded - keypoints * stretch).max() < 0.05
        assert np.abs(decoded - keypoints).max() > 0.3  # the stretch is real, not a rounding


def test_msra_round_trip_is_quantised():
    input_size, heatmap_size = (192, 256), (48, 64)
    keypoints = inner_keypoints(3, input_size)
    plain = MSRAHeatmap(input_size=input_size, heatmap_size=heatmap_size, sigma=2)
    scale = np.array([4.0, 4.0], np.float32)
    decoded, _ = plain.decode(plain.encode(keypoints)["heatmaps"])
    # the biased target is centred on the rounded pixel; the quarter step then has nothing to lean towards
    np.testing.assert_allclose(decoded, np.floor(keypoints / scale + 0.5) * scale, atol=1e-5)
    # on a sub-pixel (DARK) target the quarter step brings the error under a quarter heatmap pixel
    dark_targets = MSRAHeatmap(input_size=input_size, heatmap_size=heatmap_size, sigma=2, unbiased=True)
    decoded, _ = plain.decode(dark_targets.encode(keypoints)["heatmaps"])
    assert np.abs(decoded - keypoints).max() <= 0.25 * 4 + 1e-4
    assert np.abs(decoded / scale % 0.25).max() < 1e-5


def test_encode_targets_and_weights():
    codec = MSRAHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)
    keypoints = np.array([[[40.2, 80.9], [-40.0, 10.0], [100.0, 100.0], [-12.0, 120.0]]], np.float32)
    visible = np.array([[1.0, 1.0, 0.0, 1.0]], np.float32)
    out = codec.encode(keypoints, visible)
    hm, weights = out["heatmaps"], out["keypoint_weights"]
    assert hm.shape == (4, 64, 48) and weights.shape == (1, 4)
    assert hm[0, 20, 10] == 1.0 and hm[0].max() == 1.0             # (10.05, 20.225) rounds to (10, 20)
    np.testing.assert_array_equal(weights, [[1, 0, 0, 1]])          # off-map; invisible; partly on the map
    assert hm[1].max() == 0 and hm[2].max() == 0 and 0 < hm[3].max() < 1
    assert codec.encode(keypoints)["keypoint_weights"].tolist() == [[1, 0, 1, 1]]  # None: all visible
    two = codec.encode(np.concatenate([keypoints, keypoints + 40]), np.ones((2, 4)))
    assert two["keypoint_weights"].shape == (2, 4)
    assert two["heatmaps"][0, 30, 20] == 1.0 and two["heatmaps"][0, 20, 10] == 1.0  # max over people


def test_build_codec_maps_an_mmpose_config():
    cfg = dict(type="MSRAHeatmap", input_size=(192, 256), heatmap_size=(48, 64), sigma=2, unbiased=True)
    codec = build_codec(cfg)
    assert isinstance(codec, MSRAHeatmap) and isinstance(codec, BaseKeypointCodec)
    assert codec.unbiased and codec.blur_kernel_size == 11 and codec.input_size == (192, 256)
    assert cfg["type"] == "MSRAHeatmap"  # the caller's dict is not consumed
    assert set(CODECS) >= {"MSRAHeatmap", "UDPHeatmap"}
    assert "UDPHeatmap(" in repr(build_codec(dict(type="UDPHeatmap", input_size=(192, 256), heatmap_size=(48, 64))))


@pytest.mark.parametrize("cfg,match", [
    (dict(type="MSRAHeatmp", input_size=(192, 256), heatmap_size=(48, 64), sigma=2), "did you mean 'MSRAHeatmap'"),
    (dict(type="UDPHeatMap", input_size=(192, 256), heatmap_size=(48, 64)), "did you mean 'UDPHeatmap'"),
    (dict(type="MSRAHeatmap", input_size=(192, 256), heatmap_size=(48, 64), sigm=2), "did you mean 'sigma'"),
    (dict(type="MSRAHeatmap", input_size=(192, 256), heatmap_size=(48, 64)), "missing required.*sigma"),
    (dict(input_size=(192, 256)), "'type'"),
    (dict(type="UDPHeatmap", input_size=(192, 256), heatmap_size=(48, 64), heatmap_type="offset"), "heatmap_type"),
    (dict(type="UDPHeatmap", input_size=(192, 256), heatmap_size=(48, 64), blur_kernel_size=10), "odd"),
    (dict(type="MSRAHeatmap", input_size=(192, 256), heatmap_size=(48,), sigma=2), "heatmap_size"),
    (dict(type="MSRAHeatmap", input_size=(192, 256), heatmap_size=(48, 64), sigma=0), "sigma"),
])
def test_build_codec_rejects_bad_configs(cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_codec(cfg)


def test_bad_shapes_raise_clear_errors():
    codec = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64))
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        codec.encode(np.zeros((17, 2)))
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        codec.encode(np.zeros((1, 17, 3)))
    with pytest.raises(ValueError, match="keypoints_visible"):
        codec.encode(np.zeros((1, 17, 2)), np.ones(17))
    with pytest.raises(ValueError, match=r"\(H, W\) = \(64, 48\)"):
        codec.decode(np.zeros((17, 48, 64), np.float32))
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        codec.decode(np.zeros((2, 17, 64, 48), np.float32))
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        codec.decode_batch(np.zeros((17, 64, 48), np.float32))
    combined = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64), heatmap_type="combined")
    with pytest.raises(ValueError, match="K \\* 3"):
        combined.decode(np.zeros((17, 64, 48), np.float32))


def test_default_decode_batch_loops_over_crops():
    class ArgmaxRows(BaseKeypointCodec):  # a stand-in for a codec with a tuple output (as SimCC's x / y vectors)
        def encode(self, keypoints, keypoints_visible=None):
            return {}

        def decode(self, encoded):
            x, y = encoded
            return np.stack([x.argmax(-1), y.argmax(-1)], -1)[None].astype(np.float32), x.max(-1)[None]

    codec = ArgmaxRows(input_size=(8, 8))
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 4, 8)), rng.random((3, 4, 8))
    keypoints, scores = codec.decode_batch((x, y))
    assert keypoints.shape == (3, 4, 2) and scores.shape == (3, 4)
    np.testing.assert_array_equal(keypoints[:, :, 0], x.argmax(-1))
    with pytest.raises(ValueError, match="empty"):
        codec.decode_batch((x[:0], y[:0]))
