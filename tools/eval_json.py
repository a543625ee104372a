"""Evaluate a COCO-format keypoint results file.

    python tools/eval_json.py --gt GT.json --dt DT.json --dataset {coco,crowdpose,ochuman} [--out metrics.json]

Prints the metrics table and, with ``--out``, writes them as a flat JSON object keyed by the metric names
(COCO: AP AP50 AP75 AP_M AP_L AR AR50 AR75 AR_M AR_L; CrowdPose: AP AP50 AP75 AR AR50 AR75 AP_easy AP_medium
AP_hard).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.errors import DataError  # noqa: E402
from bupose.evaluation import evaluate_keypoints, format_metrics  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="ground-truth annotations (COCO format)")
    parser.add_argument("--dt", required=True, help="detections (COCO results format)")
    parser.add_argument("--dataset", default="coco", choices=["coco", "crowdpose", "ochuman"],
                        help="evaluation protocol")
    parser.add_argument("--out", help="write the metrics as a flat JSON object here")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_keypoints(args.gt, args.dt, args.dataset)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_metrics(metrics, f"{args.dataset} keypoint metrics ({args.dt})"))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
