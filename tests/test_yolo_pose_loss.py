"""YOLO-Pose loss: anchor matching, CIoU, OKS loss, ignore mask, L1 option, input checks, and exactness against the
official ``ComputeLoss``.

``fixtures/yolo_pose_loss_official.pt`` was made by running the official ``ComputeLoss(kpt_label=True)``
(TexasInstruments/edgeai-yolov5, branch ``yolo-pose``; hyp.scratch.yaml gains scaled by train.py for 4 levels, 640)
on random float16-exact head outputs for a 2 x 3 x 64 x 128 input (strides 8..64, official P6 anchors) and 18 random
people (one per image without any labelled keypoint), with the targets converted to our format (input pixels,
pixel centres at integers; unlabelled keypoints given garbage coordinates). It holds the official loss, loss items
and the gradient (objectness channel, and the rows at positive cells; zero elsewhere).
"""
import math
from pathlib import Path

import pytest
import torch

from bupose.errors import ConfigError, DataError
from bupose.methods.yolo_pose.loss import YOLOPoseLoss, bbox_ciou, official_balance, official_gains

FIXTURE = Path(__file__).parent / "fixtures" / "yolo_pose_loss_official.pt"
COCO_SIGMAS = torch.tensor([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89,
                            .89]) / 10.0
P6_ANCHORS = torch.tensor([[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137], [140, 301, 303, 264, 238, 542],
                           [436, 615, 739, 380, 925, 792]], dtype=torch.float32).view(4, 3, 2)


def one_level_loss(k=2, stride=8, anchor=(16.0, 16.0), **kw):
    """One level, one anchor: easy to reason about by hand."""
    return YOLOPoseLoss(anchors=[[list(anchor)]], strides=[stride], num_keypoints=k, sigmas=[0.05] * k, **kw)


def target_row(b, cx, cy, w, h, kpts):
    """kpts: list of (x, y, v) in input pixels."""
    return [b, 0, cx, cy, w, h] + [c for p in kpts for c in p]


def pixel(grid, stride=8):
    """Grid coordinate -> input pixel (the inverse of ``(p + 0.5) / s``)."""
    return grid * stride - 0.5


def cells(level_targets):
    return sorted(zip(level_targets.gx.tolist(), level_targets.gy.tolist()))


# -- exactness against the official loss ------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [None, "ones"])
def test_matches_official_compute_loss(mask):
    d = torch.load(FIXTURE)
    h, w = d["image_hw"]
    loss_fn = YOLOPoseLoss(anchors=d["anchors"], strides=d["strides"], num_keypoints=17, sigmas=COCO_SIGMAS,
                           **official_gains(4, 1, 640))
    levels = [t.float().requires_grad_() for t in d["levels"]]
    batch = {"image": torch.zeros(2, 3, h, w), "targets": d["targets"]}
    if mask == "ones":
        batch["mask"] = torch.ones(2, h, w)
    out = loss_fn({"levels": levels}, batch)
    items = torch.stack([out[k] for k in ("box_loss", "obj_loss", "cls_loss", "kpt_loss", "kpt_conf_loss")])
    torch.testing.assert_close(items, d["items"][:5], rtol=1e-5, atol=1e-7)
    assert d["items"][3] > 0.1 and d["items"][0] > 0.01  # the case exercises the keypoint and box terms
    torch.testing.assert_close(out["loss"], d["loss"], rtol=1e-5, atol=1e-6)
    out["loss"].backward()
    for t, g_obj, g_cells, g_rows in zip(levels, d["grad_obj"], d["grad_cells"], d["grad_rows"]):
        ref = torch.zeros_like(t)
        ref[tuple(g_cells.T)] = g_rows
        ref[..., 4] = g_obj
        torch.testing.assert_close(t.grad, ref, rtol=1e-4, atol=1e-8)


def test_official_gains_and_balance():
    g = official_gains(4, 1, 640)
    assert g == pytest.approx({"box_gain": 0.0375, "obj_gain": 0.75, "cls_gain": 0.0046875, "kpt_gain": 0.1,
                               "kpt_conf_gain": 0.0046875})
    default = YOLOPoseLoss(anchors=P6_ANCHORS, strides=[8, 16, 32, 64], num_keypoints=17, sigmas=COCO_SIGMAS)
    assert (default.box_gain, default.obj_gain, default.cls_gain, default.kpt_gain, default.kpt_conf_gain) == \
        pytest.approx(tuple(g.values()))
    assert default.balance == [4.0, 1.0, 0.25, 0.06]
    three = YOLOPoseLoss.official(anchors=P6_ANCHORS[:3], strides=[8, 16, 32], num_keypoints=17,
                                  sigmas=COCO_SIGMAS, input_size=960)
    assert (three.box_gain, three.obj_gain, three.cls_gain) == pytest.approx((0.05, 2.25, 0.00625))
    assert three.balance == [4.0, 1.0, 0.4] == official_balance(3)
    with pytest.raises(ConfigError, match="balance"):
        official_balance(6)


# -- anchor matching --------------------------------------------------------------------------------------------
def test_anchor_ratio_threshold():
    loss_fn = one_level_loss(anchor=(16.0, 16.0))
    kp = [(0, 0, 0)] * 2
    rows = torch.tensor([target_row(0, 40, 40, 16 * 3.9, 16, kp), target_row(0, 40, 40, 16 * 4.1, 16, kp),
                         target_row(0, 40, 40, 16, 16 / 4.1, kp), target_row(0, 40, 40, 16, 16 / 3.9, kp)],
                        dtype=torch.float32)
    (lt,) = loss_fn.build_targets(rows, [(10, 10)])
    assert set(lt.target.tolist()) == {0, 3}


def test_neighbour_cells():
    loss_fn = one_level_loss()
    # grid centre (3.2, 5.7): x frac 0.2 -> left neighbour, y frac 0.7 -> lower neighbour
    rows = torch.tensor([target_row(0, pixel(3.2), pixel(5.7), 16, 16, [(0, 0, 0)] * 2)], dtype=torch.float32)
    (lt,) = loss_fn.build_targets(rows, [(10, 10)])
    assert cells(lt) == [(2, 5), (3, 5), (3, 6)]
    # order: own cell, then left, then down; box xy relative to each cell
    torch.testing.assert_close(lt.box[:, :2], torch.tensor([[0.2, 0.7], [1.2, 0.7], [0.2, -0.3]]), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(lt.box[:, 2:], torch.full((3, 2), 2.0))
    # frac > 0.5 on x, < 0.5 on y: right and upper neighbours
    rows[0, 2:4] = torch.tensor([pixel(6.8), pixel(2.3)])
    (lt,) = loss_fn.build_targets(rows, [(10, 10)])
    assert cells(lt) == [(6, 1), (6, 2), (7, 2)]


def test_neighbour_cells_at_the_border():
    loss_fn = one_level_loss()
    kp = [(0, 0, 0)] * 2
    # x in the first cell (no left neighbour although frac < 0.5), y in the last cell with frac > 0.5
    rows = torch.tensor([target_row(0, pixel(0.3), pixel(9.8), 16, 16, kp)], dtype=torch.float32)
    (lt,) = loss_fn.build_targets(rows, [(10, 10)])
    assert cells(lt) == [(0, 9)]
    rows = torch.tensor([target_row(0, pixel(0.7), pixel(9.2), 16, 16, kp)], dtype=torch.float32)
    (lt,) = loss_fn.build_targets(rows, [(10, 10)])
    assert cells(lt) == [(0, 8), (0, 9), (1, 9)]  # right and upper neighbours
    # exactly half-way: only the own cell
    rows = torch.tensor([target_row(0, pixel(4.5), pixel(4.5), 16, 16, kp)], dtype=torch.float32)
    (lt,) = loss_fn.build_targets(rows, [(10, 10)])
    assert cells(lt) == [(4, 4)]


# -- CIoU ---------------------------------------------------------------------------------------------------------
def test_ciou_against_hand_computation():
    b1 = torch.tensor([[0.0, 0.0, 2.0, 2.0]])  # [-1, 1] x [-1, 1]
    b2 = torch.tensor([[1.0, 0.0, 2.0, 4.0]])  # [0, 2] x [-2, 2]
    iou = 2.0 / (4.0 + 8.0 - 2.0)
    c2, rho2 = 3.0 ** 2 + 4.0 ** 2, 1.0
    v = 4 / math.pi ** 2 * (math.atan(2 / 4) - math.atan(2 / 2)) ** 2
    alpha = v / (1 - iou + v)
    expected = iou - rho2 / c2 - alpha * v
    assert bbox_ciou(b1, b2).item() == pytest.approx(expected, abs=1e-5)
    assert bbox_ciou(b2, b1).item() == pytest.approx(expected, abs=1e-5)
    same = torch.tensor([[3.0, 4.0, 5.0, 7.0], [0.5, 0.5, 0.2, 1.3]])
    torch.testing.assert_close(bbox_ciou(same, same), torch.ones(2), atol=1e-5, rtol=0)
    far = torch.tensor([[100.0, 0.0, 2.0, 2.0]])
    assert bbox_ciou(b1, far).item() < -0.9  # disjoint: IoU 0 minus a distance penalty close to 1


# -- keypoint losses ----------------------------------------------------------------------------------------------
def _single_target_case(k=3, raw_kpt=0.4, vis=(2, 1, 0)):
    """One 16x24 px person centred at grid (3.2, 5.7) on a 10x10 grid; all keypoint raw outputs = raw_kpt."""
    loss_fn = one_level_loss(k=k, kpt_gain=1.0, kpt_conf_gain=1.0, box_gain=0.0, obj_gain=0.0)
    kg = [(2.9, 5.1), (3.6, 6.4), (1e4, -7.0)][:k]  # grid units; the last is unlabelled with garbage coordinates
    kpts = [(pixel(x), pixel(y), v) for (x, y), v in zip(kg, vis)]
    rows = torch.tensor([target_row(0, pixel(3.2), pixel(5.7), 16, 24, kpts)], dtype=torch.float32)
    pred = torch.zeros(1, 1, 10, 10, 5 + 1 + 3 * k)
    pred[..., 6:] = raw_kpt
    batch = {"image": torch.zeros(1, 3, 80, 80), "targets": rows}
    return loss_fn, pred, batch, kg


def test_oks_loss_against_direct_computation():
    loss_fn, pred, batch, kg = _single_target_case()
    out = loss_fn({"levels": [pred]}, batch)
    sigmas, area = [0.05] * 3, (16 / 8) * (24 / 8)
    terms, labelled = [], 0
    for cx, cy in [(3, 5), (2, 5), (3, 6)]:  # the three matched cells
        for j, ((x, y), v) in enumerate(zip(kg, (2, 1, 0))):
            if v == 0:
                continue
            px, py = cx + 2 * 0.4 - 0.5, cy + 2 * 0.4 - 0.5
            d2 = (px - x) ** 2 + (py - y) ** 2
            terms.append(1 - math.exp(-d2 / (area * 4 * sigmas[j] ** 2 + 1e-9)))
            labelled += 1
    assert out["kpt_loss"].item() == pytest.approx(sum(terms) / labelled, rel=1e-5)
    # confidence BCE of logit 0.4 against labelled (1, 1, 0), averaged over every keypoint of every positive
    p = 1 / (1 + math.exp(-0.4))
    assert out["kpt_conf_loss"].item() == pytest.approx((-2 * math.log(p) - math.log(1 - p)) / 3, rel=1e-5)


def test_unlabelled_keypoints_do_not_contribute():
    loss_fn, pred, batch, _ = _single_target_case()
    pred = pred.clone()
    pred[..., 6 + 6:6 + 8] = torch.randn(1, 1, 10, 10, 2) * 50  # the unlabelled keypoint's x, y outputs
    pred.requires_grad_()
    out = loss_fn({"levels": [pred]}, batch)
    out["loss"].backward()
    assert torch.count_nonzero(pred.grad[..., 12:14]) == 0
    ref = loss_fn({"levels": [pred.detach()]}, {**batch, "targets": batch["targets"].clone()})
    other = batch["targets"].clone()
    other[0, 6 + 6:6 + 8] = torch.tensor([float("nan"), float("inf")])  # any coordinates for v = 0
    again = loss_fn({"levels": [pred.detach()]}, {**batch, "targets": other})
    assert again["kpt_loss"] == ref["kpt_loss"] and torch.isfinite(again["loss"])
    # no labelled keypoint at all: the OKS term is 0 (the official gives NaN), the confidence term is not
    none = batch["targets"].clone()
    none[0, 8::3] = 0
    out = loss_fn({"levels": [pred.detach()]}, {**batch, "targets": none})
    assert out["kpt_loss"] == 0 and out["kpt_conf_loss"] > 0 and torch.isfinite(out["loss"])


def test_l1_keypoint_gradient_does_not_vanish():
    # keypoints predicted ~12 cells away from 2x3-cell people: OKS saturates at 1
    _, pred, batch, _ = _single_target_case(raw_kpt=6.0, vis=(2, 1, 0))
    pred.requires_grad_()
    gains = dict(k=3, box_gain=0.0, obj_gain=0.0, kpt_conf_gain=0.0)
    oks_fn = one_level_loss(kpt_gain=1.0, **gains)
    out = oks_fn({"levels": [pred]}, batch)
    assert "l1_kpt_loss" not in out and out["kpt_loss"].item() == pytest.approx(1.0)
    out["loss"].backward()
    assert pred.grad[..., 6:].abs().max() < 1e-9
    pred.grad = None
    l1_fn = one_level_loss(kpt_gain=0.0, l1_kpt_gain=0.5, **gains)
    out = l1_fn({"levels": [pred]}, batch)
    out["loss"].backward()
    g = pred.grad[0, 0, 5, 3, 6:].view(3, 3)  # own cell: x, y, conf of each keypoint
    # d(0.5 * |2t - 0.5 - target| / sqrt(area) / #labelled) / dt = 0.5 * 2 / sqrt(6) / 6 per labelled coordinate
    torch.testing.assert_close(g[:2, :2], torch.full((2, 2), 0.5 * 2 / math.sqrt(6.0) / 6), rtol=1e-5, atol=0)
    assert torch.count_nonzero(g[2]) == 0 and torch.count_nonzero(g[:, 2]) == 0
    assert out["l1_kpt_loss"] > 0 and out["loss"] == out["l1_kpt_loss"]


# -- the ignore mask ----------------------------------------------------------------------------------------------
def _random_case(seed=0, k=17, size=(64, 128)):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    loss_fn = YOLOPoseLoss(anchors=P6_ANCHORS, strides=[8, 16, 32, 64], num_keypoints=k, sigmas=COCO_SIGMAS[:k])
    rows = []
    for b in range(2):
        for _ in range(4):
            cx, cy = float(torch.rand(1, generator=g)) * w, float(torch.rand(1, generator=g)) * h
            bw, bh = 8 + float(torch.rand(1, generator=g)) * 60, 8 + float(torch.rand(1, generator=g)) * 50
            kp = [(cx + (float(torch.rand(1, generator=g)) - 0.5) * bw,
                   cy + (float(torch.rand(1, generator=g)) - 0.5) * bh, 2) for _ in range(k)]
            rows.append(target_row(b, cx, cy, bw, bh, kp))
    levels = [torch.randn(2, 3, h // s, w // s, 6 + 3 * k, generator=g) for s in (8, 16, 32, 64)]
    batch = {"image": torch.zeros(2, 3, h, w), "targets": torch.tensor(rows, dtype=torch.float32)}
    return loss_fn, levels, batch


def test_all_ones_mask_equals_no_mask():
    loss_fn, levels, batch = _random_case()
    a = loss_fn({"levels": levels}, batch)
    b = loss_fn({"levels": levels}, {**batch, "mask": torch.ones(2, 64, 128)})
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_zero_mask_keeps_positives_only():
    loss_fn, levels, batch = _random_case()
    levels = [t.requires_grad_() for t in levels]
    mask = torch.ones(2, 64, 128)
    mask[:, :, :64] = 0  # left half ignored
    out = loss_fn({"levels": levels}, {**batch, "mask": mask})
    out["loss"].backward()  # only the objectness term reaches channel 4 (its IoU target is detached)
    positives = loss_fn.build_targets(batch["targets"], [(t.shape[2], t.shape[3]) for t in levels])
    for t, s, p in zip(levels, (8, 16, 32, 64), positives):
        is_pos = torch.zeros(t.shape[:4], dtype=torch.bool)
        is_pos[p.batch, p.anchor, p.gy, p.gx] = True
        grad = t.grad[..., 4]
        centre_x = torch.arange(t.shape[3]) * s + s // 2
        left = (centre_x < 64).expand_as(grad)
        assert torch.count_nonzero(grad[left & ~is_pos]) == 0
        assert bool((grad[is_pos] != 0).all())
        assert bool((grad[~left & ~is_pos] != 0).all())
    assert sum(len(p) for p in positives) > 10
    # normalised by the number of weighted candidates: everything but the positives ignored -> mean over positives
    zero = loss_fn({"levels": [t.detach() for t in levels]}, {**batch, "mask": torch.zeros(2, 64, 128)})
    expected = 0.0
    for level, (t, p) in enumerate(zip(levels, positives)):
        ps = t.detach()[p.batch, p.anchor, p.gy, p.gx]
        pbox = torch.cat([ps[:, :2].sigmoid() * 2 - 0.5,
                          (ps[:, 2:4].sigmoid() * 2) ** 2 * loss_fn.anchors_grid[level][p.anchor]], 1)
        tobj = torch.zeros(t.shape[:4])
        tobj[p.batch, p.anchor, p.gy, p.gx] = bbox_ciou(pbox, p.box).clamp(0)
        unique = torch.zeros(t.shape[:4], dtype=torch.bool)
        unique[p.batch, p.anchor, p.gy, p.gx] = True
        bce = torch.nn.functional.binary_cross_entropy_with_logits(t.detach()[..., 4], tobj, reduction="none")
        if len(p):
            expected += loss_fn.balance[level] * float(bce[unique].mean())
    assert zero["obj_loss"].item() == pytest.approx(expected * loss_fn.obj_gain, rel=1e-5)


def test_cell_weights_sample_the_cell_centre_pixel():
    loss_fn = one_level_loss(stride=8)
    mask = torch.arange(24 * 16, dtype=torch.float32).view(1, 24, 16)
    got = loss_fn.cell_weights(mask, (3, 2), 8)
    want = mask[0][[4, 12, 20]][:, [4, 12]]
    torch.testing.assert_close(got[0], want)


# -- other options ------------------------------------------------------------------------------------------------
def test_custom_number_of_keypoints_and_classes():
    loss_fn, levels, batch = _random_case(k=5)
    assert loss_fn.num_channels == 21
    levels = [t.requires_grad_() for t in levels]
    out = loss_fn({"levels": levels}, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["kpt_loss"] > 0 and out["cls_loss"] == 0
    assert all(torch.isfinite(t.grad).all() for t in levels)

    multi = YOLOPoseLoss(anchors=P6_ANCHORS, strides=[8, 16, 32, 64], num_keypoints=5, sigmas=COCO_SIGMAS[:5],
                         num_classes=3)
    levels3 = [torch.cat([t.detach()[..., :6], torch.zeros_like(t[..., :2]), t.detach()[..., 6:]], -1)
               for t in levels]
    targets = batch["targets"].clone()
    targets[:, 1] = torch.arange(len(targets)) % 3
    out3 = multi({"levels": levels3}, {**batch, "targets": targets})
    assert out3["cls_loss"] > 0
    # keypoints are read after the class logits: the keypoint terms equal those of the 1-class model
    torch.testing.assert_close(out3["kpt_loss"], out["kpt_loss"])


def test_world_size_scaling_and_global_normalisers():
    loss_fn, levels, batch = _random_case()
    one = loss_fn({"levels": levels}, batch)
    two = loss_fn({"levels": levels}, batch, world_size=2, all_reduce=lambda x: 2 * x)  # two identical processes
    torch.testing.assert_close(two["loss"], 2 * one["loss"])
    torch.testing.assert_close(two["kpt_loss"], one["kpt_loss"])
    # the other process had twice as many positives etc.: every term is normalised by the global mean count
    heavy = loss_fn({"levels": levels}, batch, world_size=2, all_reduce=lambda x: 3 * x)
    torch.testing.assert_close(heavy["box_loss"], one["box_loss"] * 2 / 3)


# -- bad input ----------------------------------------------------------------------------------------------------
def test_malformed_inputs_raise_clear_errors():
    loss_fn, levels, batch = _random_case(k=5)
    with pytest.raises(DataError, match=r"6 \+ 3K\) = \(M, 21\) tensor for K = 5"):
        loss_fn({"levels": levels}, {**batch, "targets": batch["targets"][:, :20]})
    bad = batch["targets"].clone()
    bad[0, 0] = 2
    with pytest.raises(DataError, match=r"batch indices must be integers in \[0, 2\)"):
        loss_fn({"levels": levels}, {**batch, "targets": bad})
    bad = batch["targets"].clone()
    bad[1, 4] = -3
    with pytest.raises(DataError, match="widths and heights must be > 0"):
        loss_fn({"levels": levels}, {**batch, "targets": bad})
    with pytest.raises(DataError, match="stride 16"):
        loss_fn({"levels": [levels[0], levels[0][:, :, :4], *levels[2:]]}, batch)
    with pytest.raises(DataError, match="list of 4 tensors"):
        loss_fn({"levels": levels[:3]}, batch)
    with pytest.raises(DataError, match="mask"):
        loss_fn({"levels": levels}, {**batch, "mask": torch.ones(2, 32, 128)})
    with pytest.raises(ConfigError, match="sigmas"):
        YOLOPoseLoss(anchors=P6_ANCHORS, strides=[8, 16, 32, 64], num_keypoints=5, sigmas=COCO_SIGMAS)
    with pytest.raises(ConfigError, match=r"\(L, A, 2\)"):
        YOLOPoseLoss(anchors=P6_ANCHORS, strides=[8, 16, 32], num_keypoints=17, sigmas=COCO_SIGMAS)
