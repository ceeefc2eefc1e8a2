"""The data sensors on a small lake and warehouse: a regime shift, a big move, a failed validation and a correlation
breakdown each lead to the runs (or the alert) they should, once; calm data leads to none."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import ZL
from cbi_assets.lake import Lake, warehouse_file
from cbi_assets.operations.triggers import (
    correlation_breakdowns,
    failed_validations,
    market_moves,
    new_shifts,
    regime_partition,
)
from cbi_assets.partitions import REGIME_PARTITIONS
from cbi_assets.warehouse import Warehouse
from cbi_assets_tests.test_schedules import code_location
from schedules.sensors import (
    correlation_breakdown_sensor,
    post_move_audit_sensor,
    regime_shift_sensor,
    validation_failure_sensor,
)

DAY = dt.date(2026, 11, 20)
SESSIONS = settlement_days(dt.date(2025, 6, 1), DAY)


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Path:
    for variable in ("CBI_ALERT_WEBHOOK", "CBI_ALERT_SMTP_HOST", "CBI_ALERT_MAIL_TO", "CBI_ALERT_MAIL_FROM"):
        monkeypatch.delenv(variable, raising=False)  # alerts stay in the warehouse: nothing is posted or mailed
    return tmp_path / "TrainingData"


def _write(root: Path, table: tables.Table, frame: pl.DataFrame, **parts) -> None:
    Lake(root=str(root)).write(table, frame, **parts)


def _read(root: Path, table: tables.Table, **parts) -> pl.DataFrame:
    return Lake(root=str(root)).read(table, **parts)


def _tick(sensor, location: dg.Definitions, instance, cursor: str | None = None):
    # The daemon gives a sensor the code location's resources and an instance reference (to check partition keys
    # against the dynamic partitions); a test context takes them explicitly.
    with dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        definitions=location,
        resources=location.resources,
    ) as context:
        return sensor.evaluate_tick(context)


# --- Regime shifts ------------------------------------------------------------------------------


def _shifts(*rows: tuple[dt.date, dt.date, str, str]) -> pl.DataFrame:
    schema = {"date": pl.Date, "since": pl.Date, "from_state": pl.String, "to_state": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _write_regimes(lake: Path, horizon: str, shifts: pl.DataFrame, through: dt.date = DAY) -> None:
    _write(
        lake,
        tables.REGIME_STATE,
        pl.DataFrame({"date": [d for d in SESSIONS if d <= through]}),
        market=ZL,
        horizon=horizon,
    )
    _write(lake, tables.REGIME_SHIFTS, shifts, market=ZL, horizon=horizon)


def test_new_shifts_on_first_look_takes_the_last_five_sessions():
    shifts = _shifts(
        (dt.date(2026, 1, 9), dt.date(2026, 1, 5), "normal", "calm"),
        (dt.date(2026, 11, 13), dt.date(2026, 11, 9), "calm", "stressed"),  # 6 sessions back
        (dt.date(2026, 11, 16), dt.date(2026, 11, 10), "normal", "stressed"),
    )  # 5 sessions back
    found = new_shifts(shifts, pl.Series(SESSIONS), None)
    assert found["partition"].to_list() == ["detected_stressed_20261110"]
    assert new_shifts(shifts, pl.Series(SESSIONS), dt.date(2026, 1, 8))["date"].to_list() == [
        dt.date(2026, 1, 9),
        dt.date(2026, 11, 13),
        dt.date(2026, 11, 16),
    ]
    assert regime_partition("crisis", dt.date(2026, 3, 2)) == "detected_crisis_20260302"
    with pytest.raises(ValueError, match="to_state"):
        new_shifts(shifts.drop("to_state"), pl.Series(SESSIONS), None)


def test_a_regime_shift_adds_its_partition_and_trains_once(lake):
    old = (dt.date(2026, 3, 6), dt.date(2026, 3, 2), "normal", "calm")
    stressed = (dt.date(2026, 11, 17), dt.date(2026, 11, 10), "normal", "stressed")
    _write_regimes(lake, "1w", _shifts(old, stressed))
    _write_regimes(lake, "1m", _shifts(old, (dt.date(2026, 11, 19), dt.date(2026, 11, 10), "normal", "stressed")))
    _write_regimes(lake, "3m", _shifts(old))
    location = code_location(lake)
    with dg.instance_for_test() as instance:
        result = _tick(regime_shift_sensor, location, instance)
        partition = "detected_stressed_20261110"
        [add] = result.dynamic_partitions_requests
        assert add.partitions_def_name == REGIME_PARTITIONS.name and list(add.partition_keys) == [partition]
        assert [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests] == [
            ("zl_specialists", partition, f"regime-shift:zl:{partition}"),
            ("zl_retrain", "1w", f"retrain:zl:1w:{partition}"),
            ("zl_retrain", "1m", f"retrain:zl:1m:{partition}"),
        ]
        assert all(r.tags["cbi/regime"] == partition for r in result.run_requests)

        again = _tick(regime_shift_sensor, location, instance, cursor=result.cursor)
        assert not again.run_requests and not again.dynamic_partitions_requests

        # A later shift of 3m to crisis, with the stressed partition already known: only the new one.
        instance.add_dynamic_partitions(REGIME_PARTITIONS.name, [partition])
        later = dt.date(2026, 11, 23)
        _write_regimes(lake, "3m", _shifts(old, (later, dt.date(2026, 11, 18), "normal", "crisis")), through=later)
        result = _tick(regime_shift_sensor, location, instance, cursor=again.cursor)
        assert [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests] == [
            ("zl_specialists", "detected_crisis_20261118", "regime-shift:zl:detected_crisis_20261118"),
            ("zl_retrain", "3m", "retrain:zl:3m:detected_crisis_20261118"),
        ]
        assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["detected_crisis_20261118"]]


# --- Big moves ----------------------------------------------------------------------------------


def _write_market(
    lake: Path,
    *,
    vix: float = 18.0,
    zl_move: float = 0.004,
    dollar_move: float = 0.001,
    brl_move: float = -0.002,
    roll_jump: float = 0.0,
) -> None:
    """Twenty calm sessions through DAY, then the given moves on DAY. `roll_jump` moves the raw ZL close on DAY with
    a matching roll adjustment, so the adjusted close does not move by it."""
    days = SESSIONS[-20:]
    n = len(days)
    _write(lake, tables.SHARED_LAYER, pl.DataFrame({"date": days, "vix": [17.0] * (n - 1) + [vix]}), layer="volatility")
    close = [50.0] * (n - 1) + [50.0 * (1 + zl_move) * (1 + roll_jump)]
    adj = [1.0] * (n - 1) + [1.0 / (1 + roll_jump)]
    zl = pl.DataFrame({"date": days, "close": close, "adj": adj, "symbol": ["zl"] * n})
    cl = pl.DataFrame({"date": days, "close": [70.0] * (n - 1) + [80.0], "adj": [1.0] * n, "symbol": ["cl"] * n})
    _write(lake, tables.CONTINUOUS, pl.concat([cl, zl]), market=ZL)
    _write(
        lake,
        tables.SHARED_LAYER,
        pl.DataFrame({"date": days, "broad_dollar": [120.0] * (n - 1) + [120.0 * (1 + dollar_move)]}),
        layer="macro",
    )
    _write(
        lake,
        tables.SHARED_LAYER,
        pl.DataFrame({"date": days, "usd_brl": [5.0] * (n - 1) + [5.0 * (1 + brl_move)]}),
        layer="fx",
    )


def _frames(lake: Path) -> list[pl.DataFrame]:
    return [
        _read(lake, tables.SHARED_LAYER, layer="volatility"),
        _read(lake, tables.CONTINUOUS, market=ZL),
        _read(lake, tables.SHARED_LAYER, layer="macro"),
        _read(lake, tables.SHARED_LAYER, layer="fx"),
    ]


def test_market_moves_reads_the_newest_day_and_the_adjusted_close(lake):
    _write_market(lake, roll_jump=0.05)  # a roll: the raw close jumps 5%, the adjusted close does not
    assert market_moves(*_frames(lake)) == (DAY, [])
    _write_market(lake, vix=26.0, zl_move=-0.021, dollar_move=0.031, brl_move=-0.035)
    day, moved = market_moves(*_frames(lake))
    assert day == DAY
    assert moved == [
        "VIX 26.0 > 25",
        "ZL -2.1% in a day (limit 2%)",
        "broad dollar +3.1% in a day (limit 3%)",
        "USD/BRL -3.5% in a day (limit 3%)",
    ]


@pytest.mark.parametrize(
    ("moves", "reason"),
    [
        ({"vix": 31.0}, "VIX 31.0 > 25"),
        ({"zl_move": 0.025}, "ZL +2.5% in a day (limit 2%)"),
    ],
    ids=["VIX spike", "ZL move"],
)
def test_a_big_move_starts_one_audit_of_the_day(lake, moves, reason):
    _write_market(lake, **moves)
    location = code_location(lake)
    with dg.instance_for_test() as instance:
        result = _tick(post_move_audit_sensor, location, instance)
        [request] = result.run_requests
        assert (request.job_name, request.run_key) == ("audit", f"audit:{DAY}")
        config = {"ops": {"monitoring__audit": {"config": {"reason": reason, "day": DAY.isoformat()}}}}
        assert request.run_config == config
        # The real audit job accepts that config.
        assert dg.validate_run_config(location.resolve_job_def("audit"), config)
        again = _tick(post_move_audit_sensor, location, instance, cursor=result.cursor)
        assert not again.run_requests and "already" in again.skip_message


def test_a_calm_day_is_skipped(lake):
    location = code_location(lake)
    with dg.instance_for_test() as instance:
        # Before the features are built, the skip says what to materialize.
        missing = _tick(post_move_audit_sensor, location, instance)
        assert not missing.run_requests and "materialize shared/features/volatility" in missing.skip_message
        assert "materialize zl/features/continuous_1d" in missing.skip_message
        _write_market(lake, roll_jump=0.05)
        result = _tick(post_move_audit_sensor, location, instance)
        assert not result.run_requests and f"{DAY}: calm" in result.skip_message
        assert result.cursor == DAY.isoformat()


# --- Failed validations -------------------------------------------------------------------------


def _status_rows(warehouse: Warehouse, *rows: tuple[str, str, str, bool | None]) -> None:
    from cbi_assets.monitoring.assets import STATUS_TABLE, as_stored

    frame = pl.DataFrame(
        [
            {"asset": a, "horizon": h, "validated_on": dt.date.fromisoformat(d), "passed": p, "reason": f"{a} {h}"}
            for a, h, d, p in rows
        ]
    )
    warehouse.append("monitoring.validation_status", as_stored(frame, STATUS_TABLE))


def test_failed_validations_are_new_after_the_cursor():
    status = pl.DataFrame(
        {
            "asset": ["ZL", "ZL", "MES", "MES"],
            "horizon": ["1w", "1m", "1d", "3m"],
            "validated_on": [DAY, DAY, DAY, DAY],
            "passed": [False, True, False, None],
        }
    )
    assert failed_validations(status, None, set())["key"].to_list() == ["mes:1d", "zl:1w"]
    assert failed_validations(status, DAY, {"zl:1w"})["key"].to_list() == ["mes:1d"]
    assert failed_validations(status, DAY + dt.timedelta(days=1), set()).is_empty()


def test_a_failed_validation_retrains_that_horizon_once(lake):
    location = code_location(lake)
    lake.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test() as instance:
        result = _tick(validation_failure_sensor, location, instance)
        assert not result.run_requests and "does not exist" in result.skip_message
        warehouse = Warehouse(database=str(warehouse_file(lake)))
        _status_rows(
            warehouse,
            ("ZL", "1w", "2026-11-20", False),
            ("ZL", "1m", "2026-11-20", True),
            ("MES", "1d", "2026-11-19", False),
            ("MES", "3m", "2026-11-19", None),
        )
        result = _tick(validation_failure_sensor, location, instance)
        assert [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests] == [
            ("mes_retrain", "1d", "validation-failure:mes:1d:2026-11-19"),
            ("zl_retrain", "1w", "validation-failure:zl:1w:2026-11-20"),
        ]
        again = _tick(validation_failure_sensor, location, instance, cursor=result.cursor)
        assert not again.run_requests
        # Another horizon of the same day fails later: only that one.
        _status_rows(warehouse, ("ZL", "3m", "2026-11-20", False))
        later = _tick(validation_failure_sensor, location, instance, cursor=result.cursor)
        assert [r.run_key for r in later.run_requests] == ["validation-failure:zl:3m:2026-11-20"]


# --- Correlation breakdowns ---------------------------------------------------------------------


def _write_cross(lake: Path, last_cl: float, sessions: int = 300) -> None:
    rng = np.random.default_rng(7)
    days = SESSIONS[-sessions:]
    cl = 0.5 + 0.02 * rng.standard_normal(len(days))
    ho = 0.4 + 0.02 * rng.standard_normal(len(days))
    cl[-1] = last_cl
    _write(
        lake,
        tables.SHARED_LAYER,
        pl.DataFrame({"date": days, "zl_cl_corr_63": cl, "zl_ho_corr_63": ho}),
        layer="cross_asset",
    )


def test_correlation_breakdowns_measure_against_the_year_before(lake):
    _write_cross(lake, last_cl=0.2)
    found = correlation_breakdowns(_read(lake, tables.SHARED_LAYER, layer="cross_asset"))
    cl = found.filter(pl.col("pair") == "zl_cl").row(0, named=True)
    ho = found.filter(pl.col("pair") == "zl_ho").row(0, named=True)
    assert cl["breakdown"] and cl["day"] == DAY and cl["departure"] > 10
    assert not ho["breakdown"]
    assert math.isclose(cl["mean"], 0.5, abs_tol=0.01) and math.isclose(cl["std"], 0.02, abs_tol=0.005)
    # Too little history for a norm: nothing to judge.
    assert correlation_breakdowns(_read(lake, tables.SHARED_LAYER, layer="cross_asset").tail(252)).is_empty()


def test_a_correlation_breakdown_raises_one_alert_and_no_run(lake):
    _write_cross(lake, last_cl=0.2)
    location = code_location(lake)
    with dg.instance_for_test() as instance:
        result = _tick(correlation_breakdown_sensor, location, instance)
        assert not result.run_requests
        assert "BREAKDOWN ZL/CL" in result.skip_message and "BREAKDOWN ZL/HO" not in result.skip_message
        with duckdb.connect(str(warehouse_file(lake))) as conn:
            rows = conn.execute("select kind, severity, asset, key, message from monitoring.alerts").fetchall()
        assert len(rows) == 1
        kind, severity, asset, key, message = rows[0]
        assert (kind, severity, asset, key) == ("correlation_breakdown", "warning", "ZL", f"correlation:zl_cl:{DAY}")
        assert "+0.20" in message
        again = _tick(correlation_breakdown_sensor, location, instance, cursor=result.cursor)
        assert "already" in again.skip_message
        with duckdb.connect(str(warehouse_file(lake))) as conn:
            assert conn.execute("select count(*) from monitoring.alerts").fetchone()[0] == 1
