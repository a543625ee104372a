"""ViTPose in the top-down family (Xu et al., NeurIPS 2022): our model with the official ViTPose code's tiny weights
gives its heatmaps (classic and simple decoders, official and mmpose 1.x names), the full-size ViTPose-B key layout
and size, position-embedding resizing (pose checkpoints at another input size, MAE weights through the official
loader's result), the layer numbering of the official layer-decay constructor, refusals, MODEL.SPEC errors and one
training step through the method. Fixtures: tests/fixtures/topdown_vitpose_make_fixtures.py."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bupose.codecs import MSRAHeatmap, SimCCLabel, UDPHeatmap
from bupose.engine.checkpoint import load_checkpoint
from bupose.errors import CheckpointError, ConfigError
from bupose.methods import method_class, official_method_of
from bupose.methods.topdown.model import build_topdown_model
from bupose.methods.topdown.vitpose import TopDownViT, ViTPoseSimpleHead
from bupose.methods.topdown.vitpose_convert import load_pretrained_vit, vitpose_to_bupose
from bupose.models.backbones.vit import resize_pos_embed

from conftest import TINY_TOPDOWN_HRNET, tiny_synthetic_header  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY = {"EMBED_DIM": 48, "DEPTH": 2, "NUM_HEADS": 3, "NUM_DECONV_FILTERS": [32, 32]}
TINY_SIMPLE = {"EMBED_DIM": 48, "DEPTH": 2, "NUM_HEADS": 3, "DECODER": "simple"}
K = 17


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURES / "topdown_vitpose_tiny_official.pt", weights_only=True)


def codec(w: int = 48, h: int = 64):
    return UDPHeatmap(input_size=(w, h), heatmap_size=(w // 4, h // 4), sigma=2.0)


def tiny(spec=TINY, k: int = K, size=(48, 64)) -> TopDownViT:
    torch.manual_seed(0)
    return build_topdown_model("topdown_vit", dict(spec), k, codec=codec(*size))


# --- exactness against the official code ------------------------------------------------------------------------
@pytest.mark.parametrize("entry,spec,reference", [("official_classic", TINY, "heatmaps_classic"),
                                                  ("official_simple", TINY_SIMPLE, "heatmaps_simple"),
                                                  ("mmpose1_classic", TINY, "heatmaps_classic")])
def test_the_official_weights_give_the_official_heatmaps(official, tmp_path, entry, spec, reference):
    path = tmp_path / f"{entry}.pth"
    torch.save(official[entry], path)  # a released file: {"state_dict": ..., "meta": ...}
    model = load_checkpoint(tiny(spec), path).eval()
    with torch.no_grad():
        out = model(official["images"])["heatmaps"]
    want = official[reference]
    assert out.shape == want.shape == (2, K, 16, 12)
    assert float((out - want).abs().max()) < 1e-5
    assert float(want.abs().max()) > 0.5  # the weights matter: heatmaps of O(1)


def test_official_names_are_kept_and_recognised(official):
    sd = official["official_classic"]["state_dict"]
    ours = tiny().state_dict()
    assert {k.replace("keypoint_head.", "head.") for k in sd} == set(ours)
    assert official_method_of(sd) == "topdown_vit"
    assert method_class("topdown_vit").title == "ViTPose"
    simple = tiny(TINY_SIMPLE)
    assert isinstance(simple.head, ViTPoseSimpleHead) and simple.head.final_layer.kernel_size == (3, 3)
    assert set(simple.head.state_dict()) == {"final_layer.weight", "final_layer.bias"}


def test_full_size_vitpose_b_has_the_official_keys_shapes_and_size():
    ref = json.loads((FIXTURES / "topdown_vitpose_b_official_keys.json").read_text())
    with torch.device("meta"):
        model = build_topdown_model("topdown_vit", {"ARCH": "base", "DROP_PATH_RATE": 0.3}, 17,
                                    codec=codec(192, 256))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k.replace("keypoint_head.", "head."): v for k, v in ref["keys"].items()}
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"] == 89_994_513
    assert sum(p.numel() for p in model.backbone.parameters()) == ref["num_backbone_parameters"] == 85_794_816
    assert model.backbone.grid == (16, 12) and ours["backbone.pos_embed"] == [1, 193, 768]
    # an official ViTPose-B file converts (shapes only: zero tensors that take no memory)
    sd = {"state_dict": {k: torch.zeros(()).expand(v) for k, v in ref["keys"].items()}}
    assert set(vitpose_to_bupose(sd, model)) == set(ours)
    with torch.device("meta"):
        large = build_topdown_model("topdown_vit", {"ARCH": "large"}, 17, codec=codec(192, 256))
    with pytest.raises(CheckpointError, match=r"backbone is ViT-B \(width 768, 12 blocks.*the model is ViT-L "
                                              r"\(width 1024, 24 blocks"):
        vitpose_to_bupose(sd, large)


# --- position embeddings -----------------------------------------------------------------------------------------
def _reference_resize(pos, src, dst, extra=1):
    """The official loader's resizing written out: patch entries as a (1, C, h, w) image, bicubic, no corners."""
    c = pos.shape[-1]
    grid = pos[:, extra:].reshape(1, *src, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :extra], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def test_a_checkpoint_made_at_another_input_size_loads_with_a_resized_position_embedding():
    big = tiny(size=(96, 128))  # 8x6 tokens
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        big.backbone.pos_embed.copy_(torch.randn(1, 49, 48, generator=g))
    sd = {("keypoint_head." + k[5:] if k.startswith("head.") else k): v for k, v in big.state_dict().items()}
    small = tiny()  # 4x3 tokens
    got = small.convert_checkpoint({"state_dict": sd})
    want = _reference_resize(big.backbone.pos_embed.detach(), (8, 6), (4, 3))
    assert got["backbone.pos_embed"].shape == (1, 13, 48)
    assert torch.allclose(got["backbone.pos_embed"], want, atol=1e-6)
    assert torch.equal(got["backbone.pos_embed"][:, 0], sd["backbone.pos_embed"][:, 0])  # the class entry is kept
    assert all(torch.equal(got[k], v) for k, v in big.state_dict().items() if k != "backbone.pos_embed")
    # mmpose 1.x names: no class entry (zero in ours), the patch entries resized the same way
    mm = {"backbone.pos_embed": sd["backbone.pos_embed"][:, 1:]}
    got = small.convert_checkpoint({**_mmpose1(sd), **mm})
    assert torch.equal(got["backbone.pos_embed"][:, 0], torch.zeros(1, 48))
    assert torch.allclose(got["backbone.pos_embed"][:, 1:], want[:, 1:], atol=1e-6)
    # an mmpose 1.x file with a class entry: mmpretrain's with_cls_token=False model drops it (zero in ours)
    got = small.convert_checkpoint({**_mmpose1(sd), "backbone.pos_embed": sd["backbone.pos_embed"]})
    assert torch.equal(got["backbone.pos_embed"][:, 0], torch.zeros(1, 48))
    assert torch.allclose(got["backbone.pos_embed"][:, 1:], want[:, 1:], atol=1e-6)
    same = small.convert_checkpoint({**_mmpose1(small.state_dict())})
    assert torch.equal(same["backbone.pos_embed"][:, 1:], small.backbone.pos_embed[:, 1:])
    assert torch.equal(same["backbone.pos_embed"][:, 0], torch.zeros(1, 48))
    # a crop of another size at run time: the embedding resized the same way (mmpretrain's forward)
    small.load_state_dict(got)
    with torch.no_grad():
        big.backbone.pos_embed.copy_(resize_pos_embed(small.backbone.pos_embed, (4, 3), (8, 6)))
        big.backbone.patch_embed.load_state_dict(small.backbone.patch_embed.state_dict())
        big.backbone.blocks.load_state_dict(small.backbone.blocks.state_dict())
        big.backbone.last_norm.load_state_dict(small.backbone.last_norm.state_dict())
        x = torch.randn(1, 3, 128, 96)
        assert torch.allclose(small.backbone.eval()(x), big.backbone.eval()(x), atol=1e-5)


def _mmpose1(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("keypoint_head.", "head.").replace("patch_embed.proj.", "patch_embed.projection.")
        k = k.replace("backbone.blocks.", "backbone.layers.").replace("backbone.last_norm.", "backbone.ln1.")
        k = k.replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.").replace(".mlp.fc1.", ".ffn.layers.0.0.")
        out[k.replace(".mlp.fc2.", ".ffn.layers.1.")] = v
    return out


def test_mae_weights_load_as_the_official_loader_loads_them(official, tmp_path):
    path = tmp_path / "mae_tiny.pth"
    torch.save(official["mae_backbone"], path)  # {"model": timm names, cls_token, pos_embed 1 + 7x7, norm.*}
    model = tiny()
    load_pretrained_vit(model, path)
    want = official["backbone_after_mae"]  # the official ViT after init_weights(pretrained=...)
    got = model.backbone.state_dict()
    assert set(got) == set(want)
    assert max(float((got[k] - want[k]).abs().max()) for k in want) < 1e-6
    mae_pos = official["mae_backbone"]["model"]["pos_embed"]
    assert torch.allclose(got["pos_embed"], _reference_resize(mae_pos, (7, 7), (4, 3)), atol=1e-6)
    # only the modules of PRETRAINED_LAYERS; mmpretrain names and a backbone. prefix work too
    other = tiny()
    before = other.backbone.pos_embed.detach().clone()
    mm = {"backbone." + k: v for k, v in _mmpose1({"backbone." + k: v for k, v in
                                                    official["mae_backbone"]["model"].items()}).items()}
    mm = {k.replace("backbone.backbone.", "backbone."): v for k, v in mm.items()}
    got = load_pretrained_vit(other, {"state_dict": mm}, pretrained_layers=["blocks"])
    assert torch.equal(other.backbone.pos_embed, before) and all(k.startswith("blocks.") for k in got["loaded"])
    assert torch.equal(other.backbone.blocks[1].mlp.fc2.weight, want["blocks.1.mlp.fc2.weight"])
    # another width or depth is refused
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_pretrained_vit(tiny({"EMBED_DIM": 32, "DEPTH": 2, "NUM_HEADS": 2}), path)
    with pytest.raises(CheckpointError, match=r"not in the checkpoint: blocks\.2\."):
        load_pretrained_vit(tiny({**TINY, "DEPTH": 3}), path)


# --- layer numbering ------------------------------------------------------------------------------------------
def test_layer_ids_follow_the_official_layer_decay_constructor(official):
    model = tiny()
    n = model.backbone.num_layers
    assert n == 2
    for name, want in official["layer_ids"].items():  # get_num_layer_for_vit over the official model's names
        ours = name.replace("keypoint_head.", "head.")
        got = model.backbone.layer_id(ours[len("backbone."):]) if ours.startswith("backbone.") else n + 1
        assert got == want, name
    assert model.backbone.layer_id("cls_token") == 0 and model.backbone.layer_id("blocks.1.attn.qkv.bias") == 2


# --- refusals ---------------------------------------------------------------------------------------------------
def test_checkpoints_of_other_architectures_are_refused(official):
    classic = official["official_classic"]
    with pytest.raises(CheckpointError, match="the classic decoder .*the model has the simple decoder"):
        load_checkpoint(tiny(TINY_SIMPLE), classic)
    with pytest.raises(CheckpointError, match="17 joints in the checkpoint, the model has 14"):
        load_checkpoint(tiny(k=14), classic)
    with pytest.raises(CheckpointError, match="2 blocks.*the model is ViT .*3 blocks"):
        load_checkpoint(tiny({**TINY, "DEPTH": 3}), classic)
    with pytest.raises(CheckpointError, match=r"deconvolutions \[\(32, 4\), \(32, 4\)\].*\[\(16, 4\), \(16, 4\)\]"):
        load_checkpoint(tiny({**TINY, "NUM_DECONV_FILTERS": [16, 16]}), classic)
    with pytest.raises(CheckpointError, match="3x3 convolution in the checkpoint, 1x1"):
        load_checkpoint(tiny({**TINY_SIMPLE, "FINAL_CONV_KERNEL": 1}), official["official_simple"])
    hrnet = build_topdown_model("topdown_hrnet", TINY_TOPDOWN_HRNET, 17).state_dict()
    hrnet = {k.split(".", 1)[1]: v for k, v in hrnet.items()}  # the official deep-high-resolution-net names
    with pytest.raises(CheckpointError, match="official top-down HRNet .*not a ViTPose checkpoint.*HRNet-W"):
        load_checkpoint(tiny(), hrnet)
    with pytest.raises(CheckpointError, match="MODEL.PRETRAINED"):
        load_checkpoint(tiny(), official["mae_backbone"])
    with pytest.raises(CheckpointError, match="'topdown_hrnet' checkpoint; the model is 'topdown_vit'"):
        load_checkpoint(tiny(), {"model": {}, "method": "topdown_hrnet"})


# --- MODEL.SPEC ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,match", [
    ({"ARCH": "bse"}, r"ARCH must be one of \['small', 'base', 'large', 'huge'\].*did you mean 'base'"),
    ({"ARCH": "base", "DEPTH": 6}, "DEPTH and MODEL.SPEC.ARCH both give"),
    ({"EMBED_DIM": 48, "DEPTH": 2}, "NUM_HEADS is missing"),
    ({"ARCH": "base", "DECODR": "simple"}, "DECODR is not a field of topdown_vit; did you mean DECODER"),
    ({"ARCH": "base", "DECODER": "heatmap"}, r"DECODER must be one of \['classic', 'simple'\]"),
    ({"ARCH": "base", "DECODER": "simple", "NUM_DECONV_FILTERS": [256, 256]}, "simple decoder .*no deconvolutions"),
    ({"ARCH": "base", "NUM_DECONV_FILTERS": [256]}, r"NUM_DECONV_FILTERS must be 2 values"),
    ({"ARCH": "base", "NUM_DECONV_KERNELS": [4, 5]}, r"NUM_DECONV_KERNELS must be 2 values of \[2, 3, 4\]"),
    ({"ARCH": "base", "PATCH_SIZE": 12}, "PATCH_SIZE must be 4 x a power of 2"),
    ({"EMBED_DIM": 50, "DEPTH": 2, "NUM_HEADS": 3}, "EMBED_DIM must be a multiple of NUM_HEADS"),
    ({"ARCH": "base", "DROP_PATH_RATE": 1.5}, r"DROP_PATH_RATE must be a number in \[0, 1\)"),
    ({"ARCH": "base", "QKV_BIAS": "yes"}, "QKV_BIAS must be true or false"),
    ({"ARCH": "base", "FINAL_CONV_KERNEL": 5}, r"FINAL_CONV_KERNEL must be one of \[1, 3\]"),
    ({"ARCH": "base", "INIT": "xavier"}, "INIT must be one of"),
    ({"ARCH": "base", "PRETRAINED_LAYERS": "blocks"}, "PRETRAINED_LAYERS must be a list"),
    ("base", "must be a dict"),
])
def test_spec_errors_name_the_field_and_what_it_should_be(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_topdown_model("topdown_vit", spec, 17)


def test_codec_and_image_size_errors():
    with pytest.raises(ConfigError, match="MSRAHeatmap or UDPHeatmap"):
        build_topdown_model("topdown_vit", TINY, 17, codec=SimCCLabel(input_size=(48, 64)))
    with pytest.raises(ConfigError, match="multiple of MODEL.SPEC.PATCH_SIZE 16"):
        build_topdown_model("topdown_vit", TINY, 17, codec=MSRAHeatmap(input_size=(40, 64), heatmap_size=(10, 16),
                                                                       sigma=2.0))


# --- the method: one training step on the synthetic data --------------------------------------------------------
def test_one_training_step_through_the_method(synthetic_root, tmp_path):
    from bupose.config import load_config
    from bupose.methods import build_method

    path = tmp_path / "vitpose.yaml"
    path.write_text(tiny_synthetic_header(synthetic_root, "topdown_vitpose_tiny_128x96.yaml", tmp_path / "output") + """\
MODEL:
  IMAGE_SIZE: [48, 64]
  HEATMAP_SIZE: [12, 16]
  CODEC: {type: UDPHeatmap, sigma: 2.0}
  SPEC: {EMBED_DIM: 32, DEPTH: 2, NUM_HEADS: 2, DROP_PATH_RATE: 0.1}
""", encoding="utf-8")
    method = build_method(load_config(path))
    assert method.name == "topdown_vit" and method.udp
    torch.manual_seed(0)
    model = method.build_model().train()
    assert type(model).method_name == "topdown_vit" and model.backbone.grid == (8, 6)
    data = method.train_dataset()
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in data[0]}
    out = model(batch["image"])
    assert out["heatmaps"].shape == batch["heatmaps"].shape == (4, 14, 16, 12)
    loss = method.loss_module()(out, batch)["loss"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)
    # MODEL.PRETRAINED through the method: backbone weights (here the trained ones, timm names) into a fresh model
    path = tmp_path / "vit.pth"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 32), **model.backbone.state_dict()}}, path)
    fresh = method.build_model()
    method.load_pretrained(fresh, path)
    assert all(torch.equal(a, b) for a, b in zip(fresh.backbone.state_dict().values(),
                                                 model.backbone.state_dict().values()))
