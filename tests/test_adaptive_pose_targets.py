"""AdaptivePose training targets and losses (bupose.methods.adaptive_pose.targets / .loss) on hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.methods.adaptive_pose.loss import AdaptivePoseLoss, bone_edges, focal_loss, gather_at
from bupose.methods.adaptive_pose.targets import (AdaptivePoseTargetEncoder, draw_gaussian, gaussian_kernel,
                                                  gaussian_radius)


# -- CenterNet's Gaussian -------------------------------------------------------------------------------------------
def test_gaussian_radius_is_centernets_smallest_root():
    # h = w = 10: r1 = (20 + sqrt(400 - 4 * 30 / 1.7)) / 2 = 19.07, r2 = (40 + sqrt(1600 - 16 * 30)) / 2 = 36.73,
    # r3 = (-28 + sqrt(28^2 + 4 * 2.8 * 30)) / 2 = 2.73
    assert gaussian_radius(10, 10) == pytest.approx((-28 + math.sqrt(1120)) / 2)
    assert int(gaussian_radius(10, 10)) == 2
    # a wide flat person: r3 = (-2 * 0.7 * 42 + sqrt((2 * 0.7 * 42) ** 2 + 4 * 2.8 * 0.3 * 80)) / 2
    assert gaussian_radius(2, 40) == pytest.approx((-58.8 + math.sqrt(58.8 ** 2 + 268.8)) / 2)
    assert int(gaussian_radius(1, 1)) == 0


def test_gaussian_kernel_and_drawing():
    g = gaussian_kernel(1)  # diameter 3, sigma 0.5: exp(-d^2 / 0.5)
    np.testing.assert_allclose(g, [[math.exp(-4), math.exp(-2), math.exp(-4)],
                                   [math.exp(-2), 1.0, math.exp(-2)],
                                   [math.exp(-4), math.exp(-2), math.exp(-4)]])
    assert gaussian_kernel(0).tolist() == [[1.0]]
    channel = np.zeros((4, 5))
    channel[0, 0] = 0.5
    draw_gaussian(channel, 0, 0, 1)  # clipped at the corner, max-merged
    np.testing.assert_allclose(channel[:2, :2], g[1:, 1:])
    assert channel[2:].sum() == 0 and channel[:, 2:].sum() == 0


# -- the encoder ----------------------------------------------------------------------------------------------------
def _person(points, v=None):
    p = np.zeros((len(points), 3))
    p[:, :2] = points
    p[:, 2] = 2 if v is None else v
    return p


def test_one_person_by_hand():
    enc = AdaptivePoseTargetEncoder(num_joints=3, max_people=4)
    kp = _person([(2.5, 3.2), (6.7, 3.9), (4.0, 9.1)])[None]
    t = enc(kp, (12, 16), areas=np.array([30.0]))
    # centre (4.4, 5.4) -> cell (4, 5); extent 4.2 x 5.9 -> radius int(gaussian_radius(6, 5))
    radius = int(gaussian_radius(6, 5))
    assert radius == 1
    assert t.center_heatmap.shape == (1, 12, 16) and t.aux_heatmap.shape == (3, 12, 16)
    assert t.center_heatmap[0, 5, 4] == 1 and (t.center_heatmap == 1).sum() == 1
    sigma = (2 * radius + 1) / 6
    assert t.center_heatmap[0, 5, 5] == pytest.approx(math.exp(-1 / (2 * sigma ** 2)))
    assert t.center_heatmap[0, 5, 6] == 0 and t.center_heatmap[0, 7, 4] == 0  # beyond the radius
    for j, (x, y) in enumerate([(2, 3), (6, 3), (4, 9)]):  # floor of the keypoints
        assert t.aux_heatmap[j, y, x] == 1 and (t.aux_heatmap[j] == 1).sum() == 1
    assert t.index.tolist() == [5 * 16 + 4, 0, 0, 0]
    np.testing.assert_allclose(t.offset[0], [-1.5, -1.8, 2.7, -1.1, 0.0, 4.1], atol=1e-6)
    assert t.offset_weight[0].tolist() == [1] * 6 and t.offset_weight[1:].sum() == 0
    assert t.person_weight.tolist() == [1, 0, 0, 0] and t.area[0] == 30
    assert t.mask.shape == (1, 12, 16) and (t.mask == 1).all()


def test_only_labelled_keypoints_inside_the_map_count():
    enc = AdaptivePoseTargetEncoder(num_joints=4)
    # keypoint 1 unlabelled, keypoint 3 right of the map (x = 16 >= W): neither enters centre, extent or targets
    kp = _person([(2.0, 2.0), (50.0, 50.0), (6.0, 8.0), (16.0, 3.0)], v=[2, 0, 1, 2])[None]
    t = enc(kp, (12, 16))
    assert t.index[0] == 5 * 16 + 4  # centre (4, 5) of keypoints 0 and 2
    assert t.offset_weight[0].tolist() == [1, 1, 0, 0, 1, 1, 0, 0]
    np.testing.assert_allclose(t.offset[0], [-2, -3, 0, 0, 2, 3, 0, 0])
    assert t.aux_heatmap[1].sum() == 0 and t.aux_heatmap[3].sum() == 0
    assert t.area[0] == pytest.approx(4 * 6)  # default area: the counted keypoints' extent w * h


def test_skipped_people_and_the_regression_slots():
    enc = AdaptivePoseTargetEncoder(num_joints=2, max_people=2)
    people = np.stack([
        _person([(1.0, 1.0), (3.0, 4.0)]),
        _person([(8.0, 2.0), (8.0, 6.0)]),  # zero width: skipped, as officially
        _person([(0.0, 0.0), (0.0, 0.0)], v=[0, 0]),  # nothing labelled
        _person([(10.0, 1.0), (13.0, 5.0)]),
        _person([(5.0, 8.0), (7.0, 11.0)]),  # beyond max_people: heatmaps only
    ])
    t = enc(people, (12, 16), areas=np.arange(5.0))
    peaks = sorted(zip(*np.nonzero(t.center_heatmap[0] == 1)))
    assert peaks == [(2, 2), (3, 11), (9, 6)]  # (y, x) of the three drawn people
    assert t.index.tolist() == [2 * 16 + 2, 3 * 16 + 11]
    assert t.area.tolist() == [0.0, 3.0] and t.person_weight.tolist() == [1, 1]


def test_mask_is_passed_along():
    enc = AdaptivePoseTargetEncoder(num_joints=2)
    mask = np.ones((12, 16), np.float32)
    mask[:, 8:] = 0
    t = enc(np.zeros((0, 2, 3)), (12, 16), mask)
    assert t.mask.shape == (1, 12, 16) and t.mask[0, :, 8:].sum() == 0 and t.mask[0, :, :8].min() == 1
    assert t.center_heatmap.sum() == 0 and t.person_weight.sum() == 0


# -- losses ---------------------------------------------------------------------------------------------------------
def test_focal_loss_by_hand():
    logits = torch.tensor([0.0, 0.0, math.log(1 / 3)])  # p = 0.5, 0.5, 0.25
    target = torch.tensor([1.0, 0.5, 0.0])
    pos = 0.25 * math.log(0.5)
    neg_half = 0.5 ** 4 * 0.25 * math.log(0.5)
    neg_zero = 0.0625 * math.log(0.75)
    assert float(focal_loss(logits, target)) == pytest.approx(-(pos + neg_half + neg_zero))
    assert float(focal_loss(logits, target, torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(-(pos + neg_half))
    # no positive: the sum is not divided
    assert float(focal_loss(logits[1:], target[1:])) == pytest.approx(-(neg_half + neg_zero))
    # two positives: divided by 2
    assert float(focal_loss(torch.zeros(2), torch.ones(2))) == pytest.approx(-pos)


def _batch(k=2, h=4, w=4, m=2):
    b = {"center_heatmap": torch.zeros(1, 1, h, w), "aux_heatmap": torch.zeros(1, k, h, w),
         "mask": torch.ones(1, 1, h, w), "index": torch.zeros(1, m, dtype=torch.long),
         "offset": torch.zeros(1, m, 2 * k), "offset_weight": torch.zeros(1, m, 2 * k), "area": torch.zeros(1, m),
         "person_weight": torch.zeros(1, m)}
    b["center_heatmap"][0, 0, 1, 1] = 1
    b["index"][0, 0] = 1 * w + 1
    b["offset"][0, 0] = torch.tensor([1.5, 2.0, -1.0, -0.5])
    b["offset_weight"][0, 0] = 1
    b["area"][0, 0] = 4.0
    b["person_weight"][0, 0] = 1
    return b


def _outputs(k=2, h=4, w=4):
    offset = torch.zeros(1, 2 * k, h, w)
    offset[0, :, 1, 1] = torch.tensor([1.0, 2.0, -1.0, 0.5])
    return {"center": torch.zeros(1, 1, h, w), "offset": offset}


def test_loss_terms_by_hand():
    sigmas = [0.5, 0.25]  # variances (2 sigma)^2: 1, 0.25
    out, batch = _outputs(), _batch()
    loss = AdaptivePoseLoss(sigmas=sigmas, aux_factor=0.0)(out, batch)
    # centre: p = 0.5 everywhere; one positive, 15 negatives at target 0
    center = -(16 * 0.25 * math.log(0.5))
    # offsets |1 - 1.5| + |2 - 2| + |-1 + 1| + |0.5 + 0.5| over 4 counted values
    offset = 1.5 / (4 + 1e-4)
    # OKS: d^2 = 0.25, 1.0; area 4: exp(-0.25 / 8), exp(-1 / 2)
    oks = 1 - (math.exp(-0.25 / 8) + math.exp(-0.5)) / 2
    assert float(loss["center_loss"]) == pytest.approx(center, rel=1e-5)
    assert float(loss["offset_loss"]) == pytest.approx(offset, rel=1e-5)
    assert float(loss["oks_loss"]) == pytest.approx(5 * oks, rel=1e-5)
    assert float(loss["aux_loss"]) == 0
    assert float(loss["loss"]) == pytest.approx(center + offset + 5 * oks, rel=1e-5)

    # bone vectors kp1 - kp0: predicted (-2, -1.5), target (-2.5, -2.5): L1 1.5 over 2 values
    boned = AdaptivePoseLoss(sigmas=sigmas, aux_factor=0.0, oks_factor=0.0, bone_edges=[(0, 1)])(out, batch)
    assert float(boned["offset_loss"]) == pytest.approx((offset + 1.5 / (2 + 1e-4)) / 2, rel=1e-5)
    assert float(boned["oks_loss"]) == 0


def test_masked_cells_count_only_on_real_people():
    out, batch = _outputs(), _batch()
    batch["mask"][0, 0, :, 1:3] = 0  # covers the person's centre (1, 1) and 7 negatives
    loss = AdaptivePoseLoss(sigmas=[0.5, 0.25], aux_factor=0.0, oks_factor=0.0)(out, batch)
    assert float(loss["center_loss"]) == pytest.approx(-(9 * 0.25 * math.log(0.5)), rel=1e-5)  # 1 pos + 8 negs
    # ... and a negative inside a real person's Gaussian keeps its (reduced) weight even where masked
    batch["center_heatmap"][0, 0, 1, 2] = 0.5
    loss = AdaptivePoseLoss(sigmas=[0.5, 0.25], aux_factor=0.0, oks_factor=0.0)(out, batch)
    extra = 0.5 ** 4 * 0.25 * math.log(0.5)
    assert float(loss["center_loss"]) == pytest.approx(-(9 * 0.25 * math.log(0.5) + extra), rel=1e-5)


def test_aux_focal_term_and_its_missing_head():
    out, batch = _outputs(), _batch()
    batch["aux_heatmap"][0, 0, 0, 0] = 1
    out["aux_heatmap"] = torch.zeros(1, 2, 4, 4)
    loss = AdaptivePoseLoss(sigmas=[0.5, 0.25], aux_factor=2.0, oks_factor=0.0)(out, batch)
    assert float(loss["aux_loss"]) == pytest.approx(2 * -(32 * 0.25 * math.log(0.5)), rel=1e-5)
    del out["aux_heatmap"]
    with pytest.raises(KeyError, match="aux_heatmap"):
        AdaptivePoseLoss(sigmas=[0.5, 0.25])(out, batch)


def test_distributed_normalisers_are_global():
    """Two processes holding the same batch (all_reduce doubles every count, world_size 2) give each process the
    loss of one process: the averaged gradients equal those of one process with both batches."""
    out, batch = _outputs(), _batch()
    out["aux_heatmap"] = torch.zeros(1, 2, 4, 4)
    batch["aux_heatmap"][0, 1, 2, 2] = 1
    loss = AdaptivePoseLoss(sigmas=[0.5, 0.25], bone_edges=[(0, 1)])
    one = loss(out, batch)
    two = loss(out, batch, world_size=2, all_reduce=lambda x: 2 * x)
    for k in one:
        assert float(two[k]) == pytest.approx(float(one[k]), rel=1e-6), k


def test_gradients_reach_center_and_offsets():
    out, batch = _outputs(), _batch()
    out = {k: v.requires_grad_() for k, v in out.items()}
    AdaptivePoseLoss(sigmas=[0.5, 0.25], aux_factor=0.0)(out, batch)["loss"].backward()
    assert out["center"].grad.abs().sum() > 0
    g = out["offset"].grad[0]
    assert g[:, 1, 1].abs().sum() > 0 and g.abs().sum() == g[:, 1, 1].abs().sum()  # only at the centre cell


def test_gather_at():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    index = torch.tensor([[0, 7], [19, 3]])
    got = gather_at(maps, index)
    assert got.shape == (2, 2, 3)
    assert got[1, 0].tolist() == maps[1, :, 3, 4].tolist() and got[0, 1].tolist() == maps[0, :, 1, 2].tolist()


def test_official_bone_edges():
    assert bone_edges(CROWDPOSE14) == ((13, 1), (0, 2), (0, 13), (13, 12), (2, 4), (1, 3), (3, 5), (6, 7), (6, 8),
                                       (8, 10), (7, 9), (9, 11))
    assert bone_edges(COCO17) == ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11),
                                  (6, 12), (11, 13), (13, 15), (12, 14), (14, 16))
