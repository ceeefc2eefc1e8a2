"""Validation refuses what cannot be stored; checks report duplicates, disorder and gaps."""

import datetime as dt

import polars as pl
import pytest

from cbi_assets.raw.datasets import raw_dataset
from cbi_assets.raw.errors import RawDataError
from cbi_assets.raw.quality import (
    duplicate_finding,
    gap_finding,
    minute_holes,
    order_finding,
    schema_finding,
    validate,
)

UTC = dt.UTC


def daily(days: list[dt.date], closes: list[float], ids: list[int] | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ts_event": pl.Series([dt.datetime.combine(d, dt.time(0), UTC) for d in days]).cast(
                pl.Datetime("ns", "UTC")
            ),
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": pl.Series([100] * len(days), dtype=pl.UInt64),
        }
    )
    return frame.with_columns(pl.Series("instrument_id", ids or [1] * len(days), dtype=pl.UInt32))


WEEK = [dt.date(2024, 3, d) for d in (4, 5, 6, 7, 8)]  # Monday to Friday


def test_impossible_values_are_refused_each_with_record_day_column_and_value():
    frame = daily(WEEK, [45.0, 45.1, 45.2, 45.3, 45.4]).with_columns(
        close=pl.Series([45.0, 0.0, 45.2, 45.3, 45.4]),  # a close of zero on Tuesday
        high=pl.Series([45.0, 45.1, 44.0, 45.3, 45.4]),  # a high below the low on Wednesday
        open=pl.Series([45.0, 45.1, 45.2, 46.0, float("nan")]),  # above the high Thursday, NaN Friday
    )
    with pytest.raises(RawDataError) as refused:
        validate(raw_dataset("zl_ohlcv_1d"), frame, "ZL.dbn.zst")
    message = str(refused.value)
    assert "record 1, 2024-03-05: close = 0.0 is zero or below, where ZL never trades" in message
    assert "record 2, 2024-03-06: high = 44.0 is below the low" in message
    assert "record 3, 2024-03-07: open = 46.0 lies outside the bar's [low, high] [low 45.3, high 45.3]" in message
    assert "record 4, 2024-03-08: open = nan is not a finite number" in message
    last = message.splitlines()[-1]
    assert last.startswith("ZL.dbn.zst: zl_ohlcv_1d (ZL) has ")
    assert "columns close, high, open" in last and last.endswith("Nothing was written.")


def test_a_long_list_of_impossible_values_is_cut_at_the_limit():
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(60)]
    with pytest.raises(RawDataError) as refused:
        validate(raw_dataset("zl_ohlcv_1d"), daily(days, [0.0] * 60), "test")
    assert "... and 220 more" in str(refused.value)  # 4 prices x 60 days, 20 named
    assert "240 impossible value(s) in 60 record(s)" in str(refused.value).splitlines()[-1]


def test_infinite_and_nan_observations_are_refused_not_blamed_on_prices():
    frame = pl.DataFrame(
        {
            "ts_event": pl.Series([dt.datetime(2024, 3, d, tzinfo=UTC) for d in (4, 5, 6)]).cast(
                pl.Datetime("ns", "UTC")
            ),
            "value": [4.1, float("inf"), None],
        }
    )
    with pytest.raises(RawDataError, match=r"record 1, 2024-03-05: value = inf is not a finite number") as refused:
        validate(raw_dataset("fred_dgs10"), frame, "DGS10.csv")
    assert "trades" not in str(refused.value)
    validate(raw_dataset("fred_dgs10"), frame.filter(pl.col("value").is_finite() | pl.col("value").is_null()), "ok")


def test_crude_oil_may_settle_below_zero():
    frame = daily([dt.date(2020, 4, 20)], [-37.63])
    validate(raw_dataset("cl_ohlcv_1d"), frame, "test")  # WTI on 2020-04-20: a real price


def test_missing_column_and_wrong_type_are_refused():
    with pytest.raises(RawDataError, match=r"missing column\(s\) \['close'\]"):
        validate(raw_dataset("zl_ohlcv_1d"), daily(WEEK, [1.0] * 5).drop("close"), "test")
    with pytest.raises(RawDataError, match="column types"):
        validate(
            raw_dataset("zl_ohlcv_1d"), daily(WEEK, [1.0] * 5).with_columns(pl.col("close").cast(pl.String)), "test"
        )


def test_duplicates_are_counted_with_examples():
    frame = daily([WEEK[0], WEEK[1], WEEK[1]], [1.0, 2.0, 2.0])
    finding = duplicate_finding(raw_dataset("zl_ohlcv_1d"), frame)
    assert not finding.passed and finding.metadata["duplicate_records"] == 2
    assert finding.metadata["examples"][0]["ts_event"].startswith("2024-03-05")
    assert duplicate_finding(raw_dataset("zl_ohlcv_1d"), daily(WEEK, [1.0] * 5)).passed


def test_out_of_order_rows_are_found_per_instrument():
    # Two contracts interleaved is fine; one contract stepping back in time is not.
    ok = daily([WEEK[0], WEEK[0], WEEK[1], WEEK[1]], [1.0] * 4, ids=[1, 2, 1, 2])
    assert order_finding(raw_dataset("zl_ohlcv_1d"), ok).passed
    bad = daily([WEEK[0], WEEK[2], WEEK[1]], [1.0] * 3)
    finding = order_finding(raw_dataset("zl_ohlcv_1d"), bad)
    assert not finding.passed and finding.metadata["out_of_order_records"] == 1
    assert finding.metadata["examples"][0]["row"] == "2"


def test_gaps_against_the_exchange_calendar():
    dataset = raw_dataset("zl_ohlcv_1d")
    full = gap_finding(dataset, daily(WEEK, [1.0] * 5), WEEK[0], WEEK[-1])
    assert full.passed and full.metadata["missing_days"] == 0
    holed = gap_finding(dataset, daily([WEEK[0], WEEK[4]], [1.0, 1.0]), WEEK[0], WEEK[-1])
    assert not holed.passed and holed.metadata["first_missing"] == ["2024-03-05", "2024-03-06", "2024-03-07"]
    # Good Friday 2024-03-29 has no session: not a gap.
    easter = [dt.date(2024, 3, 28), dt.date(2024, 4, 1)]
    assert gap_finding(dataset, daily(easter, [1.0, 1.0]), easter[0], easter[1]).metadata["missing_days"] == 0


def test_minute_holes_inside_a_session_but_not_across_the_halt():
    stamps = [
        dt.datetime(2024, 3, 5, 14, 30, tzinfo=UTC),
        dt.datetime(2024, 3, 5, 14, 31, tzinfo=UTC),
        dt.datetime(2024, 3, 5, 14, 35, tzinfo=UTC),  # 3 minutes missing
        dt.datetime(2024, 3, 5, 21, 59, tzinfo=UTC),  # last bar before the 16:00 Chicago halt
        dt.datetime(2024, 3, 5, 23, 0, tzinfo=UTC),  # next session
    ]
    bars = pl.DataFrame({"ts_event": pl.Series(stamps).cast(pl.Datetime("ns", "UTC"))})
    holes = minute_holes(bars)
    assert holes["minutes"].to_list()[0] == 3
    assert 59 not in holes["minutes"].to_list()  # the halt is not a hole


def test_schema_finding_lists_additional_columns():
    finding = schema_finding(raw_dataset("zl_ohlcv_1d"), daily(WEEK, [1.0] * 5).with_columns(pl.lit(1).alias("extra")))
    assert finding.passed and "extra" in finding.metadata["additional"]
    assert not schema_finding(raw_dataset("zl_ohlcv_1d"), daily(WEEK, [1.0] * 5).drop("close")).passed
