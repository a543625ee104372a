"""AdaptivePose (Xiao et al., AAAI 2022): body parts as adaptive points, on an HRNet or a DLA-34 backbone."""
