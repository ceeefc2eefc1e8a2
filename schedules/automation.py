"""The evening cycle after the ingest, and the daily validation.

`evening_cycle` is Dagster's automation sensor over the assets that carry `EVENING`
(cbi_assets/automation.py): once the ingest schedules have stored the day, it builds the feature
layers, then the regime state and today's forecasts and their upload. A failed run of the cycle
raises an alert. The validation schedules score the matured forecasts at 18:30 Chicago.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from cbi_assets.calendars import is_settlement_day
from cbi_assets.catalogue import EXCHANGE_TIMEZONE, MARKETS, Market
from cbi_assets.partitions import horizon_partitions
from resources.alerts import Alerts
from schedules.ingest import CYCLE_TAG
from schedules.jobs import VALIDATE_JOBS

VALIDATION_TAG = "cbi/validation"

evening_cycle = dg.AutomationConditionSensorDefinition(
    "evening_cycle",
    target=dg.AssetSelection.all(),
    run_tags={CYCLE_TAG: "evening"},
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Builds what the day's data changed, asset by asset as its inputs are ready: the feature layers "
    "after the ingest, then the regime state and today's forecasts and their upload.",
)


@dg.run_failure_sensor(
    name="cycle_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed run of the evening cycle (ingest or automation) raises an alert: the desk reads no "
    "forecast that evening.",
)
def cycle_failure_alert(context: dg.RunFailureSensorContext, alerts: Alerts):
    run = context.dagster_run
    day = run.tags.get(CYCLE_TAG)
    if day is None:
        return dg.SkipReason(f"run {run.run_id[:8]} ({run.job_name}) is not part of the evening cycle")
    alerts.send(
        "daily_cycle",
        f"evening cycle: run {run.run_id[:8]} of {run.job_name} failed: "
        f"{context.failure_event.message}; what depends on it waits (re-run it from the UI)",
        severity="error",
        details={"run_id": run.run_id, "job": run.job_name, "cycle": day},
        key=f"cycle:{run.run_id}",
        log=context.log,
    )


def _validation_schedule(market: Market) -> dg.ScheduleDefinition:
    job = VALIDATE_JOBS[market.key]

    @dg.schedule(
        name=f"{market.key}_daily_validation",
        job=job,
        cron_schedule="30 18 * * 1-5",
        execution_timezone=EXCHANGE_TIMEZONE,
        description=f"18:30 Chicago on exchange days: validate {market}'s matured predictions, every horizon.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        day: dt.date = context.scheduled_execution_time.date()
        if not is_settlement_day(day):
            return dg.SkipReason(f"{day} is an exchange holiday: nothing new to validate")
        return [
            dg.RunRequest(
                run_key=f"validate:{market.key}:{h}:{day}", partition_key=h, tags={VALIDATION_TAG: day.isoformat()}
            )
            for h in horizon_partitions(market).get_partition_keys()
        ]

    return _schedule


VALIDATION_SCHEDULES = [_validation_schedule(m) for m in MARKETS.values()]
