"""The training loop (bupose.engine.trainer) on a tiny DEKR and a small synthetic dataset, on the CPU.

Resuming, atomic checkpoints, non-finite losses, MODEL.PRETRAINED, the global batch sampler, DistributedDataParallel
with two gloo processes against one process, and (slow) overfitting a few images to a high AP.
"""
import csv
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bupose.engine.checkpoint import read_checkpoint, save_checkpoint
from bupose.engine.trainer import GlobalBatchSampler, Trainer, learning_rate
from bupose.errors import CheckpointError, ConfigError

from conftest import REPO, keep_training_images, subprocess_env


pytestmark = pytest.mark.usefixtures("one_thread")


def _epochs(out: Path) -> list[int]:
    with open(out / "metrics.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _model_state(path: Path) -> dict:
    return read_checkpoint(path)["model"]


def _assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def straight_run(tiny_cfg, tmp_path_factory) -> Path:
    """Two epochs straight through (4 iterations of 4 images each) -- the reference for the resume tests."""
    out = tmp_path_factory.mktemp("straight")
    torch.set_num_threads(1)
    history = Trainer(tiny_cfg(), out, progress=False).train()
    assert [h["epoch"] for h in history] == [1, 2]
    return out


# -- GlobalBatchSampler and the schedule ----------------------------------------------------------------------------
@pytest.mark.parametrize("length,batch,world", [(23, 3, 2), (16, 2, 4), (10, 5, 1), (9, 1, 3)])
def test_global_batch_is_the_union_of_the_ranks_batches(length, batch, world):
    for epoch in (0, 1, 7):
        single = GlobalBatchSampler(length, batch * world, 1, 0, seed=5)
        ranks = [GlobalBatchSampler(length, batch, world, r, seed=5) for r in range(world)]
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        assert len(single) == length // (batch * world) and all(len(r) == len(single) for r in ranks)
        per_rank = [list(r) for r in ranks]
        assert all(len(b) == batch for rb in per_rank for b in rb)
        for step, global_batch in enumerate(single):
            assert sum((rb[step] for rb in per_rank), []) == global_batch
        seen = [i for rb in per_rank for b in rb for i in b]
        assert len(seen) == len(set(seen)) == len(single) * batch * world  # no index twice in an epoch


def test_global_batch_sampler_is_deterministic_per_epoch_and_reshuffles_across_epochs():
    def order(epoch, seed=0):
        s = GlobalBatchSampler(40, 4, 2, 1, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(3) == order(3) == list(order(3))
    assert order(0) != order(1) != order(2)
    assert order(0) != order(0, seed=1)
    plain = GlobalBatchSampler(10, 2, 2, 1, shuffle=False)
    plain.set_epoch(4)
    assert list(plain) == [[2, 3], [6, 7]]  # the identity order; the last incomplete global batch is dropped


def test_global_batch_larger_than_the_training_set_is_a_config_error():
    with pytest.raises(ConfigError, match=r"7 images.*4 \(TRAIN.IMAGES_PER_GPU\) x 2 processes"):
        GlobalBatchSampler(7, 4, 2, 0)


def test_learning_rate_steps(tiny_cfg):
    cfg = tiny_cfg("TRAIN.LR", 0.01, "TRAIN.LR_STEP", "[2, 4]", "TRAIN.LR_FACTOR", 0.5)
    assert [learning_rate(cfg, e) for e in range(6)] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])


# -- a run's files, resuming ----------------------------------------------------------------------------------------
def test_a_run_writes_config_checkpoints_and_metrics(straight_run, tiny_cfg):
    out = straight_run
    assert {"config.yaml", "checkpoint.pth", "final_state.pth", "metrics.csv"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.rglob("*") if "tmp" in p.name]
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 2 and ckpt["method"] == "hrnet_dekr" and len(ckpt["history"]) == 2
    assert ckpt["optimizer"]["state"], "the optimizer state is saved for resuming"
    assert ckpt["config"]["MODEL"]["SPEC"]["STAGES"]["NUM_CHANNELS"][0] == [4, 8]
    _assert_same_state(ckpt["model"], _model_state(out / "final_state.pth"))
    assert _epochs(out) == [1, 2]
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    from bupose.config import load_config

    assert load_config(out / "config.yaml").to_dict() == tiny_cfg().to_dict()  # the resolved config reloads


def test_resume_after_an_interrupted_epoch_gives_the_same_weights(straight_run, tiny_cfg, tmp_path):
    """Run B is killed after the first iteration of epoch 2 (its weights have moved past the checkpoint); a new
    Trainer on the same folder resumes from the epoch-1 checkpoint, repeats epoch 2 exactly (same order, same
    augmentation, same optimizer state) and ends with the weights of the straight run A."""
    out = tmp_path / "b"

    def kill(epoch, it):
        if (epoch, it) == (1, 0):
            raise Killed

    with pytest.raises(Killed):
        Trainer(tiny_cfg(), out, on_iteration=kill, progress=False).train()
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert _epochs(out) == [1]
    assert not (out / "final_state.pth").exists()

    resumed = Trainer(tiny_cfg(), out, progress=False)  # TRAIN.AUTO_RESUME is on by default
    assert resumed.start_epoch == 1 and len(resumed.history) == 1
    history = resumed.train()
    assert [h["epoch"] for h in history] == [1, 2]
    _assert_same_state(_model_state(out / "final_state.pth"), _model_state(straight_run / "final_state.pth"))
    assert _epochs(out) == [1, 2]  # each epoch once
    with open(out / "metrics.csv", newline="") as f, open(straight_run / "metrics.csv", newline="") as g:
        for b, a in zip(csv.DictReader(f), csv.DictReader(g)):
            assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-6)


def test_resume_from_a_given_checkpoint_file(straight_run, tiny_cfg, tmp_path):
    """``resume="path"`` (``tools/train.py --resume path``) continues another folder's run in a new folder."""
    first = tmp_path / "first"
    Trainer(tiny_cfg("TRAIN.END_EPOCH", 1), first, progress=False).train()
    out = tmp_path / "second"
    trainer = Trainer(tiny_cfg(), out, resume=first / "checkpoint.pth", progress=False)  # a str works too
    assert trainer.start_epoch == 1
    _assert_same_state(trainer.model.state_dict(), _model_state(first / "checkpoint.pth"))
    trainer.train()
    _assert_same_state(_model_state(out / "final_state.pth"), _model_state(straight_run / "final_state.pth"))
    assert _epochs(out) == [2]


def test_auto_resume_off_starts_fresh(straight_run, tiny_cfg, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(straight_run, out)
    trainer = Trainer(tiny_cfg("TRAIN.AUTO_RESUME", False, "TRAIN.END_EPOCH", 1), out, progress=False)
    assert trainer.start_epoch == 0 and trainer.history == []
    fresh = Trainer(tiny_cfg("TRAIN.END_EPOCH", 1), tmp_path / "empty", progress=False)
    _assert_same_state(trainer.model.state_dict(), fresh.model.state_dict())  # the seed's initialisation
    trainer.train()
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert _epochs(out) == [1]  # the old run's later epochs are not kept next to the new run's


def test_resume_errors(straight_run, tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Trainer(tiny_cfg(), tmp_path / "nothing", resume=True, progress=False)
    with pytest.raises(CheckpointError, match=r"not a bupose training checkpoint.*optimizer"):
        Trainer(tiny_cfg(), tmp_path / "x", resume=str(straight_run / "final_state.pth"), progress=False)
    wide = tiny_cfg("MODEL.SPEC", "{STAGES: {NUM_CHANNELS: [[6, 8], [6, 8, 16], [6, 8, 16, 32]]}}")
    with pytest.raises(CheckpointError, match=r"cannot resume.*HRNet-W4 in the checkpoint, the model is HRNet-W6"):
        Trainer(wide, tmp_path / "y", resume=str(straight_run / "checkpoint.pth"), progress=False)


# -- the log: the run's ETA, TensorBoard ----------------------------------------------------------------------------
def _timed_epochs(monkeypatch, trainer: Trainer, seconds: dict[int, float]) -> None:
    """``trainer``'s epochs take ``seconds[epoch]`` on a fake clock (and train nothing); an epoch not in ``seconds``
    is the process being killed."""
    import bupose.engine.trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def train_epoch(epoch):
        if epoch not in seconds:
            raise Killed
        clock[0] += seconds[epoch]
        return {"epoch": epoch + 1, "lr": 0.01, "loss": 1.0, "time_s": seconds[epoch]}

    monkeypatch.setattr(trainer, "train_epoch", train_epoch)


def _epoch_lines(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if re.match(r"epoch \d+/\d+: ", r.getMessage())]
    caplog.clear()
    return lines


def test_each_epoch_line_gives_the_runs_eta_from_the_epochs_timed_in_this_process(tiny_cfg, tmp_path, monkeypatch,
                                                                                   caplog):
    caplog.set_level(logging.INFO, logger="bupose")
    out = tmp_path / "run"
    trainer = Trainer(tiny_cfg("TRAIN.END_EPOCH", 4), out, progress=False)
    _timed_epochs(monkeypatch, trainer, {0: 60, 1: 180})  # killed in the third epoch
    with pytest.raises(Killed):
        trainer.train()
    lines = _epoch_lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/4: lr=0.01, loss=1, time_s=60")
    assert lines[0].endswith("; ETA 0:03:00 for 3 more epochs")  # 60 s x 3
    assert lines[1].endswith("; ETA 0:04:00 for 2 more epochs")  # mean 120 s x 2

    resumed = Trainer(tiny_cfg("TRAIN.END_EPOCH", 4), out, progress=False)
    assert resumed.start_epoch == 2
    _timed_epochs(monkeypatch, resumed, {2: 30, 3: 30})
    resumed.train()
    lines = _epoch_lines(caplog)
    assert lines[0].startswith("epoch 3/4: ")
    assert lines[0].endswith("; ETA 0:00:30 for 1 more epoch")  # this process's 30 s, not the first run's epochs
    assert lines[1].startswith("epoch 4/4: ") and "ETA" not in lines[1]


def test_training_without_tensorboard_says_so_once(tiny_cfg, tmp_path, monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    caplog.set_level(logging.INFO, logger="bupose")
    trainer = Trainer(tiny_cfg("TRAIN.END_EPOCH", 3), tmp_path / "run", progress=False)
    _timed_epochs(monkeypatch, trainer, {0: 1, 1: 1, 2: 1})
    trainer.train()
    said = [r.getMessage() for r in caplog.records if "tensorboard" in r.getMessage().lower()]
    assert len(said) == 1 and "pip install tensorboard" in said[0]
    assert not (tmp_path / "run" / "tensorboard").exists() and _epochs(tmp_path / "run") == [1, 2, 3]


# -- atomic checkpoints ---------------------------------------------------------------------------------------------
def _failing_save(obj, f, *args, **kwargs):
    """torch.save that writes a partial file, then fails like a full disk."""
    data = b"PK\x03\x04partial"
    if hasattr(f, "write"):
        f.write(data)
    else:
        Path(f).write_bytes(data)
    raise OSError(28, "No space left on device")


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    Trainer(tiny_cfg("TRAIN.END_EPOCH", 1), out, progress=False).train()
    before = read_checkpoint(out / "checkpoint.pth")

    trainer = Trainer(tiny_cfg(), out, progress=False)
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="No space left"):
        trainer.train()  # epoch 2 trains, then its checkpoint cannot be written
    monkeypatch.undo()

    after = read_checkpoint(out / "checkpoint.pth")
    assert after["epoch"] == 1
    _assert_same_state(after["model"], before["model"])
    assert not [p.name for p in out.rglob("*") if "tmp" in p.name], "no partial file is left behind"
    assert _epochs(out) == [1] and read_checkpoint(out / "final_state.pth")["epoch"] == 1  # of the 1-epoch run

    # a save killed outright (no cleanup) leaves a hidden temp file; it is never taken for a checkpoint
    (out / f".checkpoint.pth.tmp{os.getpid() + 1}").write_bytes(b"PK\x03\x04partial")
    resumed = Trainer(tiny_cfg(), out, progress=False)
    assert resumed.start_epoch == 1
    resumed.train()
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 2


def test_save_checkpoint_is_all_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "c.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]
    save_checkpoint({"epoch": 3}, tmp_path / "sub" / "d.pth")  # creates the folder
    assert read_checkpoint(tmp_path / "sub" / "d.pth") == {"epoch": 3}


# -- non-finite losses ----------------------------------------------------------------------------------------------
def _poison_loss(monkeypatch, at_call: int):
    """Make the DEKR loss NaN at its ``at_call``-th call (1-based), as a poisoned batch would."""
    from bupose.methods.dekr.loss import DEKRLoss

    forward, calls = DEKRLoss.forward, [0]

    def poisoned(self, outputs, targets, **kwargs):
        calls[0] += 1
        losses = forward(self, outputs, targets, **kwargs)
        if calls[0] == at_call:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(DEKRLoss, "forward", poisoned)


def test_a_non_finite_loss_stops_training_and_names_the_intact_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _poison_loss(monkeypatch, 4 + 3)  # 4 iterations per epoch: epoch 2, iteration 3
    trainer = Trainer(tiny_cfg(), out, progress=False)
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    msg = str(info.value)
    assert "epoch 2, iteration 3" in msg and "loss=nan" in msg
    assert f"{out / 'checkpoint.pth'} (after epoch 1) is intact" in msg
    assert read_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point()), \
        "no optimiser step is taken with a non-finite loss"
    assert _epochs(out) == [1]
    monkeypatch.undo()
    Trainer(tiny_cfg(), out, progress=False).train()  # and the run resumes from there
    assert _epochs(out) == [1, 2]


def test_a_non_finite_loss_before_any_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    _poison_loss(monkeypatch, 1)
    with pytest.raises(FloatingPointError, match=r"epoch 1, iteration 1 .*No checkpoint was written yet"):
        Trainer(tiny_cfg(), tmp_path / "run", progress=False).train()


def _scale_loss_at(monkeypatch, at_call: int, make):
    """Replace the DEKR loss at its ``at_call``-th call (1-based) by ``make(loss)``."""
    from bupose.methods.dekr.loss import DEKRLoss

    forward, calls = DEKRLoss.forward, [0]

    def changed(self, outputs, targets, **kwargs):
        calls[0] += 1
        losses = forward(self, outputs, targets, **kwargs)
        if calls[0] == at_call:
            losses["loss"] = make(losses["loss"])
        return losses

    monkeypatch.setattr(DEKRLoss, "forward", changed)


def _finite_state(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("make,problem", [
    # a finite loss whose gradient is NaN (0 * d sqrt(u)/du at u = 0): the last step of epoch 2 makes the weights NaN
    (lambda loss: loss + 0.0 * torch.sqrt(loss - loss), r"the model holds NaN or infinite values"),
    # a huge but finite loss: plain SGD's last step of epoch 2 throws the weights far out (finite, > 1e6)
    (lambda loss: loss * 1e12, r"the model's weights exploded: \d+ parameter tensors? with values above 1e\+06"),
])
def test_a_diverged_state_is_never_saved_over_the_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch, make,
                                                                        problem):
    out = tmp_path / "run"
    _scale_loss_at(monkeypatch, 4 + 4, make)  # 4 iterations per epoch: the last iteration of epoch 2
    trainer = Trainer(tiny_cfg("TRAIN.OPTIMIZER", "sgd"), out, progress=False)
    with pytest.raises(FloatingPointError) as info:
        trainer.train()
    msg = str(info.value)
    assert re.search(r"training diverged in epoch 2: after it, " + problem, msg), msg
    assert f"{out / 'checkpoint.pth'} (after epoch 1) is intact" in msg
    kept = read_checkpoint(out / "checkpoint.pth")
    assert kept["epoch"] == 1 and _finite_state(kept["model"])
    assert max(float(v.abs().max()) for v in kept["model"].values() if v.is_floating_point()) < 1e3
    assert _epochs(out) == [1] and not (out / "final_state.pth").exists()
    monkeypatch.undo()
    Trainer(tiny_cfg("TRAIN.OPTIMIZER", "sgd"), out, progress=False).train()  # resuming from it trains normally
    assert _epochs(out) == [1, 2] and _finite_state(_model_state(out / "final_state.pth"))


def test_the_divergence_rule(tiny_cfg, tmp_path):
    """NaN / inf anywhere in the model, its buffers, the EMA or the optimizer state, or a parameter above 1e6."""
    trainer = Trainer(tiny_cfg("TRAIN.EMA", True), tmp_path / "run", progress=False)
    assert trainer.divergence() is None
    with torch.no_grad():
        bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var.fill_(1e9)  # a large buffer alone is not judged
        assert trainer.divergence() is None
        bn.running_var[0] = float("inf")
        assert "the model holds NaN or infinite values" in trainer.divergence()
        bn.running_var.fill_(1.0)
        weight = next(trainer.ema.module.parameters())
        weight[0] = 2e6
        assert "the EMA's weights exploded: 1 parameter tensor with values above 1e+06" in trainer.divergence()
        weight[0] = 0.0
    trainer.optimizer.state[next(trainer.model.parameters())] = {"exp_avg": torch.tensor([float("nan")])}
    assert "the optimizer state holds NaN" in trainer.divergence()


def test_resuming_from_a_checkpoint_with_non_finite_state_is_refused(straight_run, tiny_cfg, tmp_path):
    state = read_checkpoint(straight_run / "checkpoint.pth")
    first = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][first] = state["model"][first] * float("nan")
    save_checkpoint(state, tmp_path / "nan_model.pth")
    with pytest.raises(CheckpointError, match=r"cannot resume from .*nan_model.pth: .*1 of its \d+ weight tensors "
                                              r"hold NaN or infinite values \(" + re.escape(first)):
        Trainer(tiny_cfg(), tmp_path / "a", resume=tmp_path / "nan_model.pth", progress=False)
    state = read_checkpoint(straight_run / "checkpoint.pth")
    moments = next(iter(state["optimizer"]["state"].values()))
    moments["exp_avg"] = moments["exp_avg"] * float("inf")
    save_checkpoint(state, tmp_path / "nan_optimizer.pth")
    with pytest.raises(CheckpointError, match=r"nan_optimizer.pth: 1 tensors of its optimizer / EMA state hold NaN"):
        Trainer(tiny_cfg(), tmp_path / "b", resume=tmp_path / "nan_optimizer.pth", progress=False)


# -- the output folder ----------------------------------------------------------------------------------------------
def test_an_unwritable_output_folder_is_refused_when_the_trainer_is_built(tiny_cfg, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"the output folder .*file/out is not writable \((FileExistsError|"
                                          r"NotADirectoryError)"):
        Trainer(tiny_cfg(), tmp_path / "file" / "out", progress=False)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root ignores the mode: fail the write as a read-only folder would
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(kwargs.get("dir")))

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ConfigError, match=r"the output folder .*read_only is not writable \(PermissionError: "
                                          r"Permission denied\)"):
        Trainer(tiny_cfg(), read_only, progress=False)
    read_only.chmod(0o755)


def test_stale_temporary_checkpoints_are_removed_at_the_next_start(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    stale = [out / f".checkpoint.pth.tmp{dead_pid}", out / f".model_best.pth.tmp{dead_pid}"]
    live = [out / f".checkpoint.pth.tmp{os.getppid()}", out / f".checkpoint.pth.tmp{os.getpid()}"]
    others = [out / "checkpoint.pth.tmp1", out / ".notes.tmp"]  # not save_checkpoint's pattern
    for path in stale + live + others:
        path.write_bytes(b"PK\x03\x04partial")
    Trainer(tiny_cfg(), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in live + others)


# -- MODEL.PRETRAINED -----------------------------------------------------------------------------------------------
def test_pretrained_weights_initialise_the_model(tiny_cfg, tmp_path):
    from bupose import build_model

    donor = build_model(tiny_cfg())
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    # as HRNet ImageNet files: DataParallel prefix, wrapped, plus layers the pose model does not have
    weights = {"module." + k: v for k, v in donor.state_dict().items()}
    weights["module.classifier.weight"] = torch.randn(10, 4)
    torch.save({"state_dict": weights}, tmp_path / "imagenet.pth")
    cfg = tiny_cfg("MODEL.PRETRAINED", tmp_path / "imagenet.pth")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    _assert_same_state(trainer.model.state_dict(), donor.state_dict())

    torch.save({"fc.weight": torch.randn(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="none of its 1 entries"):
        Trainer(tiny_cfg("MODEL.PRETRAINED", tmp_path / "other.pth"), tmp_path / "run2", progress=False)
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(tiny_cfg("MODEL.PRETRAINED", tmp_path / "missing.pth"), tmp_path / "run3", progress=False)


def test_pretrained_backbone_weights_go_into_the_child_that_holds_them(tmp_path):
    from bupose.engine.trainer import load_pretrained

    # as the ImageNet DLA-34 file for the DLA models: the backbone's names without the model's "base." prefix
    model = torch.nn.ModuleDict({"base": torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)),
                                 "head": torch.nn.Conv2d(4, 2, 1)})
    donor = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    torch.save({**donor.state_dict(), "fc.weight": torch.randn(10, 4)}, tmp_path / "dla34.pth")
    head_before = model["head"].weight.clone()
    assert load_pretrained(model, tmp_path / "dla34.pth", ["base"]) == len(donor.state_dict())
    _assert_same_state(model["base"].state_dict(), donor.state_dict())
    assert torch.equal(model["head"].weight, head_before)
    with pytest.raises(CheckpointError, match="none of its"):  # the layer filter applies to the prefixed names
        load_pretrained(model, tmp_path / "dla34.pth", ["head"])


# -- DistributedDataParallel ----------------------------------------------------------------------------------------
DDP_SCRIPT = """\
import os, sys
import torch
torch.set_num_threads(1)

from bupose.config import load_config
from bupose.engine.trainer import Trainer
from bupose.methods.dekr.method import DEKRMethod

_build = DEKRMethod.build_model


def build_model_with_frozen_bn(self):
    model = _build(self)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.train = lambda mode=True, m=m: m  # model.train() leaves batch norm in eval mode
    return model


def poison_the_loss():
    from bupose.methods.dekr.loss import DEKRLoss

    forward = DEKRLoss.forward
    DEKRLoss.forward = lambda self, *a, **k: {**forward(self, *a, **k), "loss": torch.tensor(float("nan"))}


def main():
    DEKRMethod.build_model = build_model_with_frozen_bn
    if os.environ.get("RANK", "0") == os.environ.get("POISON_RANK"):
        poison_the_loss()
    yaml, out_dir, grad_file, *overrides = sys.argv[1:]
    cfg = load_config(yaml, overrides)

    def keep_gradients(epoch, it):
        if (epoch, it) == (0, 0):
            torch.save({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()},
                       grad_file.format(rank=trainer.rank))

    trainer = Trainer(cfg, out_dir, on_iteration=keep_gradients, progress=False)
    assert trainer.world_size == int(os.environ.get("WORLD_SIZE", "1"))
    trainer.train()
    if trainer.distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ddp(script: Path, world: int, args: list[str], timeout: float = 240, **env) -> list[tuple[int, str]]:
    """Run ``script args`` as ``world`` gloo processes on the loopback interface; [(exit code, output)]."""
    port = _free_port()
    procs = []
    for rank in range(world):
        e = subprocess_env(WORLD_SIZE=world, RANK=rank, LOCAL_RANK=rank, LOCAL_WORLD_SIZE=world,
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port, GLOO_SOCKET_IFNAME="lo", **env)
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=e, cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out) for p, out in zip(procs, outs)]


@pytest.mark.slow
def test_ddp_on_two_processes_gives_the_gradients_of_one_process_with_the_whole_batch(tiny_yaml, tmp_path):
    """Two gloo processes with 2 images each against one process with 4, on the same 4 images (the global batch
    sampler gives rank r the r-th half of each global batch; augmentation is seeded per image).

    DDP averages the processes' gradients; the DEKR loss normalises the offset term over the global batch, so the
    average equals the one-process gradient -- except for batch norm, whose batch statistics are per process (a
    2-image batch has other means than a 4-image one; SyncBatchNorm is CUDA-only). So for this test batch norm runs
    in eval mode (running statistics, which start equal everywhere and are not updated): the child script wraps
    the method's build_model so that each BN layer is put in eval mode and its ``train()`` is a no-op. Everything
    else -- sampler, data, loss normalisation, DDP's all-reduce -- is the production code path.

    The DDP run also generates its dataset (a fresh DATASET.ROOT): rank 0 does that while rank 1 waits. Only
    loopback addresses are used (MASTER_ADDR 127.0.0.1, GLOO_SOCKET_IFNAME lo).
    """
    script = tmp_path / "ddp_child.py"
    script.write_text(DDP_SCRIPT)
    root = tmp_path / "data"
    overrides = ["DATASET.ROOT", str(root), "DATASET.SYNTHETIC_TRAIN_IMAGES", "8", "DATASET.SYNTHETIC_VAL_IMAGES",
                 "1", "DATASET.MAX_TRAIN_IMAGES", "4", "TRAIN.END_EPOCH", "1"]
    grads = str(tmp_path / "grads_{rank}_of_%d.pt")

    logs = _run_ddp(script, 2, [str(tiny_yaml), str(tmp_path / "ddp"), grads % 2, *overrides,
                                "TRAIN.IMAGES_PER_GPU", "2"])
    for rank, (code, log) in enumerate(logs):
        assert code == 0, f"rank {rank} failed:\n{log[-4000:]}"

    single = subprocess.run([sys.executable, str(script), str(tiny_yaml), str(tmp_path / "single"), grads % 1,
                             *overrides, "TRAIN.IMAGES_PER_GPU", "4"], env=subprocess_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stdout + single.stderr

    g0, g1 = torch.load(grads.format(rank=0) % 2), torch.load(grads.format(rank=1) % 2)
    ref = torch.load(grads.format(rank=0) % 1)
    assert g0.keys() == g1.keys() == ref.keys()
    total = torch.cat([g.flatten() for g in ref.values()])
    scale = float(total.abs().max())
    assert scale > 1e-3  # the comparison is not between zeros
    for name in ref:
        assert torch.equal(g0[name], g1[name]), f"{name}: the ranks' averaged gradients differ"
        torch.testing.assert_close(g0[name], ref[name], rtol=1e-4, atol=1e-6 * scale, msg=name)
    rel = float(torch.cat([(g0[n] - ref[n]).flatten() for n in ref]).norm() / total.norm())
    # float rounding gives ~1e-8; normalising the offset loss per process instead of globally gives ~1e-4
    assert rel < 1e-6, f"relative gradient difference {rel:.3g}"

    # only rank 0 writes the run's files, once
    assert _epochs(tmp_path / "ddp") == [1]
    assert read_checkpoint(tmp_path / "ddp" / "checkpoint.pth")["epoch"] == 1
    assert (tmp_path / "ddp" / "final_state.pth").is_file()


@pytest.mark.slow
def test_ddp_a_non_finite_loss_in_one_process_stops_every_process(tiny_yaml, tmp_path):
    """Rank 1's loss is NaN at the first iteration: both processes stop there with FloatingPointError (rank 0 says
    the loss was non-finite in another process) instead of rank 0 waiting forever in the gradient all-reduce."""
    script = tmp_path / "ddp_child.py"
    script.write_text(DDP_SCRIPT)
    logs = _run_ddp(script, 2, [str(tiny_yaml), str(tmp_path / "ddp"), str(tmp_path / "g{rank}.pt"),
                                "DATASET.MAX_TRAIN_IMAGES", "8", "TRAIN.IMAGES_PER_GPU", "2"], timeout=120,
                    POISON_RANK=1)
    (code0, log0), (code1, log1) = logs
    assert code0 != 0 and code1 != 0
    assert "FloatingPointError: non-finite loss at epoch 1, iteration 1 in another process" in log0, log0[-3000:]
    assert "FloatingPointError: non-finite loss at epoch 1, iteration 1 (loss=nan" in log1, log1[-3000:]
    assert "No checkpoint was written yet" in log0
    assert not (tmp_path / "ddp" / "checkpoint.pth").exists()


@pytest.mark.slow
def test_torchrun_runs_the_train_tool_on_two_cpu_processes(tiny_yaml, tmp_path):
    """The documented ``torchrun --nproc_per_node N tools/train.py ...`` on the CPU (gloo, loopback only)."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(REPO / "tools" / "train.py"),
         "--cfg", str(tiny_yaml), "--output-dir", str(out), "TRAIN.END_EPOCH", "1", "TRAIN.IMAGES_PER_GPU", "2",
         "DATASET.MAX_TRAIN_IMAGES", "8"],
        env=subprocess_env(GLOO_SOCKET_IFNAME="lo"), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done: ") == 1  # rank 0 reports
    assert _epochs(out) == [1]
    ckpt = read_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 1 and ckpt["history"][0]["epoch"] == 1


# -- overfitting a few images ---------------------------------------------------------------------------------------
def _easy_synthetic_root(root: Path, generate: int = 40, keep: int = 4) -> list[str]:
    """Generate ``generate`` synthetic training images under ``root`` and cut the training annotations down to the
    ``keep`` least crowded ones (at most 2 people, crowd index < 0.2, nobody under 80 px; the least crowded others
    when fewer qualify). Returns their file names."""
    from bupose.data.synthetic import generate_dataset

    generate_dataset(root / "synthetic", generate, 1, workers=1)

    def crowdedness(im, ps):
        hard = len(ps) > 2 or im.get("crowdIndex", 1.0) >= 0.2 or min(a["bbox"][3] for a in ps) < 80
        return not ps, hard, len(ps), im["id"]

    return keep_training_images(root, keep, crowdedness)


@pytest.mark.slow
def test_overfitting_four_images_reaches_a_high_ap_and_mirrored_images_give_mirrored_people(tiny_yaml, tmp_path):
    """Train a small DEKR (HRNet widths 8/16/32/64) at 128 px on 4 easy synthetic images (mild scale / shift / flip
    augmentation so that the test-time view -- short side to 128 -- is among the training views) and test it on the
    same images: AP > 0.5 (0.65-0.72 after these 150 epochs depending on the CPU, 0.80 after 180). This ties the
    whole chain together: targets, loss, training, decoding, the mapping back to image pixels and the evaluation.

    (Without augmentation the model memorises the exact training views and fails on the slightly different test
    view; on crowded images the tiny model misses overlapping people: both keep AP far below 0.5.)

    Then the trained model on mirrored images: most people are the mirrored people (x -> W - 1 - x, left and right
    joints swapped) within a few pixels, and they fit the mirrored ground truth (and would not without the swap).
    """
    import json

    from bupose import Predictor, load_config
    from bupose.data.build import prepare_dataset

    files = _easy_synthetic_root(tmp_path / "data")
    spec = "{STAGES: {NUM_CHANNELS: [[8, 16], [8, 16, 32], [8, 16, 32, 64]]}, HEAD_HEATMAP: {NUM_CHANNELS: 16}, " \
           "HEAD_OFFSET: {NUM_CHANNELS_PERKPT: 8}}"
    cfg = load_config(tiny_yaml, [
        "DATASET.ROOT", str(tmp_path / "data"), "DATASET.SYNTHETIC_TRAIN_IMAGES", "40",
        "DATASET.SYNTHETIC_VAL_IMAGES", "1", "DATASET.TEST_SET", "train", "DATASET.INPUT_SIZE", "128",
        "MODEL.SPEC", spec, "DATASET.MAX_ROTATION", "0", "DATASET.MIN_SCALE", "0.8", "DATASET.MAX_SCALE", "1.0",
        "DATASET.MAX_TRANSLATE", "8", "DATASET.FLIP", "0.5", "DATASET.PHOTOMETRIC", "False",
        "TRAIN.LR", "0.01", "TRAIN.LR_STEP", "[115]", "TRAIN.END_EPOCH", "150", "TRAIN.IMAGES_PER_GPU", "4",
        "TRAIN.VAL_FREQ", "1000", "TEST.FLIP_TEST", "False"])
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    history = trainer.train()  # validates once, after the last epoch
    last = history[-1]
    print(f"overfit: AP {last['AP']:.3f}, AR {last['AR']:.3f}, loss {history[0]['loss']:.4f} -> {last['loss']:.4f}")
    assert last["loss"] < 0.3 * history[0]["loss"]
    assert last["AP"] > 0.5, f"AP {last['AP']:.3f} on the training images {files}"
    assert torch.load(tmp_path / "run" / "model_best.pth", weights_only=True)["AP"] == last["AP"]
    assert json.loads((tmp_path / "run" / "results" / "train_epoch150.json").read_text())

    cfg.TEST.FLIP_TEST = True
    predictor = Predictor(cfg, trainer.model)
    reader = prepare_dataset(cfg, "train", min_people=0)
    flip = np.asarray(reader.spec.flip_index)
    sigmas = np.asarray(reader.spec.sigmas)
    def oks(pred, gt, area):
        vis = gt[:, 2] > 0
        d2 = np.sum((pred[vis, :2] - gt[vis, :2]) ** 2, 1)
        return float(np.mean(np.exp(-d2 / (2 * area * (2 * sigmas[vis]) ** 2))))

    def mirror(kpts, width, swap=True):
        out = (kpts[flip] if swap else kpts).copy()  # left <-> right, x -> W - 1 - x
        out[:, 0] = width - 1 - out[:, 0]
        return out

    oks_all, oks_unswapped, median_errors = [], [], []
    for i in range(len(reader)):
        image = reader.load_image(i)
        width = image.shape[1]
        people = [p["keypoints"] for p in predictor(image) if p["score"] > 0.2]
        mirrored = [p["keypoints"] for p in predictor(np.ascontiguousarray(image[:, ::-1])) if p["score"] > 0.2]
        assert len(people) == len(mirrored) >= 1
        for p in people:
            expect = mirror(p, width)
            q = min(mirrored, key=lambda q: np.abs(q[:, :2] - expect[:, :2]).max())
            median_errors.append(np.median(np.linalg.norm(q[:, :2] - expect[:, :2], axis=1)))
        # the mirrored people fit the mirrored ground truth, and would not without the left/right swap
        ann = reader.get_annotations(i)
        for gt, area in zip(ann.keypoints.astype(float), ann.areas):
            oks_all.append(max(oks(q, mirror(gt, width), area) for q in mirrored))
            oks_unswapped.append(max(oks(q, mirror(gt, width, swap=False), area) for q in mirrored))
    # The official flip test (the mirrored pass shifted by 3 pixels) is not exactly mirror-symmetric, so a person
    # the model is unsure of can come out differently from the two images: most people agree within a few pixels.
    assert np.median(median_errors) < 4, np.round(median_errors, 1)
    assert np.mean(oks_unswapped) < np.mean(oks_all) - 0.2, (np.round(oks_unswapped, 2), np.round(oks_all, 2))
    assert np.mean(oks_all) > 0.7, np.round(oks_all, 2)


def test_quick_validation_during_training_takes_one_plain_pass_on_the_first_images(tiny_cfg, tmp_path, monkeypatch):
    import bupose.engine.evaluate as evaluate

    seen = {}

    def fake_evaluate_split(cfg, model, split, out_file=None, progress=True, limit=0):
        seen.update(scales=list(cfg.TEST.SCALE_FACTOR), flip=cfg.TEST.FLIP_TEST, limit=limit, out=out_file)
        return {"AP": 0.5}

    monkeypatch.setattr(evaluate, "evaluate_split", fake_evaluate_split)
    cfg = tiny_cfg("TRAIN.VAL_IMAGES", 3, "TRAIN.VAL_TTA", False, "TEST.SCALE_FACTOR", "[1.0, 1.25]",
                   "TEST.FLIP_TEST", True)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.validate(0) == {"AP": 0.5}
    assert seen["scales"] == [1.0] and seen["flip"] is False and seen["limit"] == 3
    assert cfg.TEST.SCALE_FACTOR == [1.0, 1.25] and cfg.TEST.FLIP_TEST  # the run's config is not changed
    full = Trainer(tiny_cfg("TEST.SCALE_FACTOR", "[1.0, 1.25]", "TEST.FLIP_TEST", True, "DATASET.MAX_TEST_IMAGES", 5),
                   tmp_path / "run2", progress=False)
    full.validate(1)
    assert seen["scales"] == [1.0, 1.25] and seen["flip"] is True and seen["limit"] == 5
