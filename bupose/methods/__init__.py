"""Methods: a method owns its model, training targets, loss and decoding; everything else is shared.

``METHODS`` maps ``MODEL.NAME`` to the method class. A method class is built from the config and provides::

    spec                      the KeypointSpec of the dataset
    build_model()             the nn.Module (outputs a dict of tensors)
    train_dataset()           torch Dataset of dicts of tensors (image + targets), with set_epoch(epoch)
    loss(outputs, batch)      {"loss": scalar to optimise, other named terms}
    decoder()                 the test-time decoder used by bupose.inference.tta
"""
from __future__ import annotations

from bupose.errors import ConfigError


def method_class(name: str):
    from bupose.methods.dekr.method import DEKRMethod

    methods = {"hrnet_dekr": DEKRMethod}
    if name not in methods:
        import difflib

        hint = difflib.get_close_matches(name, list(methods), n=1)
        raise ConfigError(f"MODEL.NAME {name!r} is not a known method; known: {sorted(methods)}"
                          + (f"; did you mean {hint[0]!r}?" if hint else ""))
    return methods[name]


def build_method(cfg):
    """The method object for ``cfg.MODEL.NAME``."""
    return method_class(cfg.MODEL.NAME)(cfg)
