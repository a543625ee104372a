"""AdaptivePose as a bupose method (bupose.methods.adaptive_pose.method): config checks, the training items and
their geometry, training through the shared Trainer, and (slow) overfitting two synthetic images."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bupose.config import load_config
from bupose.data import geometry as G
from bupose.data.keypoints import CROWDPOSE14
from bupose.data.pipelines import BottomUpAffine
from bupose.data.sample import Sample
from bupose.engine.checkpoint import read_checkpoint
from bupose.engine.trainer import Trainer
from bupose.errors import ConfigError
from bupose.methods import build_method, method_class
from bupose.methods.adaptive_pose.method import AdaptivePoseMethod, AdaptivePoseTrainingSet, DLAAdaptivePoseMethod
from bupose.methods.adaptive_pose.targets import AdaptivePoseTargetEncoder

from conftest import REPO, TINY_NUM_TRAIN, TINY_NUM_VAL, keep_training_images

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SPEC = ("{STEM_BLOCKS: 1, HEAD_CHANNELS: 8, PART_CHANNELS: 4, STAGES: {NUM_BLOCKS: [[1, 1], [1, 1, 1], "
             "[1, 1, 1, 1]], NUM_CHANNELS: [[4, 8], [4, 8, 16], [4, 8, 16, 32]]}}")


@pytest.fixture(scope="module")
def cfg(synthetic_root, tmp_path_factory):
    """``cfg(KEY, VALUE, ...)``: the synthetic AdaptivePose experiment, tiny, 64 px, on ``synthetic_root``."""
    out = tmp_path_factory.mktemp("adaptive_pose_runs")

    def make(*overrides):
        return load_config(REPO / "experiments" / "synthetic" / "adaptive_pose_tiny_256.yaml", [
            "OUTPUT_DIR", str(out), "WORKERS", "0", "DEVICE", "cpu", "DATASET.ROOT", str(synthetic_root),
            "DATASET.SYNTHETIC_TRAIN_IMAGES", str(TINY_NUM_TRAIN), "DATASET.SYNTHETIC_VAL_IMAGES", str(TINY_NUM_VAL),
            "DATASET.INPUT_SIZE", "64", "MODEL.SPEC", TINY_SPEC, *[str(o) for o in overrides]])

    return make


def test_registered_under_its_model_name(cfg):
    assert method_class("hrnet_adaptive_pose") is AdaptivePoseMethod
    method = build_method(cfg())
    assert method.name == "hrnet_adaptive_pose" and method.spec.name == "crowdpose"
    model = method.build_model()
    assert model.method_name == "hrnet_adaptive_pose"
    assert model.convert_checkpoint({"model": model.state_dict()}).keys() == model.state_dict().keys()


@pytest.mark.parametrize("name", ["coco/adaptive_pose_w32_512.yaml", "coco/adaptive_pose_w48_640.yaml",
                                  "crowdpose/adaptive_pose_w32_512.yaml", "crowdpose/adaptive_pose_w48_640.yaml"])
def test_experiment_files_build_the_official_models(name):
    method = build_method(load_config(REPO / "experiments" / name))
    model = method.build_model()
    width = int(name.split("_w")[1][:2])
    assert model.state_dict()["transition1.0.0.weight"].shape[0] == width
    if name == "coco/adaptive_pose_w32_512.yaml":  # the official HRNet-W32 COCO model's keys and shapes
        official = json.loads((REPO / "tests" / "fixtures" / "adaptive_pose_w32_coco_official_keys.json").read_text())
        assert {k: list(v.shape) for k, v in model.state_dict().items()} == official["shapes"]
    loss, decoder = method.loss_module(), method.decoder()
    crowd = name.startswith("crowdpose")
    assert (loss.oks_factor, bool(loss.bone_edges)) == ((0.0, True) if crowd else (5.0, False))
    assert decoder.max_people == 20 and decoder.flip == "fuse" and decoder.nms == "soft"


@pytest.mark.parametrize("overrides,message", [
    (("DATASET.NUM_JOINTS", 17), r"NUM_JOINTS is 17 but synthetic_crowdpose has 14"),
    (("TEST.FLIP_MODE", "average"), r"TEST.FLIP_MODE is 'average'; expected one of \['official', 'fuse'\]"),
    (("TEST.POSE_NMS", "hard"), r"TEST.POSE_NMS is 'hard'"),
    (("DATASET.OUTPUT_STRIDE", 2), r"OUTPUT_STRIDE is 2; hrnet_adaptive_pose outputs at stride 4"),
    (("DATASET.INPUT_SIZE", 100), r"INPUT_SIZE is 100; .* multiple of 32"),
])
def test_bad_config_is_a_clear_error(cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_method(cfg(*overrides))


def test_spec_errors(cfg):
    c = cfg()
    c.MODEL.SPEC = {}
    with pytest.raises(ConfigError, match="MODEL.SPEC is empty"):
        build_method(c)
    with pytest.raises(ConfigError, match="unknown fields"):
        build_method(cfg("MODEL.SPEC", "{HEAD_CONV: 8}")).build_model()
    with pytest.raises(ConfigError, match="AUX_FOCAL_FACTOR > 0 needs the auxiliary heatmap head"):
        build_method(cfg("MODEL.SPEC", "{AUX_HEATMAP: false}")).loss_module()
    loss = build_method(cfg("MODEL.SPEC", "{AUX_HEATMAP: false}", "LOSS.AUX_FOCAL_FACTOR", 0)).loss_module()
    assert loss.aux_factor == 0 and loss.bone_edges  # the synthetic (CrowdPose) experiment: bone L1, no OKS
    assert loss.oks_factor == 0


def test_training_targets_invert_to_the_annotated_keypoints():
    """Through the pipeline (a fixed, rotated crop here) and the encoder, each person's centre cell plus its offsets,
    times the stride 4, mapped back through the image -> input matrix, is the annotated keypoint: the targets use
    the decoder's convention (cell (i, j) is input pixel (4j, 4i)). The ignore mask lands on the same cells."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    kps = np.zeros((2, 14, 3), np.float32)
    kps[0, :, :2] = rng.uniform((20, 15), (50, 75), (14, 2))
    kps[1, :, :2] = rng.uniform((65, 15), (100, 75), (14, 2))
    kps[..., 2] = 2
    kps[1, 3, 2] = 0
    ignore = np.zeros((90, 120), np.uint8)
    ignore[:20, 100:] = 1
    sample = Sample(image, kps, G.boxes_from_keypoints(kps).astype(np.float32), ignore, areas=np.array([900., 800.]))

    class Fixed(BottomUpAffine):
        def sample_params(self, rng=None):
            return {"rotation": 10.0, "scale": 1.1, "translate": (3.0, -2.0), "flip": False}

    pipeline = Fixed(CROWDPOSE14, input_size=128, output_stride=4, stride_mode="corner")
    data = AdaptivePoseTrainingSet([sample], pipeline, AdaptivePoseTargetEncoder(num_joints=14))
    item = data[0]
    m = pipeline.matrix_for((120, 90), **pipeline.sample_params())
    inv = G.invert(m)
    assert item["person_weight"].tolist()[:3] == [1, 1, 0]
    for slot in range(2):
        index = int(item["index"][slot])
        cell = np.array([index % 32, index // 32], np.float64)
        pts = (cell + item["offset"][slot].double().numpy().reshape(14, 2)) * 4
        back = G.warp_points(pts, inv)
        counted = item["offset_weight"][slot, 0::2].numpy() > 0
        assert counted.sum() == (13 if slot else 14)
        np.testing.assert_allclose(back[counted], kps[slot, counted, :2], atol=1e-3)
    # areas: the sample's, scaled by the crop's area factor and the stride
    assert float(item["area"][0]) == pytest.approx(900 * G.matrix_scale(m) ** 2 / 16, rel=1e-5)
    # the mask: 0 exactly where the cell's point (4j, 4i) maps back into the ignored corner
    ys, xs = np.mgrid[0:32, 0:32]
    src = G.warp_points(np.stack([xs, ys], -1).reshape(-1, 2) * 4.0, inv).reshape(32, 32, 2)
    inside = (src[..., 0] > 100.5) & (src[..., 0] < 119) & (src[..., 1] > -0.5) & (src[..., 1] < 19)
    outside = (src[..., 0] < 99) | (src[..., 1] > 20.5)
    mask = item["mask"][0].numpy()
    assert inside.any() and (mask[inside] == 0).all() and (mask[outside] == 1).all()
    assert item["image"].shape == (3, 128, 128)


def test_training_items_are_seeded_by_seed_epoch_and_index(cfg):
    data = build_method(cfg("DATASET.MAX_TRAIN_IMAGES", 4)).train_dataset()
    assert len(data) == 4
    a = data[1]
    assert a.keys() == {"image", "center_heatmap", "aux_heatmap", "mask", "index", "offset", "offset_weight", "area",
                        "person_weight"}
    assert a["image"].shape == (3, 64, 64) and a["center_heatmap"].shape == (1, 16, 16)
    assert a["aux_heatmap"].shape == (14, 16, 16) and a["offset"].shape == (32, 28)
    assert a["person_weight"].sum() >= 1 and a["center_heatmap"].eq(1).sum() >= a["person_weight"].sum()
    assert all(torch.equal(a[k], data[1][k]) for k in a)
    data.set_epoch(1)
    assert not torch.equal(a["image"], data[1]["image"])


def test_one_training_iteration_through_the_shared_trainer(cfg, tmp_path):
    c = cfg("TRAIN.END_EPOCH", 1, "TRAIN.IMAGES_PER_GPU", 2, "DATASET.MAX_TRAIN_IMAGES", 2)
    seen = []
    trainer = Trainer(c, tmp_path / "run", progress=False, on_iteration=lambda e, i: seen.append((e, i)))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.train()
    assert seen == [(0, 0)] and len(history) == 1
    row = history[0]
    assert {"loss", "center_loss", "offset_loss", "aux_loss", "oks_loss"} <= row.keys()
    assert math.isfinite(row["loss"]) and row["loss"] > 0 and row["oks_loss"] == 0
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert ckpt["method"] == "hrnet_adaptive_pose" and ckpt["epoch"] == 1
    moved = [k for k, v in trainer.model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "sampler.searcher.weight" in moved and "hm_hp.2.bias" in moved  # the adaptive points and the aux head


DLA_TINY_SPEC = {"LEVELS": [1, 1, 1, 2, 2, 1], "CHANNELS": [4, 4, 4, 8, 8, 16], "HEAD_CHANNELS": 8,
                 "PART_CHANNELS": 4}


def _dla_cfg(cfg, *overrides):
    """The synthetic experiment on a tiny DLA (``MODEL.SPEC`` overrides merge, so the HRNet spec is replaced)."""
    c = cfg(*overrides)
    c.MODEL.NAME, c.MODEL.SPEC = "dla_adaptive_pose", dict(DLA_TINY_SPEC)
    return c


def test_dla_registered_under_its_model_name(cfg):
    assert method_class("dla_adaptive_pose") is DLAAdaptivePoseMethod
    method = build_method(_dla_cfg(cfg))
    assert method.name == "dla_adaptive_pose" and method.spec.name == "crowdpose"
    model = method.build_model()
    assert model.method_name == "dla_adaptive_pose" and model.backbone == "dla34" and model.num_joints == 14
    assert model.convert_checkpoint({"model": model.state_dict()}).keys() == model.state_dict().keys()
    c = _dla_cfg(cfg)
    c.MODEL.SPEC = {}
    assert build_method(c).build_model().state_dict()["base.level5.root.conv.weight"].shape == (512, 1280, 1, 1)
    with pytest.raises(ConfigError, match=r"INPUT_SIZE is 100; dla_adaptive_pose needs a multiple of 32 \(the "
                                          r"DLA-34's lowest resolution is 1/32\)"):
        build_method(_dla_cfg(cfg, "DATASET.INPUT_SIZE", 100))
    with pytest.raises(ConfigError, match=r"unknown fields \['STAGES', 'STEM_BLOCKS'\].*; STAGES is the HRNet layout"):
        build_method(cfg("MODEL.NAME", "dla_adaptive_pose")).build_model()


def test_dla_experiment_file_is_the_official_recipe():
    """experiments/coco/adaptive_pose_dla34_512.yaml: the official DLA-34 model (its keys and shapes, less the
    unused ImageNet classifier) and src/main_dla34_coco512.sh's recipe and test scales."""
    cfg = load_config(REPO / "experiments" / "coco" / "adaptive_pose_dla34_512.yaml")
    method = build_method(cfg)
    assert isinstance(method, DLAAdaptivePoseMethod)
    official = json.loads((REPO / "tests" / "fixtures" / "adaptive_pose_dla34_coco_official_keys.json").read_text())
    model = method.build_model()
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {
        k: v for k, v in official["shapes"].items() if not k.startswith("base.fc.")}
    t = cfg.TRAIN
    assert (t.OPTIMIZER, t.LR, t.IMAGES_PER_GPU, t.END_EPOCH, t.LR_STEP) == ("adam", 2.5e-4, 16, 280, [230, 260])
    assert cfg.DATASET.INPUT_SIZE == 512 and cfg.TEST.SCALE_FACTOR == [1.0, 1.25, 1.5, 1.75]
    loss, decoder = method.loss_module(), method.decoder()
    assert (loss.oks_factor, bool(loss.bone_edges)) == (5.0, False)
    assert decoder.max_people == 20 and decoder.flip == "fuse" and decoder.nms == "soft"


def test_dla_one_training_iteration_through_the_shared_trainer(cfg, tmp_path):
    import bupose
    from bupose.errors import CheckpointError

    c = _dla_cfg(cfg, "TRAIN.END_EPOCH", 1, "TRAIN.IMAGES_PER_GPU", 2, "DATASET.MAX_TRAIN_IMAGES", 2)
    trainer = Trainer(c, tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.train()
    assert len(history) == 1 and math.isfinite(history[0]["loss"]) and history[0]["loss"] > 0
    moved = {k for k, v in trainer.model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])}
    assert {"base.base_layer.0.weight", "dla_up.ida_0.up_1.weight", "ida_up.node_2.conv.weight",
            "sampler.searcher.weight", "hm_hp.4.bias"} <= moved
    path = tmp_path / "run" / "checkpoint.pth"
    assert read_checkpoint(path)["method"] == "dla_adaptive_pose"
    model = build_method(c).build_model()
    bupose.load_checkpoint(model, path)
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in model.state_dict().items())
    hrnet = build_method(cfg()).build_model()
    with pytest.raises(CheckpointError, match="is a 'dla_adaptive_pose' checkpoint; the model is "
                                              "'hrnet_adaptive_pose'"):
        bupose.load_checkpoint(hrnet, path)


def _two_easy_images(synthetic_root: Path, root: Path) -> list[str]:
    """A copy of the synthetic data whose training annotations hold only its two least crowded images."""
    shutil.copytree(synthetic_root / "synthetic", root / "synthetic")

    def crowdedness(im, people):
        return im.get("crowdIndex", 1.0) >= 0.2, len(people) or 99, im["id"]

    return keep_training_images(root, 2, crowdedness)


@pytest.mark.slow
def test_overfitting_two_images_reaches_a_clear_ap(cfg, synthetic_root, tmp_path):
    """A small AdaptivePose (HRNet widths 8/16/32/64) trained at 128 px on the two least crowded synthetic images
    (3 people; mild scale / shift / flip augmentation; the CrowdPose loss plus the OKS term) for 120 iterations and
    tested on them: the whole chain -- targets, loss, Trainer, decoding, the map back to image pixels, evaluation --
    reaches a clear AP (0.52 on the development machine, AP50 1.0; 0.36 without the bone term, 0.05 without the OKS
    term at this length; chance is 0)."""
    files = _two_easy_images(synthetic_root, tmp_path / "data")
    spec = ("{STEM_BLOCKS: 1, HEAD_CHANNELS: 16, PART_CHANNELS: 8, STAGES: {NUM_BLOCKS: [[1, 1], [1, 1, 1], "
            "[1, 1, 1, 1]], NUM_CHANNELS: [[8, 16], [8, 16, 32], [8, 16, 32, 64]]}}")
    c = cfg("DATASET.ROOT", tmp_path / "data", "DATASET.TEST_SET", "train", "DATASET.INPUT_SIZE", 128,
            "MODEL.SPEC", spec, "DATASET.MAX_ROTATION", 0, "DATASET.MIN_SCALE", 0.8, "DATASET.MAX_SCALE", 1.0,
            "DATASET.MAX_TRANSLATE", 8, "DATASET.PHOTOMETRIC", False, "TRAIN.LR", 0.01, "TRAIN.LR_STEP", "[100]",
            "TRAIN.END_EPOCH", 120, "TRAIN.IMAGES_PER_GPU", 2, "TRAIN.VAL_FREQ", 1000, "TEST.FLIP_TEST", False,
            "LOSS.OKS_FACTOR", 5.0)
    trainer = Trainer(c, tmp_path / "run", progress=False)
    history = trainer.train()  # validates once, after the last epoch
    last = history[-1]
    print(f"overfit: AP {last['AP']:.3f}, AR {last['AR']:.3f}, loss {history[0]['loss']:.3f} -> {last['loss']:.3f}")
    assert last["loss"] < 0.3 * history[0]["loss"]
    assert last["AP"] > 0.3, f"AP {last['AP']:.3f} on the training images {files}"

    from bupose.engine.evaluate import evaluate_split

    c.TEST.FLIP_TEST = True
    for mode in ("official", "fuse"):
        c.TEST.FLIP_MODE = mode
        ap = evaluate_split(c, trainer.model, "train", progress=False)["AP"]
        print(f"flip {mode}: AP {ap:.3f}")
        assert ap > 0.3, f"flip {mode}: AP {ap:.3f}"
