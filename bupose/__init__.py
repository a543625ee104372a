"""bupose: multi-person 2D human pose estimation in crowded scenes.

    import bupose
    cfg = bupose.load_config("experiments/crowdpose/dekr_w32_512.yaml", ["TEST.FLIP_TEST", "True"])
    model = bupose.build_model(cfg)
    bupose.load_checkpoint(model, "pose_dekr_hrnetw32_crowdpose.pth")   # ours or official
    people = bupose.Predictor(cfg, model)(image_bgr)   # [{"keypoints": (K, 3), "score": float, "bbox": [x, y, w, h]}]
"""
__version__ = "0.1.0"

#: the public names, imported on first use (so ``python -m bupose.config`` runs its module only once, and
#: ``import bupose`` stays light)
_LAZY = {"load_config": "bupose.config", "save_config": "bupose.config",
         "load_checkpoint": "bupose.engine.checkpoint", "evaluate_keypoints": "bupose.evaluation",
         "Predictor": "bupose.inference.predictor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bupose' has no attribute {name!r}")


def build_model(cfg):
    """The model of ``cfg.MODEL.NAME`` for ``cfg``'s dataset (randomly initialised; see :func:`load_checkpoint`)."""
    from bupose.methods import build_method

    return build_method(cfg).build_model()


__all__ = ["load_config", "save_config", "build_model", "load_checkpoint", "Predictor", "evaluate_keypoints"]
