"""Building blocks: residual blocks, the adaptive convolution (both implementations), fused execution of same-shaped
blocks and the HRNet backbone."""
import io

import pytest
import torch
import torch.nn.functional as F

from bupose.errors import ConfigError
from bupose.models import layers
from bupose.models.backbones import HRNet
from bupose.models.layers import (AdaptBlock, AdaptiveConv2d, BasicBlock, Bottleneck, ModulatedDeformConv2d,
                                  adaptive_conv2d, adaptive_offsets, can_fuse, fused_block, grouped_batch_norm,
                                  make_layer, modulated_deform_conv2d, regular_grid, sampling_grid,
                                  set_adaptive_impl)

TINY_STAGES = {"NUM_STAGES": 3, "NUM_MODULES": [1, 1, 1], "NUM_BRANCHES": [2, 3, 4], "BLOCK": ["BASIC"] * 3,
               "NUM_BLOCKS": [[1, 1], [1, 1, 1], [1, 1, 1, 1]],
               "NUM_CHANNELS": [[4, 8], [4, 8, 16], [4, 8, 16, 32]], "FUSE_METHOD": ["SUM"] * 3}


def _adaptive_case(seed=0, b=2, c=5, o=7, h=9, w=11, spread=4.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(o, c, 3, 3, generator=g, dtype=dtype)
    transform = torch.eye(2, dtype=dtype).reshape(1, 4, 1, 1) + 1.5 * torch.randn(b, 4, h, w, generator=g, dtype=dtype)
    translation = spread * torch.randn(b, 2, h, w, generator=g, dtype=dtype)
    return x, weight, transform, translation


def test_regular_grid_is_row_major_y_then_x():
    assert regular_grid().tolist() == [[-1, -1, -1, 0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1, -1, 0, 1]]


@pytest.mark.parametrize("dilation", [1, 2])
def test_adaptive_implementations_agree_including_points_outside(dilation):
    x, weight, transform, translation = _adaptive_case(spread=4.0)
    # a good share of the sampling points falls fully or partly outside the 9x11 map
    offset = adaptive_offsets(transform, translation, dilation=dilation)
    ys = torch.arange(9.0).view(1, 1, 9, 1) + offset[:, 0::2] + dilation * regular_grid()[0].view(1, 9, 1, 1)
    assert ((ys <= -1) | (ys >= 9)).float().mean() > 0.1
    a = adaptive_conv2d(x, weight, transform, translation, dilation=dilation, impl="grid_sample")
    b = adaptive_conv2d(x, weight, transform, translation, dilation=dilation, impl="deform_conv2d")
    assert a.shape == (2, 7, 9, 11)
    assert (a - b).abs().max() <= 1e-4


def test_adaptive_implementations_agree_in_float64_and_at_integer_borders():
    x, weight, transform, translation = _adaptive_case(seed=1, dtype=torch.float64)
    a = adaptive_conv2d(x, weight, transform, translation, impl="grid_sample")
    b = adaptive_conv2d(x, weight, transform, translation, impl="deform_conv2d")
    assert (a - b).abs().max() <= 1e-10
    # integer positions exactly on and beyond the border (-1, H, W, ...)
    t_int = torch.randint(-12, 13, translation.shape, generator=torch.Generator().manual_seed(2)).double()
    eye = torch.eye(2, dtype=torch.float64).reshape(1, 4, 1, 1).expand_as(transform)
    a = adaptive_conv2d(x, weight, eye, t_int, impl="grid_sample")
    b = adaptive_conv2d(x, weight, eye, t_int, impl="deform_conv2d")
    assert (a - b).abs().max() <= 1e-10


def test_adaptive_gradients_agree():
    grads = []
    for impl in ("grid_sample", "deform_conv2d"):
        inputs = [t.clone().requires_grad_() for t in _adaptive_case(seed=3, dtype=torch.float64)]
        adaptive_conv2d(*inputs, impl=impl).pow(2).sum().backward()
        grads.append([t.grad for t in inputs])
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("impl", ["grid_sample", "deform_conv2d"])
def test_half_precision_inputs_sample_at_float32_positions(impl):
    # at 160x160 (640 input) bfloat16 positions would be off by up to a pixel; the sampling runs in float32
    x, weight, transform, translation = (t.bfloat16() for t in _adaptive_case(seed=5, b=1, h=160, w=160))
    out = adaptive_conv2d(x, weight, transform, translation, impl=impl)
    ref = adaptive_conv2d(x.float(), weight.float(), transform.float(), translation.float(), impl=impl)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.02 * ref.abs().max()


@pytest.mark.parametrize("impl", ["grid_sample", "deform_conv2d"])
def test_identity_transform_is_a_plain_convolution(impl):
    x, weight, transform, translation = _adaptive_case(seed=4)
    eye = torch.eye(2).reshape(1, 4, 1, 1).expand_as(transform)
    for d in (1, 2):
        out = adaptive_conv2d(x, weight, eye, torch.zeros_like(translation), dilation=d, impl=impl)
        assert (out - F.conv2d(x, weight, padding=d, dilation=d)).abs().max() <= 1e-4


def test_adapt_block_keys_shapes_and_impl_switch():
    block = AdaptBlock(15, 15).eval()
    assert set(block.state_dict()) == {
        "regular_matrix", "transform_matrix_conv.weight", "transform_matrix_conv.bias", "translation_conv.weight",
        "translation_conv.bias", "adapt_conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "bn.num_batches_tracked"}
    x = torch.randn(2, 15, 12, 10)
    with torch.no_grad():
        a = block(x)
        b = set_adaptive_impl(block, "deform_conv2d")(x)
    assert a.shape == (2, 15, 12, 10) and (a - b).abs().max() <= 1e-4
    assert block.adapt_conv.impl == "deform_conv2d"
    with pytest.raises(ValueError, match="impl must be one of"):
        set_adaptive_impl(block, "cuda_magic")
    with pytest.raises(ValueError, match="impl must be one of"):
        AdaptiveConv2d(3, 3, impl="nope")


def _adapt_block_with_moved_points():
    block = AdaptBlock(6, 6).eval()
    with torch.no_grad():
        block.translation_conv.bias.normal_(0, 2)
        block.transform_matrix_conv.bias.copy_(torch.tensor([1.0, 0.2, -0.3, 1.0]))
    return block


def _dcn_with_moved_points():
    dcn = ModulatedDeformConv2d(6, 5, stride=2).eval()
    with torch.no_grad():
        dcn.conv_offset_mask.weight.normal_(0, 0.3)
    return dcn


@pytest.mark.parametrize("make", [_adapt_block_with_moved_points, _dcn_with_moved_points])
def test_adaptive_grid_sample_exports_to_onnx(make):
    """DEKR's adaptive block and DCNv2, both gathering with grid_sample, export to ONNX and run there alike."""
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    block = make()
    x = torch.randn(1, 6, 10, 12)
    buf = io.BytesIO()
    torch.onnx.export(block, (x,), buf, opset_version=17, input_names=["x"], output_names=["y"], dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    assert any(n.op_type == "GridSample" for n in model.graph.node)
    ort = pytest.importorskip("onnxruntime")
    y = ort.InferenceSession(buf.getvalue()).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert abs(torch.from_numpy(y) - block(x)).max() <= 1e-4


def test_residual_blocks_and_make_layer():
    x = torch.randn(2, 16, 8, 8)
    assert BasicBlock(16, 16)(x).shape == (2, 16, 8, 8)
    layer = make_layer(Bottleneck, 16, 8, 3, stride=2)
    assert layer(x).shape == (2, 32, 4, 4)
    assert layer[0].downsample is not None and layer[1].downsample is None
    assert make_layer(BasicBlock, 16, 16, 2)[0].downsample is None
    assert BasicBlock(16, 16, dilation=2)(x).shape == (2, 16, 8, 8)


@pytest.mark.parametrize("size", [(64, 64), (100, 75)])
def test_hrnet_fuses_all_branches_at_stride_4(size):
    net = HRNet(stages=TINY_STAGES, stem_blocks=1).eval()
    assert net.out_channels == 4 + 8 + 16 + 32
    with torch.no_grad():
        out = net(torch.randn(1, 3, *size))
        branches = net.forward_branches(torch.randn(1, 3, *size))
    assert out.shape == (1, 60, -(-size[0] // 4), -(-size[1] // 4))
    assert [b.shape[1] for b in branches] == [4, 8, 16, 32]


def test_hrnet_spec_errors_name_the_field():
    bad = dict(TINY_STAGES, NUM_BLOCKS=[[1, 1], [1, 1], [1, 1, 1, 1]])
    with pytest.raises(ConfigError, match=r"NUM_BLOCKS\[1\] has 2 entries, NUM_BRANCHES\[1\] is 3"):
        HRNet(stages=bad)
    with pytest.raises(ConfigError, match="missing fields \\['FUSE_METHOD'\\]"):
        HRNet(stages={k: v for k, v in TINY_STAGES.items() if k != "FUSE_METHOD"})
    with pytest.raises(ConfigError, match="BLOCK\\[0\\] must be BASIC or BOTTLENECK"):
        HRNet(stages=dict(TINY_STAGES, BLOCK=["ADAPTIVE", "BASIC", "BASIC"]))


# --- fused execution of G same-shaped blocks (DEKR's offset head) ---------------------------------------------------

def _perturbed(module, seed=0):
    """Non-trivial weights, biases and BN statistics / affine parameters, so that every term matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g, dtype=t.dtype))
            elif t.is_floating_point() and not name.endswith("regular_matrix"):
                t.copy_(0.3 * torch.randn(t.shape, generator=g, dtype=t.dtype))
    return module


@pytest.mark.parametrize("impl", ["grid_sample", "deform_conv2d"])
@pytest.mark.parametrize("dilation", [1, 2])
def test_grouped_adaptive_conv_is_per_group_convs(impl, dilation):
    g, c = 3, 5
    cases = [_adaptive_case(seed=10 + j, c=c, o=4, dtype=torch.float64) for j in range(g)]
    x, weight, transform, translation = (torch.cat(ts, dim=1 if i != 1 else 0) for i, ts in enumerate(zip(*cases)))
    out = adaptive_conv2d(x, weight, transform, translation, dilation=dilation, impl=impl, groups=g)
    ref = torch.cat([adaptive_conv2d(*case, dilation=dilation, impl=impl) for case in cases], 1)
    assert out.shape == (2, 12, 9, 11) and (out - ref).abs().max() <= 1e-10


def test_chunked_sampling_is_exact(monkeypatch):
    """On CPU the grid_sample implementation samples in chunks of (batch item, group) samples; chunks of 2 samples
    with 3 groups straddle the groups and the batch items. Values and gradients equal the one-chunk result."""
    g, (b, c, h, w) = 3, (2, 5, 9, 11)
    results = []
    for chunk_bytes in (1 << 40, 2 * c * 9 * h * w * 8):
        monkeypatch.setattr(layers, "SAMPLING_CHUNK_BYTES", chunk_bytes)
        inputs = [torch.cat(ts, dim=1 if i != 1 else 0).requires_grad_() for i, ts in enumerate(zip(
            *[_adaptive_case(seed=20 + j, b=b, c=c, o=4, h=h, w=w, dtype=torch.float64) for j in range(g)]))]
        out = adaptive_conv2d(*inputs, groups=g)
        out.pow(2).sum().backward()
        results.append([out] + [t.grad for t in inputs])
    for a, r in zip(*results):
        assert (a - r).abs().max() <= 1e-10


@pytest.mark.parametrize("dilation", [1, 2])
def test_sampling_grid_is_the_displaced_kernel(dilation):
    _, _, transform, translation = _adaptive_case(seed=7, dtype=torch.float64)
    n, _, h, w = transform.shape
    grid = sampling_grid(torch.cat([transform, translation], 1), regular_grid().double(), dilation)
    offset = adaptive_offsets(transform, translation, dilation=dilation)  # [dy, dx] per point, minus the kernel
    py = torch.arange(h).view(1, 1, h, 1) + offset[:, 0::2] + dilation * regular_grid()[0].view(1, 9, 1, 1)
    px = torch.arange(w).view(1, 1, 1, w) + offset[:, 1::2] + dilation * regular_grid()[1].view(1, 9, 1, 1)
    ref = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1).reshape(n, 9 * h, w, 2)
    assert grid.shape == (n, 9 * h, w, 2) and (grid - ref).abs().max() <= 1e-12


def _block_pairs(kind, g=4, dtype=torch.float64):
    """G blocks of one kind (as the per-group reference) and a deep copy to run fused."""
    import copy

    make = {"adaptive": lambda: AdaptBlock(6, 6),
            "adaptive_dilated": lambda: AdaptBlock(6, 6, dilation=2, impl="deform_conv2d"),
            "basic": lambda: BasicBlock(6, 6),
            "bottleneck": lambda: make_layer(Bottleneck, 6, 3, 1, stride=2)[0]}[kind]
    ref = torch.nn.ModuleList([_perturbed(make(), seed=j) for j in range(g)]).to(dtype)
    return ref, copy.deepcopy(ref)


@pytest.mark.parametrize("kind", ["adaptive", "adaptive_dilated", "basic", "bottleneck"])
@pytest.mark.parametrize("train", [False, True])
def test_fused_block_is_the_per_group_blocks(kind, train):
    ref, fused = _block_pairs(kind)
    ref.train(train), fused.train(train)
    assert can_fuse(list(fused))
    x = torch.randn(2, 4 * 6, 10, 9, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    a = fused_block(x2, list(fused))
    b = torch.cat([blk(xg) for blk, xg in zip(ref, x.chunk(4, 1))], 1)
    assert a.shape == b.shape and (a - b).abs().max() <= 1e-10
    w = torch.randn_like(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert (x.grad - x2.grad).abs().max() <= 1e-10
    for (name, p), q in zip(fused.named_parameters(), ref.parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-10, name
    for (name, s), t in zip(fused.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(s, t) if not s.is_floating_point() else (s - t).abs().max() <= 1e-12, name
    if train:  # the statistics moved, in every block
        assert all(int(blk.bn1.num_batches_tracked if hasattr(blk, "bn1") else blk.bn.num_batches_tracked) == 1
                   for blk in fused)


def test_grouped_batch_norm_cumulative_average_and_no_running_stats():
    def per_module(modules, x):
        return torch.cat([m(xg) for m, xg in zip(modules, x.chunk(len(modules), 1))], 1)

    bns = [torch.nn.BatchNorm2d(3, momentum=None).train() for _ in range(2)]
    refs = [torch.nn.BatchNorm2d(3, momentum=None).train() for _ in range(2)]
    for step in range(2):
        x = torch.randn(4, 6, 5, 5)
        assert (grouped_batch_norm(x, bns) - per_module(refs, x)).abs().max() <= 1e-5
    refs[1](torch.randn(4, 3, 5, 5))  # other counts: falls back to the modules one by one
    bns[1].load_state_dict(refs[1].state_dict())
    x = torch.randn(4, 6, 5, 5)
    assert (grouped_batch_norm(x, bns) - per_module(refs, x)).abs().max() <= 1e-5
    for m, r in zip(bns, refs):
        assert all(torch.allclose(s, t) for s, t in zip(m.state_dict().values(), r.state_dict().values()))
    plain = [torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False).eval() for _ in range(2)]
    assert (grouped_batch_norm(x, plain) - per_module(plain, x)).abs().max() <= 1e-5


def test_can_fuse_refuses_what_it_cannot_reproduce():
    blocks = [AdaptBlock(6, 6) for _ in range(3)]
    assert can_fuse(blocks)
    assert not can_fuse(blocks[:2] + [AdaptBlock(6, 6, impl="deform_conv2d")])  # other impl
    assert not can_fuse(blocks[:2] + [AdaptBlock(6, 6, dilation=2)])  # other dilation
    assert not can_fuse(blocks[:2] + [BasicBlock(6, 6)])  # other kind
    assert not can_fuse([blocks[0], blocks[1].eval(), blocks[2]])  # train / eval mixed
    blocks[1].train()
    handle = blocks[2].bn.register_forward_hook(lambda *a: None)  # hooks would be bypassed
    assert not can_fuse(blocks)
    handle.remove()
    blocks[0].bn = torch.nn.SyncBatchNorm(6)  # would need a cross-process reduction
    assert not can_fuse(blocks)
    assert can_fuse([torch.nn.Conv2d(6, 2, 1) for _ in range(3)])
    assert not can_fuse([torch.nn.Conv2d(6, 2, 1), torch.nn.Conv2d(6, 2, 1, bias=False)])


@pytest.mark.parametrize("stride, padding, dilation, k", [(1, 1, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3), (2, 0, 1, 2)])
def test_modulated_deform_conv_grid_sample_equals_deform_conv2d(stride, padding, dilation, k, monkeypatch):
    """The grid_sample gathering of DCNv2 equals torchvision's deform_conv2d (values and gradients, float64), with
    offsets that put many points outside the input and in chunks of one sample on CPU."""
    monkeypatch.setattr(layers, "SAMPLING_CHUNK_BYTES", 1)
    g = torch.Generator().manual_seed(stride * 10 + dilation + k)
    b, c, o, h, w = 2, 3, 4, 9, 12
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    offset = 3.0 * torch.randn(b, 2 * k * k, ho, wo, generator=g, dtype=torch.float64)
    offset[0, :, 0, 0] = 40.0  # far outside: zero
    mask = torch.rand(b, k * k, ho, wo, generator=g, dtype=torch.float64)
    weight = torch.randn(o, c, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(o, generator=g, dtype=torch.float64)
    outs, grads = [], []
    for impl in ("grid_sample", "deform_conv2d"):
        inputs = [t.clone().requires_grad_(True) for t in (x, offset, mask, weight, bias)]
        out = modulated_deform_conv2d(*inputs, stride=stride, padding=padding, dilation=dilation, impl=impl)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outs.append(out)
        grads.append([t.grad for t in inputs])
    assert outs[0].shape == (b, o, ho, wo)
    assert torch.allclose(outs[0], outs[1], atol=1e-10)
    for name, a, r in zip(("x", "offset", "mask", "weight", "bias"), *grads):
        assert torch.allclose(a, r, atol=1e-8), name


def test_modulated_deform_conv_module_switches_implementation():
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(4, 6, stride=2)
    torch.nn.init.normal_(m.conv_offset_mask.weight, std=0.5)  # offsets of a few pixels, not the zero init
    x = torch.randn(2, 4, 10, 14)
    a = m(x)
    assert m.impl == "grid_sample"
    b = set_adaptive_impl(m, "deform_conv2d")(x)
    assert m.impl == "deform_conv2d" and a.shape == (2, 6, 5, 7)
    assert (a - b).abs().max() < 1e-4
    with pytest.raises(ValueError, match="impl must be one of"):
        ModulatedDeformConv2d(4, 6, impl="dcn")
