"""Person boxes for the top-down test: ground truth with the official clean-up, a detection results file, a bupose
bottom-up model as the detector, and the errors of each."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import bupose
from bupose.config import load_config
from bupose.data.keypoints import get_spec
from bupose.errors import ConfigError, DataError
from bupose.methods.topdown.boxes import (DetectionFileBoxes, DetectorBoxes, GroundTruthBoxes, PersonBoxes,
                                          build_box_source, split_image_ids)

pytestmark = pytest.mark.usefixtures("one_thread")

K = 17
COCO = get_spec("coco")


def keypoints(n_labelled: int) -> list:
    """COCO style: unlabelled keypoints are (0, 0, 0) (the official test checks ``max(keypoints) == 0``)."""
    kp = []
    for i in range(K):
        kp += [10.0 + i, 20.0 + i, 2] if i < n_labelled else [0, 0, 0]
    return kp


def crafted_coco() -> dict:
    """One 100 x 80 image; annotation ids say what the official clean-up does with them."""
    anns = [
        {"id": 1, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 900.0, "keypoints": keypoints(5)},  # kept as [10, 5, 29, 39]
        {"id": 2, "bbox": [-5.0, -3.0, 20.0, 200.0], "area": 50.0, "keypoints": keypoints(3)},  # [0, 0, 19, 79]
        {"id": 3, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 900.0, "keypoints": keypoints(5), "iscrowd": 1},
        {"id": 4, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 0.0, "keypoints": keypoints(5)},  # zero area
        {"id": 5, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 900.0, "keypoints": keypoints(0)},  # no keypoints
        {"id": 6, "bbox": [120.0, 5.0, 30.0, 40.0], "area": 900.0, "keypoints": keypoints(5)},  # outside: x2 < x1
        {"id": 7, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 900.0, "keypoints": keypoints(5), "category_id": 2},
        {"id": 8, "bbox": [50.0, 50.0, 0.5, 0.5], "area": 0.2, "keypoints": keypoints(1)},  # kept: w - 1 < 0 -> 0
    ]
    for a in anns:
        a.setdefault("category_id", 1)
        a.setdefault("iscrowd", 0)
        a["image_id"] = 7
        a["num_keypoints"] = sum(1 for v in a["keypoints"][2::3] if v > 0)
    return {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}, {"id": 9, "file_name": "b.jpg",
                                                                                   "width": 10, "height": 10}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.names), "skeleton": []},
                           {"id": 2, "name": "dog"}]}


def test_ground_truth_official_cleanup():
    source = GroundTruthBoxes(crafted_coco(), "crafted.json", num_keypoints=K)
    boxes = source(7, None)
    assert source.ann_ids[7] == [1, 2, 8]
    np.testing.assert_array_equal(boxes.xywh, [[10, 5, 29, 39], [0, 0, 19, 79], [50, 50, 0, 0]])
    np.testing.assert_array_equal(boxes.scores, [1, 1, 1])
    assert len(source(9, None).xywh) == 0
    with pytest.raises(DataError, match="no image with id 123"):
        source(123, None)


def test_ground_truth_from_a_reader_config(tmp_path):
    from bupose.data.coco_format import CocoKeypointDataset

    (tmp_path / "ann.json").write_text(json.dumps(crafted_coco()))
    reader = CocoKeypointDataset(tmp_path / "ann.json", tmp_path, "coco")
    cfg = load_config(None, ["TEST.USE_GT_BBOX", "True", "TEST.COCO_BBOX_FILE", "ignored.json"])
    source = build_box_source(cfg, reader, COCO)
    assert isinstance(source, GroundTruthBoxes) and len(source(7, None).xywh) == 3
    with pytest.raises(ConfigError, match="USE_GT_BBOX needs a dataset split"):
        build_box_source(cfg, None, COCO)


def write(tmp_path: Path, entries, name="dets.json") -> Path:
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return path


def det(image_id=7, score=0.5, category_id=1, bbox=(1.0, 2.0, 30.0, 40.0)):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def test_detection_file_filters_by_score_and_category(tmp_path):
    path = write(tmp_path, [det(score=0.9), det(score=0.05), det(category_id=3, score=0.99), det(score=0.1),
                            det(image_id=9, score=0.3, bbox=(5, 5, 1, 1))])
    source = DetectionFileBoxes(path, image_ids=[7, 9], image_thre=0.1)
    boxes = source(7, None)
    np.testing.assert_array_equal(boxes.scores, [0.9, 0.1])  # file order; 0.1 is not below the threshold
    np.testing.assert_array_equal(boxes.xywh, [[1, 2, 30, 40]] * 2)
    assert source(9, None).xywh.tolist() == [[5, 5, 1, 1]]
    assert len(source(11, None).xywh) == 0  # an image without detections
    cfg = load_config(None, ["TEST.COCO_BBOX_FILE", str(path), "TEST.IMAGE_THRE", "0.5"])
    assert len(build_box_source(cfg, None, COCO)(7, None).xywh) == 1


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ({"image_id": 1}, "expected a COCO detection results list"),
    ([det(), [1, 2]], "entry 1 is a list"),
    ([det(), {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.4}], "entry 1 .* has no 'category_id'"),
    ([det(bbox=(1, 2, 3))], r"entry 0 \(image 7\): 'bbox' is \[1, 2, 3\]"),
    ([det(bbox=(1, 2, -3, 4))], "w, h >= 0"),
    ([det(score="high")], "'score' is 'high'"),
])
def test_detection_file_errors(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(DataError, match=message) as e:
        DetectionFileBoxes(path)
    assert str(path) in str(e.value)


def test_detection_file_missing_and_foreign_ids(tmp_path):
    with pytest.raises(DataError, match="person box file not found: .*nope.json"):
        DetectionFileBoxes(tmp_path / "nope.json")
    path = write(tmp_path, [det(image_id=7), det(image_id=1234), det(image_id=555, category_id=2)])
    with pytest.raises(DataError, match=r"2 image id\(s\) that are not in the split: \[1234, 555\]"):
        DetectionFileBoxes(path, image_ids=[7, 9])


def test_no_source_and_detector_config_errors(tmp_path, tiny_yaml):
    with pytest.raises(ConfigError, match="needs person boxes at test time"):
        build_box_source(load_config(None), None, COCO)
    with pytest.raises(ConfigError, match="file not found"):
        build_box_source(load_config(None, ["TEST.DETECTOR_CFG", str(tmp_path / "x.yaml")]), None, COCO)
    with pytest.raises(ConfigError, match="TEST.DETECTOR_MODEL_FILE is empty"):
        build_box_source(load_config(None, ["TEST.DETECTOR_CFG", str(tiny_yaml)]), None, COCO)
    topdown = tmp_path / "topdown.yaml"
    topdown.write_text("MODEL:\n  NAME: topdown_hrnet\n")
    with pytest.raises(ConfigError, match="top-down method 'topdown_hrnet'"):
        build_box_source(load_config(None, ["TEST.DETECTOR_CFG", str(topdown), "TEST.DETECTOR_MODEL_FILE", "w.pth"]),
                         None, COCO)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("MODEL:\n  NAME: hrnet_dekrr\n")
    with pytest.raises(ConfigError, match="unknown.yaml.*not a known method.*hrnet_dekr"):
        build_box_source(load_config(None, ["TEST.DETECTOR_CFG", str(unknown), "TEST.DETECTOR_MODEL_FILE", "w.pth"]),
                         None, COCO)


@pytest.fixture(scope="module")
def tiny_detector(tiny_yaml, tmp_path_factory):
    """A tiny DEKR experiment (every centre peak a person) and seeded He-normal weights for it (the official
    initialisation gives people of zero extent and near-zero scores)."""
    folder = tmp_path_factory.mktemp("detector")
    yaml = folder / "detector.yaml"
    yaml.write_text(f"_BASE_: {tiny_yaml.as_posix()}\nTEST:\n  KEYPOINT_THRESHOLD: -1.0e9\n  FLIP_TEST: false\n")
    torch.manual_seed(0)
    model = bupose.build_model(load_config(yaml))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    weights = folder / "detector.pth"
    torch.save(model.state_dict(), weights)
    return yaml, weights


def test_a_dekr_model_as_the_detector(tiny_detector, rng):
    yaml, weights = tiny_detector
    cfg = load_config(None, ["DEVICE", "cpu", "TEST.DETECTOR_CFG", str(yaml), "TEST.DETECTOR_MODEL_FILE",
                             str(weights), "TEST.IMAGE_THRE", "-1"])
    source = build_box_source(cfg, None, COCO)
    assert isinstance(source, DetectorBoxes)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    boxes = source(None, image)
    det_cfg = load_config(yaml)
    model = bupose.build_model(det_cfg)
    bupose.load_checkpoint(model, str(weights))
    people = bupose.Predictor(det_cfg, model, device="cpu").people(image)
    assert len(boxes.xywh) == len(people) > 0
    np.testing.assert_allclose(boxes.xywh, people.boxes)  # the extent of DEKR's keypoints
    np.testing.assert_allclose(boxes.scores, people.scores)
    assert (boxes.xywh[:, 2:] > 0).all()
    assert len(DetectorBoxes(source.predictor, image_thre=1.0)(None, image).xywh) == (people.scores >= 1).sum()
    with pytest.raises(DataError, match="needs the image"):
        source(3, None)


def test_split_image_ids_and_person_boxes():
    class Reader:
        image_ids = [3, 1]

    assert split_image_ids(Reader()) == [3, 1]
    empty = PersonBoxes.empty()
    assert empty.xywh.shape == (0, 4) and empty.scores.shape == (0,)


def test_topdown_predictor_uses_its_detector(tiny_detector, tmp_path, rng):
    yaml, weights = tiny_detector
    spec = {"FINAL_CONV_KERNEL": 1, "STEM_BLOCKS": 1, **{f"STAGE{i}": {
        "NUM_MODULES": 1, "NUM_BRANCHES": i, "BLOCK": "BASIC", "NUM_BLOCKS": [1] * i,
        "NUM_CHANNELS": [4 * 2 ** b for b in range(i)], "FUSE_METHOD": "SUM"} for i in (2, 3, 4)}}
    (tmp_path / "topdown.yaml").write_text(
        f"DEVICE: cpu\nDATASET:\n  DATASET: coco\n  NUM_JOINTS: 17\nMODEL:\n  NAME: topdown_hrnet\n"
        f"  IMAGE_SIZE: [48, 64]\n  HEATMAP_SIZE: [12, 16]\n  SPEC: {spec!r}\n"
        f"TEST:\n  DETECTOR_CFG: {yaml.as_posix()}\n  DETECTOR_MODEL_FILE: {weights.as_posix()}\n  IMAGE_THRE: -1\n"
        f"  OKS_THRE: 1.1\n")
    cfg = load_config(tmp_path / "topdown.yaml")
    torch.manual_seed(0)
    predictor = bupose.Predictor(cfg, bupose.build_model(cfg))
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    people = predictor.people(image)
    expected = predictor._detector(None, image)
    assert len(people) == len(expected.xywh) > 0  # OKS_THRE above 1: no suppression
    assert sorted(map(tuple, people.detection_boxes)) == sorted(map(tuple, expected.xywh))
    assert people.keypoints.shape == (len(people), 17, 3)
