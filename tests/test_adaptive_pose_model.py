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
"""
import json
import math
from pathlib import Path

import pytest
import torch

from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.errors import CheckpointError, ConfigError
from bupose.methods.adaptive_pose.convert import load_official, looks_official, official_to_bupose
from bupose.methods.adaptive_pose.model import (PARTS, AdaptivePose, BodyPart, body_parts, build_adaptive_pose,
                                                warp)
from bupose.methods.dekr import build_dekr

FIXTURES = Path(__file__).resolve().parent / "fixtures"
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
