"""The dataset catalogue: every dataset name bupose knows, with where its files lie, its keypoint layout and how it
is evaluated. The one place that knows these facts; :mod:`bupose.data.build` reads a dataset by them and
:mod:`bupose.engine.evaluate` takes the protocol from here.

Paths are relative to the datasets root (``DATASET.ROOT``, by default ``datasets/``; see ``datasets/README.md``).
``yolo`` is the exception: an Ultralytics YOLO-pose dataset whose data YAML (``DATASET.ROOT``) names the splits and
the keypoint layout, so its entry has neither.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from ..errors import ConfigError
from .keypoints import COCO17, CROWDPOSE14, KeypointSpec


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of the catalogue.

    Attributes:
        name: the name as in ``DATASET.DATASET`` (lower case).
        reader: ``"coco"`` (a COCO-format JSON file and an image folder, :mod:`bupose.data.coco_format`) or
            ``"yolo"`` (an Ultralytics data YAML, :mod:`bupose.data.yolo_format`).
        protocol: the evaluation protocol, a key of :data:`bupose.evaluation.PROTOCOLS` (``coco``, ``crowdpose``,
            ``ochuman``).
        spec: the keypoint layout, or None where the data YAML declares it (``yolo``).
        splits: ``{split: (annotation file, image folder)}`` relative to the datasets root (empty for ``yolo``).
        synthetic: ``(folder, generator preset)`` for the datasets that :mod:`bupose.data.synthetic` generates on
            first use, else None.
    """

    name: str
    reader: str
    protocol: str
    spec: KeypointSpec | None
    splits: dict[str, tuple[str, str]] = field(default_factory=dict)
    synthetic: tuple[str, str] | None = None


def _synthetic(*, layout: KeypointSpec, protocol: str, folder: str, preset: str) -> DatasetEntry:
    """A generated dataset named ``<folder>_<layout>``: ``<folder>/annotations/<layout>_<split>.json`` and
    ``<folder>/images/<split>`` (``folder`` is :func:`bupose.data.synthetic.preset_folder` of ``preset``)."""
    return DatasetEntry(
        name=f"{folder}_{layout.name}", reader="coco", protocol=protocol, spec=layout,
        splits={s: (f"{folder}/annotations/{layout.name}_{s}.json", f"{folder}/images/{s}") for s in ("train", "val")},
        synthetic=(folder, preset))


_ENTRIES = (
    DatasetEntry(
        name="coco", reader="coco", protocol="coco", spec=COCO17,
        splits={s: (f"coco/annotations/person_keypoints_{s}2017.json", f"coco/images/{s}2017")
                for s in ("train", "val")}),
    DatasetEntry(
        name="crowdpose", reader="coco", protocol="crowdpose", spec=CROWDPOSE14,
        splits={s: (f"crowdpose/json/crowdpose_{s}.json", "crowdpose/images")
                for s in ("train", "val", "trainval", "test")}),
    DatasetEntry(
        name="ochuman", reader="coco", protocol="ochuman", spec=COCO17,
        splits={s: (f"ochuman/ochuman_coco_format_{s}_range_0.00_1.00.json", "ochuman/images")
                for s in ("val", "test")}),
    _synthetic(layout=CROWDPOSE14, protocol="crowdpose", folder="synthetic", preset="crowds"),
    _synthetic(layout=COCO17, protocol="coco", folder="synthetic", preset="crowds"),
    _synthetic(layout=CROWDPOSE14, protocol="crowdpose", folder="synthetic_simple", preset="simple"),
    _synthetic(layout=COCO17, protocol="coco", folder="synthetic_simple", preset="simple"),
    # Ultralytics' pose validator scores these sets with the COCO protocol (``area`` = 0.53 * box area).
    DatasetEntry(name="yolo", reader="yolo", protocol="coco", spec=None),
)

#: Every dataset name bupose knows -> its entry.
DATASETS: dict[str, DatasetEntry] = {e.name: e for e in _ENTRIES}

#: Split names accepted as aliases (COCO's folder names).
SPLIT_ALIASES = {"train2017": "train", "val2017": "val"}


def dataset_entry(name: str) -> DatasetEntry:
    """The catalogue entry of a dataset name (case-insensitive). An unknown name is a :class:`ConfigError` naming
    the closest known one."""
    entry = DATASETS.get(str(name).lower())
    if entry is None:
        hint = difflib.get_close_matches(str(name).lower(), list(DATASETS), n=1, cutoff=0.0)
        raise ConfigError(f"unknown dataset {name!r} (DATASET.DATASET); did you mean {hint[0]!r}? "
                          f"known datasets: {', '.join(DATASETS)}")
    return entry
