"""Backtests: the procurement rule and the trading backtest on hand-checked tiny cases, their
constraints and causality, and both assets materialized by Dagster."""

import datetime as dt
import itertools
import math
import statistics

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.backtests.assets import BACKTEST_ASSETS, mes_trading
from cbi_assets.backtests.procurement import (
    POUNDS_PER_CONTRACT,
    ProcurementPlan,
    month_quantities,
    procure,
    procurement_summary,
)
from cbi_assets.backtests.trading import backtest, drawdown, trade_periods
from cbi_assets.catalogue import MES, ZL
from cbi_assets.lake import warehouse_file
from cbi_assets_tests.conftest import lake_resources

# --- Procurement: a hand-checked two-month path ------------------------------------------------

# Two months of three sessions; the forecast at each session is the next session's log move (perfect
# foresight of one day). A huge gain makes every non-zero forecast saturate the rule: a rise buys all it
# may (cap 3 even days = the whole month), a fall defers everything it can.
JAN = [(dt.date(2024, 1, 2), 10.0), (dt.date(2024, 1, 3), 12.0), (dt.date(2024, 1, 4), 11.0)]
FEB = [(dt.date(2024, 2, 1), 10.0), (dt.date(2024, 2, 2), 9.0), (dt.date(2024, 2, 5), 12.0)]
FORESIGHT = ProcurementPlan(volume=3.0, cap=3.0, gain=1e6, cost_bps=0.0, scale_min_rows=1, min_sessions=1, lag=0)


def _path(rows=JAN + FEB, forecast=None) -> pl.DataFrame:
    prices = [p for _, p in rows]
    if forecast is None:
        forecast = [math.log(b / a) for a, b in itertools.pairwise(prices)] + [0.0]
    return pl.DataFrame({"date": [d for d, _ in rows], "price": prices, "forecast": forecast})


def test_perfect_foresight_saves_the_hand_computed_amount():
    sessions, months = procure(_path(), FORESIGHT)
    # Jan: no forecast history on the first day, so it buys as TWAP (1 @ 10); the 2nd forecasts a fall
    # and defers; the last buys the 2 left @ 11. Feb: the 1st forecasts a fall (defer), the 2nd a rise
    # (all 3 @ 9), nothing is left for the last.
    assert sessions["strategy_quantity"].to_list() == pytest.approx([1, 0, 2, 0, 3, 0])
    assert months["strategy_paid"].to_list() == pytest.approx([32 / 3, 9.0])
    assert months["twap_paid"].to_list() == pytest.approx([11.0, 31 / 3])
    assert months["first_day_paid"].to_list() == pytest.approx([10.0, 10.0])
    assert months["savings_vs_twap"].to_list() == pytest.approx([1 / 3, 4 / 3])
    assert months["savings_vs_first_day"].to_list() == pytest.approx([-2 / 3, 1.0])
    # cents/lb -> dollars: 3 contracts of 60,000 lb
    assert months["savings_vs_twap_usd"].to_list() == pytest.approx([600.0, 2400.0])
    assert months["cumulative_usd_vs_twap"].to_list() == pytest.approx([600.0, 3000.0])
    assert months["strategy_trades"].to_list() == [2, 1] and months["twap_trades"].to_list() == [3, 3]

    total = procurement_summary(months)
    assert total["strategy_paid"] == pytest.approx(59 / 6) and total["twap_paid"] == pytest.approx(32 / 3)
    assert total["savings_vs_twap"] == pytest.approx(5 / 6)
    assert total["savings_vs_twap_pct"] == pytest.approx(100 * (5 / 6) / (32 / 3))
    assert total["savings_vs_first_day"] == pytest.approx(1 / 6)
    assert total["hit_rate_vs_twap"] == 1.0 and total["hit_rate_vs_first_day"] == 0.5
    assert total["savings_vs_twap_usd"] == pytest.approx(3000.0)


def test_costs_reduce_savings_by_the_hand_computed_amount():
    plan = ProcurementPlan(**{**FORESIGHT.__dict__, "cost_bps": 10.0, "slippage_bps": 5.0})
    _, months = procure(_path(), plan)
    jan = months.row(0, named=True)
    # Every unit pays 10 bp plus 5 bp per even day's volume bought that session (even = 1 contract).
    strategy = (1 * 10 * (1 + 15e-4) + 2 * 11 * (1 + 20e-4)) / 3
    twap = 11 * (1 + 15e-4)
    first = 10 * (1 + 25e-4)
    assert jan["strategy_paid"] == pytest.approx(strategy) and jan["twap_paid"] == pytest.approx(twap)
    assert jan["first_day_paid"] == pytest.approx(first)
    assert jan["savings_vs_twap"] == pytest.approx(twap - strategy)
    assert jan["savings_vs_twap_gross"] == pytest.approx(1 / 3)
    assert jan["savings_vs_twap"] == pytest.approx(1 / 3 - (10 * 15e-4 + 22 * 20e-4) / 3 + 11 * 15e-4)
    assert jan["savings_vs_first_day"] == pytest.approx(first - strategy)


def test_a_forecast_of_zero_buys_as_twap():
    rng = np.random.default_rng(3)
    days = pl.date_range(dt.date(2023, 1, 2), dt.date(2023, 6, 30), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    frame = pl.DataFrame(
        {"date": days, "price": 40 + np.cumsum(rng.normal(0, 0.5, days.len())), "forecast": np.zeros(days.len())}
    )
    sessions, months = procure(frame, ProcurementPlan(cost_bps=3.0, slippage_bps=2.0))
    assert np.allclose(sessions["strategy_quantity"], sessions["twap_quantity"], rtol=1e-12)
    assert np.allclose(months["savings_vs_twap"], 0.0, atol=1e-9)
    assert procurement_summary(months)["hit_rate_vs_twap"] == 0.0


def _random_path(seed: int, months: int = 6) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days = pl.date_range(dt.date(2022, 1, 3), dt.date(2022, 1, 3) + dt.timedelta(days=31 * months), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    return pl.DataFrame(
        {
            "date": days,
            "price": 50 * np.exp(np.cumsum(rng.normal(0, 0.02, days.len()))),
            "forecast": rng.normal(0, 0.01, days.len()),
        }
    )


@pytest.mark.parametrize("cap,gain", [(1.0, 5.0), (1.5, 1.0), (2.0, 5.0), (3.0, 50.0)])
def test_every_month_buys_exactly_the_volume_within_the_cap(cap, gain):
    plan = ProcurementPlan(volume=700.0, cap=cap, gain=gain, scale_min_rows=5, min_sessions=1)
    sessions, months = procure(_random_path(int(cap * 10)), plan)
    by_month = sessions.group_by("month").agg(
        pl.col("strategy_quantity").sum(),
        pl.len(),
        pl.col("strategy_quantity").max().alias("most"),
        pl.col("strategy_quantity").min().alias("least"),
    )
    assert np.allclose(by_month["strategy_quantity"], 700.0)
    assert (by_month["most"] <= cap * 700.0 / by_month["len"] + 1e-9).all() and (by_month["least"] >= 0).all()
    assert months.height == by_month.height
    # The rule moved purchases (unless the cap pins it to TWAP).
    moved = not np.allclose(sessions["strategy_quantity"], sessions["twap_quantity"])
    assert moved == (cap > 1.0)


def test_short_months_are_left_out_and_bad_input_is_named():
    frame = _random_path(1, months=3)
    _, months = procure(frame.filter(pl.col("date") >= dt.date(2022, 1, 20)), ProcurementPlan(min_sessions=15))
    assert months["month"].min() == dt.date(2022, 2, 1)  # January has 10 sessions left: out
    with pytest.raises(ValueError, match="forecast has nulls"):
        procure(
            frame.with_columns(
                pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("forecast")).alias("forecast")
            )
        )
    with pytest.raises(ValueError, match=r"columns \['price'\]"):
        procure(frame.drop("price"))
    with pytest.raises(ValueError, match="no month has 30 sessions"):
        procure(frame, ProcurementPlan(min_sessions=30))
    with pytest.raises(ValueError, match="cap=0.5"):
        ProcurementPlan(cap=0.5)


@pytest.mark.parametrize("lag", [0, 1])
def test_decisions_up_to_a_day_ignore_everything_after_it(lag):
    frame = _random_path(7)
    plan = ProcurementPlan(cap=2.5, gain=3.0, scale_min_rows=3, min_sessions=1, lag=lag)
    base, _ = procure(frame, plan)
    rng = np.random.default_rng(11)
    for cut in (30, 61, 95):  # mid-month session indexes
        changed = frame.with_columns(
            pl.when(pl.int_range(pl.len()) > cut)
            .then(pl.col(c) * rng.uniform(-3, 3, frame.height))
            .otherwise(pl.col(c))
            .alias(c)
            for c in ("forecast", "price")
        ).with_columns(pl.col("price").abs() + 1)
        other, _ = procure(changed, plan)
        assert np.array_equal(other["strategy_quantity"][: cut + 1], base["strategy_quantity"][: cut + 1])
        assert not np.array_equal(other["strategy_quantity"], base["strategy_quantity"])  # the future did matter


def test_lag_steers_each_purchase_by_the_previous_forecast():
    now, _ = procure(_path(), FORESIGHT)
    late, _ = procure(_path(), ProcurementPlan(**{**FORESIGHT.__dict__, "lag": 1}))
    assert late["signal"].to_list()[1:] == now["signal"].to_list()[:-1] and late["signal"][0] == 0.0
    # Jan with lag 1: day 1 and 2 see no signal (TWAP, 1 each); day 3 buys the last 1.
    assert late["strategy_quantity"].to_list()[:3] == pytest.approx([1, 1, 1])


def test_month_quantities_respect_floor_and_ceiling():
    plan = ProcurementPlan(volume=4.0, cap=2.0, gain=1.0)
    # Deferring every day still completes: the floor forces buying once the cap could not fit the rest.
    assert month_quantities(np.full(4, -5.0), plan).tolist() == pytest.approx([0, 0, 2, 2])
    # A rise buys twice the even pace of what is left, within the cap: 2 of 4, 2 x 2/3 of 2, the rest.
    assert month_quantities(np.full(4, 5.0), plan).tolist() == pytest.approx([2, 4 / 3, 2 / 3, 0])


# --- Trading -----------------------------------------------------------------------------------


def test_trading_sharpe_drawdown_and_turnover_by_hand():
    simple = [0.1, -0.05, 0.02, 0.1]
    frame = pl.DataFrame(
        {
            "date": pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 4), "1d", eager=True),
            "fold": [0] * 4,
            "forecast": [0.3, -0.1, -0.2, 0.05],
            "actual": [math.log(1 + r) for r in simple],
        }
    )
    periods, summary = backtest(frame, 1, 4.0, 10.0, key="date")
    mine, hold = summary.row(0, named=True), summary.row(1, named=True)
    # positions +1, -1, -1, +1: traded 1, 2, 0, 2 units at 10 bp
    net = [0.1 - 0.001, 0.05 - 0.002, -0.02, 0.1 - 0.002]
    assert periods["strategy_return"].to_list() == pytest.approx(net)
    assert mine["sharpe"] == pytest.approx(statistics.mean(net) / statistics.stdev(net) * 2)  # sqrt(4 a year)
    assert mine["max_drawdown"] == pytest.approx(0.02)
    assert mine["turnover_per_year"] == pytest.approx(5.0) and mine["hit_rate"] == 0.75
    assert mine["total_return"] == pytest.approx(math.prod(1 + r for r in net) - 1)
    held = [0.1 - 0.001, -0.05, 0.02, 0.1]
    assert hold["sharpe"] == pytest.approx(statistics.mean(held) / statistics.stdev(held) * 2)
    assert hold["max_drawdown"] == pytest.approx(0.05) and hold["turnover_per_year"] == pytest.approx(1.0)
    assert drawdown(np.array([0.1, -0.5, 0.2, 0.9])).tolist() == pytest.approx([0, -0.5, -0.4, 0.0])


def test_trades_do_not_overlap_inside_or_across_folds():
    frame = pl.DataFrame(
        {
            "date": pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 8), "1d", eager=True),
            "fold": [0] * 5 + [1] * 3,
            "forecast": [0.1, -0.1] * 4,
            "actual": [0.01] * 8,
            "conviction": [0.5] * 8,
        }
    )
    picked = trade_periods(frame, 2, key="date")
    assert picked["date"].dt.day().to_list() == [1, 3, 5, 6, 8]
    sized = trade_periods(frame, 2, key="date", sizing="conviction")
    assert sized["position"].to_list() == pytest.approx([0.5, 0.5, 0.5, -0.5, -0.5])
    with pytest.raises(ValueError, match="conviction"):
        trade_periods(frame.drop("conviction"), 2, key="date", sizing="conviction")


# --- Dagster -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_mes_trading_materializes_on_stored_forecasts(tmp_path):
    """On a lake holding only a family's out-of-fold forecasts for MES 1d: the backtest of that family,
    stored and in the warehouse; a missing source fails naming the file and leaves results as they were."""
    rng = np.random.default_rng(5)
    n = 600
    days = pl.date_range(dt.date(2018, 1, 1), dt.date(2018, 1, 1) + dt.timedelta(days=n - 1), "1d", eager=True)
    actual = rng.normal(0.0003, 0.01, n)
    oof = pl.DataFrame(
        {
            "date": days,
            "regime": "x",
            "forward_price": 100.0,
            "fold": np.repeat(np.arange(6), 100),
            "price": 100.0,
            "actual": actual,
            "forecast": actual + rng.normal(0, 0.02, n),
            "lower": None,
            "upper": None,
            "sigma": None,
        }
    )
    resources = lake_resources(tmp_path)
    lake = resources["lake"]
    lake.write(tables.OOF, oof, market=MES, horizon="1d", family="lightgbm")
    config = {"ops": {mes_trading.op.name: {"config": {"source": "lightgbm"}}}}
    result = dg.materialize([mes_trading], resources=resources, partition_key="1d", run_config=config)
    assert result.success
    trading = {"market": MES, "horizon": "1d", "name": "trading", "kind": "trading"}
    stored = lake.read(tables.BACKTEST, **trading)
    assert stored.height == n
    with duckdb.connect(str(warehouse_file(tmp_path)), read_only=True) as conn:
        table = conn.sql("select * from backtests.trading").pl()
    assert table["strategy"].to_list() == ["strategy", "buy_and_hold"] and set(table["source"]) == {"lightgbm"}
    hits = float(np.mean(np.sign(oof["forecast"].to_numpy()) == np.sign(actual)))
    assert table["hit_rate"][0] == pytest.approx(hits, abs=0.02)  # costs turn the smallest wins into losses
    assert table["sharpe"][0] > table["sharpe"][1] + 1  # a forecast this informed beats holding
    metadata = result.asset_materializations_for_node(mes_trading.op.name)[0].metadata
    assert "data:image/png;base64" in metadata["equity_daily"].value and "| strategy" in metadata["performance"].value

    failed = dg.materialize([mes_trading], resources=resources, partition_key="1d", raise_on_error=False)
    assert not failed.success
    message = str(failed.all_events)
    assert "intervals.parquet" in message and "mes/models/ensemble" in message
    assert lake.read(tables.BACKTEST, **trading).equals(stored)


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
def test_zl_procurement_materializes_on_the_ensemble(zl_model_lake):
    from cbi_assets.ensembles.assets import ENSEMBLE_ASSETS

    root, resources = zl_model_lake
    lake = resources["lake"]
    one_week = {"dagster/asset_partition_range_start": "1w", "dagster/asset_partition_range_end": "1w"}
    zl_ensemble = [a for a in ENSEMBLE_ASSETS if a.key.path[0] == "zl"]
    assert dg.materialize(zl_ensemble, resources=resources, tags=one_week).success
    procurement = [a for a in BACKTEST_ASSETS if a.key.path == ["zl", "backtests", "procurement"]]
    result = dg.materialize(procurement, resources=resources, tags=one_week)
    assert result.success

    stored = {"market": ZL, "horizon": "1w", "kind": "procurement"}
    sessions = lake.read(tables.BACKTEST, name="procurement_sessions", **stored)
    months = lake.read(tables.BACKTEST, name="procurement_months", **stored)
    blend = lake.read(tables.INTERVALS, market=ZL, horizon="1w")
    assert set(sessions["date"]) <= set(blend["date"]) and months.height >= 1
    volume = sessions.group_by("month").agg(pl.col("strategy_quantity").sum())["strategy_quantity"]
    assert np.allclose(volume, 1_000.0)
    # The stored prices are the blend's prices at the origin, and the savings follow from them.
    first = sessions.filter(pl.col("month") == months["month"][0])
    prices = blend.filter(pl.col("date").is_in(first["date"].implode()))["price"].to_numpy()
    assert months["twap_price"][0] == pytest.approx(prices.mean())
    assert months["savings_vs_twap"].to_numpy() == pytest.approx(
        (months["twap_paid"] - months["strategy_paid"]).to_numpy()
    )

    with duckdb.connect(str(warehouse_file(root)), read_only=True) as conn:
        table = conn.sql("select * from backtests.procurement where asset = 'ZL' and horizon = '1w'").pl()
    assert table.height == months.height and set(table["source"]) == {"ensemble blend"}
    assert table["savings_vs_twap_usd"].sum() == pytest.approx(months["savings_vs_twap_usd"].sum())
    metadata = result.asset_materializations_for_node(procurement[0].op.name)[0].metadata
    assert "data:image/png;base64" in metadata["cumulative_savings"].value
    assert "data:image/png;base64" in metadata["monthly_1w"].value and "| 1w" in metadata["savings"].value
    assert POUNDS_PER_CONTRACT == 60_000
