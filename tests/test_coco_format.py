"""Tests of the COCO-format readers: real COCO / CrowdPose / OCHuman samples, the official CrowdPose val file at scale,
ignore masks from every segmentation encoding, and every kind of bad input (generated in tmp_path)."""
import json
import logging
import time

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from bupose.data.coco_format import CocoKeypointDataset
from bupose.data.io import ignore_mask, image_file_problem, read_image
from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.data.sample import Sample
from bupose.errors import DataError

from conftest import needs_shared

LOGGER = "bupose.data"


# --- real samples (third-party images, not in the repository: skipped without shared/) ----------------------------
def test_coco_samples():
    root = needs_shared("data/samples/coco")
    raw = json.loads((root / "test_coco.json").read_text())
    ds = CocoKeypointDataset(root / "test_coco.json", root, "coco")
    assert len(ds) == 4
    assert ds.image_ids == [img["id"] for img in raw["images"]]
    unlabelled = {a["id"]: a for a in raw["annotations"] if a["num_keypoints"] == 0}
    assert len(unlabelled) == 2

    people = 0
    for i in range(len(ds)):
        s = ds[i]
        assert isinstance(s, Sample)
        img = ds.coco.imgs[s.image_id]
        assert s.image.dtype == np.uint8 and s.image.shape == (img["height"], img["width"], 3)
        assert s.keypoints.dtype == np.float32 and s.keypoints.shape == (s.num_people, 17, 3)
        assert s.boxes.dtype == np.float32 and s.boxes.shape == (s.num_people, 4)
        assert s.ignore_mask.dtype == np.uint8 and s.ignore_mask.shape == s.image.shape[:2]
        assert s.crowd_index is None
        assert not set(s.ann_ids.tolist()) & set(unlabelled)
        for j, aid in enumerate(s.ann_ids):
            ann = ds.coco.anns[int(aid)]
            x, y, w, h = ann["bbox"]
            np.testing.assert_allclose(s.boxes[j], [x, y, x + w, y + h], rtol=1e-6)
            np.testing.assert_allclose(s.keypoints[j].ravel(), ann["keypoints"])
            assert s.areas[j] == pytest.approx(ann["area"], rel=1e-6)
        expected_mask = np.zeros(s.image.shape[:2], np.uint8)
        for ann in ds.coco.imgToAnns[s.image_id]:
            if ann["num_keypoints"] == 0:
                expected_mask |= ds.coco.annToMask(ann)
        np.testing.assert_array_equal(s.ignore_mask, expected_mask)
        people += s.num_people
    assert people == 12
    # the two unlabelled people are in the masks of their images
    for ann in unlabelled.values():
        idx = ds.image_ids.index(ann["image_id"])
        assert ds[idx].ignore_mask[ds.coco.annToMask(ann) > 0].all()
        assert len(ds.get_annotations(idx).ignored) == 1


def test_crowdpose_samples():
    root = needs_shared("data/samples/crowdpose")
    ds = CocoKeypointDataset(root / "test_crowdpose.json", root, CROWDPOSE14)
    assert sorted(ds[i].crowd_index for i in range(len(ds))) == [0.33, 0.39]
    assert sum(ds[i].num_people for i in range(len(ds))) == 4  # 5 annotations, one with num_keypoints == 0
    for i in range(len(ds)):
        s = ds[i]
        assert s.keypoints.shape[1:] == (14, 3)
        w, h = s.boxes[:, 2] - s.boxes[:, 0], s.boxes[:, 3] - s.boxes[:, 1]
        np.testing.assert_allclose(s.areas, 0.53 * w * h, rtol=1e-5)  # no 'area' in CrowdPose: the evaluator's scale
        for ann in ds.get_annotations(i).ignored:  # no segmentation: the box is ignored
            x, y, bw, bh = ann["bbox"]
            assert s.ignore_mask[int(np.ceil(y)):int(y + bh), int(np.ceil(x)):int(x + bw)].all()
    assert sum(int(ds[i].ignore_mask.any()) for i in range(len(ds))) == 1


def test_ochuman_samples():
    root = needs_shared("data/samples/ochuman")
    ds = CocoKeypointDataset(root / "test_ochuman.json", root, "ochuman")
    assert len(ds) == 3
    samples = [ds[i] for i in range(len(ds))]
    assert sum(s.num_people for s in samples) == 5
    for s in samples:
        assert s.keypoints.shape[1:] == (17, 3) and s.crowd_index is None
        for j, aid in enumerate(s.ann_ids):
            assert s.areas[j] == pytest.approx(ds.coco.anns[int(aid)]["area"])
        assert not s.ignore_mask.any()


def test_crowdpose_val_at_scale():
    val_file = needs_shared("data/crowdpose_val.json")  # the official CrowdPose val annotations (2.7 MB)
    t0 = time.perf_counter()
    ds = CocoKeypointDataset(val_file, "/nonexistent/images", "crowdpose")
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"parsing 8,527 annotations took {elapsed:.1f} s"
    assert len(ds) == 2000 and len(ds.coco.anns) == 8527
    recs = [ds.get_annotations(i) for i in range(len(ds))]
    people = sum(r.num_people for r in recs)
    ignored = sum(len(r.ignored) for r in recs)
    assert people + ignored == 8527
    raw_people = sum(1 for a in ds.coco.anns.values() if not a["iscrowd"] and a["num_keypoints"] > 0)
    assert people == raw_people == 7074
    assert all(r.crowd_index is not None for r in recs)
    crowd = [ann for r in recs for ann in r.ignored if ann["iscrowd"]]
    assert len(crowd) == 106
    # ignore masks without reading images, at the size the file states
    i = ds.image_ids.index(crowd[0]["image_id"])
    m = ds.get_ignore_mask(i)
    rec = recs[i]
    assert m.shape == (rec.height, rec.width) and m.any()
    # all val images have people: the training filter keeps them all
    assert len(CocoKeypointDataset(val_file, "/x", "crowdpose", min_people=1)) == 2000


# --- synthetic files in tmp_path -------------------------------------------------------------------------------
H, W = 48, 64


def _person(ann_id, image_id, k=14, bbox=(10, 10, 20, 30), **extra):
    kps = []
    for j in range(k):
        kps += [12 + j, 12 + j, 2]
    ann = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": list(bbox),
           "keypoints": kps, "num_keypoints": k}
    ann.update(extra)
    return ann


def _write(tmp_path, annotations, images=None, n_images=2, name="ann.json", write_images=True, **top):
    images = images if images is not None else [
        {"id": i + 1, "file_name": f"{i + 1}.jpg", "width": W, "height": H} for i in range(n_images)]
    if write_images:
        img_dir = tmp_path / "images"
        img_dir.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for img in images:
            pixels = (rng.random((img["height"], img["width"], 3)) * 255).astype(np.uint8)
            cv2.imwrite(str(img_dir / img["file_name"]), pixels)
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": list(CROWDPOSE14.names)}]}
    data.update(top)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _dataset(path, **kwargs):
    kwargs.setdefault("spec", CROWDPOSE14)
    return CocoKeypointDataset(path, path.parent / "images", **kwargs)


def _square_region():
    m = np.zeros((H, W), np.uint8)
    m[20:30, 40:50] = 1
    return m


def _uncompressed_rle(m):
    flat = m.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _compressed_rle(m):
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


@pytest.mark.parametrize("kind", ["polygon", "uncompressed_rle", "compressed_rle"])
def test_crowd_region_encodings(tmp_path, kind):
    region = _square_region()
    seg = {"polygon": [[40, 20, 49, 20, 49, 29, 40, 29]], "uncompressed_rle": _uncompressed_rle(region),
           "compressed_rle": _compressed_rle(region)}[kind]
    crowd = {"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [40, 20, 10, 10],
             "num_keypoints": 0, "keypoints": [0] * 42, "segmentation": seg}
    ds = _dataset(_write(tmp_path, [_person(1, 1), crowd], n_images=1))
    s = ds[0]
    assert s.num_people == 1 and s.ann_ids.tolist() == [1]
    assert s.ignore_mask[22:28, 42:48].all()  # inside the region
    assert s.ignore_mask.sum() <= region.sum() + 2 * 20 and s.ignore_mask[:15].sum() == 0
    if kind != "polygon":
        np.testing.assert_array_equal(s.ignore_mask, region)
    np.testing.assert_array_equal(ds.get_ignore_mask(0), s.ignore_mask)  # same without reading the image


def test_unlabelled_person_uses_box_and_ignore_mask_helper(tmp_path):
    nobody = _person(2, 1, bbox=(5.5, 6.2, 10, 4))
    nobody["num_keypoints"] = 0
    nobody["keypoints"] = [0] * 42
    ds = _dataset(_write(tmp_path, [_person(1, 1), nobody], n_images=1))
    m = ds[0].ignore_mask
    assert m.sum() == 11 * 5 and m[6:11, 5:16].all()  # every pixel the box touches
    np.testing.assert_array_equal(ignore_mask([nobody], H, W), m)
    assert ds[0].keypoints.shape == (1, 14, 3)


def test_image_inclusion(tmp_path):
    nobody = _person(2, 2)
    nobody["num_keypoints"] = 0
    path = _write(tmp_path, [_person(1, 1), nobody], n_images=3)
    assert _dataset(path).image_ids == [1, 2, 3]  # evaluation: every image
    assert _dataset(path, min_people=1).image_ids == [1]  # training: images with people


def test_category_layout_mismatch(tmp_path):
    path = _write(tmp_path, [_person(1, 1)])
    with pytest.raises(DataError, match=r"ann\.json.*declares 14 keypoints, expected 17"):
        _dataset(path, spec=COCO17)


def _swapped_shoulders() -> list[str]:
    names = list(CROWDPOSE14.names)
    names[0], names[1] = names[1], names[0]  # left_shoulder <-> right_shoulder
    return names


def test_official_names_in_another_order_are_refused(tmp_path, caplog):
    """A category listing the layout's names in another order would train on swapped labels: an error naming the
    file, the names and their indices, unless the reader is told the values follow the layout's order anyway."""
    cats = [{"id": 1, "name": "person", "keypoints": _swapped_shoulders()}]
    path = _write(tmp_path, [_person(1, 1)], categories=cats)
    with pytest.raises(DataError) as info:
        _dataset(path)
    message = str(info.value)
    assert str(path) in message and "DATASET.ALLOW_KEYPOINT_ORDER" in message
    assert "'right_shoulder' at index 0 (layout: 1), 'left_shoulder' at index 1 (layout: 0)" in message
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = _dataset(path, allow_keypoint_order=True)
    assert ds.image_ids == [1, 2] and "assuming the same order" in caplog.text


def test_other_keypoint_names_only_warn(tmp_path, caplog):
    names = [f"joint_{i}" for i in range(14)]  # a file that names its keypoints its own way: nothing to compare
    path = _write(tmp_path, [_person(1, 1)], categories=[{"id": 1, "name": "person", "keypoints": names}])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert _dataset(path).image_ids == [1, 2]
    assert "differ from layout 'crowdpose'" in caplog.text


def test_keypoint_names_that_are_not_a_list_of_names(tmp_path):
    path = _write(tmp_path, [_person(1, 1)], categories=[{"id": 1, "name": "person", "keypoints": None}])
    with pytest.raises(DataError, match=r"ann\.json: category 1 'keypoints' is None, expected a list of keypoint"):
        _dataset(path)


def test_keypoint_order_key_reaches_the_reader(tmp_path):
    from bupose.config import load_config
    from bupose.data.build import prepare_dataset

    folder = tmp_path / "crowdpose" / "json"
    folder.mkdir(parents=True)
    cats = [{"id": 1, "name": "person", "keypoints": _swapped_shoulders()}]
    _write(folder, [_person(1, 1)], name="crowdpose_val.json", write_images=False, categories=cats)
    (tmp_path / "crowdpose" / "images").mkdir()
    overrides = ["DATASET.DATASET", "crowdpose", "DATASET.ROOT", str(tmp_path)]
    with pytest.raises(DataError, match="crowdpose_val.json: category 1 .* in another order"):
        prepare_dataset(load_config(None, overrides), "val")
    reader = prepare_dataset(load_config(None, overrides + ["DATASET.ALLOW_KEYPOINT_ORDER", "True"]), "val")
    assert reader.allow_keypoint_order and reader.image_ids == [1, 2]


# --- bad input -------------------------------------------------------------------------------------------------
def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match="annotation file not found.*nope.json"):
        CocoKeypointDataset(tmp_path / "nope.json", tmp_path, "coco")


@pytest.mark.parametrize("content,match", [
    ({"annotations": []}, "missing key 'images'"),
    ({"images": []}, "missing key 'annotations'"),
    ([1, 2], "top level is a list"),
])
def test_not_coco_format(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=rf"bad\.json.*{match}"):
        CocoKeypointDataset(path, tmp_path, "coco")


def test_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        CocoKeypointDataset(path, tmp_path, "coco")


def _wrong_count(a):
    a["keypoints"] = a["keypoints"][:-3]


def _nan_keypoint(a):
    a["keypoints"][4] = float("nan")


def _inf_bbox(a):
    a["bbox"][2] = float("inf")


def _null_bbox(a):
    a["bbox"][0] = None


def _bad_visibility(a):
    a["keypoints"][2] = 5


@pytest.mark.parametrize("corrupt,match", [
    (_wrong_count, "'keypoints' has 39 values, expected 42"),
    (_nan_keypoint, "'keypoints' has a non-finite value at position 4"),
    (_inf_bbox, "'bbox'.*non-finite"),
    (_null_bbox, "'bbox'.*non-finite"),
    (_bad_visibility, "keypoint visibilities .* must each be 0, 1 or 2"),
])
def test_bad_annotation(tmp_path, caplog, corrupt, match):
    bad = _person(7, 2)
    corrupt(bad)
    path = _write(tmp_path, [_person(1, 1), bad], n_images=3)
    with pytest.raises(DataError, match=rf"ann\.json: image 2, annotation 7: {match}"):
        _dataset(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = _dataset(path, on_error="skip")
    assert ds.image_ids == [1, 3]  # the image with the bad annotation is dropped
    assert any("image 2, annotation 7" in r.getMessage() and r.name == LOGGER for r in caplog.records)


def test_orphan_annotation(tmp_path, caplog):
    path = _write(tmp_path, [_person(1, 1), _person(2, 99)], n_images=1)
    with pytest.raises(DataError, match=r"ann\.json: annotation 2 refers to image id 99"):
        _dataset(path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert _dataset(path, on_error="skip").image_ids == [1]
    assert "image id 99" in caplog.text


def test_duplicate_ids_always_raise(tmp_path):
    path = _write(tmp_path, [_person(1, 1), _person(1, 2)])
    with pytest.raises(DataError, match="annotation id 1 appears more than once"):
        _dataset(path, on_error="skip")


def _break_image(tmp_path, how):
    f = tmp_path / "images" / "2.jpg"
    if how == "missing":
        f.unlink()
    elif how == "garbage":
        f.write_bytes(b"this is not an image at all" * 10)
    elif how == "truncated":
        data = f.read_bytes()
        f.write_bytes(data[: len(data) * 2 // 3])
    return f


@pytest.mark.parametrize("how,match", [
    ("missing", "image file not found"),
    ("garbage", "cannot be decoded"),
    ("truncated", "truncated"),
])
def test_bad_image(tmp_path, caplog, how, match):
    path = _write(tmp_path, [_person(1, 1), _person(2, 2), _person(3, 3)], n_images=3)
    f = _break_image(tmp_path, how)
    ds = _dataset(path)  # images are checked lazily
    assert len(ds) == 3 and ds[0].image_id == 1
    with pytest.raises(DataError, match=rf"ann\.json: image 2 \('2\.jpg'\): .*{match}.*") as exc:
        ds[1]
    assert str(f.name) in str(exc.value)

    ds = _dataset(path, on_error="skip")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        s = ds[1]
    assert s.image_id == 3  # the next usable image, never a wrong sample
    assert any("image 2" in r.getMessage() and match in r.getMessage() for r in caplog.records)
    assert any("returning index 2" in r.getMessage() for r in caplog.records)
    assert len(ds) == 3 and ds[2].image_id == 3


def test_all_images_bad_with_skip(tmp_path):
    path = _write(tmp_path, [_person(1, 1)], n_images=1)
    (tmp_path / "images" / "1.jpg").unlink()
    with pytest.raises(DataError, match="none of the 1 images"):
        _dataset(path, on_error="skip")[0]


def _jpeg_bytes(source: str) -> bytes:
    """A camera JPEG (a COCO sample, from shared/), or one encoded here: baseline, or progressive with restart
    markers (segments and marker kinds the walk must step over)."""
    if source == "coco_sample":
        return needs_shared("data/samples/coco/000000000785.jpg").read_bytes()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 4] if source == "progressive" else []
    ok, data = cv2.imencode(".jpg", image, params)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("source", ["baseline", "progressive", "coco_sample"])
def test_truncated_jpeg_detected(source):
    data = _jpeg_bytes(source)
    assert image_file_problem(data) is None
    assert image_file_problem(data + b"\0" * 16) is None  # bytes after the end marker are allowed
    for cut in (len(data) - 2, len(data) - 100, len(data) // 2, 700, 20):
        assert "truncated" in image_file_problem(data[:cut])
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    assert image_file_problem(png.tobytes()) is None and "truncated" in image_file_problem(png.tobytes()[:-20])


def test_read_image_png(tmp_path):
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :5] = (255, 0, 0)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, img)


def test_swapped_image_size(tmp_path, caplog):
    images = [{"id": 1, "file_name": "1.jpg", "width": W, "height": H},
              {"id": 2, "file_name": "2.jpg", "width": H, "height": W}]
    path = _write(tmp_path, [_person(1, 1), _person(2, 2)], images=images, write_images=False)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for name in ("1.jpg", "2.jpg"):
        cv2.imwrite(str(img_dir / name), np.zeros((H, W, 3), np.uint8))  # both stored as W x H
    with pytest.raises(DataError, match=r"image 2 .*is 64x48 .*width=48, height=64 \(width and height swapped"):
        _dataset(path)[1]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert _dataset(path, on_error="skip")[1].image_id == 1  # wraps around to the next usable image
    assert "swapped" in caplog.text
    s = _dataset(path, check_image_size=False)[1]
    assert s.image_id == 2 and s.image.shape == (H, W, 3) and s.ignore_mask.shape == (H, W)


def test_on_error_value_checked(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        _dataset(_write(tmp_path, [_person(1, 1)]), on_error="ignore")


def test_transform_and_index_errors(tmp_path):
    ds = _dataset(_write(tmp_path, [_person(1, 1)], n_images=2), transform=lambda s: s.image_id)
    assert [ds[0], ds[1], ds[-1]] == [1, 2, 2]
    with pytest.raises(IndexError):
        ds[2]
