import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BUPOSE_SHARED", REPO.parent / "shared"))
FIXTURES = REPO / "tests" / "fixtures"


def needs_shared(relative: str) -> Path:
    """``shared/<relative>`` (third-party sample images, official annotations: not shipped with the repository), or
    skip the test, naming what it needs. ``shared/`` is ``$BUPOSE_SHARED`` or ``<repo>/../shared``."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs shared/{relative} (third-party data, not in the repository) at {path}: "
                    "set BUPOSE_SHARED to a shared/ folder that has it")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``shared/`` folder beside the checkout (third-party sample images, official annotations); a test
    that asks for it is skipped when it is missing (a plain clone). Small files the tests need live in
    ``tests/fixtures`` instead."""
    return needs_shared("")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# --- tiny DEKR runs on a small synthetic dataset (training, tools and API tests) ---------------------------------
TINY_NUM_TRAIN, TINY_NUM_VAL = 16, 6


def tiny_yaml_text(root: Path, input_size: int = 64) -> str:
    """An experiment file for a tiny DEKR (HRNet widths 4/8/16/32, one block everywhere, one stem block) on the
    synthetic CrowdPose-layout dataset under ``root``: CPU, no data workers, no validation, 2 epochs of batch 4."""
    base = (REPO / "experiments" / "synthetic" / "dekr_tiny_256.yaml").as_posix()
    return f"""\
_BASE_: {base}
OUTPUT_DIR: {(root / "output").as_posix()}
WORKERS: 0
DEVICE: cpu
DATASET:
  ROOT: {root.as_posix()}
  SYNTHETIC_TRAIN_IMAGES: {TINY_NUM_TRAIN}
  SYNTHETIC_VAL_IMAGES: {TINY_NUM_VAL}
  INPUT_SIZE: {input_size}
MODEL:
  SPEC:
    STEM_BLOCKS: 1
    STAGES:
      NUM_BLOCKS: [[1, 1], [1, 1, 1], [1, 1, 1, 1]]
      NUM_CHANNELS: [[4, 8], [4, 8, 16], [4, 8, 16, 32]]
    HEAD_HEATMAP:
      NUM_CHANNELS: 4
    HEAD_OFFSET:
      NUM_CHANNELS_PERKPT: 4
TRAIN:
  END_EPOCH: 2
  IMAGES_PER_GPU: 4
  VAL_FREQ: 0
TEST:
  SCALE_FACTOR: [1.0]
"""


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A DATASET.ROOT holding a small synthetic dataset (16 train, 6 val images), generated once per session.
    Tests must not modify it (copy it first)."""
    from bupose.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic_data")
    generate_dataset(root / "synthetic", TINY_NUM_TRAIN, TINY_NUM_VAL, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_yaml(synthetic_root) -> Path:
    """The tiny experiment file (see :func:`tiny_yaml_text`), 64 px input, data under :func:`synthetic_root`."""
    path = synthetic_root / "dekr_tiny_test.yaml"
    path.write_text(tiny_yaml_text(synthetic_root), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_cfg(tiny_yaml):
    """``tiny_cfg("KEY", "VALUE", ...)``: the tiny experiment's config with command-line style overrides."""
    from bupose.config import load_config

    def make(*overrides):
        return load_config(tiny_yaml, [str(o) for o in overrides])

    return make


@pytest.fixture(scope="module")
def one_thread():
    """Run torch single-threaded for a test module (the CI machines have 2 shared cores); a module uses it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` so that its module-scoped fixtures run under it too."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def keep_training_images(root: Path, keep: int, rank) -> list[str]:
    """Cut the synthetic CrowdPose training annotations under ``root`` down to the ``keep`` images that sort first by
    ``rank(image, people)`` (``people``: that image's annotations); returns their file names."""
    import json

    ann_file = root / "synthetic" / "annotations" / "crowdpose_train.json"
    ann = json.loads(ann_file.read_text())
    people: dict[int, list] = {}
    for a in ann["annotations"]:
        people.setdefault(a["image_id"], []).append(a)
    chosen = sorted(ann["images"], key=lambda im: rank(im, people.get(im["id"], [])))[:keep]
    ids = {im["id"] for im in chosen}
    ann["images"] = [im for im in ann["images"] if im["id"] in ids]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in ids]
    ann_file.write_text(json.dumps(ann))
    return [im["file_name"] for im in chosen]


def subprocess_env(**extra) -> dict:
    """The environment for a child Python: the repo importable, torch on one thread, no inherited torchrun vars."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_python(*args, timeout: float = 300):
    """``python args...`` from the repo root in :func:`subprocess_env`, output captured as text."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def train_and_test_tiny_topdown(yaml: Path, out: Path, overrides) -> list[dict]:
    """tools/train.py on 8 training images, then tools/test.py on 2 validation images with flip and scales 1, 1.25,
    both with ``overrides``; asserts that both succeed, that the weights are written and that the test prints the
    metrics; returns the results file's people (each must have 14 keypoints)."""
    import json

    proc = run_python(REPO / "tools" / "train.py", "--cfg", yaml, "--output-dir", out, *overrides,
                      "DATASET.MAX_TRAIN_IMAGES", 8)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "final_state.pth").is_file()
    proc = run_python(REPO / "tools" / "test.py", "--cfg", yaml, "--output-dir", out, *overrides,
                      "DATASET.MAX_TEST_IMAGES", 2, "TEST.FLIP_TEST", "true", "TEST.SCALE_FACTOR", "[1.0,1.25]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert any(line.startswith("| AP") for line in proc.stdout.splitlines())
    results = json.loads((out / "results" / "val_results.json").read_text())
    assert results and all(len(r["keypoints"]) == 14 * 3 for r in results)
    return results


def optimise(model, loss_fn, batch: dict, optimizer, steps: int) -> list[float]:
    """``steps`` optimiser steps of ``model`` (train mode) on one fixed ``batch``; the loss of each step."""
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(batch["image"]), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# --- tiny top-down runs on the same synthetic dataset -----------------------------------------------------------
def people_in_two_boxes(seed: int = 0, k: int = 5):
    """Two person boxes ``[x, y, w, h]`` ``(2, 4)`` and ``(2, k, 2)`` random keypoints inside them (5 px margin)."""
    rng = np.random.default_rng(seed)
    boxes = np.array([[30.0, 20.0, 60.0, 110.0], [120.0, 40.0, 45.0, 90.0]])
    kps = np.stack([np.stack([rng.uniform(b[0] + 5, b[0] + b[2] - 5, k), rng.uniform(b[1] + 5, b[1] + b[3] - 5, k)],
                             -1) for b in boxes])
    return boxes, kps


#: MODEL.SPEC of a tiny top-down HRNet (widths 4/8/16/32, one block everywhere, one stem block)
TINY_TOPDOWN_HRNET = {"STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [1, 1],
                                  "NUM_CHANNELS": [4, 8], "FUSE_METHOD": "SUM"},
                      "STAGE3": {"NUM_MODULES": 1, "NUM_BRANCHES": 3, "BLOCK": "BASIC", "NUM_BLOCKS": [1, 1, 1],
                                  "NUM_CHANNELS": [4, 8, 16], "FUSE_METHOD": "SUM"},
                      "STAGE4": {"NUM_MODULES": 1, "NUM_BRANCHES": 4, "BLOCK": "BASIC", "NUM_BLOCKS": [1, 1, 1, 1],
                                  "NUM_CHANNELS": [4, 8, 16, 32], "FUSE_METHOD": "SUM"}, "STEM_BLOCKS": 1}


def tiny_synthetic_header(root: Path, base: str, output: Path | None = None) -> str:
    """The first lines of a test experiment file: ``experiments/synthetic/<base>`` on the small synthetic
    CrowdPose-layout dataset under ``root`` (``DATASET`` section complete), CPU, no data workers, runs under
    ``output`` (default ``root/output``); append other sections."""
    return f"""\
_BASE_: {(REPO / "experiments" / "synthetic" / base).as_posix()}
OUTPUT_DIR: {(output or root / "output").as_posix()}
WORKERS: 0
DEVICE: cpu
DATASET:
  DATASET: synthetic_crowdpose
  ROOT: {root.as_posix()}
  SYNTHETIC_TRAIN_IMAGES: {TINY_NUM_TRAIN}
  SYNTHETIC_VAL_IMAGES: {TINY_NUM_VAL}
"""


def tiny_topdown_yaml_text(root: Path) -> str:
    """An experiment file for a tiny top-down HRNet (widths 4/8/16/32, one block everywhere, one stem block) on the
    synthetic CrowdPose-layout dataset under ``root``: 64x48 crops, CPU, no data workers, no validation, 2 epochs of
    batch 8, ground-truth boxes at test."""
    return tiny_synthetic_header(root, "topdown_hrnet_simple_128x96.yaml") + """\
MODEL:
  IMAGE_SIZE: [48, 64]
  HEATMAP_SIZE: [12, 16]
  SPEC:
    STAGE2: {NUM_BLOCKS: [1, 1], NUM_CHANNELS: [4, 8]}
    STAGE3: {NUM_BLOCKS: [1, 1, 1], NUM_CHANNELS: [4, 8, 16]}
    STAGE4: {NUM_BLOCKS: [1, 1, 1, 1], NUM_CHANNELS: [4, 8, 16, 32]}
TRAIN:
  END_EPOCH: 2
  IMAGES_PER_GPU: 8
  VAL_FREQ: 0
"""


@pytest.fixture(scope="session")
def tiny_topdown_yaml(synthetic_root) -> Path:
    """The tiny top-down experiment file (see :func:`tiny_topdown_yaml_text`), data under :func:`synthetic_root`."""
    path = synthetic_root / "topdown_tiny_test.yaml"
    path.write_text(tiny_topdown_yaml_text(synthetic_root), encoding="utf-8")
    return path
