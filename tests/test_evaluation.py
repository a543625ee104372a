import contextlib
import copy
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from bupose.data.keypoints import get_spec
from bupose.errors import DataError
from bupose.evaluation import (COCO_METRICS, CROWDPOSE_METRICS, KeypointEvaluator, evaluate_keypoints,
                               object_keypoint_similarity, people_to_results, save_results)
from bupose.testing import make_eval_case, reference_coco, reference_crowdpose

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _expected(shared_dir, name):
    stats = json.loads((shared_dir / "fixtures/eval" / f"{name}_expected.json").read_text())["stats"]
    return stats[:3] + stats[5:] if name == "crowdpose" else stats


@pytest.mark.parametrize("name", ["coco", "crowdpose"])
def test_fixture_equals_official_tool(shared_dir, name):
    fx = shared_dir / "fixtures/eval"
    metrics = evaluate_keypoints(fx / f"{name}_gt.json", fx / f"{name}_dt.json", name)
    assert list(metrics) == list(COCO_METRICS if name == "coco" else CROWDPOSE_METRICS)
    np.testing.assert_allclose(list(metrics.values()), _expected(shared_dir, name), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_cases_equal_pycocotools(seed):
    gt, dt = make_eval_case(50, 9, get_spec("coco"), seed)
    ours = list(KeypointEvaluator(gt, "coco").evaluate(dt).values())
    np.testing.assert_allclose(ours, reference_coco(gt, dt), rtol=0, atol=1e-12)
    gt, dt = make_eval_case(50, 9, get_spec("crowdpose"), seed + 100)
    ours = list(KeypointEvaluator(gt, "crowdpose").evaluate(dt).values())
    np.testing.assert_allclose(ours, reference_crowdpose(gt, dt), rtol=0, atol=1e-12)


def test_oks_bitwise_equal_to_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    spec = get_spec("coco")
    gt, dt = make_eval_case(20, 6, spec, seed=7)
    ev = KeypointEvaluator(gt, "coco")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ref = COCOeval(coco, coco.loadRes(copy.deepcopy(dt)), "keypoints")
        ref.params.kpt_oks_sigmas = spec.sigmas_array
        ref.params.imgIds = sorted(coco.getImgIds())
        ref._prepare()
    compared = 0
    for img_id in ref.params.imgIds:
        expected = ref.computeOks(img_id, 1)
        if len(expected) == 0:
            continue
        dts = sorted(ref._dts[img_id, 1], key=lambda d: -d["score"])  # stable, as the official sort
        gts = ref._gts[img_id, 1]
        pairs = [(d, g) for d in dts[:20] for g in gts]
        got = object_keypoint_similarity(
            np.array([np.reshape(d["keypoints"], (-1, 3)) for d, _ in pairs]),
            np.array([np.reshape(g["keypoints"], (-1, 3)) for _, g in pairs]),
            np.array([g["bbox"] for _, g in pairs]), np.array([g["area"] for _, g in pairs]), spec.sigmas)
        assert np.array_equal(got.reshape(expected.shape), expected)
        compared += expected.size
    assert compared > 100
    assert ev is not None


def test_perfect_detections_give_ap_one():
    gt, _ = make_eval_case(30, 0, get_spec("crowdpose"), seed=3)
    dets = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    m = evaluate_keypoints(gt, dets, "crowdpose")
    assert m["AP"] == pytest.approx(1.0) and m["AR"] == pytest.approx(1.0)
    assert m["AP_easy"] == m["AP_medium"] == m["AP_hard"] == 1.0


def test_detections_on_crowd_region_are_not_false_positives():
    spec = get_spec("crowdpose")
    k = spec.num_keypoints
    kp = [10.0, 10.0, 2.0] * k
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "crowdIndex": 0.5}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 20, 20], "num_keypoints": k,
               "keypoints": kp},
              {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [70, 70, 10, 10], "num_keypoints": 0,
               "keypoints": [0] * (3 * k)}],
          "categories": [{"id": 1, "name": "person"}]}
    good = {"image_id": 1, "category_id": 1, "keypoints": kp, "score": 0.5}
    in_crowd = [{"image_id": 1, "category_id": 1, "keypoints": [75.0, 75.0, 1.0] * k, "score": 0.9}] * 3
    assert evaluate_keypoints(gt, [good] + in_crowd, "crowdpose")["AP"] == pytest.approx(1.0)
    far = [{"image_id": 1, "category_id": 1, "keypoints": [5.0, 95.0, 1.0] * k, "score": 0.9}]
    assert evaluate_keypoints(gt, [good] + far, "crowdpose")["AP"] < 0.6


def test_bad_inputs_are_named(tmp_path, shared_dir):
    gt_file = shared_dir / "fixtures/eval/crowdpose_gt.json"
    ev = KeypointEvaluator(gt_file, "crowdpose")
    with pytest.raises(DataError, match="not in the ground truth.*123456789"):
        ev.evaluate([{"image_id": 123456789, "category_id": 1, "keypoints": [0] * 42, "score": 1}])
    with pytest.raises(DataError, match="detection #0 .* 51 keypoint values, expected 42"):
        ev.evaluate([{"image_id": 101955, "category_id": 1, "keypoints": [0] * 51, "score": 1}])
    with pytest.raises(DataError, match="no 'score'"):
        ev.evaluate([{"image_id": 101955, "category_id": 1, "keypoints": [0] * 42}])
    with pytest.raises(DataError, match="detections file not found: .*nope.json"):
        ev.evaluate(tmp_path / "nope.json")
    with pytest.raises(DataError, match="ground truth file not found"):
        KeypointEvaluator(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        ev.evaluate(tmp_path / "bad.json")
    # a COCO-17 file evaluated with the CrowdPose layout names the annotation and the expected length
    with pytest.raises(DataError, match="annotation id .* 'keypoints' has 51 values, expected 42"):
        KeypointEvaluator(shared_dir / "fixtures/eval/coco_gt.json", "crowdpose")
    gt = json.loads(gt_file.read_text())
    del gt["images"][0]["crowdIndex"]
    with pytest.raises(DataError, match="has no 'crowdIndex'"):
        KeypointEvaluator(gt, "crowdpose").evaluate([])


def test_results_round_trip(tmp_path):
    gt, _ = make_eval_case(5, 0, get_spec("coco"), seed=1)
    people = [a for a in gt["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    results = []
    for p in people:
        results += people_to_results(p["image_id"], np.reshape(p["keypoints"], (1, 17, 3)), [0.9])
    save_results(results, tmp_path / "res" / "results.json")
    loaded = json.loads((tmp_path / "res" / "results.json").read_text())
    assert loaded == results and set(loaded[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert evaluate_keypoints(gt, tmp_path / "res" / "results.json")["AP"] == pytest.approx(1.0)


def test_eval_json_cli(tmp_path, shared_dir):
    fx = shared_dir / "fixtures/eval"
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools/eval_json.py"), "--gt", str(fx / "crowdpose_gt.json"),
                           "--dt", str(fx / "crowdpose_dt.json"), "--dataset", "crowdpose", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert "AP_hard" in proc.stdout
    metrics = json.loads(out.read_text())
    assert list(metrics) == list(CROWDPOSE_METRICS)
    np.testing.assert_allclose(list(metrics.values()), _expected(shared_dir, "crowdpose"), atol=1e-12)
    bad = subprocess.run([sys.executable, str(REPO / "tools/eval_json.py"), "--gt", str(fx / "crowdpose_gt.json"),
                          "--dt", str(tmp_path / "missing.json"), "--dataset", "crowdpose"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.json" in bad.stderr
