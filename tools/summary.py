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


def summarise(cfg_path: str, input_size: int | None = None) -> tuple[str, int, int, float]:
    """``(name, input size, parameters, GMACs)`` of one config."""
    cfg = load_config(cfg_path)
    size = input_size or cfg.DATASET.INPUT_SIZE
    try:
        with torch.device("meta"):
            params, macs = count_params_macs(build_method(cfg).build_model(), (size, size))
    except RuntimeError:  # an op without a meta implementation (DEKR's autocast guard): count on the CPU
        params, macs = count_params_macs(build_method(cfg).build_model(), (size, size))
    return cfg_path, size, params, macs / 1e9


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
