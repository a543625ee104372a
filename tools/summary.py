"""Parameters and GMACs of experiment configs, at their input size (or ``--input-size``).

    python tools/summary.py --cfg experiments/coco/yolo_pose_s6_640.yaml experiments/coco/yolo_pose_s6_960.yaml
    python tools/summary.py --cfg experiments/*/*.yaml [--input-size 640]

Counting rule (:mod:`bupose.models.complexity`): multiply-accumulates of convolutions and linear layers, one per
output for a bias and one per normalisation output, on one image; models are built on the ``meta`` device where their
ops allow it (YOLO-Pose: the largest configs in seconds without memory), else on the CPU. DEKR's adaptive-convolution sampling (grid_sample) is not
a convolution and is not counted.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.config import load_config  # noqa: E402
from bupose.methods import build_method  # noqa: E402
from bupose.models.complexity import count_params_macs  # noqa: E402


def input_shape(cfg, input_size: int | None = None) -> tuple[int, int]:
    """``(height, width)`` of one network input: ``--input-size`` squared, a top-down config's crop
    (``MODEL.IMAGE_SIZE``, width first), else the square ``DATASET.INPUT_SIZE``."""
    if input_size:
        return input_size, input_size
    if cfg.MODEL.NAME.startswith("topdown_"):
        w, h = cfg.MODEL.IMAGE_SIZE
        return h, w
    return cfg.DATASET.INPUT_SIZE, cfg.DATASET.INPUT_SIZE


def summarise(cfg_path: str, input_size: int | None = None) -> tuple[str, str, int, float]:
    """``(name, input "WxH" or side, parameters, GMACs)`` of one config."""
    cfg = load_config(cfg_path)
    h, w = input_shape(cfg, input_size)
    try:
        with torch.device("meta"):
            params, macs = count_params_macs(build_method(cfg).build_model(), (h, w))
    except (RuntimeError, NotImplementedError):  # an op without a meta implementation: count on the CPU
        params, macs = count_params_macs(build_method(cfg).build_model(), (h, w))
    return cfg_path, str(h) if h == w else f"{w}x{h}", params, macs / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", nargs="+", required=True)
    parser.add_argument("--input-size", type=int)
    args = parser.parse_args(argv)
    print("| config | input | params (M) | GMACs |\n|---|---|---|---|")
    for path in args.cfg:
        name, size, params, gmacs = summarise(path, args.input_size)
        print(f"| {name} | {size} | {params / 1e6:.2f} | {gmacs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
