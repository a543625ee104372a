"""Official YOLO-Pose checkpoints (Maji et al., CVPRW 2022; TexasInstruments/edgeai-yolov5, branch ``yolo-pose``) to
bupose.

:class:`~bupose.methods.yolo_pose.model.YOLOPose` uses the official parameter names, so converting a state_dict is
choosing it, casting it to float32 and checking that it fits the model, with errors that say what differs.

**Pickled official checkpoints.** The official ``train.py`` saves ``torch.save({'epoch', 'best_fitness',
'training_results', 'model', 'ema', 'updates', 'optimizer', 'wandb_id'})`` where ``model`` and ``ema`` are pickled
``models.yolo.Model`` objects in fp16 (the released files: ``ema`` None and the EMA weights in ``model``). Unpickling
them normally needs the official code on the path and runs whatever callables the pickle names.
:func:`read_pickled_checkpoint` instead uses a restricted unpickler: every class of the official packages
(``models.*``, ``utils.*``) becomes an empty stand-in ``nn.Module`` subclass (no code of the checkpoint runs; the
stand-ins only hold the pickled submodules, parameters and buffers), and besides those only an allow-list resolves:
tensor / parameter / storage rebuilding, ``torch.nn`` module classes, dtypes, ``collections.OrderedDict``, sets,
numpy arrays and scalars, paths. Any other global -- in particular any other callable, which a malicious pickle
would call while loading -- is refused with a :class:`~bupose.errors.CheckpointError` naming it. The method class
declares it as its pickled-checkpoint reader (the checkpoint hook of :mod:`bupose.methods`), which
:func:`bupose.engine.checkpoint.read_checkpoint` asks when a file pickles classes.

Like the official loader (``models/experimental.py``: ``ckpt['ema' if ckpt.get('ema') else 'model']``), the EMA
weights are used when the checkpoint has them.
"""
from __future__ import annotations

import _compat_pickle
import builtins
import importlib
import os
import pickle
import re
import types
import warnings
from typing import Any, Mapping

import torch
import torch.nn as nn

from bupose.engine.checkpoint import read_checkpoint, shorten_keys
from bupose.errors import CheckpointError

HEAD = 33  #: layer index of the head in the official 4-level (P6) models
#: keys every official YOLO-Pose (P6) state_dict has: the head's first detection conv and its anchors
SIGNATURE_KEYS = (f"model.{HEAD}.m.0.weight", f"model.{HEAD}.anchors")
_OFFICIAL_PACKAGES = ("models", "utils")


# ---------------------------------------------------------------------------------------------------------------
# restricted unpickling
# ---------------------------------------------------------------------------------------------------------------
class OfficialStub(nn.Module):
    """Stand-in for a class of the official code found in a pickle. It holds what was pickled (its ``__dict__``:
    submodules, parameters, buffers, attributes) and has no behaviour; ``official_name`` is the pickled class
    path (e.g. ``models.common.Focus``)."""

    official_name = ""

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.official_name} is a stand-in read from a pickled checkpoint; it cannot run")


_STUBS: dict[str, type] = {}


def _stub_class(module: str, name: str) -> type:
    path = f"{module}.{name}"
    if path not in _STUBS:
        _STUBS[path] = type(name, (OfficialStub,), {"official_name": path, "__module__": __name__,
                                                    "__qualname__": f"OfficialStub[{path}]"})
    return _STUBS[path]


_TORCH_FUNCTIONS = {
    "torch._utils": {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                     "_rebuild_parameter_with_state"},
    "torch._tensor": {"_rebuild_from_type", "_rebuild_from_type_v2"},
    "torch.nn.parameter": {"Parameter"},
    "torch": {"Size", "Tensor", "device"},
}
_PLAIN = {
    "collections": {"OrderedDict", "defaultdict", "deque"},
    "builtins": {"set", "frozenset", "slice", "range", "complex", "bytearray", "bytes", "tuple", "list", "dict",
                 "int", "float", "bool", "str", "object"},
    "_codecs": {"encode"},  # protocol 2 pickles bytes (e.g. numpy array data) as _codecs.encode(str, 'latin1')
    "copyreg": {"_reconstructor"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"},
    "argparse": {"Namespace"},
}
_NUMPY = {"multiarray._reconstruct", "multiarray.scalar", "ndarray", "dtype"}


def _numpy_global(module: str, name: str):
    import numpy as np

    sub = module[len("numpy"):].lstrip(".")
    sub = re.sub(r"^_?core\.?", "", sub)
    if f"{sub}.{name}".strip(".") in _NUMPY:
        target = np if not sub else importlib.import_module("numpy._core." + sub if hasattr(np, "_core")
                                                             else "numpy.core." + sub)
        return getattr(target, name)
    if module == "numpy.dtypes" and name.endswith("DType"):  # numpy >= 1.25 pickles dtypes by their class
        return getattr(importlib.import_module("numpy.dtypes"), name)
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that maps official classes to stand-ins and resolves only an allow-list of globals (see the
    module docstring); anything else raises ``pickle.UnpicklingError`` naming the global."""

    def find_class(self, module: str, name: str):
        # protocol 2 names Python 2 modules (``__builtin__.set``, ``copy_reg``): map them as pickle itself does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        top = module.split(".")[0]
        if top in _OFFICIAL_PACKAGES:
            return _stub_class(module, name)
        found = None
        if module.startswith("torch.nn.modules."):
            obj = getattr(importlib.import_module(module), name, None)
            found = obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None
        elif name in _TORCH_FUNCTIONS.get(module, ()):
            found = getattr(importlib.import_module(module), name, None)
        elif module in ("torch", "torch.storage") and "Storage" in name:
            obj = getattr(importlib.import_module(module), name, None)
            found = obj if isinstance(obj, type) else None
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            found = getattr(torch, name)
        elif top == "numpy":
            found = _numpy_global(module, name)
        elif name in _PLAIN.get(module, ()):
            found = getattr(builtins if module == "builtins" else importlib.import_module(module), name)
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name} (not on the allow-list of "
                                         f"the restricted reader)")
        return found


def _restricted_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("bupose_restricted_pickle")
    mod.Unpickler = RestrictedUnpickler
    mod.load = lambda f, **kwargs: RestrictedUnpickler(f, **kwargs).load()
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def _focus_slice_order_fix(module: nn.Module, sd: dict) -> None:
    """An official ``Focus`` pickled without its ``contract`` submodule space-to-depths by slicing, in the block
    order (row, col) parity ``00, 10, 01, 11``; bupose (and ``Contract``) use ``00, 01, 10, 11``. Swap the two
    middle blocks of the input channels of the conv after it so that the weights fit bupose's order."""
    for name, sub in module.named_modules():
        if (isinstance(sub, OfficialStub) and sub.official_name.endswith(".Focus")
                and "contract" not in sub._modules and "conv_slice" not in sub._modules):
            key = f"{name}.conv.conv.weight" if name else "conv.conv.weight"
            if key in sd:
                w = sd[key]
                c = w.shape[1] // 4
                sd[key] = torch.cat((w[:, :c], w[:, 2 * c:3 * c], w[:, c:2 * c], w[:, 3 * c:]), 1)


def module_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of a module (an official model read by :func:`read_pickled_checkpoint`, or any
    ``nn.Module``), floating tensors as float32."""
    sd = {k: (v.detach().float() if v.is_floating_point() else v.detach()) for k, v in module.state_dict().items()}
    _focus_slice_order_fix(module, sd)
    return sd


def _drop_hooks(obj: Any) -> None:
    """Empty the hook dicts of every module read from a pickle (state_dict() would call them)."""
    if isinstance(obj, nn.Module):
        for sub in obj.modules():
            for name, value in vars(sub).items():
                if name.endswith("_hooks") and isinstance(value, dict):
                    value.clear()
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _drop_hooks(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _drop_hooks(v)


def to_plain(obj: Any) -> Any:
    """``obj`` with every ``nn.Module`` (in dicts, lists, tuples) replaced by its float32 state_dict."""
    if isinstance(obj, nn.Module):
        return module_state_dict(obj)
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def read_pickled_checkpoint(path: str | os.PathLike, plain: bool = True) -> Any:
    """Load a checkpoint that holds pickled objects of the official code (see the module docstring), on the CPU.

    With ``plain`` (default) every module in it becomes its float32 state_dict, so an official training checkpoint
    reads as ``{'epoch': ..., 'model': state_dict, 'ema': state_dict or None, ...}``; otherwise the stand-in
    objects are returned. Raises CheckpointError for unreadable files and for globals outside the allow-list.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SourceChangeWarning of legacy-format files
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module())
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is a checkpoint error
        raise CheckpointError(f"cannot read checkpoint {os.fspath(path)}: {type(e).__name__}: {e}") from None
    _drop_hooks(obj)
    return to_plain(obj) if plain else obj


# ---------------------------------------------------------------------------------------------------------------
# choosing and checking the state_dict
# ---------------------------------------------------------------------------------------------------------------
def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _select(checkpoint, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state_dict in a path / module / state_dict / bupose checkpoint / official checkpoint."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return _select(read_checkpoint(checkpoint), os.fspath(checkpoint))
    if isinstance(checkpoint, nn.Module):
        return module_state_dict(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{where} must be a state_dict or a checkpoint dict, got {type(checkpoint).__name__}")
    if _is_state_dict(checkpoint):
        return dict(checkpoint)
    if "method" in checkpoint and "model" in checkpoint:  # bupose (its "ema" is {"model", "updates"}: resume only)
        return _select(checkpoint["model"], f"{where}['model']")
    ema = checkpoint.get("ema")
    if isinstance(ema, nn.Module) or _is_state_dict(ema):  # the official choice: the EMA when there is one
        return _select(ema, f"{where}['ema']")
    for key in ("model", "state_dict"):
        if checkpoint.get(key) is not None:
            return _select(checkpoint[key], f"{where}[{key!r}]")
    bad = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)][:5]
    raise CheckpointError(f"{where} is neither a state_dict (entries {bad} are not tensors) nor a checkpoint with "
                          f"'model' / 'ema' / 'state_dict'")


def _kpt_final_key(sd: Mapping, level: int = 0) -> str | None:
    """The key of the last (1x1) conv weight of the keypoint branch of ``level``."""
    plain = f"model.{HEAD}.m_kpt.{level}.weight"
    if plain in sd:
        return plain
    idx = [int(m.group(1)) for k in sd if (m := re.fullmatch(rf"model\.{HEAD}\.m_kpt\.{level}\.(\d+)\.weight", k))]
    return f"model.{HEAD}.m_kpt.{level}.{max(idx)}.weight" if idx else None


def _num_blocks(sd: Mapping, layer: int) -> int:
    return len({m.group(1) for k in sd if (m := re.match(rf"model\.{layer}\.m\.(\d+)\.", k))})


def describe(sd: Mapping) -> dict:
    """What an official-layout state_dict is: ``num_keypoints``, ``num_classes``, ``num_anchors``, ``lite``,
    ``dw_conv_kpt``, ``stem_channels`` (None where it cannot tell)."""
    a = sd.get(f"model.{HEAD}.anchors")
    na = int(a.shape[1]) if a is not None and a.ndim == 3 else None
    det, kpt = sd.get(f"model.{HEAD}.m.0.weight"), _kpt_final_key(sd)
    stem = sd.get("model.0.conv.conv.weight")
    return {"num_anchors": na,
            "num_classes": det.shape[0] // na - 5 if det is not None and na else None,
            "num_keypoints": sd[kpt].shape[0] // (3 * na) if kpt and na else None,
            "dw_conv_kpt": None if kpt is None else not kpt.endswith(".m_kpt.0.weight"),
            "lite": "model.0.conv_slice.conv.weight" in sd,
            "stem_channels": int(stem.shape[0]) if stem is not None else None}


def check_compatible(sd: Mapping, model: nn.Module) -> None:
    """Raise CheckpointError saying what differs between the official-layout ``sd`` and ``model``."""
    if f"model.{HEAD}.m.0.weight" not in sd:
        heads = sorted({int(m.group(1)) for k in sd if (m := re.fullmatch(r"model\.(\d+)\.m\.0\.weight", k))
                        and f"model.{m.group(1)}.anchors" in sd})
        if heads:
            raise CheckpointError(f"not a 4-level (P6) YOLO-Pose checkpoint: its head is layer model.{heads[0]}, "
                                  f"YOLO-Pose's is model.{HEAD}")
        from bupose.methods import method_label, official_method_of

        other = official_method_of(sd)  # another method's official checkpoint is named (bupose.methods' hook)
        what = f"a {method_label(other)} checkpoint" if other else "not a YOLO-Pose checkpoint"
        raise CheckpointError(f"{what}: it lacks model.{HEAD}.m.0.weight (the YOLO-Pose head); its keys: "
                              f"{shorten_keys(sd, 5)}")
    if _kpt_final_key(sd) is None:
        raise CheckpointError(f"a YOLO detection checkpoint without a keypoint head (no model.{HEAD}.m_kpt.* keys)")
    ours = model.state_dict()
    got, want = describe(sd), describe(ours)
    if got["num_anchors"] is not None and got["num_anchors"] != want["num_anchors"]:
        raise CheckpointError(f"the checkpoint has {got['num_anchors']} anchors per level, the model "
                              f"{want['num_anchors']} (MODEL.SPEC.ANCHORS)")
    if got["num_keypoints"] != want["num_keypoints"]:
        raise CheckpointError(f"the checkpoint has K={got['num_keypoints']} keypoints, the model expects "
                              f"K={want['num_keypoints']} (the dataset's keypoints)")
    if got["num_classes"] != want["num_classes"]:
        raise CheckpointError(f"the checkpoint has {got['num_classes']} class(es), the model "
                              f"{want['num_classes']} (MODEL.SPEC.NUM_CLASSES)")
    for field, spec, words in (("lite", "LITE", ("the lite (ti_lite) stem", "the Focus stem")),
                               ("dw_conv_kpt", "DW_CONV_KPT", ("the depthwise keypoint branch",
                                                               "a single 1x1 keypoint conv"))):
        if got[field] != want[field]:
            raise CheckpointError(f"the checkpoint has {words[0] if got[field] else words[1]}, the model "
                                  f"{words[0] if want[field] else words[1]} (MODEL.SPEC.{spec})")
    missing, unexpected = set(ours) - set(sd), set(sd) - set(ours)
    if missing or unexpected:
        depth = [f"model.{i} has {_num_blocks(sd, i)} bottleneck(s) in the checkpoint, {_num_blocks(ours, i)} in "
                 f"the model" for i in range(HEAD) if _num_blocks(sd, i) != _num_blocks(ours, i)]
        hint = f" -- a different depth (MODEL.SPEC.DEPTH_MULTIPLE): {depth[0]}" if depth else ""
        raise CheckpointError(f"checkpoint and model differ in architecture{hint}; missing keys: "
                              f"{shorten_keys(missing, 6)}; unexpected keys: {shorten_keys(unexpected, 6)}")
    for k, v in sd.items():
        if v.shape != ours[k].shape:
            hint = ""
            if got["stem_channels"] != want["stem_channels"]:
                hint = (f" -- a different width (MODEL.SPEC.WIDTH_MULTIPLE): the stem has {got['stem_channels']} "
                        f"channels in the checkpoint, {want['stem_channels']} in the model")
            raise CheckpointError(f"checkpoint and model differ in shape{hint}; first mismatch: {k}: checkpoint "
                                  f"{tuple(v.shape)}, model {tuple(ours[k].shape)}")


def official_to_bupose(checkpoint, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A YOLO-Pose state_dict (float32) for :class:`~bupose.methods.yolo_pose.model.YOLOPose` from

    * a bupose checkpoint ``{"model": state_dict, "method": ...}`` (its ``model``),
    * a state_dict with the official keys (possibly with DataParallel's ``module.`` prefix),
    * an official training checkpoint ``{"model", "ema", ...}`` -- its ``ema`` when set, else ``model`` -- holding
      official model objects (read by :func:`read_pickled_checkpoint`) or their state_dicts,
    * or a path to any of these.

    With ``model``, the state_dict is checked against it (:func:`check_compatible`). Raises CheckpointError.
    """
    sd = _select(checkpoint)
    prefix = "module."
    if all(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    if model is not None:
        check_compatible(sd, getattr(model, "module", model))
    elif f"model.{HEAD}.m.0.weight" not in sd:
        raise CheckpointError(f"not a YOLO-Pose checkpoint: it lacks model.{HEAD}.m.0.weight; its keys: "
                              f"{shorten_keys(sd, 5)}")
    return sd


def load_official(model: nn.Module, checkpoint) -> nn.Module:
    """Load an official (or bupose) YOLO-Pose checkpoint into ``model``, checked; returns ``model``."""
    getattr(model, "module", model).load_state_dict(official_to_bupose(checkpoint, model))
    return model


__all__ = ["OfficialStub", "RestrictedUnpickler", "check_compatible", "describe", "load_official",
           "module_state_dict", "official_to_bupose", "read_pickled_checkpoint", "to_plain"]
