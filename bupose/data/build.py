"""Datasets from the config: the one place that maps ``DATASET.*`` onto a reader."""
from __future__ import annotations

from pathlib import Path

from bupose.data.coco_format import DATASET_LAYOUTS, CocoKeypointDataset, build_dataset
from bupose.data.yolo_format import YoloPoseDataset


def prepare_dataset(cfg, split: str, **kwargs) -> CocoKeypointDataset | YoloPoseDataset:
    """The reader of ``cfg.DATASET.DATASET``'s ``split`` under ``cfg.DATASET.ROOT``; the synthetic dataset is
    generated on first use. For ``yolo`` (an Ultralytics YOLO-pose dataset), ``DATASET.ROOT`` is the data YAML and
    ``split`` one of its keys. ``kwargs`` go to the reader (e.g. ``min_people=1`` for training)."""
    name = cfg.DATASET.DATASET
    layout = DATASET_LAYOUTS.get(name.lower())
    if layout is not None and layout.synthetic is not None:
        from bupose.data.synthetic import ensure_synthetic

        folder, preset = layout.synthetic
        ensure_synthetic(Path(cfg.DATASET.ROOT) / folder, cfg.DATASET.SYNTHETIC_TRAIN_IMAGES,
                         cfg.DATASET.SYNTHETIC_VAL_IMAGES, seed=0, preset=preset)
    return build_dataset(name, cfg.DATASET.ROOT, split, on_error=cfg.DATASET.ON_ERROR, **kwargs)
