"""Benchmark: size, cost and CPU forward time of every top-down COCO config, next to the published figures.

    python tools/benchmarks/topdown_complexity.py [--cfg experiments/coco/topdown_res50_256x192.yaml ...]
        [--threads 2] [--repeats 3] [--batch 1]

For each config (default: every ``experiments/coco/topdown_*.yaml``): parameters (M) and GMACs of one crop at
``MODEL.IMAGE_SIZE`` (:func:`bupose.models.complexity.count_params_macs`: convolutions, linear layers, batch norm
and attention's activation products; what the model zoos call GFLOPs), the published figures where the authors
give them, and the forward time of ``--batch`` crops in eval mode without gradients (best of ``--repeats`` rounds
after a warm-up, the models taking turns within each round), with its ratio to SimpleBaseline-Res50 (the first
column to compare across machines: absolute CPU times depend on the machine and its load).
"""
import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose.config import load_config  # noqa: E402
from bupose.methods import build_method  # noqa: E402
from bupose.models.complexity import count_params_macs  # noqa: E402
from common import timed  # noqa: E402

REFERENCE = "experiments/coco/topdown_res50_256x192.yaml"
#: config stem -> (params M, GFLOPs, source) as published by the authors
PUBLISHED = {
    "topdown_hrnet_w32_256x192": (28.5, 7.1, "deep-high-resolution-net README"),
    "topdown_hrnet_w32_256x192_udp": (28.5, 7.1, "HRNet-W32 (UDP and DARK change no layer)"),
    "topdown_hrnet_w32_256x192_dark": (28.5, 7.1, "HRNet-W32 (UDP and DARK change no layer)"),
    "topdown_hrnet_w48_384x288": (63.6, 32.9, "deep-high-resolution-net README"),
    "topdown_res50_256x192": (34.0, 8.9, "deep-high-resolution-net README"),
    "topdown_rtmpose_m_256x192": (13.59, 1.93, "mmpose projects/rtmpose README"),
    "topdown_vitpose_b_256x192_udp": (86.0, None, "ViTPose paper (ViT-B backbone)"),
    "topdown_vitpose_b_simple_256x192_udp": (86.0, None, "ViTPose paper (ViT-B backbone)"),
}


def build(path: Path):
    torch.manual_seed(0)
    cfg = load_config(path, [])
    model = build_method(cfg).build_model().eval()
    w, h = cfg.MODEL.IMAGE_SIZE
    return model, (h, w)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", nargs="*", default=None, help="configs (default: experiments/coco/topdown_*.yaml)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = [REPO / p for p in args.cfg] if args.cfg else sorted((REPO / "experiments" / "coco").glob("topdown_*.yaml"))
    if REPO / REFERENCE not in paths:
        paths.insert(0, REPO / REFERENCE)
    rows, fns = [], {}
    for path in paths:
        model, size = build(path)
        params, macs = count_params_macs(model, size)
        x = torch.randn(args.batch, 3, *size)
        fns[path.stem] = lambda m=model, x=x: m(x)
        rows.append((path.stem, size, params / 1e6, macs / 1e9, PUBLISHED.get(path.stem)))
    with torch.no_grad():
        best = timed(fns, args.repeats, torch.device("cpu"))
    ref = best[Path(REFERENCE).stem]
    print(f"CPU, {args.threads} threads, batch {args.batch}, best of {args.repeats}")
    print(f"{'config':36s} {'input':>8s} {'params M':>9s} {'GMACs':>7s} {'published':>16s} {'forward ms':>11s} "
          f"{'vs res50':>9s}")
    for stem, (h, w), p, g, pub in rows:
        published = "-" if pub is None else f"{pub[0]:g} M / " + ("-" if pub[1] is None else f"{pub[1]:g} G")
        print(f"{stem:36s} {f'{w}x{h}':>8s} {p:9.2f} {g:7.2f} {published:>16s} {best[stem] * 1e3:11.1f} "
              f"{best[stem] / ref:9.2f}")
    print("published: (params, GFLOPs) from", "; ".join(sorted({v[2] for v in PUBLISHED.values()})))


if __name__ == "__main__":
    main()
