"""The DEKR network against the official implementation (github.com/HRNet/DEKR) and official checkpoints.

Fixtures (made with the official code, outside this repository; the generating script is not part of bupose):

``fixtures/dekr_tiny_official.pt``
    The official ``PoseHigherResolutionNet`` (lib/models/hrnet_dekr.py at the DEKR repository's HEAD, whose
    adaptive blocks use torchvision's DeformConv2d) built with the tiny MODEL.SPEC stored under ``"spec"``
    (HRNet channels 4/8/16/32, one block per branch, NUM_MODULES [1, 2, 1]; heads as the official W32 files but
    8 heatmap channels) and NUM_JOINTS 14, after ``torch.manual_seed(0)``. To make the comparison demanding, the
    weights were then changed from the official initialisation: the adaptive blocks' transform and translation
    convs got random biases (N(0, 0.3) and N(0, 2)) so that about 9% of the sampling points fall fully and 6% partly
    outside the 32x32 map; BatchNorm statistics were taken from a forward pass in train mode on random images and
    the affine parameters randomised; the last convs of both heads were scaled by 0.1 (outputs of order 1). All
    float values were rounded to float16 and are stored as float16 (to keep the file small; converting back to
    float32 is exact). The model then ran in eval mode, in float32, on ``"input"`` (1x3x128x128, randn rounded to
    float16); ``"heatmap"`` (1, 15, 32, 32) and ``"offset"`` (1, 28, 32, 32) are its float32 outputs. (The official
    model's own float32 rounding error, measured against a float64 run, is about 9e-6 on these outputs.)

``fixtures/dekr_w32_official_keys.json``
    ``{key: shape}`` of the official model's state_dict for the MODEL.SPEC of the official
    w32_4x_reg03_bs10_512_adam_lr1e-3_crowdpose_x300.yaml with NUM_JOINTS 14.
"""
import copy
import json
from pathlib import Path

import pytest
import torch
import torchvision

from bupose.config import load_config
from bupose.errors import CheckpointError, ConfigError
from bupose.methods.dekr import DEKR, build_dekr, load_official, looks_official, official_to_bupose

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def tiny():
    return torch.load(FIXTURES / "dekr_tiny_official.pt", weights_only=True)


def _tiny_spec(channels=(4, 8, 16, 32)):
    c = list(channels)
    return {"FINAL_CONV_KERNEL": 1, "PRETRAINED_LAYERS": ["*"],
            "STAGES": {"NUM_STAGES": 3, "NUM_MODULES": [1, 1, 1], "NUM_BRANCHES": [2, 3, 4],
                       "BLOCK": ["BASIC"] * 3, "NUM_BLOCKS": [[1, 1], [1, 1, 1], [1, 1, 1, 1]],
                       "NUM_CHANNELS": [c[:2], c[:3], c], "FUSE_METHOD": ["SUM"] * 3},
            "HEAD_HEATMAP": {"BLOCK": "BASIC", "NUM_BLOCKS": 1, "NUM_CHANNELS": 8, "DILATION_RATE": 1},
            "HEAD_OFFSET": {"BLOCK": "ADAPTIVE", "NUM_BLOCKS": 2, "NUM_CHANNELS_PERKPT": 15, "DILATION_RATE": 1}}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("impl", ["grid_sample", "deform_conv2d"])
def test_matches_official_model(tiny, impl, fused):
    model = build_dekr(tiny["spec"], tiny["num_joints"], adaptive_impl=impl)
    model.load_state_dict(official_to_bupose(tiny["state_dict"], model))
    model.eval().set_fused_offset_head(fused)
    with torch.no_grad():
        out = model(tiny["input"].float())
    assert (out["heatmap"] - tiny["heatmap"]).abs().max() <= 1e-4
    assert (out["offset"] - tiny["offset"]).abs().max() <= 1e-4


def test_wrapped_and_dataparallel_checkpoints_load(tiny, tmp_path):
    wrapped = {"epoch": 3, "state_dict": {"module." + k: v for k, v in tiny["state_dict"].items()}}
    assert looks_official(wrapped) and looks_official(tiny["state_dict"])
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped, path)
    model = load_official(build_dekr(tiny["spec"], 14), path).eval()
    with torch.no_grad():
        assert (model(tiny["input"].float())["offset"] - tiny["offset"]).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["crowdpose/dekr_w32_512.yaml", "coco/dekr_w32_512.yaml"])
def test_w32_keys_equal_official(name):
    official = json.loads((FIXTURES / "dekr_w32_official_keys.json").read_text())["shapes"]
    cfg = load_config(REPO / "experiments" / name)
    assert cfg.MODEL.NAME == "hrnet_dekr"
    k = cfg.DATASET.NUM_JOINTS
    sd = build_dekr(cfg.MODEL.SPEC, k).state_dict()
    assert set(sd) == {key for key in official if not key.startswith("offset_")} | {
        key.replace(".0.", f".{j}.", 1) if key.startswith("offset_") else key
        for key in official if key.startswith(("offset_feature_layers.0.", "offset_final_layer.0."))
        for j in range(k)}
    if k == 14:
        assert set(sd) == set(official)
        assert {key: list(v.shape) for key, v in sd.items()} == official


def test_w48_configs_build():
    cfg = load_config(REPO / "experiments/crowdpose/dekr_w48_640.yaml")
    model = build_dekr(cfg.MODEL.SPEC, cfg.DATASET.NUM_JOINTS)
    assert model.out_channels == 48 + 96 + 192 + 384
    assert model.head_heatmap[1].weight.shape == (15, 48, 1, 1)


@pytest.mark.parametrize("k", [14, 17])
@pytest.mark.parametrize("kernel", [1, 3])
def test_output_shapes(k, kernel):
    spec = dict(_tiny_spec(), FINAL_CONV_KERNEL=kernel)
    model = build_dekr(spec, k).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 80))
    assert out["heatmap"].shape == (2, k + 1, 24, 20)
    assert out["offset"].shape == (2, 2 * k, 24, 20)


def test_implementations_agree_on_the_whole_model(tiny):
    model = load_official(build_dekr(tiny["spec"], 14), tiny["state_dict"]).eval()
    with torch.no_grad():
        a = model(tiny["input"].float())
        model.set_adaptive_impl("deform_conv2d")
        assert model.adaptive_impl == "deform_conv2d"
        b = model(tiny["input"].float())
    assert (a["offset"] - b["offset"]).abs().max() <= 1e-4


def test_official_initialisation():
    model = DEKR(stages=_tiny_spec()["STAGES"], num_joints=3, heatmap_channels=8)
    assert model.offset_feature_layers[0][0].transform_matrix_conv.weight.abs().sum() == 0
    assert model.offset_feature_layers[2][1].translation_conv.bias.abs().sum() == 0
    assert model.conv1.weight.std() < 0.01


def test_kaiming_initialisation_for_training_from_scratch():
    torch.manual_seed(0)
    model = DEKR.from_spec({**_tiny_spec(), "INIT": "kaiming"}, num_joints=3)
    w = model.conv2.weight
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert abs(float(w.std()) / (2.0 / fan_out) ** 0.5 - 1) < 0.2  # He-normal, fan-out
    assert float(model.conv1.weight.std()) > 0.05
    # the heads' last convolutions stay small and the adaptive convolutions start at their centre
    assert float(model.head_heatmap[-1].weight.std()) < 0.01
    assert float(model.offset_final_layer[2].weight.std()) < 0.01
    assert model.offset_feature_layers[0][0].transform_matrix_conv.weight.abs().sum() == 0
    with pytest.raises(ValueError, match="init must be"):
        DEKR(stages=_tiny_spec()["STAGES"], num_joints=3, init="xavier")


def test_offset_scale_multiplies_the_offsets_and_keeps_the_parameters():
    torch.manual_seed(0)
    plain = DEKR.from_spec({**_tiny_spec(), "INIT": "kaiming"}, num_joints=3)
    scaled = DEKR.from_spec({**_tiny_spec(), "INIT": "kaiming", "OFFSET_SCALE": 5.0}, num_joints=3)
    assert plain.offset_scale == 1.0 and scaled.offset_scale == 5.0
    scaled.load_state_dict(plain.state_dict())  # same parameter names and shapes: official checkpoints still load
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain.eval()(x), scaled.eval()(x)
    assert torch.equal(a["heatmap"], b["heatmap"])
    torch.testing.assert_close(b["offset"], 5.0 * a["offset"], rtol=1e-6, atol=1e-6)
    assert a["offset"].abs().max() > 0


def test_other_keypoint_count_is_a_clear_error(tiny):
    model = build_dekr(tiny["spec"], 17)
    with pytest.raises(CheckpointError, match="offset head has 14 joints in the checkpoint, the model has 17"):
        load_official(model, tiny["state_dict"])


def test_other_architecture_is_a_clear_error(tiny):
    resnet = torchvision.models.resnet18().state_dict()
    assert not looks_official(resnet)
    with pytest.raises(CheckpointError, match="not a DEKR"):
        official_to_bupose(resnet)
    wider = build_dekr(_tiny_spec((8, 16, 32, 64)), 14)  # same keys as the tiny spec, other widths
    with pytest.raises(CheckpointError, match="backbone is HRNet-W4 in the checkpoint, the model is HRNet-W8"):
        load_official(wider, build_dekr(_tiny_spec(), 14).state_dict())
    other_heads = build_dekr(dict(_tiny_spec(), HEAD_HEATMAP=dict(_tiny_spec()["HEAD_HEATMAP"], NUM_CHANNELS=16)), 14)
    with pytest.raises(CheckpointError, match=r"shape mismatches: transition_heatmap.0.weight: checkpoint \(8, 60"):
        load_official(other_heads, build_dekr(_tiny_spec(), 14).state_dict())
    deeper = build_dekr(dict(tiny["spec"], HEAD_OFFSET=dict(tiny["spec"]["HEAD_OFFSET"], NUM_BLOCKS=3)), 14)
    with pytest.raises(CheckpointError, match="missing keys: offset_feature_layers.0.2"):
        load_official(deeper, tiny["state_dict"])
    with pytest.raises(CheckpointError, match="dict of tensors"):
        official_to_bupose([1, 2, 3])


def test_spec_errors_name_the_field():
    spec = _tiny_spec()
    with pytest.raises(ConfigError, match="missing fields \\['HEAD_OFFSET'\\]"):
        build_dekr({k: v for k, v in spec.items() if k != "HEAD_OFFSET"}, 14)
    with pytest.raises(ConfigError, match="HEAD_HEATMAP.BLOCK must be one of"):
        build_dekr(dict(spec, HEAD_HEATMAP=dict(spec["HEAD_HEATMAP"], BLOCK="FANCY")), 14)
    with pytest.raises(ValueError, match="adaptive_impl"):
        build_dekr(spec, 14, adaptive_impl="cuda")


def _fused_and_loop(tiny, impl):
    fused = load_official(build_dekr(tiny["spec"], 14, adaptive_impl=impl), tiny["state_dict"])
    assert fused.fused_offset_head is None and fused.offset_head_is_fused == (impl == "grid_sample")  # default
    fused.set_fused_offset_head(True)
    loop = copy.deepcopy(fused).set_fused_offset_head(False)
    assert fused.offset_head_is_fused and not loop.offset_head_is_fused
    return fused, loop


@pytest.mark.parametrize("impl", ["grid_sample", "deform_conv2d"])
@pytest.mark.parametrize("train", [False, True])
def test_fused_offset_head_equals_the_loop(tiny, impl, train):
    fused, loop = _fused_and_loop(tiny, impl)
    x = torch.cat([tiny["input"].float(), torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        a, b = fused.train(train)(x), loop.train(train)(x)
    assert (a["heatmap"] - b["heatmap"]).abs().max() == 0
    assert b["offset"].abs().max() > 0.1 and (a["offset"] - b["offset"]).abs().max() <= 1e-5


@pytest.mark.parametrize("impl", ["grid_sample", "deform_conv2d"])
def test_fused_training_step_equals_the_loop(tiny, impl):
    """Same gradients, and after an optimiser step the same parameters and batch-norm statistics (each branch's own
    buffers updated)."""
    models = _fused_and_loop(tiny, impl)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 96, 128, generator=g)
    targets = [torch.randn(2, 15, 24, 32, generator=g), torch.randn(2, 28, 24, 32, generator=g)]
    for model in models:
        opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        out = model.train()(x)
        loss = (out["heatmap"] - targets[0]).square().mean() + (out["offset"] - targets[1]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fused, loop = models
    for (name, p), q in zip(fused.named_parameters(), loop.parameters()):
        assert q.grad is not None, name
        err = (p.grad - q.grad).abs().max()
        assert err <= 1e-5 and err <= 1e-4 * q.grad.abs().max(), name
    assert loop.offset_feature_layers[3][1].adapt_conv.weight.grad.abs().max() > 1e-4  # the test can fail
    before = load_official(build_dekr(tiny["spec"], 14), tiny["state_dict"]).state_dict()
    for (name, s), t in zip(fused.state_dict().items(), loop.state_dict().values()):
        assert (s.double() - t.double()).abs().max() <= 1e-5, name
        if name.startswith("offset_feature_layers.") and name.endswith(("running_mean", "num_batches_tracked")):
            assert not torch.equal(s, before[name]), name  # every branch's statistics moved


def test_offset_head_falls_back_to_the_loop_when_it_cannot_fuse(tiny):
    model = _fused_and_loop(tiny, "grid_sample")[0].eval()
    seen = []
    handle = model.offset_feature_layers[5][0].bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert not model.offset_head_is_fused
    with torch.no_grad():
        out = model(tiny["input"].float())
    assert seen == [(1, 15, 32, 32)]  # the hook ran: the branches ran one by one
    handle.remove()
    assert model.offset_head_is_fused
    model.offset_final_layer[0].train()  # mixed train / eval: not fusable either
    assert not model.offset_head_is_fused
    with torch.no_grad():
        assert (model(tiny["input"].float())["offset"] - out["offset"]).abs().max() == 0
    model.set_adaptive_impl("deform_conv2d").eval().set_fused_offset_head(None)
    assert not model.offset_head_is_fused and model.set_fused_offset_head(True).offset_head_is_fused
    assert (out["offset"] - tiny["offset"]).abs().max() <= 1e-4
