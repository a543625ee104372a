"""Benchmark: CrowdPose evaluation (with the easy/medium/hard subsets) by bupose vs the pycocotools equivalent.

    python tools/benchmarks/eval_speed.py [--images 5000] [--dets 100000] [--seed 0]

Generates a random case (COCO format, CrowdPose-14 layout, crowd indices over all three levels), evaluates it with
``bupose.evaluation`` and with pycocotools set up as crowdposetools (one full evaluation plus one per crowd level),
checks that the numbers are identical and prints both times and the ratio. faster-coco-eval's CrowdPose mode (all
images, no subsets) is timed for reference when it is installed.
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bupose.data.keypoints import get_spec  # noqa: E402
from bupose.evaluation import CROWDPOSE_METRICS, KeypointEvaluator  # noqa: E402
from bupose.testing import make_eval_case, reference_crowdpose  # noqa: E402


def faster_coco_eval_time(gt, dets):
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        return None
    gt = copy.deepcopy(gt)
    t = time.perf_counter()
    coco = COCO(gt)
    ev = COCOeval_faster(coco, coco.loadRes(copy.deepcopy(dets)), "keypoints_crowd", print_function=lambda *a: None)
    ev.params.kpt_oks_sigmas = get_spec("crowdpose").sigmas_array
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gt, dets = make_eval_case(args.images, args.dets / args.images, get_spec("crowdpose"), args.seed)
    print(f"case: {len(gt['images'])} images, {len(gt['annotations'])} GT people, {len(dets)} detections")

    t = time.perf_counter()
    ours = KeypointEvaluator(gt, "crowdpose").evaluate(dets)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = reference_crowdpose(gt, dets)
    t_ref = time.perf_counter() - t
    t_fce = faster_coco_eval_time(gt, dets)

    diff = max(abs(a - b) for a, b in zip(ours.values(), ref))
    print(f"{'metric':<10} {'bupose':>20} {'pycocotools':>20}")
    for name, b in zip(CROWDPOSE_METRICS, ref):
        print(f"{name:<10} {ours[name]:>20.16f} {b:>20.16f}")
    print(f"max abs difference: {diff:.3g} ({'identical' if diff == 0 else 'DIFFERENT'})")
    print(f"pycocotools (all + easy/medium/hard): {t_ref:8.2f} s")
    print(f"bupose      (all + easy/medium/hard): {t_ours:8.2f} s")
    if t_fce is not None:
        print(f"faster-coco-eval keypoints_crowd (all images only, for reference): {t_fce:8.2f} s")
    print(f"speed-up bupose vs pycocotools: {t_ref / t_ours:.1f}x")
    return 0 if diff <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
