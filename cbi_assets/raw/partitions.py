"""The raw layer's Dagster partitions, declared once: years.

The lake keeps one versioned file per day (raw/store.py); Dagster's partitions over those files are
years so that its bookkeeping stays small: a 25-year backfill of every raw dataset records about
700 partitions, not a quarter of a million (months would be 7,800: minutes of bookkeeping on
Dagster's stock SQLite storage). The evening cycle refreshes the year of the day; for intraday
records it fetches only the days after the last one stored (raw/assets.py).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from cbi_assets.catalogue import EXCHANGE_TIMEZONE, FUTURES, HISTORY_START
from cbi_assets.raw.datasets import RawDataset

MES_LISTED = FUTURES["MES"].listed


def _years(start: dt.date) -> dg.TimeWindowPartitionsDefinition:
    # end_offset=1 offers the current year, so the evening ingest can take in today's session.
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule="0 0 1 1 *", start=str(start.year), fmt="%Y", timezone=EXCHANGE_TIMEZONE, end_offset=1
    )


market_years = _years(HISTORY_START)
# MES listed on 2019-05-06: no partition exists for a year it could not have traded.
mes_years = _years(MES_LISTED)
RAW_PARTITIONS = {"market_years": market_years, "mes_years": mes_years}


def partitions_name(dataset: RawDataset) -> str:
    """Which of RAW_PARTITIONS a dataset is partitioned by."""
    return "mes_years" if dataset.symbol == "MES" else "market_years"


def partitions_for(dataset: RawDataset) -> dg.TimeWindowPartitionsDefinition:
    return RAW_PARTITIONS[partitions_name(dataset)]


def partition_of(day: dt.date) -> str:
    """The key of the partition that holds `day`: its year."""
    return str(day.year)


def window_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of the partitions a run materializes."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()
