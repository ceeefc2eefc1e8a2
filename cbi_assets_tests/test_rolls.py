"""The front month follows the previous session's volume and never rolls back."""

import datetime as dt

import polars as pl

from cbi_assets.raw.rolls import front_month


def contract_days(rows: list[tuple[int, int, float]]) -> pl.DataFrame:
    """(day index, instrument, volume) -> bars."""
    return pl.DataFrame(
        {
            "ts_event": [dt.datetime(2024, 3, 1, tzinfo=dt.UTC) + dt.timedelta(days=d) for d, _, _ in rows],
            "instrument_id": pl.Series([i for _, i, _ in rows], dtype=pl.UInt32),
            "volume": pl.Series([v for _, _, v in rows], dtype=pl.UInt64),
        }
    )


def test_rolls_the_day_after_volume_crosses_over():
    # Contract 2 out-trades contract 1 on day 2, so it is the front from day 3.
    bars = contract_days(
        [(0, 1, 900), (0, 2, 100), (1, 1, 800), (1, 2, 300), (2, 1, 300), (2, 2, 800), (3, 1, 100), (3, 2, 900)]
    )
    front = front_month(bars)
    assert front["instrument_id"].to_list() == [1, 1, 1, 2]
    assert front["rolled"].to_list() == [False, False, False, True]
    assert front.filter("rolled")["rolled_from"].item() == 1


def test_a_flapping_crossover_does_not_roll_back():
    bars = contract_days(
        [(0, 1, 900), (0, 2, 100), (1, 1, 400), (1, 2, 500), (2, 1, 600), (2, 2, 500), (3, 1, 300), (3, 2, 700)]
    )
    front = front_month(bars)
    assert front["instrument_id"].to_list() == [1, 1, 2, 2]
    assert front["rolled"].sum() == 1


def test_a_continuous_series_rolls_when_its_contract_changes():
    front = front_month(contract_days([(0, 5, 10), (1, 5, 10), (2, 6, 10), (3, 6, 10)]))
    assert front["instrument_id"].to_list() == [5, 5, 6, 6]
    assert front["rolled"].to_list() == [False, False, True, False]


def test_a_front_month_file_without_contracts_never_rolls():
    bars = contract_days([(d, 0, 10) for d in range(4)]).with_columns(pl.lit(None, pl.UInt32).alias("instrument_id"))
    front = front_month(bars)
    assert front["instrument_id"].null_count() == 4 and not front["rolled"].any()
