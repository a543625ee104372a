"""bupose: multi-person 2D human pose estimation in crowded scenes.

    import bupose
    cfg = bupose.load_config("experiments/crowdpose/dekr_w32_512.yaml", ["TEST.FLIP_TEST", "True"])
    model = bupose.build_model(cfg)
    bupose.load_checkpoint(model, "pose_dekr_hrnetw32_crowdpose.pth")   # ours or official
    people = bupose.Predictor(cfg, model)(image_bgr)   # [{"keypoints": (K, 3), "score": float, "bbox": [x, y, w, h]}]
"""
__version__ = "0.1.0"

from bupose.config import load_config, save_config  # noqa: E402
from bupose.engine.checkpoint import load_checkpoint  # noqa: E402
from bupose.evaluation import evaluate_keypoints  # noqa: E402
from bupose.inference.predictor import Predictor  # noqa: E402


def build_model(cfg):
    """The model of ``cfg.MODEL.NAME`` for ``cfg``'s dataset (randomly initialised; see :func:`load_checkpoint`)."""
    from bupose.methods import build_method

    return build_method(cfg).build_model()


__all__ = ["load_config", "save_config", "build_model", "load_checkpoint", "Predictor", "evaluate_keypoints"]
