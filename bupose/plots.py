"""Training curves: the ``metrics.csv`` of runs as a PNG of loss and AP per epoch (matplotlib, the ``plot`` extra).

A run's ``metrics.csv`` (written by the trainer each epoch) has ``epoch``, ``lr``, ``loss`` and the method's loss
terms, ``time_s``, and after validation epochs ``AP``, ``AP50``, ... (empty in the other rows).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

from bupose.errors import BuposeError, DataError

INSTALL_HINT = 'pip install -e ".[plot]"  (matplotlib)'


class PlotError(BuposeError, RuntimeError):
    """Plotting is not possible here (matplotlib is missing)."""


def metrics_file(path: str | Path) -> Path:
    """``path`` itself when a file, else ``path/metrics.csv`` (a run folder); DataError when it does not exist."""
    path = Path(path)
    csv_path = path / "metrics.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: no such metrics file (a run folder holds metrics.csv after its first epoch)")
    return csv_path


def read_metrics(path: str | Path) -> dict[str, list[float]]:
    """The columns of a run's ``metrics.csv`` (or run folder) as lists of floats, NaN where a row has no value;
    DataError for a file without an ``epoch`` column or with a value that is not a number."""
    csv_path = metrics_file(path)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise DataError(f"{csv_path}: expected a metrics.csv with an 'epoch' column and one row per epoch")
    columns: dict[str, list[float]] = {k: [] for k in rows[0]}
    for i, row in enumerate(rows):
        for key in columns:
            value = (row.get(key) or "").strip()
            try:
                columns[key].append(float(value) if value else math.nan)
            except ValueError:
                raise DataError(f"{csv_path}: row {i + 2}, column {key!r}: {value!r} is not a number") from None
    return columns


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend; PlotError naming the extra when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_runs(runs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
              metrics: Sequence[str] = ("loss", "AP")) -> Path:
    """One PNG with a panel per metric (default the training loss and the validation AP) against the epoch, a line
    per run (``runs``: metrics.csv files or run folders; ``labels`` default to the run folders' names). A panel of a
    metric no run has says so (AP: validation was off, ``TRAIN.VAL_FREQ 0``). Returns ``out``."""
    if not runs:
        raise DataError("plot_runs needs at least one run")
    if labels is not None and len(labels) != len(runs):
        raise DataError(f"{len(labels)} labels for {len(runs)} runs")
    data = [read_metrics(r) for r in runs]
    labels = list(labels) if labels is not None else [metrics_file(r).parent.name or str(r) for r in runs]
    plt = pyplot()
    from matplotlib import ticker
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        drawn = 0
        for columns, label in zip(data, labels):
            points = [(e, v) for e, v in zip(columns["epoch"], columns.get(metric, [])) if not math.isnan(v)]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
                drawn += 1
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            why = " (validation off: TRAIN.VAL_FREQ 0)" if metric.startswith("AP") else ""
            ax.text(0.5, 0.5, f"no {metric} in these runs{why}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
