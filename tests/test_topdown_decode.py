"""The top-down test path: crops, decoding, rescoring and OKS NMS through the shared engine, against the official
deep-high-resolution-net ``validate`` / ``evaluate`` results.

``fixtures/topdown_official_results.pt`` is made by ``fixtures/topdown_make_fixtures_testpath.py`` (its docstring
says how): the official results json of a small pose_hrnet and a ResNet-18 pose_resnet (seeded synthetic weights,
regenerated here from the official parameter names) on the four COCO sample images, with ground-truth and
detection-file boxes, flip test on and off, soft NMS and no post-processing once each.
"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import bupose
from bupose.codecs import build_codec
from bupose.data import geometry as G
from bupose.data.keypoints import get_spec
from bupose.engine.evaluate import predict_split
from bupose.errors import ConfigError, DataError
from bupose.inference.nms import oks_nms_mean_area, pairwise_oks_mean_area, soft_oks_nms_mean_area
from bupose.inference.tta import TestTimeAugmentation
from bupose.methods.topdown import crops
from bupose.methods.topdown.boxes import PersonBoxes
from bupose.methods.topdown.decode import TopDownDecoder, build_decoder, heatmap_maxima, to_scale_one_frame

from conftest import needs_shared

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = {"pose_hrnet": "topdown_hrnet", "pose_resnet": "topdown_resnet"}
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10


def _load_script():
    spec = importlib.util.spec_from_file_location("topdown_make_fixtures_testpath",
                                                  FIXTURES / "topdown_make_fixtures_testpath.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()
OFFICIAL = torch.load(FIXTURES / "topdown_official_results.pt", weights_only=True)
RUNS = {r["name"]: r for r in OFFICIAL["runs"]}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """A DATASET.ROOT with the COCO sample images and annotations (third-party, from shared/) linked in as ``coco/``
    val2017."""
    samples = needs_shared("data/samples/coco")
    root = tmp_path_factory.mktemp("topdown_coco")
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "images" / "val2017").mkdir(parents=True)
    (root / "coco" / "annotations" / "person_keypoints_val2017.json").symlink_to(samples / "test_coco.json")
    for jpg in samples.glob("*.jpg"):
        (root / "coco" / "images" / "val2017" / jpg.name).symlink_to(jpg)
    return root


def topdown_yaml(root: Path, model: str, test: dict, box_file: Path) -> str:
    w, h = OFFICIAL["image_size"]
    extra = OFFICIAL["models"][model]["extra"]
    lines = ["DEVICE: cpu", "DATASET:", "  DATASET: coco", "  NUM_JOINTS: 17", f"  ROOT: {root.as_posix()}",
             "  TEST_SET: val", "  COLOR_RGB: true", "MODEL:", f"  NAME: {NAMES[model]}", f"  IMAGE_SIZE: [{w}, {h}]",
             f"  HEATMAP_SIZE: [{w // 4}, {h // 4}]", f"  SPEC: {extra!r}", "TEST:", f"  COCO_BBOX_FILE: {box_file}",
             "  SCALE_FACTOR: [1.0]"]
    lines += [f"  {k}: {v}" for k, v in test.items() if k != "NMS_THRE"]
    return "\n".join(lines) + "\n"


_MODELS = {}


def official_model(model: str, cfg):
    """The bupose model of ``cfg`` loaded with the fixture's weights under their official names."""
    if model not in _MODELS:
        m = OFFICIAL["models"][model]
        net = bupose.build_model(cfg)
        bupose.load_checkpoint(net, SCRIPT.synthetic_state_dict(m["shapes"], m["seed"], m["final"]))
        _MODELS[model] = net.eval()
    return _MODELS[model]


def match_people(official: dict, results: list[dict]):
    """Pairs (official index, ours) per image, matched by the nearest keypoints; both sides must be the same
    people (the file order may differ)."""
    ok = official["keypoints"].double().numpy()
    ours = np.array([r["keypoints"] for r in results], np.float64).reshape(-1, 17, 3)
    assert len(ours) == len(ok)
    dist = np.abs(ok[:, None, :, :2] - ours[None, :, :, :2]).max(axis=(2, 3))
    match = dist.argmin(axis=1)
    assert len(set(match.tolist())) == len(match), "two official people matched the same bupose person"
    return ok, ours[match], np.array([results[j]["score"] for j in match]), official["score"].numpy()


@pytest.mark.parametrize("run_name", list(RUNS))
def test_official_parity(run_name, coco_root, tmp_path):
    run = RUNS[run_name]
    box_file = needs_shared("data/samples/coco/test_coco_det_AP_H_56.json")
    (tmp_path / "cfg.yaml").write_text(topdown_yaml(coco_root, run["model"], run["test"], box_file))
    cfg = bupose.load_config(tmp_path / "cfg.yaml")
    results, reader = predict_split(cfg, official_model(run["model"], cfg), "val", progress=False)
    per_image: dict = {}
    for r in results:
        per_image.setdefault(r["image_id"], []).append(r)
    assert set(per_image) == set(run["results"])
    for image_id, official in run["results"].items():
        ok, ours, our_scores, official_scores = match_people(official, per_image[image_id])
        np.testing.assert_allclose(ours[..., :2], ok[..., :2], rtol=0, atol=0.01)  # results json rounds to 1e-3
        np.testing.assert_allclose(ours[..., 2], ok[..., 2], rtol=1e-5, atol=1e-3 * 0.5 + 1e-7)
        np.testing.assert_allclose(our_scores, official_scores, rtol=1e-5, atol=1e-12)


# --- crops ------------------------------------------------------------------------------------------------------
def test_box_to_center_scale_official_numbers():
    center, size = crops.box_to_center_scale(np.array([10.0, 20.0, 30.0, 100.0]), aspect_ratio=0.75)
    np.testing.assert_array_equal(center, np.float32([25.0, 70.0]))
    np.testing.assert_array_equal(size, np.float32([93.75, 125.0]))  # widened to 75, x 1.25
    center, size = crops.box_to_center_scale(np.array([[0.0, 0.0, 90.0, 60.0]]), aspect_ratio=0.75)
    np.testing.assert_array_equal(size, np.float32([[112.5, 150.0]]))  # heightened to 120
    assert center.dtype == size.dtype == np.float32


def test_center_crop_matrix_maps_centre_to_half_output():
    m = G.center_crop_matrix((300.5, 120.25), 150.0, (192, 256))
    np.testing.assert_allclose(G.warp_points(np.array([300.5, 120.25]), m), [96.0, 128.0], atol=1e-4)
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 192 / 150.0, atol=1e-6)


@pytest.mark.parametrize("udp", [False, True])
def test_crop_round_trip(udp, rng):
    for _ in range(20):
        center = rng.uniform(0, 600, 2)
        size = rng.uniform(20, 400, 2)
        rotation = float(rng.uniform(-40, 40))
        m = crops.crop_matrix(center, size, (192, 256), rotation=rotation, udp=udp)
        back = crops.crop_matrix(center, size, (192, 256), rotation=rotation, udp=udp, inverse=True)
        p = rng.uniform(-100, 700, (17, 2))
        np.testing.assert_allclose(G.warp_points(G.warp_points(p, m), back), p, atol=1e-6 if udp else 1e-3)
        np.testing.assert_allclose(G.compose(m, back), G.identity(), atol=1e-6)


@pytest.mark.parametrize("udp", [False, True])
def test_heatmap_and_codec_coordinates_map_back(udp, rng):
    """An image point -> the crop -> heatmap pixels (the codec's input -> heatmap mapping) -> back to the image."""
    centers = rng.uniform(100, 500, (3, 2)).astype(np.float32)
    sizes = rng.uniform(50, 300, (3, 2)).astype(np.float32)
    sizes[:, 1] = sizes[:, 0] * 256 / 192
    p = rng.uniform(0, 600, (3, 17, 2))
    in_crop = np.stack([G.warp_points(p[i], crops.crop_matrix(centers[i], sizes[i], (192, 256), udp=udp))
                        for i in range(3)])
    heat = in_crop * (47 / 191, 63 / 255) if udp else in_crop / 4  # UDP: pixel-centre scaling; standard: stride
    np.testing.assert_allclose(crops.heatmap_to_image(heat, centers, sizes, (48, 64), udp=udp), p, atol=2e-3)
    codec_input = heat / (47, 63) * (192, 256) if udp else heat * 4  # mmpose codecs' decode convention
    np.testing.assert_allclose(crops.input_to_image(codec_input, centers, sizes, (192, 256)), p, atol=2e-3)


def test_crop_batch_is_the_official_crop(rng):
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    centers, sizes = crops.box_to_center_scale(np.array([[20.0, 10.0, 60.0, 90.0], [100.0, 50.0, 40.0, 30.0]]),
                                               aspect_ratio=0.75)
    batch = crops.crop_batch(image, centers, sizes, (48, 64))
    assert batch.shape == (2, 3, 64, 48) and batch.dtype == torch.float32
    m = G.center_crop_matrix(centers[1], sizes[1][0], (48, 64))
    crop = G.warp_image(image, m, (48, 64))[..., ::-1].astype(np.float32) / 255  # RGB
    mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
    np.testing.assert_allclose(batch[1].permute(1, 2, 0).numpy(), (crop - mean) / std, atol=1e-5)
    bgr = crops.crop_batch(image, centers, sizes, (48, 64), color_rgb=False)
    np.testing.assert_allclose(bgr[1].permute(1, 2, 0).numpy(), (crop[..., ::-1] - mean) / std, atol=1e-5)


# --- decoding pieces ----------------------------------------------------------------------------------------------
def test_heatmap_maxima_official_rules():
    hm = np.zeros((1, 3, 8, 8), np.float32)
    hm[0, 0, 4, 3], hm[0, 0, 4, 4], hm[0, 0, 5, 3] = 1.0, 0.5, 0.2  # right and below higher: +0.25, +0.25
    hm[0, 1, 1, 3], hm[0, 1, 1, 4] = 1.0, 0.5  # y == 1: no step (official: 1 < y < H - 1)
    hm[0, 2] = -1.0  # maximum <= 0: (0, 0)
    locs, maxima = heatmap_maxima(hm, post_process=True)
    np.testing.assert_array_equal(locs[0], [[3.25, 4.25], [3.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(maxima[0], [1.0, 1.0, -1.0])
    np.testing.assert_array_equal(heatmap_maxima(hm, post_process=False)[0][0], [[3, 4], [3, 1], [0, 0]])


@pytest.mark.parametrize("udp, scale, peak, expected", [(False, 2.0, 11, 14), (True, 3.0, 10, 15)])
def test_to_scale_one_frame_moves_peaks_about_the_centre(udp, scale, peak, expected):
    """A peak ``d`` pixels from the centre (8; UDP 7.5) of a map of crops ``scale`` times larger lies ``scale * d``
    from it in the scale-1 frame."""
    hm = torch.zeros(1, 1, 16, 16)
    hm[0, 0, peak, peak] = 1.0
    out = to_scale_one_frame(hm, scale, udp)
    assert int(out[0, 0].flatten().argmax()) == expected * 16 + expected
    torch.testing.assert_close(out[0, 0, expected, expected], torch.tensor(1.0))
    assert torch.equal(to_scale_one_frame(hm, 1.0, udp), hm)


def test_oks_mean_area_and_nms():
    sig = torch.as_tensor(COCO_SIGMAS)
    base = torch.rand(17, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 100
    base[:, 2] = 0.9
    poses = torch.stack([base, base + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                         base + torch.tensor([300.0, 0.0, 0.0], dtype=torch.float64)])
    areas = torch.tensor([4000.0, 6000.0, 5000.0], dtype=torch.float64)
    oks = pairwise_oks_mean_area(poses, areas, sig)
    e = 1.0 / (2 * sig) ** 2 / (5000.0 + np.finfo(np.float64).eps) / 2
    torch.testing.assert_close(oks[0, 1], torch.exp(-e).mean())  # the mean of the two areas
    torch.testing.assert_close(oks, oks.T)
    keep = oks_nms_mean_area(poses, torch.tensor([0.5, 0.9, 0.7], dtype=torch.float64), areas, sig, 0.9)
    assert keep.tolist() == [1, 2]
    soft = soft_oks_nms_mean_area(poses, torch.tensor([0.5, 0.9, 0.7], dtype=torch.float64), areas, sig, 0.9)
    assert soft.tolist() == [1, 2, 0]  # the duplicate decays below the far pose
    low = poses.clone()
    low[1, :, 2] = 0.1
    assert pairwise_oks_mean_area(low, areas, sig, in_vis_thre=0.2)[0, 1] == 0  # no keypoint of the column above


class CentrePeaks(torch.nn.Module):
    """Heatmaps with a peak of height 0.8 at the heatmap pixel of the crop centre, every joint, whatever the input."""

    def __init__(self, num_joints=17, size=(12, 16)):
        super().__init__()
        self.k, self.size = num_joints, size
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        w, h = self.size
        hm = torch.zeros(x.shape[0], self.k, h, w)
        hm[:, :, h // 2, w // 2] = 0.8
        return {"heatmaps": hm + 1e-3 * x.mean()}


def decoder(**kw) -> TopDownDecoder:
    args = dict(flip_index=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15), sigmas=COCO_SIGMAS,
                input_size=(48, 64), heatmap_size=(12, 16), post_process=False, shift_heatmap=False)
    args.update(kw)
    return TopDownDecoder(**args)


def test_multiscale_flip_runs_bounded_and_scale_consistent(rng):
    image = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8)
    boxes = PersonBoxes(np.array([[10.0, 10.0, 30.0, 60.0], [80.0, 20.0, 40.0, 50.0]]), np.array([0.9, 0.6]))
    model = CentrePeaks()
    dec = decoder()
    sums = []
    add = dec.add_scale
    dec.add_scale = lambda state, *a: (add(state, *a), sums.append(tuple(state["sum"].shape)))
    people = TestTimeAugmentation([0.8, 1.0, 1.25], flip=True)(model, dec, image, boxes=boxes)
    assert model.calls == [(2, 3, 64, 48)] * 6  # one batch of both crops per pass, 3 scales x (plain, mirrored)
    assert sums == [(2, 17, 16, 12)] * 3  # one crop-space aggregate, whatever the number of scales
    assert len(people) == 2
    centers, sizes = crops.box_to_center_scale(boxes.xywh, aspect_ratio=0.75)
    # the peak is the crop centre at every scale; mirrored, the centre pixel is one to the left (no shift here): the
    # rows are exact, x within one heatmap pixel of the centre
    order = np.argsort(-people.scores)
    kp = people.keypoints[order]
    np.testing.assert_allclose(kp[:, :, 1], np.repeat(centers[:, 1:], 17, 1), atol=1e-4)
    assert (np.abs(kp[:, :, 0] - centers[:, :1]) <= sizes[:, :1] / 12 + 1e-4).all()
    assert ((kp[:, :, 2] > 0.3) & (kp[:, :, 2] < 0.8)).all()
    np.testing.assert_allclose(people.scores[order], [0.9, 0.6] * kp[:, :, 2].mean(1), rtol=1e-6)
    np.testing.assert_array_equal(people.detection_boxes[order], boxes.xywh)


def test_multiscale_without_flip_keeps_the_centre():
    image = np.zeros((100, 140, 3), np.uint8)
    boxes = PersonBoxes(np.array([[10.0, 10.0, 30.0, 60.0]]), np.array([1.0]))
    people = TestTimeAugmentation([0.5, 1.0, 2.0], flip=False)(CentrePeaks(), decoder(), image, boxes=boxes)
    center, _ = crops.box_to_center_scale(boxes.xywh[0], aspect_ratio=0.75)
    np.testing.assert_allclose(people.keypoints[0, :, :2], np.tile(center, (17, 1)), atol=1e-4)


def test_no_boxes_no_people_and_no_forward():
    model = CentrePeaks()
    people = TestTimeAugmentation([1.0], flip=True)(model, decoder(), np.zeros((50, 50, 3), np.uint8),
                                                     boxes=PersonBoxes.empty())
    assert len(people) == 0 and people.keypoints.shape == (0, 17, 3) and model.calls == []


def test_begin_without_boxes_is_an_error():
    with pytest.raises(DataError, match="person boxes"):
        TestTimeAugmentation([1.0])(CentrePeaks(), decoder(), np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(DataError, match=r"\(N, 4\)"):
        decoder().begin(np.zeros((50, 50, 3), np.uint8), [1.0], boxes=np.zeros((2, 3)))


def test_predictor_boxes(tmp_path, tiny_cfg):
    # no dataset and no box file are read: a Predictor takes its boxes from the call (or a detector)
    box_file = tmp_path / "never_read_boxes.json"
    (tmp_path / "cfg.yaml").write_text(topdown_yaml(tmp_path, "pose_hrnet", {"FLIP_TEST": False}, box_file))
    cfg = bupose.load_config(tmp_path / "cfg.yaml")
    predictor = bupose.Predictor(cfg, official_model("pose_hrnet", cfg))
    image = np.full((120, 160, 3), 128, np.uint8)
    out = predictor(image, boxes=(np.array([[10.0, 10.0, 50.0, 90.0]]), np.array([0.5])))
    assert len(out) == 1 and out[0]["keypoints"].shape == (17, 3) and out[0]["bbox"] == [10.0, 10.0, 50.0, 90.0]
    with pytest.raises(ConfigError, match="TEST.DETECTOR_CFG"):
        predictor.people(image)  # top-down, no boxes, no detector
    bottom_up = tiny_cfg()
    with pytest.raises(DataError, match="top-down"):
        bupose.Predictor(bottom_up, bupose.build_model(bottom_up)).people(image, boxes=np.zeros((1, 4)))


class FixedHeatmaps(torch.nn.Module):
    """Returns the given ``(N, K, H, W)`` heatmaps whatever the crops (N of them)."""

    def __init__(self, heatmaps):
        super().__init__()
        self.heatmaps = torch.as_tensor(heatmaps, dtype=torch.float32)

    def forward(self, x):
        assert x.shape[0] == self.heatmaps.shape[0]
        return {"heatmaps": self.heatmaps}


@pytest.mark.parametrize("codec_cfg", [{"type": "UDPHeatmap", "sigma": 2.0},
                                       {"type": "MSRAHeatmap", "sigma": 2.0, "unbiased": True}])
def test_codec_targets_decode_to_the_image_points(codec_cfg, rng):
    """Image points -> the method's crops -> codec targets -> the decoder (build_decoder from the config) -> the
    same image points (DARK / DARK-UDP recover a Gaussian's centre to a few hundredths of a heatmap pixel)."""
    cfg = bupose.load_config(None, ["MODEL.IMAGE_SIZE", "[96, 128]", "MODEL.HEATMAP_SIZE", "[24, 32]",
                                    "MODEL.CODEC", repr(codec_cfg), "TEST.IN_VIS_THRE", "0.2"])
    udp = codec_cfg["type"] == "UDPHeatmap"
    codec = build_codec({**codec_cfg, "input_size": (96, 128), "heatmap_size": (24, 32)})
    dec = build_decoder(cfg, get_spec("coco"), codec)
    assert dec.codec is codec and dec.udp == udp and dec.shift == (0 if udp else 1)
    boxes = PersonBoxes(np.array([[40.0, 30.0, 60.0, 120.0], [150.0, 60.0, 50.0, 70.0]]), np.array([0.8, 0.7]))
    centers, sizes = crops.box_to_center_scale(boxes.xywh, aspect_ratio=0.75)
    points = np.stack([c + rng.uniform(-0.3, 0.3, (17, 2)) * s for c, s in zip(centers, sizes)])
    targets = []
    for p, c, s in zip(points, centers, sizes):
        q = G.warp_points(p, crops.crop_matrix(c, s, (96, 128), udp=udp))
        targets.append(codec.encode(q[None], np.ones((1, 17)))["heatmaps"])
    image = np.zeros((240, 320, 3), np.uint8)
    people = TestTimeAugmentation([1.0], flip=False)(FixedHeatmaps(np.stack(targets)), dec, image, boxes=boxes)
    order = np.argsort(-people.scores)
    np.testing.assert_allclose(people.keypoints[order][..., :2], points, atol=0.05 * sizes.max() / 24)
    np.testing.assert_allclose(people.scores[order], [0.8, 0.7], rtol=0.05)  # peaks near 1


def test_build_decoder_official_without_codec():
    cfg = bupose.load_config(None, ["TEST.SOFT_NMS", "True", "TEST.OKS_THRE", "0.8", "DATASET.COLOR_RGB", "False"])
    codec = build_codec({"type": "MSRAHeatmap", "sigma": 2.0, "input_size": (192, 256), "heatmap_size": (48, 64)})
    dec = build_decoder(cfg, get_spec("coco"), codec)
    assert dec.codec is None and not dec.udp and dec.shift == 1  # MODEL.CODEC empty: the official decoding
    assert dec.soft_nms and dec.oks_thre == 0.8 and not dec.color_rgb and dec.input_size == (192, 256)
