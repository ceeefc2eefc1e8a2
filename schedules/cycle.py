"""The daily cycle after the CME close: ingest, then features, then one prediction run per market and horizon.

The `daily_cycle` schedule (`schedules/ingest.py`) starts the day's market-days ingest at 17:30 Chicago on exchange
days, tagged `cbi/cycle=<day>`. A Dagster schedule launches runs of its own job only, so `daily_cycle_sensor`
carries the rest: it reads the runs tagged with each open cycle day and requests the next step when the previous one
succeeded:

    ingest_market_days + ingest_mes_days (the day's partition) -> daily_features -> zl_predict, mes_predict (each
    horizon)

A failed or canceled run stops that day's cycle: nothing downstream is requested, and an alert says so.
`zl_daily_validation` and `mes_daily_validation` run the validation jobs, every horizon, at 18:30 Chicago on exchange
days (one schedule per job, for the same reason).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from cbi_assets.calendars import is_settlement_day
from cbi_assets.catalogue import EXCHANGE_TIMEZONE
from cbi_assets.partitions import HORIZON_PARTITIONS
from schedules.ingest import CYCLE_TAG, ingest_run_key
from schedules.jobs import (
    PREDICT_JOBS,
    VALIDATE_JOBS,
    daily_features,
    ingest_market_days,
    ingest_mes_days,
)

VALIDATION_TAG = "cbi/validation"  # not the cycle tag: a validation run alone must not open a cycle day
PARTITION_TAG = "dagster/partition"  # Dagster's tag holding a run's partition key
INGEST = (ingest_market_days.name, ingest_mes_days.name)
FAILED = {"FAILURE", "CANCELED"}


@dataclass(frozen=True)
class Step:
    """One run of the cycle: its job, partition (None: unpartitioned) and run key."""

    job: str
    partition: str | None
    run_key: str


@dataclass
class CycleState:
    """What a cycle day needs next: `requests` to make, `failed` runs ("job[partition]") that stopped it,
    `done` (nothing more will happen that day) and `waiting` (what it waits for)."""

    requests: list[Step] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    done: bool = False
    waiting: str = ""


def ingest_steps(day: str) -> list[Step]:
    return [Step(job, day, ingest_run_key(job, day)) for job in INGEST]


def features_step(day: str) -> Step:
    return Step(daily_features.name, None, f"features:{day}")


def predict_steps(day: str) -> list[Step]:
    return [Step(job.name, h, f"predict:{market}:{h}:{day}")
            for market, job in PREDICT_JOBS.items() for h in HORIZON_PARTITIONS[market].get_partition_keys()]


def cycle_state(day: str, statuses: Mapping[tuple[str, str | None], str], newest: bool = True) -> CycleState:
    """The next step of `day`'s cycle from the status of its newest run per (job, partition)
    ("SUCCESS", "FAILURE", "CANCELED", "STARTED", "QUEUED", ...). A cycle that is not the `newest` only completes
    its ingest (the day's raw data); its features and predictions would be those of the newer cycle."""

    def stage(steps: list[Step]) -> tuple[list[Step], list[str], list[str]]:
        """(steps with no run yet, failed steps, steps still running) of one stage."""
        missing, failed, running = [], [], []
        for step in steps:
            status = statuses.get((step.job, step.partition))
            name = step.job + (f"[{step.partition}]" if step.partition else "")
            if status is None:
                missing.append(step)
            elif status in FAILED:
                failed.append(name)
            elif status != "SUCCESS":
                running.append(name)
        return missing, failed, running

    stages = [(ingest_steps(day), "ingest"), ([features_step(day)], "features"), (predict_steps(day), "predictions")]
    for steps, label in stages if newest else stages[:1]:
        missing, failed, running = stage(steps)
        if failed:
            return CycleState(failed=failed, done=True, waiting=f"{label} failed")
        if missing or running:
            return CycleState(requests=missing, waiting=f"{label}: {len(running)} running, {len(missing)} requested")
    return CycleState(done=True, waiting="complete" if newest else "ingested; a newer cycle carries on")


def _validation_schedule(market: str) -> dg.ScheduleDefinition:
    job = VALIDATE_JOBS[market]

    @dg.schedule(
        name=f"{market}_daily_validation",
        job=job,
        cron_schedule="30 18 * * 1-5",
        execution_timezone=EXCHANGE_TIMEZONE,
        description=f"18:30 Chicago on exchange days: validate {market.upper()}'s matured predictions, every horizon.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        day: dt.date = context.scheduled_execution_time.date()
        if not is_settlement_day(day):
            return dg.SkipReason(f"{day} is an exchange holiday: nothing new to validate")
        return [dg.RunRequest(run_key=f"validate:{market}:{h}:{day}", partition_key=h,
                               tags={VALIDATION_TAG: day.isoformat()})
                for h in HORIZON_PARTITIONS[market].get_partition_keys()]

    return _schedule


def _newest_status(runs: Iterable[dg.DagsterRun]) -> dict[tuple[str, str | None], str]:
    statuses: dict[tuple[str, str | None], str] = {}
    for run in runs:  # newest first: a re-run replaces an older attempt
        statuses.setdefault((run.job_name, run.tags.get(PARTITION_TAG)), run.status.value)
    return statuses


@dg.sensor(
    name="daily_cycle_sensor",
    jobs=[ingest_mes_days, daily_features, *PREDICT_JOBS.values()],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,  # a few run-storage queries per tick
    required_resource_keys={"alerts"},
    description="Carries each daily cycle on: MES ingest beside the market ingest, features once every ingest "
                "succeeded, predictions once the features did. A failed run stops its day and raises an alert.",
)
def daily_cycle_sensor(context: dg.SensorEvaluationContext):
    # The cursor is the newest day through which every cycle is finished: only later days are read.
    through = context.cursor or ""
    tagged = context.instance.get_run_tags(tag_keys=[CYCLE_TAG])
    days = sorted(d for _, values in tagged for d in values if d > through)
    requests, notes, closed = [], [], True
    for day in days:
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={CYCLE_TAG: day}))
        state = cycle_state(day, _newest_status(runs), newest=day == days[-1])
        if state.failed:
            # The desk reads no forecast that evening: say so once per day and failure, not in the log alone.
            context.resources.alerts.send(
                "daily_cycle", f"daily cycle {day} stopped: {', '.join(state.failed)} failed; nothing downstream is "
                               "requested (re-run the failed run and the later steps by hand)",
                severity="error", details={"day": day, "failed": state.failed},
                key=f"cycle:{day}:{','.join(state.failed)}", log=context.log)
        requests += [dg.RunRequest(job_name=s.job, partition_key=s.partition, run_key=s.run_key,
                                   tags={CYCLE_TAG: day}) for s in state.requests]
        notes.append(f"{day}: {state.waiting}")
        closed = closed and state.done
        if closed:
            through = day
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=through or None)
    return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(notes) or "no daily cycle has started"),
                           cursor=through or None)


VALIDATION_SCHEDULES = [_validation_schedule(m) for m in VALIDATE_JOBS]
