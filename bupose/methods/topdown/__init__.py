"""Top-down pose estimation: one family for the person-crop methods (HRNet and SimpleBaseline heatmaps, SimCC, RLE);
they differ in backbone, head, codec and loss."""
from bupose.methods.topdown.convert import load_official, load_pretrained_backbone, official_to_bupose
from bupose.methods.topdown.heads import HeatmapHead, RLEHead, SimCCHead
from bupose.methods.topdown.model import (TopDownHRNet, TopDownModel, TopDownResNet, build_topdown_hrnet,
                                          build_topdown_model, build_topdown_resnet)

__all__ = ["HeatmapHead", "RLEHead", "SimCCHead", "TopDownHRNet", "TopDownModel", "TopDownResNet",
           "build_topdown_hrnet", "build_topdown_model", "build_topdown_resnet", "load_official",
           "load_pretrained_backbone", "official_to_bupose"]
