"""Which families earn the crown on a lake's training sets: the leaderboard's significance rule, run
outside Dagster over the stored walk-forward folds.

    .venv/bin/python benchmarks/champions.py --lake <CBI_LAKE> [--market ZL] [--profile full] [--kinds reference statistical tree]

For each horizon of the market whose training set, folds and scalers the lake holds (materialize the
`train` stage's training assets first, e.g. with `cbi run ... --profile full` on `../shared/data/real`),
every registered family of the kinds asked walks the stored folds with the profile's budget (each fold
weighted by the regimes declared by then, as the model assets do), and the leaderboard crowns one.
Networks are left out by default: on 2 cores one takes minutes per horizon on 60 folds. A line per
family:

    horizon=<h> family=<f> mase=<x> dm=<x> p=<x> recent_p=<x> beats_random_walk=<bool>

and a line per horizon `crowned_<h>=<family>`. The last line counts them:
`horizons=<n> crowned_random_walk=<n>`.
"""

from __future__ import annotations

import argparse
import time

import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import market
from cbi_assets.lake import Lake
from cbi_assets.models.evaluation import scored
from cbi_assets.models.inputs import TrainingArrays, horizon_rows, rows_per_year
from cbi_assets.models.leaderboard import RANDOM_WALK, crowned, leaderboard
from cbi_assets.models.registry import families
from cbi_assets.models.walk import walk_family
from cbi_assets.profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--market", default="ZL")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--kinds", nargs="+", default=["reference", "statistical", "tree"])
    args = parser.parse_args()
    lake, m, profile = Lake(root=args.lake), market(args.market), load_profile(args.profile)
    calendar = lake.read(tables.REGIME_CALENDAR)
    members = [f for f in families() if f.kind in args.kinds]
    done, kept = 0, 0
    for horizon in m.horizons:
        parts = {"market": m, "horizon": horizon.name}
        if not all(lake.exists(t, **parts) for t in (tables.TRAINING_SET, tables.FOLDS, tables.SCALERS)):
            print(f"skipped {horizon.name}: the lake has no training set, folds and scalers for it")
            continue
        frame = lake.read(tables.TRAINING_SET, **parts)
        folds, scalers = lake.read(tables.FOLDS, **parts), lake.read(tables.SCALERS, **parts)
        data = TrainingArrays.of(frame, m, horizon, calendar)
        stored = []
        for family in members:
            started = time.perf_counter()
            oof, _, _ = walk_family(family, frame, folds, scalers, m, horizon, profile.training, lambda _: None, data)
            scores = scored(
                oof, horizon=horizon_rows(horizon), periods_per_year=rows_per_year(horizon), cost_bps=m.cost_bps
            )
            stored.append(
                scores.with_columns(
                    pl.lit(family.name).alias("family"), pl.lit(family.kind).alias("kind"), pl.lit("").alias("run_id")
                )
            )
            print(f"  {horizon.name} {family.name}: {folds.height} folds in {time.perf_counter() - started:.0f}s")
        board = leaderboard(pl.concat(stored, how="diagonal_relaxed"), profile.significance)
        for row in board.iter_rows(named=True):
            print(
                f"horizon={horizon.name} family={row['family']} mase={row['mase']:.4f} "
                f"dm={row['dm_statistic']:+.2f} p={row['dm_p_value']:.4f} recent_p={row['recent_dm_p_value']:.4f} "
                f"beats_random_walk={row['beats_random_walk']}"
            )
        crown = crowned(board)["family"]
        print(f"crowned_{horizon.name}={crown}", flush=True)
        done, kept = done + 1, kept + (crown == RANDOM_WALK)
    print(f"horizons={done} crowned_random_walk={kept}")


if __name__ == "__main__":
    main()
