"""Sensors that react to the data: a confirmed regime shift, a big market move, a failed validation, a correlation
breakdown. Each keeps a cursor so that it acts once per event; the decisions are in `cbi_assets.operations.triggers`.
"""

# No `from __future__ import annotations`: Dagster reads the sensors' resource parameters' annotations.
import datetime as dt
import json

import dagster as dg
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, ZL
from cbi_assets.lake import Lake, NotBuilt
from cbi_assets.operations.triggers import (
    CORRELATION_COLUMNS,
    NORM_SESSIONS,
    NORM_WIDTH,
    correlation_breakdowns,
    failed_validations,
    market_moves,
    new_shifts,
)
from cbi_assets.partitions import REGIME_PARTITIONS
from cbi_assets.warehouse import Warehouse, WarehouseUnavailable
from resources.alerts import Alerts
from schedules.jobs import RETRAIN_JOBS, SPECIALIST_JOBS, audit

AUDIT_OP = "monitoring__audit"  # Dagster's op name for the asset key monitoring/audit
RUNNING = dg.DefaultSensorStatus.RUNNING  # every sensor here reads a few small files or one table per tick


def _day(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _read(lake: Lake, wanted: dict[str, tuple]) -> dict[str, pl.DataFrame] | dg.SkipReason:
    """Each wanted (table, parts, columns) read, by name; or a skip that says which missing tables to materialize."""
    frames, absent = {}, []
    for name, (table, parts, columns) in wanted.items():
        try:
            frames[name] = lake.read(table, columns=columns, **parts)
        except NotBuilt as error:
            absent.append(error.description)
    return dg.SkipReason("; ".join(absent)) if absent else frames


# --- Regime shifts ------------------------------------------------------------------------------


@dg.sensor(
    name="regime_shift_sensor",
    jobs=[*SPECIALIST_JOBS.values(), *RETRAIN_JOBS.values()],
    minimum_interval_seconds=300,
    default_status=RUNNING,
    description="A newly confirmed regime shift (per market and horizon) adds its regime partition, trains that "
    "regime's specialists and retrains the horizons whose shift it is.",
)
def regime_shift_sensor(context: dg.SensorEvaluationContext, lake: Lake):
    # Cursor: per "<market>:<horizon>", the newest session already looked at.
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    cursor = dict(seen)
    horizons_of: dict[tuple[str, str], list[str]] = {}
    for market in MARKETS.values():
        for horizon in market.horizons:
            parts = {"market": market, "horizon": horizon.name}
            if not lake.exists(tables.REGIME_SHIFTS, **parts):
                continue  # no regime state of this horizon yet: nothing has shifted
            shifts = lake.read(tables.REGIME_SHIFTS, **parts)
            sessions = (
                lake.read(tables.REGIME_STATE, columns=["date"], **parts)["date"]
                if lake.exists(tables.REGIME_STATE, **parts)
                else shifts["date"]
            )
            key = f"{market.key}:{horizon.name}"
            found = new_shifts(shifts, sessions, _day(seen.get(key)))
            newest = max([d for d in (sessions.max(), shifts["date"].max()) if d is not None], default=None)
            if newest is not None:
                cursor[key] = max(newest.isoformat(), seen.get(key, ""))
            for row in found.iter_rows(named=True):
                context.log.info(
                    f"{market} {horizon.name}: {row['from_state']} -> {row['to_state']} since "
                    f"{row['since']}, confirmed {row['date']}: regime {row['partition']}"
                )
                horizons_of.setdefault((market.key, row["partition"]), []).append(horizon.name)
    known = set(context.instance.get_dynamic_partitions(REGIME_PARTITIONS.name))
    added = sorted({partition for _, partition in horizons_of} - known)
    requests = []
    for (name, partition), horizons in sorted(horizons_of.items()):
        tags = {"cbi/regime": partition}
        requests.append(
            dg.RunRequest(
                job_name=SPECIALIST_JOBS[name].name,
                partition_key=partition,
                run_key=f"regime-shift:{name}:{partition}",
                tags=tags,
            )
        )
        requests += [
            dg.RunRequest(
                job_name=RETRAIN_JOBS[name].name, partition_key=h, run_key=f"retrain:{name}:{h}:{partition}", tags=tags
            )
            for h in horizons
        ]
    cursor_text = json.dumps(cursor, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new confirmed regime shift"), cursor=cursor_text)
    return dg.SensorResult(
        run_requests=requests,
        cursor=cursor_text,
        dynamic_partitions_requests=[REGIME_PARTITIONS.build_add_request(added)] if added else [],
    )


# --- Big moves ----------------------------------------------------------------------------------


@dg.sensor(
    name="post_move_audit_sensor",
    jobs=[audit],
    minimum_interval_seconds=300,
    default_status=RUNNING,
    description="On the newest day of data: VIX above 25, ZL moving more than 2%, or the broad dollar or USD/BRL "
    "moving more than 3% starts one audit run for that day.",
)
def post_move_audit_sensor(context: dg.SensorEvaluationContext, lake: Lake):
    frames = _read(
        lake,
        {
            "volatility": (tables.SHARED_LAYER, {"layer": "volatility"}, ["date", "vix"]),
            "zl": (tables.CONTINUOUS, {"market": ZL}, ["date", "close", "adj", "symbol"]),
            "macro": (tables.SHARED_LAYER, {"layer": "macro"}, ["date", "broad_dollar"]),
            "fx": (tables.SHARED_LAYER, {"layer": "fx"}, ["date", "usd_brl"]),
        },
    )
    if isinstance(frames, dg.SkipReason):
        return frames
    day, moved = market_moves(frames["volatility"], frames["zl"], frames["macro"], frames["fx"])
    last = _day(context.cursor)
    if last is not None and day <= last:
        return dg.SkipReason(f"{day} was already looked at")
    if not moved:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"{day}: calm (VIX at most 25, ZL within 2%, broad dollar and USD/BRL within 3%)"
            ),
            cursor=day.isoformat(),
        )
    reason = "; ".join(moved)
    context.log.info(f"{day}: audit for {reason}")
    request = dg.RunRequest(
        job_name=audit.name,
        run_key=f"audit:{day}",
        tags={"cbi/audit": day.isoformat()},
        run_config={"ops": {AUDIT_OP: {"config": {"reason": reason, "day": day.isoformat()}}}},
    )
    return dg.SensorResult(run_requests=[request], cursor=day.isoformat())


# --- Failed validations -------------------------------------------------------------------------

STATUS_TABLE = "monitoring.validation_status"


def read_validation_status(warehouse: Warehouse, since: dt.date | None) -> pl.DataFrame | None:
    """The failed rows of monitoring.validation_status validated on or after `since`; None when the table is absent."""
    if not warehouse.exists(STATUS_TABLE):
        return None
    return warehouse.query(
        f"select asset, horizon, validated_on, passed, reason from {STATUS_TABLE} "
        "where passed = false and validated_on >= ?",
        [since or dt.date.min],
    )


@dg.sensor(
    name="validation_failure_sensor",
    jobs=list(RETRAIN_JOBS.values()),
    minimum_interval_seconds=300,
    default_status=RUNNING,
    description="A failed validation (monitoring.validation_status passed = false) retrains that market and horizon.",
)
def validation_failure_sensor(context: dg.SensorEvaluationContext, warehouse: Warehouse):
    # Cursor: the newest validation day acted on and the "<market>:<horizon>" keys acted on that day.
    seen = json.loads(context.cursor) if context.cursor else {}
    seen_day, seen_keys = _day(seen.get("day")), set(seen.get("keys", []))
    try:
        status = read_validation_status(warehouse, seen_day)
    except WarehouseUnavailable as error:
        return dg.SkipReason(f"{error}; next tick")
    if status is None:
        return dg.SkipReason(f"{STATUS_TABLE} does not exist yet: no validation has run")
    failures = failed_validations(status, seen_day, seen_keys)
    if failures.is_empty():
        return dg.SkipReason("no new failed validation")
    requests = []
    for row in failures.iter_rows(named=True):
        day = row["validated_on"].isoformat()
        context.log.warning(f"{row['market'].upper()} {row['horizon']} failed validation on {day}: {row['reason']}")
        requests.append(
            dg.RunRequest(
                job_name=RETRAIN_JOBS[row["market"]].name,
                partition_key=row["horizon"],
                run_key=f"validation-failure:{row['market']}:{row['horizon']}:{day}",
                tags={"cbi/validation-failure": day},
            )
        )
    newest = failures["validated_on"].max()
    keys = set(failures.filter(pl.col("validated_on") == newest)["key"]) | (seen_keys if newest == seen_day else set())
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({"day": newest.isoformat(), "keys": sorted(keys)}))


# --- Correlation breakdowns ---------------------------------------------------------------------


@dg.sensor(
    name="correlation_breakdown_sensor",
    minimum_interval_seconds=300,
    default_status=RUNNING,
    description=f"ZL's 63-session correlation with CL and with HO more than {NORM_WIDTH:g} standard deviations "
    f"from its mean over the {NORM_SESSIONS} sessions before: an alert, no run.",
)
def correlation_breakdown_sensor(context: dg.SensorEvaluationContext, lake: Lake, alerts: Alerts):
    frames = _read(
        lake, {"cross": (tables.SHARED_LAYER, {"layer": "cross_asset"}, ["date", *CORRELATION_COLUMNS.values()])}
    )
    if isinstance(frames, dg.SkipReason):
        return frames
    found = correlation_breakdowns(frames["cross"])
    if found.is_empty():
        return dg.SkipReason(
            f"shared/cross_asset: fewer than {NORM_SESSIONS + 1} sessions of correlations: no norm yet"
        )
    day = found["day"].max()
    last = _day(context.cursor)
    if last is not None and day <= last:
        return dg.SkipReason(f"{day} was already looked at")
    notes = []
    for row in found.iter_rows(named=True):
        text = (
            f"ZL/{row['pair'][3:].upper()} 63-session correlation {row['corr']:+.2f} on {row['day']}, "
            f"norm {row['mean']:+.2f} ± {row['std']:.2f} ({row['departure']:.1f} std away)"
        )
        if row["breakdown"]:
            alerts.send(
                "correlation_breakdown",
                f"Correlation breakdown: {text}",
                severity="warning",
                asset="ZL",
                details={k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()},
                key=f"correlation:{row['pair']}:{row['day']}",
                log=context.log,
            )
            text = "BREAKDOWN " + text
        notes.append(text)
    return dg.SensorResult(skip_reason=dg.SkipReason("; ".join(notes)), cursor=day.isoformat())


SENSORS = [regime_shift_sensor, post_move_audit_sensor, validation_failure_sensor, correlation_breakdown_sensor]
