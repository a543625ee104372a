"""Checkpoints: atomic saving, resuming, and loading weights from bupose or official checkpoints.

A bupose training checkpoint is a dict ``{"model", "optimizer", "epoch", "best_metric", "method", "config",
"history"}``; ``model`` holds the plain (un-wrapped) state_dict. Official checkpoints of a method are recognised by
the method's converter and checked against the model; anything that does not fit is refused with a
:class:`~bupose.errors.CheckpointError` that says what differs.

This module knows no method: it uses the checkpoint hook that :mod:`bupose.methods` documents -- the model class's
``method_name`` and ``convert_checkpoint``, and, for files that need them, the method classes' pickled-checkpoint
readers and official key signatures, found through ``bupose.methods.METHODS`` (imported lazily). The helpers the
methods' converters share (unwrapping, key checks, short key lists) are here too.
"""
from __future__ import annotations

import os
import pickle
import re
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
    by a method's restricted reader (:func:`read_pickled_checkpoint`; the official YOLO-Pose training checkpoints:
    their modules become state_dicts, other classes are refused)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        refusal = f"it pickles the global {found.group(1) if found else '(unknown)'}"
    except Exception as e:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    return read_pickled_checkpoint(path, refusal)


def read_pickled_checkpoint(path: str | os.PathLike, refusal: str = "it pickles classes") -> Any:
    """Read a file that pickles classes with the restricted readers the methods declare (the method classes'
    ``read_pickled_checkpoint``, see :mod:`bupose.methods`), the first that accepts it. Raises the reader's
    CheckpointError when one reader refuses it, one naming every reader when several do, and one with ``refusal``
    (why ``weights_only`` loading failed) when no method declares a reader."""
    from bupose.methods import pickled_checkpoint_readers

    readers = pickled_checkpoint_readers()
    if not readers:
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)}: {refusal}, which loading tensors only "
                              f"refuses, and no method reads pickled classes")
    errors = []
    for name, reader in readers:
        try:
            return reader(path)
        except CheckpointError as e:
            errors.append((name, e))
    if len(errors) == 1:
        raise errors[0][1]
    raise CheckpointError(f"cannot read checkpoint {os.fspath(path)}: no method's reader accepts it: "
                          + "; ".join(f"{name}: {e}" for name, e in errors))


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
    if checkpoint and all(isinstance(k, str) and k.startswith(prefix) for k in checkpoint):
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


def official_method_of(checkpoint) -> str | None:
    """The MODEL.NAME of the method whose official key layout ``checkpoint`` (a loaded object, possibly wrapped or
    ``module.``-prefixed) has, from the method classes' ``official_keys`` (:mod:`bupose.methods`); None when it has
    none's. Imports every method."""
    if not isinstance(checkpoint, Mapping):
        return None
    from bupose.methods import official_method_of as method_of

    return method_of(unwrap_checkpoint(checkpoint))


def _checkpoint_hook(target: torch.nn.Module, where: str):
    """The model's ``(method_name, convert_checkpoint)``; CheckpointError naming the hook when it lacks them."""
    method, convert = getattr(target, "method_name", None), getattr(target, "convert_checkpoint", None)
    lacks = [what for what, ok in (("a class attribute method_name", isinstance(method, str) and method),
                                   ("a method convert_checkpoint(checkpoint) -> state_dict", callable(convert)))
             if not ok]
    if lacks:
        raise CheckpointError(f"{type(target).__name__} has no checkpoint hook: it lacks {' and '.join(lacks)} "
                              f"(see bupose.methods); cannot check {where}")
    return method, convert


def load_checkpoint(model: torch.nn.Module, checkpoint, strict: bool = True) -> torch.nn.Module:
    """Load weights into ``model`` from a bupose checkpoint, an official checkpoint of the model's method, or a
    state_dict (a path or an already loaded object). Returns ``model``.

    The model class's checkpoint hook (``method_name``, ``convert_checkpoint``; see :mod:`bupose.methods`) converts
    and checks; a bupose checkpoint of another method, or an official checkpoint recognised as another method's,
    is refused naming both."""
    raw = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    where = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    target = getattr(model, "module", model)
    method, convert = _checkpoint_hook(target, where)
    if isinstance(raw, dict) and "method" in raw and raw["method"] != method:
        raise CheckpointError(f"{where} is a {raw['method']!r} checkpoint; the model is {method!r}")
    try:
        state_dict = convert(raw)
    except CheckpointError as e:
        other = official_method_of(raw) if not (isinstance(raw, dict) and "method" in raw) else None
        if other is not None and other != method:
            from bupose.methods import method_label

            raise CheckpointError(f"{where} is an official {method_label(other)} checkpoint; the model is "
                                  f"{method!r}: {e}") from None
        raise CheckpointError(f"{where}: {e}") from None
    target.load_state_dict(state_dict, strict=strict)
    return model
