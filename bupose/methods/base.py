"""What the methods' training sets share: a reader's first ``limit`` samples, augmented with a generator seeded by
``(seed, epoch, index)``, so an epoch yields the same items whatever the number of workers or processes and a
resumed run repeats an interrupted epoch exactly."""
from __future__ import annotations

import numpy as np
import torch

from bupose.data.build import dataset_spec
from bupose.data.keypoints import KeypointSpec
from bupose.errors import ConfigError


def keypoint_spec(cfg) -> KeypointSpec:
    """The keypoint layout of ``cfg``'s dataset, checked against ``DATASET.NUM_JOINTS``."""
    spec = dataset_spec(cfg.DATASET.DATASET, cfg.DATASET.ROOT)
    if cfg.DATASET.NUM_JOINTS != spec.num_keypoints:
        raise ConfigError(f"DATASET.NUM_JOINTS is {cfg.DATASET.NUM_JOINTS} but {cfg.DATASET.DATASET} has "
                          f"{spec.num_keypoints} keypoints")
    return spec


class SeededTrainingSet(torch.utils.data.Dataset):
    """Base class; subclasses implement ``__getitem__`` with :meth:`rng`. The trainer calls :meth:`set_epoch`."""

    def __init__(self, reader, seed: int = 0, limit: int = 0):
        self.reader, self.seed, self.epoch = reader, seed, 0
        self.length = min(len(reader), limit) if limit else len(reader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])
