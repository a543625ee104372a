"""DEKR's test path through the shared engine.

``fixtures/dekr_official_poses.pt`` holds the people that the official DEKR ``tools/valid.py`` path (without the
rescoring net; CrowdPose settings: NMS 0.05 / 7, DECREASE 0.8, 30 people; INPUT_SIZE 256 to keep the test fast) produced on CPU with the tiny model of
``fixtures/dekr_tiny_official.pt``, for one CrowdPose sample image (landscape) and a portrait crop of a synthetic
image, single scale, flip, and scales [0.5, 1, 2] with flip.
"""
import cv2
import numpy as np
import pytest
import torch

from bupose.data.keypoints import CROWDPOSE14
from bupose.inference.nms import dekr_pose_nms
from bupose.inference.tta import TestTimeAugmentation
from bupose.methods.dekr.convert import load_official
from bupose.methods.dekr.decode import DEKRDecoder, dekr_resize, pose_map, up_interpolate
from bupose.methods.dekr.model import build_dekr

from pathlib import Path

from conftest import needs_shared

FIX = Path(__file__).parent / "fixtures"
CASES = [("single", [1.0], False), ("flip", [1.0], True), ("multi_flip", [0.5, 1.0, 2.0], True)]


@pytest.fixture(scope="module")
def official():
    tiny = torch.load(FIX / "dekr_tiny_official.pt", weights_only=False)
    ref = torch.load(FIX / "dekr_official_poses.pt", weights_only=False)
    return tiny, ref


#: the fixture's images: 0 is a CrowdPose sample (third-party, read from shared/), 1 a synthetic image in the fixture
IMAGES = [0, 1]


def _image(ref, i: int) -> np.ndarray:
    if i == 0:
        return cv2.imread(str(needs_shared("data/samples/crowdpose/103319.jpg")))
    return cv2.imdecode(np.frombuffer(ref["synthetic_png"], np.uint8), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("i", IMAGES)
@pytest.mark.parametrize("impl, cases", [
    ("grid_sample", CASES),
    # torchvision's deform_conv2d is slow on CPU: the multi-scale case (inputs up to 1024 x 2304) runs with grid_sample
    pytest.param("deform_conv2d", CASES[:2], marks=pytest.mark.slow),
])
def test_same_people_as_the_official_valid_path(official, impl, cases, i):
    tiny, ref = official
    model = build_dekr(tiny["spec"], 14, adaptive_impl=impl).eval()
    load_official(model, tiny["state_dict"])
    s = ref["settings"]
    decoder = DEKRDecoder(CROWDPOSE14.flip_index, input_size=s["input_size"], nms_dist=s["nms_dist"],
                          nms_num=s["nms_num"], decrease=s["decrease"], max_people=s["max_people"],
                          keypoint_threshold=s["keypoint_threshold"])
    image = _image(ref, i)
    for name, scales, flip in cases:
        people = TestTimeAugmentation(scales, flip)(model, decoder, image)
        kp, sc = ref["cases"][f"{i}_{name}"]
        assert len(people) == len(kp), (i, name)
        np.testing.assert_allclose(people.keypoints, kp.numpy(), atol=2e-4, rtol=0, err_msg=f"{i} {name}")
        np.testing.assert_allclose(people.scores, sc.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("i", IMAGES)
def test_scales_other_than_halves_and_doubles_are_merged_at_the_scale_one_size(official, i):
    # 0.8 and 1.25 give output maps whose official up-sampled size is a pixel off the scale-1 size
    tiny, ref = official
    model = build_dekr(tiny["spec"], 14).eval()
    load_official(model, tiny["state_dict"])
    decoder = DEKRDecoder(CROWDPOSE14.flip_index, input_size=256)
    image = _image(ref, i)
    state = decoder.begin(image, [1.25, 1.0, 0.8])
    with torch.no_grad():
        for scale in (1.25, 1.0, 0.8):
            view = decoder.prepare(image, scale)
            decoder.add_scale(state, model(view.tensor), model(decoder.flip_input(view.tensor)), view, scale)
            assert state["heatmap_sum"].shape[2:] == state["base_size"][::-1]
    people = decoder.finish(state)
    assert len(people) > 0 and np.isfinite(people.keypoints).all()
    same = TestTimeAugmentation([1.25, 1.0, 0.8], True)(model, decoder, image)
    np.testing.assert_array_equal(same.keypoints, people.keypoints)


def test_resize_sizes_follow_the_official_rule():
    assert dekr_resize((480, 640, 3), 512, 1.0)[0] == (704, 512)  # ceil64(512 * 640 / 480) = 704
    assert dekr_resize((480, 640, 3), 512, 0.5)[0] == (352, 256)
    assert dekr_resize((640, 300, 3), 512, 2.0)[0] == (1024, 2304)  # portrait: ceil64(512 * 640 / 300) = 1152


def test_up_interpolate_matches_size_and_corners():
    x = torch.rand(1, 2, 8, 10)
    y = up_interpolate(x, (32, 40))
    assert y.shape == (1, 2, 32, 40)
    assert torch.allclose(y[..., 0, 0], x[..., 0, 0]) and torch.allclose(y[..., -1, -1], x[..., -1, -1])
    assert torch.allclose(y[..., 29, 37], x[..., -1, -1])  # replicated tail


def _ideal_outputs(k, h, w, people):
    """Outputs that encode ``people`` exactly: centre peak, offsets pointing at the joints, joint peaks."""
    heat = torch.zeros(1, k + 1, h, w)
    offset = torch.zeros(1, 2 * k, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    for (cx, cy), joints in people:
        heat[0, k] += torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8) * 0.9
        for j, (x, y) in enumerate(joints):
            heat[0, j] = torch.maximum(heat[0, j], torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2))
            offset[0, 2 * j] = torch.where((xs - cx).abs() + (ys - cy).abs() < 3, xs - x, offset[0, 2 * j])
            offset[0, 2 * j + 1] = torch.where((xs - cx).abs() + (ys - cy).abs() < 3, ys - y, offset[0, 2 * j + 1])
    return {"heatmap": heat, "offset": offset}


def test_flip_back_turns_mirrored_outputs_into_the_same_people(rng):
    """Ideal outputs of the (shifted) mirrored input, flipped back, must give exactly the unflipped people."""
    k, h, w = CROWDPOSE14.num_keypoints, 48, 64  # input 192 x 256: resizing is the identity
    flip = list(CROWDPOSE14.flip_index)
    people = []
    for cx, cy in [(12, 10), (30, 25)]:
        joints = np.stack([cx + rng.uniform(-6, 6, k), cy + rng.uniform(-6, 6, k)], 1).round()
        people.append(((cx, cy), joints))
    mirrored = [((w - 1 - cx, cy), np.stack([w - 1 - j[flip, 0], j[flip, 1]], 1)) for (cx, cy), j in people]
    out, out_m = _ideal_outputs(k, h, w, people), _ideal_outputs(k, h, w, mirrored)
    dec = DEKRDecoder(flip, input_size=4 * h, nms_dist=0.05, nms_num=7)
    image = np.zeros((4 * h, 4 * w, 3), np.uint8)
    ref_state, state = dec.begin(image, [1.0]), dec.begin(image, [1.0])
    view = dec.prepare(image, 1.0)
    dec.add_scale(ref_state, out, None, view, 1.0)
    dec.add_scale(state, out, out_m, view, 1.0)
    torch.testing.assert_close(state["heatmap_sum"], ref_state["heatmap_sum"])
    torch.testing.assert_close(state["poses"][0][1], ref_state["poses"][0][1])
    got = dec.finish(state)
    assert len(got) == 2
    truth = sorted((4 * j).tolist() for _, j in people)  # output cell -> input pixels (stride 4), image = input
    np.testing.assert_allclose(sorted(got.keypoints[:, :, :2].tolist()), truth, atol=1e-3)
    pm = pose_map(out_m["offset"], flip)
    assert pm.shape == (1, 2 * k, h, w)


def test_pose_nms_merges_duplicates_and_keeps_the_best():
    base = torch.tensor([[10.0, 10], [20, 10], [15, 30], [10, 50], [20, 50]])
    poses = torch.stack([base, base + 0.5, base + 100, base + 1.0])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.1])
    keep = dekr_pose_nms(poses, scores, dist_thresh=0.05, num_thresh=3)
    assert keep == [1, 2]
    # a zero-size pose does not crash (the official code would take argmax of nothing)
    assert dekr_pose_nms(torch.zeros(1, 5, 2), torch.ones(1), 0.05, 3) == [0]


def test_engine_memory_bound_does_not_keep_per_scale_outputs(official):
    """The engine hands each scale to the decoder and keeps only its aggregate: heatmap_sum at one resolution."""
    tiny, _ = official
    model = build_dekr(tiny["spec"], 14).eval()
    dec = DEKRDecoder(CROWDPOSE14.flip_index, input_size=64)
    seen = []

    class Spy(DEKRDecoder):
        def add_scale(self, state, outputs, flipped, view, scale):
            super().add_scale(state, outputs, flipped, view, scale)
            seen.append((scale, tuple(state["heatmap_sum"].shape)))

    spy = Spy(CROWDPOSE14.flip_index, input_size=64)
    TestTimeAugmentation([0.5, 1.0, 2.0], True)(model, spy, np.zeros((60, 90, 3), np.uint8))
    assert [s for s, _ in seen] == [2.0, 1.0, 0.5]
    assert len({shape for _, shape in seen}) == 1
    assert dec is not None


def test_encoded_ground_truth_decodes_back_to_itself():
    """Targets encoded in the test frame and decoded by the engine give the ground truth back: the training
    (x / stride) and test (x * stride) conventions agree. Misses come only from centre collisions at stride 4."""
    from bupose.data import geometry as G
    from bupose.data.synthetic import annotate, generate_image
    from bupose.evaluation import KeypointEvaluator, people_to_results
    from bupose.methods.dekr.decode import centered_affine
    from bupose.methods.dekr.targets import DEKRTargetEncoder, person_areas, person_centers

    enc = DEKRTargetEncoder(14)

    class Oracle(torch.nn.Module):
        def forward(self, x):
            m, kps = self.matrix, self.keypoints.copy()
            kps[..., :2] = G.warp_points(kps[..., :2], m) / 4
            c = person_centers(self.keypoints)
            c[:, :2] = G.warp_points(c[:, :2], m) / 4
            t = enc(kps, (x.shape[2] // 4, x.shape[3] // 4), None, c,
                    person_areas(self.keypoints) * (G.matrix_scale(m) / 4) ** 2)
            return {"heatmap": torch.from_numpy(t.heatmap)[None], "offset": torch.from_numpy(t.offset)[None]}

    oracle, decoder = Oracle(), DEKRDecoder(CROWDPOSE14.flip_index, input_size=256, nms_dist=0.05, nms_num=7)
    images, anns, results = [], [], []
    for i in range(12):
        scene = generate_image(i, "val", seed=0)
        image, people = annotate(scene, i + 1, f"{i}.jpg")["crowdpose"]
        images.append(image)
        anns += people
        oracle.keypoints = np.array([np.reshape(a["keypoints"], (14, 3)) for a in people
                                     if a["num_keypoints"] > 0 and not a["iscrowd"]]).reshape(-1, 14, 3)
        size, center, src_width = dekr_resize(scene.image.shape, 256, 1.0)
        oracle.matrix = centered_affine(center, src_width, size)
        found = TestTimeAugmentation([1.0], False)(oracle, decoder, scene.image)
        results += people_to_results(i + 1, found.keypoints, found.scores)
    m = KeypointEvaluator({"images": images, "annotations": anns, "categories": []}, "crowdpose").evaluate(results)
    assert m["AP"] > 0.8
    assert m["AP75"] == m["AP50"]  # every person found is exact
