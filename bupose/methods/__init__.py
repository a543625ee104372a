"""Methods: a method owns its model, training targets, loss and decoding; everything else is shared.

``METHODS`` maps ``MODEL.NAME`` to the method class (as an import path). A method class is built from the config and
provides::

    name                      its MODEL.NAME (class attribute)
    spec                      the KeypointSpec of the dataset
    build_model()             the nn.Module (outputs a dict of tensors)
    train_dataset()           torch Dataset of dicts of tensors (image + targets), with set_epoch(epoch)
    loss_module()             nn.Module: (outputs, batch) -> {"loss": scalar to optimise, other named terms}
    decoder()                 the test-time decoder used by bupose.inference.tta

**The checkpoint hook.** :func:`bupose.engine.checkpoint.load_checkpoint` knows no method; it asks the model and,
through ``METHODS`` (imported lazily, only when a file needs it), the method classes. The *model class* (every
class that ``build_model()`` returns) defines, at class level::

    method_name: str                                        the MODEL.NAME it belongs to, equal to the ``name``
                                                            of the method class that builds it (the trainer tags
                                                            checkpoints with that name): a bupose checkpoint of
                                                            another method is refused naming both. Module classes
                                                            built by several MODEL.NAMEs need one subclass per
                                                            name (as AdaptivePose / DLAAdaptivePose)
    convert_checkpoint(self, checkpoint: Mapping)           the state_dict for this model from a loaded bupose or
        -> dict[str, Tensor]                                official checkpoint, checked against the model;
                                                            raises CheckpointError saying what does not fit

A model class without them is refused with a CheckpointError that names the hook. The *method class* may declare
(class attributes, all optional)::

    title: str                                              a name for messages, e.g. "DEKR"
    official_keys: tuple[str, ...]                          keys every official state_dict of the method has:
                                                            :func:`official_method_of` recognises such a
                                                            checkpoint, and a refusal names its method
    read_pickled_checkpoint(path) -> object                 (staticmethod) a restricted reader for official files
                                                            that pickle classes of the official code (read_checkpoint
                                                            asks it when ``torch.load(weights_only=True)`` meets
                                                            globals it does not support); it must refuse anything
                                                            it does not know with a CheckpointError

Helpers shared by the converters (unwrapping, key checks, short key lists) live in :mod:`bupose.engine.checkpoint`;
a converter imports no other method's converter.
"""
from __future__ import annotations

from typing import Any, Callable

from bupose.errors import ConfigError


#: MODEL.NAME -> "module:class" (imported on first use, so a method's dependencies load only when it is used)
METHODS = {
    "hrnet_dekr": "bupose.methods.dekr.method:DEKRMethod",
    "yolo_pose": "bupose.methods.yolo_pose.method:YOLOPoseMethod",
    "hrnet_adaptive_pose": "bupose.methods.adaptive_pose.method:AdaptivePoseMethod",
    "dla_adaptive_pose": "bupose.methods.adaptive_pose.method:DLAAdaptivePoseMethod",
    "topdown_hrnet": "bupose.methods.topdown.method:TopDownHRNetMethod",
    "topdown_resnet": "bupose.methods.topdown.method:TopDownResNetMethod",
    "topdown_vit": "bupose.methods.topdown.vitpose:TopDownViTMethod",
    "topdown_cspnext": "bupose.methods.topdown.rtmpose:TopDownCSPNeXtMethod",
}


def method_class(name: str):
    """The method class of ``MODEL.NAME`` ``name`` (its module imported now); ConfigError for unknown names."""
    if name not in METHODS:
        import difflib

        hint = difflib.get_close_matches(name, list(METHODS), n=1)
        raise ConfigError(f"MODEL.NAME {name!r} is not a known method; known: {sorted(METHODS)}"
                          + (f"; did you mean {hint[0]!r}?" if hint else ""))
    import importlib

    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(cfg):
    """The method object for ``cfg.MODEL.NAME``."""
    return method_class(cfg.MODEL.NAME)(cfg)


def method_label(name: str) -> str:
    """``"<title> (<MODEL.NAME>)"`` for messages, e.g. ``"DEKR (hrnet_dekr)"``; the bare name for an unknown method
    or one without a ``title``."""
    title = getattr(method_class(name), "title", "") if name in METHODS else ""
    return f"{title} ({name})" if title else name


def official_method_of(state_dict: Any) -> str | None:
    """The MODEL.NAME of the first method (in ``METHODS`` order) whose ``official_keys`` are all keys of
    ``state_dict`` (a plain mapping; see :func:`bupose.engine.checkpoint.unwrap_checkpoint`), else None. Imports
    every method."""
    if not hasattr(state_dict, "keys"):
        return None
    keys = set(state_dict.keys())
    for name in METHODS:
        official = getattr(method_class(name), "official_keys", ())
        if official and keys.issuperset(official):
            return name
    return None


def pickled_checkpoint_readers() -> list[tuple[str, Callable[..., Any]]]:
    """``(MODEL.NAME, reader)`` for every distinct ``read_pickled_checkpoint`` the method classes declare (two
    names of one class count once), in ``METHODS`` order. Imports every method."""
    found: list[tuple[str, Callable[..., Any]]] = []
    for name in METHODS:
        reader = getattr(method_class(name), "read_pickled_checkpoint", None)
        if reader is not None and all(reader is not r for _, r in found):
            found.append((name, reader))
    return found
