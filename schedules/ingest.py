"""The evening ingest: after the CME close, take in the partitions that hold the day.

One job per partition definition of the raw layer (years since 2000; years of MES records since its
listing); each has a schedule at 17:30 Chicago on exchange days only that refreshes the year of the day
(for intraday records, the days from the last one stored on). The rest of the evening cycle follows by automation
(cbi_assets/automation.py).
"""

import datetime as dt

import dagster as dg

from cbi_assets.calendars import is_settlement_day
from cbi_assets.catalogue import EXCHANGE_TIMEZONE
from cbi_assets.raw.partitions import RAW_PARTITIONS, partition_of
from cbi_assets.selections import of_raw

CYCLE_TAG = "cbi/cycle"  # on every run of the evening cycle: the day (YYYY-MM-DD) of an ingest, "evening" otherwise

DESCRIPTIONS = {
    "market_years": "Raw futures, FRED and Yahoo daily records of one year (since 2000).",
    "mes_years": "Raw MES daily bars, 1-minute bars, trades, TBBO, MBP-10 and definitions of one year (since its "
    "listing in 2019).",
}
INGEST_JOBS = {
    name: dg.define_asset_job(f"ingest_{name}", selection=of_raw(name), description=DESCRIPTIONS[name])
    for name in RAW_PARTITIONS
}


def _ingest_schedule(name: str) -> dg.ScheduleDefinition:
    job = INGEST_JOBS[name]

    @dg.schedule(
        name=f"evening_{job.name}",
        job=job,
        cron_schedule="30 17 * * 1-5",
        execution_timezone=EXCHANGE_TIMEZONE,
        description=f"17:30 Chicago, after the CME close, on exchange days: refresh the partition of the day. "
        f"{DESCRIPTIONS[name]}",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        day: dt.date = context.scheduled_execution_time.date()
        if not is_settlement_day(day):
            return dg.SkipReason(f"{day} is an exchange holiday: no session to ingest")
        return dg.RunRequest(
            run_key=f"ingest:{job.name}:{day}", partition_key=partition_of(day), tags={CYCLE_TAG: day.isoformat()}
        )

    return _schedule


INGEST_SCHEDULES = [_ingest_schedule(name) for name in RAW_PARTITIONS]
