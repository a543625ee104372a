"""AdaptivePose decoding (bupose.methods.adaptive_pose.decode) and soft-NMS (bupose.inference.nms.soft_nms): hand-
computed cases on constructed network outputs, the flip modes, multi-scale merging, and the mirror symmetry of the
whole test path with a tiny random model."""
import math

import numpy as np
import pytest
import torch

from bupose.data import geometry as G
from bupose.data.keypoints import CROWDPOSE14
from bupose.errors import DataError
from bupose.inference.nms import soft_nms
from bupose.inference.tta import TestTimeAugmentation
from bupose.methods.adaptive_pose.decode import (CENTERNET_MEAN, CENTERNET_STD, AdaptivePoseDecoder, decode_centres,
                                                 official_resize, to_centernet_tensor)
from bupose.methods.adaptive_pose.model import build_adaptive_pose

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = CROWDPOSE14
K = SPEC.num_keypoints


def _decoder(**kw):
    kw.setdefault("threshold", 0.1)
    return AdaptivePoseDecoder(flip_index=SPEC.flip_index, sigmas=SPEC.sigmas, input_size=32, **kw)


def _render(view, people, logits, mirrored=False, background=-8.0, shift=(0, 0)):
    """The outputs a perfect model gives on ``view`` for ``people`` (image pixels, ``(K, 2)`` each): a centre peak
    of ``logit`` at the cell of the mean keypoint (moved by ``shift`` cells), offsets exact. ``mirrored``: the
    outputs of the mirrored input."""
    w_in, h_in = view.size
    h, w = h_in // 4, w_in // 4
    center = torch.full((1, 1, h, w), background)
    offset = torch.zeros(1, 2 * K, h, w)
    for p, logit in zip(people, logits):
        q = G.warp_points(np.asarray(p, np.float64), view.matrix)
        if mirrored:
            q = q[list(SPEC.flip_index)]
            q[:, 0] = w_in - 1 - q[:, 0]
        q = q / 4
        cx, cy = (int(v) + d for v, d in zip(q.mean(0), shift))
        center[0, 0, cy, cx] = logit
        offset[0, :, cy, cx] = torch.as_tensor((q - (cx, cy)).reshape(-1), dtype=torch.float32)
    return {"center": center, "offset": offset}


def _people(rng, centres, spread=6.0):
    """People with keypoints scattered by up to ``spread`` image pixels around ``centres``."""
    return [np.asarray(c, np.float64) + rng.uniform(-spread, spread, (K, 2)) for c in centres]


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


# -- input -----------------------------------------------------------------------------------------------------------
def test_official_resize_by_hand():
    m, size = official_resize((40, 30), 32)  # short side 30 -> 32, long 40 -> int(42.67) = 42, canvas 64 x 64
    assert size == (64, 64)
    # cv2.resize's mapping x' = (x + 0.5) * 42 / 40 - 0.5, then centred: + 64 / 2 - 42 // 2 = 11 (y: + 16)
    np.testing.assert_allclose(m, [[42 / 40, 0, 0.5 * 42 / 40 - 0.5 + 11], [0, 32 / 30, 0.5 * 32 / 30 - 0.5 + 16]])
    m, size = official_resize((30, 50), 32, scale=1.5)  # portrait: width 30 -> 48, height int(53.33 * 1.5) = 80
    assert size == (64, 96)
    assert m[0, 2] == pytest.approx(0.5 * 48 / 30 - 0.5 + 8) and m[1, 2] == pytest.approx(0.5 * 80 / 50 - 0.5 + 8)
    _, size = official_resize((64, 64), 32)  # a multiple of 32 still gets 32 more: (n | 31) + 1
    assert size == (64, 64)


def test_centernet_normalisation_keeps_bgr():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255  # blue
    t = to_centernet_tensor(img)
    assert t.shape == (3, 2, 3)
    assert float(t[0, 0, 0]) == pytest.approx((1 - CENTERNET_MEAN[0]) / CENTERNET_STD[0], rel=1e-6)
    assert float(t[2, 0, 0]) == pytest.approx(-CENTERNET_MEAN[2] / CENTERNET_STD[2], rel=1e-6)
    with pytest.raises(DataError, match="uint8 BGR"):
        to_centernet_tensor(np.zeros((2, 3), np.uint8))


# -- one pass --------------------------------------------------------------------------------------------------------
def test_decode_centres_by_hand():
    prob = torch.zeros(8, 8)
    prob[2, 2], prob[3, 3], prob[7, 6], prob[0, 7] = 0.9, 0.5, 0.6, 0.05  # (3, 3) is in (2, 2)'s 5x5 window
    offset = torch.zeros(2, 8, 8)
    offset[:, 2, 2] = torch.tensor([0.5, -1.0])
    offset[:, 7, 6] = torch.tensor([-1.0, 2.0])
    scores, kps, centres = decode_centres(prob, offset, max_people=20, threshold=0.1)
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    assert centres.tolist() == [[2, 2], [6, 7]]  # (j, i)
    assert kps.tolist() == [[[2.5, 1.0]], [[5.0, 9.0]]]  # (j + dx, i + dy)
    scores, _, _ = decode_centres(prob, offset, max_people=1, threshold=0.0)
    assert scores.tolist() == pytest.approx([0.9])


def test_one_pass_maps_to_image_pixels_by_hand():
    dec = _decoder()
    image = np.zeros((32, 32, 3), np.uint8)  # resized 32 -> 32, centred on a 64 x 64 canvas: x_in = x + 16
    state = dec.begin(image, [1.0])
    view = dec.prepare(image, 1.0)
    assert view.size == (64, 64) and tuple(view.tensor.shape) == (1, 3, 64, 64)
    center = torch.full((1, 1, 16, 16), -8.0)
    center[0, 0, 6, 5] = 1.5
    offset = torch.zeros(1, 2 * K, 16, 16)
    d = torch.linspace(-2, 2, 2 * K)
    offset[0, :, 6, 5] = d
    dec.add_scale(state, {"center": center, "offset": offset}, None, view, 1.0)
    people = dec.finish(state)
    assert len(people) == 1
    expect_x = 4 * (5 + d[0::2].double()) - 16
    expect_y = 4 * (6 + d[1::2].double()) - 16
    np.testing.assert_allclose(people.keypoints[0, :, 0], expect_x, atol=1e-5)
    np.testing.assert_allclose(people.keypoints[0, :, 1], expect_y, atol=1e-5)
    assert people.scores[0] == pytest.approx(_sigmoid(1.5))
    assert (people.keypoints[0, :, 2] == people.scores[0]).all()


# -- flip ------------------------------------------------------------------------------------------------------------
IMAGE = np.zeros((40, 50, 3), np.uint8)  # resized to 40 x 32 (even width: a mirror-symmetric resize)


def _run(dec, plain, flipped, scale=1.0):
    state = dec.begin(IMAGE, [scale])
    dec.add_scale(state, plain, flipped, dec.prepare(IMAGE, scale), scale)
    return dec.finish(state)


def _match(people, truth):
    """The decoded person nearest to each true person: ``(keypoints (N, K, 2), scores (N,))``."""
    order = []
    for t in truth:
        err = np.array([np.abs(q[:, :2] - t).max() for q in people.keypoints])
        near = np.flatnonzero(err < err.min() + 1e-3)  # duplicates: the best-scoring one
        order.append(int(near[np.argmax(people.scores[near])]))
    return people.keypoints[order, :, :2], people.scores[order]


def test_flip_fuse_unmirrors_and_swaps_the_mirrored_pass():
    dec = _decoder(flip="fuse")
    view = dec.prepare(IMAGE, 1.0)
    people = _people(np.random.default_rng(0), [(13, 20), (37, 20)])
    plain = _render(view, people, [2.0, 1.0])
    flipped = _render(view, people, [2.0, 1.0], mirrored=True)
    got = _run(dec, plain, flipped)
    assert len(got) == 2
    kps, scores = _match(got, people)
    np.testing.assert_allclose(kps, np.stack(people), atol=1e-4)
    assert scores.tolist() == pytest.approx([_sigmoid(2.0), _sigmoid(1.0)])

    # the mirrored pass alone: the same people, at half their score (the other pass saw nothing there)
    empty = _render(view, [], [])
    got = _run(dec, empty, flipped)
    kps, scores = _match(got, people)
    np.testing.assert_allclose(kps, np.stack(people), atol=1e-4)
    assert scores.tolist() == pytest.approx([_sigmoid(2.0) / 2, _sigmoid(1.0) / 2])

    # centres 3 cells apart (beyond the 5x5 max-pool's reach): not the same person, both kept at half score
    got = _run(dec, _render(view, people[:1], [2.0]), _render(view, people[:1], [2.0], mirrored=True, shift=(0, 3)))
    assert len(got) == 2 and got.scores.tolist() == pytest.approx([_sigmoid(2.0) / 2] * 2)
    np.testing.assert_allclose(got.keypoints[:, :, :2], np.stack([people[0]] * 2), atol=1e-4)
    got = _run(dec, _render(view, people[:1], [2.0]), _render(view, people[:1], [2.0], mirrored=True, shift=(0, 2)))
    assert len(got) == 1 and got.scores[0] == pytest.approx(_sigmoid(2.0))  # 2 cells: within reach

    # a matched pair is fused: keypoints weighted by score, the score averaged
    shifted = [p + (1.0, 0.0) for p in people]
    got = _run(dec, _render(view, shifted, [0.0, 0.0]), _render(view, people, [2.0, 2.0], mirrored=True))
    kps, scores = _match(got, people)
    w = _sigmoid(0.0) / (_sigmoid(0.0) + _sigmoid(2.0))
    np.testing.assert_allclose(kps, np.stack(people) + (w, 0.0), atol=1e-4)
    assert scores.tolist() == pytest.approx([(0.5 + _sigmoid(2.0)) / 2] * 2)


def test_flip_official_averages_only_the_centre_heatmap():
    dec = _decoder(flip="official")
    view = dec.prepare(IMAGE, 1.0)
    people = _people(np.random.default_rng(1), [(25, 20)], spread=12)
    plain = _render(view, people, [1.0])
    flipped = {"center": torch.flip(plain["center"], [3]).clone(), "offset": torch.randn(plain["offset"].shape)}
    (cy, cx) = [int(v[0]) for v in torch.nonzero(plain["center"][0, 0] > 0, as_tuple=True)]
    flipped["center"][0, 0, cy, -1 - cx] = 3.0  # the mirrored pass, mirrored back on the grid, scores it higher
    got = _run(dec, plain, flipped)
    assert len(got) == 1
    np.testing.assert_allclose(got.keypoints[0, :, :2], people[0], atol=1e-4)  # the plain pass's keypoints
    assert got.scores[0] == pytest.approx((_sigmoid(1.0) + _sigmoid(3.0)) / 2)


# -- merging passes --------------------------------------------------------------------------------------------------
def test_soft_nms_by_hand():
    boxes = torch.tensor([[0.0, 0, 9, 9], [0, 0, 9, 4], [20, 20, 29, 29]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # inclusive pixels: areas 100 and 50, overlap 50 -> IoU 0.5; Gaussian decay exp(-0.5^2 / 0.5)
    keep, new = soft_nms(boxes, scores)
    assert keep.tolist() == [0, 2, 1]
    assert new.tolist() == pytest.approx([0.9, 0.8 * math.exp(-0.5), 0.7])
    keep, new = soft_nms(boxes, scores, pixel_offset=0.0)  # continuous: 36 / 81
    assert new[1] == pytest.approx(0.8 * math.exp(-(36 / 81) ** 2 / 0.5))
    keep, new = soft_nms(boxes, scores, method="linear")
    assert new[1] == pytest.approx(0.4)
    keep, _ = soft_nms(boxes, scores, method="hard")
    assert keep.tolist() == [0, 2]
    keep, new = soft_nms(boxes, scores, sigma=0.01, score_threshold=0.1)  # decayed below the threshold: dropped
    assert keep.tolist() == [0, 2]
    assert soft_nms(boxes[:0], scores[:0])[0].numel() == 0


@pytest.mark.parametrize("nms,expect", [("oks", 2), ("soft", 4), ("none", 4)])
def test_scales_are_pooled_then_merged(nms, expect):
    dec = _decoder(nms=nms)
    people = _people(np.random.default_rng(2), [(13, 20), (37, 20)], spread=4)  # boxes apart
    state = dec.begin(IMAGE, [1.5, 1.0])
    for scale, logit in ((1.5, 1.0), (1.0, 2.0)):
        view = dec.prepare(IMAGE, scale)
        dec.add_scale(state, _render(view, people, [logit, logit]), None, view, scale)
    got = dec.finish(state)
    assert len(got) == expect
    kps, scores = _match(got, people)
    np.testing.assert_allclose(kps, np.stack(people), atol=1e-4)
    assert scores.tolist() == pytest.approx([_sigmoid(2.0)] * 2)  # the better scale's person is kept first
    if nms == "soft":  # the duplicates stay, decayed by their IoU of about 1: exp(-1 / 0.5)
        assert sorted(got.scores)[:2] == pytest.approx([_sigmoid(1.0) * math.exp(-2)] * 2, rel=0.05)


def test_a_single_pass_is_not_merged():
    """One decoding per image (no flip, or the official flip): the centre max-pool is the only NMS, as
    officially; two people at the same place stay."""
    dec = _decoder(flip="official")
    people = _people(np.random.default_rng(3), [(25, 12)])
    people.append(people[0] + (0.0, 16.0))  # centre 16 image px (3.2 cells) lower, outside the 5x5 max-pool
    view = dec.prepare(IMAGE, 1.0)
    plain = _render(view, people, [2.0, 1.0])
    got = _run(dec, plain, {"center": torch.flip(plain["center"], [3]), "offset": plain["offset"]})
    assert len(got) == 2


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="flip must be one of"):
        _decoder(flip="average")
    with pytest.raises(ValueError, match="nms must be one of"):
        _decoder(nms="hard")
    with pytest.raises(ValueError, match="sigmas"):
        AdaptivePoseDecoder(flip_index=SPEC.flip_index, sigmas=SPEC.sigmas[:3])


# -- the whole test path ---------------------------------------------------------------------------------------------
def test_mirrored_image_gives_mirrored_people_with_a_random_model():
    """Flip fusion is mirror symmetric: the passes of the mirrored image are those of the image, swapped (its resize
    is mirror symmetric -- an even resized width -- and bilinear sampling at multiples of 1/8 pixel is exact), so
    whatever the weights, the people of the mirrored image are the mirrored people (x -> W - 1 - x, left and right
    swapped)."""
    torch.manual_seed(0)
    stages = {"NUM_STAGES": 3, "NUM_MODULES": [1, 1, 1], "NUM_BRANCHES": [2, 3, 4], "BLOCK": ["BASIC"] * 3,
              "NUM_BLOCKS": [[1, 1], [1, 1, 1], [1, 1, 1, 1]], "NUM_CHANNELS": [[4, 8], [4, 8, 16], [4, 8, 16, 32]],
              "FUSE_METHOD": ["SUM"] * 3}
    model = build_adaptive_pose({"STAGES": stages, "STEM_BLOCKS": 1, "HEAD_CHANNELS": 8, "PART_CHANNELS": 4},
                                SPEC).eval()
    with torch.no_grad():  # spread the random centre logits (clear top-K peaks) and the offsets (distinct keypoints)
        model.sampler.pred_ct_hm.weight.mul_(50)
        model.sampler.searcher.weight.normal_(0, 2.0)
        for conv in model.sampler.pred_kps_list:
            conv.weight.normal_(0, 5.0)
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)  # short side 80 -> 64: width 80, on 96 x 96
    mirrored = np.ascontiguousarray(image[:, ::-1])
    dec = AdaptivePoseDecoder(flip_index=SPEC.flip_index, sigmas=SPEC.sigmas, input_size=64, max_people=10,
                              flip="fuse")
    engine = TestTimeAugmentation([1.0], flip=True)
    a, b = engine(model, dec, image), engine(model, dec, mirrored)
    assert len(a) == len(b) >= 5
    expect = a.keypoints[:, list(SPEC.flip_index)].copy()
    expect[..., 0] = 100 - 1 - expect[..., 0]
    for person, score in zip(expect, a.scores):
        i = int(np.argmin(np.abs(b.keypoints[..., :2] - person[None, :, :2]).max(axis=(1, 2))))
        np.testing.assert_allclose(b.keypoints[i, :, :2], person[:, :2], atol=1e-3)
        assert b.scores[i] == pytest.approx(score, abs=1e-6)
    # without the left/right swap the mirrored people would be elsewhere
    unswapped = a.keypoints[:, :, :2].copy()
    unswapped[..., 0] = 100 - 1 - unswapped[..., 0]
    assert np.abs(unswapped - expect[..., :2]).max() > 1
