"""Labels: hand-checked values, triple barriers, uniqueness, regime weights, and no look-ahead."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from cbi_assets.catalogue import MARKETS, REGIMES
from cbi_assets.training.labels import (
    Barriers,
    daily_labels,
    intraday_labels,
    label_uniqueness,
    sample_weights,
    uniqueness,
)

UTC = pl.Datetime("ns", "UTC")


def minute_table(stamps: list[dt.datetime], close: list[float], high=None, low=None, adj=None) -> pl.DataFrame:
    """A canonical 1-minute table from bar close times and prices (high/low default to close)."""
    return pl.DataFrame(
        {
            "ts": pl.Series(stamps, dtype=UTC),
            "high": high or close,
            "low": low or close,
            "close": close,
            "adj": adj or [1.0] * len(close),
        },
        schema_overrides={"high": pl.Float64, "low": pl.Float64, "close": pl.Float64, "adj": pl.Float64},
    )


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def at(*texts: str) -> pl.Series:
    return pl.Series("ts", [utc(t) for t in texts], dtype=UTC)


def random_minutes(n: int, seed: int = 0, start: str = "2024-06-03 13:00") -> pl.DataFrame:
    """A gapless grid of n random-walk minutes with a roll (adj step) in the middle."""
    rng = np.random.default_rng(seed)
    level = 5000 * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    adj = np.where(np.arange(n) < n // 2, 1.0, 1.02)
    close = level / adj
    spread = np.abs(rng.normal(0, 0.0006, n))
    stamps = pl.datetime_range(utc(start), utc(start) + dt.timedelta(minutes=n - 1), "1m", eager=True, time_zone="UTC")
    return pl.DataFrame(
        {
            "ts": stamps.cast(UTC),
            "high": close * (1 + spread),
            "low": close * (1 - spread),
            "close": close,
            "adj": adj,
        }
    )


# --- Daily ------------------------------------------------------------------------------------


def test_daily_forward_return_price_and_direction_across_a_roll():
    # Day 3 rolls to a contract priced 10 higher; adj scales the old contract's history to match.
    prices = pl.DataFrame(
        {
            "date": [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)],
            "close": [50.0, 51.0, 61.0, 60.0, 60.0],
            "adj": [1.0, 1.0, 52 / 62, 52 / 62, 52 / 62],
        }
    )
    out = daily_labels(prices, 2)
    assert out.columns == ["date", "label_end", "forward_return", "forward_price", "direction"]
    # From day 1: 61 * 52/62 = 51.1613 in day-1 money, log(51.1613 / 50).
    r0 = math.log(61 * 52 / 62 / 50)
    assert out["forward_return"][0] == pytest.approx(r0)
    assert out["forward_price"][0] == pytest.approx(50 * math.exp(r0))  # 51.16, not the raw 61
    assert out["label_end"][0] == dt.date(2024, 1, 4)
    # Day 2 -> day 4: 60 * 52/62 = 50.32 against 51: down.
    assert out["forward_return"][1] == pytest.approx(math.log(60 * 52 / 62 / 51))
    assert out["direction"].to_list()[:3] == [1, -1, -1]
    # Day 3 -> day 5, both in the new contract: 60 / 61, in the new contract's price.
    assert out["forward_price"][2] == pytest.approx(60.0)
    assert out["direction"].dtype == pl.Int8


def test_daily_flat_is_zero_direction():
    prices = pl.DataFrame({"date": [dt.date(2024, 1, d) for d in (2, 3)], "close": [50.0, 50.0], "adj": [1.0, 1.0]})
    assert daily_labels(prices, 1)["direction"][0] == 0


@pytest.mark.parametrize("horizon", MARKETS["ZL"].horizons, ids=lambda h: h.name)
def test_daily_last_rows_carry_no_label(horizon):
    n = 400
    prices = pl.DataFrame(
        {
            "date": pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 1, 1) + dt.timedelta(days=n - 1), eager=True),
            "close": np.linspace(40, 60, n),
            "adj": np.ones(n),
        }
    )
    out = daily_labels(prices, horizon.bars)
    labels = out.select("label_end", "forward_return", "forward_price", "direction")
    assert labels.tail(horizon.bars).null_count().sum_horizontal().item() == 4 * horizon.bars
    assert labels.head(n - horizon.bars).null_count().sum_horizontal().item() == 0


def test_daily_label_ignores_everything_after_its_horizon():
    n, bars, cut = 300, 21, 200
    rng = np.random.default_rng(1)
    prices = pl.DataFrame(
        {
            "date": pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 1, 1) + dt.timedelta(days=n - 1), eager=True),
            "close": 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n))),
            "adj": np.ones(n),
        }
    )
    before = daily_labels(prices, bars)
    # Every row after cut + bars changes price and roll factor, and a third of them disappear.
    later = pl.int_range(pl.len()) > cut + bars
    changed = prices.with_columns(
        pl.when(later).then(pl.col("close") * 1.3).otherwise(pl.col("close")).alias("close"),
        pl.when(later).then(0.7).otherwise(pl.col("adj")).alias("adj"),
    ).filter(~later | (pl.Series(rng.uniform(size=n)) > 0.33))
    after = daily_labels(changed, bars)
    assert_frame_equal(before.head(cut + 1), after.head(cut + 1))
    assert not before.slice(cut + 1, 5).equals(after.slice(cut + 1, 5))  # the perturbation does bite later


# --- Intraday forward labels ------------------------------------------------------------------


def test_intraday_label_across_a_gap_takes_the_last_price_before_the_horizon():
    # Bars close at 14:21 .. 14:25, then nothing until 14:31 (five minutes missing), then 14:31 .. 14:33.
    stamps = [utc(f"2024-06-03 14:{m:02d}") for m in (21, 22, 23, 24, 25, 31, 32, 33)]
    minutes = minute_table(stamps, [100.0, 101.0, 102.0, 103.0, 104.0, 110.0, 111.0, 112.0])
    out = intraday_labels(minutes, at("2024-06-03 14:22", "2024-06-03 14:24"), 7)
    # 14:22 + 7 = 14:29, inside the gap: the 14:25 close. 14:24 + 7 = 14:31: the first bar after.
    assert out["forward_price"].to_list() == pytest.approx([104.0, 110.0])
    assert out["forward_return"][0] == pytest.approx(math.log(104 / 101))
    assert out["label_end"].to_list() == [utc("2024-06-03 14:29"), utc("2024-06-03 14:31")]
    # A time inside the gap prices from the last close before it (14:25, 104); 14:27 + 5 = 14:32.
    inside = intraday_labels(minutes, at("2024-06-03 14:27"), 5)
    assert inside["forward_return"][0] == pytest.approx(math.log(111 / 104))
    assert inside["forward_price"][0] == pytest.approx(111.0)
    # 14:27 + 7 = 14:34 lies past the last bar (14:33): no label yet.
    assert intraday_labels(minutes, at("2024-06-03 14:27"), 7)["forward_return"][0] is None


def test_intraday_label_over_the_daily_halt():
    # Chicago summer time: the session closes 16:00 CDT = 21:00 UTC and reopens 17:00 CDT = 22:00 UTC,
    # so the first bar after the halt closes at 22:01.
    stamps = [
        utc("2024-06-03 20:58"),
        utc("2024-06-03 20:59"),
        utc("2024-06-03 21:00"),
        utc("2024-06-03 22:01"),
        utc("2024-06-03 22:02"),
        utc("2024-06-03 22:03"),
    ]
    minutes = minute_table(stamps, [5300.0, 5301.0, 5302.0, 5310.0, 5311.0, 5312.0])
    out = intraday_labels(minutes, at("2024-06-03 20:58", "2024-06-03 20:59", "2024-06-03 21:00"), 62)
    # 20:58 + 62 = 22:00: still the halt, so the 16:00 close; 20:59 + 62 = 22:01: the first bar after.
    assert out["forward_price"].to_list() == pytest.approx([5302.0, 5310.0, 5311.0])
    assert out["label_end"].to_list() == [utc("2024-06-03 22:00"), utc("2024-06-03 22:01"), utc("2024-06-03 22:02")]
    assert out["direction"].to_list() == [1, 1, 1]
    # 21:00 + 5 = 21:05 ends in the halt before any later bar: no move, flat.
    halted = intraday_labels(minutes, at("2024-06-03 21:00"), 5)
    assert halted["forward_return"][0] == 0.0 and halted["direction"][0] == 0
    # 22:02 + 5 = 22:07 is past the last bar (22:03): the data does not reach the horizon yet.
    late = intraday_labels(minutes, at("2024-06-03 22:02"), 5)
    assert (
        late.select("label_end", "forward_return", "forward_price", "direction").null_count().sum_horizontal().item()
        == 4
    )


def test_intraday_forward_price_is_in_todays_contract():
    # A roll between t and the horizon: the raw close halves, adj doubles; the level is unchanged.
    stamps = [utc(f"2024-06-03 14:0{m}") for m in range(1, 5)]
    minutes = minute_table(stamps, [100.0, 100.0, 50.0, 51.0], adj=[1.0, 1.0, 2.0, 2.0])
    out = intraday_labels(minutes, at("2024-06-03 14:01"), 3)
    assert out["forward_return"][0] == pytest.approx(math.log(102 / 100))
    assert out["forward_price"][0] == pytest.approx(102.0)


# --- Triple barrier ---------------------------------------------------------------------------

# Five bars of history (closes 100, 101, 100, 101, 100) give four returns of +-log(1.01):
# sigma = log(1.01) * sqrt(4/3) with ddof 1. With h = 5 and 2 sigma, the barriers sit at
# 100 * exp(+-2 * sigma * sqrt(5)) = 105.27 and 94.99.
HISTORY = [100.0, 101.0, 100.0, 101.0, 100.0]
SIGMA = math.log(1.01) * math.sqrt(4 / 3)
WIDTH = 2 * SIGMA * math.sqrt(5)
T = "2024-06-03 14:05"


def barrier_case(
    high: list[float],
    low: list[float],
    close: list[float],
    adj: list[float] | None = None,
    high_at_t: float = HISTORY[-1],
) -> dict:
    stamps = [utc("2024-06-03 14:00") + dt.timedelta(minutes=m + 1) for m in range(len(HISTORY) + len(close))]
    minutes = minute_table(
        stamps,
        HISTORY + close,
        high=HISTORY[:-1] + [high_at_t] + high,
        low=HISTORY + low,
        adj=None if adj is None else [1.0] * len(HISTORY) + adj,
    )
    return intraday_labels(minutes, at(T), 5, Barriers(profit=2.0, stop=2.0, vol_window=4)).row(0, named=True)


def test_barrier_levels_are_what_the_hand_computation_says():
    assert 100 * math.exp(WIDTH) == pytest.approx(105.27, abs=0.01)
    assert 100 * math.exp(-WIDTH) == pytest.approx(94.99, abs=0.01)


def test_profit_barrier_touched_first():
    row = barrier_case(high=[101, 105.3, 101, 101, 101, 101], low=[99, 99, 90, 99, 99, 99], close=[100] * 6)
    assert row["barrier_label"] == 1
    assert row["barrier_touch"] == utc("2024-06-03 14:07")
    assert row["barrier_return"] == pytest.approx(WIDTH)


def test_stop_barrier_touched_first():
    row = barrier_case(high=[101, 101, 106, 101, 101, 101], low=[99, 94.9, 99, 99, 99, 99], close=[100] * 6)
    assert row["barrier_label"] == -1
    assert row["barrier_touch"] == utc("2024-06-03 14:07")
    assert row["barrier_return"] == pytest.approx(-WIDTH)


def test_bar_touching_both_barriers_counts_the_stop():
    row = barrier_case(high=[101, 101, 106, 101, 101, 101], low=[99, 99, 94, 99, 99, 99], close=[100] * 6)
    assert (row["barrier_label"], row["barrier_touch"]) == (-1, utc("2024-06-03 14:08"))


def test_time_barrier_and_nothing_after_the_horizon_counts():
    # The sixth bar (14:11, past 14:05 + 5) spikes through both barriers: it must not count. The bar
    # at t itself reaching above the upper barrier must not count either (it is not after t).
    row = barrier_case(
        high=[101, 102, 103, 104, 105, 200],
        low=[99, 98, 97, 96, 96, 1],
        close=[100, 101, 102, 103, 100.5, 150],
        high_at_t=110,
    )
    assert row["barrier_label"] == 0
    assert row["barrier_touch"] == utc("2024-06-03 14:10")
    assert row["barrier_return"] == pytest.approx(math.log(100.5 / 100))
    assert row["forward_return"] == pytest.approx(math.log(100.5 / 100))


def test_time_barrier_when_the_horizon_ends_in_a_gap():
    # Bars at 14:06 and 14:07, then nothing until 14:11, which spikes through both barriers. The
    # bar at t (14:05) already reached 110, above the upper barrier, but it is not after t.
    stamps = [utc("2024-06-03 14:00") + dt.timedelta(minutes=m) for m in (1, 2, 3, 4, 5, 6, 7, 11)]
    minutes = minute_table(
        stamps,
        HISTORY + [100.5, 101.0, 150.0],
        high=HISTORY[:-1] + [110.0, 101.0, 102.0, 200.0],
        low=HISTORY + [99.0, 99.0, 1.0],
    )
    row = intraday_labels(minutes, at(T), 5, Barriers(vol_window=4)).row(0, named=True)
    assert (row["barrier_label"], row["barrier_touch"]) == (0, utc("2024-06-03 14:07"))
    assert row["barrier_return"] == pytest.approx(math.log(101 / 100)) == row["forward_return"]


def test_barriers_test_adjusted_highs_and_lows():
    # A roll halves the raw price and doubles adj: the raw low of 50 would be a stop, the level is not.
    row = barrier_case(
        high=[101, 51, 51, 51, 51],
        low=[99, 50, 50, 50, 50],
        close=[100, 50.5, 50.5, 50.5, 50.5],
        adj=[1.0, 2.0, 2.0, 2.0, 2.0],
    )
    assert row["barrier_label"] == 0
    assert row["forward_price"] == pytest.approx(101.0)
    # And the other way: the raw price doubles as adj halves; a raw high of 201 would take profit.
    row = barrier_case(
        high=[101, 201, 201, 201, 201],
        low=[99, 199, 199, 199, 199],
        close=[100, 200, 200, 200, 200],
        adj=[1.0, 0.5, 0.5, 0.5, 0.5],
    )
    assert (row["barrier_label"], row["barrier_return"]) == (0, 0.0)


def test_no_barrier_without_a_full_volatility_window():
    stamps = [utc("2024-06-03 14:00") + dt.timedelta(minutes=m + 1) for m in range(10)]
    minutes = minute_table(stamps, [100.0, 101.0] * 5)
    out = intraday_labels(minutes, at("2024-06-03 14:03", "2024-06-03 14:05"), 2, Barriers(vol_window=4))
    assert out["barrier_label"].to_list() == [None, 0]  # 3 returns at 14:03, 4 at 14:05
    assert out["forward_return"][0] is not None


def brute_force_barriers(minutes: pl.DataFrame, t: dt.datetime, h: int, window: int) -> tuple:
    """One label the slow, obvious way: walk the bars after t until a barrier or the horizon."""
    rows = minutes.with_columns((pl.col("close") * pl.col("adj")).alias("level")).to_dicts()
    i = max(k for k, r in enumerate(rows) if r["ts"] <= t)
    returns = [math.log(rows[k]["level"] / rows[k - 1]["level"]) for k in range(i - window + 1, i + 1)]
    width = float(np.std(returns, ddof=1)) * math.sqrt(h)
    upper, lower = rows[i]["level"] * math.exp(2 * width), rows[i]["level"] * math.exp(-2 * width)
    last = i
    for r in rows[i + 1 :]:
        if r["ts"] > t + dt.timedelta(minutes=h):
            break
        last += 1
        if r["low"] * r["adj"] <= lower:
            return -1, r["ts"], -2 * width
        if r["high"] * r["adj"] >= upper:
            return 1, r["ts"], 2 * width
    return 0, rows[last]["ts"], math.log(rows[last]["level"] / rows[i]["level"])


@pytest.mark.parametrize("h", [5, 30, 240])
def test_barriers_match_a_bar_by_bar_walk_on_gappy_data(h):
    rng = np.random.default_rng(h)
    minutes = random_minutes(1200, seed=h).filter(pl.Series(rng.uniform(size=1200) > 0.25))  # a quarter of bars missing
    times = minutes["ts"].slice(40, minutes.height - 40 - h).gather_every(7)
    out = intraday_labels(minutes, times, h, Barriers(vol_window=20))
    expected = [brute_force_barriers(minutes, t, h, 20) for t in times]
    got = out.select("barrier_label", "barrier_touch", "barrier_return").rows()
    labelled = [(g, e) for g, e in zip(got, expected, strict=True) if g[0] is not None]
    assert len(labelled) > 0.8 * len(expected)
    assert {e[0] for _, e in labelled} == {-1, 0, 1}  # every outcome is exercised
    for (label, touch, ret), (e_label, e_touch, e_ret) in labelled:
        assert (label, touch) == (e_label, e_touch)
        assert ret == pytest.approx(e_ret)


# --- Intraday look-ahead ----------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [h for h in MARKETS["MES"].horizons if h.intraday], ids=lambda h: h.name)
def test_intraday_label_ignores_everything_after_its_horizon(horizon):
    minutes = random_minutes(1500, seed=2)
    cut = minutes["ts"][700]
    end = cut + dt.timedelta(minutes=horizon.bars)
    before = intraday_labels(minutes, minutes["ts"], horizon.bars, Barriers(vol_window=30))
    rng = np.random.default_rng(5)
    later = pl.col("ts") > end
    factor = pl.Series(rng.uniform(0.9, 1.1, minutes.height))
    changed = minutes.with_columns(
        *(pl.when(later).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in ("high", "low", "close")),
        pl.when(later).then(pl.col("adj") * 1.5).otherwise(pl.col("adj")).alias("adj"),
    ).filter(~later | (pl.Series(rng.uniform(size=minutes.height)) > 0.3))
    after = intraday_labels(changed, minutes["ts"], horizon.bars, Barriers(vol_window=30))
    upto = pl.col("ts") <= cut
    assert_frame_equal(before.filter(upto), after.filter(upto))
    assert before.filter(upto)["barrier_label"].null_count() == 30  # only the warm-up window
    assert not before.filter(~upto).equals(after.filter(~upto))


@pytest.mark.parametrize("horizon", [h for h in MARKETS["MES"].horizons if h.intraday], ids=lambda h: h.name)
def test_intraday_last_horizon_minutes_carry_no_label(horizon):
    minutes = random_minutes(600)
    out = intraday_labels(minutes, minutes["ts"], horizon.bars, Barriers(vol_window=10))
    labels = out.select(pl.exclude("ts"))
    width = labels.width
    assert labels.tail(horizon.bars).null_count().sum_horizontal().item() == width * horizon.bars
    # Labelled rows (after the volatility warm-up) are complete.
    assert labels.slice(10, 600 - horizon.bars - 10).null_count().sum_horizontal().item() == 0


def test_intraday_labels_take_a_feature_table_and_match_coarser_times():
    minutes = random_minutes(300)
    table = minutes.filter(pl.col("ts").dt.minute() % 5 == 0).select("ts", pl.lit(1.0).alias("feature"))
    coarse = intraday_labels(minutes, table, 15)
    fine = intraday_labels(minutes, minutes["ts"], 15).filter(pl.col("ts").is_in(table["ts"].implode()))
    assert_frame_equal(coarse, fine)


# --- Uniqueness -------------------------------------------------------------------------------


def test_uniqueness_on_a_hand_computed_example():
    # Spans (0,3], (1,2], (2,4] over 5 rows: rows 1..4 are covered by 1, 2, 2, 1 labels.
    # Label 0: (1 + 1/2 + 1/2) / 3; label 1: 1/2; label 2: (1/2 + 1) / 2. (3,3] is empty.
    u = uniqueness(np.array([0, 1, 2, 3]), np.array([3, 2, 4, 3]), 5)
    assert u[:3] == pytest.approx([2 / 3, 1 / 2, 3 / 4])
    assert np.isnan(u[3])


def test_uniqueness_of_disjoint_labels_is_one():
    assert uniqueness(np.array([0, 2, 4]), np.array([2, 4, 6]), 7) == pytest.approx([1.0, 1.0, 1.0])


def test_label_uniqueness_maps_times_onto_their_grid():
    times = pl.Series([dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)])
    # Ends at the 4th, 4th, 8th and none: spans (0,2], (1,2], (2,4], and an unlabelled row.
    ends = pl.Series([dt.date(2024, 1, 4), dt.date(2024, 1, 4), dt.date(2024, 1, 8), None, None])
    u = label_uniqueness(times, ends)
    # Concurrency of rows 1..4: 1, 2, 1, 1.
    assert u.to_list()[:3] == pytest.approx([(1 + 0.5) / 2, 0.5, 1.0])
    assert u.to_list()[3:] == [None, None]


def test_a_label_ending_before_the_next_row_is_unique():
    # The session's last bar: its 5-minute label ends in the daily halt, before the next bar.
    times = pl.Series([dt.datetime(2024, 1, 2, 20, 55), dt.datetime(2024, 1, 2, 21, 0), dt.datetime(2024, 1, 2, 23, 5)])
    ends = pl.Series([dt.datetime(2024, 1, 2, 21, 0), dt.datetime(2024, 1, 2, 21, 5), dt.datetime(2024, 1, 2, 23, 10)])
    assert label_uniqueness(times, ends).to_list() == [1.0, 1.0, 1.0]


def test_daily_labels_have_uniqueness_one_over_bars_in_steady_state():
    prices = pl.DataFrame(
        {
            "date": pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 3, 1), eager=True),
            "close": 50.0,
            "adj": 1.0,
        }
    )
    labels = daily_labels(prices, 5)
    u = label_uniqueness(labels["date"], labels["label_end"])
    assert u[20] == pytest.approx(1 / 5)


# --- Sample weights ---------------------------------------------------------------------------


def calendar(regimes=REGIMES) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "regime": [r.name for r in regimes],
            "start": [r.start for r in regimes],
            "end": [r.end for r in regimes],
            "weight": [float(r.weight) for r in regimes],
        },
        schema={"regime": pl.String, "start": pl.Date, "end": pl.Date, "weight": pl.Float64},
    )


THREE = pl.DataFrame(
    {
        "regime": ["calm", "crisis", "recent"],
        "start": [None, dt.date(2020, 1, 1), dt.date(2021, 1, 1)],
        "end": [dt.date(2019, 12, 31), dt.date(2020, 12, 31), None],
        "weight": [1.0, 5.0, 2.0],
    },
    schema={"regime": pl.String, "start": pl.Date, "end": pl.Date, "weight": pl.Float64},
)


def test_sample_weights_from_a_three_regime_calendar():
    dates = pl.Series(
        [
            dt.date(2021, 1, 1),
            dt.date(1990, 5, 1),
            dt.date(2020, 12, 31),
            dt.date(2019, 12, 31),
            dt.date(2020, 1, 1),
            dt.date(2030, 1, 1),
        ]
    )
    assert sample_weights(dates, THREE).to_list() == [2.0, 1.0, 5.0, 1.0, 5.0, 2.0]
    unique = pl.Series([0.5, 1.0, 0.2, None, 1.0, 0.25])
    assert sample_weights(dates, THREE, unique).to_list() == pytest.approx([1.0, 1.0, 1.0, None, 5.0, 0.5])


def test_sample_weights_from_the_desk_calendar():
    dates = pl.Series([dt.date(2008, 7, 1), dt.date(2008, 6, 30), dt.date(1995, 1, 1), dt.date(2025, 3, 3)])
    assert_series_equal(sample_weights(dates, calendar()), pl.Series("weight", [800.0, 150.0, 50.0, 5000.0]))


def test_a_date_outside_every_regime_is_named():
    holed = THREE.with_columns(
        pl.when(pl.col("regime") == "crisis").then(dt.date(2020, 6, 30)).otherwise("end").alias("end")
    )
    dates = pl.Series([dt.date(2019, 1, 1), dt.date(2020, 9, 1), dt.date(2020, 7, 2), dt.date(2021, 2, 1)])
    with pytest.raises(ValueError, match=r"2 dates fall in no regime, the first is 2020-07-02"):
        sample_weights(dates, holed)


def test_a_calendar_with_no_past_regime_names_the_early_date():
    dates = pl.Series([dt.date(2021, 1, 1), dt.date(2019, 3, 4)])
    with pytest.raises(ValueError, match="the first is 2019-03-04"):
        sample_weights(dates, THREE.slice(1))


def test_overlapping_regimes_are_refused():
    overlapping = THREE.with_columns(
        pl.when(pl.col("regime") == "calm").then(dt.date(2020, 2, 1)).otherwise("end").alias("end")
    )
    with pytest.raises(ValueError, match="'calm' .* overlaps 'crisis'"):
        sample_weights(pl.Series([dt.date(2020, 1, 15)]), overlapping)
