"""Benchmark: DEKR-W32 forward time with each adaptive-convolution implementation.

    python tools/benchmarks/dekr_forward.py [--sizes 512 640] [--repeats 3] [--threads N] [--joints 14]

On CPU: batch-1 forward time of the whole network and of the offset head alone (where the adaptive convolutions
are) at each input size, for ``grid_sample`` and ``deform_conv2d``, with the ratio. When CUDA is available, also
images/s at batch 1 and 8 (float32). Both implementations run on the same weights and their outputs are compared.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose.config import load_config  # noqa: E402
from bupose.methods.dekr import build_dekr  # noqa: E402

IMPLS = ("grid_sample", "deform_conv2d")


def timed(fns: dict, repeats: int, device: torch.device) -> dict:
    """Best (smallest) seconds of each ``fn()`` over ``repeats`` rounds after one warm-up; the functions take turns
    within each round, so that varying load from other processes affects all of them alike."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = {}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            if r:  # round 0 is the warm-up
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    return best


def offset_head(model, feats):
    c = model.offset_prekpt
    f = model.transition_offset(feats)
    return [layer(f[:, j * c:(j + 1) * c]) for j, layer in enumerate(model.offset_feature_layers)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=str(REPO / "experiments/crowdpose/dekr_w32_512.yaml"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 640])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--joints", type=int, default=0, help="keypoints (0: DATASET.NUM_JOINTS of --cfg)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.cfg)
    k = args.joints or cfg.DATASET.NUM_JOINTS
    torch.manual_seed(0)
    model = build_dekr(cfg.MODEL.SPEC, k).eval()
    with torch.no_grad():  # non-trivial weights and sampling points (the official init samples the centre only)
        for name, p in model.named_parameters():
            if "transform_matrix_conv" in name or "translation_conv" in name:
                p.normal_(0, 0.05)
            elif name.endswith("weight") and p.dim() == 4:
                p.normal_(0, (2 / p[0].numel()) ** 0.5)
        for m in model.modules():  # BatchNorm statistics from one batch, so activations stay O(1)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()(torch.randn(2, 3, 256, 256))
        model.eval()
    print(f"{Path(args.cfg).name}: K={k}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    cpu = torch.device("cpu")
    print(f"\nCPU, batch 1, best of {args.repeats} (seconds)")
    print(f"{'size':>5} {'part':>12} " + " ".join(f"{i:>14}" for i in IMPLS) + "   deform/grid")
    with torch.no_grad():
        for size in args.sizes:
            x = torch.randn(1, 3, size, size)
            feats = model.forward_features(x)
            outs, fns = {}, {}
            for impl in IMPLS:
                model.set_adaptive_impl(impl)
                outs[impl] = torch.cat(offset_head(model, feats), 1)
                fns[("whole model", impl)] = lambda impl=impl: model.set_adaptive_impl(impl)(x)
                fns[("offset head", impl)] = lambda impl=impl: offset_head(model.set_adaptive_impl(impl), feats)
            best = timed(fns, args.repeats, cpu)
            rows = {part: {impl: best[(part, impl)] for impl in IMPLS} for part in ("whole model", "offset head")}
            a, b = outs.values()
            diff = ((a - b).abs().max() / a.abs().max()).item()
            for part, t in rows.items():
                print(f"{size:>5} {part:>12} " + " ".join(f"{t[i]:>14.3f}" for i in IMPLS)
                      + f"   {t['deform_conv2d'] / t['grid_sample']:.2f}x")
            print(f"{size:>5} offset-head features: max |difference| / max |value| = {diff:.1e}")

    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        model = model.to(gpu)
        print(f"\nCUDA ({torch.cuda.get_device_name(gpu)}), float32, images/s")
        print(f"{'size':>5} {'batch':>5} " + " ".join(f"{i:>14}" for i in IMPLS))
        with torch.no_grad():
            for size in args.sizes:
                for batch in (1, 8):
                    x = torch.randn(batch, 3, size, size, device=gpu)
                    fns = {impl: lambda impl=impl: model.set_adaptive_impl(impl)(x) for impl in IMPLS}
                    speed = {impl: batch / t for impl, t in timed(fns, max(args.repeats, 10), gpu).items()}
                    print(f"{size:>5} {batch:>5} " + " ".join(f"{speed[i]:>14.1f}" for i in IMPLS))


if __name__ == "__main__":
    main()
