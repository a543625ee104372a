"""Checkpoints: atomic saving, resuming, and loading weights from bupose or official checkpoints.

A bupose training checkpoint is a dict ``{"model", "optimizer", "epoch", "best_metric", "method", "config",
"history"}``; ``model`` holds the plain (un-wrapped) state_dict. Official checkpoints of a method are recognised by
the method's converter and checked against the model; anything that does not fit is refused with a
:class:`~bupose.errors.CheckpointError` that says what differs.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from bupose.errors import CheckpointError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then rename it over ``path``: a run killed while
    saving leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it the checkpoint
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed save leaves no partial file behind
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file onto the CPU (tensors and plain Python data only). A file with pickled classes is read
    by the restricted reader of official YOLO-Pose checkpoints (its modules become state_dicts; other classes are
    refused)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    # pickled classes (an official YOLO-Pose training checkpoint): the restricted reader, modules as state_dicts
    from bupose.methods.yolo_pose.convert import read_pickled_checkpoint

    return read_pickled_checkpoint(path)


def plain_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (a path or a loaded object): ``{"state_dict": ...}`` / ``{"model": ...}``
    wrappers are opened and a ``module.`` prefix (DataParallel) is removed; anything but a dict of tensors is a
    :class:`CheckpointError`. Used by the methods' converters of official checkpoints."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"a checkpoint must be a dict of tensors, got {type(checkpoint).__name__}")
    checkpoint = unwrap_checkpoint(checkpoint)
    bad = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)][:5]
    if bad:
        raise CheckpointError(f"a checkpoint must be a dict of tensors; entries {bad} are not tensors")
    return checkpoint


def unwrap_checkpoint(checkpoint: Mapping) -> dict:
    """The weights entry of a loaded checkpoint dict: ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers opened,
    a ``module.`` prefix (DataParallel) removed; the entries are not checked."""
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    prefix = "module."
    if checkpoint and all(k.startswith(prefix) for k in checkpoint):
        checkpoint = {k[len(prefix):]: v for k, v in checkpoint.items()}
    return dict(checkpoint)


def has_keys(checkpoint, keys) -> bool:
    """Whether ``checkpoint`` (a path or object, possibly wrapped or ``module.``-prefixed) is a dict of tensors
    holding all of ``keys`` -- how the converters recognise an official layout."""
    try:
        sd = plain_state_dict(checkpoint)
    except CheckpointError:
        return False
    return all(k in sd for k in keys)


def shorten_keys(keys, n: int = 8) -> str:
    keys = sorted(keys)
    if not keys:
        return "none"
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def check_same_architecture(state_dict: Mapping, ours: Mapping) -> None:
    """Raise CheckpointError naming missing / unexpected keys, or the first shape mismatches, between a checkpoint's
    state_dict and the model's (after a method's own, more specific checks)."""
    missing, unexpected = set(ours) - set(state_dict), set(state_dict) - set(ours)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint and model differ in architecture: missing keys: {shorten_keys(missing)}; "
                              f"unexpected keys: {shorten_keys(unexpected)}")
    shapes = [f"{k}: checkpoint {tuple(v.shape)}, model {tuple(ours[k].shape)}"
              for k, v in state_dict.items() if v.shape != ours[k].shape]
    if shapes:
        raise CheckpointError(f"checkpoint and model differ in architecture: "
                              f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:5]))


def unwrap_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of a model, whether or not it is wrapped in DistributedDataParallel / DataParallel."""
    return getattr(model, "module", model).state_dict()


def load_checkpoint(model: torch.nn.Module, checkpoint, strict: bool = True) -> torch.nn.Module:
    """Load weights into ``model`` from a bupose checkpoint, an official checkpoint of the model's method, or a
    state_dict (a path or an already loaded object). Returns ``model``."""
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    where = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    target = getattr(model, "module", model)
    method = getattr(target, "method_name", None)
    if isinstance(raw, dict) and "method" in raw and method and raw["method"] != method:
        raise CheckpointError(f"{where} is a {raw['method']!r} checkpoint; the model is {method!r}")
    convert = getattr(target, "convert_checkpoint", None)
    if convert is None:
        raise CheckpointError(f"{type(target).__name__} has no convert_checkpoint(); cannot check {where}")
    try:
        state_dict = convert(raw)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    target.load_state_dict(state_dict, strict=strict)
    return model
