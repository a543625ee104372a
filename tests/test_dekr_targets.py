import numpy as np
import pytest
import torch

from bupose.methods.dekr.loss import DEKRLoss
from bupose.methods.dekr.targets import DEKRTargetEncoder, person_areas, person_centers


def one_person(k=3):
    kp = np.zeros((1, k, 3))
    kp[0, 0] = [10, 10, 2]
    kp[0, 1] = [16, 18, 1]
    return kp  # joint 2 unlabelled


def test_centre_and_area_use_labelled_keypoints_only():
    kp = one_person()
    np.testing.assert_allclose(person_centers(kp), [[13, 14, 1]])
    # extent 6 x 8 -> squared diagonal 100 (the official code would use 16^2 + 18^2 through the (0, 0) joint)
    np.testing.assert_allclose(person_areas(kp), [100.0])


def test_heatmap_values_and_weights_by_hand():
    enc = DEKRTargetEncoder(num_joints=3, sigma=2.0, center_sigma=4.0, bg_weight=0.1)
    t = enc(one_person(), (32, 32))
    assert t.heatmap.shape == (4, 32, 32)
    assert t.heatmap[0, 10, 10] == pytest.approx(1.0)
    assert t.heatmap[0, 10, 12] == pytest.approx(np.exp(-4 / 8))  # d^2 = 4, 2 sigma^2 = 8
    assert t.heatmap[3, 14, 13] == pytest.approx(1.0)  # the centre
    assert t.heatmap[3, 14, 17] == pytest.approx(np.exp(-16 / 32))  # centre sigma 4 (not 2) for K != 17
    assert not t.heatmap[2].any()  # unlabelled joint
    # window [x - 3 sigma - 1, x + 3 sigma + 2): 3..17 for x = 10 -> weight 1 inside, bg outside
    assert t.heatmap_weight[0, 10, 3] == 1.0 and t.heatmap_weight[0, 10, 2] == pytest.approx(0.1)
    assert t.heatmap_weight[0, 10, 17] == 1.0 and t.heatmap_weight[0, 10, 18] == pytest.approx(0.1)


def test_ignore_weight_zeroes_heatmap_weights():
    ignore = np.ones((32, 32), np.float32)
    ignore[:, 20:] = 0
    t = DEKRTargetEncoder(3)(one_person(), (32, 32), ignore_weight=ignore)
    assert (t.heatmap_weight[:, :, 20:] == 0).all() and (t.heatmap_weight[:, :, :20] > 0).all()


def test_offsets_by_hand():
    t = DEKRTargetEncoder(3, radius=4)(one_person(), (32, 32))
    # window [c - 4, c + 4) around the integer centre (13, 14)
    ys, xs = np.nonzero(t.offset_weight[0])
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (9, 16, 10, 17)
    assert t.offset[0, 14, 13] == pytest.approx(13 - 10) and t.offset[1, 14, 13] == pytest.approx(14 - 10)
    assert t.offset[2, 12, 9] == pytest.approx(9 - 16) and t.offset[3, 12, 9] == pytest.approx(12 - 18)
    assert t.offset_weight[0, 14, 13] == pytest.approx(1 / np.sqrt(100))
    assert not t.offset_weight[4:].any()  # unlabelled joint: no supervision
    # keypoint = location - offset everywhere in the window
    loc_x = np.arange(32)[None, :] - t.offset[2]
    np.testing.assert_allclose(loc_x[t.offset_weight[2] > 0], 16)


def test_smaller_person_wins_overlapping_windows():
    kp = np.zeros((2, 1, 3))
    big = np.array([[[0, 0, 2]], [[20, 20, 2]]], float)  # centre (10, 10), area 800
    small = np.array([[[11, 11, 2]], [[13, 13, 2]]], float)  # centre (12, 12), area 8
    kp = np.concatenate([big.transpose(1, 0, 2), small.transpose(1, 0, 2)])  # (2 people, 2 joints, 3)
    enc = DEKRTargetEncoder(2, radius=4)
    for order in ([0, 1], [1, 0]):
        t = enc(kp[order], (32, 32))
        # location (12, 12) lies in both windows: it regresses the small person's joints
        assert t.offset[0, 12, 12] == pytest.approx(12 - 11)
        assert t.offset_weight[0, 12, 12] == pytest.approx(1 / np.sqrt(8))
        # (7, 7) only in the big person's window
        assert t.offset[0, 7, 7] == pytest.approx(7 - 0)


def test_keypoints_outside_the_map_are_skipped():
    kp = np.array([[[40, 5, 2], [5, 5, 2]]], float)
    t = DEKRTargetEncoder(2)(kp, (16, 16), centers=np.array([[5, 5, 1]]))
    assert not t.heatmap[0].any() and not t.offset_weight[:2].any()
    assert t.heatmap[1].max() == pytest.approx(1.0) and t.offset_weight[2:].any()


def test_loss_zero_at_target_and_normalised():
    t = DEKRTargetEncoder(3)(one_person(), (32, 32))
    tg = {k: torch.from_numpy(getattr(t, k))[None] for k in ("heatmap", "heatmap_weight", "offset", "offset_weight")}
    loss = DEKRLoss()
    out = loss({"heatmap": tg["heatmap"], "offset": tg["offset"]}, tg)
    assert out["loss"].item() == 0
    shifted = {"heatmap": tg["heatmap"], "offset": tg["offset"] + 1.0}
    got = loss(shifted, tg)["offset_loss"].item()
    # smooth-L1 of 1 with beta 1/9 is 1 - 1/18; weight 1/10 everywhere supervised; mean over supervised; x 0.03
    assert got == pytest.approx(0.03 * (1 - 1 / 18) / 10, rel=1e-6)
