"""Backbones: HRNet (Sun et al., CVPR 2019), configured by the official experiment files' ``MODEL.SPEC.STAGES`` or
the top-down ``MODEL.EXTRA`` stages, and ResNet (He et al., CVPR 2016) as in SimpleBaseline."""
from bupose.models.backbones.hrnet import HRNet, HighResolutionModule, check_stages, stages_from_extra
from bupose.models.backbones.resnet import RESNET_LAYERS, ResNet

__all__ = ["HRNet", "HighResolutionModule", "RESNET_LAYERS", "ResNet", "check_stages", "stages_from_extra"]
