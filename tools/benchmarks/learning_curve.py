"""Learning curve: train a config with validation after every epoch and print AP per epoch.

    python tools/benchmarks/learning_curve.py --cfg experiments/synthetic/dekr_tiny_256.yaml [KEY VALUE ...]

Validation uses the config's test settings on the first ``--val-images`` images of the test split (default 100,
single scale without flip unless overridden) to keep it cheap; the run goes to ``--output-dir`` (default
``output/learning_curve/<config name>``) and its ``metrics.csv`` holds the figures printed. ``--plot curves.png``
draws its loss and AP per epoch, with those of earlier runs given by ``--compare RUN_DIR_OR_CSV ...`` in the same
figure (matplotlib: ``pip install -e ".[plot]"``; ``python tools/plot.py`` draws existing runs without training).
"""
import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bupose.config import add_override_arguments, load_config, parse_tool_args  # noqa: E402
from bupose.engine.trainer import Trainer  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--output-dir")
    parser.add_argument("--plot", metavar="PNG", help="draw loss and AP per epoch of this run (and --compare's)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN",
                        help="with --plot: other runs (folders or metrics.csv) drawn in the same figure")
    add_override_arguments(parser)  # KEY VALUE overrides, before or after the options
    args = parse_tool_args(parser, argv)
    opts = ["TRAIN.VAL_FREQ", "1", "DATASET.MAX_TEST_IMAGES", str(args.val_images), "TEST.SCALE_FACTOR", "[1.0]",
            "TEST.FLIP_TEST", "False", "TRAIN.AUTO_RESUME", "False"] + args.opts
    if args.compare and not args.plot:
        parser.error("--compare needs --plot PNG")
    cfg = load_config(args.cfg, opts)
    if args.plot:
        from bupose.plots import metrics_file, pyplot

        pyplot()  # before training: a missing matplotlib is an error now, not after the run
        for run in args.compare:
            metrics_file(run)
    out = Path(args.output_dir or Path("output/learning_curve") / Path(args.cfg).stem)
    t0 = time.perf_counter()
    Trainer(cfg, out, resume=False).train()
    print(f"{args.cfg}: {time.perf_counter() - t0:.0f} s; validation on {args.val_images} images of "
          f"{cfg.DATASET.TEST_SET}, scales {cfg.TEST.SCALE_FACTOR}, flip {cfg.TEST.FLIP_TEST}")
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in ("loss", "AP", "AP50", "AP_easy", "AP_medium", "AP_hard", "time_s") if k in rows[0]]
    print("epoch " + " ".join(f"{k:>9}" for k in keys))
    for r in rows:
        print(f"{r['epoch']:>5} " + " ".join(f"{float(r[k]):9.4f}" if r.get(k) else f"{'':>9}" for k in keys))
    if args.plot:
        from bupose.plots import plot_runs

        print(f"curves: {plot_runs([out] + args.compare, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
