"""The data and evaluation walk-through on the built-in synthetic crowds (no model involved).

    python tools/quickstart.py [--out output/quickstart] [--noise 0.05]

1. generates ``datasets/synthetic`` if it is missing (about a minute on 2 cores; a progress bar per split),
2. writes a preview grid of validation images with their skeletons,
3. simulates a pose estimator by jittering the validation ground truth (``--noise`` times the person size, twice
   that for occluded joints; a few people missed and a few false alarms in crowded images), writes the
   detections as a COCO results file, and
4. evaluates it with the CrowdPose protocol (AP, AR and AP on the easy / medium / hard crowd subsets).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bupose.data.synthetic import DEFAULT_ROOT, ensure_synthetic, progress_bars, write_preview
from bupose.evaluation import KeypointEvaluator, format_metrics, save_results


def simulate_detections(gt: dict, noise: float, seed: int = 0) -> list[dict]:
    """Ground-truth people turned into imperfect detections (see the module docstring)."""
    rng = np.random.default_rng(seed)
    crowd = {im["id"]: im.get("crowdIndex", 0.0) for im in gt["images"]}
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        if a["iscrowd"] or a["num_keypoints"] == 0:
            continue
        ci = crowd[a["image_id"]]
        if rng.random() < 0.1 * ci:  # missed people, more of them in crowds
            continue
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        size = np.sqrt(a["bbox"][2] * a["bbox"][3])
        sigma = noise * size * np.where(kp[:, 2] == 1, 2.0, 1.0)[:, None]
        xy = kp[:, :2] + rng.normal(0, 1, (len(kp), 2)) * sigma
        unlabelled = kp[:, 2] == 0
        xy[unlabelled] = kp[~unlabelled, :2].mean(0) if (~unlabelled).any() else 0
        conf = np.where(unlabelled, 0.05, rng.uniform(0.5, 1.0, len(kp)))
        dets.append({"image_id": a["image_id"], "category_id": 1,
                     "keypoints": np.column_stack([xy, conf]).round(2).reshape(-1).tolist(),
                     "score": float(rng.uniform(0.5, 1.0))})
        if rng.random() < 0.2 * ci:  # a false alarm between people
            w, h = sizes[a["image_id"]]
            fake = np.column_stack([rng.uniform(0, w, len(kp)), rng.uniform(0, h, len(kp)), np.full(len(kp), .3)])
            dets.append({"image_id": a["image_id"], "category_id": 1, "keypoints": fake.round(2).reshape(-1).tolist(),
                         "score": float(rng.uniform(0.0, 0.6))})
    return dets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="synthetic dataset folder")
    parser.add_argument("--out", default="output/quickstart", help="where preview, detections and metrics go")
    parser.add_argument("--noise", type=float, default=0.05, help="keypoint noise relative to the person size")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    root = ensure_synthetic(args.root, progress=progress_bars(Path(args.root).name))
    preview = write_preview(root, out / "preview.jpg")
    print(f"synthetic dataset: {root}; preview of val images: {preview}")

    gt_file = Path(root) / "annotations" / "crowdpose_val.json"
    gt = json.loads(gt_file.read_text())
    dets = simulate_detections(gt, args.noise)
    save_results(dets, out / "detections.json")
    metrics = KeypointEvaluator(gt_file, "crowdpose").evaluate(out / "detections.json")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(format_metrics(metrics, f"CrowdPose metrics of {len(dets)} simulated detections on {gt_file}"))
    print(f"wrote {out / 'detections.json'} and {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
