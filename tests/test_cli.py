"""The ``bupose`` command: help of every command (with the most used config keys), one real call of each, and the
console entry point that ``pip install -e .`` installs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bupose import cli

from conftest import REPO, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")


def test_top_level_help_lists_the_commands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for command in ("train", "test", "demo", "export", "eval", "summary", "plot"):
        assert f"  {command} " in out
    assert cli.main(["tset"]) == 2
    assert "unknown command 'tset'; did you mean 'test'?" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_of_each_command(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: bupose {command}" in out  # the tool's own argparse help, under the command's name
    for key in cli.COMMON_KEYS[command]:
        assert f"  {key} " in out, key
    if cli.COMMON_KEYS[command]:
        assert "most used config keys" in out


def test_each_key_listed_in_help_is_a_config_key():
    from bupose.config import SCHEMA

    known = {o.key for o in SCHEMA}
    assert set(cli.COMMANDS) == set(cli.COMMON_KEYS)
    assert all(k in known for keys in cli.COMMON_KEYS.values() for k in keys)


@pytest.fixture(scope="module")
def run_dir(tiny_yaml, tmp_path_factory):
    """``bupose train``: one epoch of the tiny DEKR."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["train", "--cfg", str(tiny_yaml), "--output-dir", str(out), "TRAIN.END_EPOCH", "1"]) == 0
    return out


def test_train_test_eval(run_dir, tiny_yaml, synthetic_root, capsys):
    assert (run_dir / "final_state.pth").is_file() and (run_dir / "metrics.csv").is_file()
    assert cli.main(["test", "--cfg", str(tiny_yaml), "--output-dir", str(run_dir), "DATASET.MAX_TEST_IMAGES",
                     "2"]) == 0
    assert "| AP " in capsys.readouterr().out
    results = run_dir / "results" / "val_results.json"
    gt = synthetic_root / "synthetic" / "annotations" / "crowdpose_val.json"
    assert cli.main(["eval", "--gt", str(gt), "--dt", str(results), "--dataset", "crowdpose", "--out",
                     str(run_dir / "m.json")]) == 0
    assert "AP" in json.loads((run_dir / "m.json").read_text())


def test_demo_export_summary_plot(run_dir, tiny_yaml, synthetic_root, tmp_path, capsys):
    image = sorted((synthetic_root / "synthetic" / "images" / "val").glob("*.jpg"))[0]
    weights = str(run_dir / "final_state.pth")
    assert cli.main(["demo", "--cfg", str(tiny_yaml), "TEST.MODEL_FILE", weights, "--source", str(image),
                     "--output-dir", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / image.name).is_file() and (tmp_path / "demo" / f"{image.stem}_poses.json").is_file()
    pytest.importorskip("onnxruntime")
    assert cli.main(["export", "--cfg", str(tiny_yaml), "TEST.MODEL_FILE", weights, "--output",
                     str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file() and "ok" in capsys.readouterr().out
    assert cli.main(["summary", "--cfg", str(tiny_yaml)]) == 0
    assert "| params (M) |" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert cli.main(["plot", str(run_dir), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_entry_point_runs():
    """``pip install -e .`` installs the ``bupose`` script (setup.py's console_scripts entry point)."""
    beside = Path(sys.executable).with_name("bupose")
    exe = str(beside) if beside.is_file() else shutil.which("bupose")
    assert exe, "no bupose command next to this Python or on PATH: reinstall with pip install -e ."
    proc = subprocess.run([exe, "export", "--help"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: bupose export" in proc.stdout and "MODEL.ADAPTIVE_CONV" in proc.stdout
    assert '"bupose=bupose.cli:main"' in (REPO / "setup.py").read_text()


def test_plot_draws_several_runs_and_names_the_extra_without_matplotlib(tmp_path, capsys, monkeypatch):
    from bupose.plots import read_metrics

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "metrics.csv").write_text("epoch,lr,loss,AP,time_s\n1,0.1,0.5,,3\n2,0.1,0.4,0.2,3\n")
    (b / "metrics.csv").write_text("epoch,lr,loss,time_s\n1,0.1,0.6,3\n")
    cols = read_metrics(a)
    assert cols["loss"] == [0.5, 0.4] and cols["AP"][1] == 0.2 and cols["AP"][0] != cols["AP"][0]  # NaN: no value
    pytest.importorskip("matplotlib")
    assert cli.main(["plot", str(a), str(b / "metrics.csv"), "--labels", "A", "B", "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    (b / "bad.csv").write_text("epoch,loss\n1,abc\n")
    assert cli.main(["plot", str(b / "bad.csv")]) == 2
    assert "row 2, column 'loss': 'abc' is not a number" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert cli.main(["plot", str(a)]) == 2
    assert 'plotting needs matplotlib, which is not installed: pip install -e ".[plot]"' in capsys.readouterr().err
