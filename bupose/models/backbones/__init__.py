"""Backbones: HRNet (Sun et al., CVPR 2019), configured by the official experiment files' ``MODEL.SPEC.STAGES``."""
from bupose.models.backbones.hrnet import HRNet, HighResolutionModule, check_stages

__all__ = ["HRNet", "HighResolutionModule", "check_stages"]
