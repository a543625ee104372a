import json

import numpy as np
import pytest

from bupose.data.keypoints import COCO17, CROWDPOSE14, KeypointSpec, coco17_to_crowdpose14, get_spec

from conftest import FIXTURES


@pytest.mark.parametrize("spec", [COCO17, CROWDPOSE14])
def test_flip_index_is_an_involution_that_swaps_sides(spec):
    for i, j in enumerate(spec.flip_index):
        assert spec.flip_index[j] == i
        a, b = spec.names[i], spec.names[j]
        if a.startswith("left_"):
            assert b == "right_" + a[5:]
        elif not a.startswith("right_"):
            assert i == j


def test_metadata_matches_the_official_evaluators():
    # the CrowdPose sigmas and flip index as documented from crowdposetools
    assert CROWDPOSE14.flip_index == (1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13)
    np.testing.assert_allclose(CROWDPOSE14.sigmas,
                               np.array([.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79]) / 10)
    cat = json.loads((FIXTURES / "coco_person_category.json").read_text())["categories"][0]
    assert tuple(cat["keypoints"]) == COCO17.names
    assert {tuple(sorted((a - 1, b - 1))) for a, b in cat["skeleton"]} == {tuple(sorted(e)) for e in COCO17.skeleton}
    assert get_spec("ochuman") is COCO17 and get_spec("CrowdPose") is CROWDPOSE14
    assert len(COCO17.limb_colors) == len(COCO17.skeleton)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="not an involution"):
        KeypointSpec("x", ("a", "b", "c"), (1, 2, 0), (.1, .1, .1), ())
    with pytest.raises(ValueError, match="sigmas has 2 entries, expected 3"):
        KeypointSpec("x", ("a", "b", "c"), (0, 1, 2), (.1, .1), ())
    with pytest.raises(ValueError, match="skeleton edge"):
        KeypointSpec("x", ("a",), (0,), (.1,), ((0, 3),))
    with pytest.raises(KeyError, match="unknown keypoint layout 'mpii'"):
        get_spec("mpii")


def test_coco_to_crowdpose_mapping():
    kp = np.zeros((2, 17, 3))
    kp[0, :, :2] = np.arange(34).reshape(17, 2)
    kp[0, :, 2] = 2
    out = coco17_to_crowdpose14(kp)
    assert out.shape == (2, 14, 3)
    for c, name in enumerate(CROWDPOSE14.names[:12]):  # limbs copied by name
        np.testing.assert_array_equal(out[0, c], kp[0, COCO17.index(name)])
    neck = (kp[0, 5, :2] + kp[0, 6, :2]) / 2
    np.testing.assert_allclose(out[0, 13], [*neck, 2])
    face = kp[0, :5, :2].mean(0)
    np.testing.assert_allclose(out[0, 12, :2], face + 0.5 * (face - neck))
    assert not out[1].any()  # nothing labelled -> nothing labelled
    kp[0, 6, 2] = 0  # no right shoulder: no neck, no head
    out = coco17_to_crowdpose14(kp)
    assert out[0, 13, 2] == 0 and out[0, 12, 2] == 0
    with pytest.raises(ValueError, match=r"expects \(\.\.\., 17, 3\)"):
        coco17_to_crowdpose14(np.zeros((1, 14, 3)))
