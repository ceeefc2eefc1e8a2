"""Feature values checked by hand on small frames."""

import datetime as dt
import math

import polars as pl
import pytest

from cbi_assets.features import technical as ta
from cbi_assets.features.bars import front_daily, minute_bars, resample, splice
from cbi_assets.features.equity_calendar import calendar_table, quarterly_expiries
from cbi_assets.features.pit import ReleaseLag, known_dates, on_grid
from cbi_assets.features.soy_complex import boho, crush_margin, oil_share
from cbi_assets.features.volatility import vix_band

UTC = dt.UTC


def one(expr: pl.Expr, **columns) -> list:
    return pl.DataFrame(columns).select(expr.alias("x"))["x"].to_list()


def test_crush_margin_oil_share_and_boho_by_hand():
    # ZL 45 c/lb, ZM 300 $/st, ZS 1200 c/bu, HO 2.50 $/gal.
    # Oil per bushel 0.11 x 45 = 4.95 $; meal 0.022 x 300 = 6.60 $; beans 12.00 $.
    z = dict(zl=[45.0], zm=[300.0], zs=[1200.0], ho=[2.50])
    assert one(crush_margin(pl.col("zl"), pl.col("zm"), pl.col("zs")), **z) == pytest.approx([4.95 + 6.60 - 12.00])
    assert one(oil_share(pl.col("zl"), pl.col("zm")), **z) == pytest.approx([4.95 / (4.95 + 6.60)])
    # BOHO: 45 x 7.5 / 100 = 3.375 $/gal of oil, less 2.50 $/gal of heating oil.
    assert one(boho(pl.col("zl"), pl.col("ho")), **z) == pytest.approx([0.875])


def test_returns_volatility_and_momentum_by_hand():
    closes = [100.0, 110.0, 99.0, 99.0]
    assert one(ta.log_return(pl.col("c"), 2), c=closes)[2] == pytest.approx(math.log(99 / 100))
    # 1-bar log returns ln(1.1), ln(0.9), 0; momentum z over 3 bars = 3-bar return / (std * sqrt(3)).
    r = [math.log(1.1), math.log(0.9), 0.0]
    mean = sum(r) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    frame = pl.DataFrame({"c": closes})
    r1 = ta.log_return(pl.col("c"), 1)
    z = frame.select(ta.log_return(pl.col("c"), 3) / (r1.rolling_std(3) * math.sqrt(3))).to_series()[-1]
    assert z == pytest.approx(math.log(99 / 100) / (std * math.sqrt(3)))


def test_rsi_by_hand():
    # Changes +1, +1, -1, +1 with Wilder alpha 1/2 (n=2), seeded at the first change:
    # gains 1, 1, 0.5, 0.75; losses 0, 0, 0.5, 0.25 -> RSI at the last bar = 100 - 100/(1 + 3) = 75.
    values = one(ta.rsi(pl.col("c"), 2), c=[10.0, 11.0, 12.0, 11.0, 12.0])
    assert values[:2] == [None, None]
    assert values[-1] == pytest.approx(75.0)
    assert values[-2] == pytest.approx(50.0)


def test_macd_ema_by_hand():
    # EMA span 3 (alpha 0.5) of 1, 2, 3, 4: 1, 1.5, 2.25, 3.125 (defined from the 3rd value).
    assert one(ta.ema(pl.col("c"), 3), c=[1.0, 2.0, 3.0, 4.0]) == [None, None, 2.25, 3.125]


def test_atr_by_hand():
    # True ranges: 2 (h-l), max(3, |13-10|=3, |10-10|=0) = 3, max(1, |12-12|, |11-12|) = 1.
    tr = one(
        ta.true_range(pl.col("h"), pl.col("l"), pl.col("c")),
        h=[11.0, 13.0, 12.0],
        l=[9.0, 10.0, 11.0],
        c=[10.0, 12.0, 11.5],
    )
    assert tr == [2.0, 3.0, 1.0]
    # Wilder n=2 seeded at the first range: 2, then 2.5, then 1.75; shown from the 2nd bar.
    atr = one(
        ta.atr(pl.col("h"), pl.col("l"), pl.col("c"), 2),
        h=[11.0, 13.0, 12.0],
        l=[9.0, 10.0, 11.0],
        c=[10.0, 12.0, 11.5],
    )
    assert atr == [None, 2.5, 1.75]


def test_bollinger_position_by_hand():
    # Closes 1, 2, 3: mean 2, population std sqrt(2/3); band 2 +- 2 sd; 3 sits at (3 - (2 - 2sd)) / (4 sd).
    sd = (2 / 3) ** 0.5
    assert one(ta.bollinger_position(pl.col("c"), 3), c=[1.0, 2.0, 3.0])[-1] == pytest.approx((1 + 2 * sd) / (4 * sd))


def test_moving_average_distance_drawdown_and_stochastic_by_hand():
    frame = pl.DataFrame({"c": [10.0, 12.0, 11.0], "h": [10.5, 12.5, 11.5], "l": [9.5, 11.0, 10.0]})
    out = frame.select(
        (pl.col("c") / pl.col("c").rolling_mean(3) - 1).alias("sma"),
        (pl.col("c") / pl.col("c").rolling_max(3) - 1).alias("dd"),
        ta.stochastic_k(pl.col("c"), pl.col("l").rolling_min(3), pl.col("h").rolling_max(3)).alias("k"),
    ).row(2, named=True)
    assert out["sma"] == pytest.approx(11 / 11 - 1)
    assert out["dd"] == pytest.approx(11 / 12 - 1)
    assert out["k"] == pytest.approx((11 - 9.5) / (12.5 - 9.5))


def test_vix_bands():
    assert one(vix_band(pl.col("v")), v=[12.0, 15.0, 24.9, 25.0, 35.0, 80.0]) == [0, 1, 1, 2, 3, 3]


def test_release_lags_place_values_on_the_session_they_were_published():
    dates = pl.Series("date", [dt.date(2024, 3, 28), dt.date(2024, 3, 29), dt.date(2024, 6, 1)])
    # Thursday's value is known Monday (Good Friday is no session); a daily value the next session.
    assert known_dates(dates[:1], ReleaseLag(business_days=1)).to_list() == [dt.date(2024, 4, 1)]
    # The CPI of June (dated 1 June) is known 45 days later: Tuesday 16 July.
    assert known_dates(dates[2:], ReleaseLag(calendar_days=45)).to_list() == [dt.date(2024, 7, 16)]
    grid = pl.DataFrame({"date": [dt.date(2024, 3, 28), dt.date(2024, 4, 1), dt.date(2024, 4, 2)]})
    observations = pl.DataFrame({"date": dates[:2], "value": [1.0, 2.0]})
    placed = on_grid(grid, observations, "value", ReleaseLag(business_days=1), "x")
    # The 28th's value is not known on the 28th; both it and Friday's (a holiday) arrive on the 1st.
    assert placed["x"].to_list() == [None, 2.0, 2.0]


def test_front_series_adjusts_returns_across_a_roll_without_future_prices():
    day = [dt.datetime(2024, 3, d, tzinfo=UTC) for d in (4, 5, 6)]
    bars = pl.DataFrame(
        {
            "ts_event": [day[0], day[0], day[1], day[1], day[2], day[2]],
            "instrument_id": pl.Series([1, 2, 1, 2, 1, 2], dtype=pl.UInt32),
            "open": [100.0, 102.0, 101.0, 103.0, 100.0, 102.0],
            "high": [100.0, 102.0, 101.0, 103.0, 100.0, 102.0],
            "low": [100.0, 102.0, 101.0, 103.0, 100.0, 102.0],
            "close": [100.0, 102.0, 101.0, 103.0, 100.0, 102.0],
            "volume": pl.Series([900, 100, 100, 900, 100, 900], dtype=pl.UInt64),
        }
    )
    fronts = pl.DataFrame(
        {
            "date": [d.date() for d in day],
            "instrument_id": [1, 1, 2],
            "rolled": [False, False, True],
            "rolled_from": [None, None, 1],
        }
    )
    series = front_daily(bars, fronts)
    assert series["close"].to_list() == [100.0, 101.0, 102.0]  # real front settlements
    # On the roll the factor is old/new on the day before: 101 / 103; adjusted return = 102/103 - 1.
    adjusted = (series["close"] * series["adj"]).to_list()
    assert adjusted[2] / adjusted[1] - 1 == pytest.approx(102 / 103 - 1)
    assert series["volume"].to_list() == [1000.0, 1000.0, 1000.0]


def test_splice_continues_the_adjusted_series():
    days = [dt.date(2019, 5, 2), dt.date(2019, 5, 3), dt.date(2019, 5, 6), dt.date(2019, 5, 7)]
    es = pl.DataFrame({"date": days, "close": [2900.0, 2950.0, 2930.0, 2880.0], "adj": [1.0] * 4})
    mes = pl.DataFrame({"date": days[2:], "close": [2931.0, 2881.0], "adj": [1.0, 1.0]})
    spliced = splice(es, mes)
    px = (spliced["close"] * spliced["adj"]).to_list()
    assert px[:3] == pytest.approx([2900.0, 2950.0, 2930.0])  # MES's first day continues ES's level
    assert px[3] / px[2] == pytest.approx(2881 / 2931)  # and then moves as MES does


def test_resampled_bars_close_at_their_window_end_or_the_session_close():
    day = dt.date(2024, 3, 5)  # session 2024-03-04 17:00 Chicago (23:00 UTC) to 16:00 (22:00 UTC)
    opens = [dt.datetime(2024, 3, 4, 23, 0, tzinfo=UTC) + dt.timedelta(minutes=m) for m in (0, 1, 2, 5, 1379)]
    minutes = minute_bars(
        pl.DataFrame(
            {
                "ts_event": pl.Series(opens).cast(pl.Datetime("ns", "UTC")),
                "instrument_id": pl.Series([1] * 5, dtype=pl.UInt32),
                "open": [1.0, 2.0, 3.0, 4.0, 5.0],
                "high": [1.5, 2.5, 3.5, 4.5, 5.5],
                "low": [0.5, 1.5, 2.5, 3.5, 4.5],
                "close": [1.2, 2.2, 3.2, 4.2, 5.2],
                "volume": pl.Series([10, 20, 30, 40, 50], dtype=pl.UInt64),
            }
        )
    )
    assert minutes["trade_date"].unique().to_list() == [day] and minutes["session_minute"].to_list() == [
        0,
        1,
        2,
        5,
        1379,
    ]
    five = resample(minutes, "5min")
    assert five["open"].to_list() == [1.0, 4.0, 5.0] and five["close"].to_list() == [3.2, 4.2, 5.2]
    assert five["volume"].to_list() == [60.0, 40.0, 50.0]
    assert five["ts"].to_list()[0] == dt.datetime(2024, 3, 4, 23, 5, tzinfo=UTC)
    assert five["ts_event"].to_list()[1] == dt.datetime(2024, 3, 4, 23, 5, tzinfo=UTC)  # window start, not first trade
    assert resample(minutes.reverse(), "5min").equals(five)  # bars in any order give the same bars
    four_hours = resample(minutes, "4h")
    # The last 4h bar of a session (13:00-16:00 Chicago) is 3 hours long and closes at 16:00.
    assert four_hours["ts"].to_list()[-1] == dt.datetime(2024, 3, 5, 22, 0, tzinfo=UTC)
    daily = resample(minutes, "1d")
    assert (
        daily.height == 1
        and daily["high"].item() == 5.5
        and daily["ts"].item() == dt.datetime(2024, 3, 5, 22, 0, tzinfo=UTC)
    )


def test_equity_calendar_expiries_rolls_and_month_ends():
    assert dt.date(2024, 3, 15) in quarterly_expiries(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    table = calendar_table(pl.Series("date", [dt.date(2024, 3, 7), dt.date(2024, 3, 15), dt.date(2024, 3, 28)]))
    rows = table.rows_by_key("date", named=True)
    assert (
        rows[dt.date(2024, 3, 7)][0]["sessions_to_expiry"] == 6 and rows[dt.date(2024, 3, 7)][0]["in_roll_window"] == 1
    )
    assert rows[dt.date(2024, 3, 15)][0]["is_expiry_rebalance_day"] == 1
    # 28 March 2024 is the last session of March and of the quarter (Good Friday follows).
    assert rows[dt.date(2024, 3, 28)][0]["is_month_end"] == 1 and rows[dt.date(2024, 3, 28)][0]["is_quarter_end"] == 1
    assert rows[dt.date(2024, 3, 28)][0]["day_of_week"] == 3


def test_release_lags_are_configurable_per_series():
    import dagster as dg

    from cbi_assets.features.assets import ReleaseLags
    from cbi_assets.features.pit import RELEASE_LAGS

    lags = ReleaseLags(business_days={"DGS10": 2}, calendar_days={"CPIAUCSL": 50}).lags()
    assert lags["DGS10"] == ReleaseLag(business_days=2) and lags["CPIAUCSL"] == ReleaseLag(calendar_days=50)
    assert lags["DGS2"] == RELEASE_LAGS["DGS2"]
    with pytest.raises(dg.Failure, match=r"unknown FRED series \['DGS99'\]"):
        ReleaseLags(business_days={"DGS99": 1}).lags()
    # Two business days later: Thursday's 10-year yield is used from the Tuesday after Good Friday.
    placed = on_grid(
        pl.DataFrame({"date": [dt.date(2024, 4, 1), dt.date(2024, 4, 2)]}),
        pl.DataFrame({"date": [dt.date(2024, 3, 28)], "value": [4.2]}),
        "value",
        lags["DGS10"],
        "x",
    )
    assert placed["x"].to_list() == [None, 4.2]
