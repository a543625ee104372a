"""bupose.vis: drawing skeletons and image grids."""
from __future__ import annotations

import numpy as np
import pytest

from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.vis import draw_people, make_grid


def _person(spec, labelled=None):
    k = spec.num_keypoints
    kp = np.zeros((k, 3))
    kp[:, 0] = 20 + 10 * (np.arange(k) % 5)
    kp[:, 1] = 20 + 12 * (np.arange(k) // 5)
    kp[:, 2] = 2
    if labelled is not None:
        kp[~labelled] = 0
    return kp


def test_draw_people_marks_keypoints_and_keeps_input():
    img = np.full((100, 100, 3), 127, np.uint8)
    kp = _person(CROWDPOSE14)
    out = draw_people(img, kp[None], CROWDPOSE14)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 127).all(), "input image must not be modified"
    # joint centres get the joint's colour
    for k, (x, y, _) in enumerate(kp):
        assert np.abs(out[int(y), int(x)].astype(int) - CROWDPOSE14.keypoint_colors[k]).max() <= 40


def test_draw_people_ignores_unlabelled_and_low_score_joints():
    img = np.zeros((120, 120, 3), np.uint8)
    labelled = np.ones(17, bool)
    labelled[[0, 9]] = False
    kp = _person(COCO17, labelled)
    kp[9, :2] = (100, 100)  # an unlabelled joint somewhere else: nothing may be drawn there
    out = draw_people(img, kp, COCO17)  # (K, 3) is accepted too
    assert (out[95:106, 95:106] == 0).all()
    assert (out[kp[1, 1].astype(int), kp[1, 0].astype(int)] != 0).any()

    scored = _person(COCO17)
    scored[:, 2] = 0.3
    scored[4, 2] = 0.9
    scored[4, :2] = (100, 100)
    out = draw_people(img, scored[None], COCO17, score_threshold=0.5)
    assert (out[100, 100] != 0).any()
    mask = np.ones(img.shape[:2], bool)
    mask[90:111, 90:111] = False
    assert (out[mask] == 0).all(), "joints at or below the threshold and their limbs are not drawn"


def test_draw_people_limbs_and_edge_cases():
    img = np.zeros((100, 100, 3), np.uint8)
    kp = np.zeros((1, 14, 3))
    kp[0, 12] = (10, 50, 2)  # head
    kp[0, 13] = (90, 50, 2)  # neck: the head-neck limb crosses the image
    out = draw_people(img, kp, CROWDPOSE14, radius=2, thickness=3)
    assert (out[50, 50] != 0).any()
    assert np.array_equal(draw_people(img, np.zeros((0, 14, 3)), CROWDPOSE14), img)
    grey = draw_people(np.zeros((30, 30), np.uint8), np.zeros((0, 14, 3)), CROWDPOSE14)
    assert grey.shape == (30, 30, 3)
    with pytest.raises(ValueError):
        draw_people(img, np.zeros((1, 17, 3)), CROWDPOSE14)
    kp_nan = kp.copy()
    kp_nan[0, 0] = (np.nan, np.nan, 2)
    draw_people(img, kp_nan, CROWDPOSE14)  # non-finite joints are skipped, not an error


def test_make_grid():
    ims = [np.full((40, 80, 3), v, np.uint8) for v in (50, 100, 150, 200)]
    grid = make_grid(ims, labels=["a", "b", "", "d"], cols=3, tile=(60, 60))
    assert grid.shape == (120, 180, 3)
    # the 80x40 images are scaled to 60x30 and centred in their tiles; labels sit in the top-left corner
    assert (grid[15:45, 120:180] == 150).all()  # no label
    assert (grid[15:45, 60:120] == 100).all(-1).sum() < 30 * 60  # label "b" drawn over the image
    assert (grid[90:105, 0:60] == 200).all()
    assert (grid[60:120, 60:180] == 32).all()  # empty cells show the background
    assert make_grid([np.zeros((10, 10), np.uint8)], cols=4, tile=(20, 20)).shape == (20, 20, 3)
    with pytest.raises(ValueError):
        make_grid([])
    with pytest.raises(ValueError):
        make_grid(ims, labels=["x"])


def _predicted(spec, n=2, seed=0):
    """Predictor-style people: ``[{"keypoints": (K, 3), "score", "bbox"}]`` inside a 120 x 160 image."""
    rng = np.random.default_rng(seed)
    people = []
    for i in range(n):
        kp = np.zeros((spec.num_keypoints, 3))
        kp[:, 0] = rng.uniform(20 + 70 * i, 70 + 70 * i, spec.num_keypoints)
        kp[:, 1] = rng.uniform(30, 100, spec.num_keypoints)
        kp[:, 2] = 0.9
        lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
        people.append({"keypoints": kp, "score": 0.8 - 0.3 * i, "bbox": [*lo, *(hi - lo)]})
    return people


def test_draw_poses_accepts_predictor_output_people_and_arrays():
    from bupose.inference.people import People
    from bupose.vis import draw_poses

    img = np.zeros((120, 160, 3), np.uint8)
    people = _predicted(CROWDPOSE14)
    a = draw_poses(img, people, CROWDPOSE14)
    kps = np.stack([p["keypoints"] for p in people])
    b = draw_poses(img, People(kps, np.array([p["score"] for p in people])), CROWDPOSE14)
    c = draw_poses(img, kps, CROWDPOSE14)
    assert (img == 0).all() and a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(a, c), "skeletons only: the same drawing from every form"
    assert np.array_equal(a, draw_people(img, kps, CROWDPOSE14, score_threshold=0.3))
    assert np.array_equal(draw_poses(img, [], CROWDPOSE14, show_box=True, show_score=True), img)
    with pytest.raises(ValueError, match=r"expected \(N, 14, 3\) keypoints"):
        draw_poses(img, np.zeros((1, 17, 3)), CROWDPOSE14)


def test_draw_poses_boxes_scores_and_keypoint_threshold():
    from bupose.vis import draw_poses

    img = np.zeros((120, 160, 3), np.uint8)
    person = {"keypoints": np.tile([[40.0, 60.0, 0.2]], (14, 1)), "score": 0.77, "bbox": [10.0, 20.0, 100.0, 80.0]}
    low = draw_poses(img, [person], CROWDPOSE14, keypoint_threshold=0.3)
    assert (low == 0).all(), "joints at 0.2 are below the threshold: nothing drawn"
    assert (draw_poses(img, [person], CROWDPOSE14, keypoint_threshold=0.1)[60, 40] != 0).any()
    boxed = draw_poses(img, [person], CROWDPOSE14, show_box=True)
    assert tuple(boxed[60, 10]) == (0, 255, 0) and tuple(boxed[20, 60]) == (0, 255, 0)  # left and top edges
    assert (boxed[60, 60] == 0).all(), "the box is an outline"
    scored = draw_poses(img, [person], CROWDPOSE14, show_score=True)
    assert (scored[:20, 10:40] != 0).any() and (scored[30:, :] == 0).all(), "the score label sits above the box"
