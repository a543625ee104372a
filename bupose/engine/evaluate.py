"""Run a model over a dataset split with the test engine, write COCO results and compute the metrics."""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from bupose.data.build import prepare_dataset
from bupose.data.catalogue import dataset_entry
from bupose.engine.checkpoint import ensure_writable_folder
from bupose.evaluation import KeypointEvaluator, people_to_results, save_results
from bupose.inference.predictor import Predictor


def predict_split(cfg, model, split: str, progress: bool = True, limit: int = 0) -> tuple[list[dict], object]:
    """COCO results for every image of ``split`` (at most ``limit`` images when > 0) and the reader."""
    reader = prepare_dataset(cfg, split, min_people=0)
    predictor = Predictor(cfg, model)
    # top-down methods: the person boxes of each image (ground truth, a detection file or a detector model)
    boxes = predictor.method.box_source(reader) if hasattr(predictor.method, "box_source") else None
    n = min(len(reader), limit) if limit else len(reader)
    results: list[dict] = []
    for i in tqdm(range(n), desc=f"test {split}", disable=not progress, leave=False):
        image = reader.load_image(i)
        people = predictor.people(image, boxes(reader.image_ids[i], image) if boxes is not None else None)
        results += people_to_results(reader.image_ids[i], people.keypoints, people.scores)
    return results, reader


def evaluate_split(cfg, model, split: str, out_file: str | Path | None = None, progress: bool = True,
                   limit: int = 0) -> dict[str, float]:
    """Metrics of ``model`` on ``split``; the results file is written to ``out_file`` when given (its folder is
    checked for writing first: a ConfigError before the run, not an OSError after it)."""
    if out_file is not None:
        ensure_writable_folder(Path(out_file).parent, "results folder")
    results, reader = predict_split(cfg, model, split, progress, limit)
    if out_file is not None:
        save_results(results, out_file)
    gt = reader.coco_gt() if hasattr(reader, "coco_gt") else reader.ann_file  # ultralytics sets: built in memory
    if limit:
        gt = _subset_gt(gt, {int(i) for i in reader.image_ids[:limit]})
    protocol = dataset_entry(cfg.DATASET.DATASET).protocol
    return KeypointEvaluator(gt, protocol, sigmas=reader.spec.sigmas).evaluate(results)


def _subset_gt(gt, image_ids: set[int]) -> dict:
    import json

    gt = json.loads(Path(gt).read_text()) if not isinstance(gt, dict) else dict(gt)
    gt["images"] = [im for im in gt["images"] if im["id"] in image_ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in image_ids]
    return gt

