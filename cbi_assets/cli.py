"""The `cbi` command: build the whole asset graph on a source, the web UI, and the plan they share.

    cbi demo                 the main job: every layer on the embedded sample (offline), then where the results are
    cbi run [options]        the same driver on your own data: --source local --local-dir DIR, or --source live
                             (the APIs, keys from DATABENTO_API_KEY and FRED_API_KEY); --profile full or your own
                             .toml; --end YYYY-MM-DD, the last day to take in
    cbi plan [options]       print those steps, one per line: <selection> <partition range or ->
    cbi dev                  start the web UI (`dagster dev`) on this project's instance
    cbi live [options]       the live MES service on Databento's feed; --replay FILES|DAY feeds recorded records

Each step is one `dagster asset materialize` over a stage of the graph (cbi_assets/selections.py), so
every run and materialization shows in the web UI afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cbi_assets.failures import FAILURE_FILE
from cbi_assets.settings import PROJECT_ROOT, Settings

MODULE = "cbi_assets.definitions"
# Progress lines, not one debug line per partition and event. Steps run two at a time in processes forked
# from one that imported the code location once (a fresh process per step would import it again: seconds).
RUN_CONFIG = json.dumps(
    {
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
        "execution": {"config": {"multiprocess": {"start_method": {"forkserver": {"preload_modules": [MODULE]}}}}},
    }
)


@dataclass(frozen=True)
class Step:
    what: str
    selection: str  # Dagster's selection syntax
    partition_range: str | None  # "<first>...<last>", or None for unpartitioned assets
    phase: int  # steps of one phase read nothing the others write: they run side by side

    def command(self, dagster: str = "dagster") -> list[str]:
        command = [dagster, "asset", "materialize", "-m", MODULE, "--select", self.selection]
        command += ["--partition-range", self.partition_range] if self.partition_range else []
        return command + ["--config-json", RUN_CONFIG]


def available(settings: Settings) -> tuple[dict, list[str]]:
    """The days the source holds of each raw dataset ({dataset: (first, last)}), and a note for each it lacks."""
    from cbi_assets.raw.datasets import RAW_DATASETS
    from cbi_assets.raw.errors import RawDataError
    from resources import build_resources, source_of

    resources = build_resources(settings)
    spans, lacking = {}, []
    for dataset in RAW_DATASETS.values():
        try:
            first, last = source_of(resources, dataset).coverage(dataset)
        except RawDataError as error:
            lacking.append(f"{dataset.name}: {error}")
            continue
        if first <= last:
            spans[dataset] = (first, last)
        else:
            lacking.append(f"{dataset.name}: no records up to {settings.last_day}")
    return spans, lacking


def plan(settings: Settings) -> list[Step]:
    """The stages in order: the raw partitions the source holds, then everything derived from them. Steps of one
    phase run at the same time: each leaves a core idle part of its time (a chain of assets, a long model).

    A dataset the source lacks is left out, and so is what cannot be built without it: without MES 1-minute bars
    (a folder of daily files), the MES bars, microstructure and intraday master tables and the intraday horizons.
    """
    from cbi_assets import lake as tables
    from cbi_assets.catalogue import INTRADAY_TIMEFRAMES, MARKETS, MES, regime_of
    from cbi_assets.partitions import horizon_partitions
    from cbi_assets.raw.datasets import RAW_DATASETS
    from cbi_assets.raw.partitions import RAW_PARTITIONS, partition_of, partitions_name
    from cbi_assets.selections import of_raw, of_stage

    spans, _ = available(settings)
    steps = []
    for name in RAW_PARTITIONS:
        mine = [d for d in RAW_DATASETS.values() if partitions_name(d) == name]
        held = [d for d in mine if d in spans]
        if not held:
            continue
        first, last = min(spans[d][0] for d in held), max(spans[d][1] for d in held)
        keys = f"{partition_of(first)}...{partition_of(last)}"
        selection = (
            of_raw(name) if len(held) == len(mine) else " or ".join(f'key:"{d.key.to_user_string()}"' for d in held)
        )
        steps.append(Step(f"raw layer: {name.replace('_', ' ')} {keys}", selection, keys, phase=1))
    prepare = of_stage("prepare")
    minutes = RAW_DATASETS["mes_ohlcv_1m"] in spans
    ticks = all(RAW_DATASETS[f"mes_{kind}"] in spans for kind in ("trades", "tbbo", "mbp_10"))
    intraday = [
        tables.BARS.asset_key(),
        *(tables.MASTER.asset_key(market=MES, timeframe=t) for t in INTRADAY_TIMEFRAMES),
    ]
    left_out = ([] if minutes else intraday) + ([] if minutes and ticks else [tables.MICROSTRUCTURE.asset_key()])
    if left_out:
        prepare += " and not (" + " or ".join(f'key:"{k.to_user_string()}"' for k in left_out) + ")"
    steps.append(Step("feature layers, rolls, lake inventory and regime calendar", prepare, None, phase=2))
    # Each market's horizons in one run: Dagster builds the training sets and every model family through the
    # leaderboard first, then what reads them.
    for market in MARKETS.values():
        horizons = [h.name for h in market.horizons if minutes or not h.intraday]
        if horizon_partitions(market).get_partition_keys()[-len(horizons) :] != horizons:
            raise ValueError(f"{market}'s daily horizons must come last among its partitions to form a range")
        steps.append(
            Step(
                f"{market}: training sets, every model family, the leaderboard; the regime state, ensembles, "
                "explanations, Reptile, backtests, today's forecasts and their validation",
                of_stage("train", "forecast", market=market),
                f"{horizons[0]}...{horizons[-1]}",
                phase=3,
            )
        )
    # Regime specialists for the regime the data ends in (the calendar asset adds its partition).
    current = regime_of(settings.last_day).name
    steps.append(
        Step(
            f"regime specialists of the current regime ({current})",
            of_stage("specialists"),
            f"{current}...{current}",
            phase=4,
        )
    )
    steps.append(Step("cross-market transfer and the audit", of_stage("cross_market"), None, phase=4))
    return steps


def _environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    # `dagster asset materialize` warns that a newer command supersedes it, once per step: the run logs come first.
    env["PYTHONWARNINGS"] = "ignore:Function `asset_materialize_command` is superseded"
    # Every step of one run sees the same source, profile and last day.
    env.update(
        {
            "CBI_SOURCE": settings.source,
            "CBI_PROFILE": settings.profile,
            "CBI_END": settings.last_day.isoformat(),
            "CBI_SAMPLE_END": settings.sample_end.isoformat(),
        }
    )
    if settings.local_dir:
        env["CBI_LOCAL_DIR"] = str(settings.local_dir)
    if settings.set_aside:
        env["CBI_SET_ASIDE"] = "1"
    return env


def create_stores(settings: Settings, dagster_home: str) -> None:
    """Dagster's storage and the MLflow store, created before steps start side by side: processes that start at
    once on new SQLite files would each try to create their tables."""
    import dagster as dg

    from resources import build_resources

    os.environ["DAGSTER_HOME"] = dagster_home
    Path(dagster_home).mkdir(parents=True, exist_ok=True)
    # Two commands started at once on a new home: the second waits for the first to create the tables.
    with open(Path(dagster_home) / ".stores.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with dg.DagsterInstance.get():
            pass
    build_resources(settings)["tracking"].create_store()


def build(settings: Settings) -> int:
    """Materialize every step of the plan, phase by phase; stop after a phase in which a step failed."""
    with tempfile.TemporaryDirectory(prefix="cbi-run-") as scratch:
        env = {**_environment(settings), FAILURE_FILE: str(Path(scratch) / "causes.txt")}
        return _build(settings, env)


@contextlib.contextmanager
def _stopping_with(running: list):
    """Stop the steps' `dagster asset materialize` processes when this one is stopped: a SIGTERM (`kill`)
    reaches only this process, and its steps would otherwise run on, writing the lake, with nobody
    waiting for them. Each step's CLI then stops its run as it does on its own SIGTERM (marked failed)."""

    def stop(signum, frame):
        print(f"stopped (signal {signum}): stopping the running steps; their runs are marked failed", file=sys.stderr)
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        alive = [process for _, _, process in running if process.poll() is None]
        for process in alive:
            process.terminate()
        for process in alive:
            process.wait()


def _build(settings: Settings, env: dict[str, str]) -> int:
    dagster = str(Path(sys.executable).with_name("dagster"))
    steps = plan(settings)
    for note in available(settings)[1]:
        print(f"left out: {note}", flush=True)
    began = time.perf_counter()
    create_stores(settings, env["DAGSTER_HOME"])
    print(
        f"Building the asset graph from {settings.source} data through {settings.last_day}, profile "
        f"{settings.profile}, in {len(steps)} steps.",
        flush=True,
    )
    for phase in sorted({s.phase for s in steps}):
        running = []
        started = time.perf_counter()
        with _stopping_with(running):
            for i, step in enumerate(steps, 1):
                if step.phase == phase:
                    print(f"\n[{i}/{len(steps)}] {step.what}\n  $ {' '.join(step.command('dagster'))}", flush=True)
                    running.append((i, step, subprocess.Popen(step.command(dagster), env=env, cwd=PROJECT_ROOT)))
            failed = [(i, step) for i, step, process in running if process.wait()]
        for i, step in failed:
            print(f"step {i} failed ({step.what}); open its run in the web UI (cbi dev) for the logs", file=sys.stderr)
        if failed:
            # Each step's CLI wrote the causes of its failed steps (cbi_assets.failures): they come last.
            causes = Path(env[FAILURE_FILE])
            if causes.is_file():
                print(causes.read_text().rstrip(), file=sys.stderr)
            return 1
        print(
            f"  steps {', '.join(str(i) for i, _, _ in running)} done in {time.perf_counter() - started:.0f}s "
            f"({time.perf_counter() - began:.0f}s since the start)",
            flush=True,
        )
    print(f"\nThe asset graph is materialized in {time.perf_counter() - began:.0f}s.")
    _print_results(settings, env["DAGSTER_HOME"])
    return 0


def _print_results(settings: Settings, dagster_home: str) -> None:
    import polars as pl

    from cbi_assets.warehouse import Warehouse

    # The configured warehouse, DuckDB or PostgreSQL: the same portable SQL reads either.
    warehouse = Warehouse(database=settings.warehouse, url=settings.warehouse_url)
    champions = (
        warehouse.query(
            # Beside the champion, the family with the lowest MASE and its Diebold-Mariano p-values: what merely
            # looked better, when the random walk kept the crown.
            "select c.asset as market, c.horizon, c.family as champion, c.mase, b.family as lowest_mase, "
            "b.mase as its_mase, b.dm_p_value as its_p, b.recent_dm_p_value as its_recent_p "
            "from models.leaderboard c join models.leaderboard b "
            "on b.asset = c.asset and b.horizon = c.horizon and b.rank = 1 where c.champion "
            "order by c.asset desc, c.horizon"
        ).with_columns(pl.col("mase", "its_mase").round(3), pl.col("its_p", "its_recent_p").round(4))
        if warehouse.exists("models.leaderboard")
        else "none yet"
    )
    # The latest-forecast views hold the rule of what is published; read them, not the history.
    views = warehouse.query(
        "select table_name from information_schema.tables where table_schema = 'predictions' "
        "and table_type = 'VIEW' order by table_name"
    )["table_name"].to_list()
    columns = (
        "asset as market, horizon, cast(as_of as date) as as_of, family, price, forecast_price as forecast, "
        "lower_90_price as low_90, upper_90_price as high_90, conviction, confidence, "
        "case when edge like 'beats%' then 'beats the random walk' else 'no edge' end as edge"
    )
    forecasts = (
        warehouse.query(
            " union all ".join(f"select {columns} from predictions.{v}" for v in views)
            + " order by market desc, horizon"
        ).with_columns(
            pl.col("price", "forecast", "low_90", "high_90").round(2), pl.col("conviction", "confidence").round(2)
        )
        if views
        else None
    )
    with pl.Config(
        tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
    ):
        print(
            "\nChampions on the walk-forward folds (a family is crowned only when its Diebold-Mariano test beats "
            "the random walk on all folds and the recent third; otherwise the random walk is champion):"
        )
        print(champions)
        print("\nLatest published forecasts (warehouse views predictions.vw_<market>_<horizon>_latest):")
        print(forecasts if forecasts is not None else "none published yet")
    print(
        f"\nThe lake: {settings.lake} (its layout: cbi_assets/lake.py). The warehouse: {warehouse.location}. "
        f"MLflow: {settings.tracking_uri}.\nOpen the web UI for every asset, plot and run: cbi dev "
        f"(Dagster runs in {dagster_home})."
    )


def dev(extra: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    dagster = str(Path(sys.executable).with_name("dagster"))
    os.execve(dagster, [dagster, "dev", *extra], env)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="build the whole graph on the embedded sample")
    for name, text in (("run", "build the whole graph on a source"), ("plan", "print the steps of `cbi run`")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--source", choices=("sample", "local", "live"), default="sample")
        command.add_argument(
            "--local-dir", type=Path, help="the folder of files for --source local (the layout of ../shared/data/real)"
        )
        command.add_argument(
            "--profile",
            help="sample, full, or the path of your own profile (.toml); default: sample on the sample, else full",
        )
        command.add_argument("--end", type=dt.date.fromisoformat, help="the last day to take in (YYYY-MM-DD)")
        command.add_argument(
            "--set-aside",
            action="store_true",
            help="take a batch with impossible values (a price of 0, a high below the low) without them, and keep "
            "them aside in the raw layer, instead of refusing it (CBI_SET_ASIDE=1)",
        )
    commands.add_parser("dev", help="start the web UI")
    live = commands.add_parser(
        "live",
        help="the live MES service: every intraday horizon's forecast at every closed minute",
        description="Subscribe to Databento's live feed (DATABENTO_API_KEY) and, at every closed 1-minute bar, write "
        "the bars to the raw layer and each intraday horizon's forecast to predictions.history; or replay recorded "
        "records through the same path (--replay).",
    )
    live.add_argument(
        "--replay",
        nargs="+",
        metavar="DBN_OR_DAY",
        help="DBN files (e.g. MES ohlcv-1m, trades, tbbo, mbp-10 downloads), or one session date of the lake",
    )
    live.add_argument("--day", type=dt.date.fromisoformat, help="with DBN files: replay only this session")
    live.add_argument("--pace", type=float, help="replay at this multiple of the recorded speed (default: at once)")
    live.add_argument(
        "--last-minutes",
        type=int,
        help="replay only the session's last N minutes; the earlier ones are read from the lake as already received",
    )
    live.add_argument("--gateway", help="the live gateway's host (CBI_LIVE_GATEWAY; default: Databento's)")
    live.add_argument("--port", type=int, help="the live gateway's port (CBI_LIVE_PORT)")
    live.add_argument(
        "--ticks",
        action="store_true",
        help="also subscribe to trades, tbbo and mbp-10, for the microstructure features (CBI_LIVE_TICKS=1)",
    )
    return parser


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of a command: the environment's, with the command's options over them."""
    env = dict(os.environ)
    if args.command in ("run", "plan"):
        env["CBI_SOURCE"] = args.source
        if args.local_dir:
            env["CBI_LOCAL_DIR"] = str(args.local_dir.resolve())
        if args.profile:
            # Steps run in the project folder: a profile file is passed on by its full path.
            profile = Path(args.profile)
            env["CBI_PROFILE"] = str(profile.resolve()) if profile.suffix == ".toml" else args.profile
        if args.end:
            env["CBI_END"] = args.end.isoformat()
            if args.source == "sample":
                env["CBI_SAMPLE_END"] = args.end.isoformat()
        if args.set_aside:
            env["CBI_SET_ASIDE"] = "1"
    elif args.command != "live":  # the live service reads what the lake holds, whatever filled it
        env["CBI_SOURCE"] = "sample"
    return Settings.from_env(env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dev"]:  # everything after `dev` belongs to `dagster dev` (-h, -p, ...)
        return dev(argv[1:])
    args = _parser().parse_args(argv)
    try:
        settings = settings_for(args)
    except ValueError as error:
        print(f"cbi {args.command}: {error}", file=sys.stderr)
        return 2
    if args.command == "plan":
        for step in plan(settings):
            print(step.selection, step.partition_range or "-")
        return 0
    if args.command == "live":
        return _live(settings, args)
    done = build(settings)
    if args.command == "demo" and done == 0:
        return _live_demo(settings)
    return done


def _live_demo(settings: Settings) -> int:
    """The live service on the sample: the last half hour of its last session replayed, a few forecasts shown."""
    import polars as pl

    from cbi_assets.catalogue import MES
    from cbi_assets.features.inputs import MINUTE_DATASET
    from cbi_assets.lake import Lake
    from cbi_assets.live import run
    from cbi_assets.predictions import history
    from cbi_assets.warehouse import Warehouse

    days = Lake(root=str(settings.lake)).raw(MINUTE_DATASET).days()
    if not days:
        return 0
    print(f"\nThe live MES service, replaying the last 30 minutes of the session {days[-1]} (cbi live --replay):")
    run.configure_logging()
    run.replay_command(settings, [days[-1].isoformat()], None, None, last_minutes=30)
    stored = history.read(Warehouse(database=settings.warehouse, url=settings.warehouse_url), MES)
    live = stored.filter((pl.col("pipeline") == "replay") & (pl.col("role") == "champion")).sort("as_of")
    with pl.Config(tbl_rows=12, tbl_cols=10, tbl_width_chars=160):
        print(
            live.select(
                "horizon",
                "as_of",
                "family",
                "price",
                "forecast_price",
                "lower_90_price",
                "upper_90_price",
                "conviction",
                "confidence",
            )
            .tail(8)
            .with_columns(pl.col(pl.Float64).round(3))
        )
    return 0


def _live(settings: Settings, args: argparse.Namespace) -> int:
    from cbi_assets.live import run

    run.configure_logging()
    if args.replay:
        run.replay_command(settings, args.replay, args.day, args.pace, args.last_minutes)
        return 0
    gateway = args.gateway or os.environ.get("CBI_LIVE_GATEWAY")
    port = args.port or (int(os.environ["CBI_LIVE_PORT"]) if os.environ.get("CBI_LIVE_PORT") else None)
    ticks = args.ticks or os.environ.get("CBI_LIVE_TICKS", "") in ("1", "true", "yes")
    return run.live(settings, gateway, port, ticks)


if __name__ == "__main__":
    sys.exit(main())
