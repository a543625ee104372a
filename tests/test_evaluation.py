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

from conftest import FIXTURES, REPO

FX = FIXTURES / "eval"  # ground truth, detections and the official evaluators' statistics (see its README.md)


def _expected(name):
    stats = json.loads((FX / f"{name}_expected.json").read_text())["stats"]
    return stats[:3] + stats[5:] if name == "crowdpose" else stats


@pytest.mark.parametrize("name", ["coco", "crowdpose"])
def test_fixture_equals_official_tool(name):
    metrics = evaluate_keypoints(FX / f"{name}_gt.json", FX / f"{name}_dt.json", name)
    assert list(metrics) == list(COCO_METRICS if name == "coco" else CROWDPOSE_METRICS)
    np.testing.assert_allclose(list(metrics.values()), _expected(name), rtol=0, atol=1e-12)


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


def test_bad_inputs_are_named(tmp_path):
    gt_file = FX / "crowdpose_gt.json"
    ev = KeypointEvaluator(gt_file, "crowdpose")
    with pytest.raises(DataError, match="not in the ground truth.*123456789"):
        ev.evaluate([{"image_id": 123456789, "category_id": 1, "keypoints": [0] * 42, "score": 1}])
    with pytest.raises(DataError, match=r"detection #0 \(image 101955\): 'keypoints' has 51 values, expected 42"):
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
        KeypointEvaluator(FX / "coco_gt.json", "crowdpose")
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


def test_eval_json_cli(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools/eval_json.py"), "--gt", str(FX / "crowdpose_gt.json"),
                           "--dt", str(FX / "crowdpose_dt.json"), "--dataset", "crowdpose", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert "AP_hard" in proc.stdout
    metrics = json.loads(out.read_text())
    assert list(metrics) == list(CROWDPOSE_METRICS)
    np.testing.assert_allclose(list(metrics.values()), _expected("crowdpose"), atol=1e-12)
    bad = subprocess.run([sys.executable, str(REPO / "tools/eval_json.py"), "--gt", str(FX / "crowdpose_gt.json"),
                          "--dt", str(tmp_path / "missing.json"), "--dataset", "crowdpose"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.json" in bad.stderr


# -- input checks: every entry that cannot be evaluated as it is is named; nothing is dropped or rounded silently ----
@pytest.fixture(scope="module")
def small_case():
    gt, dets = make_eval_case(12, 3, get_spec("crowdpose"), seed=7)
    assert len(dets) > 10 and {d["image_id"] for d in dets} <= {im["id"] for im in gt["images"]}
    return gt, dets


def _changed(dets, i, **fields):
    """A deep copy of ``dets`` whose ``i``-th entry has ``fields`` set (a value of None deletes the key when the
    field is given as ``key_=None``)."""
    out = copy.deepcopy(dets)
    for key, value in fields.items():
        if key.endswith("_"):
            del out[i][key[:-1]]
        else:
            out[i][key] = value
    return out


def test_integral_numbers_of_any_json_type_are_accepted(small_case):
    gt, dets = small_case
    ev = KeypointEvaluator(gt, "crowdpose")
    expected = ev.evaluate(dets)
    as_ints = copy.deepcopy(dets)
    for d in as_ints:
        d["image_id"] = float(d["image_id"])  # 1003.0 is image 1003
        d["keypoints"] = [int(round(v)) for v in d["keypoints"]]  # integer coordinates are valid numbers
    rounded = [{**d, "keypoints": [float(round(v)) for v in d["keypoints"]]} for d in dets]
    assert ev.evaluate(as_ints) == ev.evaluate(rounded)
    assert ev.evaluate(json.loads(json.dumps(dets))) == expected


@pytest.mark.parametrize("i,fields,message", [
    (4, {"image_id": 1003.5}, r"detection #4 \(image 1003.5\): 'image_id' is 1003.5, expected an integer"),
    (5, {"image_id": "1003"}, r"detection #5 \(image 1003\): 'image_id' is the string '1003', expected a number"),
    (2, {"score": "0.9"}, r"detection #2 \(image \d+\): 'score' is the string '0.9', expected a number"),
    (3, {"score": None}, r"detection #3 \(image \d+\): 'score' is null, expected a number"),
    (1, {"score": True}, r"detection #1 \(image \d+\): 'score' is the boolean true, expected a number"),
    (6, {"keypoints": [0.0] * 4 + [None] + [0.0] * 37},
     r"detection #6 \(image \d+\): 'keypoints' value #4 is null, expected a number"),
    (7, {"keypoints": ["1"] * 42}, r"detection #7 \(image \d+\): 'keypoints' value #0 is the string '1'"),
    (8, {"keypoints": None}, r"detection #8 \(image \d+\): 'keypoints' has null, expected 42 \(14 keypoints x 3\)"),
    (9, {"score_": None}, r"detection #9 \(image \d+\) has no 'score'"),
    (0, {"image_id_": None}, r"detection #0 has no 'image_id'"),
])
def test_bad_detection_values_are_named(small_case, i, fields, message):
    gt, dets = small_case
    with pytest.raises(DataError, match=r"^<detections>: " + message):
        KeypointEvaluator(gt, "crowdpose").evaluate(_changed(dets, i, **fields))


def test_a_detections_file_entry_that_is_not_an_object_is_named(small_case, tmp_path):
    gt, dets = small_case
    path = tmp_path / "dt.json"
    path.write_text(json.dumps(dets[:3] + [[1, 2, 3]] + dets[3:]))
    with pytest.raises(DataError, match=r"dt.json: detection #3 is a list, expected a JSON object"):
        KeypointEvaluator(gt, "crowdpose").evaluate(path)


def test_detections_of_another_category_are_dropped_with_a_warning(small_case, caplog):
    gt, dets = small_case
    ev = KeypointEvaluator(gt, "crowdpose")
    other = _changed(_changed(dets, 3, category_id=2), 5, category_id=2)
    with caplog.at_level("WARNING", logger="bupose"):
        got = ev.evaluate(other)
    assert "<detections>: 2 of %d detections have a category_id other than 1 and are not evaluated" % len(dets) \
        in caplog.text
    assert got == ev.evaluate([d for j, d in enumerate(dets) if j not in (3, 5)])
    with pytest.raises(DataError, match=r"detection #7 "):  # entries keep their numbers in the file
        ev.evaluate(_changed(other, 7, score=None))


@pytest.mark.parametrize("change,message", [
    (lambda gt: gt.update(images=[]), r"the ground truth has no images \('images' is empty\)"),
    (lambda gt: gt["images"][2].update(id=1002.5), r"image #2: 'id' is 1002.5, expected an integer"),
    (lambda gt: gt["annotations"][1].update(image_id=1000.5), r"annotation id \d+ \(image 1000.5\): 'image_id' is "
                                                               r"1000.5, expected an integer"),
    (lambda gt: gt["annotations"][1]["keypoints"].__setitem__(0, None),
     r"annotation id \d+ \(image \d+\): 'keypoints' value #0 is null"),
    (lambda gt: gt["annotations"][2]["bbox"].__setitem__(3, "12"), r"annotation id \d+ \(image \d+\): 'bbox' value "
                                                                   r"#3 is the string '12'"),
    (lambda gt: gt["annotations"][0].pop("num_keypoints"), r"annotation id 1 \(image \d+\) has no 'num_keypoints'"),
    (lambda gt: gt["annotations"].append(7), r"annotation #\d+ is 7 \(int\), expected a JSON object"),
])
def test_bad_ground_truth_values_are_named(small_case, change, message):
    gt = copy.deepcopy(small_case[0])
    change(gt)
    with pytest.raises(DataError, match=r"^<ground truth>: " + message):
        KeypointEvaluator(gt, "crowdpose")


def test_large_integer_ids_stay_exact(small_case):
    """Ids are compared as int64: an annotation id above 2**53 keeps its last digit (no detour through floats)."""
    gt = copy.deepcopy(small_case[0])
    gt["annotations"][0]["id"] = 2 ** 62 + 1
    ev = KeypointEvaluator(gt, "crowdpose")
    assert (2 ** 62 + 1) in ev.gt.ids.tolist()


def test_missing_fields_keep_their_hints(small_case):
    gt = copy.deepcopy(small_case[0])
    del gt["annotations"][0]["area"]
    with pytest.raises(DataError, match=r"annotation id 1 \(image \d+\) has no 'area' \(COCO protocol; use "
                                        r"dataset='crowdpose'"):
        KeypointEvaluator(gt, "coco", sigmas=get_spec("crowdpose").sigmas)
