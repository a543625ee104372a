"""RTMPose (topdown_cspnext) against mmpose 1.x's own code: a small RTMPose built, randomised and run by mmpose
(tests/fixtures/topdown_rtmpose_make_fixtures.py) loads through bupose's checkpoint path and gives the same SimCC
vectors, flip-tested vectors, decoded keypoints and loss; the full-size RTMPose-t/s/m/l key layouts and parameter
counts equal mmpose's; other checkpoints and bad MODEL.SPEC fields are refused saying what differs; one training
step through the method."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bupose.codecs import MSRAHeatmap, SimCCLabel
from bupose.config import load_config
from bupose.engine.checkpoint import load_checkpoint
from bupose.errors import CheckpointError, ConfigError
from bupose.inference import flip
from bupose.methods import build_method, method_class, official_method_of
from bupose.methods.topdown.decode import TopDownDecoder
from bupose.methods.topdown.loss import KLDiscretLoss
from bupose.methods.topdown.model import build_topdown_model
from bupose.methods.topdown.rtmcc import RTMCCBlock, RTMCCHead
from bupose.methods.topdown.rtmpose import (LOSS_BETA, LOSS_LABEL_SOFTMAX, TopDownCSPNeXt, TopDownCSPNeXtMethod,
                                            load_pretrained_cspnext)

from conftest import TINY_TOPDOWN_HRNET, optimise, tiny_synthetic_header  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = FIXTURES / "topdown_rtmpose_tiny_mmpose.pt"
KEYS = FIXTURES / "topdown_rtmpose_m_mmpose_keys.json"


@pytest.fixture(scope="module")
def official():
    return torch.load(TINY, map_location="cpu", weights_only=True)


def tiny_codec(official, **kw):
    c = official["config"]
    return SimCCLabel(input_size=c["input_size"], sigma=c["sigma"], simcc_split_ratio=c["simcc_split_ratio"],
                      normalize=False, use_dark=False, **kw)


def tiny_spec(official, **kw):
    c = official["config"]
    return {"DEEPEN_FACTOR": c["DEEPEN_FACTOR"], "WIDEN_FACTOR": c["WIDEN_FACTOR"], "GAU": dict(c["GAU"]), **kw}


def tiny_model(official, num_joints=None, codec=None, **spec):
    return build_topdown_model("topdown_cspnext", tiny_spec(official, **spec),
                               num_joints or official["config"]["num_joints"], codec=codec or tiny_codec(official))


@pytest.fixture(scope="module")
def loaded(official):
    """The bupose model with the mmpose file loaded by the normal checkpoint path (a path, as tools/test.py)."""
    model = load_checkpoint(tiny_model(official), TINY).eval()
    return model


# --- exactness against mmpose -------------------------------------------------------------------------------------
def test_mmpose_weights_load_unchanged_and_give_mmpose_vectors(official, loaded):
    sd = loaded.state_dict()
    assert set(sd) == set(official["state_dict"])  # mmpose's names, no renaming
    assert all(torch.equal(sd[k], v) for k, v in official["state_dict"].items())
    with torch.no_grad():
        out = loaded(official["inputs"].float())
    for name in ("simcc_x", "simcc_y"):
        assert out[name].shape == official[name].shape
        diff = (out[name] - official[name]).abs().max().item()
        assert diff <= 1e-6, (name, diff)  # measured 0.0 (same operations in the same order)


def test_flip_test_and_decoding_equal_mmpose_predict(official, loaded):
    """bupose's flip (mirrored crops, flip_back_vectors in the top-down decoder) and SimCCLabel decoding give what
    mmpose's RTMCCHead.predict(test_cfg=dict(flip_test=True)) gave."""
    codec = tiny_codec(official)
    k = official["config"]["num_joints"]
    decoder = TopDownDecoder(flip_index=official["config"]["flip_indices"], sigmas=[0.05] * k,
                             input_size=codec.input_size, heatmap_size=(24, 32), codec=codec)
    x = official["inputs"].float()
    with torch.no_grad():
        outputs, flipped = loaded(x), loaded(decoder.flip_input(x))
    state = {"sum": None, "passes": 0}
    decoder.add_scale(state, outputs, flipped, None, 1.0)
    vx, vy = state["sum"]
    assert (vx - official["flip_simcc_x"]).abs().max().item() <= 1e-6
    assert (vy - official["flip_simcc_y"]).abs().max().item() <= 1e-6
    keypoints, scores = codec.decode_batch((vx.numpy(), vy.numpy()))
    np.testing.assert_allclose(keypoints, official["keypoints"].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, official["keypoint_scores"].numpy(), atol=1e-6, rtol=0)
    fx, fy = flip.flip_back_vectors(flipped["simcc_x"], flipped["simcc_y"], official["config"]["flip_indices"])
    assert torch.equal((outputs["simcc_x"] + fx) * 0.5, vx) and torch.equal((outputs["simcc_y"] + fy) * 0.5, vy)


def test_rtmpose_loss_equals_mmpose(official, loaded):
    codec = tiny_codec(official)
    enc = codec.encode(official["label_keypoints"].numpy(), official["label_visible"].numpy())
    np.testing.assert_array_equal(enc["keypoint_weights"], official["keypoint_weights"].numpy())
    labels = (torch.from_numpy(enc["keypoint_x_labels"]), torch.from_numpy(enc["keypoint_y_labels"]))
    loss = KLDiscretLoss(use_target_weight=True, beta=LOSS_BETA, label_softmax=LOSS_LABEL_SOFTMAX)(
        (official["simcc_x"], official["simcc_y"]), labels, torch.from_numpy(enc["keypoint_weights"]))
    assert loss.item() == pytest.approx(official["loss"].item(), rel=1e-6)


# --- full-size layouts ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["t", "s", "m", "l"])
def test_full_size_models_have_mmpose_keys_shapes_and_parameter_counts(arch):
    want = json.loads(KEYS.read_text())["models"][arch]
    codec = SimCCLabel(input_size=want["input_size"], sigma=(4.9, 5.66), normalize=False)
    with torch.device("meta"):
        model = build_topdown_model("topdown_cspnext", {"ARCH": arch}, want["num_joints"], codec=codec)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == want["keys"]
    assert sum(p.numel() for p in model.parameters()) == want["num_params"]
    if arch == "m":
        assert want["num_params"] == 13_587_611  # mmpose's zoo: 13.59 M
        assert model.backbone.out_channels == 768 and model.head.in_featuremap_size == (6, 8)


# --- checkpoints: refusals and variants ------------------------------------------------------------------------------
def test_mmpose_extras_are_dropped_and_bupose_checkpoints_load(official, tmp_path):
    model = tiny_model(official)
    sd = dict(official["state_dict"])
    extra = {**sd, "data_preprocessor.mean": torch.zeros(3, 1, 1), "ema_backbone_stem_0_conv_weight": torch.zeros(1)}
    assert set(model.convert_checkpoint({"meta": {}, "state_dict": extra})) == set(sd)
    path = tmp_path / "bupose.pth"
    torch.save({"model": sd, "method": "topdown_cspnext", "epoch": 3}, path)
    load_checkpoint(model, path)
    torch.save({"model": sd, "method": "topdown_hrnet"}, path)
    with pytest.raises(CheckpointError, match="'topdown_hrnet' checkpoint; the model is 'topdown_cspnext'"):
        load_checkpoint(model, path)


def test_other_sizes_joints_and_inputs_are_refused_saying_what_differs(official):
    codec = SimCCLabel(input_size=(192, 256), sigma=(4.9, 5.66), normalize=False)
    with torch.device("meta"):
        small = build_topdown_model("topdown_cspnext", {"ARCH": "s"}, 17, codec=codec)
        medium = build_topdown_model("topdown_cspnext", {"ARCH": "m"}, 17, codec=codec)
    with pytest.raises(CheckpointError, match="backbone is CSPNeXt-s in the checkpoint, the model is CSPNeXt-m"):
        medium.convert_checkpoint({"state_dict": small.state_dict()})
    ckpt = {"meta": {}, "state_dict": official["state_dict"]}
    with pytest.raises(CheckpointError, match="final layer has 14 joints in the checkpoint, the model has 17"):
        tiny_model(official, num_joints=17).convert_checkpoint(ckpt)
    wide = tiny_model(official, codec=SimCCLabel(input_size=(192, 128), sigma=(4.9, 5.66)))
    with pytest.raises(CheckpointError, match="x classifier maps 32 features to 192 bins in the checkpoint"):
        wide.convert_checkpoint(ckpt)
    other_gau = tiny_model(official, GAU={"HIDDEN_DIMS": 32, "S": 8})
    with pytest.raises(CheckpointError, match="uv layer"):
        other_gau.convert_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match=r"CSPNeXt \(stem 6 channels, blocks \[1, 1, 1, 1\]\) in the checkp"):
        tiny_model(official, WIDEN_FACTOR=0.125).convert_checkpoint(ckpt)


def test_hrnet_files_are_refused_and_rtmpose_files_are_recognised(official, tmp_path):
    hrnet = build_topdown_model("topdown_hrnet", TINY_TOPDOWN_HRNET, 14)
    model = tiny_model(official)
    with pytest.raises(CheckpointError, match="a top-down HRNet-W4 checkpoint, the model is RTMPose CSPNeXt"):
        model.convert_checkpoint({"state_dict": hrnet.state_dict()})
    flat = {k.split(".", 1)[1]: v for k, v in hrnet.state_dict().items()}  # the official deep-high-resolution-net
    with pytest.raises(CheckpointError, match="HRNet-W4"):
        model.convert_checkpoint(flat)
    assert official_method_of(official["state_dict"]) == "topdown_cspnext"
    path = tmp_path / "rtmpose.pth"
    torch.save({"meta": {}, "state_dict": official["state_dict"]}, path)
    with pytest.raises(CheckpointError, match=r"official RTMPose \(CSPNeXt \+ RTMCC\) \(topdown_cspnext\) checkp"):
        load_checkpoint(hrnet, path)


def test_pretrained_backbone_takes_the_backbone_prefix(official, tmp_path):
    model = tiny_model(official)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    # an mmpose heatmap / ImageNet file: backbone.* plus a head of its own
    path = tmp_path / "cspnext.pth"
    backbone = {k: v for k, v in official["state_dict"].items() if k.startswith("backbone.")}
    torch.save({"state_dict": {**backbone, "head.fc.weight": torch.zeros(3, 102)}}, path)
    got = load_pretrained_cspnext(model, path)
    assert got["unused"] == [] and len(got["loaded"]) == len(backbone)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in backbone.items())
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head_before.items())
    load_pretrained_cspnext(model, {k[len("backbone."):]: v for k, v in backbone.items()})  # a plain backbone
    with pytest.raises(CheckpointError, match="backbone is CSPNeXt \\(stem 6 .* the model is CSPNeXt \\(stem 8"):
        load_pretrained_cspnext(tiny_model(official, WIDEN_FACTOR=0.125), path)


# --- MODEL.SPEC and the head's options --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,match", [
    ({"ARCH": "m", "WIDEN_FACTR": 0.75}, "WIDEN_FACTR is not a field of topdown_cspnext; did you mean WIDEN_FACTOR"),
    ({"DEEPEN_FACTOR": 0.33}, "WIDEN_FACTOR is missing"),
    ({}, "DEEPEN_FACTOR is missing"),
    ({"ARCH": "mm"}, "ARCH must be one of .*did you mean 'm'"),
    ({"ARCH": "m", "WIDEN_FACTOR": 0.5}, "WIDEN_FACTOR 0.5 contradicts ARCH 'm'"),
    ({"ARCH": "t", "GAU": {"HIDEN_DIMS": 64}}, "GAU.HIDEN_DIMS is not a field .*did you mean HIDDEN_DIMS"),
    ({"ARCH": "t", "GAU": {"USE_REL_BIAS": True}}, "GAU.USE_REL_BIAS must be false"),
    ({"ARCH": "t", "GAU": {"POS_ENC": True}}, "GAU.POS_ENC must be false"),
    ({"ARCH": "t", "GAU": {"ACT_FN": "GELU"}}, "GAU.ACT_FN must be one of"),
    ({"ARCH": "t", "GAU": {"DROP_PATH": 1.0}}, "GAU.DROP_PATH must be a number in"),
    ({"ARCH": "t", "FINAL_LAYER_KERNEL_SIZE": 6}, "FINAL_LAYER_KERNEL_SIZE must be a positive odd integer"),
    ({"ARCH": "t", "CHANNEL_ATTENTION": "yes"}, "CHANNEL_ATTENTION must be true or false"),
    ({"ARCH": "t", "INIT": "xavier"}, "INIT must be one of"),
    ({"ARCH": "t", "PRETRAINED_LAYERS": "stem"}, "PRETRAINED_LAYERS must be a list"),
    ({"DEEPEN_FACTOR": 0.33, "WIDEN_FACTOR": -1}, "WIDEN_FACTOR must be a positive number"),
])
def test_bad_spec_fields_are_config_errors_naming_them(spec, match):
    codec = SimCCLabel(input_size=(96, 128), sigma=(2.45, 2.83), normalize=False)
    with torch.device("meta"), pytest.raises(ConfigError, match=match):
        build_topdown_model("topdown_cspnext", spec, 14, codec=codec)


def test_a_simcc_codec_is_required():
    with pytest.raises(ConfigError, match="needs a SimCC codec"):
        build_topdown_model("topdown_cspnext", {"ARCH": "t"}, 17, codec=MSRAHeatmap(input_size=(192, 256),
                                                                                      heatmap_size=(48, 64), sigma=2))
    with pytest.raises(ConfigError, match="needs a SimCC codec"):
        build_topdown_model("topdown_cspnext", {"ARCH": "t"}, 17)


def test_gau_options_outside_rtmpose_are_refused_and_drop_path_trains():
    for kw in ({"use_rel_bias": True}, {"pos_enc": True}, {"attn_type": "cross-attn"}):
        with pytest.raises(ValueError, match="not supported"):
            RTMCCBlock(5, 16, 16, s=8, **kw)
    torch.manual_seed(0)
    block = RTMCCBlock(5, 16, 16, s=8, drop_path=0.5, dropout_rate=0.1)
    x = torch.randn(64, 5, 16)
    kept = (block.train()(x) - block.res_scale(x)).abs().flatten(1).amax(1) > 0
    assert 0 < kept.sum() < 64  # whole samples dropped, the others kept
    assert torch.equal(block.eval()(x), block.eval()(x))
    head = RTMCCHead(in_channels=8, out_channels=3, input_size=(64, 64), in_featuremap_size=(2, 2), hidden_dims=16,
                     s=8)
    with pytest.raises(ValueError, match="expected"):
        head(torch.randn(1, 8, 3, 2))


# --- the method ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rtmpose_yaml(synthetic_root):
    path = synthetic_root / "rtmpose_tiny_test.yaml"
    path.write_text(tiny_synthetic_header(synthetic_root, "topdown_rtmpose_tiny_256x192.yaml") + """\
TRAIN:
  END_EPOCH: 1
  IMAGES_PER_GPU: 4
""", encoding="utf-8")
    return path


def test_the_method_trains_one_step(rtmpose_yaml):
    torch.manual_seed(0)
    method = build_method(load_config(rtmpose_yaml))
    assert isinstance(method, TopDownCSPNeXtMethod) and method_class("topdown_cspnext") is TopDownCSPNeXtMethod
    assert method.codec.sigma.tolist() == [4.9, 5.66] and not method.codec.normalize and method.decoder().simcc
    loss_fn = method.loss_module()
    assert loss_fn.criterion.beta == 10.0 and loss_fn.criterion.label_softmax
    model = method.build_model().train()
    assert isinstance(model, TopDownCSPNeXt) and model.num_joints == 14
    data = method.train_dataset()
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in data[0]}
    assert batch["image"].shape == (4, 3, 256, 192) and batch["keypoint_x_labels"].shape == (4, 14, 384)
    out = loss_fn(model(batch["image"]), batch)
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.head.cls_x.weight.grad.abs().sum() > 0 and model.backbone.stem[0].conv.weight.grad.abs().sum() > 0


def test_the_method_refuses_a_heatmap_codec(rtmpose_yaml):
    cfg = load_config(rtmpose_yaml)
    cfg.MODEL.CODEC = {"type": "MSRAHeatmap", "sigma": 2.0}
    with pytest.raises(ConfigError, match="needs MODEL.CODEC"):
        TopDownCSPNeXtMethod(cfg)


def test_the_tiny_rtmpose_overfits_a_few_crops(rtmpose_yaml):
    """40 AdamW steps on 8 fixed crops: RTMPose's loss (beta 10, label soft-max) falls to under a third."""
    torch.manual_seed(0)
    method = build_method(load_config(rtmpose_yaml, ["DATASET.SCALE_FACTOR", "0", "DATASET.ROT_FACTOR", "0",
                                                     "DATASET.FLIP", "0", "DATASET.PROB_HALF_BODY", "0"]))
    data = method.train_dataset()
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in data[0]}
    model, loss_fn = method.build_model().train(), method.loss_module()
    losses = optimise(model, loss_fn, batch, torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0),
                      steps=40)
    assert losses[-1] < losses[0] / 3, losses[::5]
