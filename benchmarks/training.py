"""Model training speed: every registered family on purged walk-forward folds of a ZL-sized set.

    .venv/bin/python benchmarks/training.py                       # 5,000 rows x 240 features, 5 folds, full budget
    .venv/bin/python benchmarks/training.py --profile sample      # the sample profile's budget
    .venv/bin/python benchmarks/training.py --kinds tree,reference --folds 10

The set has the shape of ZL's daily training set on 20 years of history (one row per session,
~240 features, the 1-week label); prices follow a random walk and the features are noise, so the
work per family is what real data costs without shipping the data. Per family it prints training
seconds per fold and predictions per second, and ends with
`train_s_per_fold_lightgbm=<n> predict_rows_per_s_lightgbm=<n>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

import numpy as np
import polars as pl

from cbi_assets.catalogue import ZL
from cbi_assets.models.inputs import TrainingArrays
from cbi_assets.models.registry import KINDS, families
from cbi_assets.models.walk import walk_family
from cbi_assets.profiles import PROFILES
from cbi_assets.training.folds import FoldPlan, walk_forward
from cbi_assets.training.sets import feature_columns, fold_scalers


def zl_sized_set(rows: int, features: int, horizon: int, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    level = 50 * np.exp(np.cumsum(rng.standard_normal(rows + horizon) * 0.015))
    days = pl.date_range(dt.date(2000, 1, 3), dt.date(2000, 1, 3) + dt.timedelta(days=rows + horizon - 1), eager=True)
    return pl.DataFrame(
        {
            "date": days[:rows],
            "label_end": days[horizon:],
            "forward_return": np.log(level[horizon:] / level[:rows]),
            "forward_price": level[horizon:],
            "regime": "all",
            "weight": rng.uniform(0.5, 1.5, rows),
            "zl_1d_ret_1": np.concatenate([[0.0], np.diff(np.log(level[:rows]))]),
            **{f"feature_{i}": rng.standard_normal(rows).astype(np.float32) for i in range(features - 1)},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--features", type=int, default=240)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds: " + ", ".join(KINDS))
    args = parser.parse_args()

    horizon = ZL.horizon("1w")
    frame = zl_sized_set(args.rows, args.features, horizon.bars)
    folds = walk_forward(frame["date"], frame["label_end"], FoldPlan(args.folds, "expanding", embargo=horizon.bars))
    scalers = fold_scalers(frame, folds, feature_columns(frame))
    budget = PROFILES[args.profile].training
    data = TrainingArrays.of(frame, ZL, horizon)
    print(
        f"{args.rows:,} rows x {args.features} features, {folds.height} folds "
        f"({folds['test_rows'].sum():,} test rows), profile {args.profile}"
    )
    print(f"{'family':<16}{'kind':<13}{'train s/fold':>14}{'predict rows/s':>16}{'wall s':>9}")
    results = {}
    for family in families():
        if family.kind not in args.kinds.split(","):
            continue
        started = time.perf_counter()
        _, _, timings = walk_family(family, frame, folds, scalers, ZL, horizon, budget, lambda message: None, data)
        results[family.name] = timings
        print(
            f"{family.name:<16}{family.kind:<13}{timings['train_s_per_fold']:>14.3f}"
            f"{timings['predict_rows_per_s']:>16,.0f}{time.perf_counter() - started:>9.1f}",
            flush=True,
        )
    if "lightgbm" in results:
        lightgbm = results["lightgbm"]
        print(
            f"train_s_per_fold_lightgbm={lightgbm['train_s_per_fold']:.3f} "
            f"predict_rows_per_s_lightgbm={lightgbm['predict_rows_per_s']:.0f}"
        )


if __name__ == "__main__":
    main()
