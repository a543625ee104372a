"""Benchmark: forward time of full-size bottom-up models, batch 1, side by side (and images/s on a GPU).

    python tools/benchmarks/bottom_up_forward.py [--cfg experiments/coco/adaptive_pose_w32_512.yaml ...]
        [--threads 2] [--repeats 3] [--adaptive-conv grid_sample|deform_conv2d]
    python tools/benchmarks/bottom_up_forward.py --train-cfg experiments/synthetic/adaptive_pose_simple_160.yaml \
        [--train-batch 4] [--threads 1]

Each config runs at its own input size and at the other size of the list (512 and 640), in eval mode without
gradients, and is compared with DEKR-W32 (``experiments/coco/dekr_w32_512.yaml``) at the same input size, timed in
the same rounds: the ratio ``model / DEKR-W32`` is what to read, as absolute CPU times vary with the machine's load.
Times are the best of ``--repeats`` rounds after a warm-up, the models taking turns within each round. With CUDA:
images/s at batch 1 and 8 (float32).

``--train-cfg``: instead, a training step (forward and backward, train mode, ``--train-batch`` random images at the
config's input size) of each config with ``MODEL.ADAPTIVE_CONV grid_sample`` vs ``deform_conv2d``, and their ratio.
"""
import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bupose.config import load_config  # noqa: E402
from bupose.methods import build_method  # noqa: E402
from common import timed  # noqa: E402

REFERENCE = "experiments/coco/dekr_w32_512.yaml"
DEFAULT = ["experiments/coco/adaptive_pose_w32_512.yaml", "experiments/coco/adaptive_pose_dla34_512.yaml",
           "experiments/coco/adaptive_pose_w48_640.yaml"]


def build(path: str, adaptive_conv: str = "grid_sample") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_method(load_config(REPO / path, ["MODEL.ADAPTIVE_CONV", adaptive_conv])).build_model().eval()


def train_steps(paths, batch: int, repeats: int) -> None:
    print(f"CPU, {torch.get_num_threads()} threads, training step (forward + backward), batch {batch}")
    print("| config | input | grid_sample (s) | deform_conv2d (s) | deform_conv2d / grid_sample |")
    print("|---|---|---|---|---|")
    for path in paths:
        models = {impl: build(path, impl).train() for impl in ("grid_sample", "deform_conv2d")}
        size = load_config(REPO / path).DATASET.INPUT_SIZE
        x = torch.rand(batch, 3, size, size)

        def step(model):
            out = model(x)
            sum(v.float().mean() for v in out.values() if torch.is_tensor(v)).backward()

        best = timed({impl: (lambda m=m: step(m)) for impl, m in models.items()}, repeats, torch.device("cpu"))
        g, d = best["grid_sample"], best["deform_conv2d"]
        print(f"| {path} | {size} | {g:.3f} | {d:.3f} | {d / g:.2f}x |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", nargs="+", default=DEFAULT)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 640])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--adaptive-conv", default="grid_sample", choices=["grid_sample", "deform_conv2d"],
                        help="MODEL.ADAPTIVE_CONV of the compared configs (the DEKR-W32 reference keeps grid_sample)")
    parser.add_argument("--train-cfg", nargs="+", help="time training steps of these configs instead (see above)")
    parser.add_argument("--train-batch", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_cfg:
        train_steps(args.train_cfg, args.train_batch, args.repeats)
        return 0
    cpu = torch.device("cpu")
    reference = build(REFERENCE)
    print(f"CPU, {args.threads} threads, batch 1, eval, no grad, MODEL.ADAPTIVE_CONV {args.adaptive_conv}; "
          f"reference {REFERENCE}")
    print("| config | input | model (s) | DEKR-W32 (s) | model / DEKR-W32 |")
    print("|---|---|---|---|---|")
    for path in args.cfg:
        model = build(path, args.adaptive_conv)
        for size in args.sizes:
            x = torch.rand(1, 3, size, size)
            with torch.no_grad():
                best = timed({"model": lambda: model(x), "ref": lambda: reference(x)}, args.repeats, cpu)
            print(f"| {path} | {size} | {best['model']:.2f} | {best['ref']:.2f} | {best['model'] / best['ref']:.2f}x |")
            if torch.cuda.is_available():
                gpu = torch.device("cuda")
                g = model.to(gpu)
                for batch in (1, 8):
                    xb = torch.rand(batch, 3, size, size, device=gpu)
                    with torch.no_grad():
                        t = timed({"m": lambda: g(xb)}, max(args.repeats, 10), gpu)["m"]
                    print(f"  GPU {torch.cuda.get_device_name()}: batch {batch}: {batch / t:.1f} images/s")
                model.to(cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
