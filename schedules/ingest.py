"""The evening ingest: after the CME close, take in the day's raw partitions.

One job per partitions definition (market days since 2000, MES days since its listing). The `daily_cycle` schedule
starts the market-days ingest at 17:30 Chicago time on exchange trading days only, tagged `cbi/cycle=<day>`; the
cycle sensor (`schedules/cycle.py`) requests the MES ingest beside it and the steps after.
"""


import datetime as dt

import dagster as dg

from cbi_assets.calendars import is_settlement_day
from cbi_assets.catalogue import EXCHANGE_TIMEZONE
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.partitions import market_days, mes_days, partitions_for

CYCLE_TAG = "cbi/cycle"  # every run of one day's cycle carries it, valued with the day (YYYY-MM-DD)


def _ingest_job(name: str, partitions: dg.PartitionsDefinition, description: str):
    # The job takes its partitions from the assets it selects: those of one definition.
    keys = [d.key for d in RAW_DATASETS.values() if partitions_for(d) == partitions]
    return dg.define_asset_job(name, selection=keys, description=description)


ingest_market_days = _ingest_job("ingest_market_days", market_days,
                                 "Raw futures, FRED and Yahoo records of one trading day.")
ingest_mes_days = _ingest_job("ingest_mes_days", mes_days, "Raw MES bars, ticks and definitions of one trading day.")
INGEST_JOBS = [ingest_market_days, ingest_mes_days]


def ingest_run_key(job_name: str, day: str) -> str:
    return f"ingest:{job_name}:{day}"


@dg.schedule(
    name="daily_cycle",
    job=ingest_market_days,
    cron_schedule="30 17 * * 1-5",
    execution_timezone=EXCHANGE_TIMEZONE,
    description="17:30 Chicago, after the CME close, on exchange trading days: the day's ingest, which starts the "
                "daily cycle (daily_cycle_sensor requests the MES ingest, the features and the predictions).",
)
def daily_cycle(context: dg.ScheduleEvaluationContext):
    # A schedule launches runs of its own job only: the MES ingest of the day follows from daily_cycle_sensor.
    day: dt.date = context.scheduled_execution_time.date()
    if not is_settlement_day(day):
        return dg.SkipReason(f"{day} is an exchange holiday: no session to ingest")
    return dg.RunRequest(run_key=ingest_run_key(ingest_market_days.name, day.isoformat()),
                         partition_key=day.isoformat(), tags={CYCLE_TAG: day.isoformat()})


INGEST_SCHEDULES = [daily_cycle]
