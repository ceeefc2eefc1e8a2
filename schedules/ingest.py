"""The evening ingest: after the CME close, take in the day's raw partitions.

One job per partitions definition (market days since 2000, MES days since its listing), each
scheduled at 17:30 Chicago time on exchange trading days only.
"""


import datetime as dt

import dagster as dg

from cbi_assets.calendars import is_settlement_day
from cbi_assets.catalogue import EXCHANGE_TIMEZONE
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.partitions import market_days, mes_days, partitions_for


def _ingest_job(name: str, partitions: dg.PartitionsDefinition, description: str):
    # The job takes its partitions from the assets it selects: those of one definition.
    keys = [d.key for d in RAW_DATASETS.values() if partitions_for(d) == partitions]
    return dg.define_asset_job(name, selection=keys, description=description)


ingest_market_days = _ingest_job("ingest_market_days", market_days, "Raw futures, FRED and Yahoo records of one trading day.")
ingest_mes_days = _ingest_job("ingest_mes_days", mes_days, "Raw MES bars, ticks and definitions of one trading day.")
INGEST_JOBS = [ingest_market_days, ingest_mes_days]


def _after_the_close(job) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{job.name}_after_close",
        job=job,
        cron_schedule="30 17 * * 1-5",
        execution_timezone=EXCHANGE_TIMEZONE,
        description="17:30 Chicago, after the CME close, on exchange trading days.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        day: dt.date = context.scheduled_execution_time.date()
        if not is_settlement_day(day):
            return dg.SkipReason(f"{day} is an exchange holiday: no session to ingest")
        return dg.RunRequest(run_key=f"{job.name}:{day}", partition_key=day.isoformat())

    return _schedule


INGEST_SCHEDULES = [_after_the_close(job) for job in INGEST_JOBS]
