"""Benchmark: DEKR on CPU, per adaptive-convolution implementation, with the offset head fused or run branch by branch.

    python tools/benchmarks/dekr_forward.py [--parts infer train] [--threads 2] [--repeats 3]
        [--cfg W32.yaml] [--sizes 512 640] [--joints 14]
        [--train-cfg tiny.yaml] [--train-batch 16] [--train-size 192] [--train-impls grid_sample]

``infer``: batch-1 forward time (no grad, eval) of the whole ``--cfg`` network and of its offset head alone (where
the adaptive convolutions are) at each input size, for each of ``grid_sample`` / ``deform_conv2d`` x fused / loop
(:meth:`DEKR.set_fused_offset_head`), with the loop/fused ratio. When CUDA is available, also images/s at batch 1
and 8 (float32).

``train``: for the slim ``--train-cfg`` spec (``MODEL.SPEC.STEM_BLOCKS`` 1) at ``--train-batch`` x
``--train-size``^2: forward (eval, no grad), a training step (train mode, forward + backward) of the whole network
and the offset head's forward + backward alone, fused vs loop.

Times are the best of ``--repeats`` rounds after a warm-up round; the variants take turns within each round, so
that varying load from other processes affects all of them alike. The variants run on the same weights, and their
outputs (and, for ``train``, gradients and batch-norm statistics) are compared.
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose.config import load_config  # noqa: E402
from bupose.methods.dekr import build_dekr  # noqa: E402
from common import timed  # noqa: E402

IMPLS = ("grid_sample", "deform_conv2d")
MODES = ("fused", "loop")


def benchmark_model(spec, k: int, image_size: int):
    """DEKR with non-trivial weights and sampling points (the official init samples the centre only) and batch-norm
    statistics from one batch, so that activations stay O(1)."""
    torch.manual_seed(0)
    model = build_dekr(spec, k).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "transform_matrix_conv" in name or "translation_conv" in name:
                p.normal_(0, 0.05)
            elif name.endswith("weight") and p.dim() == 4:
                p.normal_(0, (2 / p[0].numel()) ** 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()(torch.randn(2, 3, image_size, image_size))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()


def configure(model, impl: str, mode: str):
    return model.set_adaptive_impl(impl).set_fused_offset_head(mode == "fused")


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def bench_inference(args, cpu):
    cfg = load_config(args.cfg)
    k = args.joints or cfg.DATASET.NUM_JOINTS
    model = benchmark_model(cfg.MODEL.SPEC, k, 256)
    print(f"\n[infer] {Path(args.cfg).name}: K={k}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters; CPU, batch 1, no grad, best of {args.repeats} (seconds)")
    variants = [(impl, mode) for impl in IMPLS for mode in MODES]
    print(f"{'size':>5} {'part':>12} " + " ".join(f"{i[:4] + '/' + m:>12}" for i, m in variants)
          + "   loop/fused: " + " ".join(i[:4] for i in IMPLS))
    with torch.no_grad():
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            offset_feats = model.transition_offset(model.forward_features(x))
            outs, fns = {}, {}
            for v in variants:
                outs[v] = configure(model, *v).offset_head(offset_feats)
                fns[("whole model", v)] = lambda v=v: configure(model, *v)(x)
                fns[("offset head", v)] = lambda v=v: configure(model, *v).offset_head(offset_feats)
            best = timed(fns, args.repeats, cpu)
            for part in ("whole model", "offset head"):
                t = {v: best[(part, v)] for v in variants}
                print(f"{size:>5} {part:>12} " + " ".join(f"{t[v]:>12.3f}" for v in variants) + "   "
                      + " ".join(f"{t[(i, 'loop')] / t[(i, 'fused')]:.2f}x" for i in IMPLS))
            ref = outs[("grid_sample", "loop")]
            others = [v for v in variants if v != ("grid_sample", "loop")]
            print(f"{size:>5} offsets, max |difference| / max |value| vs grid/loop: "
                  + ", ".join(f"{i[:4]}/{m} {rel_diff(outs[(i, m)], ref):.1e}" for i, m in others))

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        model = model.to(gpu)
        print(f"\nCUDA ({torch.cuda.get_device_name(gpu)}), float32, images/s")
        print(f"{'size':>5} {'batch':>5} " + " ".join(f"{i[:4] + '/' + m:>12}" for i, m in variants))
        with torch.no_grad():
            for size in args.sizes:
                for batch in (1, 8):
                    x = torch.randn(batch, 3, size, size, device=gpu)
                    fns = {v: lambda v=v: configure(model, *v)(x) for v in variants}
                    speed = {v: batch / t for v, t in timed(fns, max(args.repeats, 10), gpu).items()}
                    print(f"{size:>5} {batch:>5} " + " ".join(f"{speed[v]:>12.1f}" for v in variants))


def bench_training(args, cpu):
    cfg = load_config(args.train_cfg)
    spec = dict(cfg.MODEL.SPEC, STEM_BLOCKS=1)
    k, b, s = cfg.DATASET.NUM_JOINTS, args.train_batch, args.train_size
    model = benchmark_model(spec, k, s)
    print(f"\n[train] {Path(args.train_cfg).name} with STEM_BLOCKS 1: K={k}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; CPU, batch {b}, {s}x{s}, "
          f"best of {args.repeats} (seconds)")
    x = torch.randn(b, 3, s, s)
    with torch.no_grad():
        offset_feats = model.transition_offset(model.forward_features(x))

    def loss(out):
        return out["heatmap"].square().mean() + out["offset"].square().mean()

    def forward(model):
        with torch.no_grad():
            model.eval()(x)

    def train_step(model):
        loss(model.train()(x)).backward()

    def head_step(model):
        model.train().offset_head(offset_feats).square().mean().backward()

    for impl in args.train_impls:
        models = {m: configure(copy.deepcopy(model), impl, m) for m in MODES}
        fns = {(part, m): (lambda f=f, m=m: f(models[m])) for part, f in
               (("forward", forward), ("train step", train_step), ("head fwd+bwd", head_step)) for m in MODES}
        best = timed(fns, args.repeats, cpu)
        print(f"{impl}: {'':>12} {'fused':>8} {'loop':>8}  loop/fused")
        for part in ("forward", "train step", "head fwd+bwd"):
            t = {m: best[(part, m)] for m in MODES}
            print(f"{'':>{len(impl) + 1}} {part:>12} {t['fused']:>8.3f} {t['loop']:>8.3f}  "
                  f"{t['loop'] / t['fused']:.2f}x")
        # the same step from the same state: outputs, gradients and batch-norm statistics must agree
        for m in models.values():
            m.load_state_dict(model.state_dict())
            m.zero_grad(set_to_none=True)
        outs = {m: models[m].train()(x) for m in MODES}
        loss(outs["fused"]).backward()
        loss(outs["loop"]).backward()
        grads = max(rel_diff(p.grad, q.grad) for p, q in zip(models["fused"].parameters(),
                                                               models["loop"].parameters()) if q.grad is not None)
        sd = [v.float() for v in models["fused"].state_dict().values()], \
            [v.float() for v in models["loop"].state_dict().values()]
        stats = max((p - q).abs().max().item() for p, q in zip(*sd))
        print(f"{'':>{len(impl) + 1}} fused vs loop, max |difference| / max |value|: offsets "
              f"{rel_diff(outs['fused']['offset'], outs['loop']['offset']):.1e}, gradients (worst tensor) "
              f"{grads:.1e}; state_dict after it (batch-norm statistics): max |difference| {stats:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    parser.add_argument("--cfg", default=str(REPO / "experiments/crowdpose/dekr_w32_512.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 640])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--joints", type=int, default=0, help="keypoints (0: DATASET.NUM_JOINTS of --cfg)")
    parser.add_argument("--train-cfg", default=str(REPO / "experiments/synthetic/dekr_tiny_256.yaml"))
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=192)
    parser.add_argument("--train-impls", nargs="+", choices=IMPLS, default=["grid_sample"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    cpu = torch.device("cpu")
    if "infer" in args.parts:
        bench_inference(args, cpu)
    if "train" in args.parts:
        bench_training(args, cpu)


if __name__ == "__main__":
    main()
