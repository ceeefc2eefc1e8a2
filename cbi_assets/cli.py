"""The `cbi` command: the main job on the sample data, the web UI, and the plan they share.

    cbi demo    materialize the whole asset graph on the embedded sample, layer by layer, with
                `dagster asset materialize` (so every run shows in the web UI), then say where
                the results are
    cbi plan    print those materialize steps, one per line: <selection> <partition range or ->
    cbi dev     start the web UI (`dagster dev`) on this project's instance
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from cbi_assets.settings import PROJECT_ROOT, Settings

MODULE = "cbi_assets.definitions"
QUIET = '{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'


@dataclass(frozen=True)
class Step:
    what: str
    selection: str  # comma-separated asset keys
    partition_range: str | None  # "<first>...<last>" or None for unpartitioned assets

    def command(self, dagster: str = "dagster") -> list[str]:
        command = [dagster, "asset", "materialize", "-m", MODULE, "--select", self.selection]
        command += ["--partition-range", self.partition_range] if self.partition_range else []
        # Progress lines, not one debug line per partition and event.
        return command + ["--config-json", QUIET]


def plan(settings: Settings) -> list[Step]:
    """The layers in order: the raw day partitions the sample holds, then every derived asset."""
    from cbi_assets.definitions import defs
    from cbi_assets.raw.datasets import RAW_DATASETS
    from cbi_assets.raw.partitions import market_days, partitions_for
    from resources import sample_source

    sample = sample_source(settings)
    groups: dict[tuple[bool, str, str], list[str]] = defaultdict(list)
    for dataset in RAW_DATASETS.values():
        first, last = sample.coverage(dataset)
        # A range must start on a partition key of its definition: the market days start in 2000.
        if partitions_for(dataset) == market_days:
            first = min(first, market_days.start.date())
        groups[(partitions_for(dataset) != market_days, first.isoformat(), last.isoformat())].append(
            dataset.key.to_user_string()
        )
    steps = [
        Step(f"raw layer, {len(keys)} datasets, {first}..{last}", ",".join(keys), f"{first}...{last}")
        for (_, first, last), keys in sorted(groups.items())
    ]
    import dagster as dg

    graph = defs.resolve_asset_graph()
    from cbi_assets.catalogue import regime_of
    from cbi_assets.partitions import HORIZON_PARTITIONS, REGIME_PARTITIONS

    def keys_where(test) -> list[str]:
        return sorted(k.to_user_string() for k in graph.get_all_asset_keys() if test(graph.get(k)))

    def upstream(key) -> set:
        """Every asset `key` reads, directly or further up."""
        seen, todo = set(), list(graph.get(key).parent_keys)
        while todo:
            parent = todo.pop()
            if parent not in seen:
                seen.add(parent)
                todo.extend(graph.get(parent).parent_keys)
        return seen

    def after_models(node) -> bool:
        """Whether an unpartitioned asset reads what the per-horizon assets write."""
        return any(graph.get(k).partitions_def in HORIZON_PARTITIONS.values() for k in upstream(node.key))

    derived = keys_where(lambda n: n.partitions_def is None and not after_models(n))
    # One run: Dagster orders the derived layers (rolls, features, regimes) by their dependencies.
    steps.append(Step(f"derived layers, {len(derived)} assets", ",".join(derived), None))
    # Then each market's horizon assets, every horizon in one run (single-run backfill): first
    # through the leaderboard (labels, training sets, folds, model families), then the rest: the
    # regime state and what builds on the models (ensembles, explanations, meta-learning, backtests,
    # today's forecasts, their upload and validation).
    later = []
    for asset, partitions in HORIZON_PARTITIONS.items():
        keys = keys_where(lambda n, p=partitions: n.partitions_def == p)
        board = dg.AssetKey([asset, "models", "leaderboard"])
        needed = {k.to_user_string() for k in upstream(board) | {board}}
        through = [k for k in keys if k in needed]
        rest = [k for k in keys if k not in needed]
        horizons = partitions.get_partition_keys()
        span = f"{horizons[0]}...{horizons[-1]}"
        steps.append(Step(f"{asset.upper()} training sets and models through the leaderboard, "
                          f"{len(through)} assets x {len(horizons)} horizons", ",".join(through), span))
        later.append(Step(f"{asset.upper()} regime state, ensembles, explanations, meta-learning, backtests, "
                          "forecasts and their validation, "
                          f"{len(rest)} assets x {len(horizons)} horizons", ",".join(rest), span))
    steps += later
    # Regime specialists for the regime the sample ends in (the calendar asset adds its partition).
    specialists = keys_where(lambda n: n.partitions_def == REGIME_PARTITIONS)
    if specialists:
        current = regime_of(settings.sample_end).name
        steps.append(Step(f"regime specialists for the current regime ({current})", ",".join(specialists), f"{current}...{current}"))
    # Last, what reads several markets' models and forecasts (cross-asset transfer, the audit).
    late = keys_where(lambda n: n.partitions_def is None and after_models(n))
    if late:
        steps.append(Step(f"cross-asset models and the audit, {len(late)} assets", ",".join(late), None))
    return steps


def _environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    env["CBI_SOURCE"] = "sample"
    # Pin the sample's last day so every step of one demo sees the same data.
    env["CBI_SAMPLE_END"] = settings.sample_end.isoformat()
    return env


def demo(settings: Settings) -> int:
    env = _environment(settings)
    dagster = str(Path(sys.executable).with_name("dagster"))
    steps = plan(settings)
    if not (Path(env["DAGSTER_HOME"]) / "dagster.yaml").is_file():
        print(f"note: DAGSTER_HOME={env['DAGSTER_HOME']} has no dagster.yaml, so Dagster's stock storage records "
              "the raw backfill (most of an hour instead of minutes); copy .dagster/dagster.yaml there", flush=True)
    began = time.perf_counter()
    for i, step in enumerate(steps, 1):
        print(f"\n[{i}/{len(steps)}] {step.what}\n  $ {' '.join(step.command('dagster'))}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(step.command(dagster), env=env, cwd=PROJECT_ROOT)
        if done.returncode:
            print(f"step {i} failed ({step.what}); see the run in the web UI: cbi dev", file=sys.stderr)
            return done.returncode
        print(f"  done in {time.perf_counter() - started:.0f}s ({time.perf_counter() - began:.0f}s since the start)", flush=True)
    print(f"\nThe asset graph is materialized on the sample data in {time.perf_counter() - began:.0f}s.")
    _print_results(settings, env["DAGSTER_HOME"])
    return 0


def _print_results(settings: Settings, dagster_home: str) -> None:
    import duckdb

    with duckdb.connect(settings.warehouse, read_only=True) as conn:
        inventory = conn.sql(
            "select dataset, days, first_day, last_day, records from lake.raw_inventory order by area, dataset"
        ).pl()
        champions = conn.sql(
            "select asset, horizon, family as champion, round(mase, 3) as mase, "
            "round(directional_accuracy, 3) as directional_accuracy from models.leaderboard where champion "
            "order by asset desc, horizon"
        ).pl()
        # The latest-forecast views hold the rule of what is published; read them, not the history.
        views = [r[0] for r in conn.execute("select table_name from information_schema.tables where table_schema = "
                                            "'predictions' and table_type = 'VIEW'").fetchall()]
        columns = ("asset, horizon, as_of::date as as_of, family, round(price, 2) as price, round(forecast_price, 2) "
                   "as forecast, round(lower_90_price, 2) as low_90, round(upper_90_price, 2) as high_90, "
                   "round(conviction, 2) as conviction, round(confidence, 2) as confidence")
        forecasts = conn.sql(" union all ".join(f"select {columns} from predictions.{v}" for v in views)
                             + " order by asset desc, horizon").pl() if views else None
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(inventory)
        print("\nChampions on the walk-forward folds (MASE below 1 beats the random walk):")
        print(champions)
        print("\nLatest published forecasts (warehouse views predictions.vw_<asset>_<horizon>_latest):")
        print(forecasts if forecasts is not None else "none published yet")
    print(
        "\nWhere the results are:\n"
        f"  lake (Parquet)      {settings.lake}/{{shared,ZL,MES}}/raw/<dataset>/date=YYYY-MM-DD/\n"
        f"  roll calendars      {settings.lake}/{{ZL,MES}}/raw/roll_calendar.parquet\n"
        f"  shared features     {settings.lake}/shared/{{macro,volatility,fx,cross_asset}}/*_1d.parquet\n"
        f"  master features     {settings.lake}/ZL/features/master_1d.parquet, {settings.lake}/MES/features/master_<timeframe>.parquet\n"
        f"  feature catalogue   {settings.lake}/feature_catalogue.parquet (warehouse: features.catalogue)\n"
        f"  regimes             {settings.lake}/shared/regimes/ (calendar; <ASSET>/<horizon>/state, shifts; warehouse: regimes.*)\n"
        f"  training sets       {settings.lake}/{{ZL,MES}}/training/by_horizon/<horizon>/ (labels, all, regime=<name>, folds, scalers)\n"
        f"  meta-learning tasks {settings.lake}/meta_learning/<asset>/<horizon>/<regime>/{{support,query}}.parquet\n"
        f"  models              {settings.lake}/{{ZL,MES}}/models/by_horizon/<horizon>/{{oof,metrics}}/<family>.parquet\n"
        f"  leaderboard         warehouse: models.leaderboard; MLflow: {settings.tracking_uri} (champion alias)\n"
        f"  ensembles, intervals {settings.lake}/{{ZL,MES}}/models/by_horizon/<horizon>/ensemble/ (warehouse: models.ensembles, models.coverage)\n"
        f"  explanations        {settings.lake}/{{ZL,MES}}/models/by_horizon/<horizon>/explain/ (warehouse: models.drivers)\n"
        f"  meta-learner        {settings.lake}/{{ZL,MES}}/models/by_horizon/<horizon>/meta/ (few_shot.parquet)\n"
        f"  specialists         {settings.lake}/{{ZL,MES}}/models/specialists/<regime>/<horizon>/\n"
        f"  transfer            {settings.lake}/shared/models/transfer/comparison.parquet\n"
        f"  predictions         {settings.lake}/{{ZL,MES}}/predictions/by_horizon/<horizon>/ (warehouse: predictions.history, predictions.vw_*_latest)\n"
        f"  monitoring          warehouse: monitoring.validation, monitoring.validation_status, monitoring.alerts, monitoring.audits\n"
        f"  backtests           {settings.lake}/{{ZL,MES}}/backtests/by_horizon/<horizon>/ (warehouse: backtests.procurement, backtests.trading)\n"
        f"  warehouse (DuckDB)  {settings.warehouse}  (table lake.raw_inventory)\n"
        f"  Dagster runs        {dagster_home}  (open the web UI: cbi dev)"
    )


def dev(extra: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    dagster = str(Path(sys.executable).with_name("dagster"))
    os.execve(dagster, [dagster, "dev", *extra], env)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = Settings.from_env()
    if argv[:1] == ["dev"]:  # everything after `dev` belongs to `dagster dev` (-h, -p, ...)
        return dev(argv[1:])
    parser = argparse.ArgumentParser(prog="cbi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("demo", "plan", "dev"))
    args = parser.parse_args(argv)
    if args.command == "plan":
        for step in plan(settings):
            print(step.selection, step.partition_range or "-")
        return 0
    return demo(settings)


if __name__ == "__main__":
    sys.exit(main())
