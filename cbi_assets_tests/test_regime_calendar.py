"""The named regime calendar: every date in exactly one regime, and clear errors when not."""

import datetime as dt

import polars as pl
import pytest

from cbi_assets.catalogue import REGIMES, Regime, regime_of
from cbi_assets.regimes.calendar import calendar_frame, regimes_of

D = dt.date.fromisoformat


def test_the_desk_calendar_gives_every_date_the_catalogue_regime():
    calendar = calendar_frame()
    assert calendar.height == len(REGIMES) and calendar["start"][0] is None and calendar["end"][-1] is None
    days = pl.date_range(D("1998-01-01"), D("2026-12-31"), "1d", eager=True)
    named = regimes_of(days, calendar)
    assert named.null_count() == 0
    expected = [regime_of(d).name for d in days.to_list()]
    assert named.to_list() == expected
    # Boundaries fall on the right side.
    assert regimes_of(pl.Series([D("2008-06-30"), D("2008-07-01")]), calendar).to_list() == [
        "commodity_boom_2003_2008",
        "financial_crisis_2008_2009",
    ]


def test_dates_keep_their_order_and_spans_count_them():
    calendar = calendar_frame()
    dates = pl.Series([D("2020-03-16"), D("2001-09-17"), D("2020-03-17")])
    assert regimes_of(dates, calendar).to_list() == ["covid_crisis_2020", "dotcom_bust_2000_2002", "covid_crisis_2020"]


@pytest.mark.parametrize(
    ("regimes", "message"),
    [
        ([Regime("a", None, D("2010-12-31"), 1), Regime("b", D("2011-01-02"), None, 1)], "must meet"),
        ([Regime("a", None, D("2010-12-31"), 1), Regime("b", D("2010-12-30"), None, 1)], "must meet"),
        (
            [Regime("a", D("2000-01-01"), D("2010-12-31"), 1), Regime("b", D("2011-01-01"), None, 1)],
            "leave its start open",
        ),
        (
            [Regime("a", None, D("2010-12-31"), 1), Regime("b", D("2011-01-01"), D("2020-01-01"), 1)],
            "leave its end open",
        ),
        ([Regime("a", None, D("2010-12-31"), 1), Regime("a", D("2011-01-01"), None, 1)], "unique"),
        ([Regime("a", None, D("2010-12-31"), 0), Regime("b", D("2011-01-01"), None, 1)], "positive"),
        ([], "empty"),
    ],
)
def test_a_calendar_that_does_not_tile_time_is_refused(regimes, message):
    with pytest.raises(ValueError, match=message):
        calendar_frame(regimes)


def test_an_edited_calendar_is_used_as_given():
    calendar = calendar_frame([Regime("before", None, D("2019-12-31"), 10), Regime("after", D("2020-01-01"), None, 30)])
    assert regimes_of(pl.Series([D("2019-12-31"), D("2020-01-01")]), calendar).to_list() == ["before", "after"]
    assert calendar["weight"].to_list() == [10.0, 30.0]
