"""YOLO-Pose model: official layouts and outputs, pickled official checkpoints, conversion errors, decoding, MACs.

Fixtures ``fixtures/yolo_pose_*`` were made by running the official code (TexasInstruments/edgeai-yolov5, branch
``yolo-pose``) with ``fixtures/yolo_pose_make_fixtures.py``; each file explains itself under its "README" key.
"""
import hashlib
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bupose.engine.checkpoint import load_checkpoint, read_checkpoint
from bupose.errors import CheckpointError, ConfigError
from bupose.methods.yolo_pose.convert import official_to_bupose, read_pickled_checkpoint
from bupose.methods.yolo_pose.model import DEFAULT_ANCHORS, VARIANTS, ConvBNAct, ConvFocus, YOLOPose, build_yolo_pose
from bupose.methods.yolo_pose.model import Focus as BuposeFocus
from bupose.models.complexity import count_params_macs

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4

#: the fixtures' official configurations as YOLOPose keywords
TINY = {"s6": dict(width_multiple=0.02, depth_multiple=0.33),
        "s6_lite": dict(width_multiple=0.02, depth_multiple=0.33, lite=True, dw_conv_kpt=False),
        "s6_k5": dict(width_multiple=0.01, depth_multiple=0.33, num_keypoints=5)}


def unpack(packed: dict) -> dict:
    """A fixture's packed state_dict (keys, shapes, values in order as float16 / int64) as a float32 state_dict."""
    out, fo, io = {}, 0, 0
    for key, shape, is_float in zip(packed["keys"], packed["shapes"], packed["is_float"]):
        n = math.prod(shape)
        if is_float:
            out[key], fo = packed["float16"][fo:fo + n].float().view(shape), fo + n
        else:
            out[key], io = packed["int64"][io:io + n].view(shape), io + n
    return out


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"yolo_pose_{name}.pt", weights_only=True)


@pytest.fixture(scope="module")
def tiny():
    """name -> (fixture dict, YOLOPose with its official weights loaded strictly, eval mode)."""
    out = {}
    for name, kwargs in TINY.items():
        fx = load_fixture(f"tiny_{name}")
        model = YOLOPose(**kwargs)
        model.load_state_dict(unpack(fx["state_dict"]), strict=True)
        out[name] = (fx, model.eval())
    return out


def max_diff(a, b) -> float:
    return float((a - b).abs().max())


# --- official layouts and exact outputs --------------------------------------------------------------------------
def test_full_size_state_dict_layouts_equal_the_official_ones():
    official = json.loads((FIXTURES / "yolo_pose_official_keys.json").read_text())
    for label, kwargs in [("s6", dict(zip(("depth_multiple", "width_multiple"), VARIANTS["s6"]))),
                          ("m6", dict(zip(("depth_multiple", "width_multiple"), VARIANTS["m6"]))),
                          ("l6", dict(zip(("depth_multiple", "width_multiple"), VARIANTS["l6"]))),
                          ("s6_ti_lite", dict(lite=True, dw_conv_kpt=False))]:
        with torch.device("meta"):
            model = YOLOPose(**kwargs)
        sd = model.state_dict()
        layout = [[k, list(v.shape)] for k, v in sd.items()]
        ref = official[label]
        assert len(sd) == ref["num_keys"], label
        assert sum(p.numel() for p in model.parameters()) == ref["num_params"], label
        if "state_dict" in ref:
            assert layout == [[k, v] for k, v in ref["state_dict"].items()], label
        else:
            assert hashlib.sha256(json.dumps(layout).encode()).hexdigest() == ref["keys_sha256"], label


@pytest.mark.parametrize("name", list(TINY))
def test_raw_outputs_equal_the_official_model(tiny, name):
    fx, model = tiny[name]
    k = model.num_keypoints
    with torch.no_grad():
        levels = model(fx["input_uint8"].float() / 255)["levels"]
    assert len(levels) == len(fx["raw"]) == 4
    for t, ref, s in zip(levels, fx["raw"], model.strides):
        assert t.shape == ref.shape == (1, 3, 64 // s, 128 // s, 6 + 3 * k)
        assert max_diff(t, ref) <= TOL


def test_decode_equals_the_official_inference(tiny):
    fx, model = tiny["s6"]
    ref = load_fixture("tiny_decoded")["s6"]
    with torch.no_grad():
        decoded = model.decode(model(fx["input_uint8"].float() / 255)["levels"])
    assert decoded.shape == ref.shape == (1, 3 * (8 * 16 + 4 * 8 + 2 * 4 + 1 * 2), 57)
    # decoded boxes and keypoints are pixels (up to ~800 here): raw outputs within TOL become pixels within TOL
    # times a few strides, so the forward-and-decode comparison is relative to the values' size
    assert torch.allclose(decoded, ref, rtol=1e-5, atol=TOL), max_diff(decoded, ref)
    assert max_diff(model.decode(fx["raw"]), ref) <= TOL  # the decoding alone, on the official raw outputs


def test_fuse_keeps_outputs(tiny):
    fx, model = tiny["s6"]
    fused = YOLOPose(**TINY["s6"]).eval()
    fused.load_state_dict(model.state_dict())
    assert fused.fuse() is fused
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        levels = fused(fx["input_uint8"].float() / 255)["levels"]
    for t, ref in zip(levels, fx["raw"]):
        assert max_diff(t, ref) <= TOL


# --- pickled official checkpoints ------------------------------------------------------------------------------
def _official_ckpt_weights() -> dict:
    return unpack(load_fixture("official_ckpt_weights")["state_dict"])


def test_pickled_official_checkpoint_loads_through_load_checkpoint():
    path = FIXTURES / "yolo_pose_official_ckpt.pt"
    model = YOLOPose(width_multiple=0.01, depth_multiple=0.1, dw_conv_kpt=False)
    assert load_checkpoint(model, path) is model
    ours, ema = model.state_dict(), _official_ckpt_weights()
    assert list(ours) == list(ema)
    assert all(torch.equal(ours[k], v) for k, v in ema.items())  # the EMA weights, as the official loader


def test_read_checkpoint_turns_official_pickles_into_state_dicts():
    ckpt = read_checkpoint(FIXTURES / "yolo_pose_official_ckpt.pt")
    assert set(ckpt) == {"epoch", "best_fitness", "training_results", "model", "ema", "updates", "optimizer",
                         "wandb_id"}
    assert ckpt["epoch"] == 3 and ckpt["optimizer"] is None
    for key in ("model", "ema"):
        assert all(isinstance(v, torch.Tensor) for v in ckpt[key].values())
        assert ckpt[key]["model.33.m.0.bias"].dtype == torch.float32  # fp16 in the file
    diff = [k for k in ckpt["ema"] if not torch.equal(ckpt["ema"][k], ckpt["model"][k])]
    assert sorted(diff) == [f"model.33.m.{i}.bias" for i in range(4)]
    # the released files have 'ema': None and the weights in 'model'
    sd = official_to_bupose({**ckpt, "ema": None})
    assert torch.allclose(sd["model.33.m.0.bias"], ckpt["ema"]["model.33.m.0.bias"] + 0.5, atol=1e-3)
    stubs = read_pickled_checkpoint(FIXTURES / "yolo_pose_official_ckpt.pt", plain=False)
    assert stubs["ema"].official_name == "models.yolo.Model"
    assert type(stubs["ema"].model[0]).official_name == "models.common.Focus"


_CALLS = []


def _side_effect(*args):
    _CALLS.append(args)
    return {}


class _Evil:
    def __reduce__(self):
        return _side_effect, ("called",)


def test_restricted_reader_refuses_other_callables(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load the global .*_side_effect"):
        read_checkpoint(path)
    assert _CALLS == []
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(bad)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_focus_pickled_without_contract_is_converted_to_bupose_channel_order(tmp_path, monkeypatch):
    """Focus objects of official code without ``Contract`` concatenate the 4 slices in the (row, col) parity order
    00, 10, 01, 11; their conv weights must be permuted for bupose's 00, 01, 10, 11."""
    common = types.ModuleType("models.common")

    class Conv(nn.Module):
        def __init__(self, c1, c2):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(c1, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU()

    class Focus(nn.Module):  # the official class name, in a fake official module
        def __init__(self):
            super().__init__()
            self.conv = Conv(12, 8)

    for cls in (Conv, Focus):
        cls.__module__, cls.__qualname__ = "models.common", cls.__name__
        setattr(common, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "models", types.ModuleType("models"))
    monkeypatch.setitem(sys.modules, "models.common", common)
    torch.manual_seed(0)
    old = Focus()
    torch.save({"model": old, "ema": None}, tmp_path / "old.pt")
    torch.save({"model": old}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # torch < 1.6 format
    sd = read_checkpoint(tmp_path / "old.pt")["model"]
    legacy = read_checkpoint(tmp_path / "legacy.pt")["model"]
    assert all(torch.equal(legacy[k], v) for k, v in sd.items())

    ours = BuposeFocus(3, 8).eval()
    ours.load_state_dict(sd)
    x = torch.randn(1, 3, 8, 8)
    sliced = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    with torch.no_grad():
        ref = ours.conv.act(ours.conv.bn(F.conv2d(sliced, old.conv.conv.weight, padding=1)))
        assert max_diff(ours(x), ref) <= 1e-5
    assert not torch.equal(sd["conv.conv.weight"], old.conv.conv.weight)


# --- conversion errors ---------------------------------------------------------------------------------------------
def test_conversion_refuses_what_does_not_fit(tiny):
    fx, _ = tiny["s6"]
    sd = unpack(fx["state_dict"])
    with pytest.raises(CheckpointError, match="K=17 keypoints, the model expects K=14"):
        official_to_bupose(sd, YOLOPose(**{**TINY["s6"], "num_keypoints": 14}))
    with pytest.raises(CheckpointError, match=r"WIDTH_MULTIPLE.*stem has 8 .*16 in the model; first mismatch: "
                                              r"model\.0\.conv\.conv\.weight: checkpoint \(8, 12, 3, 3\), model "
                                              r"\(16, 12, 3, 3\)"):
        official_to_bupose(sd, YOLOPose(**{**TINY["s6"], "width_multiple": 0.15}))
    with pytest.raises(CheckpointError, match=r"DEPTH_MULTIPLE.*model\.2 has 1 bottleneck\(s\) in the "
                                              r"checkpoint, 2 in the model"):
        official_to_bupose(sd, YOLOPose(**{**TINY["s6"], "depth_multiple": 0.67}))
    with pytest.raises(CheckpointError, match="depthwise keypoint branch, the model a single 1x1 keypoint conv"):
        official_to_bupose(sd, YOLOPose(**{**TINY["s6"], "dw_conv_kpt": False}))
    with pytest.raises(CheckpointError, match=r"the Focus stem, the model the lite \(ti_lite\) stem"):
        official_to_bupose(sd, YOLOPose(**{**TINY["s6"], "lite": True}))
    with pytest.raises(CheckpointError, match=r"has 1 class\(es\), the model 2 \(MODEL.SPEC.NUM_CLASSES\)"):
        official_to_bupose(sd, YOLOPose(**{**TINY["s6"], "num_classes": 2}))
    p5 = {k.replace("model.33.", "model.24."): v for k, v in sd.items() if k.startswith("model.33.")}
    with pytest.raises(CheckpointError, match="head is layer model.24"):
        official_to_bupose(p5, YOLOPose(**TINY["s6"]))
    no_kpt = {k: v for k, v in sd.items() if ".m_kpt." not in k}
    with pytest.raises(CheckpointError, match="without a keypoint head"):
        official_to_bupose(no_kpt, YOLOPose(**TINY["s6"]))
    with pytest.raises(CheckpointError, match="neither a state_dict"):
        official_to_bupose({"epoch": 3}, YOLOPose(**TINY["s6"]))


def test_conversion_names_a_dekr_checkpoint():
    shapes = json.loads((FIXTURES / "dekr_w32_official_keys.json").read_text())["shapes"]
    dekr = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    with pytest.raises(CheckpointError, match="a DEKR \\(hrnet_dekr\\) checkpoint"):
        official_to_bupose(dekr, YOLOPose(**TINY["s6"]))


def test_conversion_accepts_bupose_and_wrapped_checkpoints(tiny):
    fx, model = tiny["s6"]
    sd = model.state_dict()
    for ckpt in ({"model": sd, "method": "yolo_pose", "ema": {"model": {}, "updates": 3}},
                 {f"module.{k}": v for k, v in sd.items()}, {"state_dict": sd}, model):
        out = official_to_bupose(ckpt, model)
        assert list(out) == list(sd) and all(torch.equal(out[k], sd[k]) for k in sd)


# --- structure, custom K, config ---------------------------------------------------------------------------------
def test_custom_keypoints_build_and_run():
    model = build_yolo_pose({"WIDTH_MULTIPLE": 0.05}, 5).eval()
    assert model.num_keypoints == 5 and model.num_outputs == 5 + 1 + 15
    assert model.head.m_kpt[0][-1].out_channels == 3 * 15
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        levels = model(x)["levels"]
    assert [tuple(t.shape) for t in levels] == [(2, 3, 128 // s, 64 // s, 21) for s in (8, 16, 32, 64)]
    assert model.decode(levels).shape == (2, 3 * (16 * 8 + 8 * 4 + 4 * 2 + 2 * 1), 21)
    with pytest.raises(ValueError, match="multiples of 64"):
        model(torch.rand(1, 3, 96, 64))


def test_lite_variant_structure():
    lite = YOLOPose(lite=True, dw_conv_kpt=False, width_multiple=0.25)
    stem = lite.model[0]
    assert isinstance(stem, ConvFocus) and not isinstance(YOLOPose().model[0], ConvFocus)
    assert (stem.conv_slice.conv.in_channels, stem.conv_slice.conv.out_channels) == (3, 12)
    assert stem.conv_slice.conv.kernel_size == (3, 3) and stem.conv_slice.conv.stride == (2, 2)
    assert isinstance(lite.model[1].act, nn.ReLU) and isinstance(lite.model[2].m[0].cv2.act, nn.ReLU)
    assert isinstance(lite.model[10].cv1.act, nn.SiLU)  # official: SPP and keypoint branch keep SiLU
    assert isinstance(lite.head.m_kpt[0], nn.Conv2d) and lite.head.m_kpt[0].kernel_size == (1, 1)
    assert len(lite.model[10].m) == 3 and [len(p) for p in lite.model[10].m] == [1, 2, 3]  # SPP 3, 5, 7
    silu = YOLOPose(lite=True, activation="silu", width_multiple=0.25)
    assert isinstance(silu.model[1].act, nn.SiLU)
    regular = YOLOPose(width_multiple=0.25)
    assert isinstance(regular.model[0], BuposeFocus) and isinstance(regular.model[1].act, nn.SiLU)
    dw = regular.head.m_kpt[0]
    assert len(dw) == 12 and dw[0].conv.groups == dw[0].conv.in_channels and dw[1].conv.kernel_size == (1, 1)


def test_official_initialisation():
    torch.manual_seed(0)
    model = YOLOPose(width_multiple=0.25)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    for conv, s in zip(model.head.m, model.strides):  # default init bias in +-1/sqrt(fan_in) plus the prior
        b = conv.bias.view(3, 6)
        bound = 1 / math.sqrt(conv.in_channels)
        assert ((b[:, 4] - math.log(8 / (640 / s) ** 2)).abs() <= bound).all()
        assert ((b[:, 5] - math.log(0.6 / 0.01)).abs() <= bound).all()
    a = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32).view(4, 3, 2)
    assert torch.equal(model.anchors, a)
    assert torch.equal(model.head.anchors, a / torch.tensor([8.0, 16, 32, 64]).view(4, 1, 1))


def test_spec_to_model():
    m6 = build_yolo_pose({"VARIANT": "m6", "LITE": True, "DW_CONV_KPT": False}, 17)
    assert (m6.depth_multiple, m6.width_multiple, m6.lite, m6.activation) == (0.67, 0.75, True, "relu")
    assert m6.model[1].conv.out_channels == 96  # ceil(128 * 0.75 / 8) * 8
    assert len(m6.model[4].m) == 6  # round(9 * 0.67)
    custom = build_yolo_pose({"DEPTH_MULTIPLE": 0.33, "WIDTH_MULTIPLE": 0.25, "ANCHORS": [[10, 20]] * 4,
                              "NUM_CLASSES": 2, "ACTIVATION": "ReLU"}, 3)
    assert custom.num_anchors == 1 and custom.num_classes == 2 and custom.activation == "relu"
    assert custom.head.m[0].out_channels == 1 * (5 + 2)
    with pytest.raises(ConfigError, match="unknown fields \\['WIDTH'\\]"):
        build_yolo_pose({"WIDTH": 0.5}, 17)
    with pytest.raises(ConfigError, match="VARIANT must be one of"):
        build_yolo_pose({"VARIANT": "x6"}, 17)
    with pytest.raises(ConfigError, match="LITE must be true or false"):
        build_yolo_pose({"LITE": "yes"}, 17)
    with pytest.raises(ConfigError, match="anchors must be 4 rows"):
        build_yolo_pose({"ANCHORS": [[10, 20, 30]] * 4}, 17)
    with pytest.raises(ConfigError, match="activation must be one of"):
        YOLOPose(activation="gelu")


def test_train_mode_output_and_gradients():
    model = YOLOPose(width_multiple=0.05, num_keypoints=4).train()
    levels = model(torch.rand(2, 3, 64, 64))["levels"]
    sum(t.sum() for t in levels).backward()
    assert model.model[0].conv.conv.weight.grad is not None and model.head.m_kpt[3][-1].weight.grad is not None
    assert int(model.model[0].conv.bn.num_batches_tracked) == 1


# --- decoding by hand --------------------------------------------------------------------------------------------
def test_decode_on_a_constructed_head_output():
    model = YOLOPose(width_multiple=0.05, num_keypoints=2)
    no = model.num_outputs  # 5 + 1 + 6
    levels = [torch.zeros(1, 3, 64 // s, 128 // s, no) for s in model.strides]
    t = levels[0][0, 1, 2, 3]  # stride 8, anchor 1 (44 x 40 px), row 2, column 3
    t[1] = math.log(3)  # sigmoid 0.75
    t[3] = -math.log(3)  # sigmoid 0.25
    t[4], t[5] = 2.0, -1.0
    t[6:12] = torch.tensor([0.25, -1.0, 0.0, 1.0, 0.5, math.log(4)])
    levels[3][0, 2, 0, 1, :2] = torch.tensor([10.0, -10.0])  # stride 64, anchor 2, row 0, column 1
    out = model.decode(levels)
    assert out.shape == (1, 3 * (8 * 16 + 4 * 8 + 2 * 4 + 1 * 2), no)
    row = out[0, 1 * 8 * 16 + 2 * 16 + 3]
    expected = torch.tensor([(1 - 0.5 + 3) * 8, (1.5 - 0.5 + 2) * 8, 1.0 * 44, 0.25 * 40,
                             1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1)),
                             (0.5 - 0.5 + 3) * 8, (-2 - 0.5 + 2) * 8, 0.5, (2 - 0.5 + 3) * 8, (1 - 0.5 + 2) * 8, 0.8])
    assert torch.allclose(row, expected, atol=1e-5)
    first = out[0, 0]  # stride 8, anchor 0 (19 x 27), cell (0, 0), all logits 0
    assert torch.allclose(first, torch.tensor([4.0, 4, 19, 27, 0.5, 0.5, -4, -4, 0.5, -4, -4, 0.5]))
    last_level = out[0, -6 + 2 * 2 + 1]  # stride 64 (1 x 2 cells): anchor 2, column 1
    sig = 1 / (1 + math.exp(-10))
    assert torch.allclose(last_level[:4], torch.tensor([(2 * sig - 0.5 + 1) * 64, (2 * (1 - sig) - 0.5) * 64,
                                                        925.0, 792.0]), atol=1e-4)


# --- params and MACs -----------------------------------------------------------------------------------------------
def test_count_params_macs_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    model.train()
    params, macs = count_params_macs(model, (16, 16))
    assert params == (3 * 8 * 9 + 8) + 16 + 8 * 9 + (128 * 5 + 5)
    assert macs == 16 * 16 * 8 * (27 + 1) + 16 * 16 * 8 + 8 * 8 * 8 * 9 + 5 * (128 + 1)
    assert model.training and int(model[1].num_batches_tracked) == 0  # mode restored, statistics untouched


@pytest.mark.parametrize("variant,size,lite,gmacs", [("s6", 640, False, 10.2), ("s6", 960, False, 22.8),
                                                     ("m6", 960, False, 66.3), ("l6", 960, False, 145.6),
                                                     ("s6", 640, True, 8.6), ("s6", 960, True, 19.3)])
def test_official_gmacs(variant, size, lite, gmacs):
    """The official README's GMACS: the released models with the depthwise keypoint head, and two of the three
    ti_lite rows (m6 ti_lite at 960 counts 58.59, the README says 58.7)."""
    d, w = VARIANTS[variant]
    with torch.device("meta"):
        model = YOLOPose(depth_multiple=d, width_multiple=w, lite=lite, dw_conv_kpt=not lite)
    _, macs = count_params_macs(model, size)
    assert abs(macs / 1e9 - gmacs) <= 0.1


def test_fused_model_counts_the_same():
    model = YOLOPose(width_multiple=0.05).eval()
    params, macs = count_params_macs(model, 128)
    fused_params, fused_macs = count_params_macs(model.fuse(), 128)
    assert fused_macs == macs and fused_params < params
    assert isinstance(model.model[1], ConvBNAct) and isinstance(model.model[1].bn, nn.Identity)
