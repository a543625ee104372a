"""Benchmark: AP of a trained model with single-scale, flip, and multi-scale + flip testing (any method).

    python tools/benchmarks/test_time_augmentation.py --cfg experiments/synthetic/yolo_pose_tiny_320.yaml \
        --model-file output/synthetic_crowdpose/yolo_pose_tiny_320/final_state.pth \
        [--scales 0.75 1 1.25] [--images 0] [KEY VALUE ...]

Runs the shared test engine over the config's test split three times (scale 1; scale 1 + flip; ``--scales`` +
flip) and prints AP, AP50, AP75 and the crowd subsets (CrowdPose-layout sets) for each, with the gain over single
scale and the seconds per image.
"""
import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose.config import add_override_arguments, load_config, parse_tool_args  # noqa: E402
from bupose.engine.checkpoint import load_checkpoint  # noqa: E402
from bupose.engine.evaluate import evaluate_split  # noqa: E402
from bupose.methods import build_method  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25])
    parser.add_argument("--images", type=int, default=0, help="first N test images (0: all)")
    add_override_arguments(parser)  # KEY VALUE overrides, before or after the options
    args = parse_tool_args(parser, argv)
    settings = [("scale 1", [1.0], False), ("scale 1 + flip", [1.0], True),
                (f"scales {args.scales} + flip", args.scales, True)]
    rows, base = [], None
    for name, scales, flip in settings:
        cfg = load_config(args.cfg, args.opts + ["TEST.SCALE_FACTOR", str(scales), "TEST.FLIP_TEST", str(flip)])
        model = build_method(cfg).build_model()
        load_checkpoint(model, args.model_file)
        n = args.images
        t = time.perf_counter()
        m = evaluate_split(cfg, model, cfg.DATASET.TEST_SET, None, progress=False, limit=n)
        sec = time.perf_counter() - t
        base = m["AP"] if base is None else base
        rows.append((name, m, m["AP"] - base, sec))
    keys = [k for k in ("AP", "AP50", "AP75", "AP_easy", "AP_medium", "AP_hard") if k in rows[0][1]]
    print("| test | " + " | ".join(keys) + " | gain | s |\n|---|" + "---|" * (len(keys) + 2))
    for name, m, gain, sec in rows:
        print(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + f" | {gain:+.3f} | {sec:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
