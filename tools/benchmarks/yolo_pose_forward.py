"""Benchmark: YOLO-Pose forward time, batch 1, with and without conv+BN fusion (and images/s on a GPU).

    python tools/benchmarks/yolo_pose_forward.py [--cfg experiments/coco/yolo_pose_s6_640.yaml ...]
        [--threads 2] [--repeats 3]

For each config at its input size: batch-1 forward (eval, no grad) of the model as trained and after
``model.fuse()`` (batch norms folded into the convolutions), the ratio, and the largest output difference between
the two relative to the largest output. With CUDA: images/s at batch 1 and 8 (float32, fused). Times are the best of ``--repeats`` rounds after
a warm-up, the variants taking turns within each round.
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose.config import load_config  # noqa: E402
from bupose.methods import build_method  # noqa: E402
from common import timed  # noqa: E402

DEFAULT = ["experiments/coco/yolo_pose_s6_640.yaml", "experiments/coco/yolo_pose_s6_960.yaml"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", nargs="+", default=DEFAULT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"CPU, {args.threads} threads, batch 1\n| config | input | plain (s) | fused (s) | plain / fused | max diff / max output |")
    print("|---|---|---|---|---|---|")
    for path in args.cfg:
        cfg = load_config(REPO / path if not Path(path).is_absolute() else path)
        size = cfg.DATASET.INPUT_SIZE
        torch.manual_seed(0)
        model = build_method(cfg).build_model()
        with torch.no_grad():  # batch-norm statistics of one batch, so that activations stay O(1) in eval mode
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
            model.train()(torch.rand(2, 3, size, size))
        model.eval()
        fused = copy.deepcopy(model).fuse()
        x = torch.rand(1, 3, size, size)
        with torch.no_grad():
            best = timed({"plain": lambda: model(x), "fused": lambda: fused(x)}, args.repeats, cpu)
            diff = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(model(x)["levels"],
                                                                                  fused(x)["levels"]))
        print(f"| {path} | {size} | {best['plain']:.3f} | {best['fused']:.3f} | {best['plain'] / best['fused']:.2f}x "
              f"| {diff:.1e} |")
        if torch.cuda.is_available():
            gpu = torch.device("cuda")
            g = fused.to(gpu)
            for batch in (1, 8):
                xb = torch.rand(batch, 3, size, size, device=gpu)
                with torch.no_grad():
                    t = timed({"f": lambda: g(xb)}, max(args.repeats, 10), gpu)["f"]
                print(f"  GPU {torch.cuda.get_device_name()}: batch {batch}: {batch / t:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
