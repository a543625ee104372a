"""The public API (``import bupose``): load_config, build_model, load_checkpoint (ours and official), Predictor."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import bupose
from bupose.errors import CheckpointError, DataError

FIXTURES = Path(__file__).parent / "fixtures"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def official():
    """The tiny official-layout DEKR (randomised weights whose outputs are of order 1, see test_dekr_model.py)."""
    return torch.load(FIXTURES / "dekr_tiny_official.pt", weights_only=False)


@pytest.fixture(scope="module")
def official_cfg(official):
    """The defaults with the official fixture's MODEL.SPEC, given on the command line as YAML."""
    return bupose.load_config(None, ["MODEL.NAME", "hrnet_dekr", "DEVICE", "cpu", "DATASET.INPUT_SIZE", "128",
                                     "MODEL.SPEC", yaml.safe_dump(official["spec"], default_flow_style=True)])


@pytest.fixture(scope="module")
def official_model(official, official_cfg):
    model = bupose.build_model(official_cfg)
    return bupose.load_checkpoint(model, official["state_dict"])


@pytest.fixture(scope="module")
def our_run(tiny_cfg, tmp_path_factory):
    from bupose.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("api_run")
    Trainer(tiny_cfg("TRAIN.END_EPOCH", 1), out, progress=False).train()
    return out


def test_the_public_names():
    assert set(bupose.__all__) >= {"load_config", "save_config", "build_model", "load_checkpoint", "Predictor",
                                   "evaluate_keypoints"}
    assert all(callable(getattr(bupose, n)) for n in bupose.__all__)
    assert isinstance(bupose.__version__, str)


def test_load_config_build_model_and_load_our_checkpoint(tiny_yaml, our_run):
    cfg = bupose.load_config(tiny_yaml, ["TEST.FLIP_TEST", "False"])
    assert cfg.TEST.FLIP_TEST is False and cfg.MODEL.NAME == "hrnet_dekr"
    for name in ("checkpoint.pth", "final_state.pth"):
        model = bupose.build_model(cfg)
        assert bupose.load_checkpoint(model, our_run / name) is model
        saved = torch.load(our_run / name, weights_only=True)["model"]
        for k, v in model.state_dict().items():
            assert torch.equal(v, saved[k]), k
    out = model.eval()(torch.zeros(1, 3, 64, 64))
    assert out["heatmap"].shape == (1, 15, 16, 16) and out["offset"].shape == (1, 28, 16, 16)


def test_load_an_official_state_dict(official, official_cfg, official_model):
    """A plain official-layout state_dict loads as it is, wrapped ({"state_dict": ...}) or with DataParallel's
    ``module.`` prefix, and gives the official model's outputs."""
    with torch.no_grad():
        out = official_model.eval()(official["input"].float())
    torch.testing.assert_close(out["heatmap"], official["heatmap"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out["offset"], official["offset"], rtol=0, atol=1e-4)
    wrapped = {"state_dict": {"module." + k: v for k, v in official["state_dict"].items()}}
    again = bupose.load_checkpoint(bupose.build_model(official_cfg), wrapped)
    for k, v in again.state_dict().items():
        assert torch.equal(v, official_model.state_dict()[k]), k


def test_load_checkpoint_refuses_what_does_not_fit(official, tiny_cfg, our_run):
    with pytest.raises(CheckpointError, match="backbone is HRNet-W4 in the checkpoint, the model is HRNet-W8"):
        wide = tiny_cfg("MODEL.SPEC", "{STAGES: {NUM_CHANNELS: [[8, 16], [8, 16, 32], [8, 16, 32, 64]]}}")
        bupose.load_checkpoint(bupose.build_model(wide), our_run / "checkpoint.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys: layer1.1.bn1.bias, .*\(132 in all\)"):  # 4 stem blocks
        bupose.load_checkpoint(bupose.build_model(tiny_cfg()), official["state_dict"])
    with pytest.raises(CheckpointError, match="is a 'other_method' checkpoint; the model is 'hrnet_dekr'"):
        bupose.load_checkpoint(bupose.build_model(tiny_cfg()), {"method": "other_method", "model": {}})


def test_predictor_returns_people(official_cfg, official_model, synthetic_root):
    image = cv2.imread(str(synthetic_root / "synthetic" / "images" / "val" / "000001.jpg"))
    people = bupose.Predictor(official_cfg, official_model)(image)
    assert isinstance(people, list) and 0 < len(people) <= official_cfg.TEST.MAX_NUM_PEOPLE
    h, w = image.shape[:2]
    for p in people:
        assert set(p) == {"keypoints", "score", "bbox"}
        kp = p["keypoints"]
        assert isinstance(kp, np.ndarray) and kp.shape == (14, 3) and np.isfinite(kp).all()
        assert isinstance(p["score"], float)
        x, y, bw, bh = p["bbox"]
        assert all(isinstance(v, float) for v in p["bbox"]) and bw >= 0 and bh >= 0
        # the box: the keypoints' extent clipped to the image's pixel centres (issue #14)
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
        assert (kp[inside, 0] >= x - 1e-3).all() and (kp[inside, 0] <= x + bw + 1e-3).all()
        assert (kp[inside, 1] >= y - 1e-3).all() and (kp[inside, 1] <= y + bh + 1e-3).all()
        assert 0 <= x <= x + bw <= w - 1 + 1e-4 and 0 <= y <= y + bh <= h - 1 + 1e-4
    assert [p["score"] for p in people] == sorted((p["score"] for p in people), reverse=True)  # best first
    # the same image twice gives the same people
    again = bupose.Predictor(official_cfg, official_model)(image)
    np.testing.assert_array_equal(np.stack([p["keypoints"] for p in again]), np.stack([p["keypoints"] for p in people]))


@pytest.mark.parametrize("bad,message", [
    (None, "got NoneType (cv2.imread returns None"),
    ("image.jpg", "got str (read the file first"),
    (np.zeros((32, 32), np.uint8), r"got shape (32, 32) dtype uint8"),
    (np.zeros((32, 32, 4), np.uint8), r"got shape (32, 32, 4)"),
    (np.zeros((32, 32, 3), np.float32), r"dtype float32"),
    (np.zeros((0, 32, 3), np.uint8), r"got shape (0, 32, 3)"),
    (torch.zeros(32, 32, 3, dtype=torch.uint8), "got Tensor"),
], ids=["none", "path", "gray", "bgra", "float", "empty", "tensor"])
def test_predictor_rejects_what_is_not_an_image(official_cfg, official_model, bad, message):
    predictor = bupose.Predictor(official_cfg, official_model)
    with pytest.raises(DataError, match="Predictor expects an \\(H, W, 3\\) BGR uint8") as info:
        predictor(bad)
    assert message in str(info.value)


def test_an_unreadable_test_image_is_a_data_error_naming_the_file(tiny_cfg, synthetic_root, tmp_path,
                                                                   official_model):
    from bupose.engine.evaluate import evaluate_split

    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "synthetic", root / "synthetic")
    bad = root / "synthetic" / "images" / "val" / "000003.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # a truncated JPEG
    cfg = tiny_cfg("DATASET.ROOT", root)
    model = bupose.build_model(cfg)
    with pytest.raises(DataError, match="000003.jpg") as info:
        evaluate_split(cfg, model, "val", progress=False)
    assert str(bad) in str(info.value)
