"""How the random walk's conformal intervals hold through regime shifts on the real ZL history.

    .venv/bin/python benchmarks/intervals.py [--real ../shared/data/real]

On ZL's daily closes (`daily/ZL.csv` of the real data; skipped with a message where it is absent), for
each ZL horizon: the random walk's forecast (no move: the champion wherever no family earns more), its
90% and 80% intervals as the product computes them (`conformal.volatility_scale`, `Calibration.of`,
`walk_forward_intervals`), re-calibrated every month (21 sessions) on the outcomes matured before it,
and beside them the random walk's own empirical band: the same conformal quantile of the raw h-step
moves, with no scale, equal weights and no adaptation.

Cells: the two stress windows (origins 2008-07..2009-06, the financial crisis; 2014-07..2016-02, the
commodity slump), each calibrated only on data before each origin, and `all_folds`: the second half of
the history, where the `full` profile's 60 walk-forward folds test. Each line:

    horizon=<h> window=<w> origins=<n> outcomes=<n> coverage_90=<x> coverage_80=<x> width_90=<x>
    empirical_coverage_90=<x> empirical_width_90=<x> relative_width_90=<x>

(width: mean 90% width in log-return units; relative: over the empirical band's). The last line is
`mean_abs_gap_90=<x> cells_in_87_93=<k>/<n>`. Nothing is tuned on these windows: the method's settings
are fixed in `conformal.py`. Run it at an earlier commit (PYTHONPATH) to compare methods.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import polars as pl

from cbi_assets.catalogue import MARKETS
from cbi_assets.ensembles.conformal import Calibration, volatility_scale, walk_forward_intervals

WINDOWS = {
    "crisis_2008_07_2009_06": (dt.date(2008, 7, 1), dt.date(2009, 6, 30)),
    "slump_2014_07_2016_02": (dt.date(2014, 7, 1), dt.date(2016, 2, 29)),
}
LEVELS = (0.8, 0.9)
REFRESH_ROWS = 21


def intervals(closes: pl.DataFrame, h: int) -> pl.DataFrame:
    """Each origin's forward h-step log return and both bands (product and empirical) around no move."""
    close = closes["close"].to_numpy()
    returns = np.r_[np.nan, np.diff(np.log(close))]
    n = len(close) - h
    forward = np.log(close[h:] / close[:-h])
    dates = closes["date"]
    origins, label_end = dates[:n], dates[h : n + h]
    folds = np.arange(n) // REFRESH_ROWS
    zero = np.zeros(n)
    scale = volatility_scale(returns[:n], h)
    lower, upper, _ = walk_forward_intervals(
        zero, forward, scale, folds, label_end, origins, LEVELS, 50, Calibration.of(h, 252)
    )
    raw_lower, raw_upper, _ = walk_forward_intervals(zero, forward, np.ones(n), folds, label_end, origins, LEVELS, 50)
    return pl.DataFrame(
        {
            "date": origins,
            "actual": forward,
            "lower_80": lower[:, 0],
            "upper_80": upper[:, 0],
            "lower_90": lower[:, 1],
            "upper_90": upper[:, 1],
            "empirical_lower_90": raw_lower[:, 1],
            "empirical_upper_90": raw_upper[:, 1],
        }
    )


def cell(frame: pl.DataFrame, h: int) -> dict:
    def inside(lower: str, upper: str) -> pl.Expr:
        return ((pl.col("actual") >= pl.col(lower)) & (pl.col("actual") <= pl.col(upper))).mean()

    have = frame.filter(pl.col("lower_90").is_finite() & pl.col("empirical_lower_90").is_finite())
    row = have.select(
        pl.len().alias("origins"),
        inside("lower_90", "upper_90").alias("coverage_90"),
        inside("lower_80", "upper_80").alias("coverage_80"),
        (pl.col("upper_90") - pl.col("lower_90")).mean().alias("width_90"),
        inside("empirical_lower_90", "empirical_upper_90").alias("empirical_coverage_90"),
        (pl.col("empirical_upper_90") - pl.col("empirical_lower_90")).mean().alias("empirical_width_90"),
    ).row(0, named=True)
    row["outcomes"] = row["origins"] / h
    row["relative_width_90"] = row["width_90"] / row["empirical_width_90"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
    args = parser.parse_args()
    source = Path(args.real) / "daily" / "ZL.csv"
    if not source.is_file():
        print(f"skipped: {source} is absent (the real data sits in ../shared/data/real beside the repository)")
        sys.exit(0)
    closes = pl.read_csv(source, try_parse_dates=True).select("date", "close").sort("date")
    print(f"ZL daily closes {closes['date'][0]}..{closes['date'][-1]} ({closes.height} sessions) from {source}")
    gaps, shown = [], 0
    for horizon in MARKETS["ZL"].horizons:
        h = horizon.bars
        frame = intervals(closes, h)
        half = frame["date"][frame.height // 2]
        cells = {name: frame.filter(pl.col("date").is_between(*span)) for name, span in WINDOWS.items()}
        cells["all_folds"] = frame.filter(pl.col("date") >= half)
        for name, part in cells.items():
            row = cell(part, h)
            gaps.append(abs(row["coverage_90"] - 0.9))
            shown += 0.87 <= row["coverage_90"] <= 0.93
            print(
                f"horizon={horizon.name} window={name} origins={row['origins']} outcomes={row['outcomes']:.1f} "
                f"coverage_90={row['coverage_90']:.3f} coverage_80={row['coverage_80']:.3f} "
                f"width_90={row['width_90']:.4f} empirical_coverage_90={row['empirical_coverage_90']:.3f} "
                f"empirical_width_90={row['empirical_width_90']:.4f} relative_width_90={row['relative_width_90']:.3f}"
            )
    print(f"mean_abs_gap_90={np.mean(gaps):.4f} cells_in_87_93={shown}/{len(gaps)}")


if __name__ == "__main__":
    main()
