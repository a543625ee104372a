"""Methods: a method owns its model, training targets, loss and decoding; everything else is shared.

``METHODS`` maps ``MODEL.NAME`` to the method class (as an import path). A method class is built from the config and provides::

    spec                      the KeypointSpec of the dataset
    build_model()             the nn.Module (outputs a dict of tensors)
    train_dataset()           torch Dataset of dicts of tensors (image + targets), with set_epoch(epoch)
    loss(outputs, batch)      {"loss": scalar to optimise, other named terms}
    decoder()                 the test-time decoder used by bupose.inference.tta
"""
from __future__ import annotations

from bupose.errors import ConfigError


#: MODEL.NAME -> "module:class" (imported on first use, so a method's dependencies load only when it is used)
METHODS = {
    "hrnet_dekr": "bupose.methods.dekr.method:DEKRMethod",
    "yolo_pose": "bupose.methods.yolo_pose.method:YOLOPoseMethod",
    "hrnet_adaptive_pose": "bupose.methods.adaptive_pose.method:AdaptivePoseMethod",
    "dla_adaptive_pose": "bupose.methods.adaptive_pose.method:DLAAdaptivePoseMethod",
}


def method_class(name: str):
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
