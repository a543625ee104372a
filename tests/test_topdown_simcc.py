"""SimCC in the top-down family: the head (shapes, mmpose 1.x parameter names, checkpoints through the converter),
KLDiscretLoss against its formula, the flip-back of SimCC vectors, the decoder on encoded ground truth, the
training set's labels, and a tiny tools/train.py + tools/test.py run (plus a short overfit run)."""
import numpy as np
import pytest
import torch

from bupose.codecs import SimCCLabel
from bupose.errors import CheckpointError
from bupose.inference.flip import flip_back_vectors
from bupose.methods.topdown import crops
from bupose.methods.topdown.convert import official_to_bupose
from bupose.methods.topdown.decode import TopDownDecoder, vectors_to_scale_one_frame
from bupose.methods.topdown.heads import SimCCHead
from bupose.methods.topdown.loss import KLDiscretLoss, TopDownSimCCLoss
from bupose.methods.topdown.model import build_topdown_model

from conftest import TINY_TOPDOWN_HRNET as TINY_HRNET, people_in_two_boxes as _people_case  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")



# --- head and model ----------------------------------------------------------------------------------------------
def test_head_shapes_and_mmpose_names_with_deconvolutions():
    head = SimCCHead(in_channels=64, out_channels=5, input_size=(192, 256), in_featuremap_size=(6, 8),
                     deconv_out_channels=(16, 16), deconv_kernel_sizes=(4, 4))
    x, y = head(torch.randn(2, 64, 8, 6))
    assert x.shape == (2, 5, 384) and y.shape == (2, 5, 512) and head.heatmap_size == (24, 32)
    keys = set(head.state_dict())
    assert {"deconv_head.deconv_layers.0.weight", "deconv_head.deconv_layers.1.running_var",
            "deconv_head.deconv_layers.3.weight", "deconv_head.final_layer.weight", "deconv_head.final_layer.bias",
            "mlp_head_x.weight", "mlp_head_x.bias", "mlp_head_y.weight"} <= keys
    assert head.mlp_head_x.weight.shape == (384, 24 * 32) and head.deconv_head.final_layer.weight.shape == (5, 16, 1, 1)
    with pytest.raises(ValueError, match="expected"):
        head(torch.randn(1, 64, 9, 6))


def test_head_without_deconvolutions_and_split_ratio():
    head = SimCCHead(in_channels=32, out_channels=3, input_size=(48, 64), in_featuremap_size=(12, 16),
                     simcc_split_ratio=3.0, deconv_out_channels=None)
    x, y = head(torch.randn(1, 32, 16, 12))
    assert x.shape == (1, 3, 144) and y.shape == (1, 3, 192)
    assert set(head.state_dict()) == {"final_layer.weight", "final_layer.bias", "mlp_head_x.weight",
                                      "mlp_head_x.bias", "mlp_head_y.weight", "mlp_head_y.bias"}
    with pytest.raises(ValueError, match="final_layer_kernel_size"):
        SimCCHead(in_channels=32, out_channels=3, input_size=(48, 64), in_featuremap_size=(12, 16),
                  final_layer_kernel_size=3)


def test_models_with_a_simcc_codec_output_vectors_and_load_mmpose_style_checkpoints():
    codec = SimCCLabel(input_size=(48, 64), sigma=2.0)
    model = build_topdown_model("topdown_hrnet", TINY_HRNET, 5, codec=codec).eval()
    out = model(torch.randn(2, 3, 64, 48))
    assert set(out) == {"simcc_x", "simcc_y"} and out["simcc_x"].shape == (2, 5, 96)
    assert out["simcc_y"].shape == (2, 5, 128) and model.num_joints == 5
    assert float(model.head.mlp_head_x.bias.detach().abs().max()) == 0.0  # mmpose's init: N(0, 0.01), zero bias
    # an mmpose 1.x file: {"state_dict": {"backbone.*", "head.*"}} with the same names
    ckpt = {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "meta": {}}
    other = build_topdown_model("topdown_hrnet", TINY_HRNET, 5, codec=codec)
    other.load_state_dict(official_to_bupose(ckpt, other))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    heatmap_model = build_topdown_model("topdown_hrnet", TINY_HRNET, 5)
    with pytest.raises(CheckpointError, match="SimCC head, the model has a heatmap head"):
        official_to_bupose(ckpt, heatmap_model)
    wider = build_topdown_model("topdown_hrnet", TINY_HRNET, 5, codec=SimCCLabel(input_size=(48, 64),
                                                                                   simcc_split_ratio=3.0))
    with pytest.raises(CheckpointError, match="x classifier"):
        official_to_bupose(ckpt, wider)


def test_resnet_simcc_has_mmpose_key_names():
    model = build_topdown_model("topdown_resnet", {"NUM_LAYERS": 18, "NUM_DECONV_FILTERS": [8, 8, 8],
                                                   "BASE_CHANNELS": 8}, 4, codec=SimCCLabel(input_size=(64, 64)))
    keys = set(model.state_dict())
    assert {"head.deconv_head.deconv_layers.6.weight", "head.deconv_head.final_layer.weight",
            "head.mlp_head_y.weight"} <= keys
    assert model(torch.randn(1, 3, 64, 64))["simcc_x"].shape == (1, 4, 128)


# --- loss ----------------------------------------------------------------------------------------------------------
def _kl_formula(preds, labels, weight, beta, label_softmax, label_beta, use_target_weight):
    """mmpose's KLDiscretLoss written out: sum over samples, keypoints and axes of w * mean_bins(t * (log t - log p)),
    p = softmax(beta * pred), t = label or softmax(label_beta * label); divided by K."""
    b, k = preds[0].shape[:2]
    total = 0.0
    for pred, label in zip(preds, labels):
        for i in range(b):
            for j in range(k):
                p = torch.softmax(pred[i, j].double() * beta, 0)
                t = torch.softmax(label[i, j].double() * label_beta, 0) if label_softmax else label[i, j].double()
                terms = torch.where(t > 0, t * (torch.log(t) - torch.log(p)), torch.zeros_like(t))
                total += (weight[i, j] if use_target_weight else 1.0) * terms.mean()
    return total / k


@pytest.mark.parametrize("beta,label_softmax,use_target_weight", [(1.0, False, True), (2.0, False, False),
                                                                  (1.0, True, True)])
def test_kl_discret_loss_equals_its_formula(beta, label_softmax, use_target_weight):
    g = torch.Generator().manual_seed(0)
    codec = SimCCLabel(input_size=(16, 12), sigma=2.0)
    enc = codec.encode(torch.rand(3, 4, 2, generator=g).numpy() * [16, 12], None)
    labels = (torch.from_numpy(enc["keypoint_x_labels"]), torch.from_numpy(enc["keypoint_y_labels"]))
    preds = (torch.randn(3, 4, 32, generator=g), torch.randn(3, 4, 24, generator=g))
    weight = torch.tensor([[1, 0, 1, 0.5], [1, 1, 1, 1], [0, 2, 1, 1]], dtype=torch.float32)
    got = KLDiscretLoss(beta=beta, label_softmax=label_softmax, use_target_weight=use_target_weight)(
        preds, labels, weight)
    expected = _kl_formula(preds, labels, weight, beta, label_softmax, 10.0, use_target_weight)
    assert got.item() == pytest.approx(float(expected), rel=1e-5)


def test_trainer_loss_names_its_terms_and_is_zero_only_at_the_labels():
    x, y = torch.zeros(2, 3, 8), torch.zeros(2, 3, 6)
    x[..., 2], y[..., 4] = 1.0, 1.0
    batch = {"keypoint_x_labels": x, "keypoint_y_labels": y, "target_weight": torch.ones(2, 3)}
    pred = {"simcc_x": torch.zeros(2, 3, 8, requires_grad=True), "simcc_y": torch.zeros(2, 3, 6)}
    out = TopDownSimCCLoss(KLDiscretLoss())(pred, batch)
    assert set(out) == {"loss", "simcc_loss"} and out["loss"].item() > 0
    out["loss"].backward()
    assert pred["simcc_x"].grad[..., 2].lt(0).all()  # descending raises the label's logit
    sharp = {"simcc_x": x * 50, "simcc_y": y * 50}
    assert TopDownSimCCLoss(KLDiscretLoss())(sharp, batch)["loss"].item() < 1e-6


# --- flip ----------------------------------------------------------------------------------------------------------
def test_flipping_vectors_twice_is_the_identity_and_mirrors_a_one_hot_label():
    flip_index = [0, 2, 1]
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 3, 10, generator=g), torch.randn(2, 3, 7, generator=g)
    bx, by = flip_back_vectors(*flip_back_vectors(x, y, flip_index), flip_index)
    assert torch.equal(bx, x) and torch.equal(by, y)
    nx, ny = flip_back_vectors(x.numpy(), y.numpy(), flip_index)
    tx, ty = flip_back_vectors(x, y, flip_index)
    assert np.array_equal(nx, tx.numpy()) and np.array_equal(ny, ty.numpy())
    # a one-hot label of keypoint 1 at bin 3 of a mirrored crop is keypoint 2 at bin W - 1 - 3 (mmpose: no shift)
    codec = SimCCLabel(input_size=(5, 4), smoothing_type="standard")
    kps = np.array([[[2.0, 1.0], [1.5, 2.5], [4.0, 0.0]]])
    enc = codec.encode(kps, None)
    fx, fy = flip_back_vectors(enc["keypoint_x_labels"], enc["keypoint_y_labels"], flip_index)
    assert fx[0, 2].argmax() == 10 - 1 - enc["keypoint_x_labels"][0, 1].argmax()
    assert np.array_equal(fy[0, 2], enc["keypoint_y_labels"][0, 1])
    assert np.array_equal(fx[0, 0], enc["keypoint_x_labels"][0, 0][::-1])
    with pytest.raises(ValueError, match="flip_index"):
        flip_back_vectors(x, y, [0, 1])


def test_vectors_keep_their_frame_at_scale_one_and_move_to_the_centre_by_scale():
    v = torch.zeros(1, 1, 20)
    v[0, 0, 15] = 1.0
    assert vectors_to_scale_one_frame(v, 1.0) is v
    # bin 15 of a crop twice as wide is 10 + (15 - 10) * 2 = 20 bins from 0 in the scale-1 frame (outside: end value)
    half = torch.zeros(1, 1, 20)
    half[0, 0, 12] = 1.0
    assert int(vectors_to_scale_one_frame(half, 2.0).argmax()) == 14


# --- the decoder ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_dark", [False, True])
def test_decoder_returns_people_at_the_encoded_keypoints(use_dark):
    input_size, ratio = (48, 64), 2.0
    codec = SimCCLabel(input_size=input_size, sigma=2.0, simcc_split_ratio=ratio, use_dark=use_dark)
    boxes, kps = _people_case()
    decoder = TopDownDecoder(flip_index=[0, 2, 1, 4, 3], sigmas=[0.05] * 5, input_size=input_size,
                             heatmap_size=(12, 16), codec=codec, in_vis_thre=0.0)
    image = np.zeros((200, 220, 3), np.uint8)
    state = decoder.begin(image, [1.0], boxes=(boxes, np.ones(2)))
    view = decoder.prepare(image, 1.0)
    assert view.tensor.shape == (2, 3, 64, 48)
    c, s = view.centers[:, None].astype(np.float64), view.sizes[:, None].astype(np.float64)
    in_crop = (kps - c + s / 2.0) / s * np.asarray(input_size)  # the inverse of mmpose's crop -> image mapping
    np.testing.assert_allclose(crops.input_to_image(in_crop, view.centers, view.sizes, input_size), kps, atol=1e-9)
    enc = codec.encode(in_crop, None)
    outputs = {"simcc_x": torch.from_numpy(enc["keypoint_x_labels"]),
               "simcc_y": torch.from_numpy(enc["keypoint_y_labels"])}
    decoder.add_scale(state, outputs, None, view, 1.0)
    people = decoder.finish(state)
    assert len(people.scores) == 2
    order = np.argsort(people.keypoints[:, 0, 0])
    px_per_bin = view.sizes[0, 0] / input_size[0]  # crop pixels -> image pixels
    assert np.abs(people.keypoints[order, :, :2] - kps).max() <= (0.5 / ratio + 1e-4) * px_per_bin
    assert np.allclose(people.keypoints[:, :, 2], 1 / (2.0 * np.sqrt(2 * np.pi)), rtol=1e-5)


def test_decoder_flip_averages_flipped_back_vectors():
    input_size = (48, 64)
    codec = SimCCLabel(input_size=input_size, sigma=2.0)
    decoder = TopDownDecoder(flip_index=[0, 2, 1], sigmas=[0.05] * 3, input_size=input_size, heatmap_size=(12, 16),
                             codec=codec)
    image = np.zeros((100, 100, 3), np.uint8)
    state = decoder.begin(image, [1.0], boxes=(np.array([[20.0, 10.0, 40.0, 70.0]]), np.ones(1)))
    view = decoder.prepare(image, 1.0)
    g = torch.Generator().manual_seed(0)
    out = {"simcc_x": torch.randn(1, 3, 96, generator=g), "simcc_y": torch.randn(1, 3, 128, generator=g)}
    mirrored = {"simcc_x": out["simcc_x"][:, [0, 2, 1]].flip(-1), "simcc_y": out["simcc_y"][:, [0, 2, 1]]}
    decoder.add_scale(state, out, mirrored, view, 1.0)  # a consistent mirror: the average is the plain output
    assert torch.allclose(state["sum"][0], out["simcc_x"]) and torch.allclose(state["sum"][1], out["simcc_y"])


# --- method, training set, tools -----------------------------------------------------------------------------------
from conftest import REPO, optimise, train_and_test_tiny_topdown  # noqa: E402

from bupose.config import load_config  # noqa: E402
from bupose.errors import ConfigError  # noqa: E402
from bupose.methods import build_method  # noqa: E402

SIMCC = ["MODEL.CODEC", "{type: SimCCLabel, sigma: 2.0}"]


def test_the_method_maps_a_simcc_codec(tiny_topdown_yaml):
    method = build_method(load_config(tiny_topdown_yaml, SIMCC))
    assert method.simcc and isinstance(method.codec, SimCCLabel) and method.codec.input_size == (48, 64)
    assert isinstance(method.loss_module().criterion, KLDiscretLoss)
    assert isinstance(method.build_model().head, SimCCHead) and method.decoder().simcc
    item = method.train_dataset()[0]
    assert set(item) == {"image", "keypoint_x_labels", "keypoint_y_labels", "target_weight"}
    assert item["keypoint_x_labels"].shape == (14, 96) and item["keypoint_y_labels"].shape == (14, 128)
    with pytest.raises(ConfigError, match="USE_OHKM"):
        build_method(load_config(tiny_topdown_yaml, SIMCC + ["LOSS.USE_OHKM", "true"]))
    base = REPO / "experiments" / "synthetic" / "topdown_simcc_simple_128x96.yaml"
    assert build_method(load_config(base)).codec.sigma.tolist() == [3.0, 3.0]


@pytest.mark.slow
def test_train_and_test_tools_run_a_simcc_experiment(tiny_topdown_yaml, tmp_path):
    """tools/train.py (2 epochs on the tiny synthetic set) and tools/test.py (flip, two scales) with a SimCC codec."""
    train_and_test_tiny_topdown(tiny_topdown_yaml, tmp_path / "run", SIMCC)


@pytest.mark.slow
def test_a_simcc_model_overfits_a_few_crops(tiny_topdown_yaml):
    """80 Adam steps on 8 fixed crops: the KL loss falls to under a third and the decoded keypoints move to within
    a few pixels of the labels."""
    torch.manual_seed(0)
    method = build_method(load_config(tiny_topdown_yaml, SIMCC + ["DATASET.SCALE_FACTOR", "0", "DATASET.ROT_FACTOR",
                                                                  "0", "DATASET.FLIP", "0"]))
    data = method.train_dataset()
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in data[0]}
    model, loss_fn = method.build_model().train(), method.loss_module()
    losses = optimise(model, loss_fn, batch, torch.optim.Adam(model.parameters(), lr=3e-3), steps=80)
    assert losses[-1] < losses[0] / 3, losses[::10]
    model.eval()
    with torch.no_grad():
        out = model(batch["image"])
    codec = method.codec
    got, _ = codec.decode_batch((out["simcc_x"].numpy(), out["simcc_y"].numpy()))
    want, _ = codec.decode_batch((batch["keypoint_x_labels"].numpy(), batch["keypoint_y_labels"].numpy()))
    labelled = batch["target_weight"].numpy() > 0
    assert np.median(np.linalg.norm(got - want, axis=-1)[labelled]) < 3.0
