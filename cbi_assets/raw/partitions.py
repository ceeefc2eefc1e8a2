"""Day partitions of the raw layer, in exchange time, declared once."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from cbi_assets.catalogue import EXCHANGE_TIMEZONE, FUTURES, HISTORY_START
from cbi_assets.raw.datasets import RawDataset


def trade_days(start: dt.date) -> dg.DailyPartitionsDefinition:
    # end_offset=1 offers today's partition, so the evening ingest can run once the session settles.
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), timezone=EXCHANGE_TIMEZONE, end_offset=1)


market_days = trade_days(HISTORY_START)
# MES listed on 2019-05-06: no partition exists for a day it could not have traded.
mes_days = trade_days(FUTURES["MES"].listed)


def partitions_for(dataset: RawDataset) -> dg.DailyPartitionsDefinition:
    return mes_days if dataset.symbol == "MES" else market_days


def window_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """First and last day (inclusive) of the partitions a run materializes."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()
