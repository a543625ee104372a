"""RegressionLabel (mmpose 1.x's coordinate-regression codec, used by RLE: Li et al., ICCV 2021): equal to mmpose's
on the fixture made by tests/fixtures/codecs_regression_make_fixtures.py from mmpose's own code."""
import json
from pathlib import Path

import numpy as np
import pytest

from bupose.codecs import CODECS, RegressionLabel, build_codec

FIXTURE = Path(__file__).parent / "fixtures" / "codecs_regression_mmpose.npz"
SIZES = ((192, 256), (96, 128))


@pytest.fixture(scope="module")
def mm():
    data = np.load(FIXTURE)
    assert json.loads(str(data["README"]))["K"] == 6
    return data


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_encode_equals_mmpose(mm, size):
    tag = f"{size[0]}x{size[1]}"
    enc = RegressionLabel(input_size=size).encode(mm[f"{tag}/keypoints"], mm[f"{tag}/visible"])
    for key in ("keypoint_labels", "keypoint_weights"):
        assert enc[key].dtype == np.float32
        np.testing.assert_array_equal(enc[key], mm[f"{tag}/{key}"])
    assert enc["keypoint_weights"][0, :3].tolist() == [1.0, 1.0, 0.0]   # the edges in, half a pixel out


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("d", [2, 4])
def test_decode_and_decode_batch_equal_mmpose(mm, size, d):
    tag = f"{size[0]}x{size[1]}"
    codec = RegressionLabel(input_size=size)
    x = mm[f"{tag}/decode{d}"]
    for i in range(len(x)):
        for item in (x[i], x[i][None]):
            kp, sc = codec.decode(item)
            assert kp.shape == (1, x.shape[1], 2) and sc.shape == (1, x.shape[1])
            np.testing.assert_allclose(kp[0], mm[f"{tag}/decode{d}_keypoints"][i], rtol=0, atol=1e-4)
            np.testing.assert_allclose(sc[0], mm[f"{tag}/decode{d}_scores"][i], rtol=0, atol=1e-6)
    kp, sc = codec.decode_batch(x)
    np.testing.assert_allclose(kp, mm[f"{tag}/decode{d}_keypoints"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(sc, mm[f"{tag}/decode{d}_scores"], rtol=0, atol=1e-6)


def test_round_trip_registry_and_errors():
    assert CODECS["RegressionLabel"] is RegressionLabel
    codec = build_codec({"type": "RegressionLabel", "input_size": [48, 64]})
    kpts = np.array([[[0.0, 0.0], [47.0, 63.0], [10.5, 20.25]]], np.float32)
    enc = codec.encode(kpts)
    np.testing.assert_allclose(enc["keypoint_labels"], kpts / [48, 64], rtol=1e-6)
    back, scores = codec.decode(enc["keypoint_labels"][0])
    np.testing.assert_allclose(back, kpts, atol=1e-4)
    assert scores.tolist() == [[1.0, 1.0, 1.0]]
    with pytest.raises(ValueError, match="2|4"):
        codec.decode_batch(np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        codec.encode(np.zeros((3, 2)))
