"""Datasets by name: the catalogue (:mod:`bupose.data.catalogue`) mapped onto the readers, and ``DATASET.*`` of a
config mapped onto that. The one place that picks a reader for a dataset name."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .catalogue import SPLIT_ALIASES, dataset_entry
from .coco_format import CocoKeypointDataset
from .keypoints import KeypointSpec
from .yolo_format import YoloPoseDataset, yolo_dataset_files, yolo_spec


def dataset_files(name: str, root: str | Path = "datasets", split: str = "val",
                  check: bool = True) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of a dataset split in the catalogue's layout under ``root``.

    With ``check``, a missing file or folder raises :class:`DataError` naming the expected path; a split the dataset
    does not have is a :class:`DataError` listing its splits; an unknown name a ``ConfigError``. For ``yolo``,
    ``root`` is the data YAML and the result is ``(data YAML, the split's image folder or list file)``; ``check``
    also reads the YAML and checks that it has the split.
    """
    entry = dataset_entry(name)
    if entry.reader == "yolo":
        return yolo_dataset_files(root, split, check)
    key = SPLIT_ALIASES.get(split, split)
    if key not in entry.splits:
        raise DataError(f"dataset {entry.name!r} has no split {split!r}; splits: {list(entry.splits)}")
    ann_rel, img_rel = entry.splits[key]
    root = Path(root)
    ann_file, image_root = root / ann_rel, root / img_rel
    if check:
        for path, what, ok in ((ann_file, "annotation file", ann_file.is_file()),
                               (image_root, "image folder", image_root.is_dir())):
            if not ok:
                raise DataError(f"dataset {entry.name!r} split {key!r}: {what} not found at {path}\n"
                                f"expected layout under {root}:\n  {ann_rel}\n  {img_rel}/<file_name>\n"
                                f"(see datasets/README.md for where the files come from)")
    return ann_file, image_root


def dataset_spec(name: str, root: str | Path | None = None) -> KeypointSpec:
    """The keypoint layout of a dataset: the catalogue's (``root`` is not needed), or, for ``yolo``, the layout
    that the data YAML ``root`` declares."""
    entry = dataset_entry(name)
    return yolo_spec(root) if entry.spec is None else entry.spec


def build_dataset(name: str, root: str | Path = "datasets", split: str = "val",
                  **kwargs) -> CocoKeypointDataset | YoloPoseDataset:
    """The reader of a dataset split: a :class:`CocoKeypointDataset` for the COCO-format sets (``kwargs`` go to
    its constructor; ``spec`` defaults to the catalogue's), a :class:`YoloPoseDataset` for ``yolo``, where ``root``
    is the data YAML (``kwargs``: ``on_error``, ``min_people``, ``transform``, ``area_factor``)."""
    entry = dataset_entry(name)
    if entry.reader == "yolo":
        return YoloPoseDataset(root, split, **kwargs)
    ann_file, image_root = dataset_files(name, root, split)
    kwargs.setdefault("spec", entry.spec)
    return CocoKeypointDataset(ann_file, image_root, **kwargs)


def prepare_dataset(cfg, split: str, **kwargs) -> CocoKeypointDataset | YoloPoseDataset:
    """The reader of ``cfg.DATASET.DATASET``'s ``split`` under ``cfg.DATASET.ROOT``; a synthetic dataset is
    generated on first use (with a progress bar per split on stderr). ``kwargs`` go to the reader (e.g.
    ``min_people=1`` for training); a COCO-format reader also gets ``allow_keypoint_order`` from
    ``DATASET.ALLOW_KEYPOINT_ORDER``."""
    name = cfg.DATASET.DATASET
    entry = dataset_entry(name)
    if entry.synthetic is not None:
        from .synthetic import ensure_synthetic, progress_bars

        folder, preset = entry.synthetic
        ensure_synthetic(Path(cfg.DATASET.ROOT) / folder, cfg.DATASET.SYNTHETIC_TRAIN_IMAGES,
                         cfg.DATASET.SYNTHETIC_VAL_IMAGES, seed=0, progress=progress_bars(folder), preset=preset)
    if entry.reader != "yolo":  # only COCO-format files name their keypoints
        kwargs.setdefault("allow_keypoint_order", cfg.DATASET.get("ALLOW_KEYPOINT_ORDER", False))
    return build_dataset(name, cfg.DATASET.ROOT, split, on_error=cfg.DATASET.ON_ERROR, **kwargs)
