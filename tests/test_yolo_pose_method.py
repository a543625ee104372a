"""YOLO-Pose as a method: training targets and masks, batching, the shared trainer with the YOLOv5 recipe (warm-up,
accumulation, EMA) and exact resume, a custom keypoint count end to end, overfitting, errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bupose.config import load_config
from bupose.data.keypoints import CROWDPOSE14, KeypointSpec
from bupose.data.sample import Sample
from bupose.data.yolo_format import write_yolo_pose
from bupose.engine.checkpoint import read_checkpoint
from bupose.engine.evaluate import evaluate_split
from bupose.engine.trainer import Trainer
from bupose.errors import ConfigError
from bupose.inference.predictor import Predictor
from bupose.methods import build_method
from bupose.methods.yolo_pose.method import YOLOPoseTrainingSet, person_targets
from conftest import TINY_NUM_TRAIN, TINY_NUM_VAL

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
TINY_YOLO = REPO / "experiments" / "synthetic" / "yolo_pose_tiny_320.yaml"


def _cfg(synthetic_root, out=None, **over):
    opts = {"DATASET.ROOT": str(synthetic_root), "DATASET.INPUT_SIZE": 128, "MODEL.SPEC": "{WIDTH_MULTIPLE: 0.0625}",
            "TRAIN.IMAGES_PER_GPU": 2, "DATASET.MAX_TRAIN_IMAGES": 4, "TRAIN.END_EPOCH": 2, "WORKERS": 0,
            "TRAIN.NOMINAL_BATCH": 4, "TRAIN.WARMUP_EPOCHS": 1.0, "TRAIN.VAL_FREQ": 0, "DEVICE": "cpu",
            "OUTPUT_DIR": str(out or "output"), "DATASET.SYNTHETIC_TRAIN_IMAGES": TINY_NUM_TRAIN,
            "DATASET.SYNTHETIC_VAL_IMAGES": TINY_NUM_VAL}
    opts.update(over)
    flat = []
    for k, v in opts.items():
        flat += [k, str(v)]
    return load_config(TINY_YOLO, flat)


def test_person_targets_keep_labelled_people_as_centre_boxes():
    kps = np.zeros((3, 2, 3), np.float32)
    kps[0] = [[10, 20, 2], [30, 40, 1]]
    kps[2] = [[5, 5, 2], [0, 0, 0]]
    boxes = np.array([[0, 10, 40, 50], [1, 1, 2, 2], [4, 4, 8, 10]], np.float32)
    rows = person_targets(kps, boxes)  # person 1 has no labelled keypoint: no target (the mask ignores it)
    assert rows.shape == (2, 6 + 6)
    np.testing.assert_allclose(rows[0, :6], [0, 0, 20, 30, 40, 40])
    np.testing.assert_allclose(rows[0, 6:], [10, 20, 2, 30, 40, 1])
    np.testing.assert_allclose(rows[1, 2:6], [6, 7, 4, 6])
    assert person_targets(kps[1:2], boxes[1:2]).shape == (0, 12)  # nobody labelled (e.g. a crop of background)
    assert person_targets(np.zeros((0, 2, 3), np.float32), np.zeros((0, 4), np.float32)).shape == (0, 12)


class _Reader(list):
    pass


def _sample(ignore: bool) -> Sample:
    img = np.full((100, 100, 3), 60, np.uint8)
    kps = np.zeros((1, 14, 3), np.float32)
    kps[0, :, 0], kps[0, :, 1], kps[0, :, 2] = np.linspace(20, 40, 14), np.linspace(20, 80, 14), 2
    mask = np.zeros((100, 100), np.uint8)
    if ignore:
        mask[:, 60:] = 1  # a crowd region on the right
    return Sample(image=img, keypoints=kps, boxes=np.array([[20, 20, 40, 80]], np.float32), ignore_mask=mask,
                  image_id=1)


def test_training_items_carry_the_ignore_mask_and_collate_sets_batch_indices():
    from bupose.data.pipelines import LetterboxTrain

    pipe = LetterboxTrain(CROWDPOSE14, input_size=128, mosaic_prob=0.0, translate=0.0, scale=0.0, flip_prob=0.0)
    ds = YOLOPoseTrainingSet(_Reader([_sample(True), _sample(False)]), pipe)
    a, b = ds[0], ds[1]
    assert a["image"].shape == (3, 128, 128) and 0 <= float(a["image"].min()) and float(a["image"].max()) <= 1
    assert a["targets"].shape == (1, 6 + 42)
    assert float(a["mask"][:, :64].min()) == 1.0 and float(a["mask"][:, 100:].max()) == 0.0
    assert float(b["mask"].min()) == 1.0
    batch = YOLOPoseTrainingSet.collate([a, b, a])
    assert batch["image"].shape == (3, 3, 128, 128) and batch["mask"].shape == (3, 128, 128)
    assert batch["targets"][:, 0].tolist() == [0, 1, 2]
    # the same (seed, epoch, index) gives the same item; another epoch another augmentation
    assert torch.equal(ds[0]["image"], a["image"])


@pytest.mark.slow
def test_trainer_with_warmup_accumulation_and_ema_resumes_exactly(synthetic_root, tmp_path):
    straight = Trainer(_cfg(synthetic_root), tmp_path / "a", progress=False)
    assert straight.schedule.accumulate == 2 and straight.ema is not None
    straight.train()
    first = Trainer(_cfg(synthetic_root, **{"TRAIN.END_EPOCH": 1}), tmp_path / "b", progress=False)
    first.train()
    resumed = Trainer(_cfg(synthetic_root), tmp_path / "b", progress=False)  # auto-resume from epoch 1
    assert resumed.start_epoch == 1
    resumed.train()
    a, b = read_checkpoint(tmp_path / "a" / "checkpoint.pth"), read_checkpoint(tmp_path / "b" / "checkpoint.pth")
    for part in ("model",):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), k
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k
    assert a["ema"]["updates"] == b["ema"]["updates"] == 3  # warm-up: steps after iterations 1, 2; then 4
    final = read_checkpoint(tmp_path / "a" / "final_state.pth")["model"]
    assert all(torch.equal(final[k], a["ema"]["model"][k]) for k in final)  # what is tested is the EMA


def _k6_dataset(synthetic_root, out: Path) -> Path:
    """A 6-keypoint layout (head, neck, shoulders, hips) cut from the synthetic CrowdPose set, as YOLO labels."""
    pick = [12, 13, 0, 1, 6, 7]
    spec = KeypointSpec("k6", tuple(CROWDPOSE14.names[i] for i in pick), (0, 1, 3, 2, 5, 4),
                        tuple(CROWDPOSE14.sigmas[i] for i in pick), ((0, 1), (1, 2), (1, 3), (2, 4), (3, 5)))
    for split in ("train", "val"):
        gt = json.loads((synthetic_root / "synthetic" / "annotations" / f"crowdpose_{split}.json").read_text())
        for a in gt["annotations"]:
            k = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)[pick]
            a["keypoints"] = k.reshape(-1).tolist()
            a["num_keypoints"] = int((k[:, 2] > 0).sum())
        gt["categories"][0]["keypoints"] = list(spec.names)
        path = out / f"k6_{split}.json"
        path.write_text(json.dumps(gt))
        yaml_file = write_yolo_pose(path, synthetic_root / "synthetic" / "images" / split, out / "yolo", spec,
                                    split=split)
    return yaml_file


@pytest.mark.slow
def test_custom_keypoint_count_end_to_end(synthetic_root, tmp_path):
    """K = 6 from an Ultralytics-format dataset: model, targets, loss, trainer, engine with flip, evaluation."""
    data = _k6_dataset(synthetic_root, tmp_path)
    cfg = _cfg(synthetic_root, tmp_path, **{"DATASET.DATASET": "yolo", "DATASET.ROOT": str(data),
                                            "DATASET.NUM_JOINTS": 6, "TRAIN.END_EPOCH": 1,
                                            "TEST.FLIP_TEST": True, "TEST.SCALE_FACTOR": "[1.0, 1.5]"})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.model.num_keypoints == 6
    trainer.train()
    model = trainer.ema.module
    img = trainer.dataset.reader.load_image(0)
    people = Predictor(cfg, model).people(img)
    assert people.keypoints.shape[1:] == (6, 3) and len(people) > 0
    metrics = evaluate_split(cfg, model, "val", tmp_path / "res.json", progress=False, limit=2)
    assert set(metrics) >= {"AP", "AP50", "AR"} and 0 <= metrics["AP"] <= 1


@pytest.mark.slow
def test_overfitting_a_few_synthetic_images(synthetic_root, tmp_path):
    """Training on 2 easy validation images and testing on the same ones reaches a clearly non-trivial AP."""
    cfg = _cfg(synthetic_root, tmp_path, **{"DATASET.TRAIN_SET": "val", "DATASET.MAX_TRAIN_IMAGES": 2,
                                            "DATASET.INPUT_SIZE": 192, "MODEL.SPEC": "{WIDTH_MULTIPLE: 0.125}",
                                            "TRAIN.END_EPOCH": 800, "TRAIN.IMAGES_PER_GPU": 2,
                                            "TRAIN.NOMINAL_BATCH": 0, "TRAIN.WARMUP_EPOCHS": 5.0,
                                            "TRAIN.EMA": False, "DATASET.MOSAIC": 0.0, "DATASET.SCALE_JITTER": 0.1,
                                            "DATASET.TRANSLATE": 0.05, "DATASET.HSV": "[0, 0, 0]",
                                            "TRAIN.OPTIMIZER": "adam", "TRAIN.LR": 0.02,
                                            "LOSS.GAINS": "{L1_KPT: 0.2}", "TEST.FLIP_TEST": False})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.train()
    metrics = evaluate_split(cfg, trainer.model, "val", None, progress=False, limit=2)
    # Measured (1 thread, torch 2.14.1 CPU): AP 0.54 (seed 0, OpenCV 5.1), 0.50 (seed 2, OpenCV 4.14). The former
    # recipe (600 epochs, LR 0.005) gave 0.43 / 0.19 / 0.22 for seeds 0 / 1 / 2, and 0.08 for seed 0 once OpenCV 5
    # changed warpAffine's rounding by up to 4 grey levels: too close to the bar.
    assert metrics["AP"] > 0.3, metrics


def test_config_errors(synthetic_root):
    with pytest.raises(ConfigError, match="LOSS.GAINS has unknown keys"):
        build_method(_cfg(synthetic_root, **{"LOSS.GAINS": "{KPTS: 1.0}"}))
    with pytest.raises(ConfigError, match="NUM_JOINTS is 17"):
        build_method(_cfg(synthetic_root, **{"DATASET.NUM_JOINTS": 17}))
    with pytest.raises(ConfigError, match="WIDTH_MULTIPLIER"):
        build_method(_cfg(synthetic_root, **{"MODEL.SPEC": "{WIDTH_MULTIPLIER: 0.5}"}))
