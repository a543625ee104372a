"""YOLO-Pose (Maji et al., CVPRW 2022): anchor-based one-stage multi-person pose estimation."""
