"""Plot the loss and AP per epoch of one or more runs (their ``metrics.csv``) into a PNG.

    python tools/plot.py output/synthetic_simple_crowdpose/dekr_simple_160            # -> <run>/metrics.png
    python tools/plot.py RUN_A RUN_B/metrics.csv --labels dekr adaptive --out curves.png [--metrics loss AP AP50]

Each argument is a run folder or a metrics.csv. Needs matplotlib (``pip install -e ".[plot]"``).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bupose.errors import BuposeError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders or metrics.csv files")
    parser.add_argument("--out", help="the PNG (default: metrics.png in the run folder; with several runs "
                                      "./metrics.png)")
    parser.add_argument("--labels", nargs="+", help="one legend label per run (default: the run folder names)")
    parser.add_argument("--metrics", nargs="+", default=["loss", "AP"], help="columns to plot (default: loss AP)")
    args = parser.parse_args(argv)
    try:
        from bupose.plots import metrics_file, plot_runs

        out = args.out or (metrics_file(args.runs[0]).parent / "metrics.png" if len(args.runs) == 1
                           else Path("metrics.png"))
        path = plot_runs(args.runs, out, labels=args.labels, metrics=args.metrics)
    except BuposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
