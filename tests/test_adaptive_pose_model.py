"""The AdaptivePose network against the official implementation (github.com/buptxyb666/AdaptivePose, HRNet model).

Fixtures (made with the official code, outside this repository; the generating script is not part of bupose):

``fixtures/adaptive_pose_tiny_official.pt``
    The official master-branch ``PoseHighResolutionNet`` (src/lib/models/networks/hrnet.py with
    src/lib/models/predictor.py) with heads ``{hm: 1, hps: 34, hm_hp: 17}`` (COCO training), built with the HRNet
    stages stored under ``"spec"`` (channels 4/8/16/32, one block and one module per stage). Sizes the official code
    hard-codes were patched in the scratch copy: ``head_conv`` 256 -> 16, the part features ``inp_dim`` 64 -> 8, the
    stem's ``layer1`` 4 -> 1 Bottleneck. Its two compiled ops were replaced: DCNv2's ``_ext.dcn_v2_forward`` by
    ``torchvision.ops.deform_conv2d`` (checked separately to equal the official DCNv2 CPU im2col kernel, compiled
    from the repository, bit for bit) and flownet2's ``resample2d_cuda.forward`` by a line-by-line PyTorch
    transcription of its CUDA kernel. Weights: random (He-normal convs, random BN affine, BN statistics from a
    train-mode pass on random images), then the adaptive-point, DCN offset/mask, keypoint and heatmap convs rescaled
    so that the adaptive points are fractional (99.8%) and 18% of them fall outside the 32x24 map. Every float
    tensor was rounded to ``q * 2**-e`` with int8 ``q`` (stored packed: ``keys``, ``shapes``, ``exponents``,
    ``int8``; integer buffers in ``int64``), so the float32 values are exact.

``fixtures/adaptive_pose_tiny_official_io.pt``
    The input (1x3x128x96; ``input_int8 * 2**-input_exponent``) and the official model's eval-mode outputs
    ``hm`` / ``hps`` / ``ap`` / ``hm_hp`` (stored as ``center``, ``offset``, ``part_offset``, ``aux_heatmap``),
    computed in float64 and rounded to float32. (The official model's own float32 error is up to 4e-5 on them.)

``fixtures/adaptive_pose_w32_coco_official_keys.json``
    ``{key: shape}`` of the official model's state_dict for hrnet32.yaml (HRNet-W32) with the COCO training heads.

The DLA-34 model (``MODEL.NAME: dla_adaptive_pose``) against the official ``--arch dla_34`` model (its fixtures are
made by ``fixtures/adaptive_pose_dla_make_fixtures.py``, which imports the official code from a scratch copy at
generation time and documents every step):

``fixtures/adaptive_pose_dla34_coco_official_keys.json``
    ``{key: shape}`` of the official master-branch DLA-34 model with the COCO training heads (with the ImageNet
    classifier ``base.fc`` it keeps).

``fixtures/adaptive_pose_dla34_tiny_official.pt``
    The official ``new_ops``-branch model (pure PyTorch: torchvision DCN, ``grid_sample`` warp with
    ``align_corners=False``) with a small DLA (DLA-34's levels, channels 4/4/4/8/8/16), ``head_conv`` 16 and part
    width 8; random weights (float16 values), its state_dict (new_ops key names), an input and its float64 outputs.
"""
import json
import math
from pathlib import Path

import pytest
import torch

from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.errors import CheckpointError, ConfigError
from bupose.methods.adaptive_pose.convert import load_official, looks_official, official_to_bupose
from bupose.methods.adaptive_pose.model import (PARTS, AdaptivePose, BodyPart, DLAAdaptivePose, body_parts,
                                                build_adaptive_pose, build_dla_adaptive_pose, warp)
from bupose.methods.dekr import build_dekr

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("center", "offset", "part_offset", "aux_heatmap")


@pytest.fixture(scope="module")
def tiny():
    f = torch.load(FIXTURES / "adaptive_pose_tiny_official.pt", weights_only=True)
    io = torch.load(FIXTURES / "adaptive_pose_tiny_official_io.pt", weights_only=True)
    sd, i8, i64 = {}, 0, 0
    for key, shape, e in zip(f["keys"], f["shapes"], f["exponents"]):
        n = math.prod(shape)
        if e is None:
            sd[key], i64 = f["int64"][i64:i64 + n].view(shape), i64 + n
        else:
            sd[key], i8 = (f["int8"][i8:i8 + n].float() * 2.0 ** -e).view(shape), i8 + n
    x = io["input_int8"].float() * 2.0 ** -io["input_exponent"]
    return {"spec": f["spec"], "state_dict": sd, "input": x, **{k: io[k] for k in OUTPUTS}}


def _stages(channels=(4, 8, 16, 32), modules=(1, 1, 1), blocks=1):
    c = list(channels)
    return {"NUM_STAGES": 3, "NUM_MODULES": list(modules), "NUM_BRANCHES": [2, 3, 4], "BLOCK": ["BASIC"] * 3,
            "NUM_BLOCKS": [[blocks] * 2, [blocks] * 3, [blocks] * 4], "NUM_CHANNELS": [c[:2], c[:3], c],
            "FUSE_METHOD": ["SUM"] * 3}


def _tiny_spec(**extra):
    return {"STAGES": _stages(), "STEM_BLOCKS": 1, "HEAD_CHANNELS": 16, "PART_CHANNELS": 8, **extra}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_matches_official_model(tiny, dtype, tol):
    model = build_adaptive_pose(tiny["spec"], COCO17)
    model.load_state_dict(official_to_bupose(tiny["state_dict"], model))  # strict
    model.eval().to(dtype)
    with torch.no_grad():
        out = model(tiny["input"].to(dtype), with_aux=True)
    assert set(out) == set(OUTPUTS)
    for name in OUTPUTS:
        assert out[name].shape == tiny[name].shape, name
        assert (out[name] - tiny[name]).abs().max() <= tol, name
    # the fixture exercises the border clamp: adaptive points outside the 32x24 map
    px = torch.arange(24) + tiny["part_offset"][:, 0::2]
    assert ((px < 0) | (px > 23)).float().mean() > 0.05


def test_checkpoint_wrappers_and_new_ops_names(tiny, tmp_path):
    sd = tiny["state_dict"]
    model = build_adaptive_pose(tiny["spec"], "coco")
    centernet = {"epoch": 140, "state_dict": {"module." + k: v for k, v in sd.items()}}
    new_ops = {k.replace(".conv_offset_mask.", ".param_generator."): v for k, v in sd.items()}
    assert any(".param_generator." in k for k in new_ops)
    path = tmp_path / "model_last.pth"
    torch.save(centernet, path)
    for ckpt in (centernet, path, new_ops, {"model": model.state_dict()}):
        converted = official_to_bupose(ckpt, model)
        assert looks_official(ckpt)
        assert set(converted) == set(model.state_dict())
    load_official(model, new_ops)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_model_without_aux_head(tiny):
    model = build_adaptive_pose(_tiny_spec(AUX_HEATMAP=False), COCO17).eval()
    assert not any(k.startswith("hm_hp.") for k in model.state_dict())
    load_official(model, tiny["state_dict"])  # the training-only head is dropped
    with torch.no_grad():
        out = model(tiny["input"], with_aux=True)
    assert set(out) == {"center", "offset", "part_offset"}
    assert (out["offset"] - tiny["offset"]).abs().max() <= 1e-4
    with_aux = build_adaptive_pose(tiny["spec"], COCO17)
    with pytest.raises(CheckpointError, match=r"no auxiliary keypoint-heatmap head \(hm_hp"):
        load_official(with_aux, model.state_dict())


@pytest.mark.parametrize("spec, k, p", [(COCO17, 17, 7), (CROWDPOSE14, 14, 7)])
def test_output_shapes(spec, k, p):
    model = build_adaptive_pose(_tiny_spec(), spec)
    assert model.num_joints == k and model.num_parts == p
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        train = model.train()(x)
        evaluation = model.eval()(x)
    assert {n: tuple(t.shape) for n, t in train.items()} == {
        "center": (2, 1, 24, 20), "offset": (2, 2 * k, 24, 20), "part_offset": (2, 2 * p, 24, 20),
        "aux_heatmap": (2, k, 24, 20)}
    assert set(evaluation) == {"center", "offset", "part_offset"}


def test_official_part_tables():
    coco = body_parts(COCO17)
    assert [name for name, _ in coco] == ["face", "shoulder", "left_elbow_wrist", "right_elbow_wrist", "hip",
                                          "left_knee_ankle", "right_knee_ankle"]
    assert [kps for _, kps in coco] == [(0, 1, 2, 3, 4), (5, 6), (7, 9), (8, 10), (11, 12), (13, 15), (14, 16)]
    crowd = body_parts(CROWDPOSE14)
    assert crowd[-1] == ("head", (12, 13)) and crowd[0] == ("shoulder", (0, 1)) and crowd[2] == (
        "right_elbow_wrist", (3, 5))
    assert body_parts("ochuman") == coco


def test_offsets_are_the_part_point_plus_the_second_hop_in_keypoint_order():
    """With constant adaptive points (searcher bias) and constant second hops (regressor biases), every cell's
    offset of keypoint k is its part's point plus that keypoint's hop, in the keypoint spec's channel order."""
    model = build_adaptive_pose(_tiny_spec(), CROWDPOSE14).eval()
    s = model.sampler
    points = torch.arange(2 * model.num_parts, dtype=torch.float32) * 0.25 - 1.0
    with torch.no_grad():
        s.searcher.bias.copy_(points)
        for conv in s.pred_kps_list:
            conv.weight.zero_()
            conv.bias.copy_(torch.arange(conv.bias.numel()) * 10.0 + 100.0)
        out = model(torch.randn(1, 3, 64, 64))
    assert torch.allclose(out["part_offset"][0, :, 3, 5], points)
    parts = body_parts(CROWDPOSE14)
    for p, (_, kps) in enumerate(parts):
        for j, k in enumerate(kps):
            for c in (0, 1):
                expected = points[2 * p + c] + 100.0 + 10.0 * (2 * j + c)
                assert torch.allclose(out["offset"][0, 2 * k + c], torch.full((16, 16), expected.item())), (k, c)


def test_warp_sampling_convention():
    h, w = 5, 7
    feat = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w) * torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    zero = torch.zeros(1, 2, h, w, dtype=torch.float64)
    close = lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-12)  # noqa: E731 - float64 normalisation round-off
    assert close(warp(feat, zero), feat)
    d = zero.clone()
    d[:, 0], d[:, 1] = 2.0, 1.0  # integer (dx, dy): the pixel (x + 2, y + 1), clamped to the border
    out = warp(feat, d)
    assert close(out[0, 0, 1, 3], feat[0, 0, 2, 5]) and close(out[0, 1, 0, 0], feat[0, 1, 1, 2])
    assert close(out[0, 0, 4, 6], feat[0, 0, 4, 6])  # (8, 5) clamps to (6, 4)
    d[:, 0], d[:, 1] = 0.25, -0.5  # bilinear between pixels
    out = warp(feat, d)
    assert torch.isclose(out[0, 0, 2, 3], 0.5 * 0.75 * (feat[0, 0, 1, 3] + feat[0, 0, 2, 3]) +
                         0.5 * 0.25 * (feat[0, 0, 1, 4] + feat[0, 0, 2, 4]))
    assert torch.isclose(out[0, 0, 0, 3], 0.75 * feat[0, 0, 0, 3] + 0.25 * feat[0, 0, 0, 4])  # y = -0.5 -> 0
    d[:, 0], d[:, 1] = -30.0, 30.0  # far outside: the nearest corner (x = 0, y = h - 1)
    assert close(warp(feat, d)[0, 0], feat[0, 0, h - 1, 0].expand(h, w))
    # the new_ops branch's grid_sample default (align_corners=False) samples at x W / (W - 1) - 1/2
    d[:, 0], d[:, 1] = 1.0, 0.0
    out = warp(feat, d, align_corners=False)
    x, y = (1 + 1.0) * w / (w - 1) - 0.5, 1 * h / (h - 1) - 0.5  # cell (i, j) = (1, 1): (1.83, 0.75)
    ax, ay = x - 1, y - 0
    expected = ((1 - ay) * ((1 - ax) * feat[0, 0, 0, 1] + ax * feat[0, 0, 0, 2]) +
                ay * ((1 - ax) * feat[0, 0, 1, 1] + ax * feat[0, 0, 1, 2]))
    assert close(out[0, 0, 1, 1], expected)


def test_w32_keys_equal_official():
    official = json.loads((FIXTURES / "adaptive_pose_w32_coco_official_keys.json").read_text())["shapes"]
    spec = {"STAGES": _stages((32, 64, 128, 256), modules=(1, 4, 3), blocks=4)}
    model = build_adaptive_pose(spec, COCO17)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == official
    assert model.out_channels == 32


def test_official_initialisation():
    model = AdaptivePose(stages=_stages(), parts=body_parts(COCO17), head_channels=16, part_channels=8,
                         stem_blocks=1).eval()
    s = model.sampler
    assert s.searcher.weight.abs().sum() == 0 and s.searcher.bias.abs().sum() == 0
    assert torch.all(s.pred_ct_hm.bias == -2.19) and torch.all(model.hm_hp[2].bias == -2.19)
    assert all(d.conv_offset_mask.weight.abs().sum() == 0 for d in s.feat_agg)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["part_offset"].abs().max() == 0  # the adaptive points start at the centre


def test_gradients_reach_the_adaptive_points():
    model = build_adaptive_pose(_tiny_spec(), COCO17).train()
    out = model(torch.randn(2, 3, 64, 64))
    (out["offset"].square().mean() + out["center"].mean() + out["aux_heatmap"].mean()).backward()
    assert model.sampler.searcher.weight.grad.abs().sum() > 0
    assert all(d.conv_offset_mask.weight.grad.abs().sum() > 0 for d in model.sampler.feat_agg)


def test_other_keypoint_layout_is_a_clear_error(tiny):
    model = build_adaptive_pose(tiny["spec"], CROWDPOSE14)
    with pytest.raises(CheckpointError, match=r"checkpoint has 17 keypoints in 7 parts \(5, 2, 2, 2, 2, 2, 2\), "
                                              r"the model has 14 in 7 parts \(2, 2, 2, 2, 2, 2, 2\)"):
        load_official(model, tiny["state_dict"])


def test_other_architectures_are_clear_errors(tiny):
    dekr = {"state_dict": build_dekr({"FINAL_CONV_KERNEL": 1, "STAGES": _stages(), "STEM_BLOCKS": 1,
                                      "HEAD_HEATMAP": {"BLOCK": "BASIC", "NUM_BLOCKS": 1, "NUM_CHANNELS": 8,
                                                       "DILATION_RATE": 1},
                                      "HEAD_OFFSET": {"BLOCK": "ADAPTIVE", "NUM_BLOCKS": 1,
                                                      "NUM_CHANNELS_PERKPT": 4, "DILATION_RATE": 1}},
                                     14).state_dict()}
    assert not looks_official(dekr)
    with pytest.raises(CheckpointError, match=r"not an AdaptivePose \(HRNet\) checkpoint: it lacks \['hm.0.weight'"):
        official_to_bupose(dekr)
    dla = {"base.base_layer.0.weight": torch.zeros(1), "sampler.searcher.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="DLA-34 checkpoint"):
        official_to_bupose(dla)
    wider = build_adaptive_pose(dict(tiny["spec"], STAGES=_stages((8, 16, 32, 64))), COCO17)
    with pytest.raises(CheckpointError, match="backbone is HRNet-W4 in the checkpoint, the model is HRNet-W8"):
        load_official(wider, tiny["state_dict"])
    other_head = build_adaptive_pose(dict(tiny["spec"], HEAD_CHANNELS=32), COCO17)
    with pytest.raises(CheckpointError, match=r"shape mismatches: hm.0.weight: checkpoint \(16, 4, 3, 3\), "
                                              r"model \(32, 4, 3, 3\)"):
        load_official(other_head, tiny["state_dict"])
    deeper = build_adaptive_pose(dict(tiny["spec"], STEM_BLOCKS=2), COCO17)
    with pytest.raises(CheckpointError, match="missing keys: layer1.1"):
        load_official(deeper, tiny["state_dict"])
    with pytest.raises(CheckpointError, match="dict of tensors"):
        official_to_bupose([1, 2, 3])


def test_spec_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"unknown fields \['HEAD_HEATMAP'\]"):
        build_adaptive_pose(_tiny_spec(HEAD_HEATMAP={}), COCO17)
    with pytest.raises(ConfigError, match=r"missing fields \['STAGES'\]"):
        build_adaptive_pose({"HEAD_CHANNELS": 16}, COCO17)
    with pytest.raises(ConfigError, match="HEAD_CHANNELS must be a positive integer"):
        build_adaptive_pose(_tiny_spec(HEAD_CHANNELS=0), COCO17)
    with pytest.raises(ConfigError, match="AUX_HEATMAP must be true or false"):
        build_adaptive_pose(_tiny_spec(AUX_HEATMAP="yes"), COCO17)


def test_custom_parts_are_checked():
    spec = _tiny_spec(PARTS=[[p.name, list(p.keypoints)] for p in PARTS["coco"][1:]])
    with pytest.raises(ConfigError, match=r"keypoints \['nose', 'left_eye'.*\] .* are in no AdaptivePose body part"):
        build_adaptive_pose(spec, COCO17)
    with pytest.raises(ConfigError, match="'neck' is not in the 'coco' layout"):
        body_parts(COCO17, [BodyPart("head", ("nose", "neck"))])
    with pytest.raises(ConfigError, match="in two AdaptivePose body parts"):
        body_parts(COCO17, PARTS["coco"] + (BodyPart("nose_again", ("nose",)),))
    merged = [["upper", [n for p in PARTS["coco"][:4] for n in p.keypoints]]] + [
        [p.name, list(p.keypoints)] for p in PARTS["coco"][4:]]
    model = build_adaptive_pose(_tiny_spec(PARTS=merged), COCO17)
    assert model.part_names == ("upper", "hip", "left_knee_ankle", "right_knee_ankle")
    assert model.sampler.pred_kps_list[0].weight.shape[0] == 2 * 11



# --- DLA-34 -------------------------------------------------------------------------------------------------------
DLA_TINY = {"LEVELS": [1, 1, 1, 2, 2, 1], "CHANNELS": [4, 4, 4, 8, 8, 16], "HEAD_CHANNELS": 16, "PART_CHANNELS": 8}


@pytest.fixture(scope="module")
def dla_tiny():
    f = torch.load(FIXTURES / "adaptive_pose_dla34_tiny_official.pt", weights_only=True)
    sd, i, j = {}, 0, 0
    for key in f["float_keys"]:
        n = math.prod(f["shapes"][key])
        sd[key], i = f["float16"][i:i + n].float().view(f["shapes"][key]), i + n
    for key in f["int_keys"]:
        n = math.prod(f["shapes"][key])
        sd[key], j = f["int64"][j:j + n].view(f["shapes"][key]), j + n
    spec = {"LEVELS": f["levels"], "CHANNELS": f["channels"], "HEAD_CHANNELS": f["head_channels"],
            "PART_CHANNELS": f["part_channels"], "WARP_ALIGN_CORNERS": False}  # the new_ops branch's warp
    assert {k: v for k, v in spec.items() if k != "WARP_ALIGN_CORNERS"} == DLA_TINY
    return {"spec": spec, "state_dict": sd, "input": f["input"].float(), "error32": f["official_float32_error"],
            **{k: f[k] for k in OUTPUTS}}


def _dla_official_keys() -> dict:
    return json.loads((FIXTURES / "adaptive_pose_dla34_coco_official_keys.json").read_text())["shapes"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dla_matches_official_model(dla_tiny, dtype):
    """The official new_ops DLA model's outputs, from its own state_dict (param_generator names): within the
    float32 rounding of the stored outputs in float64; in float32 within twice the official model's own float32
    error (about 2e-3 on offsets of up to 23 pixels: the random network amplifies the deformable sampling)."""
    model = build_dla_adaptive_pose(dla_tiny["spec"], COCO17)
    assert any(".param_generator." in k for k in dla_tiny["state_dict"])
    model.load_state_dict(official_to_bupose(dla_tiny["state_dict"], model))  # strict
    model.eval().to(dtype)
    with torch.no_grad():
        out = model(dla_tiny["input"].to(dtype), with_aux=True)
    assert set(out) == set(OUTPUTS)
    for name in OUTPUTS:
        assert out[name].shape == dla_tiny[name].shape, name
        tol = 2e-6 if dtype == torch.float64 else 2 * dla_tiny["error32"][name] + 1e-5
        assert (out[name] - dla_tiny[name]).abs().max() <= tol, name
    w = dla_tiny["part_offset"].shape[-1]  # the fixture exercises the border clamp
    px = torch.arange(w) + dla_tiny["part_offset"][:, 0::2]
    assert ((px < 0) | (px > w - 1)).float().mean() > 0.05


def test_dla34_keys_equal_official():
    """The full-size model's state_dict is the official one's, key by key, in order, shapes included, less the
    ImageNet classifier base.fc that the official model keeps; it runs (on a small input: over 50 GMACs at 512)."""
    official = _dla_official_keys()
    assert official["base.fc.weight"] == [1000, 512, 1, 1] and official["hm.2.weight"] == [256, 256, 3, 3]
    torch.manual_seed(0)
    model = build_dla_adaptive_pose({}, COCO17)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours.items()) == [(k, v) for k, v in official.items() if not k.startswith("base.fc.")]
    assert model.out_channels == 64 and model.backbone == "dla34"
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"center": (1, 1, 16, 24), "offset": (1, 34, 16, 24),
                                                           "part_offset": (1, 14, 16, 24)}


@pytest.mark.parametrize("size", [(512, 512), (384, 512), (512, 320)])
def test_dla_output_shapes(size):
    torch.manual_seed(0)
    model = build_dla_adaptive_pose(DLA_TINY, COCO17)
    h, w = size[0] // 4, size[1] // 4
    with torch.no_grad():
        train = model.train()(torch.randn(1, 3, *size))
        evaluation = model.eval()(torch.randn(1, 3, *size))
    assert {n: tuple(t.shape) for n, t in train.items()} == {
        "center": (1, 1, h, w), "offset": (1, 34, h, w), "part_offset": (1, 14, h, w), "aux_heatmap": (1, 17, h, w)}
    assert set(evaluation) == {"center", "offset", "part_offset"}
    with pytest.raises(ValueError, match="multiples of 32, got 80x96"):
        model(torch.randn(1, 3, 80, 96))


def test_dla_official_initialisation():
    torch.manual_seed(0)
    model = DLAAdaptivePose(parts=body_parts(CROWDPOSE14), levels=DLA_TINY["LEVELS"], channels=DLA_TINY["CHANNELS"],
                            head_channels=16, part_channels=8).eval()
    assert model.num_joints == 14 and model.num_parts == 7
    s = model.sampler
    assert s.searcher.weight.abs().sum() == 0 and s.searcher.bias.abs().sum() == 0
    assert torch.all(s.pred_ct_hm.bias == -2.19) and torch.all(model.hm_hp[4].bias == -2.19)
    assert model.hps[0].bias.abs().sum() == 0 and model.hps[2].bias.abs().sum() == 0
    dcns = [m for name, m in model.named_modules() if name.endswith(".conv") and hasattr(m, "conv_offset_mask")]
    assert len(dcns) == 2 * (3 + 2 + 1) + 2 * 2  # dla_up: 3 + 2 + 1 stages, ida_up: 2; proj and node each
    assert all(d.conv_offset_mask.weight.abs().sum() == 0 and d.conv_offset_mask.bias.abs().sum() == 0 for d in dcns)
    # the learnt up-sampling starts bilinear: x2 taps (1, 3, 3, 1) / 4, x4 taps (1, 3, 5, 7, 7, 5, 3, 1) / 8
    x2 = torch.tensor([1.0, 3, 3, 1]) / 4
    x4 = torch.tensor([1.0, 3, 5, 7, 7, 5, 3, 1]) / 8
    assert torch.allclose(model.dla_up.ida_0.up_1.weight, (x2[:, None] * x2).expand(8, 1, 4, 4))
    assert torch.allclose(model.ida_up.up_2.weight, (x4[:, None] * x4).expand(4, 1, 8, 8))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["part_offset"].abs().max() == 0  # the adaptive points start at the centre


def test_dla_gradients_reach_the_backbone_and_the_adaptive_points():
    torch.manual_seed(0)
    model = build_dla_adaptive_pose(DLA_TINY, COCO17).train()
    out = model(torch.randn(2, 3, 64, 64))
    (out["offset"].square().mean() + out["center"].mean() + out["aux_heatmap"].mean()).backward()
    for name in ("base.base_layer.0.weight", "base.level5.root.conv.weight", "dla_up.ida_2.up_3.weight",
                 "ida_up.proj_2.conv.weight", "sampler.searcher.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def _dla_method_model(tiny_spec: dict):
    """The tiny DLA model built by the method, as tools/test.py builds it (convert_checkpoint attached)."""
    from bupose.config import load_config
    from bupose.methods import build_method

    overrides = ["MODEL.SPEC", json.dumps(tiny_spec)]
    return build_method(load_config(REPO / "experiments" / "coco" / "adaptive_pose_dla34_512.yaml", overrides))


def test_official_dla_checkpoints_load_through_load_checkpoint(dla_tiny, tmp_path):
    """CenterNet's {'epoch', 'state_dict'} wrapper with DataParallel's module. prefix and the ImageNet classifier
    base.fc, with new_ops or master names, as a file or loaded, through bupose.load_checkpoint."""
    import bupose

    sd = dla_tiny["state_dict"]
    master = {k.replace(".param_generator.", ".conv_offset_mask."): v for k, v in sd.items()}
    fc = {"base.fc.weight": torch.zeros(1000, 16, 1, 1), "base.fc.bias": torch.zeros(1000)}
    centernet = {"epoch": 280, "state_dict": {"module." + k: v for k, v in {**sd, **fc}.items()}}
    path = tmp_path / "model_best.pth"
    torch.save(centernet, path)
    assert looks_official(path, "dla34") and looks_official(master, "dla34") and not looks_official(sd)
    model = _dla_method_model(dla_tiny["spec"]).build_model()
    assert model.method_name == "dla_adaptive_pose"
    for ckpt in (path, centernet, master, {"model": master}):
        for p in model.parameters():
            p.data.zero_()
        bupose.load_checkpoint(model, ckpt)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in master.items())
    with torch.no_grad():
        out = model.eval()(dla_tiny["input"])
    assert (out["offset"] - dla_tiny["offset"]).abs().max() <= 2 * dla_tiny["error32"]["offset"] + 1e-5
    # without the training-only head: hm_hp is dropped
    no_aux = _dla_method_model(dict(dla_tiny["spec"], AUX_HEATMAP=False)).build_model()
    bupose.load_checkpoint(no_aux, path)
    assert not any(k.startswith("hm_hp.") for k in no_aux.state_dict())


def test_other_backbone_checkpoints_are_refused(tiny, dla_tiny):
    import bupose

    dla = build_dla_adaptive_pose(dla_tiny["spec"], COCO17)
    with pytest.raises(CheckpointError, match=r"an AdaptivePose HRNet checkpoint, but the model is AdaptivePose on "
                                              r"DLA-34 \(MODEL.NAME hrnet_adaptive_pose builds the HRNet model\)"):
        load_official(dla, {"epoch": 140, "state_dict": tiny["state_dict"]})
    hrnet = build_adaptive_pose(tiny["spec"], COCO17)
    with pytest.raises(CheckpointError, match=r"an AdaptivePose DLA-34 checkpoint, but the model is AdaptivePose on "
                                              r"HRNet \(MODEL.NAME dla_adaptive_pose builds the DLA-34 model\)"):
        load_official(hrnet, dla_tiny["state_dict"])
    # through load_checkpoint: official files are recognised, bupose checkpoints refused by their method name
    model = _dla_method_model(dla_tiny["spec"]).build_model()
    with pytest.raises(CheckpointError, match="an AdaptivePose HRNet checkpoint"):
        bupose.load_checkpoint(model, tiny["state_dict"])
    with pytest.raises(CheckpointError, match="is a 'hrnet_adaptive_pose' checkpoint; the model is "
                                              "'dla_adaptive_pose'"):
        bupose.load_checkpoint(model, {"model": hrnet.state_dict(), "method": "hrnet_adaptive_pose"})
    with pytest.raises(CheckpointError, match=r"not an AdaptivePose \(DLA-34\) checkpoint"):
        official_to_bupose({"conv1.weight": torch.zeros(1)}, dla)


def test_other_dla_layouts_are_clear_errors(dla_tiny):
    crowd = build_dla_adaptive_pose(dla_tiny["spec"], CROWDPOSE14)
    with pytest.raises(CheckpointError, match=r"checkpoint has 17 keypoints in 7 parts"):
        load_official(crowd, dla_tiny["state_dict"])
    wider = build_dla_adaptive_pose(dict(dla_tiny["spec"], CHANNELS=[8, 8, 8, 16, 16, 32]), COCO17)
    with pytest.raises(CheckpointError, match=r"shape mismatches: base.base_layer.0.weight: checkpoint "
                                              r"\(4, 3, 7, 7\), model \(8, 3, 7, 7\)"):
        load_official(wider, dla_tiny["state_dict"])
    deeper = build_dla_adaptive_pose(dict(dla_tiny["spec"], LEVELS=[1, 1, 1, 2, 2, 2]), COCO17)
    with pytest.raises(CheckpointError, match="missing keys: base.level5.tree1.project"):
        load_official(deeper, dla_tiny["state_dict"])
    no_aux = build_dla_adaptive_pose(dict(dla_tiny["spec"], AUX_HEATMAP=False), COCO17)
    with_aux = build_dla_adaptive_pose(dla_tiny["spec"], COCO17)
    with pytest.raises(CheckpointError, match=r"no auxiliary keypoint-heatmap head \(hm_hp"):
        load_official(with_aux, no_aux.state_dict())


def test_dla_spec_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"for dla_adaptive_pose: missing fields \[\], unknown fields \['STAGES'\]"
                                          r".*STAGES is the HRNet layout \(MODEL.NAME hrnet_adaptive_pose\)"):
        build_dla_adaptive_pose({"STAGES": _stages()}, COCO17)
    with pytest.raises(ConfigError, match=r"unknown fields \['LEVELS'\].*LEVELS / CHANNELS are the DLA layout"):
        build_adaptive_pose(_tiny_spec(LEVELS=[1] * 6), COCO17)
    with pytest.raises(ConfigError, match=r"DLA CHANNELS must be six positive integers \(DLA-34: \[16, 32"):
        build_dla_adaptive_pose({"CHANNELS": [16, 32, 64]}, COCO17)
    with pytest.raises(ConfigError, match="DLA LEVELS must be six positive integers"):
        build_dla_adaptive_pose({"LEVELS": [1, 1, 0, 2, 2, 1]}, COCO17)
    with pytest.raises(ConfigError, match="HEAD_CHANNELS must be a positive integer"):
        build_dla_adaptive_pose({"HEAD_CHANNELS": 0}, COCO17)
