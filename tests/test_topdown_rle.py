"""RLE in the top-down family (Li et al., "Human Pose Regression with Residual Log-likelihood Estimation", ICCV
2021): the head (shapes, mmpose 1.x parameter names, checkpoints through the converter), RealNVP and RLELoss
against their written-out formulas, the flip-back of normalised coordinates, the decoder on encoded ground truth
(one scale, flip, another scale), the training set's labels, and a tiny tools/train.py + tools/test.py run."""
import math

import numpy as np
import pytest
import torch

from bupose.codecs import RegressionLabel
from bupose.errors import CheckpointError
from bupose.inference.flip import flip_back_coordinates
from bupose.methods.topdown import crops
from bupose.methods.topdown.convert import official_to_bupose
from bupose.methods.topdown.decode import TopDownDecoder, coords_to_scale_one_frame
from bupose.methods.topdown.heads import RLEHead
from bupose.methods.topdown.loss import RLELoss, TopDownRLELoss
from bupose.methods.topdown.model import build_topdown_model
from bupose.methods.topdown.realnvp import RealNVP

from conftest import TINY_TOPDOWN_HRNET as TINY_HRNET, people_in_two_boxes as _people_case  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CODEC = RegressionLabel(input_size=(48, 64))


# --- head and model ----------------------------------------------------------------------------------------------
def test_head_shapes_and_mmpose_names():
    head = RLEHead(in_channels=16, num_joints=5)
    (coords,) = head(torch.randn(2, 16, 8, 6))
    assert coords.shape == (2, 5, 4) and head.out_channels == 5
    assert ((coords[..., 2:] > 0) & (coords[..., 2:] < 1)).all()  # sigma after the sigmoid
    keys = set(head.state_dict())
    flow = {f"loss_module.flow_model.{n}" for n in ("loc", "cov", "mask")}
    for net in ("s", "t"):
        flow |= {f"loss_module.flow_model.{net}.{i}.{j}.{p}" for i in range(6) for j in (0, 2, 4)
                 for p in ("weight", "bias")}
    assert keys == {"fc.weight", "fc.bias"} | flow
    assert head.fc.weight.shape == (20, 16)
    assert head.loss_module.flow_model.mask.tolist() == [[0, 1], [1, 0]] * 3
    assert isinstance(head.loss_module.flow_model.s[0][5], torch.nn.Tanh) and len(head.loss_module.flow_model.t[0]) == 5


def test_models_with_a_regression_codec_output_coords_and_load_mmpose_style_checkpoints():
    model = build_topdown_model("topdown_hrnet", TINY_HRNET, 5, codec=CODEC).eval()
    out = model(torch.randn(2, 3, 64, 48))
    assert set(out) == {"coords"} and out["coords"].shape == (2, 5, 4) and model.num_joints == 5
    assert float(model.head.fc.bias.detach().abs().max()) == 0.0  # mmpose's init: N(0, 0.01), zero bias
    ckpt = {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}, "meta": {}}
    other = build_topdown_model("topdown_hrnet", TINY_HRNET, 5, codec=CODEC)
    other.load_state_dict(official_to_bupose(ckpt, other))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    # mmpose 0.x names: keypoint_head.fc.*, keypoint_head.loss.flow_model.*
    old = {("keypoint_head." + k[5:].replace("loss_module.", "loss.", 1) if k.startswith("head.") else k): v
           for k, v in ckpt["state_dict"].items()}
    other.load_state_dict(official_to_bupose(old, other))
    flows = (other.head.loss_module.flow_model, model.head.loss_module.flow_model)
    assert torch.equal(flows[0].s[3][2].weight, flows[1].s[3][2].weight)
    with pytest.raises(CheckpointError, match="RLE regression head, the model has no RLE head"):
        official_to_bupose(ckpt, build_topdown_model("topdown_hrnet", TINY_HRNET, 5))
    with pytest.raises(CheckpointError, match="joints x 4"):
        official_to_bupose(ckpt, build_topdown_model("topdown_hrnet", TINY_HRNET, 4, codec=CODEC))


def test_resnet_rle_has_mmpose_key_names():
    model = build_topdown_model("topdown_resnet", {"NUM_LAYERS": 18, "BASE_CHANNELS": 8}, 4, codec=CODEC)
    keys = set(model.state_dict())
    assert {"head.fc.weight", "head.loss_module.flow_model.t.5.4.bias", "backbone.layer4.1.conv2.weight"} <= keys
    assert not any("deconv" in k for k in keys)
    assert model.head.fc.weight.shape == (16, 64)  # ResNet-18 at base width 8: 64 channels
    assert model(torch.randn(1, 3, 64, 48))["coords"].shape == (1, 4, 4)


# --- flow and loss -------------------------------------------------------------------------------------------------
def _flow_log_prob(flow: RealNVP, x: torch.Tensor) -> torch.Tensor:
    """The flow's log density written out: invert the coupling layers last to first, ``z_b = z_b`` on the masked
    coordinate and ``z_f = (z_f - t(m z)) exp(-s(m z))`` on the free one, collect ``-s``, add ``log N(z; 0, I)``."""
    out = []
    with torch.no_grad():
        for row in x:
            z, log_det = row.clone(), 0.0
            for i in reversed(range(6)):
                m = flow.mask[i]
                kept = m * z
                s = flow.s[i](kept) * (1 - m)
                t = flow.t[i](kept) * (1 - m)
                z = kept + (1 - m) * (z - t) * torch.exp(-s)
                log_det = log_det - s.sum()
            out.append(-0.5 * (z ** 2).sum() - math.log(2 * math.pi) + log_det)
    return torch.stack(out)


def _random_flow(seed=0) -> RealNVP:
    torch.manual_seed(seed)
    flow = RealNVP()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0, 0.4)
    return flow


def test_realnvp_log_prob_equals_its_formula_and_is_the_normal_at_init():
    flow = _random_flow()
    x = torch.randn(7, 2) * 2
    np.testing.assert_allclose(flow.log_prob(x).detach().numpy(), _flow_log_prob(flow, x).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    flat = RealNVP()
    with torch.no_grad():  # scale and translation nets ending in zeros: the identity map
        for i in range(6):
            for net in (flat.s[i], flat.t[i]):
                net[4].weight.zero_()
                net[4].bias.zero_()
    want = -0.5 * (x ** 2).sum(1) - math.log(2 * math.pi)
    assert torch.allclose(flat.log_prob(x), want, atol=1e-6)


@pytest.mark.parametrize("q,residual,use_tw,size_average", [("laplace", True, True, True),
                                                           ("gaussian", True, False, True),
                                                           ("laplace", False, True, False)])
def test_rle_loss_equals_its_formula(q, residual, use_tw, size_average):
    loss = RLELoss(use_target_weight=use_tw, size_average=size_average, residual=residual, q_distribution=q)
    loss.flow_model = _random_flow(1)
    g = torch.Generator().manual_seed(2)
    b, k = 3, 4
    pred, logits, target = (torch.rand(b, k, 2, generator=g) for _ in range(3))
    logits = logits * 6 - 3
    weight = (torch.rand(b, k, 1, generator=g) > 0.3).float()
    total = 0.0
    for i in range(b):
        for j in range(k):
            sigma = torch.sigmoid(logits[i, j])
            e = (pred[i, j] - target[i, j]) / (sigma + 1e-9)
            log_phi = _flow_log_prob(loss.flow_model, e[None])[0]
            terms = torch.log(sigma) - log_phi
            if residual:
                terms = terms + (torch.log(2 * sigma) + e.abs() if q == "laplace"
                                 else torch.log(sigma * math.sqrt(2 * math.pi)) + 0.5 * e ** 2)
            total += float((terms * (weight[i, j] if use_tw else 1.0)).sum())
    want = total / b if size_average else total
    got = loss(pred, logits, target, weight)
    assert got.item() == pytest.approx(want, rel=1e-4, abs=1e-4)
    assert loss.from_sigma(pred, logits.sigmoid(), target, weight).item() == pytest.approx(got.item(), rel=1e-5)


def test_trainer_loss_has_finite_gradients_for_the_model_and_its_flow():
    model = build_topdown_model("topdown_hrnet", TINY_HRNET, 5, codec=CODEC).train()
    loss_fn = TopDownRLELoss(model.head.loss_module)
    assert list(loss_fn.parameters()) == []  # the model owns the flow
    batch = {"image": torch.randn(2, 3, 64, 48), "keypoint_labels": torch.rand(2, 5, 2),
             "target_weight": torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.float32)}
    out = loss_fn(model(batch["image"]), batch)
    assert set(out) == {"loss", "rle_loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for n, g in grads.items() if n.startswith("head."))
    assert grads["head.fc.weight"].abs().sum() > 0 and grads["head.loss_module.flow_model.s.0.0.weight"].abs().sum() > 0


# --- flip and scales -----------------------------------------------------------------------------------------------
def test_flipping_coordinates_twice_is_the_identity_and_mirrors_pixels():
    g = torch.Generator().manual_seed(0)
    coords = torch.rand(2, 3, 4, generator=g)
    for width in (None, 48):
        once = flip_back_coordinates(coords, [0, 2, 1], input_width=width)
        assert torch.allclose(flip_back_coordinates(once, [0, 2, 1], input_width=width), coords, atol=1e-7)
        assert torch.equal(once[:, 1, 1:], coords[:, 2, 1:])  # y and sigma swapped, not mirrored
    # pixel i of a mirrored crop is pixel W - 1 - i of the original one
    w = 48
    px = torch.tensor([[[5.0 / w, 0.5, 0.1, 0.2]]])
    assert flip_back_coordinates(px, [0], input_width=w)[0, 0, 0].item() * w == pytest.approx(w - 1 - 5.0)
    back = flip_back_coordinates(px.numpy(), [0], input_width=w)
    assert isinstance(back, np.ndarray) and back[0, 0, 0] * w == pytest.approx(42.0)
    with pytest.raises(ValueError, match="flip_index"):
        flip_back_coordinates(coords, [0, 1], input_width=w)


def test_coordinates_keep_their_frame_at_scale_one_and_scale_about_the_centre():
    c = torch.tensor([[[0.75, 0.25, 0.3, 0.4]]])
    assert coords_to_scale_one_frame(c, 1.0) is c
    assert torch.equal(coords_to_scale_one_frame(c, 2.0), torch.tensor([[[1.0, 0.0, 0.3, 0.4]]]))


# --- the decoder ---------------------------------------------------------------------------------------------------
def _outputs_for(view, kps, sigma=0.2):
    """Perfect outputs: the people's keypoints encoded in ``view``'s crops, a constant sigma."""
    c, s = view.centers[:, None].astype(np.float64), view.sizes[:, None].astype(np.float64)
    in_crop = (kps - c + s / 2.0) / s * np.asarray(CODEC.input_size)  # the inverse of the crop -> image mapping
    np.testing.assert_allclose(crops.input_to_image(in_crop, view.centers, view.sizes, CODEC.input_size), kps,
                               atol=1e-6)
    labels = CODEC.encode(in_crop, None)["keypoint_labels"]
    return torch.from_numpy(np.concatenate([labels, np.full(labels.shape, sigma, np.float32)], -1))


@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_decoder_returns_people_at_the_encoded_keypoints(scale):
    boxes, kps = _people_case()
    decoder = TopDownDecoder(flip_index=[0, 2, 1, 4, 3], sigmas=[0.05] * 5, input_size=CODEC.input_size,
                             heatmap_size=(12, 16), codec=CODEC, in_vis_thre=0.0)
    assert decoder.regression
    image = np.zeros((200, 220, 3), np.uint8)
    state = decoder.begin(image, [scale], boxes=(boxes, np.ones(2)))
    view = decoder.prepare(image, scale)
    assert view.tensor.shape == (2, 3, 64, 48)
    decoder.add_scale(state, {"coords": _outputs_for(view, kps)}, None, view, scale)
    people = decoder.finish(state)
    assert len(people.scores) == 2
    order = np.argsort(people.keypoints[:, 0, 0])
    np.testing.assert_allclose(people.keypoints[order, :, :2], kps, atol=2e-3)
    np.testing.assert_allclose(people.keypoints[:, :, 2], 0.8, rtol=1e-6)   # 1 - mean sigma
    np.testing.assert_allclose(np.sort(people.scores), [0.8, 0.8], rtol=1e-6)


def test_decoder_flip_averages_flipped_back_coordinates():
    decoder = TopDownDecoder(flip_index=[0, 2, 1], sigmas=[0.05] * 3, input_size=CODEC.input_size,
                             heatmap_size=(12, 16), codec=CODEC)
    image = np.zeros((100, 100, 3), np.uint8)
    state = decoder.begin(image, [1.0], boxes=(np.array([[20.0, 10.0, 40.0, 70.0]]), np.ones(1)))
    view = decoder.prepare(image, 1.0)
    out = torch.rand(1, 3, 4, generator=torch.Generator().manual_seed(0))
    mirrored = flip_back_coordinates(out, [0, 2, 1], input_width=48)  # what a consistent model gives the mirror
    decoder.add_scale(state, {"coords": out}, {"coords": mirrored}, view, 1.0)
    assert torch.allclose(state["sum"], out, atol=1e-6)


# --- method, training set, tools -----------------------------------------------------------------------------------
from conftest import train_and_test_tiny_topdown  # noqa: E402

from bupose.config import load_config  # noqa: E402
from bupose.errors import ConfigError  # noqa: E402
from bupose.methods import build_method  # noqa: E402

RLE = ["MODEL.CODEC", "{type: RegressionLabel}"]


def test_the_method_maps_a_regression_codec(tiny_topdown_yaml):
    method = build_method(load_config(tiny_topdown_yaml, RLE))
    assert method.regression and isinstance(method.codec, RegressionLabel) and method.codec.input_size == (48, 64)
    with pytest.raises(RuntimeError, match="build_model"):
        method.loss_module()
    model = method.build_model()
    assert isinstance(model.head, RLEHead) and method.decoder().regression
    assert method.loss_module().criterion is model.head.loss_module
    item = method.train_dataset()[0]
    assert set(item) == {"image", "keypoint_labels", "target_weight"} and item["keypoint_labels"].shape == (14, 2)
    labelled = item["target_weight"] > 0
    assert ((item["keypoint_labels"][labelled] >= 0) & (item["keypoint_labels"][labelled] <= 1)).all()
    with pytest.raises(ConfigError, match="USE_OHKM"):
        build_method(load_config(tiny_topdown_yaml, RLE + ["LOSS.USE_OHKM", "true"]))


@pytest.mark.slow
def test_train_and_test_tools_run_an_rle_experiment(tiny_topdown_yaml, tmp_path):
    """tools/train.py (2 epochs on the tiny synthetic set) and tools/test.py (flip, two scales) with RLE; the
    trained flow is in the checkpoint."""
    out = tmp_path / "run"
    train_and_test_tiny_topdown(tiny_topdown_yaml, out, RLE)
    state = torch.load(out / "final_state.pth", map_location="cpu", weights_only=False)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    assert any(k.endswith("loss_module.flow_model.s.0.0.weight") for k in state)
