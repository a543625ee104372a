"""COCO and CrowdPose keypoint evaluation: the official protocols, reimplemented vectorised.

The numbers equal those of ``pycocotools`` ``COCOeval(iouType='keypoints')`` (COCO, OCHuman) and of
``crowdposetools`` (CrowdPose, Li et al., "CrowdPose: Efficient Crowded Scenes Pose Estimation and A New Benchmark",
CVPR 2019) to the last digit; ``tests/test_evaluation.py`` checks them against outputs of the official tools.
What the official tools do, and what is reproduced here on purpose:

* OKS between a detection and a ground truth with ``k1 > 0`` labelled keypoints averages ``exp(-d^2 / (2 s^2 k^2))``
  over the labelled keypoints, ``s^2`` being the GT ``area`` (COCO) or ``0.53 * w * h`` of the GT box (CrowdPose,
  whose files have no ``area``). For a GT without labelled keypoints the distance is measured to the GT box grown
  by its own size on each side, over all keypoints.
* A GT is ignored when ``iscrowd`` is set or its ``num_keypoints`` field is 0 (the field is read, never recomputed);
  an ignored GT can absorb a detection (which is then ignored too), a crowd GT any number of detections.
* Detections are taken per image by score (stable sort, ties in file order), at most ``maxDets[-1]`` per image;
  matching is greedy per IoU threshold; precision is interpolated at 101 recall points.
* A detection matched to a GT whose annotation id is 0 counts as unmatched (pycocotools stores matches by id).
* CrowdPose: ``maxDets = [20]``, one area range; easy/medium/hard are the images with crowd index ``< 0.2``,
  ``[0.2, 0.8)`` and ``>= 0.8``; each subset's AP is ``round(mean(precision), 4)`` over that subset, without the
  ``-1`` filtering that the other entries have.

Speed: matching runs once, for all images at the same time (one vectorised step per detection rank instead of a
Python loop per detection, threshold and GT), and the crowd subsets re-use it: per-image matching does not depend on
other images, so restricting the accumulation to a subset's images equals re-evaluating on that subset.
``tools/benchmarks/eval_speed.py`` measures it against pycocotools.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bupose.data.keypoints import get_spec
from bupose.errors import DataError

log = logging.getLogger("bupose")

COCO_METRICS = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")
CROWDPOSE_METRICS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")

IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
CROWD_LEVELS = {"easy": (-math.inf, 0.2), "medium": (0.2, 0.8), "hard": (0.8, math.inf)}


@dataclass(frozen=True)
class Protocol:
    """What differs between the COCO and the CrowdPose protocols."""

    name: str
    area_ranges: tuple[tuple[float, float], ...]
    area_labels: tuple[str, ...]
    max_dets: tuple[int, ...]
    box_area_factor: float | None  # GT OKS scale = factor * w * h when set; else the annotation's `area` field


COCO_PROTOCOL = Protocol("coco", ((0 ** 2, 1e5 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2)),
                         ("all", "medium", "large"), (20,), None)
CROWDPOSE_PROTOCOL = Protocol("crowdpose", ((0 ** 2, 1e5 ** 2),), ("all",), (20,), 0.53)
PROTOCOLS = {"coco": COCO_PROTOCOL, "ochuman": COCO_PROTOCOL, "crowdpose": CROWDPOSE_PROTOCOL}


# ----------------------------------------------------------------------------------------------------------------
# Loading and checking inputs
#
# Values are checked on whole arrays: a list of entries converts to a numeric array in one step, and only when that
# fails (or the array holds a bad value) is the first bad entry searched for, to name it. Numbers may be JSON integers
# or floats; ids must be integral (1000001.0 is image 1000001; 1000001.5 is refused); null and strings are refused,
# and so are booleans as scores and ids. Detections of another category_id are dropped with a warning (how many).
# ----------------------------------------------------------------------------------------------------------------
def _load_json(obj, what: str):
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_file():
            raise DataError(f"{what} file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f), str(path)
        except json.JSONDecodeError as e:
            raise DataError(f"{what} file {path} is not valid JSON: {e}") from None
    return obj, f"<{what}>"


def _describe(value) -> str:
    """A short description of a JSON value that is not the number it should be."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value[:20]!r}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'dict'}"
    return f"{value!r} ({type(value).__name__})"


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


MISSING = object()  # what ``dict.get(key, MISSING)`` gives for a missing key


def _numbers(values: list, entry, what: str, length: int | None = None, expected: str = "", hint: str = ""
             ) -> np.ndarray:
    """``values`` (one per entry: a number, or a list of ``length`` numbers) as a float64 array; DataError naming the
    first entry (``entry(i)``) whose value is :data:`MISSING` (the message ends with ``hint``), null, a string, a
    boolean or of another length (``expected`` says what the length should be)."""
    shape = (len(values),) if length is None else (len(values), length)
    try:
        with np.errstate(all="ignore"):
            arr = np.array(values)
    except (ValueError, TypeError, OverflowError):  # ragged lists
        arr = np.zeros(0, object)
    # numpy reads a JSON true as 1 among numbers: refused for single values (a check of every list value would cost
    # more than the conversion)
    if arr.shape == shape and arr.dtype.kind in "iuf" and (length is not None or bool not in set(map(type, values))):
        return arr.astype(np.float64, copy=False)
    for i, v in enumerate(values):
        if v is MISSING:
            raise DataError(f"{entry(i)} has no '{what}'{' ' + hint if hint else ''}")
        if length is not None and not (isinstance(v, (list, tuple, np.ndarray)) and len(v) == length):
            got = f"{len(v)} values" if isinstance(v, (list, tuple, np.ndarray)) else _describe(v)
            raise DataError(f"{entry(i)}: '{what}' has {got}, expected {expected or length}")
        items = v if length is not None else [v]
        bad = [j for j, x in enumerate(items) if not _is_number(x)]
        if bad:
            where = "" if length is None else f" value #{bad[0]}"
            raise DataError(f"{entry(i)}: '{what}'{where} is {_describe(items[bad[0]])}, expected a number")
    return np.array(values, np.float64).reshape(shape)  # numbers numpy kept as objects (huge ints)


def _integer_ids(values: list, entry, what: str, hint: str = "") -> np.ndarray:
    """``values`` as int64; DataError naming the first entry whose value is not an integral number (ids compare by
    value: 1000001.5 would otherwise become image 1000001)."""
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        arr = np.zeros(0, object)
    if arr.shape == (len(values),) and arr.dtype.kind in "iu" and bool not in set(map(type, values)):
        return arr.astype(np.int64)  # integers stay exact (no detour through float64)
    arr = _numbers(values, entry, what, hint=hint)
    integral = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < 2.0 ** 53)
    if not integral.all():
        i = int(np.nonzero(~integral)[0][0])
        raise DataError(f"{entry(i)}: '{what}' is {values[i]!r}, expected an integer")
    return arr.astype(np.int64)


def _require_dicts(entries: list, source: str, kind: str) -> None:
    """DataError naming the first entry of ``entries`` that is not a JSON object."""
    if not all(isinstance(e, dict) for e in entries):
        i = next(i for i, e in enumerate(entries) if not isinstance(e, dict))
        raise DataError(f"{source}: {kind} #{i} is {_describe(entries[i])}, expected a JSON object")


class _GroundTruth:
    """GT of one category as flat arrays, grouped by image (images in sorted id order, annotations in file order)."""

    def __init__(self, gt: dict, source: str, num_keypoints: int, category_id: int, protocol: Protocol):
        if not isinstance(gt, dict):
            raise DataError(f"{source}: the ground truth must be a COCO-format JSON object, got "
                            f"{type(gt).__name__}")
        for key in ("images", "annotations"):
            if not isinstance(gt.get(key), list):
                raise DataError(f"{source}: ground truth has no '{key}' list (not a COCO-format file)")
        if not gt["images"]:
            raise DataError(f"{source}: the ground truth has no images ('images' is empty): nothing to evaluate on")
        _require_dicts(gt["images"], source, "image")
        _require_dicts(gt["annotations"], source, "annotation")
        ids = _integer_ids([im.get("id", MISSING) for im in gt["images"]], lambda i: f"{source}: image #{i}", "id")
        self.image_ids = np.unique(ids)
        self.crowd_index = {int(i): im.get("crowdIndex") for i, im in zip(ids, gt["images"])}
        anns = [a for a in gt["annotations"] if a.get("category_id") == category_id]
        k, n = num_keypoints, len(anns)

        def entry(i):
            return f"{source}: annotation id {anns[i].get('id')} (image {anns[i].get('image_id')})"

        kpts = _numbers([a.get("keypoints", MISSING) for a in anns], entry, "keypoints", 3 * k,
                        f"{3 * k} ({k} keypoints x 3)").reshape(n, k, 3)
        boxes = _numbers([a.get("bbox", MISSING) for a in anns], entry, "bbox", 4, "4 ([x, y, w, h])").reshape(n, 4)
        if protocol.box_area_factor is not None:
            area = protocol.box_area_factor * boxes[:, 2] * boxes[:, 3]
        else:
            area = _numbers([a.get("area", MISSING) for a in anns], entry, "area",
                            hint="(COCO protocol; use dataset='crowdpose' for files without areas)")
        num_labelled = _numbers([a.get("num_keypoints", MISSING) for a in anns], entry, "num_keypoints",
                                hint="(the official evaluators read it to ignore people without labelled keypoints)")
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        ignore = crowd | (num_labelled == 0)
        ids = _integer_ids([a.get("id", MISSING) for a in anns], entry, "id")
        img = _integer_ids([a.get("image_id", MISSING) for a in anns], entry, "image_id")
        pos = np.searchsorted(self.image_ids, img)
        bad = (pos >= len(self.image_ids)) | (self.image_ids[np.minimum(pos, len(self.image_ids) - 1)] != img)
        if bad.any():
            raise DataError(f"{source}: annotation id {ids[bad][0]} refers to image id {img[bad][0]}, which is not "
                            f"in 'images'")
        order = np.argsort(pos, kind="stable")
        self.kpts, self.boxes, self.area = kpts[order], boxes[order], area[order]
        self.ignore, self.crowd, self.ids, self.img = ignore[order], crowd[order], ids[order], pos[order]
        self.count = np.bincount(self.img, minlength=len(self.image_ids))
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])


class _Detections:
    """Detections of one category, at most ``max_det`` per image, grouped by image and sorted by score."""

    def __init__(self, dets: Sequence[dict], source: str, gt: _GroundTruth, num_keypoints: int, category_id: int,
                 max_det: int):
        kpts, score, img, index = _detection_arrays(dets, source, num_keypoints, category_id)
        n = len(score)
        if n and not (np.isfinite(kpts).all() and np.isfinite(score).all()):
            bad = int(np.nonzero(~(np.isfinite(kpts).all((1, 2)) & np.isfinite(score)))[0][0])
            raise DataError(f"{source}: detection #{index[bad]} (image {img[bad]}) has non-finite keypoints or "
                            f"score")
        pos = np.searchsorted(gt.image_ids, img)
        unknown = (pos >= len(gt.image_ids)) | (gt.image_ids[np.minimum(pos, len(gt.image_ids) - 1)] != img)
        if unknown.any():
            ids = np.unique(img[unknown])
            raise DataError(f"{source}: {unknown.sum()} detections refer to {len(ids)} image ids that are not in "
                            f"the ground truth, e.g. {ids[:5].tolist()}")
        # per image: by score, stable (ties keep file order), as pycocotools
        order = np.argsort(-score, kind="mergesort")
        order = order[np.argsort(pos[order], kind="mergesort")]
        pos, kpts, score = pos[order], kpts[order], score[order]
        count = np.bincount(pos, minlength=len(gt.image_ids))
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        rank = np.arange(n) - np.repeat(start, count)
        keep = rank < max_det
        self.img, self.kpts, self.score, self.rank = pos[keep], kpts[keep], score[keep], rank[keep]
        xs, ys = self.kpts[..., 0], self.kpts[..., 1]
        if len(xs):
            self.area = (xs.max(1) - xs.min(1)) * (ys.max(1) - ys.min(1))
        else:
            self.area = np.zeros(0)
        self.count = np.minimum(count, max_det)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])


def _detection_arrays(dets: Sequence[dict], source: str, num_keypoints: int, category_id: int):
    """The detections of ``category_id`` as arrays: keypoints ``(n, K, 3)``, scores ``(n,)``, image ids ``(n,)`` and
    their positions in ``dets`` (to name them). Detections of other categories are dropped, with a log line."""
    _require_dicts(dets, source, "detection")
    keep = [i for i, d in enumerate(dets) if d.get("category_id", category_id) == category_id]
    if len(keep) < len(dets):
        log.warning("%s: %d of %d detections have a category_id other than %d and are not evaluated", source,
                    len(dets) - len(keep), len(dets), category_id)
        dets = [dets[i] for i in keep]
    index = np.asarray(keep, np.int64)

    def entry(i):
        return f"{source}: detection #{index[i]}" + (f" (image {dets[i]['image_id']})" if "image_id" in dets[i]
                                                      else "")

    k, form = num_keypoints, "(COCO results format: image_id, category_id, keypoints, score)"
    img = _integer_ids([d.get("image_id", MISSING) for d in dets], entry, "image_id", hint=form)
    kpts = _numbers([d.get("keypoints", MISSING) for d in dets], entry, "keypoints", 3 * k,
                    f"{3 * k} ({k} keypoints x 3)", hint=form).reshape(len(dets), k, 3)
    score = _numbers([d.get("score", MISSING) for d in dets], entry, "score", hint=form)
    return kpts, score, img, index


# ----------------------------------------------------------------------------------------------------------------
# OKS and matching
# ----------------------------------------------------------------------------------------------------------------
def _pairs(dt_count, gt_count, dt_start, gt_start):
    """All (detection, GT) index pairs within the same image, for images in order."""
    n = dt_count * gt_count
    total = int(n.sum())
    img = np.repeat(np.arange(len(n)), n)
    offset = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    g_count = gt_count[img]
    d_local, g_local = offset // np.maximum(g_count, 1), offset % np.maximum(g_count, 1)
    return img, d_local, g_local, dt_start[img] + d_local, gt_start[img] + g_local


def object_keypoint_similarity(det_kpts: np.ndarray, gt_kpts: np.ndarray, gt_boxes: np.ndarray,
                               gt_areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of detection/GT pairs, bit for bit as pycocotools ``computeOks``.

    Args:
        det_kpts: ``(P, K, 3)`` detections (x, y, score; the score is not used).
        gt_kpts: ``(P, K, 3)`` ground truths (x, y, v; v > 0 is labelled).
        gt_boxes: ``(P, 4)`` GT boxes ``[x, y, w, h]``; gt_areas: ``(P,)`` the OKS scale s^2.
        sigmas: ``(K,)`` per-keypoint constants.
    Returns:
        ``(P,)`` OKS values.
    """
    var = (np.asarray(sigmas, np.float64) * 2) ** 2
    vis = gt_kpts[..., 2] > 0
    k1 = vis.sum(1)
    oks = np.zeros(len(det_kpts), np.float64)
    xd, yd = det_kpts[..., 0], det_kpts[..., 1]
    scale = (gt_areas + np.spacing(1))[:, None]
    labelled = k1 > 0
    if labelled.any():
        dx = xd[labelled] - gt_kpts[labelled, :, 0]
        dy = yd[labelled] - gt_kpts[labelled, :, 1]
        e = (dx ** 2 + dy ** 2) / var / scale[labelled] / 2
        sub_vis, sub_k1 = vis[labelled], k1[labelled]
        sub_oks = np.zeros(len(e))
        # the official code sums exp(-e) over the labelled keypoints only; summing the same values in the same
        # order (not with zeros in between) keeps the float result identical
        for n in np.unique(sub_k1):
            rows = np.nonzero(sub_k1 == n)[0]
            cols = np.argsort(~sub_vis[rows], axis=1, kind="stable")[:, :n]
            vals = np.ascontiguousarray(np.take_along_axis(e[rows], cols, axis=1))
            sub_oks[rows] = np.exp(-vals).sum(1) / n
        oks[labelled] = sub_oks
    if (~labelled).any():
        b = gt_boxes[~labelled]
        x0, x1 = (b[:, 0] - b[:, 2])[:, None], (b[:, 0] + b[:, 2] * 2)[:, None]
        y0, y1 = (b[:, 1] - b[:, 3])[:, None], (b[:, 1] + b[:, 3] * 2)[:, None]
        xs, ys = xd[~labelled], yd[~labelled]
        dx = np.maximum(0, x0 - xs) + np.maximum(0, xs - x1)
        dy = np.maximum(0, y0 - ys) + np.maximum(0, ys - y1)
        e = (dx ** 2 + dy ** 2) / var / scale[~labelled] / 2
        oks[~labelled] = np.exp(-e).sum(1) / e.shape[1]
    return oks


def _greedy_match(ious, gt_ignore, gt_crowd, gt_valid, det_valid, thresholds):
    """The COCO greedy matching for many images at once.

    Args:
        ious: ``(I, D, G)`` OKS, detections in score order; padding is never matched.
        gt_ignore, gt_crowd, gt_valid: ``(I, G)`` bool.
        det_valid: ``(I, D)`` bool.
        thresholds: ``(T,)``.
    Returns:
        ``(I, T, D)`` int: index of the matched GT per detection and threshold, -1 when unmatched.
    """
    n_img, n_det, n_gt = ious.shape
    thr = np.minimum(thresholds, 1 - 1e-10)[None, :, None]
    taken = np.zeros((n_img, len(thresholds), n_gt), bool)
    matched = np.full((n_img, len(thresholds), n_det), -1, np.int64)
    groups = (~gt_ignore & gt_valid, gt_ignore & gt_valid)  # regular GTs first; ignored ones only as fallback
    rev = np.arange(n_gt - 1, -1, -1)
    for d in range(n_det):
        v = ious[:, d, None, :]
        eligible = (v >= thr) & ~(taken & ~gt_crowd[:, None, :]) & det_valid[:, d, None, None]
        m = np.full((n_img, len(thresholds)), -1, np.int64)
        for group in groups:
            e = eligible & group[:, None, :]
            val = np.where(e, v, -np.inf)
            best = e & (val == val.max(-1, keepdims=True))
            last = rev[np.argmax(best[..., ::-1], axis=-1)]  # ties: the official loop keeps the last one
            m = np.where((m < 0) & best.any(-1), last, m)
        matched[:, :, d] = m
        ii, tt = np.nonzero(m >= 0)
        taken[ii, tt, m[ii, tt]] = True
    return matched


# ----------------------------------------------------------------------------------------------------------------
# The evaluator
# ----------------------------------------------------------------------------------------------------------------
class KeypointEvaluator:
    """Evaluate COCO-format keypoint detections against COCO-format ground truth.

    Example::

        ev = KeypointEvaluator("crowdpose_val.json", dataset="crowdpose")
        metrics = ev.evaluate("results.json")   # {"AP": ..., "AP_easy": ..., ...}

    Args:
        gt: path to a GT file or the loaded dict.
        dataset: ``"coco"``, ``"ochuman"`` (COCO protocol) or ``"crowdpose"``.
        sigmas: OKS sigmas; by default those of the dataset's keypoint layout (or, for a custom layout, pass them).
        category_id: the person category.
        chunk_images: images matched together in one vectorised step (bounds memory).
    """

    def __init__(self, gt, dataset: str = "coco", sigmas: Sequence[float] | None = None, category_id: int = 1,
                 chunk_images: int = 2048):
        if dataset not in PROTOCOLS:
            raise ValueError(f"unknown evaluation protocol {dataset!r}; expected one of {sorted(PROTOCOLS)}")
        self.dataset = dataset
        self.protocol = PROTOCOLS[dataset]
        self.sigmas = np.asarray(sigmas if sigmas is not None else get_spec(dataset).sigmas, np.float64)
        self.category_id = category_id
        self.chunk_images = chunk_images
        data, self.gt_source = _load_json(gt, "ground truth")
        self.gt = _GroundTruth(data, self.gt_source, len(self.sigmas), category_id, self.protocol)

    # -- matching ------------------------------------------------------------------------------------------
    def _match_all(self, dt: _Detections):
        """Match every image; returns per area range the per-detection match arrays (T, N) and GT ignore flags."""
        gt, p = self.gt, self.protocol
        n_thr = len(IOU_THRESHOLDS)
        results = []
        for lo, hi in p.area_ranges:
            gt_ig_all = self.gt.ignore | (gt.area < lo) | (gt.area > hi)
            det_gt_id = np.zeros((n_thr, len(dt.score)), np.int64)
            det_ig = np.zeros((n_thr, len(dt.score)), bool)
            det_matched = np.zeros((n_thr, len(dt.score)), bool)
            for c0 in range(0, len(gt.image_ids), self.chunk_images):
                imgs = np.arange(c0, min(c0 + self.chunk_images, len(gt.image_ids)))
                dcount, gcount = dt.count[imgs], gt.count[imgs]
                n_d, n_g = int(dcount.max(initial=0)), int(gcount.max(initial=0))
                if n_d == 0:
                    continue
                img, dl, gl, di, gi = _pairs(dcount, gcount, dt.start[imgs], gt.start[imgs])
                ious = np.full((len(imgs), n_d, max(n_g, 1)), -1.0)
                ious[img, dl, gl] = object_keypoint_similarity(dt.kpts[di], gt.kpts[gi], gt.boxes[gi],
                                                               gt.area[gi], self.sigmas)
                gslot = np.arange(max(n_g, 1))[None, :]
                gt_valid = gslot < gcount[:, None]
                gidx = np.minimum(gt.start[imgs][:, None] + gslot, max(len(gt.ids) - 1, 0))
                if len(gt.ids):
                    g_ig, g_crowd = gt_ig_all[gidx] & gt_valid, gt.crowd[gidx] & gt_valid
                else:
                    g_ig = g_crowd = np.zeros_like(gt_valid)
                det_valid = np.arange(n_d)[None, :] < dcount[:, None]
                m = _greedy_match(ious, g_ig, g_crowd, gt_valid, det_valid, IOU_THRESHOLDS)  # (I, T, D)
                dslot = np.nonzero(det_valid)
                flat = dt.start[imgs][dslot[0]] + dslot[1]
                mm = m[dslot[0], :, dslot[1]].T  # (T, n)
                hit = mm >= 0
                gflat = np.where(hit, gt.start[imgs][dslot[0]][None, :] + np.maximum(mm, 0), 0)
                det_matched[:, flat] = hit
                det_gt_id[:, flat] = np.where(hit, gt.ids[gflat] if len(gt.ids) else 0, 0)
                det_ig[:, flat] = hit & (gt_ig_all[gflat] if len(gt.ids) else False)
            out_of_range = (dt.area < lo) | (dt.area > hi)
            det_ig |= (det_gt_id == 0) & out_of_range[None, :]
            results.append((det_gt_id != 0, det_ig, gt_ig_all))
        return results

    # -- accumulation --------------------------------------------------------------------------------------
    def _accumulate(self, dt: _Detections, matches, image_mask: np.ndarray):
        """Precision ``(T, R, 1, A, M)`` and recall ``(T, 1, A, M)`` over the images in ``image_mask``."""
        p = self.protocol
        n_t, n_r, n_a, n_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(p.area_ranges), len(p.max_dets)
        precision = -np.ones((n_t, n_r, 1, n_a, n_m))
        recall = -np.ones((n_t, 1, n_a, n_m))
        # images that the official per-image evaluation returns None for (no GT and no detection) don't count
        in_set = image_mask[dt.img]
        gt_in_set = image_mask[self.gt.img]
        for a, (tp_flag, ig_flag, gt_ig) in enumerate(matches):
            if not (in_set.any() or gt_in_set.any()):
                continue
            for mi, max_det in enumerate(p.max_dets):
                sel = np.nonzero(in_set & (dt.rank < max_det))[0]
                scores = dt.score[sel]
                order = np.argsort(-scores, kind="mergesort")
                dtm, dtig = tp_flag[:, sel][:, order], ig_flag[:, sel][:, order]
                npig = np.count_nonzero(~gt_ig[gt_in_set])
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dtig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtig))
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    nd = len(tp)
                    rc = tp / npig
                    pr = tp / (fp + tp + np.spacing(1))
                    recall[t, 0, a, mi] = rc[-1] if nd else 0
                    if nd:
                        pr = np.maximum.accumulate(pr[::-1])[::-1]
                    inds = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
                    q = np.zeros(n_r)
                    ok = inds < nd
                    q[ok] = pr[inds[ok]]
                    precision[t, :, 0, a, mi] = q
        return precision, recall

    def _summarize(self, precision, recall, ap: bool, iou_thr=None, area="all", max_dets=20) -> float:
        p = self.protocol
        aind = [i for i, lbl in enumerate(p.area_labels) if lbl == area]
        mind = [i for i, m in enumerate(p.max_dets) if m == max_dets]
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
        valid = s[s > -1]
        return -1.0 if len(valid) == 0 else float(np.mean(valid))

    # -- public ---------------------------------------------------------------------------------------------
    def evaluate(self, detections) -> dict[str, float]:
        """Metrics for detections given as a results-file path or a list of COCO result dicts.

        Returns a flat dict keyed by :data:`COCO_METRICS` or :data:`CROWDPOSE_METRICS`.
        """
        dets, source = _load_json(detections, "detections")
        if not isinstance(dets, list):
            raise DataError(f"{source}: detections must be a JSON list of results "
                            f"(image_id, category_id, keypoints, score), got {type(dets).__name__}")
        dt = _Detections(dets, source, self.gt, len(self.sigmas), self.category_id, max(self.protocol.max_dets))
        matches = self._match_all(dt)
        everything = np.ones(len(self.gt.image_ids), bool)
        prec, rec = self._accumulate(dt, matches, everything)
        summ = self._summarize
        if self.protocol.name == "coco":
            values = [summ(prec, rec, True), summ(prec, rec, True, .5), summ(prec, rec, True, .75),
                      summ(prec, rec, True, area="medium"), summ(prec, rec, True, area="large"),
                      summ(prec, rec, False), summ(prec, rec, False, .5), summ(prec, rec, False, .75),
                      summ(prec, rec, False, area="medium"), summ(prec, rec, False, area="large")]
            return dict(zip(COCO_METRICS, values))
        values = [summ(prec, rec, True), summ(prec, rec, True, .5), summ(prec, rec, True, .75),
                  summ(prec, rec, False), summ(prec, rec, False, .5), summ(prec, rec, False, .75)]
        for level in ("easy", "medium", "hard"):
            sub_prec, _ = self._accumulate(dt, matches, self.crowd_level_mask(level))
            values.append(float(round(np.mean(sub_prec[:, :, :, 0, :]), 4)))
        return dict(zip(CROWDPOSE_METRICS, values))

    def crowd_level_mask(self, level: str) -> np.ndarray:
        """``(num_images,)`` bool: the images of a CrowdPose crowd level (``easy``, ``medium``, ``hard``)."""
        lo, hi = CROWD_LEVELS[level]
        ci = []
        for img_id in self.gt.image_ids:
            value = self.gt.crowd_index.get(int(img_id))
            if value is None:
                raise DataError(f"{self.gt_source}: image {img_id} has no 'crowdIndex', which the CrowdPose "
                                f"easy/medium/hard subsets need")
            ci.append(value)
        ci = np.asarray(ci, np.float64)
        return (ci >= lo) & (ci < hi)


def evaluate_keypoints(gt, detections, dataset: str = "coco", sigmas: Sequence[float] | None = None
                       ) -> dict[str, float]:
    """One-call evaluation: ``evaluate_keypoints("gt.json", "dt.json", "crowdpose") -> {"AP": ..., ...}``."""
    return KeypointEvaluator(gt, dataset, sigmas).evaluate(detections)


# ----------------------------------------------------------------------------------------------------------------
# Results files and printing
# ----------------------------------------------------------------------------------------------------------------
def people_to_results(image_id: int, keypoints: np.ndarray, scores: Iterable[float], category_id: int = 1
                      ) -> list[dict]:
    """COCO results entries for the people of one image.

    Args:
        keypoints: ``(N, K, 3)`` x, y (image pixels) and per-keypoint score.
        scores: ``(N,)`` person scores.
    """
    keypoints = np.asarray(keypoints, np.float64)
    return [{"image_id": int(image_id), "category_id": int(category_id),
             "keypoints": [round(float(v), 3) for v in kp.reshape(-1)], "score": float(s)}
            for kp, s in zip(keypoints, scores)]


def save_results(results: list[dict], path) -> None:
    """Write a COCO results file atomically (ready for a COCO test-dev submission)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f)
    os.replace(tmp, path)


def format_metrics(metrics: dict[str, float], title: str = "") -> str:
    """The metrics as a Markdown table (names in one row, values with 3 decimals in the next)."""
    names = list(metrics)
    width = [max(len(n), 5) for n in names]
    head = "| " + " | ".join(n.ljust(w) for n, w in zip(names, width)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in width) + "|"
    row = "| " + " | ".join(f"{metrics[n]:.3f}".ljust(w) for n, w in zip(names, width)) + " |"
    return "\n".join(([title] if title else []) + [head, rule, row])


__all__ = ["KeypointEvaluator", "evaluate_keypoints", "object_keypoint_similarity", "people_to_results",
           "save_results", "format_metrics", "COCO_METRICS", "CROWDPOSE_METRICS"]
