"""Tests of the dataset catalogue and the builders on it: every name's layout, keypoint spec and evaluation protocol,
the protocol that evaluation really uses, unknown names and splits, and the readers' independence of each other."""
import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

import bupose.data
import bupose.engine.evaluate as evaluate_module
from bupose.data.build import build_dataset, dataset_files, dataset_spec, prepare_dataset
from bupose.data.catalogue import DATASETS, dataset_entry
from bupose.data.keypoints import COCO17, CROWDPOSE14
from bupose.data.synthetic import PRESETS, generate_split, preset_folder
from bupose.errors import ConfigError, DataError
from bupose.evaluation import PROTOCOLS

from conftest import needs_shared

#: name -> (keypoint spec, evaluation protocol, generated (folder, preset) or None); written out by hand.
EXPECTED = {
    "coco": (COCO17, "coco", None),
    "crowdpose": (CROWDPOSE14, "crowdpose", None),
    "ochuman": (COCO17, "ochuman", None),
    "synthetic_crowdpose": (CROWDPOSE14, "crowdpose", ("synthetic", "crowds")),
    "synthetic_coco": (COCO17, "coco", ("synthetic", "crowds")),
    "synthetic_simple_crowdpose": (CROWDPOSE14, "crowdpose", ("synthetic_simple", "simple")),
    "synthetic_simple_coco": (COCO17, "coco", ("synthetic_simple", "simple")),
    "yolo": (None, "coco", None),
}


def test_entries_spec_protocol_and_generation():
    assert set(DATASETS) == set(EXPECTED)
    for name, (spec, protocol, synthetic) in EXPECTED.items():
        entry = dataset_entry(name)
        assert entry.name == name and entry is DATASETS[name]
        assert entry.spec is spec and entry.protocol == protocol and entry.synthetic == synthetic, name
        assert entry.protocol in PROTOCOLS, name
        assert entry.reader == ("yolo" if name == "yolo" else "coco")
        if spec is not None:
            assert dataset_spec(name) is spec
        if synthetic is not None:  # the folder the generator writes for that preset
            folder, preset = synthetic
            assert preset in PRESETS and preset_folder(preset) == folder
    assert dataset_entry("CrowdPose") is DATASETS["crowdpose"]  # names are case-insensitive
    with pytest.raises(AttributeError):
        DATASETS["coco"].protocol = "crowdpose"  # frozen


def test_protocol_fits_the_ground_truth():
    # CrowdPose-layout files have no 'area': their protocol must take the OKS scale from the box, as the CrowdPose
    # evaluator does; COCO-layout sets (and YOLO's coco_gt, which writes 'area') read 'area'.
    for name, entry in DATASETS.items():
        factor = PROTOCOLS[entry.protocol].box_area_factor
        assert (factor == 0.53) if entry.spec is CROWDPOSE14 else (factor is None), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_evaluation_uses_the_catalogue_protocol(monkeypatch, name):
    seen = {}

    class FakeEvaluator:
        def __init__(self, gt, protocol, sigmas):
            seen.update(gt=gt, protocol=protocol, sigmas=sigmas)

        def evaluate(self, results):
            return {"AP": 0.5}

    spec = EXPECTED[name][0] or COCO17
    reader = SimpleNamespace(spec=spec, image_ids=[1], coco_gt=lambda: {"images": [], "annotations": []})
    monkeypatch.setattr(evaluate_module, "predict_split", lambda *a, **k: ([], reader))
    monkeypatch.setattr(evaluate_module, "KeypointEvaluator", FakeEvaluator)
    cfg = SimpleNamespace(DATASET=SimpleNamespace(DATASET=name))
    assert evaluate_module.evaluate_split(cfg, model=None, split="val", progress=False) == {"AP": 0.5}
    assert seen["protocol"] == EXPECTED[name][1] and seen["sigmas"] is spec.sigmas


@pytest.mark.parametrize("name,hint", [("crowdpos", "crowdpose"), ("synthetic_crowdpos", "synthetic_crowdpose"),
                                       ("synthetic_simple_cocoo", "synthetic_simple_coco"), ("ochumans", "ochuman"),
                                       ("yolov8", "yolo")])
def test_unknown_name_names_the_closest(tmp_path, name, hint):
    with pytest.raises(ConfigError, match=rf"unknown dataset '{name}'.*did you mean '{hint}'\?"):
        dataset_entry(name)
    for call in (lambda: dataset_files(name, tmp_path, "val"), lambda: dataset_spec(name),
                 lambda: build_dataset(name, tmp_path, "val")):
        with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
            call()
    cfg = SimpleNamespace(DATASET=SimpleNamespace(DATASET=name, ROOT=str(tmp_path), ON_ERROR="raise"))
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        prepare_dataset(cfg, "val")
    assert not any(tmp_path.iterdir())  # nothing generated or written


@pytest.mark.parametrize("name,split,ann,images", [
    ("coco", "train", "coco/annotations/person_keypoints_train2017.json", "coco/images/train2017"),
    ("coco", "val2017", "coco/annotations/person_keypoints_val2017.json", "coco/images/val2017"),
    ("crowdpose", "trainval", "crowdpose/json/crowdpose_trainval.json", "crowdpose/images"),
    ("crowdpose", "test", "crowdpose/json/crowdpose_test.json", "crowdpose/images"),
    ("ochuman", "val", "ochuman/ochuman_coco_format_val_range_0.00_1.00.json", "ochuman/images"),
    ("ochuman", "test", "ochuman/ochuman_coco_format_test_range_0.00_1.00.json", "ochuman/images"),
    ("synthetic_crowdpose", "train", "synthetic/annotations/crowdpose_train.json", "synthetic/images/train"),
    ("synthetic_coco", "val", "synthetic/annotations/coco_val.json", "synthetic/images/val"),
    ("synthetic_simple_crowdpose", "val", "synthetic_simple/annotations/crowdpose_val.json",
     "synthetic_simple/images/val"),
    ("synthetic_simple_coco", "train", "synthetic_simple/annotations/coco_train.json",
     "synthetic_simple/images/train"),
])
def test_dataset_files_layout(tmp_path, name, split, ann, images):
    assert dataset_files(name, tmp_path, split, check=False) == (tmp_path / ann, tmp_path / images)
    with pytest.raises(DataError, match=rf"annotation file not found at {tmp_path / ann}"):
        dataset_files(name, tmp_path, split)
    (tmp_path / ann).parent.mkdir(parents=True)
    (tmp_path / ann).write_text("{}")
    with pytest.raises(DataError, match=rf"image folder not found at {tmp_path / images}"):
        dataset_files(name, tmp_path, split)
    (tmp_path / images).mkdir(parents=True)
    assert dataset_files(name, tmp_path, split) == (tmp_path / ann, tmp_path / images)


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="no split 'train'.*'val', 'test'"):
        dataset_files("ochuman", tmp_path, "train")


@pytest.mark.parametrize("source", ["synthetic", "crowdpose_samples"])
def test_build_dataset(tmp_path, source):
    """Two images in the CrowdPose layout -- synthetic, or the real CrowdPose samples of shared/ -- read through the
    catalogue."""
    if source == "synthetic":
        src = tmp_path / "generated"
        generate_split(src, "val", 2, workers=1)
        src_ann, src_images = src / "annotations" / "crowdpose_val.json", src / "images" / "val"
    else:
        src_images = needs_shared("data/samples/crowdpose")
        src_ann = src_images / "test_crowdpose.json"
    ann, images = dataset_files("crowdpose", tmp_path, "val", check=False)
    ann.parent.mkdir(parents=True)
    ann.write_bytes(src_ann.read_bytes())
    images.mkdir(parents=True)
    for f in src_images.glob("*.jpg"):
        (images / f.name).write_bytes(f.read_bytes())
    ds = build_dataset("crowdpose", tmp_path, "val", min_people=1)
    assert ds.spec is CROWDPOSE14 and len(ds) == 2 and ds[0].keypoints.shape[1] == 14


def _imported_modules(path: Path) -> set[str]:
    """The ``bupose.data`` modules a source file imports (relative or absolute), by their last name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names.add(module.rsplit(".", 1)[-1])
            names.update(a.name for a in node.names if module in ("", "bupose.data"))
        elif isinstance(node, ast.Import):
            names.update(a.name.rsplit(".", 1)[-1] for a in node.names)
    return names


def test_readers_do_not_know_the_catalogue_or_each_other():
    folder = Path(bupose.data.__file__).parent
    coco, yolo = _imported_modules(folder / "coco_format.py"), _imported_modules(folder / "yolo_format.py")
    assert not coco & {"yolo_format", "catalogue", "build", "synthetic"}
    assert not yolo & {"coco_format", "catalogue", "build", "synthetic"}
