"""Generate the synthetic crowd dataset (images + CrowdPose-14 and COCO-17 annotations) and optionally a preview.

Examples::

    python tools/make_synthetic.py                                   # datasets/synthetic, 1600 train + 400 val
    python tools/make_synthetic.py --num-train 100 --num-val 20 --root /tmp/syn --workers 2
    python tools/make_synthetic.py --preview datasets/synthetic_preview.jpg
    python tools/make_synthetic.py --preset simple --root datasets/synthetic_simple --num-val 300

The output is the same for the same ``--seed`` and counts whatever ``--workers`` is. Without ``--force`` an
up-to-date dataset (same generator version and parameters in ``manifest.json``) is left as it is.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bupose.data.synthetic import (PRESETS, generate_dataset, is_up_to_date, preset_folder, progress_bars,
                                   write_preview)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", help="dataset folder (default: datasets/synthetic, or datasets/synthetic_<preset>)")
    ap.add_argument("--num-train", type=int, default=1600)
    ap.add_argument("--num-val", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="crowds", choices=sorted(PRESETS),
                    help="crowds (default) or simple (small images, 1-4 large people; datasets/synthetic_simple)")
    ap.add_argument("--workers", type=int, default=2, help="processes; the output does not depend on it")
    ap.add_argument("--force", action="store_true", help="regenerate even if the manifest is up to date")
    ap.add_argument("--preview", metavar="PATH", help="also write a grid of val images with skeletons to PATH")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.num_train < 0 or args.num_val < 0 or args.workers < 1:
        ap.error("--num-train/--num-val must be >= 0 and --workers >= 1")
    args.root = args.root or f"datasets/{preset_folder(args.preset)}"

    if not args.force and is_up_to_date(args.root, args.num_train, args.num_val, args.seed, args.preset):
        print(f"{args.root}: up to date (see {args.root}/manifest.json)")
    else:
        progress = None if args.quiet else progress_bars(preset_folder(args.preset))
        t0 = time.perf_counter()
        man = generate_dataset(args.root, args.num_train, args.num_val, args.seed, args.workers, progress,
                               args.preset)
        dt = time.perf_counter() - t0
        n = args.num_train + args.num_val
        print(f"wrote {n} images to {args.root} in {dt:.1f} s ({args.workers} workers)")
        print(json.dumps(man["stats"], indent=1))
    if args.preview:
        if args.num_val == 0:
            ap.error("--preview needs val images (--num-val > 0)")
        print(f"preview: {write_preview(args.root, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
