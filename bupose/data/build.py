"""Datasets from the config: the one place that maps ``DATASET.*`` onto a reader."""
from __future__ import annotations

from pathlib import Path

from bupose.data.coco_format import CocoKeypointDataset, build_dataset


def prepare_dataset(cfg, split: str, **kwargs) -> CocoKeypointDataset:
    """The reader of ``cfg.DATASET.DATASET``'s ``split`` under ``cfg.DATASET.ROOT``; the synthetic dataset is
    generated on first use. ``kwargs`` go to :class:`CocoKeypointDataset` (e.g. ``min_people=1`` for training)."""
    name = cfg.DATASET.DATASET
    if name.startswith("synthetic"):
        from bupose.data.synthetic import ensure_synthetic

        ensure_synthetic(Path(cfg.DATASET.ROOT) / "synthetic", cfg.DATASET.SYNTHETIC_TRAIN_IMAGES,
                         cfg.DATASET.SYNTHETIC_VAL_IMAGES, seed=0)
    return build_dataset(name, cfg.DATASET.ROOT, split, on_error=cfg.DATASET.ON_ERROR, **kwargs)
