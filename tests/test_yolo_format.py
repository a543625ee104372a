"""Tests of the Ultralytics YOLO-pose reader and writer: COCO -> YOLO -> reader round trips on the synthetic crowds
(keypoints, boxes and evaluation results equal), a hand-written K=5 dataset with known pixels, EXIF orientation,
every kind of bad YAML / label file, and the ``yolo`` dataset name in the builders."""
import logging

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from bupose.config import load_config
from bupose.data.build import build_dataset, dataset_files, dataset_spec, prepare_dataset
from bupose.data.coco_format import CocoKeypointDataset
from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.data.sample import Sample
from bupose.data.yolo_format import (YoloPoseDataset, apply_exif_orientation, label_path, load_data_yaml,
                                     write_yolo_pose, yolo_spec)
from bupose.errors import DataError
from bupose.evaluation import KeypointEvaluator, people_to_results

LOGGER = "bupose.data"


# --- COCO -> YOLO -> reader --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def yolo_synthetic(synthetic_root, tmp_path_factory):
    """The synthetic CrowdPose-layout train and val splits written as one YOLO-pose dataset: ``(yaml, coco files)``."""
    out = tmp_path_factory.mktemp("yolo_synthetic")
    coco = {}
    for split in ("val", "train"):
        ann = synthetic_root / f"synthetic/annotations/crowdpose_{split}.json"
        images = synthetic_root / f"synthetic/images/{split}"
        data_yaml = write_yolo_pose(ann, images, out, CROWDPOSE14, split=split)
        coco[split] = (ann, images)
    return data_yaml, coco


@pytest.mark.parametrize("split", ["val", "train"])
def test_round_trip_keypoints(yolo_synthetic, split):
    data_yaml, coco = yolo_synthetic
    ds = YoloPoseDataset(data_yaml, split)
    ref = CocoKeypointDataset(*coco[split], CROWDPOSE14)
    assert ds.spec is CROWDPOSE14  # names, flip index, sigmas and skeleton survive through the YAML
    assert len(ds) == len(ref)
    for i in range(len(ds)):
        s, r = ds[i], ref[i]
        assert isinstance(s, Sample)
        assert s.file_name.endswith(r.file_name.rsplit("/", 1)[-1])
        np.testing.assert_array_equal(s.image, r.image)
        assert s.keypoints.dtype == np.float32 and s.keypoints.shape == r.keypoints.shape
        size = max(s.image.shape[:2])
        np.testing.assert_allclose(s.keypoints[..., :2], r.keypoints[..., :2], atol=1e-6 * size + 1e-4)
        np.testing.assert_array_equal(s.keypoints[..., 2], r.keypoints[..., 2])
        np.testing.assert_allclose(s.boxes, r.boxes, atol=1e-6 * size + 1e-4)
        np.testing.assert_allclose(s.areas, r.areas, rtol=1e-4)  # 0.53 * w * h in both
        assert s.ignore_mask.shape == s.image.shape[:2] and s.ignore_mask.dtype == np.uint8
        assert len(set(s.ann_ids.tolist())) == s.num_people and s.ann_ids.min(initial=1) >= 1


@pytest.mark.parametrize("split", ["val", "train"])
def test_coco_gt_evaluates_like_the_original(yolo_synthetic, split):
    """Noisy predictions score the same against ``coco_gt()`` (COCO protocol, 0.53 * box area) as against the
    original CrowdPose-layout file with the CrowdPose protocol (which uses 0.53 * box area too)."""
    data_yaml, coco = yolo_synthetic
    ds = YoloPoseDataset(data_yaml, split)
    ref = CocoKeypointDataset(*coco[split], CROWDPOSE14)
    rng = np.random.default_rng(0)
    ours, theirs = [], []
    for i in range(len(ds)):
        kp = ref.get_annotations(i).keypoints.copy()
        kp[..., :2] += rng.normal(0, 3, kp[..., :2].shape)
        kp[..., 2] = 1
        scores = rng.random(len(kp))
        ours += people_to_results(ds.image_ids[i], kp, scores)
        theirs += people_to_results(ref.image_ids[i], kp, scores)
    gt = ds.coco_gt()
    assert [im["id"] for im in gt["images"]] == ds.image_ids
    assert gt["categories"][0]["keypoints"] == list(CROWDPOSE14.names)
    assert gt["categories"][0]["skeleton"][0] == [13, 14]  # 1-based
    m = KeypointEvaluator(gt, "coco", sigmas=ds.spec.sigmas).evaluate(ours)
    m_ref = KeypointEvaluator(coco[split][0], "crowdpose").evaluate(theirs)
    assert 0.3 < m["AP"] < 0.99
    assert m["AP"] == pytest.approx(m_ref["AP"], abs=1e-9) and m["AR"] == pytest.approx(m_ref["AR"], abs=1e-9)
    perfect = [r for i in range(len(ds)) for r in people_to_results(
        ds.image_ids[i], ds.get_annotations(i).keypoints, np.ones(ds.get_annotations(i).num_people))]
    assert KeypointEvaluator(gt, "coco", sigmas=ds.spec.sigmas).evaluate(perfect)["AP"] == pytest.approx(1.0)


def test_writer_output(yolo_synthetic, synthetic_root):
    data_yaml, coco = yolo_synthetic
    meta = yaml.safe_load(data_yaml.read_text())
    assert meta["kpt_shape"] == [14, 3] and meta["flip_idx"] == list(CROWDPOSE14.flip_index)
    assert meta["train"] == "images/train" and meta["val"] == "images/val" and meta["names"] == {0: "person"}
    root = data_yaml.parent
    img = root / "images/val/000001.jpg"
    assert img.is_symlink() and label_path(img) == root / "labels/val/000001.txt"
    rows = label_path(img).read_text().splitlines()
    assert all(len(r.split()) == 5 + 14 * 3 for r in rows)


def test_writer_coco_layout_and_ignored_people(tmp_path, synthetic_root):
    import json

    ann = json.loads((synthetic_root / "synthetic/annotations/coco_val.json").read_text())
    first = ann["images"][0]["id"]
    people = [a for a in ann["annotations"] if a["image_id"] == first and not a.get("iscrowd")]
    people[0]["num_keypoints"] = 0  # the COCO reader ignores it: it must stay ignored
    crowd = dict(people[1], id=10**9, iscrowd=1)
    ann["annotations"].append(crowd)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(ann))
    data_yaml = write_yolo_pose(path, synthetic_root / "synthetic/images/val", tmp_path / "out", "coco",
                                copy_images=True)
    ds = YoloPoseDataset(data_yaml, "val")
    ref = CocoKeypointDataset(path, synthetic_root / "synthetic/images/val", COCO17)
    assert ds.spec is COCO17 and not ds.image_path(0).is_symlink()
    a, r = ds.get_annotations(0), ref.get_annotations(0)
    assert a.num_people == r.num_people == len(people) - 1
    assert [g["id"] for g in a.ignored] and len(a.ignored) == 1  # the crowd region is not in the YOLO labels
    x, y, w, h = a.ignored[0]["bbox"]
    np.testing.assert_allclose([x, y, w, h], people[0]["bbox"], atol=1e-3)
    m = ds[0].ignore_mask
    assert m[int(np.ceil(y)):int(y + h), int(np.ceil(x)):int(x + w)].all()


def test_writer_bad_input(tmp_path, synthetic_root):
    import json

    src = synthetic_root / "synthetic/annotations/crowdpose_val.json"
    images = synthetic_root / "synthetic/images/val"
    write_yolo_pose(src, images, tmp_path / "out", CROWDPOSE14, split="val")
    with pytest.raises(DataError, match=r"data\.yaml exists with kpt_shape \[14, 3\], expected \[17, 3\]"):
        write_yolo_pose(src, images, tmp_path / "out", COCO17, split="train")
    ann = json.loads(src.read_text())
    ann["images"][1]["file_name"] = "../escape.jpg"
    (tmp_path / "bad.json").write_text(json.dumps(ann))
    with pytest.raises(DataError, match=r"bad\.json: image \d+: 'file_name' is '\.\./escape\.jpg', expected a path "
                                        r"relative to the image folder"):
        write_yolo_pose(tmp_path / "bad.json", images, tmp_path / "out2", CROWDPOSE14)
    with pytest.raises(DataError, match=r"image \d+: image file not found: .*nowhere"):
        write_yolo_pose(src, tmp_path / "nowhere", tmp_path / "out3", CROWDPOSE14)


# --- a hand-written K=5 dataset ----------------------------------------------------------------------------------
K5_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
A_SIZE, B_SIZE, C_SIZE = (40, 30), (50, 20), (16, 12)  # (width, height)
A_PERSON = "0 0.5 0.5 0.5 0.6 0.5 0.3 2 0.4 0.25 1 0.6 0.25 2 0 0 0 0.75 0.3 2"
A_NOBODY = "0 0.125 0.75 0.25 0.2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"
B_PERSON = "0 0.5 0.5 1 1 0.1 0.1 2 0.2 0.2 2 0.3 0.3 2 0.4 0.4 2 1 1 2"


def _image(path, size, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((size[1], size[0], 3), value, np.uint8)
    img[0, 0] = (10, 20, 30)
    assert cv2.imwrite(str(path), img)
    return img


def make_k5(root, a_rows=(A_PERSON, A_NOBODY), b_rows=(B_PERSON,), **yaml_keys):
    """images/train/{a.jpg, b.png, c.jpg} with labels for a and b (c has no label file: no people), and a val
    split given as a list file; returns the data YAML. ``yaml_keys`` replace keys of the YAML (None removes one)."""
    _image(root / "images/train/a.jpg", A_SIZE)
    _image(root / "images/train/b.png", B_SIZE)
    _image(root / "images/train/c.jpg", C_SIZE)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("\n".join(a_rows) + "\n")
    (root / "labels/train/b.txt").write_text("\n".join(b_rows) + "\n\n")
    (root / "val.txt").write_text(f"./images/train/b.png\n{root / 'images/train/a.jpg'}\n")
    meta = {"path": ".", "train": "images/train", "val": "val.txt", "kpt_shape": [5, 3],
            "flip_idx": [0, 2, 1, 4, 3], "names": {0: "person"}, "kpt_names": {0: K5_NAMES}}
    meta.update(yaml_keys)
    meta = {k: v for k, v in meta.items() if v is not None}
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(meta, sort_keys=False))
    return path


def test_custom_k5_dataset(tmp_path):
    ds = YoloPoseDataset(make_k5(tmp_path), "train")
    assert ds.spec.names == tuple(K5_NAMES) and ds.spec.flip_index == (0, 2, 1, 4, 3)
    assert ds.spec.sigmas == (0.2,) * 5 and ds.spec.name == "yolo:data"  # Ultralytics' 1 / K
    assert ds.image_ids == [1, 2, 3]  # stems are not numbers: positions
    assert [p.name for p in map(ds.image_path, range(3))] == ["a.jpg", "b.png", "c.jpg"]

    a = ds[0]
    assert a.image.shape == (30, 40, 3)
    np.testing.assert_array_equal(a.image, cv2.imread(str(tmp_path / "images/train/a.jpg")))
    np.testing.assert_allclose(a.keypoints[0], [[20, 9, 2], [16, 7.5, 1], [24, 7.5, 2], [0, 0, 0], [30, 9, 2]])
    np.testing.assert_allclose(a.boxes, [[10, 6, 30, 24]])
    np.testing.assert_allclose(a.areas, [0.53 * 20 * 18])
    assert a.ann_ids.tolist() == [1]
    expected = np.zeros((30, 40), np.uint8)
    expected[19:26, 0:10] = 1  # the row without labelled keypoints: box x 0..10, y 19.5..25.5 (pixels it touches)
    np.testing.assert_array_equal(a.ignore_mask, expected)
    np.testing.assert_array_equal(ds.get_ignore_mask(0), expected)  # from the header, without decoding

    b = ds[1]
    np.testing.assert_allclose(b.keypoints[0, :, :2], [[5, 2], [10, 4], [15, 6], [20, 8], [50, 20]])
    assert b.ann_ids.tolist() == [3] and b.ignore_mask.sum() == 0
    c = ds[2]
    assert c.num_people == 0 and c.keypoints.shape == (0, 5, 3) and c.boxes.shape == (0, 4)

    assert YoloPoseDataset(tmp_path / "data.yaml", "train", min_people=1).image_ids == [1, 2]
    val = YoloPoseDataset(tmp_path / "data.yaml", "val")  # a list file: relative and absolute lines
    assert [p.name for p in map(val.image_path, range(len(val)))] == ["a.jpg", "b.png"]
    assert YoloPoseDataset(tmp_path / "data.yaml", "train", area_factor=1.0)[0].areas.tolist() == [360.0]

    gt = ds.coco_gt()
    assert gt["images"] == [{"id": 1, "file_name": "images/train/a.jpg", "width": 40, "height": 30},
                            {"id": 2, "file_name": "images/train/b.png", "width": 50, "height": 20},
                            {"id": 3, "file_name": "images/train/c.jpg", "width": 16, "height": 12}]
    assert [(g["id"], g["image_id"], g["num_keypoints"]) for g in gt["annotations"]] == [(1, 1, 4), (2, 1, 0),
                                                                                        (3, 2, 5)]
    first = gt["annotations"][0]
    assert first["bbox"] == pytest.approx([10, 6, 20, 18]) and first["area"] == pytest.approx(0.53 * 360)
    assert first["keypoints"][:6] == pytest.approx([20, 9, 2, 16, 7.5, 1]) and first["iscrowd"] == 0
    assert gt["categories"][0]["keypoints"] == K5_NAMES and gt["categories"][0]["skeleton"] == []


def test_two_value_keypoints(tmp_path):
    rows = ("0 0.5 0.5 0.5 0.6 0.5 0.3 0 0 -0.005 0.25 0.25 0.25 0.75 0.3",)
    ds = YoloPoseDataset(make_k5(tmp_path, a_rows=rows, b_rows=(), kpt_shape=[5, 2]), "train")
    # (0, 0) and a negative coordinate are unlabelled, every other point is visible
    np.testing.assert_allclose(ds[0].keypoints[0], [[20, 9, 2], [0, 0, 0], [0, 0, 0], [10, 7.5, 2], [30, 9, 2]])


def test_numeric_stems_are_ids(tmp_path):
    for stem in ("000000000139", "785"):
        _image(tmp_path / f"images/val/{stem}.jpg", (20, 20))
    (tmp_path / "labels/val").mkdir(parents=True)
    path = tmp_path / "d.yaml"
    path.write_text("val: images/val\nkpt_shape: [17, 2]\nflip_idx: [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, "
                    "13, 16, 15]\n")
    ds = YoloPoseDataset(path, "val")  # no 'path': the YAML's folder
    assert ds.image_ids == [139, 785] and ds.spec is COCO17 and len(ds[0].keypoints) == 0


@pytest.mark.parametrize("keys,spec_name,sigma0", [
    ({}, "coco", COCO17.sigmas[0]),
    ({"kpt_oks_sigmas": [0.05] * 17}, "yolo:d", 0.05),
    ({"flip_idx": list(range(17))}, "yolo:d", 1 / 17),
    ({"kpt_names": [f"p{i}" for i in range(17)]}, "yolo:d", 1 / 17),
])
def test_sigmas_and_layouts(tmp_path, keys, spec_name, sigma0):
    meta = {"val": "x", "kpt_shape": [17, 3], "flip_idx": list(COCO17.flip_index)}
    meta.update(keys)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(meta))
    spec = yolo_spec(tmp_path / "d.yaml")
    assert spec.name == spec_name and spec.sigmas[0] == pytest.approx(sigma0)
    if spec_name == "coco":
        assert spec is COCO17
    elif "kpt_names" not in keys and keys.get("flip_idx") is None:
        assert spec.names == COCO17.names and spec.skeleton == COCO17.skeleton


# --- EXIF orientation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_like_opencv(tmp_path, orientation, rng):
    pixels = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[274] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif.tobytes())
    stored = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(apply_exif_orientation(stored, orientation), cv2.imread(str(path)))


def test_reader_applies_exif_orientation(tmp_path, rng):
    pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # stored 40 wide, 30 high
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[274] = 6  # rotate 90 degrees clockwise to display: 30 wide, 40 high
    (tmp_path / "images").mkdir()
    im.save(tmp_path / "images/r.jpg", exif=exif.tobytes(), quality=95)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels/r.txt").write_text("0 0.5 0.5 0.5 0.5 0.5 0.25 2\n")
    (tmp_path / "d.yaml").write_text("train: images\nkpt_shape: [1, 3]\nflip_idx: [0]\n")
    ds = YoloPoseDataset(tmp_path / "d.yaml", "train")
    s = ds[0]
    np.testing.assert_array_equal(s.image, cv2.imread(str(tmp_path / "images/r.jpg")))
    assert s.image.shape == (40, 30, 3) and ds.image_size(0) == (30, 40)
    np.testing.assert_allclose(s.keypoints[0, 0], [15, 10, 2])
    assert ds.coco_gt()["images"][0]["width"] == 30


# --- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keys,match", [
    ({"kpt_shape": None}, "missing key 'kpt_shape'"),
    ({"kpt_shape": [5, 4]}, r"'kpt_shape' is \[5, 4\], expected \[K, 2\] or \[K, 3\]"),
    ({"flip_idx": None}, "missing key 'flip_idx'"),
    ({"flip_idx": [0, 2, 1, 4]}, r"'flip_idx' is \[0, 2, 1, 4\], expected 5 integers"),
    ({"flip_idx": [0, 2, 1, 3, 3]}, r"'flip_idx' is not an involution: flip_idx\[4\] = 3 but flip_idx\[3\] = 3"),
    ({"flip_idx": [0, 2, 1, 4, 5]}, r"'flip_idx'\[4\] is 5, expected an index in 0 .. 4"),
    ({"kpt_oks_sigmas": [0.1, 0.1, 0.1, 0.1, -1]}, "'kpt_oks_sigmas' .* expected 5 positive numbers"),
    ({"kpt_names": ["a", "b"]}, "'kpt_names' .* expected 5 names"),
    ({"skeleton": [[0, 5]]}, "'skeleton' .* 0-based keypoint indices in 0 .. 4"),
    ({"names": "person"}, "'names' is 'person'"),
    ({"path": 3}, "'path' is 3"),
])
def test_bad_yaml(tmp_path, keys, match):
    path = make_k5(tmp_path, **keys)
    with pytest.raises(DataError, match=rf"data\.yaml: {match}"):
        YoloPoseDataset(path, "train")


def test_yaml_file_problems(tmp_path):
    with pytest.raises(DataError, match="data YAML not found"):
        YoloPoseDataset(tmp_path / "nope.yaml", "val")
    make_k5(tmp_path)
    with pytest.raises(DataError, match=r"is a folder; .*data YAML file .*DATASET.ROOT.*; found here: data.yaml"):
        YoloPoseDataset(tmp_path, "val")
    (tmp_path / "bad.yaml").write_text("kpt_shape: [5, 3\n")
    with pytest.raises(DataError, match="bad.yaml: not valid YAML"):
        load_data_yaml(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match=r"no split 'test' \(missing key 'test'\); splits in the file: \['train', "
                                        r"'val'\]"):
        YoloPoseDataset(tmp_path / "data.yaml", "test")


def test_missing_folders(tmp_path):
    path = make_k5(tmp_path, train="images/nope")
    with pytest.raises(DataError, match=r"split 'train': images folder or list file not found at .*images/nope"):
        YoloPoseDataset(path, "train")
    path = make_k5(tmp_path / "2", val=None)
    (tmp_path / "2/labels/train/a.txt").unlink()
    (tmp_path / "2/labels/train/b.txt").unlink()
    (tmp_path / "2/labels/train").rmdir()
    (tmp_path / "2/labels").rmdir()
    with pytest.raises(DataError, match=r"no label files and no labels folder found; expected e.g. "
                                        r".*labels/train/a.txt"):
        YoloPoseDataset(path, "train")
    (tmp_path / "2/labels/train").mkdir(parents=True)  # a labels folder without files: nobody anywhere
    assert sum(s.num_people for s in YoloPoseDataset(path, "train")) == 0
    empty = tmp_path / "3"
    (empty / "images").mkdir(parents=True)
    (empty / "d.yaml").write_text("val: images\nkpt_shape: [1, 2]\nflip_idx: [0]\n")
    with pytest.raises(DataError, match="split 'val': no images found"):
        YoloPoseDataset(empty / "d.yaml", "val")


@pytest.mark.parametrize("row,match", [
    (A_PERSON.rsplit(" ", 1)[0], r"a\.txt:2: 19 values, expected 20 = 5 \+ 5 \* 3"),
    (" ".join(A_PERSON.split()[:15]), r"a\.txt:2: 15 values, expected 20 .*is kpt_shape \[5, 2\]\?"),
    (A_PERSON.replace("0.4 0.25 1", "1.2 0.25 1"), r"a\.txt:2: keypoint 1 x = 1\.2 is outside \[0, 1\]"),
    (A_PERSON.replace("0 0.5 0.5 0.5 0.6", "0 0.5 -0.3 0.5 0.6", 1), r"a\.txt:2: cy = -0\.3 is outside"),
    ("1" + A_PERSON[1:], r"a\.txt:2: class 1, expected an integer in 0 \.\. 0"),
    ("0.5" + A_PERSON[1:], r"a\.txt:2: class 0\.5, expected an integer"),
    (A_PERSON.replace("0.4 0.25 1", "0.4 0.25 3"), r"a\.txt:2: keypoint 1 visibility is 3, expected 0, 1 or 2"),
    (A_PERSON.replace("0.4 0.25 1", "0.4 abc 1"), r"a\.txt:2: 'abc' is not a number"),
    (A_PERSON.replace("0.4 0.25 1", "0.4 nan 1"), r"a\.txt:2: non-finite value"),
])
def test_bad_label_rows(tmp_path, caplog, row, match):
    path = make_k5(tmp_path, a_rows=(A_PERSON, row))
    with pytest.raises(DataError, match=match):
        YoloPoseDataset(path, "train")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = YoloPoseDataset(path, "train", on_error="skip")
    assert ds.image_ids == [2, 3]  # the image with the bad label file is dropped
    assert any("a.txt:2" in r.getMessage() for r in caplog.records)


def test_small_tolerance_and_duplicates(tmp_path, caplog):
    edge = A_PERSON.replace("0.4 0.25 1", "1.005 -0.005 1")  # within Ultralytics' 1 % tolerance
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = YoloPoseDataset(make_k5(tmp_path, a_rows=(edge, A_NOBODY, edge)), "train")
    np.testing.assert_allclose(ds[0].keypoints[0, 1], [40.2, -0.15, 1], rtol=1e-6)
    assert ds[0].num_people == 1 and "dropped 1 duplicate row(s) (lines [3])" in caplog.text


def test_bad_image_skip(tmp_path, caplog):
    path = make_k5(tmp_path)
    (tmp_path / "images/train/b.png").write_bytes(b"not an image" * 10)
    ds = YoloPoseDataset(path, "train")
    with pytest.raises(DataError, match=r"data\.yaml split 'train': image 2 \('b\.png'\): .*cannot be decoded"):
        ds[1]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        s = YoloPoseDataset(path, "train", on_error="skip")[1]
    assert s.image_id == 3 and "returning index 2" in caplog.text
    with pytest.raises(DataError, match=r"image 2 \('b\.png'\): image file .* cannot be read"):
        ds.coco_gt()
    assert [im["id"] for im in YoloPoseDataset(path, "train", on_error="skip").coco_gt()["images"]] == [1, 3]


def test_reader_arguments(tmp_path):
    path = make_k5(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        YoloPoseDataset(path, "train", on_error="ignore")
    ds = YoloPoseDataset(path, "train", transform=lambda s: s.image_id)
    assert [ds[0], ds[-1]] == [1, 3]
    with pytest.raises(IndexError):
        ds[3]


def test_label_path_rule():
    assert label_path("/d/images/train/a.b.jpg").as_posix() == "/d/labels/train/a.b.txt"
    assert label_path("/images/x/images/y/a.png").as_posix() == "/images/x/labels/y/a.txt"  # the last 'images'
    assert label_path("/d/pics/a.jpg").as_posix() == "/d/pics/a.txt"  # no 'images' folder: next to the image


# --- the `yolo` dataset name -------------------------------------------------------------------------------------
def test_builders(tmp_path, yolo_synthetic):
    data_yaml, _ = yolo_synthetic
    assert dataset_spec("yolo", data_yaml) is CROWDPOSE14 and dataset_spec("crowdpose") is CROWDPOSE14
    assert dataset_spec("yolo", make_k5(tmp_path)).names == tuple(K5_NAMES)
    with pytest.raises(DataError, match="'yolo' needs the path of its data YAML"):
        dataset_spec("yolo")
    assert dataset_files("yolo", data_yaml, "val") == (data_yaml, data_yaml.parent / "images/val")
    with pytest.raises(DataError, match="no split 'test'"):
        dataset_files("yolo", data_yaml, "test")
    ds = build_dataset("yolo", root=data_yaml, split="val", min_people=1)
    assert isinstance(ds, YoloPoseDataset) and ds.split == "val" and ds.min_people == 1

    cfg = load_config(None, ["DATASET.DATASET", "yolo", "DATASET.ROOT", str(data_yaml), "DATASET.ON_ERROR", "skip"])
    reader = prepare_dataset(cfg, "train", min_people=1)
    assert isinstance(reader, YoloPoseDataset) and reader.on_error == "skip" and reader.spec is CROWDPOSE14
    assert all(reader.get_annotations(i).num_people >= 1 for i in range(len(reader)))
