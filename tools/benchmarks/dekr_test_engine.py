"""Benchmark the shared test engine with DEKR: peak memory of multi-scale + flip testing against the largest
single forward pass, and the time of centre extraction + pose NMS on an image with 30 people.

    python tools/benchmarks/dekr_test_engine.py [--cfg experiments/crowdpose/dekr_w32_512.yaml] [--size 640x480]

Memory: each setting runs in a fresh process; on CUDA the figure is ``torch.cuda.max_memory_allocated`` above the
model's own memory, on CPU the growth of the process's peak RSS (``ru_maxrss``) over its size after a warm-up
forward pass at the smallest scale. The ratio is against the largest single pass (scale 2, no flip).

Extreme aspect ratios (scales 0.5, 1, 2 + flip, each in a fresh process): a 4000 x 1 image, which the official resize
makes 4000 times longer than its short side (refused with a DataError before any allocation), and a 4000 x 100 strip
(processed, its input size lowered until the scale-2 pass fits ``TEST.MAX_INPUT_PIXELS``); "max input px" is the
largest network input of one forward pass.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SETTINGS = [("largest single pass: scale 2, no flip", [2.0], False),
            ("scale 1 + flip", [1.0], True),
            ("scales 0.5, 1, 2 + flip", [0.5, 1.0, 2.0], True),
            ("scales 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2 + flip", [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], True)]
EXTREME = [("4000x1 image, scales 0.5, 1, 2 + flip", "4000x1"), ("4000x100 strip, scales 0.5, 1, 2 + flip", "4000x100")]


def measure(cfg_file: str, size: tuple[int, int], scales: list[float], flip: bool, device: str) -> dict:
    import numpy as np
    import torch

    import bupose
    from bupose.errors import DataError
    from bupose.inference.tta import TestTimeAugmentation

    torch.set_grad_enabled(False)
    cfg = bupose.load_config(cfg_file)
    model = bupose.build_model(cfg).to(device).eval()
    decoder = bupose.Predictor(cfg, model, device=device).decoder
    image = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    TestTimeAugmentation([0.5], False, device)(model, decoder, image)  # warm-up: allocator, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    largest = []
    model.register_forward_pre_hook(lambda _, args: largest.append(args[0].shape[0] * args[0].shape[2] *
                                                                   args[0].shape[3]))
    t = time.perf_counter()
    try:
        TestTimeAugmentation(scales, flip, device)(model, decoder, image)
        refused = ""
    except DataError as e:
        refused = str(e)
    seconds = time.perf_counter() - t
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak_mib": peak / 2 ** 20, "seconds": seconds, "max_input_px": max(largest, default=0),
            "refused": refused}


def nms_timing(repeats: int = 20) -> dict:
    import numpy as np
    import torch

    from bupose.data.keypoints import CROWDPOSE14
    from bupose.methods.dekr.decode import DEKRDecoder

    rng = np.random.default_rng(0)
    dec = DEKRDecoder(CROWDPOSE14.flip_index, input_size=512, nms_dist=0.05, nms_num=7)
    h, w, k = 128, 192, 14
    heat = torch.rand(1, k + 1, h, w) * 0.005
    centres = rng.uniform([10, 10], [w - 10, h - 10], (30, 2))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for cx, cy in centres:
        heat[0, k] += torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 32)
    offset = torch.randn(1, 2 * k, h, w) * 8
    image = np.zeros((4 * h, 4 * w, 3), np.uint8)
    add, fin, centres_only = [], [], []
    for _ in range(repeats):
        state = dec.begin(image, [1.0])
        view = dec.prepare(image, 1.0)
        t0 = time.perf_counter()
        dec.add_scale(state, {"heatmap": heat, "offset": offset}, {"heatmap": heat, "offset": offset}, view, 1.0)
        t1 = time.perf_counter()
        people = dec.finish(state)
        t2 = time.perf_counter()
        dec._centres(heat[0, -1:])
        t3 = time.perf_counter()
        add.append(t1 - t0), fin.append(t2 - t1), centres_only.append(t3 - t2)
    med = lambda v: 1000 * float(np.median(v))  # noqa: E731
    return {"aggregate_ms": med(add), "nms_ms": med(fin), "centres_ms": med(centres_only), "candidates": 30,
            "people": len(people)}


def child(args, size: str, scales: list[float], flip: bool) -> dict:
    """One setting measured in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--cfg", args.cfg, "--size", size, "--device", args.device,
                          "--child", json.dumps([scales, flip])], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="experiments/crowdpose/dekr_w32_512.yaml")
    parser.add_argument("--size", default="640x480", help="test image WxH")
    parser.add_argument("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    if args.child:
        scales, flip = json.loads(args.child)
        print(json.dumps(measure(args.cfg, size, scales, flip, args.device)))
        return
    print(f"{args.cfg}, image {args.size}, device {args.device}")
    rows = [(name, child(args, args.size, scales, flip)) for name, scales, flip in SETTINGS]
    rows += [(name, child(args, size, [0.5, 1.0, 2.0], True)) for name, size in EXTREME]
    base = rows[0][1]["peak_mib"]
    print(f"{'setting':<48} {'peak MiB':>9} {'x largest':>9} {'seconds':>8} {'max input px':>13}")
    for name, r in rows:
        print(f"{name:<48} {r['peak_mib']:9.1f} {r['peak_mib'] / base:9.2f} {r['seconds']:8.2f} "
              f"{r['max_input_px']:13d}" + (f"  refused: {r['refused']}" if r["refused"] else ""))
    n = nms_timing()
    print(f"30 people, 128x192 output maps: centre extraction {n['centres_ms']:.2f} ms, heat values + pose NMS + "
          f"map back {n['nms_ms']:.2f} ms; the whole flip merge incl. upsampling to the input size "
          f"{n['aggregate_ms']:.2f} ms")


if __name__ == "__main__":
    main()
