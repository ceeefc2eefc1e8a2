"""A source that stops is not carried forward for years: its features turn null and the layer says so."""

import datetime as dt

import polars as pl

from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import Freshness
from cbi_assets.features.freshness import freshness_findings, input_freshness
from cbi_assets.features.layers import asset_layer
from cbi_assets.features.pit import ReleaseLag, on_grid

SESSIONS = settlement_days(dt.date(2023, 1, 3), dt.date(2024, 6, 28))


def bars(last: dt.date, start: float = 50.0) -> pl.DataFrame:
    days = [d for d in SESSIONS if d <= last]
    closes = [start * (1 + 0.001 * ((i * 7) % 11 - 5)) for i in range(len(days))]
    return pl.DataFrame(
        {"date": days, "open": closes, "high": closes, "low": closes, "close": closes, "adj": [1.0] * len(days)}
    ).with_columns(pl.lit(1000.0).alias("volume"))


def test_a_daily_series_is_carried_five_sessions_then_null():
    grid = pl.DataFrame({"date": SESSIONS})
    stops = dt.date(2024, 6, 3)
    observations = pl.DataFrame({"date": [d for d in SESSIONS if d <= stops]}).with_columns(value=pl.lit(4.2))
    placed = on_grid(grid, observations, "value", ReleaseLag(business_days=1), "x")
    after = placed.filter(pl.col("date") > stops)["x"].to_list()
    # Monday's value is known Tuesday: carried through five sessions after that, then no longer.
    assert after[:6] == [4.2] * 6 and set(after[6:]) == {None}
    monthly = pl.DataFrame({"date": [dt.date(2023, 1, 1)], "value": [300.0]})
    placed = on_grid(grid, monthly, "value", ReleaseLag(calendar_days=45), "cpi")  # known 2023-02-15
    known = placed.filter(pl.col("cpi").is_not_null())["date"]
    assert known.min() == dt.date(2023, 2, 15) and known.max() == dt.date(2023, 3, 31)  # 45 days past its release


def test_a_market_that_ends_gives_null_features_not_a_constant_and_the_layer_says_since_when():
    ended = dt.date(2023, 9, 29)
    continuous = {s: bars(SESSIONS[-1]) for s in ("zl", "zs", "zm", "cl")} | {"ho": bars(ended, 2.5)}
    layer = asset_layer("zl", continuous).frame
    late = layer.filter(pl.col("date") > dt.date(2023, 10, 9))
    ho = [c for c in layer.columns if c.startswith("ho_")]
    assert ho and late.select(pl.col(ho).is_null().all()).row(0) == (True,) * len(ho)
    assert layer.filter(pl.col("date") <= ended).select(pl.col(ho[0]).is_not_null().any()).item()

    report = input_freshness(layer["date"], continuous, ["zl", "zs", "zm", "cl", "ho"], {}, [], {})
    assert report.filter(pl.col("input") == "HO front settlement")["state"].to_list() == ["ended"]
    findings = freshness_findings(report)
    assert findings["inputs_fresh"].passed and not findings["inputs_running"].passed
    assert "HO front settlement has no new value since 2023-09-29" in findings["inputs_running"].summary


def test_a_source_that_stopped_last_week_blocks_with_its_name_and_date():
    continuous = {"zl": bars(SESSIONS[-1]), "cl": bars(dt.date(2024, 6, 18))}
    series = {"DGS10": pl.DataFrame({"date": SESSIONS}).with_columns(value=pl.lit(4.0))}
    report = input_freshness(pl.Series(SESSIONS), continuous, ["zl", "cl"], series, ["DGS10"], {})
    assert dict(zip(report["input"], report["state"], strict=True)) == {
        "ZL front settlement": "fresh",
        "CL front settlement": "stale",
        "FRED DGS10": "fresh",
    }
    stale = freshness_findings(report)["inputs_fresh"]
    assert not stale.passed
    assert stale.summary.startswith(
        "stale: CL front settlement has no new value since 2024-06-18 (7 sessions"
    )  # Juneteenth is no session
    assert Freshness(sessions=5).describe() in stale.summary
