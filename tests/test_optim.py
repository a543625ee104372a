"""Optimiser groups, schedules with warm-up, gradient accumulation and the weight EMA (bupose.engine.optim)."""
import math

import pytest
import torch
from torch import nn

from bupose.config import load_config
from bupose.engine.optim import ModelEMA, Schedule, build_optimizer, epoch_factor, parameter_groups
from bupose.errors import ConfigError


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.GroupNorm(1, 2))


def _cfg(**train):
    opts = []
    for k, v in train.items():
        opts += [f"TRAIN.{k}", str(v)]
    return load_config(None, opts)


def test_three_groups_put_norm_weights_and_biases_apart():
    net = _net()
    groups = {g["name"]: g for g in parameter_groups(net, 5e-4, decay_norm_and_bias=False)}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups["norm"]["params"]) == {id(net[1].weight), id(net[3].weight)}
    assert ids(groups["weight"]["params"]) == {id(net[0].weight), id(net[2].weight)}
    assert ids(groups["bias"]["params"]) == {id(net[1].bias), id(net[2].bias), id(net[3].bias)}
    assert groups["weight"]["weight_decay"] == 5e-4 and groups["norm"]["weight_decay"] == 0
    assert groups["bias"]["weight_decay"] == 0
    one = parameter_groups(net, 5e-4)
    assert len(one) == 1 and len(one[0]["params"]) == len(list(net.parameters()))


def test_sgd_nesterov_and_weight_decay_scaled_to_the_nominal_batch():
    cfg = _cfg(OPTIMIZER="sgd", NESTEROV=True, WD=0.0005, DECAY_NORM_AND_BIAS=False, NOMINAL_BATCH=64)
    opt = build_optimizer(cfg, _net(), global_batch=16)  # 4 iterations per step: decay * 16 * 4 / 64
    assert opt.defaults["nesterov"] is True
    assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx([0, 0.0005, 0])
    opt = build_optimizer(cfg, _net(), global_batch=24)  # round(64 / 24) = 3 -> 24 * 3 / 64
    assert opt.param_groups[1]["weight_decay"] == pytest.approx(0.0005 * 72 / 64)
    with pytest.raises(ConfigError, match="TRAIN.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="rmsprop"), _net())


def test_cosine_and_linear_run_from_one_to_the_final_fraction():
    cos = _cfg(LR_SCHEDULE="cosine", END_EPOCH=10, LR_FINAL=0.2)
    assert epoch_factor(cos, 0) == pytest.approx(1.0)
    assert epoch_factor(cos, 5) == pytest.approx(0.6)
    assert epoch_factor(cos, 10) == pytest.approx(0.2)
    lin = _cfg(LR_SCHEDULE="linear", END_EPOCH=11, LR_FINAL=0.1)
    assert [epoch_factor(lin, e) for e in (0, 5, 10)] == pytest.approx([1.0, 0.55, 0.1])
    with pytest.raises(ConfigError, match="LR_SCHEDULE"):
        epoch_factor(_cfg(LR_SCHEDULE="exp"), 0)


def test_warmup_ramps_biases_down_weights_up_and_momentum_up():
    cfg = _cfg(OPTIMIZER="sgd", LR=0.01, MOMENTUM=0.937, DECAY_NORM_AND_BIAS=False, WARMUP_EPOCHS=2,
               WARMUP_MIN_ITERS=0, WARMUP_BIAS_LR=0.1, WARMUP_MOMENTUM=0.8, LR_SCHEDULE="step", LR_STEP=[100])
    opt = build_optimizer(cfg, _net())
    sched = Schedule(cfg, iters_per_epoch=5, global_batch=8)
    assert sched.warmup == 10
    sched.apply(opt, 0, 0)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"norm": 0.0, "weight": 0.0, "bias": 0.1})
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    sched.apply(opt, 1, 0)  # iteration 5 of 10: half way
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"norm": 0.005, "weight": 0.005, "bias": 0.055})
    assert opt.param_groups[2]["momentum"] == pytest.approx((0.8 + 0.937) / 2)
    assert sched.apply(opt, 2, 0) == pytest.approx(0.01)  # after warm-up: the schedule
    assert all(g["lr"] == pytest.approx(0.01) and g["momentum"] == pytest.approx(0.937) for g in opt.param_groups)
    assert Schedule(_cfg(WARMUP_EPOCHS=0.1, WARMUP_MIN_ITERS=1000), 5, 8).warmup == 1000


def test_accumulation_ramps_up_during_warmup():
    cfg = _cfg(NOMINAL_BATCH=64, WARMUP_EPOCHS=1, WARMUP_MIN_ITERS=0)
    sched = Schedule(cfg, iters_per_epoch=30, global_batch=8)
    assert sched.accumulate == 8
    assert sched.accumulation(0, 0) == 1
    assert sched.accumulation(0, 15) == round(1 + 7 * 15 / 30)
    assert sched.accumulation(1, 0) == 8
    assert Schedule(_cfg(), 30, 8).accumulation(0, 0) == 1


def test_ema_follows_the_ramped_decay():
    net = _net()
    ema = ModelEMA(net, decay=0.9, tau=2.0)
    before = ema.module[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    d = 0.9 * (1 - math.exp(-1 / 2.0))
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * net[0].weight)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    copy = ModelEMA(_net())
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 1 and torch.equal(copy.module[0].weight, ema.module[0].weight)


def test_flat_cosine_holds_then_follows_mmengines_per_iteration_cosine():
    cfg = _cfg(LR_SCHEDULE="flat_cosine", LR=0.004, END_EPOCH=10, FLAT_EPOCHS=4, LR_FINAL=0.05)
    assert [epoch_factor(cfg, e) for e in (0, 3.99, 4)] == pytest.approx([1.0, 1.0, 1.0])
    # mmengine's CosineAnnealingLR(eta_min=0.05 lr, T_max=6 epochs), converted to iterations
    for e in (4.5, 7.0, 9.25, 10.0):
        want = 0.05 + (1 - 0.05) * (1 + math.cos(math.pi * (e - 4) / 6)) / 2
        assert epoch_factor(cfg, e) == pytest.approx(want)
    opt = build_optimizer(cfg, _net())
    sched = Schedule(cfg, iters_per_epoch=4, global_batch=8)
    got = sched.apply(opt, 7, 2)  # epoch 7.5: moves within the epoch
    assert got == pytest.approx(0.004 * epoch_factor(cfg, 7.5)) and got < 0.004 * epoch_factor(cfg, 7.0)
    with pytest.raises(ConfigError, match="FLAT_EPOCHS"):
        epoch_factor(_cfg(LR_SCHEDULE="flat_cosine", END_EPOCH=10, FLAT_EPOCHS=10), 0)


class _Blocks(nn.Module):
    """A ViT-like backbone: numbered blocks and a layer_id."""

    def __init__(self, depth=3):
        super().__init__()
        self.num_layers = depth
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 2))
        self.patch_embed = nn.Conv2d(3, 2, 1)
        self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(depth))
        self.last_norm = nn.LayerNorm(2)

    def layer_id(self, name):
        if name.startswith(("pos_embed", "patch_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1


def test_layer_decay_scales_each_block_and_spares_vectors_and_position_embeddings():
    model = nn.Module()
    model.backbone, model.head = _Blocks(3), nn.Conv2d(2, 5, 1)
    cfg = _cfg(OPTIMIZER="adamw", LR=0.1, WD=0.1, LAYER_DECAY=0.5)
    opt = build_optimizer(cfg, model)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    group = lambda p: by_param[id(p)]  # noqa: E731
    bb = model.backbone
    assert group(bb.patch_embed.weight)["lr_scale"] == pytest.approx(0.5 ** 4)
    assert group(bb.blocks[0].weight)["lr_scale"] == pytest.approx(0.5 ** 3)
    assert group(bb.blocks[2].weight)["lr_scale"] == pytest.approx(0.5)
    assert group(bb.last_norm.weight)["lr_scale"] == group(model.head.weight)["lr_scale"] == 1
    assert group(bb.pos_embed)["weight_decay"] == 0 and group(bb.blocks[1].bias)["weight_decay"] == 0
    assert group(bb.last_norm.weight)["weight_decay"] == 0 and group(model.head.weight)["weight_decay"] == 0.1
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert Schedule(cfg, 5, 8).apply(opt, 0, 0) == pytest.approx(0.1)  # the unscaled rate is reported
    assert group(bb.blocks[0].weight)["lr"] == pytest.approx(0.1 * 0.5 ** 3)
    with pytest.raises(ConfigError, match="LAYER_DECAY"):
        build_optimizer(cfg, _net())
