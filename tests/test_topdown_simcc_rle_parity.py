"""SimCC (Li et al., ECCV 2022; mmpose's simcc_res50) and RLE (Li et al., ICCV 2021; mmpose's td-reg_res50_rle)
against mmpose 1.x's own code: small ResNet-18 models built, randomised and run by mmpose
(tests/fixtures/topdown_simcc_rle_make_fixtures.py) load as released mmpose files through bupose's checkpoint path
into models of bupose's ``topdown_resnet`` factory, and give mmpose's outputs, flip-tested outputs (bupose's decoder
and flip code), decoded keypoints and scores, and losses (KLDiscretLoss; RLELoss with the file's RealNVP flow, and
its gradient)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from bupose.codecs import RegressionLabel, SimCCLabel
from bupose.engine.checkpoint import load_checkpoint
from bupose.inference import flip
from bupose.methods.topdown.decode import TopDownDecoder
from bupose.methods.topdown.loss import KLDiscretLoss, TopDownRLELoss, TopDownSimCCLoss
from bupose.methods.topdown.model import TopDownResNet, build_topdown_model

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "topdown_simcc_rle_mmpose.pt"


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def simcc_codec(official):
    c = official["config"]
    return SimCCLabel(input_size=c["input_size"], sigma=c["sigma"], simcc_split_ratio=c["simcc_split_ratio"])


def rle_codec(official):
    return RegressionLabel(input_size=official["config"]["input_size"])


def spec(official, simcc: bool):
    c = official["config"]
    s = {"NUM_LAYERS": c["NUM_LAYERS"], "BASE_CHANNELS": c["BASE_CHANNELS"]}
    if simcc:  # simcc_res50's deconvolutions, narrower
        s.update(NUM_DECONV_LAYERS=len(c["NUM_DECONV_FILTERS"]), NUM_DECONV_FILTERS=c["NUM_DECONV_FILTERS"],
                 NUM_DECONV_KERNELS=c["NUM_DECONV_KERNELS"])
    return s


def decoder(official, codec):
    c = official["config"]
    return TopDownDecoder(flip_index=c["flip_indices"], sigmas=[0.05] * c["num_joints"], input_size=codec.input_size,
                          heatmap_size=(16, 24), codec=codec)


@pytest.fixture(scope="module")
def released(official, tmp_path_factory):
    """The two mmpose files ({"meta", "state_dict"}) as files on disk, as a user would pass them."""
    root = tmp_path_factory.mktemp("mmpose_files")
    paths = {}
    for kind in ("simcc", "rle"):
        paths[kind] = root / f"{kind}_res18_mmpose.pth"
        torch.save(official[kind], paths[kind])
    return paths


@pytest.fixture(scope="module")
def simcc_model(official, released):
    model = build_topdown_model("topdown_resnet", spec(official, True), official["config"]["num_joints"],
                                codec=simcc_codec(official))
    return load_checkpoint(model, released["simcc"]).eval()


@pytest.fixture(scope="module")
def rle_model(official, released):
    model = build_topdown_model("topdown_resnet", spec(official, False), official["config"]["num_joints"],
                                codec=rle_codec(official))
    return load_checkpoint(model, released["rle"]).eval()


def max_diff(a, b) -> float:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return (a.double() - b.double()).abs().max().item()


def run(model, official):
    x = official["inputs"].float()
    with torch.no_grad():
        return x, model(x), model(flip.flip_input(x))


# --- SimCC ----------------------------------------------------------------------------------------------------------
def test_simcc_mmpose_file_loads_unchanged_and_gives_mmpose_vectors(official, simcc_model):
    assert isinstance(simcc_model, TopDownResNet)
    sd = simcc_model.state_dict()
    assert set(sd) == set(official["simcc"]["state_dict"])  # mmpose's names, no renaming
    assert all(torch.equal(sd[k], v) for k, v in official["simcc"]["state_dict"].items())
    _, out, _ = run(simcc_model, official)
    for name in ("simcc_x", "simcc_y"):
        assert max_diff(out[name], official[name]) <= 1e-5, name


def test_simcc_flip_test_and_decoding_equal_mmpose_predict(official, simcc_model):
    """bupose's flip test (mirrored crops; the decoder's flip_back_vectors and average) and SimCCLabel decoding give
    what mmpose's SimCCHead.predict(test_cfg=dict(flip_test=True)) gave."""
    codec = simcc_codec(official)
    dec = decoder(official, codec)
    _, out, flipped = run(simcc_model, official)
    state = {"sum": None, "passes": 0}
    dec.add_scale(state, out, flipped, None, 1.0)
    vx, vy = state["sum"]
    assert max_diff(vx, official["flip_simcc_x"]) <= 1e-5 and max_diff(vy, official["flip_simcc_y"]) <= 1e-5
    fx, fy = flip.flip_back_vectors(flipped["simcc_x"], flipped["simcc_y"], official["config"]["flip_indices"])
    assert torch.equal((out["simcc_x"] + fx) * 0.5, vx) and torch.equal((out["simcc_y"] + fy) * 0.5, vy)
    keypoints, scores = codec.decode_batch((vx.numpy(), vy.numpy()))
    np.testing.assert_allclose(keypoints, official["simcc_keypoints"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, official["simcc_keypoint_scores"].numpy(), atol=1e-5, rtol=0)


def test_simcc_loss_equals_mmpose_kl_discret_loss(official, simcc_model):
    """simcc_res50's loss, KLDiscretLoss(use_target_weight=True) (beta 1, no label soft-max), on the mmpose outputs
    and bupose's labels; the trainer's loss (the method's choice) on bupose's outputs gives the same."""
    codec = simcc_codec(official)
    enc = codec.encode(official["label_keypoints"].numpy(), official["label_visible"].numpy())
    np.testing.assert_array_equal(enc["keypoint_weights"], official["simcc_keypoint_weights"].numpy())
    labels = (torch.from_numpy(enc["keypoint_x_labels"]), torch.from_numpy(enc["keypoint_y_labels"]))
    weights = torch.from_numpy(enc["keypoint_weights"])
    want = official["simcc_loss"].item()
    loss = KLDiscretLoss(use_target_weight=True)((official["simcc_x"], official["simcc_y"]), labels, weights)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    _, out, _ = run(simcc_model, official)
    batch = {"keypoint_x_labels": labels[0], "keypoint_y_labels": labels[1], "target_weight": weights}
    trainer = TopDownSimCCLoss(KLDiscretLoss(use_target_weight=True))(out, batch)["loss"]
    assert trainer.item() == pytest.approx(want, rel=1e-5)


# --- RLE ------------------------------------------------------------------------------------------------------------
def test_rle_mmpose_file_loads_unchanged_and_gives_mmpose_coordinates(official, rle_model):
    assert isinstance(rle_model, TopDownResNet)
    sd = rle_model.state_dict()
    assert set(sd) == set(official["rle"]["state_dict"])  # backbone.*, head.fc.*, head.loss_module.flow_model.*
    assert all(torch.equal(sd[k], v) for k, v in official["rle"]["state_dict"].items())
    _, out, _ = run(rle_model, official)
    coords = out["coords"]
    # mmpose's RLEHead.forward gives (B, K, 4) with the sigma logits; predict and loss apply the sigmoid; bupose's
    # head applies it in its forward
    assert max_diff(coords[..., :2], official["rle_output"][..., :2]) <= 1e-5
    assert max_diff(coords, official["rle_coords"]) <= 1e-5
    assert max_diff(coords[..., 2:], official["rle_output"][..., 2:].sigmoid()) <= 1e-5


def test_rle_flip_test_and_decoding_equal_mmpose_predict(official, rle_model):
    """bupose's flip test (the decoder's flip_back_coordinates with the crop width, mmpose's shift_coords=True, and
    average) and RegressionLabel decoding give what RLEHead.predict(test_cfg=dict(flip_test=True,
    shift_coords=True)) gave."""
    codec = rle_codec(official)
    dec = decoder(official, codec)
    _, out, flipped = run(rle_model, official)
    state = {"sum": None, "passes": 0}
    dec.add_scale(state, out, flipped, None, 1.0)
    coords = state["sum"]
    assert max_diff(coords, official["rle_flip_coords"]) <= 1e-5
    back = flip.flip_back_coordinates(flipped["coords"], official["config"]["flip_indices"],
                                      input_width=official["config"]["input_size"][0])
    assert torch.equal((out["coords"] + back) * 0.5, coords)
    keypoints, scores = codec.decode_batch(coords.numpy())
    np.testing.assert_allclose(keypoints, official["rle_keypoints"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, official["rle_keypoint_scores"].numpy(), atol=1e-5, rtol=0)


def test_rle_loss_and_its_gradient_equal_mmpose(official, rle_model):
    """td-reg_res50_rle's RLELoss(use_target_weight=True) (residual, Laplace q, divided by the batch) with the file's
    flow, called as RLEHead.loss calls it (mu, sigma logits, labels, weights); and the trainer's loss
    (TopDownRLELoss, sigma after the model's sigmoid) on bupose's outputs."""
    codec = rle_codec(official)
    enc = codec.encode(official["label_keypoints"].numpy(), official["label_visible"].numpy())
    np.testing.assert_allclose(enc["keypoint_labels"], official["rle_keypoint_labels"].numpy(), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(enc["keypoint_weights"], official["rle_keypoint_weights"].numpy())
    labels = torch.from_numpy(np.asarray(enc["keypoint_labels"], np.float32))
    weights = torch.from_numpy(np.asarray(enc["keypoint_weights"], np.float32))
    want = official["rle_loss"].item()
    criterion = rle_model.head.loss_module
    assert criterion.use_target_weight and criterion.size_average and criterion.residual
    assert criterion.q_distribution == "laplace"
    out = official["rle_output"].clone().requires_grad_(True)
    loss = criterion(out[..., :2], out[..., 2:4], labels, weights.unsqueeze(-1))
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    grad = official["rle_loss_grad"]
    assert max_diff(out.grad, grad) <= 1e-5 * grad.abs().max().item()
    _, got, _ = run(rle_model, official)
    trainer = TopDownRLELoss(criterion)(got, {"keypoint_labels": labels, "target_weight": weights})["loss"]
    assert trainer.item() == pytest.approx(want, rel=1e-5)
