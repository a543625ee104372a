"""YOLO-Pose decoding: official post-processing parity, flip mapping, OKS NMS, keypoint fusion, scoring."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bupose.data.keypoints import COCO17
from bupose.inference.nms import oks_nms, pairwise_oks
from bupose.inference.tta import TestTimeAugmentation
from bupose.methods.yolo_pose.decode import YOLOPoseDecoder, official_letterbox, to_yolo_tensor
from bupose.methods.yolo_pose.model import DEFAULT_ANCHORS, STRIDES, YOLOPose
from test_yolo_pose_model import TINY, load_fixture, unpack

pytestmark = pytest.mark.usefixtures("one_thread")
ANCHORS = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32).view(4, 3, 2)


@pytest.fixture(scope="module")
def tiny_s6():
    model = YOLOPose(**TINY["s6"])
    model.load_state_dict(unpack(load_fixture("tiny_s6")["state_dict"]), strict=True)
    return model.eval()


def _decoder(**kw):
    args = dict(input_size=256, conf_threshold=0.001, iou_threshold=0.65, max_people=300)
    args.update(kw)
    return YOLOPoseDecoder(ANCHORS, STRIDES, COCO17.flip_index, COCO17.sigmas, **args)


def test_official_postprocessing_gives_the_official_people(tiny_s6, synthetic_root):
    """The official letterbox, decode, NMS (conf 0.001, IoU 0.65) and scale_coords on a real image, from the fixture
    made by running the official code (yolo_pose_official_nms.pt), through the production engine and decoder."""
    ref = load_fixture("official_nms")
    img0 = cv2.imread(str(synthetic_root / "synthetic" / "images" / "val" / Path(ref["image"]).name))
    assert img0 is not None and img0.shape == tuple(ref["image_shape"])
    img, gain, pad = official_letterbox(img0, ref["input_size"])
    assert int(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)).astype(np.int64).sum()) == ref["input_sum"]
    assert gain == pytest.approx(ref["gain"]) and pad == pytest.approx(tuple(ref["pad"]))

    people = TestTimeAugmentation([1.0], flip=False)(tiny_s6, _decoder(official_coordinates=True), img0)
    det = ref["det_image"].double().numpy()
    assert len(people) == len(det) > 20
    np.testing.assert_allclose(people.scores, det[:, 4], atol=1e-5)
    np.testing.assert_allclose(people.keypoints.reshape(len(det), -1), det[:, 6:], atol=1e-3)
    h0, w0 = img0.shape[:2]
    boxes = det[:, :4].copy()  # the official clip_coords clips only the first 4 rows; ours clips every box
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w0)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h0)
    xywh = people.boxes
    np.testing.assert_allclose(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1), boxes, atol=1e-3)


def _pool(model, img, scales=(1.0, 0.5)) -> torch.Tensor:
    """The decoder's pooled candidates over all passes, driven as the engine drives it."""
    dec = _decoder()
    dec.bind(model)
    state = dec.begin(img, scales)
    with torch.no_grad():
        for s in scales:
            view = dec.prepare(img, s)
            dec.add_scale(state, model(view.tensor), model(dec.flip_input(view.tensor)), view, s)
    return torch.cat(state["candidates"])


def test_flip_test_of_a_mirrored_image_pools_the_mirrored_candidates(tiny_s6, synthetic_root):
    """With flip testing the candidate pool of the mirrored image is the original's pool mirrored (x -> W - 1 - x,
    left/right keypoints swapped), and NMS then keeps the same number of people. A square 256 image makes the
    letterbox exact."""
    img = cv2.imread(str(synthetic_root / "synthetic" / "images" / "val" / "000001.jpg"))[:256, :256].copy()
    mirror_img = np.ascontiguousarray(img[:, ::-1])
    a, b = _pool(tiny_s6, img), _pool(tiny_s6, mirror_img)
    k = COCO17.num_keypoints
    assert a.shape == b.shape and len(a) > 20
    m = a.clone()
    m[:, 0], m[:, 2] = 255 - a[:, 2], 255 - a[:, 0]
    kps = a[:, 5:].view(-1, k, 3)[:, COCO17.flip_index].clone()
    kps[..., 0] = 255 - kps[..., 0]
    m[:, 5:] = kps.reshape(-1, 3 * k)
    dist = (m[:, None, :] - b[None]).abs().amax(2)  # each mirrored candidate has its twin in the other pool
    assert float(dist.amin(1).max()) < 2e-3 and float(dist.amin(0).max()) < 2e-3
    engine = TestTimeAugmentation([1.0, 0.5], flip=True)
    assert len(engine(tiny_s6, _decoder(), img)) == len(engine(tiny_s6, _decoder(), mirror_img))


def test_flipped_pass_is_unmirrored_and_swapped_on_a_constructed_output():
    """One strong candidate in the mirrored pass: its box and keypoints come back mirrored, left/right swapped."""
    k = 17
    dec = _decoder(input_size=64)
    dec.strides, dec.anchors = [8], ANCHORS[:1]
    t = torch.full((1, 3, 8, 8, 6 + 3 * k), -10.0)
    t[0, 0, 2, 5, :4] = 0.0  # centre (2*0.5 - 0.5 + (5, 2)) * 8 = (44, 20), wh = anchor 0 = (19, 27)
    t[0, 0, 2, 5, 4:6] = 10.0
    t[0, 0, 2, 5, 6::3] = torch.arange(k) * 0.1  # keypoint j: x = (0.2 j - 0.5 + 5) * 8
    t[0, 0, 2, 5, 7::3] = 0.0  # y = (-0.5 + 2) * 8 = 12
    t[0, 0, 2, 5, 8::3] = torch.linspace(-2, 2, k)
    img = np.zeros((64, 64, 3), np.uint8)
    view = dec.prepare(img, 1.0)
    plain = dec._candidates({"levels": [t]}, view, mirrored=False)
    flipped = dec._candidates({"levels": [t]}, view, mirrored=True)
    assert plain.shape == flipped.shape == (1, 5 + 3 * k)
    # bupose pixels: decoded - 0.5; mirror x -> 63 - x
    np.testing.assert_allclose(plain[0, :4].numpy(), [44 - 9.5 - 0.5, 20 - 13.5 - 0.5, 44 + 9.5 - 0.5,
                                                      20 + 13.5 - 0.5], atol=1e-4)
    np.testing.assert_allclose(flipped[0, :4].numpy(), [63 - plain[0, 2], plain[0, 1], 63 - plain[0, 0],
                                                        plain[0, 3]], atol=1e-4)
    kp_plain, kp_flip = plain[0, 5:].view(k, 3), flipped[0, 5:].view(k, 3)
    for j in range(k):
        src = COCO17.flip_index[j]
        assert kp_flip[j, 0] == pytest.approx(63 - float(kp_plain[src, 0]), abs=1e-4)
        assert kp_flip[j, 1] == pytest.approx(float(kp_plain[src, 1]), abs=1e-4)
        assert kp_flip[j, 2] == pytest.approx(float(kp_plain[src, 2]), abs=1e-6)
    assert kp_plain[3, 0] == pytest.approx((0.6 - 0.5 + 5) * 8 - 0.5, abs=1e-4)


def test_pairwise_oks_and_oks_nms():
    sig = torch.full((2,), 0.1)
    a = torch.tensor([[[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]]])
    b = a.clone()
    b[0, :, 0] += 3.0  # every keypoint 3 px off
    poses = torch.cat([a, b, a + 100])
    areas = torch.tensor([100.0, 100.0, 100.0])
    oks = pairwise_oks(poses, areas, sig)
    expected = float(np.exp(-9 / (2 * (2 * 0.1) ** 2 * 100)))
    assert oks[0, 1] == pytest.approx(expected, rel=1e-6) and oks[0, 0] == pytest.approx(1.0)
    assert oks[0, 2] < 1e-6
    assert 0.3 < expected < 0.35
    keep = oks_nms(poses, torch.tensor([0.5, 0.9, 0.1]), areas, sig, threshold=0.3)
    assert keep.tolist() == [1, 2]  # 0 is a duplicate of the better-scored 1
    assert oks_nms(poses, torch.tensor([0.5, 0.9, 0.1]), areas, sig, threshold=0.35).tolist() == [1, 0, 2]


def _state(cands):
    return {"candidates": [torch.tensor(cands, dtype=torch.float32)], "bounds": (-0.5, -0.5, 99.5, 99.5)}


def test_keypoint_fusion_and_keypoint_aware_score():
    """Two overlapping candidates (IoU > 0.65) merge into one person; with fusion its keypoints are the
    score x confidence weighted mean; box_x_keypoint multiplies the box score by the mean keypoint confidence."""
    k = 17
    def cand(x0, score, kx, conf):
        return [x0, 0, x0 + 10, 20, score] + [kx, 5.0, conf] * k
    cands = [cand(0, 0.9, 2.0, 0.5), cand(0.5, 0.6, 5.0, 1.0)]
    plain = _decoder().finish(_state(cands))
    assert len(plain) == 1 and plain.keypoints[0, 0, 0] == pytest.approx(2.0)
    fused = _decoder(fuse_keypoints=True).finish(_state(cands))
    w1, w2 = 0.9 * 0.5, 0.6 * 1.0
    assert fused.keypoints[0, 0, 0] == pytest.approx((w1 * 2 + w2 * 5) / (w1 + w2), rel=1e-5)
    ranked = _decoder(score="box_x_keypoint").finish(_state(cands))
    assert ranked.scores[0] == pytest.approx(0.6)  # 0.6 * 1.0 beats 0.9 * 0.5
    assert ranked.keypoints[0, 0, 0] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="nms"):
        _decoder(nms="soft")


def test_to_yolo_tensor_is_rgb_in_unit_range():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    t = to_yolo_tensor(img)
    assert t.shape == (3, 2, 3) and float(t[2].max()) == 1.0 and float(t[0].max()) == 0.0


def _official_test_scale_coords(coords: np.ndarray, img0_shape, size: int) -> np.ndarray:
    """The official test.py mapping, transcribed: load_image resizes by ``r = size / max(h0, w0)`` to
    ``(int(w0 * r), int(h0 * r))``, letterbox pads to ``size`` without scaling, and ``scale_coords(..., ratio_pad=
    ((h / h0, w / w0), (dw, dh)), kpt_label=True, step=3)`` takes ``gain = ratio_pad[0][0]`` for x and y alike."""
    h0, w0 = img0_shape[:2]
    r = size / max(h0, w0)
    h, w = int(h0 * r), int(w0 * r)
    gain, pad = (h / h0, w / w0)[0], ((size - w) / 2, (size - h) / 2)
    out = coords.copy()
    out[:, 0::3] -= pad[0]
    out[:, 1::3] -= pad[1]
    out[:, 0::3] /= gain
    out[:, 1::3] /= gain
    return out


def test_official_test_coordinates_use_the_height_ratio_on_an_upscaled_image():
    """TEST.OFFICIAL_COORDINATES as the official test.py: a 500 x 333 image is resized to 640 x 426 (gain 1.28 in x
    but 426 / 333 in y) and mapped back with the height ratio for both axes, as a direct transcription does; the
    detect.py mapping (gain 1.28) is up to 0.28 px away from it at the right edge."""
    k = 17
    dec = _decoder(input_size=640, official_coordinates="test")
    dec.strides, dec.anchors = [64], ANCHORS[3:]
    g = torch.Generator().manual_seed(0)
    t = torch.full((1, 3, 10, 10, 6 + 3 * k), -10.0)
    t[0, 0, :, :, 4:6] = 10.0  # every cell of anchor 0 a candidate
    t[0, 0, :, :, 6:] = torch.rand(10, 10, 3 * k, generator=g) * 2 - 1  # keypoints spread over the whole input
    image = np.random.default_rng(0).integers(0, 256, (333, 500, 3), dtype=np.uint8)
    view = dec.prepare(image, 1.0)
    resized = cv2.resize(image, (640, 426), interpolation=cv2.INTER_LINEAR)
    expected_input = cv2.copyMakeBorder(resized, 107, 107, 0, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    assert view.size == (640, 640)
    torch.testing.assert_close(view.tensor[0], to_yolo_tensor(expected_input), atol=0, rtol=0)

    from bupose.methods.yolo_pose.decode import decode_levels
    pred = decode_levels([t], dec.anchors, dec.strides, k)[0]
    pred = pred[pred[:, 4] > dec.conf_threshold].double().numpy()
    expected = _official_test_scale_coords(pred[:, 6:], image.shape, 640)
    got = dec._candidates({"levels": [t]}, view, mirrored=False)[:, 5:].double().numpy()
    assert len(got) == 100
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)

    detect = _decoder(input_size=640, official_coordinates=True)
    detect.strides, detect.anchors = [64], ANCHORS[3:]
    old = detect._candidates({"levels": [t]}, detect.prepare(image, 1.0), mirrored=False)[:, 5:].double().numpy()
    assert 0.2 < np.abs(old - expected)[:, 0::3].max() < 0.3
    with pytest.raises(ValueError, match="official_coordinates"):
        _decoder(official_coordinates="exact")
