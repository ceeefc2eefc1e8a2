"""The live service's health in Dagster (its status file judged by the checks of `mes/live/service`, in and out of
the Globex session), and the daily validation scoring the live rows of predictions.history with the evening's."""

import datetime as dt
import json
import math
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.catalogue import EXCHANGE_TIMEZONE, MES
from cbi_assets.lake import Lake, live_status, warehouse_file
from cbi_assets.live import health
from cbi_assets.monitoring import outcomes, validation
from cbi_assets.predictions import history
from cbi_assets.warehouse import Warehouse

UTC = dt.UTC
# Wednesday 19 November 2025, 09:00 Chicago (15:00 UTC): the session of that trade date is open.
IN_SESSION = dt.datetime(2025, 11, 19, 15, 0, tzinfo=UTC)
SATURDAY = dt.datetime(2025, 11, 22, 15, 0, tzinfo=UTC)
FRESH_OP, HORIZONS_OP = "mes__live__service_last_bar_is_fresh", "mes__live__service_every_horizon_forecasts"


def _status(last_bar_close: dt.datetime | None, written_at: dt.datetime, failed: dict | None = None) -> dict:
    """A status as `LiveService.status()` writes it."""
    return {
        "last_bar_close": last_bar_close.isoformat() if last_bar_close else None,
        "written_at": written_at.isoformat(),
        "records": 5_000,
        "bars": 120,
        "duplicates": 2,
        "late": 0,
        "forecasts": 1_400,
        "horizons": sorted({"1min", "5min", "15min", "30min", "1h", "4h"} - set(failed or {})),
        "failed": failed or {},
        "p50_ms": 12.5,
        "p99_ms": 80.0,
        "missing": [],
    }


def _write(root: Path, status: dict) -> Path:
    path = live_status(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(status))
    return path


def _run_checks(root: Path, now: dt.datetime) -> dict[str, dg.AssetCheckEvaluation]:
    """The live health job on a lake at `root`, judged at `now`, through Dagster."""
    location = dg.Definitions(
        assets=[health.live_service],
        asset_checks=health.LIVE_CHECKS,
        jobs=[health.live_health],
        resources={"lake": Lake(root=str(root))},
    )
    config = {"config": {"now": now.isoformat()}}
    result = location.resolve_job_def(health.live_health.name).execute_in_process(
        run_config={"ops": {FRESH_OP: config, HORIZONS_OP: config}}
    )
    assert result.success
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


# --- Through Dagster ----------------------------------------------------------------------------


def test_a_fresh_bar_in_session_passes(tmp_path):
    _write(tmp_path, _status(IN_SESSION - dt.timedelta(minutes=1), IN_SESSION - dt.timedelta(seconds=3)))
    checks = _run_checks(tmp_path, IN_SESSION)
    fresh = checks["last_bar_is_fresh"]
    assert fresh.passed and "1.0 min ago" in fresh.description
    assert fresh.metadata["bar_age_minutes"].value == 1.0
    assert fresh.metadata["forecasts"].value == 1_400 and fresh.metadata["p99_ms"].value == 80.0
    assert checks["every_horizon_forecasts"].passed


def test_a_bar_ten_minutes_old_in_session_fails_naming_its_age(tmp_path):
    _write(tmp_path, _status(IN_SESSION - dt.timedelta(minutes=10), IN_SESSION - dt.timedelta(seconds=3)))
    fresh = _run_checks(tmp_path, IN_SESSION)["last_bar_is_fresh"]
    assert fresh.passed is False and fresh.severity == dg.AssetCheckSeverity.ERROR
    assert "closed at 2025-11-19T14:50:00+00:00, 10 min ago, more than the 5 allowed" in fresh.description
    assert "the feed delivers no bars" in fresh.description  # the process writes its status: it runs
    assert fresh.metadata["bar_age_minutes"].value == 10.0
    assert fresh.metadata["last_bar_close"].value == "2025-11-19T14:50:00+00:00"


def test_no_status_file_in_session_fails_saying_to_start_the_service(tmp_path):
    checks = _run_checks(tmp_path, IN_SESSION)
    fresh = checks["last_bar_is_fresh"]
    assert fresh.passed is False and fresh.severity == dg.AssetCheckSeverity.ERROR
    assert "cbi live" in fresh.description and str(live_status(tmp_path)) in fresh.description
    assert checks["every_horizon_forecasts"].passed  # nothing to judge: the freshness check says it


def test_on_a_weekend_the_market_is_closed(tmp_path):
    friday_close = dt.datetime(2025, 11, 21, 22, 0, tzinfo=UTC)  # 16:00 Chicago
    # A service that made no forecast has no latencies yet: null, shown as such.
    _write(tmp_path, {**_status(friday_close, friday_close + dt.timedelta(minutes=5)), "p50_ms": None, "p99_ms": None})
    fresh = _run_checks(tmp_path, SATURDAY)["last_bar_is_fresh"]
    assert fresh.passed and "the market is closed" in fresh.description
    assert fresh.metadata["last_bar_close"].value == friday_close.isoformat()
    assert fresh.metadata["p99_ms"] == dg.MetadataValue.null()


def test_a_horizon_without_a_model_warns(tmp_path):
    failed = {"4h": "MlflowException: no registered champion of cbi-MES-4h"}
    _write(tmp_path, _status(IN_SESSION - dt.timedelta(minutes=1), IN_SESSION, failed))
    checks = _run_checks(tmp_path, IN_SESSION)
    horizons = checks["every_horizon_forecasts"]
    assert horizons.passed is False and horizons.severity == dg.AssetCheckSeverity.WARN
    assert "4h: MlflowException: no registered champion" in horizons.description
    assert checks["last_bar_is_fresh"].passed  # the other horizons forecast on fresh bars


# --- The judging, at the session's edges --------------------------------------------------------


def _judge(status: dict | None, now: dt.datetime) -> dg.AssetCheckResult:
    return health.bar_freshness(status, Path("status.json"), now, max_age_minutes=5)


def test_the_daily_break_and_an_exchange_holiday_are_not_sessions():
    last_close = dt.datetime(2025, 11, 19, 22, 0, tzinfo=UTC)  # Wednesday 16:00 Chicago
    assert _judge(_status(last_close, last_close), last_close + dt.timedelta(minutes=30)).passed
    assert health.open_session(dt.datetime(2025, 11, 27, 15, 0, tzinfo=UTC)) is None  # Thanksgiving
    assert health.open_session(IN_SESSION) == (
        dt.datetime(2025, 11, 18, 23, 0, tzinfo=UTC),
        dt.datetime(2025, 11, 19, 22, 0, tzinfo=UTC),
    )
    sunday_evening = dt.datetime(2025, 11, 23, 23, 30, tzinfo=UTC)  # 17:30 Chicago: Monday's session
    assert health.open_session(sunday_evening) is not None


def test_a_half_day_is_not_judged_after_its_early_halt():
    """The day after Thanksgiving and July 3 halt at midday Chicago: their afternoons have no bars to expect."""
    halted = dt.datetime(2025, 11, 28, 18, 0, tzinfo=UTC)  # 12:00 Chicago
    assert health.open_session(halted - dt.timedelta(minutes=30)) == (
        dt.datetime(2025, 11, 27, 23, 0, tzinfo=UTC),
        halted,
    )
    afternoon = halted + dt.timedelta(hours=2)
    assert health.open_session(afternoon) is None
    assert _judge(_status(halted, afternoon), afternoon).passed
    assert not _judge(_status(halted - dt.timedelta(minutes=30), halted), halted - dt.timedelta(minutes=1)).passed
    july_3 = dt.datetime(2025, 7, 3, 19, 0, tzinfo=UTC)  # 14:00 Chicago, after the 12:00 halt
    assert (
        health.open_session(july_3) is None and _judge(_status(july_3 - dt.timedelta(hours=2), july_3), july_3).passed
    )


def test_the_age_counts_from_the_session_open_and_says_when_the_process_is_gone():
    last_close = dt.datetime(2025, 11, 19, 22, 0, tzinfo=UTC)
    opens = dt.datetime(2025, 11, 19, 23, 0, tzinfo=UTC)  # Thursday's session, 17:00 Chicago
    assert _judge(_status(last_close, opens), opens + dt.timedelta(minutes=3)).passed  # no bar due yet
    late = _judge(_status(last_close, opens), opens + dt.timedelta(minutes=10))
    assert not late.passed and "no bar since the session opened 10 min ago" in late.description
    assert "`cbi live` is not running" in late.description  # its status is as old as its last write
    none_yet = _judge(_status(None, opens), opens + dt.timedelta(minutes=8))
    assert not none_yet.passed and "no bar since the session opened 8 min ago" in none_yet.description


# --- The code location --------------------------------------------------------------------------


def test_the_code_location_holds_the_checks_their_job_and_schedule():
    from cbi_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == health.LIVE_SERVICE}
    assert checks == {"last_bar_is_fresh", "every_horizon_forecasts"}
    job = defs.resolve_job_def("mes_live_health")
    assert {n.name for n in job.nodes} == {FRESH_OP, HORIZONS_OP}
    schedule = defs.resolve_schedule_def("mes_live_health")
    assert schedule.job_name == "mes_live_health" and schedule.cron_schedule == "*/5 * * * *"
    assert schedule.execution_timezone == EXCHANGE_TIMEZONE
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


# --- Validation of live rows --------------------------------------------------------------------

BARS_FROM = dt.datetime(2025, 11, 19, 14, 0, tzinfo=UTC)


def _bars(lake: Lake, minutes: int = 31) -> list[float]:
    """MES 1-minute bars closing at 14:00 .. 14:30 UTC, rising a tick a minute."""
    close = [6000.0 + 0.25 * i for i in range(minutes)]
    frame = pl.DataFrame(
        {
            "ts": [BARS_FROM + dt.timedelta(minutes=i) for i in range(minutes)],
            "close": close,
            "high": [c + 0.25 for c in close],
            "low": [c - 0.25 for c in close],
            "adj": [1.0] * minutes,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    lake.write(tables.BARS, frame, timeframe="1min")
    return close


def _rows(close: list[float], minutes: list[int], roles: dict[str, str]) -> pl.DataFrame:
    """1min forecasts of no change (a 2-tick interval) at the bar closes `minutes` after 14:00, one per role."""
    rows = []
    for i in minutes:
        as_of, price = BARS_FROM + dt.timedelta(minutes=i), close[i]
        for role, version in roles.items():
            rows.append(
                {
                    "asset": "MES",
                    "horizon": "1min",
                    "as_of": as_of,
                    "target_time": as_of + dt.timedelta(minutes=1),
                    "model_version": version,
                    "run_id": "r" * 32,
                    "family": "lightgbm",
                    "role": role,
                    "source": role,
                    "price": price,
                    "forecast_return": 0.0,
                    "forecast_price": price,
                    **{
                        f"{side}_{level}": s * 0.0001 for side, s in (("lower", -1), ("upper", 1)) for level in (80, 90)
                    },
                    **{
                        f"{side}_{level}_price": price * math.exp(s * 0.0001)
                        for side, s in (("lower", -1), ("upper", 1))
                        for level in (80, 90)
                    },
                    "regime": "trump_2025",
                    "state": "calm",
                    "drivers": "[]",
                    "published_at": as_of + dt.timedelta(milliseconds=40),
                    "dagster_run_id": None,
                }
            )
    return pl.DataFrame(rows).with_columns(pl.col("dagster_run_id").cast(pl.String))


CHAMPION, CHALLENGER = "cbi-MES-1min/3", "cbi-MES-1min/4"


def _published(root: Path) -> tuple[Lake, Warehouse]:
    """An evening row without the pipeline column (the history before the live service), then ten minutes of live
    champion and challenger rows, and one live origin whose minute has not closed in the lake yet."""
    lake, warehouse = Lake(root=str(root)), Warehouse(database=str(warehouse_file(root)))
    close = _bars(lake)
    assert history.append(warehouse, _rows(close, [20], {"champion": CHAMPION})) == 1
    live = _rows(close, [*range(1, 11), 30], {"champion": CHAMPION, "challenger": CHALLENGER})
    assert history.append(warehouse, live.with_columns(pl.lit("live").alias("pipeline"))) == 22
    return lake, warehouse


def test_validation_scores_live_rows_with_the_evening_ones(tmp_path):
    lake, warehouse = _published(tmp_path)
    # What the validation asset does for one horizon (monitoring/assets.py, `work`).
    stored = history.read(warehouse, MES)
    assert stored.filter(pl.col("pipeline").is_null()).height == 1  # the evening row, from before the column
    rows = stored.filter(pl.col("horizon") == "1min")
    done = outcomes.matured(rows, lake, MES, MES.horizon("1min"))

    # 14:30 + 1 minute is past the last bar: every other origin, live or evening, matured, ten in one session.
    assert done.height == 21 and done["as_of"].max() == BARS_FROM + dt.timedelta(minutes=20)
    assert done.filter(pl.col("pipeline") == "live")["as_of"].n_unique() == 10
    assert done["actual_return"].to_list()[0] == pytest.approx(math.log(6000.5 / 6000.25))
    verdict = validation.status(done, validation.Rules.of(MES, "1min"))
    assert verdict["rows"] == 11 and verdict["status"] == "passed"  # the champion's 10 live rows and 1 evening
    assert verdict["coverage_90"] == 1.0 and verdict["mape"] == pytest.approx(100 * (1 - 6000 / 6000.25), rel=0.2)

    table = validation.metrics(done, outcomes.typical_move(lake, MES, MES.horizon("1min")))
    by_pipeline = {
        (r["model_version"], r["group_value"]): r["rows"]
        for r in table.filter(pl.col("group_kind") == "pipeline").iter_rows(named=True)
    }
    assert by_pipeline == {(CHAMPION, "live"): 10, (CHAMPION, validation.EVENING): 1, (CHALLENGER, "live"): 10}
    assert table.filter((pl.col("group_kind") == "all") & (pl.col("model_version") == CHAMPION))["rows"][0] == 11


@pytest.mark.integration
def test_the_validation_asset_scores_live_rows(tmp_path):
    from cbi_assets.monitoring.assets import MONITORING_ASSETS
    from cbi_assets_tests.conftest import lake_resources

    _published(tmp_path)
    mes = next(a for a in MONITORING_ASSETS if a.key == dg.AssetKey(["mes", "monitoring", "validation"]))
    result = dg.materialize([mes], partition_key="1min", resources=lake_resources(tmp_path))
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["mape_within_threshold"].passed and checks["coverage_within_5_points"].passed
    stored = Warehouse(database=str(warehouse_file(tmp_path)))
    [status] = stored.query("select * from monitoring.validation_status").to_dicts()
    assert (status["horizon"], status["rows"], status["status"]) == ("1min", 11, "passed")
    groups = stored.query("select group_value, rows from monitoring.validation where group_kind = 'pipeline'")
    assert sorted(groups.iter_rows()) == [("evening", 1), ("live", 10), ("live", 10)]
