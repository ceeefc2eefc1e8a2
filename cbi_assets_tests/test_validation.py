"""Realized outcomes, validation metrics and rules, and the validation asset on a hand-made lake."""

import datetime as dt
import math

import dagster as dg
import duckdb
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import MES, ZL, Market
from cbi_assets.lake import Lake, warehouse_file
from cbi_assets.monitoring import outcomes, validation
from cbi_assets.monitoring.assets import MONITORING_ASSETS
from cbi_assets.predictions import history as predictions
from cbi_assets.warehouse import Warehouse
from cbi_assets_tests.conftest import lake_resources

UTC = dt.UTC


def _continuous(root, market: Market, dates, close, adj) -> None:
    frame = pl.DataFrame({"date": dates, "close": close, "adj": adj, "symbol": market.key})
    Lake(root=str(root)).write(tables.CONTINUOUS, frame, market=market)


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), UTC)


# --- Outcomes -----------------------------------------------------------------------------------


def test_daily_outcomes_are_roll_adjusted_and_only_matured(tmp_path):
    days = settlement_days(dt.date(2024, 1, 2), dt.date(2024, 1, 16))[:10]
    close = [100.0, 101, 102, 103, 104, 110, 111, 112, 113, 114]
    # The roll into a contract 5% dearer on the sixth session: adjusted levels 105, 106.05, ..., 110, 111, ...
    _continuous(tmp_path, ZL, days, close, [1.05] * 5 + [1.0] * 5)
    as_of = [_at(days[2]), _at(days[4]), _at(days[5]), _at(dt.date(2024, 1, 6)), _at(days[0])]
    history = pl.DataFrame(
        {
            "asset": ["ZL", "ZL", "ZL", "ZL", "MES"],
            "horizon": ["1w", "1w", "1w", "1w", "1w"],
            "as_of": as_of,
            "price": [102.0, 104.0, 110.0, 100.0, 100.0],
            "model_version": "m/1",
        }
    ).with_columns(pl.col("as_of").dt.convert_time_zone("America/Chicago"))  # as DuckDB may hand it over

    done = outcomes.matured(history, Lake(root=str(tmp_path)), ZL, ZL.horizon("1w"))

    # days[5] needs a tenth session after it, 2024-01-06 is a Saturday, and the MES row is another asset.
    assert done["as_of"].to_list() == [_at(days[2]), _at(days[4])]
    # From days[2] to days[7]: adjusted 107.1 (102 x 1.05) to 112, not 102 to 112 across the roll.
    assert done["actual_return"].to_list() == pytest.approx([math.log(112 / 107.1), math.log(114 / 109.2)])
    assert done["actual_price"].to_list() == pytest.approx([112 / 1.05, 114 / 1.05])


def test_intraday_outcomes_count_minutes_on_adjusted_bars(tmp_path):
    ts = [dt.datetime(2024, 6, 3, 14, i, tzinfo=UTC) for i in range(1, 11)]
    close = [200.0 + i for i in range(1, 11)]
    bars = pl.DataFrame(
        {
            "ts": ts,
            "close": close,
            "high": [c + 0.5 for c in close],
            "low": [c - 0.5 for c in close],
            "adj": [0.5] * 3 + [1.0] * 7,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    lake = Lake(root=str(tmp_path))
    lake.write(tables.BARS, bars, timeframe="1min")
    history = pl.DataFrame(
        {
            "asset": "MES",
            "horizon": "5min",
            "as_of": [ts[1], ts[4], ts[5]],
            "price": [202.0, 205.0, 206.0],
            "model_version": "m/1",
        }
    )

    done = outcomes.matured(history, lake, MES, MES.horizon("5min"))

    # 14:06 + 5 minutes is past the last bar (14:10): not matured yet.
    assert done["as_of"].to_list() == [ts[1], ts[4]]
    # 14:02 (202 x 0.5 = 101) to 14:07 (207 x 1.0); 14:05 (205) to 14:10 (210).
    assert done["actual_return"].to_list() == pytest.approx([math.log(207 / 101), math.log(210 / 205)])
    assert done["actual_price"].to_list() == pytest.approx([202 * 207 / 101, 210.0])


def test_typical_move_counts_only_labels_matured_by_the_day(tmp_path):
    days = settlement_days(dt.date(2024, 1, 2), dt.date(2024, 3, 1))[:12]
    # 1d horizon of MES: moves of 1%, 2%, 3%, ... between consecutive sessions.
    close = [100.0]
    for i in range(1, 12):
        close.append(close[-1] * math.exp(0.01 * i))
    _continuous(tmp_path, MES, days, close, [1.0] * 12)
    lake, one_day = Lake(root=str(tmp_path)), MES.horizon("1d")
    assert outcomes.typical_move(lake, MES, one_day) == pytest.approx(0.06)  # median of 0.01 .. 0.11
    assert outcomes.typical_move(lake, MES, one_day, until=days[3]) == pytest.approx(0.02)  # 0.01, 0.02, 0.03


# --- Metrics and rules --------------------------------------------------------------------------


def _matured_rows() -> pl.DataFrame:
    """Four rows of model A, one of model B; prices and returns given directly, to check by hand."""
    return pl.DataFrame(
        {
            "model_version": ["A", "A", "A", "A", "B"],
            "role": ["champion"] * 4 + ["challenger"],
            "regime": ["r1", "r1", "r2", "r2", "r1"],
            "state": ["calm", "stressed", "stressed", "stressed", "calm"],
            "price": [100.0, 100.0, 200.0, 100.0, 100.0],
            "forecast_price": [110.0, 90.0, 200.0, 105.0, 100.0],
            "actual_price": [100.0, 120.0, 200.0, 100.0, 125.0],
            "forecast_return": [0.1, -0.1, 0.0, 0.05, 0.01],
            "actual_return": [0.0, 0.2, 0.0, 0.03, 0.01],
            "lower_80": [-0.05, -0.05, None, 0.0, None],
            "upper_80": [0.05, 0.05, None, 0.02, None],
            "lower_90": [-0.1, -0.3, None, 0.0, None],
            "upper_90": [0.2, 0.3, None, 0.04, None],
        }
    )


def _row(table: pl.DataFrame, version: str, kind: str, value: str) -> dict:
    rows = table.filter(
        (pl.col("model_version") == version) & (pl.col("group_kind") == kind) & (pl.col("group_value") == value)
    )
    assert rows.height == 1, (version, kind, value, table)
    return rows.row(0, named=True)


def test_metrics_by_version_and_group_checked_by_hand():
    table = validation.metrics(_matured_rows(), typical=0.05)
    a = _row(table, "A", "all", "all")
    assert a["rows"] == 4
    assert a["mape"] == pytest.approx((10 + 25 + 0 + 5) / 4)  # |110-100|/100, |90-120|/120, 0, |105-100|/100
    assert a["mae_return"] == pytest.approx((0.1 + 0.3 + 0.0 + 0.02) / 4)
    assert a["coverage_80"] == pytest.approx(1 / 3)  # rows 1, 2, 4 have intervals; 0 in [-.05, .05] only
    assert a["coverage_90"] == pytest.approx(1.0)
    assert a["direction_accuracy"] == pytest.approx(0.5)  # up vs flat, down vs up wrong; flat/flat, up/up right
    assert a["random_walk_mape"] == pytest.approx((0 + 20 / 120 * 100 + 0 + 0) / 4)
    assert _row(table, "A", "regime", "r1")["mape"] == pytest.approx(17.5)
    assert _row(table, "A", "regime", "r2")["mape"] == pytest.approx(2.5)
    assert _row(table, "A", "state", "stressed")["rows"] == 3
    # Typical move 0.05: |0| small (< 0.025), |0.2| large (> 0.075), |0.03| medium.
    assert _row(table, "A", "move_size", "small")["rows"] == 2
    assert _row(table, "A", "move_size", "large")["mape"] == pytest.approx(25.0)
    assert _row(table, "A", "move_size", "medium")["mae_return"] == pytest.approx(0.02)
    b = _row(table, "B", "all", "all")
    assert b["rows"] == 1 and b["mape"] == pytest.approx(20.0) and b["coverage_90"] is None
    assert set(table["group_kind"]) == {"all", "regime", "state", "move_size"}


def test_move_size_bands_at_their_edges():
    frame = pl.DataFrame({"actual_return": [0.0249, 0.025, -0.075, 0.0751, -0.2]})
    bands = frame.with_columns(validation.move_size(0.05))["move_size"].to_list()
    assert bands == ["small", "medium", "medium", "large", "large"]
    assert frame.with_columns(validation.move_size(None))["move_size"].to_list() == ["unknown"] * 5


def _champion_rows(n: int, ape: float, covered: int) -> pl.DataFrame:
    """n champion rows whose forecast misses the actual price by `ape` %; the first `covered` have the
    outcome inside their 90% interval."""
    return pl.DataFrame(
        {
            "model_version": "A",
            "role": "champion",
            "price": 100.0,
            "actual_price": 100.0,
            "forecast_price": 100.0 * (1 + ape / 100),
            "forecast_return": math.log(1 + ape / 100),
            "actual_return": 0.0,
            "lower_90": [-0.01 if i < covered else 0.01 for i in range(n)],
            "upper_90": 0.02,
        }
    )


def test_status_fails_on_mape_above_threshold_and_passes_within():
    rules = validation.Rules.of(ZL, "1w")
    assert rules.mape_threshold == 3.0
    bad = validation.status(_champion_rows(10, ape=10.0, covered=10), rules)
    assert bad["mape"] == pytest.approx(10.0) and bad["mape_ok"] is False and bad["coverage_ok"] is True
    assert bad["passed"] is False and bad["status"] == "failed" and "above the 3.0% threshold" in bad["reason"]
    good = validation.status(_champion_rows(10, ape=2.9, covered=10), rules)
    assert good["mape_ok"] is True and good["passed"] is True and good["status"] == "passed"


def test_status_fails_on_coverage_more_than_5_points_below_nominal():
    rules = validation.Rules.of(ZL, "1w")
    edge = validation.status(_champion_rows(20, ape=1.0, covered=17), rules)  # 85%: exactly 5 points below
    assert edge["coverage_90"] == pytest.approx(0.85) and edge["coverage_ok"] is True and edge["passed"] is True
    low = validation.status(_champion_rows(20, ape=1.0, covered=16), rules)  # 80%
    assert low["coverage_ok"] is False and low["mape_ok"] is True and low["passed"] is False
    assert "more than 5 points below 90%" in low["reason"]


def test_status_without_enough_champion_rows_is_not_a_failure():
    rules = validation.Rules.of(ZL, "1w")
    rows = pl.concat(
        [
            _champion_rows(4, ape=50.0, covered=0),
            _champion_rows(6, ape=50.0, covered=0).with_columns(pl.lit("challenger").alias("role")),
        ]
    )
    verdict = validation.status(rows, rules)  # the challenger's rows do not count
    assert verdict["status"] == validation.NOT_ENOUGH and verdict["rows"] == 4
    assert verdict["passed"] is True and verdict["mape_ok"] is None and verdict["coverage_ok"] is None
    assert validation.status(rows, validation.Rules.of(ZL, "1w", min_rows=4))["passed"] is False


def test_thresholds_cover_every_horizon_and_grow_with_it():
    from cbi_assets.catalogue import MARKETS

    for asset in MARKETS.values():
        for kind in (True, False):
            values = [validation.MAPE_THRESHOLDS[asset.symbol][h.name] for h in asset.horizons if h.intraday is kind]
            assert values == sorted(values) and len(set(values)) == len(values), (asset.symbol, values)
    with pytest.raises(KeyError, match="no MAPE threshold for ZL 1min"):
        validation.Rules.of(ZL, "1min")


# --- The validation asset -----------------------------------------------------------------------

DAYS = settlement_days(dt.date(2024, 1, 2), dt.date(2024, 4, 30))[:40]
STEP = 0.001  # log return per session of the hand-made ZL price: every 1w outcome is 5 x STEP


@pytest.fixture
def price_lake(tmp_path):
    _continuous(tmp_path, ZL, DAYS, [50.0 * math.exp(STEP * i) for i in range(len(DAYS))], [1.0] * len(DAYS))
    return tmp_path


def _history(ape: float, covered_every: int, origins: list[int]) -> pl.DataFrame:
    """Champion 1w forecasts `ape` % above the outcome; every `covered_every`-th 90% interval holds the outcome."""
    actual = 5 * STEP
    rows = []
    for n, i in enumerate(origins):
        price = 50.0 * math.exp(STEP * i)
        forecast = actual + math.log(1 + ape / 100)
        lower = actual - 0.01 if n % covered_every == 0 else forecast - 0.005
        upper = forecast + 0.01
        rows.append(
            {
                "asset": "ZL",
                "horizon": "1w",
                "as_of": _at(DAYS[i]),
                "target_time": _at(DAYS[min(i + 5, len(DAYS) - 1)]),
                "model_version": "cbi-ZL-1w/1",
                "run_id": "r" * 32,
                "family": "lightgbm",
                "role": "champion",
                "price": price,
                "forecast_return": forecast,
                "forecast_price": price * math.exp(forecast),
                "lower_80": lower,
                "upper_80": upper,
                "lower_90": lower,
                "upper_90": upper,
                "lower_80_price": price * math.exp(lower),
                "upper_80_price": price * math.exp(upper),
                "lower_90_price": price * math.exp(lower),
                "upper_90_price": price * math.exp(upper),
                "regime": "trump_2023_2025",
                "state": "calm" if i % 2 else "stressed",
                "conviction": 0.5,
                "confidence": 0.5,
                "drivers": "[]",
                "published_at": _at(DAYS[i]),
                "dagster_run_id": "run",
            }
        )
    return pl.DataFrame(rows)


def _publish(warehouse, history: pl.DataFrame) -> None:
    store = Warehouse(database=str(warehouse))
    store.execute("drop table if exists predictions.history")
    assert predictions.append(store, history) == history.height


def _validate(lake, warehouse, config: dict | None = None):
    zl = next(a for a in MONITORING_ASSETS if a.key == dg.AssetKey(["zl", "monitoring", "validation"]))
    run_config = {"ops": {"zl__monitoring__validation": {"config": config}}} if config else None
    assert warehouse == warehouse_file(lake)  # the warehouse of `lake_resources`
    return dg.materialize(
        [zl], partition_key="1w", raise_on_error=False, run_config=run_config, resources=lake_resources(lake)
    )


def _checks(result) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _status(warehouse) -> list[dict]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.sql("select * from monitoring.validation_status order by horizon").pl().to_dicts()


@pytest.mark.integration
def test_validation_asset_fails_its_checks_on_a_bad_champion_then_passes_a_good_one(price_lake):
    warehouse = warehouse_file(price_lake)
    # 20 matured origins and 4 whose week has not ended (sessions 36..39 of 40).
    origins = list(range(20)) + [36, 37, 38, 39]
    _publish(warehouse, _history(ape=10.0, covered_every=2, origins=origins))
    result = _validate(price_lake, warehouse)
    assert result.success
    checks = _checks(result)
    assert checks["mape_within_threshold"].passed is False
    assert checks["mape_within_threshold"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["coverage_within_5_points"].passed is False
    assert checks["coverage_within_5_points"].severity == dg.AssetCheckSeverity.ERROR
    [status] = _status(warehouse)
    assert (status["asset"], status["horizon"], status["rows"]) == ("ZL", "1w", 20)
    assert status["mape"] == pytest.approx(10.0) and status["coverage_90"] == pytest.approx(0.5)
    assert status["mape_ok"] is False and status["coverage_ok"] is False and status["passed"] is False
    assert status["mape_threshold"] == 3.0 and status["coverage_nominal"] == 0.9
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        rows = conn.sql("select * from monitoring.validation").pl()
    every = rows.filter(pl.col("group_kind") == "all").row(0, named=True)
    assert every["rows"] == 20 and every["mape"] == pytest.approx(10.0) and every["coverage_90"] == pytest.approx(0.5)
    assert every["random_walk_mape"] == pytest.approx(100 * (1 - math.exp(-5 * STEP)))
    assert every["direction_accuracy"] == 1.0
    assert set(rows.filter(pl.col("group_kind") == "state")["group_value"]) == {"calm", "stressed"}
    metadata = result.asset_materializations_for_node(result.all_node_events[0].node_name)[0].metadata
    assert {"forecast_vs_actual_1w", "error_by_group_1w", "metrics_1w", "status"} <= set(metadata)

    # A desk that accepts 12% on 1w says so in the run's config: the MAPE check passes, coverage still fails.
    checks = _checks(_validate(price_lake, warehouse, {"mape_thresholds": {"1w": 12.0}}))
    assert checks["mape_within_threshold"].passed and not checks["coverage_within_5_points"].passed
    assert _status(warehouse)[0]["mape_threshold"] == 12.0

    # The same day again with a good champion: its rows replace the earlier ones.
    _publish(warehouse, _history(ape=0.0, covered_every=1, origins=origins))
    result = _validate(price_lake, warehouse)
    checks = _checks(result)
    assert checks["mape_within_threshold"].passed and checks["coverage_within_5_points"].passed
    [status] = _status(warehouse)
    assert status["passed"] is True and status["mape"] == pytest.approx(0.0) and status["coverage_90"] == 1.0
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        assert conn.sql("select count(*) from monitoring.validation where group_kind = 'all'").fetchall()[0][0] == 1


@pytest.mark.integration
def test_validation_asset_without_enough_or_any_predictions_passes_and_says_so(price_lake):
    warehouse = warehouse_file(price_lake)
    result = _validate(price_lake, warehouse)  # no predictions.history at all
    assert result.success
    checks = _checks(result)
    assert all(c.passed for c in checks.values())
    assert validation.NO_PREDICTIONS in checks["mape_within_threshold"].description
    [status] = _status(warehouse)
    assert status["status"] == validation.NO_PREDICTIONS and status["rows"] == 0

    _publish(warehouse, _history(ape=10.0, covered_every=2, origins=[0, 1, 2, 36]))
    result = _validate(price_lake, warehouse)
    checks = _checks(result)
    assert all(c.passed for c in checks.values())
    assert "not enough matured predictions: 3 of the 5 needed" in checks["coverage_within_5_points"].description
    [status] = _status(warehouse)
    assert status["status"] == validation.NOT_ENOUGH and status["rows"] == 3 and status["mape_ok"] is None
