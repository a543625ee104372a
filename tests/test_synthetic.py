"""The synthetic crowd generator: determinism, file format, labels, crowd index, ignore regions, ensure_synthetic."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from bupose.data import synthetic as syn
from bupose.data.keypoints import COCO17, COCO_TO_CROWDPOSE_LIMBS, CROWDPOSE14

NUM_VAL = 60
NUM_TRAIN = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    syn.generate_dataset(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0, workers=1)
    return root


def _load(root: Path, layout: str, split: str) -> dict:
    return json.loads((root / "annotations" / f"{layout}_{split}.json").read_text())


def _all(root: Path, layout: str):
    for split in ("train", "val"):
        yield split, _load(root, layout, split)


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


# ------------------------------------------------------------------------------------------------------ layout
def test_files_and_manifest(dataset):
    for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        assert len(list((dataset / "images" / split).glob("*.jpg"))) == n
        for layout in ("coco", "crowdpose"):
            assert (dataset / "annotations" / f"{layout}_{split}.json").is_file()
    man = json.loads((dataset / "manifest.json").read_text())
    assert man["version"] == syn.GENERATOR_VERSION
    assert man["params"] == {"num_train": NUM_TRAIN, "num_val": NUM_VAL, "seed": 0, "preset": "crowds"}
    assert syn.is_up_to_date(dataset, NUM_TRAIN, NUM_VAL, 0)


def test_pycocotools_loads_files(dataset):
    for split in ("train", "val"):
        for layout, spec in (("coco", COCO17), ("crowdpose", CROWDPOSE14)):
            coco = _quiet_coco(dataset / "annotations" / f"{layout}_{split}.json")
            assert len(coco.getImgIds()) == (NUM_TRAIN if split == "train" else NUM_VAL)
            cat = coco.loadCats(1)[0]
            assert cat["keypoints"] == list(spec.names)
            assert cat["skeleton"] == [[a + 1, b + 1] for a, b in spec.skeleton]
            # polygons of crowd regions and people decode to masks inside the image
            for ann in coco.loadAnns(coco.getAnnIds()):
                if ann.get("segmentation"):
                    img = coco.loadImgs(ann["image_id"])[0]
                    m = coco.annToMask(ann)
                    assert m.shape == (img["height"], img["width"]) and m.any()


def test_ground_truth_scores_perfect_keypoint_ap(dataset):
    from pycocotools.cocoeval import COCOeval

    gt = _quiet_coco(dataset / "annotations" / "coco_val.json")
    dets = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in gt.loadAnns(gt.getAnnIds()) if not a["iscrowd"] and a["num_keypoints"] > 0]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_image_records_match_files(dataset):
    for split, data in _all(dataset, "crowdpose"):
        ids = [im["id"] for im in data["images"]]
        assert len(set(ids)) == len(ids)
        for k, im in enumerate(data["images"]):
            assert set(im) == {"id", "file_name", "width", "height", "crowdIndex"}
            assert im["id"] == syn.image_id_of(split, k) and im["file_name"] == syn.file_name_of(k)
            assert 320 <= im["width"] <= 512 and 320 <= im["height"] <= 512
            img = cv2.imread(str(dataset / "images" / split / im["file_name"]))
            assert img.shape == (im["height"], im["width"], 3)


def test_annotation_fields(dataset):
    for layout, k in (("coco", 17), ("crowdpose", 14)):
        for split, data in _all(dataset, layout):
            sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
            ann_ids = [a["id"] for a in data["annotations"]]
            assert len(set(ann_ids)) == len(ann_ids)
            for a in data["annotations"]:
                assert a["category_id"] == 1 and a["image_id"] in sizes
                assert ("area" in a) == (layout == "coco")
                kp = np.array(a["keypoints"], np.float64).reshape(k, 3)
                assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
                assert (kp[kp[:, 2] == 0] == 0).all(), "unlabelled joints must be 0, 0, 0"
                assert np.allclose(kp[:, :2], np.round(kp[:, :2], 2))
                counted = kp[:12] if layout == "crowdpose" else kp
                assert a["num_keypoints"] == int((counted[:, 2] > 0).sum())
                w, h = sizes[a["image_id"]]
                x, y, bw, bh = a["bbox"]
                assert 0 <= x and 0 <= y and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h
                lab = kp[kp[:, 2] > 0]
                assert ((lab[:, 0] >= 0) & (lab[:, 0] <= w - 1) & (lab[:, 1] >= 0) & (lab[:, 1] <= h - 1)).all()
                if a["iscrowd"]:
                    assert a["num_keypoints"] == 0 and not kp.any() and a["segmentation"]
                if layout == "coco" and not a["iscrowd"]:
                    assert 0 < a["area"] <= bw * bh


def test_coco_and_crowdpose_agree(dataset):
    for split in ("train", "val"):
        coco, cp = _load(dataset, "coco", split), _load(dataset, "crowdpose", split)
        assert coco["images"] == cp["images"]
        assert len(coco["annotations"]) == len(cp["annotations"])
        for a, b in zip(coco["annotations"], cp["annotations"]):
            for key in ("id", "image_id", "bbox", "iscrowd", "category_id"):
                assert a[key] == b[key]
            ka = np.array(a["keypoints"]).reshape(17, 3)
            kb = np.array(b["keypoints"]).reshape(14, 3)
            assert np.array_equal(kb[:12], ka[list(COCO_TO_CROWDPOSE_LIMBS)])
            if not a["iscrowd"]:
                # head and neck are labelled together with the body (neck between the shoulders, head above it)
                if kb[13, 2] > 0 and ka[5, 2] > 0 and ka[6, 2] > 0:
                    mid = (ka[5, :2] + ka[6, :2]) / 2
                    shoulder_w = np.linalg.norm(ka[5, :2] - ka[6, :2])
                    assert np.linalg.norm(kb[13, :2] - mid) <= 0.2 * b["bbox"][3] + shoulder_w


def _crowd_index_reference(anns: list[dict]) -> float:
    """Written from CrowdPose's definition, independently of the generator's code."""
    people = [a for a in anns if not a["iscrowd"]]
    ratios = []
    for i, a in enumerate(people):
        kp = np.array(a["keypoints"]).reshape(14, 3)
        n_a = int((kp[:, 2] > 0).sum())
        if n_a == 0:
            continue
        x, y, w, h = a["bbox"]
        n_b = 0
        for j, b in enumerate(people):
            if j == i:
                continue
            for px, py, v in np.array(b["keypoints"]).reshape(14, 3):
                if v > 0 and x <= px <= x + w and y <= py <= y + h:
                    n_b += 1
        ratios.append(n_b / n_a)
    return sum(ratios) / len(ratios) if ratios else 0.0


def test_crowd_index_recomputed_matches(dataset):
    for split, data in _all(dataset, "crowdpose"):
        by_img: dict = {}
        for a in data["annotations"]:
            by_img.setdefault(a["image_id"], []).append(a)
        for im in data["images"]:
            ref = _crowd_index_reference(by_img.get(im["id"], []))
            assert im["crowdIndex"] == pytest.approx(round(ref, 2), abs=1e-9), im["id"]


def test_all_crowd_levels_occur(dataset):
    for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        cis = [im["crowdIndex"] for im in _load(dataset, "crowdpose", split)["images"]]
        counts = syn.level_counts(cis)
        for lv in syn.LEVELS:
            assert counts[lv] >= n // 6, (split, counts)


def test_harder_images_are_more_crowded(dataset):
    data = _load(dataset, "coco", "val")
    by_img: dict = {}
    for a in data["annotations"]:
        if not a["iscrowd"] and a["num_keypoints"] > 0:
            by_img.setdefault(a["image_id"], []).append(a)
    stats = {lv: ([], []) for lv in syn.LEVELS}
    for im in data["images"]:
        anns = by_img.get(im["id"], [])
        if anns:
            lv = syn.crowd_level(im["crowdIndex"])
            stats[lv][0].append(len(anns))
            stats[lv][1].append(np.mean([a["bbox"][3] for a in anns]))
    n = {lv: np.mean(v[0]) for lv, v in stats.items()}
    size = {lv: np.mean(v[1]) for lv, v in stats.items()}
    assert n["easy"] < n["medium"] < n["hard"]
    assert size["easy"] > size["medium"] > size["hard"]


def test_visibility_kinds_and_ignored_annotations_occur(dataset):
    vis = []
    crowd = unlabelled = 0
    for split, data in _all(dataset, "coco"):
        for a in data["annotations"]:
            vis.extend(a["keypoints"][2::3])
            crowd += a["iscrowd"] == 1
            unlabelled += a["iscrowd"] == 0 and a["num_keypoints"] == 0
    vis = np.array(vis)
    assert (vis == 1).sum() > 0.05 * (vis > 0).sum()
    assert (vis == 2).sum() > 0.5 * (vis > 0).sum()
    assert (vis == 0).any()
    assert crowd >= 1 and unlabelled >= 1
    assert any(a["num_keypoints"] == 0 and not a["iscrowd"]
               for _, data in _all(dataset, "crowdpose") for a in data["annotations"])


# ---------------------------------------------------------------------------------------------------- scenes
@pytest.mark.parametrize("index", range(8))
def test_scene_labels_against_masks(index):
    scene = syn.generate_image(index, "val", seed=3)
    h, w = scene.image.shape[:2]
    assert scene.masks.shape == (scene.num_people, h, w)
    for i in range(scene.num_people):
        for k in range(syn.NUM_JOINTS):
            x, y, v = scene.joints[i, k]
            if v == 0:
                assert x == 0 and y == 0 and scene.occluder[i, k] == -1
                continue
            assert 0 <= x <= w - 1 and 0 <= y <= h - 1
            px, py = int(round(x)), int(round(y))
            covering = [j for j in range(i + 1, scene.num_people) if scene.masks[j, py, px]]
            if v == 1:
                j = scene.occluder[i, k]
                assert j > i and scene.masks[j, py, px], "an occluded joint lies on a nearer person's body"
            else:
                assert not covering, "a visible joint is not covered by a nearer person"
        if not scene.annotated[i]:
            assert not scene.joints[i].any()


def test_occluded_joints_exist_and_are_on_nearer_bodies():
    n_occluded = 0
    for index in range(12):
        scene = syn.generate_image(index, "train", seed=0)
        for i, k in zip(*np.nonzero(scene.joints[..., 2] == 1)):
            x, y = scene.joints[i, k, :2]
            j = scene.occluder[i, k]
            assert j > i and scene.masks[j, int(round(y)), int(round(x))]
            n_occluded += 1
    assert n_occluded >= 20


def test_annotation_boxes_are_tight_mask_boxes():
    scene = syn.generate_image(1, "val", seed=0)
    rec = syn.annotate(scene, 7, "x.jpg")
    img, anns = rec["coco"]
    assert img["crowdIndex"] == round(scene.crowd_index, 2)
    people = [a for a in anns if not a["iscrowd"]]
    assert len(people) == scene.num_people
    for a, m in zip(people, scene.masks):
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["area"] == m.sum()


def test_generate_image_is_deterministic_and_seeded():
    a = syn.generate_image(5, "train", seed=1)
    b = syn.generate_image(5, "train", seed=1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.joints, b.joints)
    assert np.array_equal(a.masks, b.masks)
    for other in (syn.generate_image(5, "val", seed=1), syn.generate_image(5, "train", seed=2),
                  syn.generate_image(6, "train", seed=1)):
        assert a.image.shape != other.image.shape or not np.array_equal(a.image, other.image)


def test_keypoints_layouts():
    scene = syn.generate_image(0, "val")
    assert scene.keypoints(COCO17).shape == (scene.num_people, 17, 3)
    cp = scene.keypoints(CROWDPOSE14)
    assert np.array_equal(cp[:, :12], scene.keypoints(COCO17)[:, list(COCO_TO_CROWDPOSE_LIMBS)])


def test_left_right_cue_follows_facing():
    """Seen from the front, a person's left shoulder is on the image's right; seen from behind, on its left."""
    rng = np.random.default_rng(0)
    ls, rs = syn._J["left_shoulder"], syn._J["right_shoulder"]
    for _ in range(20):
        front = syn._make_figure(rng, 200.0, yaw=0.0, roll=0.0)
        back = syn._make_figure(rng, 200.0, yaw=180.0, roll=0.0)
        assert front.joints[ls, 0] > front.joints[rs, 0]
        assert back.joints[ls, 0] < back.joints[rs, 0]
        # eyes and nose are hidden from behind, shown from the front
        for name in ("nose", "left_eye", "right_eye"):
            assert front.face_visible[syn._J[name]] and not back.face_visible[syn._J[name]]


def test_crowd_index_function():
    kp = np.zeros((2, 14, 3))
    kp[0, :, :2] = [10, 10]
    kp[0, :, 2] = 2
    kp[1, :7, :2] = [12, 12]
    kp[1, :7, 2] = 1
    boxes = np.array([[0, 0, 20, 20], [100, 100, 5, 5]])
    # person 0 has all 7 labelled joints of person 1 in its box: 7/14; person 1 has none of person 0's: 0/7
    assert syn.crowd_index(kp, boxes) == pytest.approx(0.25)
    assert syn.crowd_index(np.zeros((0, 14, 3)), np.zeros((0, 4))) == 0.0
    assert [syn.crowd_level(c) for c in (0.0, 0.19, 0.2, 0.79, 0.8, 2.0)] == [
        "easy", "easy", "medium", "medium", "hard", "hard"]


# ------------------------------------------------------------------------------------------- determinism, ensure
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


@pytest.mark.slow
def test_same_output_for_any_number_of_workers(tmp_path):
    a, b = tmp_path / "w1", tmp_path / "w2"
    syn.generate_dataset(a, num_train=8, num_val=4, seed=7, workers=1)
    syn.generate_dataset(b, num_train=8, num_val=4, seed=7, workers=2)
    sa, sb = _snapshot(a), _snapshot(b)
    assert sa.keys() == sb.keys() and len(sa) == 12 + 4
    for name in sa:
        assert sa[name] == sb[name], name
    for name in sa:
        if name.endswith(".jpg"):
            assert np.array_equal(cv2.imread(str(a / name)), cv2.imread(str(b / name)))
    # the stored pixels are the re-rendered scene (up to JPEG loss)
    scene = syn.generate_image(0, "train", seed=7)
    stored = cv2.imread(str(a / "images" / "train" / "000001.jpg")).astype(np.float64)
    assert np.abs(stored - scene.image).mean() < 6


def test_ensure_synthetic_skips_when_up_to_date_and_regenerates_on_mismatch(tmp_path, monkeypatch):
    root = tmp_path / "syn"
    syn.ensure_synthetic(root, num_train=3, num_val=2, seed=0, workers=1)
    assert syn.is_up_to_date(root, 3, 2, 0)
    calls = []
    real = syn.generate_dataset

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(syn, "generate_dataset", spy)
    before = _snapshot(root)
    syn.ensure_synthetic(root, num_train=3, num_val=2, seed=0, workers=1)
    assert calls == [] and _snapshot(root) == before

    # different parameters -> regenerated (and stale images removed)
    syn.ensure_synthetic(root, num_train=2, num_val=2, seed=1, workers=1)
    assert len(calls) == 1
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == ["000001.jpg", "000002.jpg"]
    assert json.loads((root / "manifest.json").read_text())["params"]["seed"] == 1

    # another generator version in the manifest -> regenerated
    man = json.loads((root / "manifest.json").read_text())
    man["version"] = -1
    (root / "manifest.json").write_text(json.dumps(man))
    syn.ensure_synthetic(root, num_train=2, num_val=2, seed=1, workers=1)
    assert len(calls) == 2 and syn.is_up_to_date(root, 2, 2, 1)

    # a missing file or manifest -> regenerated
    (root / "annotations" / "coco_val.json").unlink()
    syn.ensure_synthetic(root, num_train=2, num_val=2, seed=1, workers=1)
    (root / "manifest.json").unlink()
    syn.ensure_synthetic(root, num_train=2, num_val=2, seed=1, workers=1)
    assert len(calls) == 4


def test_generating_on_first_use_shows_a_progress_bar_per_split(tmp_path, capsys):
    from bupose.config import load_config
    from bupose.data.build import prepare_dataset

    cfg = load_config(None, ["DATASET.DATASET", "synthetic_simple_crowdpose", "DATASET.ROOT", str(tmp_path),
                             "DATASET.SYNTHETIC_TRAIN_IMAGES", "3", "DATASET.SYNTHETIC_VAL_IMAGES", "2"])
    assert len(prepare_dataset(cfg, "val")) == 2
    err = capsys.readouterr().err
    assert "generating synthetic_simple train: 100%" in err and "3/3" in err
    assert "generating synthetic_simple val: 100%" in err and "2/2" in err
    prepare_dataset(cfg, "train")  # up to date: nothing generated, nothing shown
    assert capsys.readouterr().err == ""


def test_cli_writes_dataset_and_preview(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_synthetic",
                                                  Path(__file__).resolve().parents[1] / "tools" / "make_synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root, preview = tmp_path / "d", tmp_path / "p.jpg"
    assert mod.main(["--root", str(root), "--num-train", "2", "--num-val", "12", "--workers", "1", "--quiet",
                     "--preview", str(preview)]) == 0
    assert syn.is_up_to_date(root, 2, 12, 0)
    grid = cv2.imread(str(preview))
    assert grid is not None and grid.shape[0] > 100 and grid.shape[1] > 100


# ------------------------------------------------------------------------------------------------------ presets
def test_simple_preset_is_small_sparse_and_plain():
    scenes = [syn.generate_image(i, "val", 0, preset="simple") for i in range(30)]
    levels = {syn.crowd_level(s.crowd_index) for s in scenes}
    assert levels == set(syn.LEVELS)  # still all three crowd levels
    for s in scenes:
        h, w = s.image.shape[:2]
        assert 160 <= h <= 224 and 160 <= w <= 224
        assert 1 <= s.num_people <= 4 and s.annotated.all() and len(s.crowd_masks) == 0
    crowds = [syn.generate_image(i, "val", 0) for i in range(30)]
    assert np.mean([s.num_people for s in scenes]) < np.mean([s.num_people for s in crowds])

    def relative_heights(scenes):  # labelled keypoints' vertical extent / image height, per person
        return [np.ptp(kp[kp[:, 2] > 0, 1]) / s.image.shape[0] for s in scenes for kp in s.joints if kp[:, 2].any()]
    # people are large: the typical person spans about half the image or more
    assert np.median(relative_heights(scenes)) > 0.45 > np.median(relative_heights(crowds))


def test_preset_is_recorded_and_checked(tmp_path):
    root = tmp_path / "simple"
    syn.generate_dataset(root, num_train=2, num_val=2, seed=0, workers=1, preset="simple")
    assert json.loads((root / "manifest.json").read_text())["params"]["preset"] == "simple"
    assert syn.is_up_to_date(root, 2, 2, 0, preset="simple")
    assert not syn.is_up_to_date(root, 2, 2, 0)  # the default preset is another dataset
    with pytest.raises(ValueError, match="unknown synthetic preset 'hard'.*simple"):
        syn.generate_image(0, preset="hard")
