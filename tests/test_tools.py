"""tools/train.py and tools/test.py on the tiny DEKR config: as subprocesses for the real runs and exit codes, and
in-process (``main(argv)``) for the quick error paths."""
import csv
import importlib.util
import json
import shutil
import subprocess

import pytest
import torch

from bupose.evaluation import CROWDPOSE_METRICS

from conftest import REPO, run_python


def _run(*args, timeout=240) -> subprocess.CompletedProcess:
    return run_python(*args, timeout=timeout)


def _tool(name: str):
    """tools/<name>.py as a module (its ``main(argv)`` returns the exit code)."""
    spec = importlib.util.spec_from_file_location(f"bupose_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tiny_yaml, tmp_path_factory):
    """``tools/train.py``: one epoch, validated on 3 images; returns (output dir, completed process)."""
    out = tmp_path_factory.mktemp("tool_run") / "run"
    proc = _run(REPO / "tools" / "train.py", "--cfg", tiny_yaml, "--output-dir", out, "TRAIN.END_EPOCH", 1,
                "TRAIN.VAL_FREQ", 1, "DATASET.MAX_TEST_IMAGES", 3)
    return out, proc


def test_train_tool_writes_the_run(trained):
    out, proc = trained
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"done: {out} (epoch 1" in proc.stdout
    for name in ("config.yaml", "checkpoint.pth", "model_best.pth", "final_state.pth", "metrics.csv",
                 "results/val_epoch1.json"):
        assert (out / name).is_file(), name
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1"]
    assert set(CROWDPOSE_METRICS) <= set(rows[0]) and {"loss", "heatmap_loss", "offset_loss", "lr"} <= set(rows[0])
    assert isinstance(json.loads((out / "results" / "val_epoch1.json").read_text()), list)


def test_test_tool_evaluates_the_run_and_prints_the_crowdpose_metrics(trained, tiny_yaml):
    out, _ = trained
    proc = _run(REPO / "tools" / "test.py", "--cfg", tiny_yaml, "--output-dir", out, "DATASET.MAX_TEST_IMAGES", 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| AP"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(CROWDPOSE_METRICS)
    assert "model_best.pth" in proc.stdout  # the run's best weights are found without TEST.MODEL_FILE
    metrics = json.loads((out / "results" / "val_metrics.json").read_text())
    assert list(metrics) == list(CROWDPOSE_METRICS)
    results = json.loads((out / "results" / "val_results.json").read_text())
    assert {r["image_id"] for r in results} <= {1, 2}
    assert all(len(r["keypoints"]) == 14 * 3 and r["category_id"] == 1 for r in results)
    assert (out / "results" / "val_test_config.yaml").is_file()


def test_train_tool_resumes_from_a_checkpoint_file(trained, tiny_yaml, tmp_path):
    """``--resume FILE`` continues another run into a new folder; ``--resume`` directly followed by KEY VALUE
    overrides is the flag, not a file name."""
    out, _ = trained
    new = tmp_path / "continued"
    proc = _run(REPO / "tools" / "train.py", "--cfg", tiny_yaml, "--output-dir", new, "--resume",
                out / "checkpoint.pth", "TRAIN.END_EPOCH", 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resumed from {out / 'checkpoint.pth'} at epoch 1" in proc.stderr
    with open(new / "metrics.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["2"]

    train = _tool("train")
    again = tmp_path / "again"
    shutil.copytree(out, again)
    assert train.main(["--cfg", str(tiny_yaml), "--output-dir", str(again), "--resume", "TRAIN.END_EPOCH", "2",
                       "TRAIN.VAL_FREQ", "0"]) == 0
    assert torch.load(again / "checkpoint.pth", weights_only=True)["epoch"] == 2


def test_unknown_config_key_exits_2_with_did_you_mean(tiny_yaml, capsys):
    proc = _run(REPO / "tools" / "train.py", "--cfg", tiny_yaml, "TRAIN.END_EPOHC", 1)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "unknown config key 'TRAIN.END_EPOHC'; did you mean 'TRAIN.END_EPOCH'?" in proc.stderr
    assert "Traceback" not in proc.stderr

    assert _tool("test").main(["--cfg", str(tiny_yaml), "TEST.FLIP_TST", "False"]) == 2
    assert "did you mean 'TEST.FLIP_TEST'?" in capsys.readouterr().err


def test_train_tool_resume_errors_exit_2(tiny_yaml, tmp_path, capsys):
    train = _tool("train")
    assert train.main(["--cfg", str(tiny_yaml), "--output-dir", str(tmp_path / "x"), "--resume",
                       str(tmp_path / "nope.pth")]) == 2
    assert f"checkpoint not found: {tmp_path / 'nope.pth'}" in capsys.readouterr().err
    assert train.main(["--cfg", str(tiny_yaml), "--output-dir", str(tmp_path / "y"), "TRAIN.IMAGES_PER_GPU",
                       "64"]) == 2
    assert "fewer than one global batch" in capsys.readouterr().err


def _other_model_file(tiny_yaml, tmp_path, *overrides):
    from bupose import build_model, load_config

    path = tmp_path / "other.pth"
    torch.save(build_model(load_config(tiny_yaml, list(overrides))).state_dict(), path)
    return path


@pytest.mark.parametrize("overrides,message", [
    pytest.param(["MODEL.SPEC", "{STAGES: {NUM_CHANNELS: [[8, 16], [8, 16, 32], [8, 16, 32, 64]]}}"],
                 "backbone is HRNet-W8 in the checkpoint, the model is HRNet-W4", id="wider-backbone"),
    pytest.param(["MODEL.SPEC", "{HEAD_OFFSET: {NUM_CHANNELS_PERKPT: 6}}"],
                 "shape mismatches: transition_offset.0.weight: checkpoint (84, 60, 1, 1), model (56, 60, 1, 1)",
                 id="wider-offset-head"),
    pytest.param(["MODEL.SPEC", "{STAGES: {NUM_MODULES: [1, 2, 1]}}"], "unexpected keys: stage3.1.",
                 id="deeper-stage"),
])
def test_test_tool_refuses_weights_of_another_architecture(tiny_yaml, tmp_path, capsys, overrides, message):
    weights = _other_model_file(tiny_yaml, tmp_path, *overrides)
    code = _tool("test").main(["--cfg", str(tiny_yaml), "--output-dir", str(tmp_path / "out"), "TEST.MODEL_FILE",
                               str(weights)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(weights) in err and message in err, err


def test_test_tool_refuses_a_file_that_is_not_a_dekr_checkpoint(tiny_yaml, tmp_path, capsys):
    test = _tool("test")
    torch.save({"fc.weight": torch.randn(4, 4), "fc.bias": torch.randn(4)}, tmp_path / "random.pth")
    assert test.main(["--cfg", str(tiny_yaml), "TEST.MODEL_FILE", str(tmp_path / "random.pth")]) == 2
    assert "not a DEKR (hrnet_dekr) checkpoint" in capsys.readouterr().err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert test.main(["--cfg", str(tiny_yaml), "TEST.MODEL_FILE", str(tmp_path / "junk.pth")]) == 2
    assert f"cannot read checkpoint {tmp_path / 'junk.pth'}" in capsys.readouterr().err


def test_test_tool_missing_weights_is_a_clear_error(tiny_yaml, tmp_path, capsys):
    test = _tool("test")
    missing = tmp_path / "missing.pth"
    assert test.main(["--cfg", str(tiny_yaml), "TEST.MODEL_FILE", str(missing)]) == 2
    assert f"error: checkpoint not found: {missing}" in capsys.readouterr().err
    assert test.main(["--cfg", str(tiny_yaml), "--output-dir", str(tmp_path / "empty")]) == 2
    assert "no TEST.MODEL_FILE given and no model_best.pth" in capsys.readouterr().err


def test_options_may_come_after_the_overrides(tmp_path, capsys):
    """``--output-dir`` (and every other option) after KEY VALUE overrides is the option, not a config key."""
    train, test = _tool("train"), _tool("test")
    args = train.parse_args(["--cfg", "x.yaml", "TRAIN.END_EPOCH", "3", "--output-dir", "out", "TRAIN.LR", "-1e-3"])
    assert (args.cfg, args.output_dir, args.resume) == ("x.yaml", "out", None)
    assert args.opts == ["TRAIN.END_EPOCH", "3", "TRAIN.LR", "-1e-3"]
    args = train.parse_args(["TRAIN.LR", "0.1", "--cfg", "x.yaml", "--resume", "TRAIN.END_EPOCH", "3", "--output-dir",
                             "o"])
    assert args.resume is True and args.opts == ["TRAIN.LR", "0.1", "TRAIN.END_EPOCH", "3"]
    assert train.parse_args(["--cfg", "x.yaml", "TRAIN.END_EPOCH", "3", "--resume", "ck.pth"]).resume == "ck.pth"
    args = test.parse_args(["--cfg", "x.yaml", "TEST.FLIP_TEST", "False", "--split", "train", "--output-dir", "o"])
    assert (args.split, args.output_dir, args.opts) == ("train", "o", ["TEST.FLIP_TEST", "False"])

    with pytest.raises(SystemExit) as info:
        train.parse_args(["--cfg", "x.yaml", "TRAIN.END_EPOCH", "3", "--ouput-dir", "o"])
    assert info.value.code == 2 and "unrecognized option: --ouput-dir" in capsys.readouterr().err

    cfg = REPO / "experiments" / "synthetic" / "dekr_tiny_256.yaml"
    assert train.main(["--cfg", str(cfg), "TRAIN.IMAGES_PER_GPU", "0", "--output-dir", str(tmp_path)]) == 2
    assert "error: command line: TRAIN.IMAGES_PER_GPU is 0; expected >= 1" in capsys.readouterr().err
    assert test.main(["--cfg", str(cfg), "TEST.SCALE_FACTOR", "[]", "--output-dir", str(tmp_path)]) == 2
    assert "TEST.SCALE_FACTOR is []; expected non-empty, each > 0" in capsys.readouterr().err


def test_summary_counts_a_topdown_config_at_its_crop_size():
    summary = _tool("summary")
    name, size, params, gmacs = summary.summarise(str(REPO / "experiments/synthetic/topdown_hrnet_simple_128x96.yaml"))
    assert size == "96x128" and params > 0
    _, square, _, gmacs_square = summary.summarise(
        str(REPO / "experiments/synthetic/topdown_hrnet_simple_128x96.yaml"), input_size=128)
    assert square == "128" and gmacs_square > gmacs  # 128x128 has more pixels than 96x128
