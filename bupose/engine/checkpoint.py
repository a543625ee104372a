"""Checkpoints: atomic saving, resuming, and loading weights from bupose or official checkpoints.

Reading is guarded against silent corruption: an empty file, a text file or anything that is neither a zip archive
(``torch.save``) nor a pickle (the legacy format) is refused saying what the file is; a zip archive is checked before
``torch.load`` (its central directory must be there -- a truncated file lacks it -- and every member must pass its
CRC-32 check, which ``torch.load`` does not do: ~0.1 s per 300 MB); weights holding NaN or infinite values are refused
by :func:`load_checkpoint`. Interrupted saves leave ``.<name>.tmp<pid>`` files that
:func:`remove_stale_temporaries` deletes once their process is gone.

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
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from bupose.errors import CheckpointError, ConfigError

ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local header: the format of torch.save since torch 1.6
PICKLE_PROTOCOL = 0x80  # the first byte of a pickle of protocol >= 2: the legacy torch.save format
TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")  # save_checkpoint's temporary files: .<name>.tmp<pid>


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
    check_checkpoint_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise CheckpointError(f"cannot read checkpoint {path}: {_unreadable(path, e)}") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        refusal = f"it pickles the global {found.group(1) if found else '(unknown)'}"
    except Exception as e:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"cannot read checkpoint {path}: {_unreadable(path, e)}") from None
    return read_pickled_checkpoint(path, refusal)


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Refuse, before ``torch.load``, a file that cannot hold good weights: an empty one, and a zip archive that is
    truncated (no central directory) or damaged (a member fails its CRC-32 check: ``torch.load`` would return the
    damaged bytes as weights). Other formats are left to ``torch.load``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes); an interrupted copy, "
                              f"download or save?")
    if head == ZIP_MAGIC:
        _check_zip_archive(path, size)


def _check_zip_archive(path: Path, size: int) -> None:
    """CheckpointError when the zip archive ``path`` is truncated or a member's data does not match its CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every member and compares its CRC-32
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"cannot read checkpoint {path}: it is a truncated or damaged zip archive "
                              f"({size} bytes; {e}): the directory at the end of a complete archive is missing "
                              f"or unreadable; an interrupted copy, download or save?") from None
    except (OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: it is a damaged zip archive ({size} bytes; "
                              f"{type(e).__name__}: {e})") from None
    if damaged is not None:
        raise CheckpointError(f"cannot read checkpoint {path}: it is corrupted: the data of its member {damaged!r} "
                              f"does not match the CRC-32 checksum written with it (the file was changed after it "
                              f"was saved: a disk, copy or transfer error); refusing to load damaged weights")


def _unreadable(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed on ``path``: what the file is, and the loader's reason where it helps."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:len(ZIP_MAGIC)] == ZIP_MAGIC:
        return f"it is a zip archive but not a torch checkpoint ({_torch_reason(error)})"
    if head[:1] == bytes([PICKLE_PROTOCOL]):
        return f"it is a pickle file (the legacy torch.save format) that cannot be loaded ({_torch_reason(error)})"
    text = _text_start(head)
    if text is not None:
        return f"it is a text file, not a checkpoint (it starts with {text!r})"
    return (f"it is not a torch checkpoint: neither a zip archive (torch.save) nor a pickle (legacy torch.save); "
            f"its first bytes are {head[:8].hex(' ')}")


def _torch_reason(error: Exception) -> str:
    """The useful part of a torch.load error: the unpickler's reason without the weights_only advice."""
    message = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", message, re.S)
    if found:
        message = found.group(1)
    message = message.strip().splitlines()[0] if message.strip() else ""
    if isinstance(error, EOFError) or "unexpected EOF" in message:
        return f"the file ends early: truncated{'; ' + message if message else ''}"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _text_start(head: bytes) -> str | None:
    """The first line of ``head`` (up to 60 characters) when it looks like text (UTF-8, printable, no NUL)."""
    if not head or b"\0" in head:
        return None
    text = head.decode("utf-8", errors="replace")
    if text[-1] == "\ufffd":  # a multi-byte character cut at the end of the sample
        text = text.rstrip("\ufffd")
    printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
    if not text or "\ufffd" in text or printable < 0.95 * len(text):
        return None
    return text.lstrip().splitlines()[0][:60] if text.strip() else text[:60]


def non_finite_entries(tree, prefix: str = "") -> list[str]:
    """The names (``a.b.c``) of the floating-point tensors in ``tree`` (a tensor, or dicts / lists of them) that
    hold NaN or infinite values; meta tensors and integer tensors are skipped."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not tree.is_meta and not bool(torch.isfinite(tree).all()):
            return [prefix or "tensor"]
        return []
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    return [name for k, v in items for name in non_finite_entries(v, f"{prefix}.{k}" if prefix else str(k))]


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.tmp<pid>`` files that :func:`save_checkpoint` left in ``folder`` when its process was
    killed while saving, for processes that no longer run. Returns the removed files."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        found = TEMPORARY.match(path.name)
        if found and path.is_file() and not _process_alive(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts as alive; on Windows, every process)."""
    if pid == os.getpid() or os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid: keep the file
        return True
    return True


def ensure_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` when missing and write (then delete) a probe file in it: a read-only or unusable folder is
    a :class:`~bupose.errors.ConfigError` naming it, raised before any work whose results would be lost."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".bupose-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"the {what} {folder} is not writable ({type(e).__name__}: {e.strerror or e}); choose "
                          f"another folder (OUTPUT_DIR, --output-dir) or fix its permissions") from None
    return folder


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
    check_finite(state_dict, where)
    target.load_state_dict(state_dict, strict=strict)
    return model


def check_finite(state_dict: Mapping, where: str = "checkpoint") -> None:
    """CheckpointError naming the tensors of ``state_dict`` that hold NaN or infinite values."""
    bad = non_finite_entries(state_dict)
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} of its {len(state_dict)} weight tensors hold NaN or infinite "
                              f"values ({shorten_keys(bad)}): the file is damaged or was saved from a diverged "
                              f"training run; refusing to load it")
