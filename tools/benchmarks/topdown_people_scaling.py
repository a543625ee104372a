"""Benchmark: how test time grows with the number of people in an image, top-down versus a bottom-up model.

    python tools/benchmarks/topdown_people_scaling.py [--topdown-cfg experiments/coco/topdown_hrnet_w32_256x192.yaml]
        [--bottom-up-cfg experiments/coco/dekr_w32_512.yaml] [--people 1 2 5 10 20 30] [--size 640x480]
        [--no-flip] [--threads 2] [--repeats 2]

Both models run their whole test path through ``bupose.Predictor`` (the shared engine: crops or resize, the
network, flip, decoding, NMS) at scale 1, with flip unless ``--no-flip``, on the same random image. The top-down
model gets ``N`` person boxes laid out on a grid (all crops of an image are one batch); the bottom-up model sees the
same image, and its cost does not depend on how many people are in it. Weights are random (seeded): the time of a
forward pass does not depend on them, and DEKR's decoding is bounded by ``TEST.MAX_NUM_PEOPLE`` candidates either
way (denormal floats are flushed to zero: the official N(0, 0.001) initialisation makes activations so small that
CPUs slow down on them by 10-100x, which trained weights do not). Times are the best of ``--repeats`` rounds after a warm-up, the two models taking turns within each round, so
that the ratio ``top-down / bottom-up`` is what to read (absolute CPU times vary with the machine's load).
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose import Predictor, build_model, load_config  # noqa: E402
from common import timed  # noqa: E402


def grid_boxes(n: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` person boxes ``[x, y, w, h]`` (about 1:2) tiling the image on a grid, and their scores (1)."""
    cols = math.ceil(math.sqrt(n * width / height / 2.0))
    rows = math.ceil(n / cols)
    w, h = width / cols, height / rows
    boxes = [[c * w + 0.1 * w, r * h + 0.05 * h, 0.8 * w, 0.9 * h] for r in range(rows) for c in range(cols)][:n]
    return np.asarray(boxes, np.float32), np.ones(n, np.float32)


def predictor(path: str, flip: bool) -> Predictor:
    cfg = load_config(REPO / path, ["TEST.FLIP_TEST", str(flip), "TEST.SCALE_FACTOR", "[1.0]", "DEVICE", "cpu"])
    torch.manual_seed(0)
    return Predictor(cfg, build_model(cfg))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topdown-cfg", default="experiments/coco/topdown_hrnet_w32_256x192.yaml")
    parser.add_argument("--bottom-up-cfg", default="experiments/coco/dekr_w32_512.yaml")
    parser.add_argument("--people", type=int, nargs="+", default=[1, 2, 5, 10, 20, 30])
    parser.add_argument("--size", default="640x480", help="image WIDTHxHEIGHT")
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    flip = not args.no_flip
    top_down, bottom_up = predictor(args.topdown_cfg, flip), predictor(args.bottom_up_cfg, flip)
    print(f"top-down {args.topdown_cfg} vs bottom-up {args.bottom_up_cfg}; image {width}x{height}, flip {flip}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print("| people | top-down s | bottom-up s | top-down / bottom-up |\n|---|---|---|---|")
    for n in args.people:
        boxes = grid_boxes(n, width, height)
        found = len(top_down.people(image, boxes=boxes))
        t = timed({"td": lambda: top_down.people(image, boxes=boxes), "bu": lambda: bottom_up.people(image)},
                  args.repeats, torch.device("cpu"))
        print(f"| {n} ({found} kept) | {t['td']:.3f} | {t['bu']:.3f} | {t['td'] / t['bu']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
