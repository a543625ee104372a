"""Helpers shared by the tests and the benchmarks: random evaluation cases and the reference evaluators.

The references run the official-protocol tools exactly as a user of them would (pycocotools ``COCOeval``; for
CrowdPose, pycocotools with the CrowdPose settings, which reproduces crowdposetools as
``tests/fixtures/eval/README.md`` documents), so bupose's own evaluator can be compared with them.
"""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from bupose.data.keypoints import KeypointSpec, get_spec


def make_eval_case(num_images: int, dets_per_image: float, spec: KeypointSpec, seed: int = 0,
                   crowd_index: bool = True) -> tuple[dict, list[dict]]:
    """A random GT dict and detections list in COCO format with the cases that matter for matching.

    GT people are boxes with keypoints inside; some keypoints are unlabelled, some people have no labelled
    keypoints (``num_keypoints == 0``), a few annotations are crowd regions, some images have no people.
    Detections are noisy copies of GT people (some duplicated), plus false positives; scores have ties.
    """
    rng = np.random.default_rng(seed)
    k = spec.num_keypoints
    images, anns, dets = [], [], []
    ann_id = 1
    for i in range(num_images):
        img_id = 1000 + i
        w, h = int(rng.integers(200, 800)), int(rng.integers(200, 800))
        image = {"id": img_id, "file_name": f"{img_id}.jpg", "width": w, "height": h}
        if crowd_index:
            image["crowdIndex"] = float(np.round(rng.uniform(0, 1.2), 2))
        images.append(image)
        people = []
        for _ in range(int(rng.integers(0, 9))):
            bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            kp = np.zeros((k, 3))
            kp[:, 0] = np.round(rng.uniform(x, x + bw, k))
            kp[:, 1] = np.round(rng.uniform(y, y + bh, k))
            kp[:, 2] = rng.choice([0, 1, 2], size=k, p=[0.2, 0.3, 0.5])
            crowd = rng.random() < 0.03
            if crowd or rng.random() < 0.05:
                kp[:] = 0
            kp[kp[:, 2] == 0] = 0
            ann = {"id": ann_id, "image_id": img_id, "category_id": 1, "iscrowd": int(crowd),
                   "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                   "area": round(bw * bh * rng.uniform(0.4, 0.9), 2),
                   "num_keypoints": int((kp[:, 2] > 0).sum()), "keypoints": kp.reshape(-1).tolist()}
            ann_id += 1
            anns.append(ann)
            people.append((kp, bw, bh, crowd))
        n_det = int(rng.poisson(dets_per_image))
        for j in range(n_det):
            if people and rng.random() < 0.8:
                kp, bw, bh, _ = people[int(rng.integers(len(people)))]
                noise = rng.normal(0, rng.uniform(0.002, 0.08) * max(bw, bh), (k, 2))
                base = kp[:, :2] if (kp[:, 2] > 0).any() else np.column_stack(
                    [rng.uniform(0, w, k), rng.uniform(0, h, k)])
                xy = base + noise
            else:
                xy = np.column_stack([rng.uniform(0, w, k), rng.uniform(0, h, k)])
            kd = np.column_stack([xy, rng.uniform(0, 1, k)])
            score = float(np.round(rng.uniform(0, 1), 2))  # rounded: ties between detections
            dets.append({"image_id": img_id, "category_id": 1,
                         "keypoints": np.round(kd, 2).reshape(-1).tolist(), "score": score})
    cat = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(spec.names),
           "skeleton": [[a + 1, b + 1] for a, b in spec.skeleton]}
    return {"images": images, "annotations": anns, "categories": [cat]}, dets


def _quiet_cocoeval(gt: dict, dets: list[dict], sigmas, max_dets=(20,), area_ranges=None, img_ids=None):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        coco_dt = coco.loadRes(copy.deepcopy(dets)) if dets else COCO()
        ev = COCOeval(coco, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.params.maxDets = list(max_dets)
        if area_ranges is not None:
            ev.params.areaRng = [list(r) for r in area_ranges]
            ev.params.areaRngLbl = ["all", "medium", "large"][:len(area_ranges)]
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def reference_coco(gt: dict, dets: list[dict], spec_name: str = "coco") -> list[float]:
    """pycocotools' ten keypoint statistics."""
    return [float(s) for s in _quiet_cocoeval(gt, dets, get_spec(spec_name).sigmas).stats]


def reference_crowdpose(gt: dict, dets: list[dict]) -> list[float]:
    """The crowdposetools statistics in bupose's CROWDPOSE_METRICS order, computed with pycocotools.

    GT areas become ``0.53 * w * h``; one area range; each crowd level is a full re-evaluation on its images.
    """
    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        a["area"] = 0.53 * a["bbox"][2] * a["bbox"][3]
    sigmas = get_spec("crowdpose").sigmas
    all_range = [[0 ** 2, 1e5 ** 2]]
    ev = _quiet_cocoeval(gt, dets, sigmas, area_ranges=all_range)
    s = [float(v) for v in ev.stats]
    out = [s[0], s[1], s[2], s[5], s[6], s[7]]
    for lo, hi in ((-np.inf, 0.2), (0.2, 0.8), (0.8, np.inf)):
        ids = [im["id"] for im in gt["images"] if lo <= im["crowdIndex"] < hi]
        sub = _quiet_cocoeval(gt, dets, sigmas, area_ranges=all_range, img_ids=ids)
        out.append(float(round(np.mean(sub.eval["precision"][:, :, :, 0, :]), 4)))
    return out
