"""Throughput of bupose's input pipelines on ONE CPU core, on generated images (no dataset needed).

    python tools/benchmarks/pipeline_throughput.py [--seconds 3] [--images 32] [--seed 0]

Threads are pinned to one (``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``) so the figures are per data
loader worker. Samples are random-noise BGR images of COCO-like sizes with 2-15 random people (COCO-17 keypoints
inside their boxes) and, in half of them, ignore-mask rectangles. "outputs/s" counts network inputs produced: a
mosaic consumes 4 samples per output.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bupose.data.keypoints import COCO17  # noqa: E402
from bupose.data.pipelines import (BottomUpAffine, LetterboxTrain, Photometric, TestResize,  # noqa: E402
                                   to_tensor)
from bupose.data.sample import Sample  # noqa: E402

SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 512), (500, 375), (612, 612)]


def make_samples(n: int, rng: np.random.Generator) -> list[Sample]:
    samples = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        people = int(rng.integers(2, 16))
        boxes, kps = [], []
        for _ in range(people):
            bw, bh = rng.uniform(0.05, 0.4) * w, rng.uniform(0.1, 0.8) * h
            x0, y0 = rng.uniform(0, w - bw - 1), rng.uniform(0, h - bh - 1)
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            k = np.stack([rng.uniform(x0, x0 + bw, 17), rng.uniform(y0, y0 + bh, 17), rng.integers(0, 3, 17)], 1)
            kps.append(k)
        ignore = np.zeros((h, w), np.uint8)
        if i % 2:
            x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            ignore[y0:y0 + h // 4, x0:x0 + w // 4] = 1
        samples.append(Sample(image=image, keypoints=np.array(kps, np.float32), boxes=np.array(boxes, np.float32),
                              ignore_mask=ignore, image_id=i))
    return samples


def bench(fn, seconds: float) -> tuple[float, int]:
    fn()  # warm up
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per benchmark")
    ap.add_argument("--images", type=int, default=32, help="number of generated samples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    samples = make_samples(args.images, rng)
    it = {"i": 0}

    def next_sample() -> Sample:
        it["i"] = (it["i"] + 1) % len(samples)
        return samples[it["i"]]

    def next_four() -> list[Sample]:
        return [next_sample() for _ in range(4)]

    photometric = Photometric(color_prob=0.5, blur_prob=0.1, noise_prob=0.1, seed=args.seed)
    cases = []
    for size in (512, 640):
        t = BottomUpAffine(COCO17, input_size=size, output_stride=4)
        cases.append((f"BottomUpAffine train {size}", lambda t=t: t(next_sample(), rng)))
    t = BottomUpAffine(COCO17, input_size=512, train=False)
    cases.append(("BottomUpAffine val 512", lambda t=t: t(next_sample(), rng)))
    for size in (640, 960):
        t = LetterboxTrain(COCO17, input_size=size, mosaic_prob=1.0, degrees=10.0, translate=0.1, scale=0.5)
        cases.append((f"LetterboxTrain mosaic {size}", lambda t=t: t(next_four(), rng)))
    t = LetterboxTrain(COCO17, input_size=640, mosaic_prob=0.0, degrees=10.0)
    cases.append(("LetterboxTrain single 640", lambda t=t: t(next_sample(), rng)))
    tr = TestResize(512, stride=32)
    for scale in (0.5, 1.0, 2.0):
        cases.append((f"TestResize 512 x{scale:g}", lambda s=scale: tr(next_sample().image, scale=s)))
    square = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    cases.append(("Photometric 512x512", lambda: photometric(square, rng)))
    cases.append(("to_tensor 512x512", lambda: to_tensor(square)))
    t512 = BottomUpAffine(COCO17, input_size=512)
    cases.append(("BottomUpAffine 512 + Photometric + to_tensor",
                  lambda: to_tensor(photometric(t512(next_sample(), rng), rng)["image"])))

    print(f"one core (torch threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}); "
          f"{args.images} generated samples, ~{args.seconds:g} s per row")
    print(f"{'pipeline':<48}{'outputs/s':>12}{'ms/output':>12}")
    print("-" * 72)
    for name, fn in cases:
        rate, _ = bench(fn, args.seconds)
        print(f"{name:<48}{rate:>12.1f}{1000.0 / rate:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
