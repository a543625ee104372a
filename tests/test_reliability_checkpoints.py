"""Reliability of checkpoint files: damaged, truncated, empty, text and foreign files are refused saying what they
are; weights with NaN / inf are not loaded; temporary files of killed saves are cleaned; an unwritable output or
results folder is refused before any work."""
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from bupose.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from bupose.errors import CheckpointError, ConfigError


class _Net(torch.nn.Module):
    """A model with the checkpoint hook (see bupose.methods), without any method module."""

    method_name = "net"

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 64)
        self.bn = torch.nn.BatchNorm1d(64)

    def convert_checkpoint(self, checkpoint):
        from bupose.engine.checkpoint import plain_state_dict

        return plain_state_dict(checkpoint)


@pytest.fixture
def saved(tmp_path):
    """A final_state.pth-like file (a torch zip archive of ~50 KB of weights) and its model."""
    torch.manual_seed(0)
    net = _Net()
    path = tmp_path / "final_state.pth"
    save_checkpoint({"model": net.state_dict(), "method": "net", "epoch": 3}, path)
    return path, net


def _member_offset(path, suffix: str) -> int:
    """Where the data of the zip member ending in ``suffix`` starts in the file."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len


def _largest_member(path) -> str:
    with zipfile.ZipFile(path) as archive:
        return max(archive.infolist(), key=lambda i: i.file_size).filename


@pytest.mark.parametrize("fill", ["nan", "random"])
def test_weights_overwritten_inside_the_archive_are_refused_by_their_crc(saved, fill):
    """4 KB written over tensor data (0xff bytes: NaN as float32; or random bytes: finite garbage): torch.load alone
    returns the damaged weights without a word."""
    path, net = saved
    member = _largest_member(path)
    start = _member_offset(path, member) + 1024
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    data[start:start + 4096] = b"\xff" * 4096 if fill == "nan" else rng.integers(0, 256, 4096, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    loaded = torch.load(path, weights_only=True)["model"]  # the problem: it loads without error
    assert not all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint .*final_state.pth: it is corrupted: the data "
                                              rf"of its member '{re.escape(member)}' does not match the CRC-32"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="it is corrupted"):
        load_checkpoint(_Net(), path)


def test_a_good_archive_passes_the_check(saved):
    path, net = saved
    model = load_checkpoint(_Net(), path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), net.state_dict().values()))


@pytest.mark.parametrize("content,what", [
    (b"", r"the file is empty \(0 bytes\)"),
    (b"101 epochs, AP 0.71\n", r"it is a text file, not a checkpoint \(it starts with '101 epochs, AP 0.71'\)"),
    (b"<!DOCTYPE html>\n<html>Not Found</html>", r"it is a text file, not a checkpoint \(it starts with "
                                                  r"'<!DOCTYPE html>'\)"),
    (bytes(range(7, 107)) + bytes(range(200, 250)), r"it is not a torch checkpoint: neither a zip archive "
                                                    r"\(torch.save\) nor a pickle .*its first bytes are 07 08 09"),
])
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, content, what):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=rf"^cannot read checkpoint {re.escape(str(path))}: {what}"):
        read_checkpoint(path)


def test_a_truncated_checkpoint_is_named_truncated(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    (tmp_path / "half.pth").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half.pth: it is a truncated or damaged zip archive \(\d+ bytes; "
                                              r".*an interrupted copy, download or save\?"):
        read_checkpoint(tmp_path / "half.pth")
    legacy = tmp_path / "legacy.pth"  # the pre-zip torch.save format: a pickle, no checksums
    torch.save({"w": torch.ones(100)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(legacy)["w"], torch.ones(100))
    data = legacy.read_bytes()
    legacy.write_bytes(data[:len(data) - 100])
    with pytest.raises(CheckpointError, match=r"legacy.pth: it is a pickle file \(the legacy torch.save format\) "
                                              r"that cannot be loaded \(the file ends early: truncated"):
        read_checkpoint(legacy)


def test_non_finite_weights_are_refused_naming_the_tensors(saved, tmp_path):
    path, net = saved
    state = net.state_dict()
    state["fc.weight"] = state["fc.weight"].clone()
    state["fc.weight"][3, 4] = float("nan")
    state["bn.running_var"] = state["bn.running_var"].clone()
    state["bn.running_var"][0] = float("inf")
    save_checkpoint({"model": state, "method": "net"}, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"nan.pth: 2 of its 7 weight tensors hold NaN or infinite values "
                                              r"\(bn.running_var, fc.weight\): the file is damaged or was saved "
                                              r"from a diverged training run"):
        load_checkpoint(_Net(), tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"^checkpoint: 2 of its"):
        load_checkpoint(_Net(), state)  # an object loaded in memory too


# -- temporary files of killed saves --------------------------------------------------------------------------------
def test_only_the_temporaries_of_dead_processes_are_removed(tmp_path):
    from bupose.engine.checkpoint import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".checkpoint.pth.tmp{dead_pid}", tmp_path / f".final_state.pth.tmp{dead_pid}"]
    kept = [tmp_path / f".checkpoint.pth.tmp{os.getpid()}", tmp_path / f".checkpoint.pth.tmp{os.getppid()}",
            tmp_path / "checkpoint.pth", tmp_path / ".checkpoint.pth.tmpX", tmp_path / "metrics.csv.tmp"]
    for path in stale + kept:
        path.write_bytes(b"PK\x03\x04partial")
    (tmp_path / f".sub.tmp{dead_pid}").mkdir()  # a folder is never removed
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in kept] + [f".sub.tmp{dead_pid}"])
    assert remove_stale_temporaries(tmp_path / "missing") == []


# -- unwritable folders ---------------------------------------------------------------------------------------------
def test_an_unwritable_folder_is_a_config_error(tmp_path, monkeypatch):
    from bupose.engine.checkpoint import ensure_writable_folder

    assert ensure_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())  # the probe is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"the results folder .*file/results is not writable"):
        ensure_writable_folder(tmp_path / "file" / "results", "results folder")
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ConfigError, match=r"the output folder .* is not writable \(OSError: Read-only file system\); "
                                          r"choose another folder"):
        ensure_writable_folder(tmp_path)


def test_evaluate_split_checks_the_results_folder_before_predicting(tmp_path, monkeypatch):
    import bupose.engine.evaluate as evaluate

    def predict(*args, **kwargs):
        raise AssertionError("predicted although the results could not be written")

    monkeypatch.setattr(evaluate, "predict_split", predict)
    (tmp_path / "results").write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match=r"the results folder .*results is not writable"):
        evaluate.evaluate_split(None, None, "val", tmp_path / "results" / "val_results.json")
