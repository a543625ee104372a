"""tools/demo.py and the drawing API: images, folders and an OpenCV-written video, with PyTorch weights or an exported
ONNX file; top-down configs with their person boxes; Predictor's order, score threshold, clipped boxes and draw;
the README's API snippet."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import bupose
from bupose.engine.checkpoint import save_checkpoint

from conftest import REPO, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")

#: (dx, dy) of the CrowdPose-14 joints from the person centre, in output cells: a standing figure
FIGURE = [(-0.7, -1.2), (0.7, -1.2), (-1.0, -0.4), (1.0, -0.4), (-1.1, 0.3), (1.1, 0.3), (-0.5, 0.4), (0.5, 0.4),
          (-0.5, 1.3), (0.5, 1.3), (-0.5, 2.2), (0.5, 2.2), (0.0, -2.2), (0.0, -1.5)]


def dekr_with_figures(cfg, seed: int = 0) -> torch.nn.Module:
    """A seeded random DEKR whose outputs are people: heat 0.8 everywhere (so up to TEST.MAX_NUM_PEOPLE centres,
    person score 0.64) and per-joint offsets that place a standing :data:`FIGURE` around each centre."""
    torch.manual_seed(seed)
    model = bupose.build_model(cfg).eval()
    with torch.no_grad():
        model.head_heatmap[1].bias.fill_(0.8)
        for k, (dx, dy) in enumerate(FIGURE):  # the offset points from the joint to the centre
            model.offset_final_layer[k].bias.copy_(-torch.tensor([dx, dy]) / model.offset_scale)
    return model


def save_weights(model, cfg, path):
    return save_checkpoint({"model": model.state_dict(), "method": cfg.MODEL.NAME, "epoch": 0}, path)


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"bupose_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo():
    return _tool("demo")


@pytest.fixture(scope="module")
def weights(tiny_cfg, tmp_path_factory):
    cfg = tiny_cfg()
    return save_weights(dekr_with_figures(cfg), cfg, tmp_path_factory.mktemp("demo_weights") / "dekr.pth")


@pytest.fixture(scope="module")
def val_images(synthetic_root):
    return sorted((synthetic_root / "synthetic" / "images" / "val").glob("*.jpg"))


def _write_video(path, frames: int = 5, size=(200, 150)):
    """A short mp4 (mp4v) of moving blobs, written with OpenCV."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    for i in range(frames):
        writer.write(np.roll(base, 7 * i, axis=1))
    writer.release()
    return path


def test_demo_script_on_a_synthetic_image(tiny_yaml, weights, val_images, tmp_path):
    """``python tools/demo.py`` as a user runs it: the drawn image and the COCO-style poses file."""
    image = val_images[0]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--cfg", str(tiny_yaml), "TEST.MODEL_FILE",
                           str(weights), "--source", str(image), "--output-dir", str(tmp_path), "--show-box",
                           "--show-score"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"1 frame\(s\), \d+ people, [\d.]+ frames/s", proc.stdout)
    drawn = cv2.imread(str(tmp_path / image.name))
    original = cv2.imread(str(image))
    coco = json.loads((tmp_path / f"{image.stem}_poses.json").read_text())
    assert drawn.shape == original.shape
    assert coco["categories"][0]["keypoints"][-2:] == ["head", "neck"] and [13, 14] in coco["categories"][0]["skeleton"]
    assert coco["images"] == [{"id": int(image.stem), "file_name": image.name, "width": original.shape[1],
                               "height": original.shape[0]}]
    people = coco["annotations"]
    assert len(people) == 30 and all(p["image_id"] == int(image.stem) and p["category_id"] == 1 for p in people)
    scores = [p["score"] for p in people]
    assert scores == sorted(scores, reverse=True), "best first"
    changed = np.abs(drawn.astype(int) - original.astype(int)).sum(2) > 60
    height, width = original.shape[:2]
    for p in people:  # each joint was drawn where the file says it is
        kp = np.array(p["keypoints"]).reshape(14, 3)
        assert p["num_keypoints"] == 14 and np.allclose(kp[:, 2], 0.64, atol=1e-3)
        inside = (kp[:, 0] >= 2) & (kp[:, 0] < width - 2) & (kp[:, 1] >= 2) & (kp[:, 1] < height - 2)
        for x, y in np.round(kp[inside, :2]).astype(int):
            assert changed[y - 1:y + 2, x - 1:x + 2].any()
        x, y, w, h = p["bbox"]  # clipped to the image (rounded to 0.01 in the file)
        assert 0 <= x and 0 <= y and x + w <= width - 1 + 0.01 and y + h <= height - 1 + 0.01


def test_demo_on_a_folder_a_video_and_an_onnx_file(demo, tiny_yaml, weights, val_images, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for p in val_images[:2]:
        shutil.copy(p, folder / p.name)
    common = ["--cfg", str(tiny_yaml), "TEST.MODEL_FILE", str(weights), "--kpt-thr", "0.5"]
    assert demo.main(common + ["--source", str(folder), "--output-dir", str(tmp_path / "a"), "--score-thr", "0.5"]) == 0
    coco = json.loads((tmp_path / "a" / "frames_poses.json").read_text())
    assert [im["id"] for im in coco["images"]] == [int(p.stem) for p in val_images[:2]]  # COCO-style numeric names
    assert sorted(p.name for p in (tmp_path / "a").glob("*.jpg")) == [p.name for p in val_images[:2]]
    assert len(coco["annotations"]) == 60 and coco["info"]["score_threshold"] == 0.5

    video = _write_video(tmp_path / "clip.mp4")
    assert demo.main(common + ["--source", str(video), "--output-dir", str(tmp_path / "b"), "TEST.FLIP_TEST",
                               "False"]) == 0
    err = capsys.readouterr().err
    assert "frame/s" in err and "5/5" in err, err  # the progress bar, with frames per second
    drawn = cv2.VideoCapture(str(tmp_path / "b" / "clip.mp4"))
    frames = []
    while True:
        ok, frame = drawn.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 5 and frames[0].shape == (150, 200, 3)
    coco = json.loads((tmp_path / "b" / "clip_poses.json").read_text())
    assert [(im["id"], im["frame"]) for im in coco["images"]] == [(i, i) for i in range(5)]
    assert coco["info"]["flip"] is False and {a["image_id"] for a in coco["annotations"]} == set(range(5))

    # the same video through the exported network: the same people
    pytest.importorskip("onnxruntime")
    from bupose.export import export_onnx, sample_inputs

    cfg = bupose.load_config(tiny_yaml, ["TEST.MODEL_FILE", str(weights)])
    model = bupose.build_model(cfg)
    bupose.load_checkpoint(model, weights)
    export_onnx(model, tmp_path / "m.onnx", cfg=cfg, sample=sample_inputs(cfg, model)[0], dynamic=True)
    assert demo.main(["--cfg", str(tiny_yaml), "--onnx", str(tmp_path / "m.onnx"), "--source", str(video),
                      "--output-dir", str(tmp_path / "c"), "TEST.FLIP_TEST", "False"]) == 0
    onnx_coco = json.loads((tmp_path / "c" / "clip_poses.json").read_text())
    ours, theirs = coco["annotations"], onnx_coco["annotations"]
    assert len(ours) == len(theirs)
    assert np.abs(np.array([a["keypoints"] for a in ours]) - np.array([a["keypoints"] for a in theirs])).max() < 0.01


def test_topdown_demo_uses_its_person_box_source(demo, tiny_topdown_yaml, tiny_yaml, weights, val_images, tmp_path,
                                                 capsys):
    cfg = bupose.load_config(tiny_topdown_yaml)
    torch.manual_seed(0)
    td_weights = save_weights(bupose.build_model(cfg), cfg, tmp_path / "td.pth")
    image = val_images[0]
    base = ["--cfg", str(tiny_topdown_yaml), "TEST.MODEL_FILE", str(td_weights), "--source", str(image),
            "TEST.SCALE_FACTOR", "[1.0]"]
    # none given (the config's TEST.USE_GT_BBOX has no ground truth here): a clear error before any work
    assert demo.main(base + ["--output-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "top-down method topdown_hrnet, which needs person boxes" in err and "TEST.DETECTOR_CFG" in err
    assert "--boxes" in err and not (tmp_path / "none").exists()
    # a detection file keyed by the demo's image ids
    dets = [{"image_id": int(image.stem), "category_id": 1, "bbox": [40.0, 30.0, 120.0, 200.0], "score": 0.9},
            {"image_id": int(image.stem), "category_id": 1, "bbox": [200.0, 50.0, 100.0, 180.0], "score": 0.6},
            {"image_id": 999, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    assert demo.main(base + ["--boxes", str(tmp_path / "dets.json"), "--output-dir", str(tmp_path / "file")]) == 0
    people = json.loads((tmp_path / "file" / f"{image.stem}_poses.json").read_text())["annotations"]
    assert len(people) == 2
    # a bupose bottom-up model as the detector
    assert demo.main(base + ["TEST.DETECTOR_CFG", str(tiny_yaml), "TEST.DETECTOR_MODEL_FILE", str(weights),
                             "--output-dir", str(tmp_path / "detector")]) == 0
    people = json.loads((tmp_path / "detector" / f"{image.stem}_poses.json").read_text())["annotations"]
    assert 0 < len(people) <= 30


def test_demo_bad_input_is_a_clear_error(demo, tiny_yaml, weights, tmp_path, capsys):
    common = ["--cfg", str(tiny_yaml), "TEST.MODEL_FILE", str(weights), "--output-dir", str(tmp_path / "out")]
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.avi").write_text("not a video")
    (tmp_path / "dets.json").write_text("[]")
    cases = [(["--source", str(tmp_path / "missing.jpg")], "missing.jpg: not found (expected an image, a folder"),
             (["--source", str(tmp_path / "empty")], "no images"),
             (["--source", str(tmp_path / "junk.avi")], "cannot open it as a video"),
             (["--source", str(REPO / "datasets" / "synthetic_preview.jpg"), "--boxes", str(tmp_path / "dets.json")],
              "--boxes is for top-down methods")]
    for args, message in cases:
        assert demo.main(common + args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert demo.main(["--cfg", str(tiny_yaml), "--source", str(REPO / "datasets" / "synthetic_preview.jpg"),
                      "TEST.MODEL_FILE", str(tmp_path / "none.pth")]) == 2
    assert "error:" in capsys.readouterr().err


def test_show_without_a_display_warns_and_still_writes(demo, tiny_yaml, weights, val_images, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo.main(["--cfg", str(tiny_yaml), "TEST.MODEL_FILE", str(weights), "--source", str(val_images[1]),
                      "--output-dir", str(tmp_path), "--show"]) == 0
    assert "--show: no display" in capsys.readouterr().err
    assert (tmp_path / val_images[1].name).is_file()


def test_predictor_sorts_thresholds_clips_and_draws(tiny_cfg, val_images, monkeypatch):
    from bupose.inference.people import People

    cfg = tiny_cfg("DEVICE", "cpu")
    model = dekr_with_figures(cfg)
    image = cv2.imread(str(val_images[0]))
    h, w = image.shape[:2]
    predictor = bupose.Predictor(cfg, model)
    people = predictor(image)  # the real engine: people best first, boxes inside the image
    boxes = np.array([p["bbox"] for p in people])
    assert len(people) == 30 and [p["score"] for p in people] == sorted([p["score"] for p in people], reverse=True)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= w - 1 + 1e-4).all()
    assert (boxes[:, 1] + boxes[:, 3] <= h - 1 + 1e-4).all()
    drawn = predictor.draw(image, people, show_box=True)
    assert drawn.shape == image.shape and (drawn != image).any() and predictor.spec.num_keypoints == 14
    assert np.array_equal(predictor.draw(image, show_box=True), drawn), "draw(image) predicts the same people"

    # what the engine returns is reordered, thresholded and clipped: three people, one reaching out of the image
    kps = np.zeros((3, 14, 3), np.float32)
    kps[..., 2] = 1
    kps[0, :, :2] = [[-20, 10], [50, 60]] * 7
    kps[1, :, :2] = [[100, 100], [120, 130]] * 7
    kps[2, :, :2] = [[w - 30, h - 40], [w + 15, h + 25]] * 7
    raw = People(kps, np.array([0.2, 0.9, 0.5], np.float32))
    monkeypatch.setattr(predictor, "engine", lambda model, decoder, image, boxes=None: raw)
    out = predictor(image)
    assert [p["score"] for p in out] == pytest.approx([0.9, 0.5, 0.2])
    assert out[0]["bbox"] == pytest.approx([100, 100, 20, 30])
    assert out[1]["bbox"] == pytest.approx([w - 30, h - 40, 29, 39])  # clipped to the last pixel centre
    assert out[2]["bbox"] == pytest.approx([0, 10, 50, 50])
    assert np.array_equal(out[2]["keypoints"], kps[0]), "keypoints are not moved"
    predictor.score_threshold = 0.5
    assert [p["score"] for p in predictor(image)] == pytest.approx([0.9, 0.5])
    assert bupose.Predictor(cfg, model, score_threshold=0.7).score_threshold == 0.7
    assert bupose.Predictor(cfg, model).score_threshold == cfg.TEST.get("SCORE_THRESHOLD", 0.0)


def _readme_api_snippet() -> str:
    """The API example of README's 'Demo, export and the bupose command' section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Demo, export and the bupose command", 1)
    assert len(section) == 2, "README.md has no 'Demo, export and the bupose command' section"
    block = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert block, "README.md: the demo section has no python example"
    return block.group(1)


def test_readme_api_snippet_runs_as_written(tmp_path, monkeypatch):
    """Run the README example in a folder laid out as after the quick start (the config, its run's weights, a
    validation image); it must need no names it does not define."""
    code = _readme_api_snippet()
    (tmp_path / "experiments" / "synthetic").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "synthetic" / "dekr_simple_160.yaml", tmp_path / "experiments" / "synthetic")
    cfg = bupose.load_config(tmp_path / "experiments" / "synthetic" / "dekr_simple_160.yaml", ["DEVICE", "cpu"])
    run = tmp_path / "output" / "synthetic_simple_crowdpose" / "dekr_simple_160"
    torch.manual_seed(0)
    save_weights(bupose.build_model(cfg), cfg, run / "final_state.pth")
    for name in re.findall(r"datasets/[\w/.-]+\.jpg", code):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.full((180, 200, 3), 90, np.uint8))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert "people" in namespace and isinstance(namespace["people"], list)
    assert list(tmp_path.glob("*.jpg")), "the example writes the drawn image"
