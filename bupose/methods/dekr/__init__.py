"""DEKR (Geng et al., "Bottom-Up Human Pose Estimation Via Disentangled Keypoint Regression", CVPR 2021)."""
from bupose.methods.dekr.convert import load_official, looks_official, official_to_bupose
from bupose.methods.dekr.model import DEKR, build_dekr

__all__ = ["DEKR", "build_dekr", "load_official", "looks_official", "official_to_bupose"]
