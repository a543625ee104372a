"""The top-down models (HRNet, SimpleBaseline) against the official deep-high-resolution-net code and checkpoints.

Fixtures, made with the official code by ``fixtures/topdown_make_fixtures.py`` (its docstring and each file's
``README`` say how):

``fixtures/topdown_{hrnet,resnet18,resnet50}_tiny_official.pt``
    Small official models (MODEL.EXTRA under ``"extra"``; the ResNets with narrower residual stages, bupose's
    ``BASE_CHANNELS`` under ``"bupose_spec_extra"``) with seeded random weights and BatchNorm statistics (stored as
    float16, packed), a seeded input and the official float32 heatmaps.
``fixtures/topdown_official_keys.json``
    ``{key: shape}`` of the official full-size COCO models (HRNet-W32/W48, ResNet-50/101/152 SimpleBaselines).
"""
import json
from pathlib import Path

import pytest
import torch

from bupose.engine.checkpoint import load_checkpoint
from bupose.errors import CheckpointError, ConfigError
from bupose.methods.topdown import (HeatmapHead, TopDownModel, build_topdown_model, load_official,
                                    load_pretrained_backbone, official_to_bupose)
from bupose.models.backbones import HRNet, ResNet, stages_from_extra

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NAMES = {"hrnet": "topdown_hrnet", "resnet18": "topdown_resnet", "resnet50": "topdown_resnet"}
_KEYS = None


def official_keys():
    global _KEYS
    if _KEYS is None:
        _KEYS = json.loads((FIXTURES / "topdown_official_keys.json").read_text())["models"]
    return _KEYS


def unpack(packed):
    """The fixture's packed state_dict as float32 / int64 tensors."""
    floats, ints, out = packed["float16"].float(), packed["int64"], {}
    fi = ii = 0
    for key, shape in zip(packed["keys"], packed["shapes"]):
        n = torch.Size(shape).numel()
        if key.endswith("num_batches_tracked"):
            out[key], ii = ints[ii:ii + n].reshape(shape), ii + n
        else:
            out[key], fi = floats[fi:fi + n].reshape(shape), fi + n
    return out


_TINY = {}


def tiny(name):
    if name not in _TINY:
        d = torch.load(FIXTURES / f"topdown_{name}_tiny_official.pt", weights_only=True)
        d["state_dict"] = unpack(d["state_dict"])
        _TINY[name] = d
    return _TINY[name]


def tiny_model(name, num_joints=None):
    d = tiny(name)
    return build_topdown_model(NAMES[name], {**d["extra"], **d["bupose_spec_extra"]}, num_joints or d["num_joints"])


def meta_state_dict(name, prefix=""):
    """A full-size official state_dict of meta tensors (shapes only)."""
    return {prefix + k: torch.empty(s, device="meta") for k, s in official_keys()[name]["shapes"].items()}


def full_model(name, num_joints=17):
    m = official_keys()[name]
    with torch.device("meta"):
        return build_topdown_model("topdown_hrnet" if name.startswith("hrnet") else "topdown_resnet",
                                   m["extra"], num_joints)


@pytest.mark.parametrize("name", ["hrnet", "resnet18", "resnet50"])
def test_matches_official_model(name):
    d = tiny(name)
    model = load_official(tiny_model(name), d["state_dict"]).eval()
    with torch.no_grad():
        out = model(d["input"].float())
    assert set(out) == {"heatmaps"}
    assert out["heatmaps"].shape == d["heatmaps"].shape
    assert (out["heatmaps"] - d["heatmaps"]).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["hrnet", "resnet50"])
def test_wrapped_and_mmpose_layouts_convert_alike(name, tmp_path):
    sd = tiny(name)["state_dict"]
    model = tiny_model(name)
    expected = official_to_bupose(sd, model)
    assert all(k.startswith(("backbone.", "head.")) for k in expected)
    assert "head.final_layer.weight" in expected and "backbone.conv1.weight" in expected
    head = ("deconv_layers.", "final_layer.")
    mmpose0 = {("keypoint_head." if k.startswith(head) else "backbone.") + k: v for k, v in sd.items()}
    mmpose1 = {("head." if k.startswith(head) else "backbone.") + k: v for k, v in sd.items()}
    path = tmp_path / "official.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    for ckpt in (path, {"meta": {"epoch": 210}, "state_dict": mmpose0}, {"state_dict": mmpose1},
                 {"model": expected, "method": "topdown"}):
        got = official_to_bupose(ckpt, model)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())


def test_engine_loads_official_file(tmp_path):
    d = tiny("resnet18")
    path = tmp_path / "pose_resnet_18.pth"
    torch.save(d["state_dict"], path)
    model = load_checkpoint(tiny_model("resnet18"), path).eval()
    with torch.no_grad():
        assert (model(d["input"].float())["heatmaps"] - d["heatmaps"]).abs().max() <= 1e-5
    with pytest.raises(CheckpointError, match="final layer has 14 joints in the checkpoint, the model has 17"):
        load_checkpoint(tiny_model("resnet18", num_joints=17), path)


def test_engine_loads_a_bupose_checkpoint_of_the_method_and_refuses_another_methods(tmp_path):
    model = tiny_model("hrnet")
    assert model.method_name == "topdown_hrnet" and tiny_model("resnet18").method_name == "topdown_resnet"
    path = tmp_path / "bupose.pth"
    torch.save({"model": model.state_dict(), "method": "topdown_hrnet", "epoch": 1}, path)
    other = load_checkpoint(tiny_model("hrnet"), path)
    assert all(torch.equal(other.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="'topdown_hrnet' checkpoint; the model is 'topdown_resnet'"):
        load_checkpoint(tiny_model("resnet18"), path)


@pytest.mark.parametrize("name", ["hrnet_w32", "hrnet_w48", "resnet50", "resnet101", "resnet152"])
def test_full_size_official_layout_converts_exactly(name):
    model = full_model(name)
    converted = official_to_bupose(meta_state_dict(name), model)  # checked: no missing / unexpected keys
    ours = model.state_dict()
    assert converted.keys() == ours.keys()
    assert all(converted[k].shape == v.shape for k, v in ours.items())


@pytest.mark.parametrize("name, millions", [("hrnet_w32", 28.5), ("hrnet_w48", 63.6), ("resnet50", 34.0),
                                            ("resnet101", 53.0), ("resnet152", 68.6)])
def test_parameter_counts_match_published(name, millions):
    """The official README's #Params (COCO, 256x192)."""
    assert round(sum(p.numel() for p in full_model(name).parameters()) / 1e6, 1) == millions


def test_hrnet_top_down_shares_the_backbone():
    model = full_model("hrnet_w32")
    assert type(model.backbone) is HRNet and not model.backbone.multi_scale_output
    last = model.backbone.stage4[-1]
    assert len(last.fuse_layers) == 1 and len(model.backbone.stage4[0].fuse_layers) == 4
    assert model.backbone.out_channels == 32 and model.head.deconv_layers.__class__.__name__ == "Identity"
    stages = stages_from_extra(official_keys()["hrnet_w32"]["extra"])
    assert stages == {"NUM_STAGES": 3, "NUM_MODULES": [1, 4, 3], "NUM_BRANCHES": [2, 3, 4],
                      "BLOCK": ["BASIC"] * 3, "NUM_BLOCKS": [[4, 4], [4] * 3, [4] * 4],
                      "NUM_CHANNELS": [[32, 64], [32, 64, 128], [32, 64, 128, 256]], "FUSE_METHOD": ["SUM"] * 3}
    with torch.device("meta"):  # the bottom-up form (DEKR) keeps all rows and concatenates all branches
        dekr_form = HRNet(stages=stages)
    assert len(dekr_form.stage4[-1].fuse_layers) == 4 and dekr_form.out_channels == 480


@pytest.mark.parametrize("name", ["hrnet", "resnet18"])
def test_forward_shapes(name):
    model = tiny_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 32))["heatmaps"]
    assert out.shape == (2, tiny(name)["num_joints"], 16, 8)


def test_signature_keys_tell_the_official_layouts_apart():
    from bupose.methods.topdown.convert import HRNET_SIGNATURE_KEYS, RESNET_SIGNATURE_KEYS

    for name in ("hrnet", "resnet18", "resnet50"):
        keys = tiny(name)["state_dict"].keys()
        assert keys >= set(HRNET_SIGNATURE_KEYS) if name == "hrnet" else keys >= set(RESNET_SIGNATURE_KEYS)
        assert not keys >= set(RESNET_SIGNATURE_KEYS if name == "hrnet" else HRNET_SIGNATURE_KEYS)


def test_refuses_wrong_joint_count():
    with pytest.raises(CheckpointError, match="final layer has 17 joints in the checkpoint, the model has 14"):
        official_to_bupose(tiny("hrnet")["state_dict"], tiny_model("hrnet", num_joints=14))


def test_refuses_other_hrnet_width():
    with pytest.raises(CheckpointError, match="backbone is HRNet-W48 in the checkpoint, the model is HRNet-W32"):
        official_to_bupose(meta_state_dict("hrnet_w48"), full_model("hrnet_w32"))


def test_refuses_other_resnet_depth():
    with pytest.raises(CheckpointError, match="checkpoint is a ResNet-101 SimpleBaseline, the model is a "
                                              "ResNet-50 SimpleBaseline"):
        official_to_bupose(meta_state_dict("resnet101"), full_model("resnet50"))
    with pytest.raises(CheckpointError, match="checkpoint is an HRNet-W32, the model is a ResNet-50 SimpleBaseline"):
        official_to_bupose(meta_state_dict("hrnet_w32"), full_model("resnet50"))


def test_refuses_other_deconvolutions():
    model = build_topdown_model("topdown_resnet", {**tiny("resnet50")["extra"], "BASE_CHANNELS": 4,
                                                   "NUM_DECONV_KERNELS": [4, 4, 4]}, 17)
    with pytest.raises(CheckpointError, match=r"deconvolutions .* are \[\(16, 4\), \(8, 3\), \(8, 2\)\] in the "
                                              r"checkpoint, \[\(16, 4\), \(8, 4\), \(8, 4\)\] in the model"):
        official_to_bupose(tiny("resnet50")["state_dict"], model)


def test_refuses_dekr_and_imagenet_checkpoints():
    dekr = torch.load(FIXTURES / "dekr_tiny_official.pt", weights_only=True)["state_dict"]
    with pytest.raises(CheckpointError, match="not a top-down heatmap checkpoint.*DEKR"):
        official_to_bupose(dekr, tiny_model("hrnet"))
    imagenet = {k: v for k, v in tiny("resnet18")["state_dict"].items() if not k.startswith(("deconv", "final"))}
    imagenet.update({"fc.weight": torch.zeros(1000, 64), "fc.bias": torch.zeros(1000)})
    with pytest.raises(CheckpointError, match="ImageNet classification weights: load them into the backbone"):
        official_to_bupose(imagenet, tiny_model("resnet18"))


def test_load_pretrained_backbone():
    sd = tiny("resnet18")["state_dict"]
    imagenet = {k: v for k, v in sd.items() if not k.startswith(("deconv", "final"))
                and not k.endswith("num_batches_tracked")}  # as torchvision's old files
    imagenet.update({"fc.weight": torch.zeros(1000, 64), "fc.bias": torch.zeros(1000)})
    model = tiny_model("resnet18")
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_pretrained_backbone(model, {"state_dict": imagenet})
    assert report["unused"] == ["fc.bias", "fc.weight"]
    assert report["missing"] and all(k.endswith("num_batches_tracked") for k in report["missing"])
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in imagenet.items() if k in report["loaded"])
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in head_before.items())
    # PRETRAINED_LAYERS picks modules by their first name component; backbone.-prefixed files load too
    model = tiny_model("resnet18")
    report = load_pretrained_backbone(model, {"backbone." + k: v for k, v in imagenet.items()}, ["conv1", "bn1"])
    assert {k.split(".")[0] for k in report["loaded"]} == {"conv1", "bn1"}
    assert torch.equal(model.backbone.conv1.weight, imagenet["conv1.weight"])
    assert not torch.equal(model.backbone.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])


def test_load_pretrained_backbone_refuses_other_structures():
    sd = tiny("hrnet")["state_dict"]
    imagenet = {k: v for k, v in sd.items() if not k.startswith("final_layer")}
    spec = {**tiny("hrnet")["extra"]}
    spec["STAGE2"] = {**spec["STAGE2"], "NUM_CHANNELS": [6, 8]}
    with pytest.raises(CheckpointError, match="backbone is HRNet-W4 in the checkpoint, the model is HRNet-W6"):
        load_pretrained_backbone(build_topdown_model("topdown_hrnet", spec, 17), imagenet)
    r18 = {k: v for k, v in tiny("resnet18")["state_dict"].items() if not k.startswith(("deconv", "final"))}
    model = build_topdown_model("topdown_resnet", {"NUM_LAYERS": 34, "BASE_CHANNELS": 8}, 17)
    with pytest.raises(CheckpointError, match="ResNet-18 .* in the checkpoint, the model is ResNet-34"):
        load_pretrained_backbone(model, r18)


def test_official_and_kaiming_initialisation():
    torch.manual_seed(0)
    model = build_topdown_model("topdown_resnet", {"NUM_LAYERS": 18, "BASE_CHANNELS": 16}, 17)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert abs(float(m.weight.detach().std()) - 0.001) < 2e-4
            assert m.bias is None or not m.bias.any()
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.weight == 1).all() and not m.bias.any()
    model = build_topdown_model("topdown_resnet", {"NUM_LAYERS": 18, "BASE_CHANNELS": 16, "INIT": "kaiming"}, 17)
    conv = model.backbone.layer2[0].conv2
    fan_out = conv.weight.shape[0] * 9
    assert abs(float(conv.weight.detach().std()) / (2.0 / fan_out) ** 0.5 - 1) < 0.1
    assert abs(float(model.head.final_layer.weight.detach().std()) - 0.001) < 3e-4


@pytest.mark.parametrize("name, spec, match", [
    ("topdown_resnet", {"NUM_LAYER": 50}, r"MODEL\.SPEC\.NUM_LAYER is not a field of topdown_resnet; did you mean "
                                          r"NUM_LAYERS\?"),
    ("topdown_resnet", {"DECONV_WITH_BIAS": False}, r"MODEL\.SPEC\.NUM_LAYERS is missing"),
    ("topdown_resnet", {"NUM_LAYERS": 42}, r"MODEL\.SPEC\.NUM_LAYERS must be one of \[18, 34, 50, 101, 152\]"),
    ("topdown_resnet", {"NUM_LAYERS": 50, "NUM_DECONV_FILTERS": [256, 256]},
     r"MODEL\.SPEC\.NUM_DECONV_FILTERS must be 3 \(NUM_DECONV_LAYERS\)"),
    ("topdown_resnet", {"NUM_LAYERS": 50, "NUM_DECONV_KERNELS": [4, 5, 4]}, r"MODEL\.SPEC\.NUM_DECONV_KERNELS"),
    ("topdown_resnet", {"NUM_LAYERS": 50, "INIT": "xavier"}, r"MODEL\.SPEC\.INIT must be one of"),
    ("topdown_hrnet", "no_stage3", r"MODEL\.SPEC\.STAGE3 is missing"),
    ("topdown_hrnet", "bad_channels", r"MODEL\.SPEC\.STAGE3\.NUM_CHANNELS must be 3 positive integers"),
    ("topdown_hrnet", "unknown_stage_field", r"MODEL\.SPEC\.STAGE4: missing fields \[\], unknown fields "
                                             r"\['NUM_CHANNEL'\]"),
    ("topdown_hrnet", "final_kernel", r"MODEL\.SPEC\.FINAL_CONV_KERNEL must be one of \[1, 3\]"),
    ("topdown_posenet", {}, r"unknown top-down model 'topdown_posenet'"),
])
def test_spec_errors_name_the_field(name, spec, match):
    if isinstance(spec, str):
        extra = {k: dict(v) if isinstance(v, dict) else v for k, v in official_keys()["hrnet_w32"]["extra"].items()}
        if spec == "no_stage3":
            del extra["STAGE3"]
        elif spec == "bad_channels":
            extra["STAGE3"]["NUM_CHANNELS"] = [32, 64]
        elif spec == "unknown_stage_field":
            extra["STAGE4"]["NUM_CHANNEL"] = [32, 64, 128, 256]
        else:
            extra["FINAL_CONV_KERNEL"] = 5
        spec = extra
    with pytest.raises(ConfigError, match=match):
        with torch.device("meta"):
            build_topdown_model(name, spec, 17)


def test_heatmap_head_and_resnet_modules():
    head = HeatmapHead(in_channels=8, out_channels=5, deconv_out_channels=(4, 4), deconv_kernel_sizes=(3, 2),
                       deconv_with_bias=True, final_conv_kernel=3)
    assert head(torch.randn(2, 8, 3, 5)).shape == (2, 5, 12, 20)
    assert sorted(k for k in head.state_dict() if k.endswith("weight")) == [
        "deconv_layers.0.weight", "deconv_layers.1.weight", "deconv_layers.3.weight", "deconv_layers.4.weight",
        "final_layer.weight"]
    assert HeatmapHead(in_channels=8, out_channels=5, deconv_out_channels=None)(torch.randn(1, 8, 4, 4)).shape == (
        1, 5, 4, 4)
    with pytest.raises(ValueError, match="deconv_kernel_sizes must be 2, 3 or 4"):
        HeatmapHead(in_channels=8, out_channels=5, deconv_out_channels=(4,), deconv_kernel_sizes=(5,))
    net = ResNet(depth=50, base_channels=4)
    assert net.out_channels == 128 and net(torch.randn(1, 3, 64, 32)).shape == (1, 128, 2, 1)
    model = TopDownModel(backbone=net, head=HeatmapHead(in_channels=128, out_channels=3))
    assert model.num_joints == 3 and model.method_name == "topdown"
    assert model(torch.randn(1, 3, 64, 32))["heatmaps"].shape == (1, 3, 16, 8)
