"""Draw the people a model finds on an image, a folder of images, a video file or a camera.

    python tools/demo.py --cfg experiments/<dataset>/<model>.yaml [TEST.MODEL_FILE x.pth] --source PATH|INDEX
                         [--output-dir DIR] [--kpt-thr 0.3] [--score-thr S] [--show-score] [--show-box] [--show]
                         [--onnx model.onnx] [--boxes detections.json] [--max-frames N]
                         [TEST.SCALE_FACTOR [1,1.25]] [TEST.FLIP_TEST True] [KEY VALUE ...]

``--source``: an image file, a folder of images (its images in name order, not recursive), a video file, or a
camera index (``0``). Written to ``--output-dir`` (default ``OUTPUT_DIR/<dataset>/<config name>/demo``): the drawn
images (``<image name>.jpg``) or the drawn video (``<video name>.mp4``, ``camera<N>.mp4``), and
``<source name>_poses.json``, a COCO-style file of the poses per image / frame (``images`` with ids, file names or
frame numbers and sizes; ``annotations`` with keypoints ``[x, y, score] * K``, person score and box; ``categories``
with the keypoint names and skeleton). Image ids: an image named by a number (COCO's ``000000000139.jpg``) has that
number when all are so named, other images and video frames their position (0, 1, ...).

Multi-scale and flip testing as ``tools/test.py``: ``TEST.SCALE_FACTOR`` and ``TEST.FLIP_TEST``. Without
``TEST.MODEL_FILE`` the run's own ``model_best.pth`` / ``final_state.pth`` / ``checkpoint.pth`` is used;
``--onnx`` runs an exported network (``tools/export.py``) through onnxruntime instead.

A top-down config needs person boxes: ``TEST.DETECTOR_CFG`` with ``TEST.DETECTOR_MODEL_FILE`` (a bupose bottom-up /
one-stage model as the detector), or a COCO detection results file (``--boxes``, or ``TEST.COCO_BBOX_FILE``) whose
image ids are the demo's.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.config import add_override_arguments, load_config, parse_tool_args  # noqa: E402
from bupose.errors import BuposeError, ConfigError, DataError  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="experiment file")
    parser.add_argument("--source", required=True, help="image, folder of images, video file or camera index")
    parser.add_argument("--output-dir", help="default: OUTPUT_DIR/<dataset>/<config name>/demo")
    parser.add_argument("--kpt-thr", type=float, default=0.3, help="draw joints scoring above this (default 0.3)")
    parser.add_argument("--score-thr", type=float, help="drop people scoring below this (default: "
                                                        "TEST.SCORE_THRESHOLD where the config has it, else 0)")
    parser.add_argument("--show-score", action="store_true", help="write each person's score")
    parser.add_argument("--show-box", action="store_true", help="draw each person's box")
    parser.add_argument("--show", action="store_true", help="also show the drawn frames in a window (q or Esc "
                                                            "stops) where a display exists")
    parser.add_argument("--onnx", help="run this exported network through onnxruntime instead of the weights")
    parser.add_argument("--boxes", help="top-down: a COCO detection results file with the person boxes")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all; a camera "
                                                                  "runs until q / Esc or Ctrl-C without it)")
    parser.add_argument("--fps", type=float, default=0, help="frame rate of the written video (default: the "
                                                             "source's, a camera's 30)")
    add_override_arguments(parser)
    return parse_tool_args(parser, argv)


# --- sources ---------------------------------------------------------------------------------------------------
class Source:
    """Frames of an image, a folder of images, a video file or a camera: ``kind``, ``name`` (for output files),
    ``total`` (frames, None when unknown), ``fps``; iterating yields ``(image_id, file_name, frame BGR)``."""

    def __init__(self, spec: str):
        from bupose.data.io import read_image

        self._read_image = read_image
        path = Path(spec)
        self.capture = None
        if path.is_dir():
            self.kind, self.name = "folder", path.resolve().name
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise DataError(f"--source {spec}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            self.kind, self.name, self.files = "image", path.stem, [path]
        elif path.is_file():
            self.kind, self.name = "video", path.stem
            self.capture = cv2.VideoCapture(str(path))
            if not self.capture.isOpened():
                raise DataError(f"--source {spec}: cannot open it as a video (not a video format OpenCV reads, or "
                                f"corrupt); images need one of the suffixes {', '.join(IMAGE_SUFFIXES)}")
        elif spec.isdigit():
            self.kind, self.name = "camera", f"camera{spec}"
            self.capture = cv2.VideoCapture(int(spec))
            if not self.capture.isOpened():
                raise DataError(f"--source {spec}: camera {spec} cannot be opened (no such camera, or it is busy)")
        else:
            raise DataError(f"--source {spec}: not found (expected an image, a folder of images, a video file or a "
                            f"camera index)")
        if self.capture is None:
            stems = [p.stem for p in self.files]
            numeric = all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems)
            self.ids = [int(s) for s in stems] if numeric else list(range(len(stems)))
            self.total, self.fps = len(self.files), 0.0
        else:
            count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.total = count if self.kind == "video" and count > 0 else None
            fps = self.capture.get(cv2.CAP_PROP_FPS)
            self.fps = fps if fps and np.isfinite(fps) and 0 < fps < 1000 else 30.0

    def __iter__(self):
        if self.capture is None:
            for image_id, path in zip(self.ids, self.files):
                yield image_id, path.name, self._read_image(path, "--source")
            return
        index = 0
        while True:
            ok, frame = self.capture.read()
            if not ok:
                if index == 0:
                    raise DataError(f"--source: no frame could be read from the {self.kind} {self.name}")
                return
            yield index, f"{self.name}#{index}", frame
            index += 1

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()


# --- outputs ---------------------------------------------------------------------------------------------------
class Outputs:
    """The drawn images or video and the poses file of one demo run in ``folder``."""

    def __init__(self, folder: Path, source: Source, spec, info: dict, fps: float):
        self.folder, self.source, self.fps = folder, source, fps
        self.video = None
        self.poses_file = folder / f"{source.name}_poses.json"
        skeleton = [[a + 1, b + 1] for a, b in spec.skeleton]  # COCO: 1-based
        self.coco = {"info": info, "categories": [{"id": 1, "name": "person", "supercategory": "person",
                                                   "keypoints": list(spec.names), "skeleton": skeleton}],
                     "images": [], "annotations": []}

    @property
    def drawn(self) -> Path:
        """The video file, or the folder of the drawn images."""
        return self.folder / f"{self.source.name}.mp4" if self.source.capture is not None else self.folder

    def add(self, image_id: int, file_name: str, frame: np.ndarray, drawn: np.ndarray, people, kpt_thr: float):
        h, w = frame.shape[:2]
        entry = {"id": int(image_id), "file_name": file_name, "width": w, "height": h}
        if self.source.capture is not None:
            entry["frame"] = int(image_id)
        self.coco["images"].append(entry)
        for person in people:
            kp = np.asarray(person["keypoints"], np.float64)
            self.coco["annotations"].append({
                "id": len(self.coco["annotations"]) + 1, "image_id": int(image_id), "category_id": 1,
                "keypoints": [round(float(v), 3) for v in kp.reshape(-1)], "score": round(float(person["score"]), 5),
                "bbox": [round(float(v), 2) for v in person["bbox"]],
                "area": round(float(person["bbox"][2] * person["bbox"][3]), 2),
                "num_keypoints": int((kp[:, 2] > kpt_thr).sum())})
        if self.source.capture is None:
            target = self.folder / (Path(file_name).stem + ".jpg")
            if not cv2.imwrite(str(target), drawn):
                raise DataError(f"cannot write {target}")
            return
        if self.video is None:
            self.video = cv2.VideoWriter(str(self.drawn), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.video.isOpened():
                raise DataError(f"cannot write the video {self.drawn} (OpenCV has no mp4v encoder?)")
        self.video.write(drawn)

    def close(self) -> None:
        if self.video is not None:
            self.video.release()
        tmp = self.poses_file.with_name(self.poses_file.name + ".tmp")
        tmp.write_text(json.dumps(self.coco))
        os.replace(tmp, self.poses_file)


class Window:
    """``--show``: a window where a display exists; a warning and no window elsewhere (no display, or OpenCV built
    without GUI support, as ``opencv-python-headless``)."""

    def __init__(self, title: str, wanted: bool):
        self.title, self.on = title, False
        if not wanted:
            return
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("warning: --show: no display (DISPLAY is not set); the drawn frames are still written",
                  file=sys.stderr)
            return
        self.on = True

    def show(self, image: np.ndarray) -> bool:
        """Show ``image``; False when the user pressed q or Esc."""
        if not self.on:
            return True
        try:
            cv2.imshow(self.title, image)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            print("warning: --show: OpenCV has no GUI support here (opencv-python-headless); the drawn frames are "
                  "still written", file=sys.stderr)
            self.on = False
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.on:
            cv2.destroyAllWindows()


# --- the run ---------------------------------------------------------------------------------------------------
def box_source(cfg, boxes_file: str | None):
    """Top-down: ``image_id -> boxes`` from ``--boxes`` / ``TEST.COCO_BBOX_FILE``, or None to let the predictor run
    ``TEST.DETECTOR_CFG``'s detector; ConfigError when the config gives no boxes. Other methods: None."""
    from bupose.methods import build_method

    if not getattr(build_method(cfg).decoder(), "needs_boxes", False):
        if boxes_file:
            raise ConfigError(f"--boxes is for top-down methods; {cfg.MODEL.NAME} finds the people itself")
        return None
    path = boxes_file or cfg.TEST.COCO_BBOX_FILE
    if path:
        from bupose.methods.topdown.boxes import DetectionFileBoxes

        return DetectionFileBoxes(path, image_thre=cfg.TEST.IMAGE_THRE)
    if cfg.TEST.DETECTOR_CFG:
        return None
    raise ConfigError(f"{cfg.source or 'the config'} is the top-down method {cfg.MODEL.NAME}, which needs person "
                      f"boxes: set TEST.DETECTOR_CFG and TEST.DETECTOR_MODEL_FILE (a bupose bottom-up / one-stage "
                      f"model as the detector), or give a COCO detection results file with --boxes FILE (or "
                      f"TEST.COCO_BBOX_FILE); TEST.USE_GT_BBOX has no ground truth to use in the demo")


def run(args) -> tuple[Outputs, int, float]:
    """The demo; returns the outputs, the number of frames and the seconds they took."""
    from tqdm import tqdm

    from bupose.engine.trainer import default_output_dir
    from bupose.inference.predictor import Predictor

    cfg = load_config(args.cfg, args.opts)
    source = Source(args.source)  # a bad source or a top-down config without boxes: refused before the model
    boxes = box_source(cfg, args.boxes)
    predictor = Predictor.from_config(cfg, args.onnx, score_threshold=args.score_thr)
    folder = Path(args.output_dir) if args.output_dir else default_output_dir(cfg) / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    weights = args.onnx or str(cfg.TEST.MODEL_FILE or "the run's weights")
    info = {"description": "bupose demo", "config": str(cfg.source), "method": cfg.MODEL.NAME, "weights": weights,
            "source": args.source, "scales": list(cfg.TEST.SCALE_FACTOR), "flip": bool(cfg.TEST.FLIP_TEST),
            "keypoint_threshold": args.kpt_thr, "score_threshold": predictor.score_threshold}
    outputs = Outputs(folder, source, predictor.spec, info, args.fps or source.fps)
    window = Window(f"bupose demo: {source.name}", args.show)
    total = source.total if not args.max_frames else min(args.max_frames, source.total or args.max_frames)
    n, file_boxes, t0 = 0, 0, time.perf_counter()
    try:
        with tqdm(total=total, desc=f"demo {source.name}", unit="frame") as bar:
            for image_id, file_name, frame in source:
                frame_boxes = boxes(image_id, frame) if boxes is not None else None
                file_boxes += len(frame_boxes.xywh) if frame_boxes is not None else 0
                people = predictor.people(frame, frame_boxes)
                drawn = predictor.draw(frame, people, keypoint_threshold=args.kpt_thr, show_score=args.show_score,
                                       show_box=args.show_box)
                outputs.add(image_id, file_name, frame, drawn, people.to_list(), args.kpt_thr)
                n += 1
                bar.update(1)
                if not window.show(drawn) or (args.max_frames and n >= args.max_frames):
                    break
    except KeyboardInterrupt:
        print("interrupted: keeping what was drawn so far", file=sys.stderr)
    finally:
        source.close()
        outputs.close()
        window.close()
    if boxes is not None and n and not file_boxes:
        print(f"warning: {boxes.path} has no person boxes for the image ids of these frames "
              f"({outputs.coco['images'][0]['id']}, ...): nobody was drawn", file=sys.stderr)
    return outputs, n, time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        outputs, frames, seconds = run(args)
    except BuposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    people = len(outputs.coco["annotations"])
    print(f"{frames} frame(s), {people} people, {frames / max(seconds, 1e-9):.2f} frames/s; drawn: {outputs.drawn}; "
          f"poses: {outputs.poses_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
