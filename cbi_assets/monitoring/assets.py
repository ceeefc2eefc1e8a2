"""Monitoring assets: daily validation of matured predictions per market x horizon, and the post-move audit.

`{market}/monitoring/validation` (partitioned by horizon) compares what was published in
`predictions.history` with what happened in the lake and writes `monitoring.validation` and
`monitoring.validation_status` (validated_on: the exchange's date of the run); its checks fail when
the champion's MAPE or 90% coverage break the rules in `validation.py`. `monitoring/audit`
re-checks one day and raises an alert on any problem.
"""

import datetime as dt

import dagster as dg
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.calendars import CHICAGO
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, NotBuilt, reads
from cbi_assets.monitoring import audit, outcomes, validation
from cbi_assets.predictions import history as predictions
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.selections import stage
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse
from resources.alerts import Alerts


def _upload(market: Market) -> dg.AssetKey:
    """The asset that publishes a market's forecasts to predictions.history (a warehouse table, not the lake's)."""
    return dg.AssetKey([market.key, "predictions", "upload"])


def _prices(market: Market) -> list[tables.Table]:
    """The lake tables a market's outcomes are measured on: its continuous daily bars, and MES's 1-minute bars."""
    return [tables.CONTINUOUS, *([tables.BARS] if any(h.intraday for h in market.horizons) else [])]


# The monitoring tables' columns: every write is shaped to them, so a table is the same whichever run made it.
_AT = pl.Datetime("us", "UTC")
VALIDATION_TABLE = {
    **{c: pl.String for c in ("asset", "horizon")},
    "validated_on": pl.Date,
    **{c: pl.String for c in ("model_version", "group_kind", "group_value")},
    "rows": pl.Int64,
    **{c: pl.Float64 for c in validation.METRICS[1:]},
    "validated_at": _AT,
    "dagster_run_id": pl.String,
}
STATUS_TABLE = {
    **{c: pl.String for c in ("asset", "horizon")},
    "validated_on": pl.Date,
    "rows": pl.Int64,
    **{c: pl.Float64 for c in ("mape", "mape_threshold", "coverage_90", "coverage_nominal")},
    **{c: pl.Boolean for c in ("mape_ok", "coverage_ok", "passed")},
    **{c: pl.String for c in ("status", "reason")},
    "validated_at": _AT,
    "dagster_run_id": pl.String,
}
AUDITS_TABLE = {
    "audited_at": _AT,
    "day": pl.Date,
    **{c: pl.String for c in ("reason", "area", "item", "status", "detail", "dagster_run_id")},
}

CHECKS = {
    "mape_within_threshold": "The champion's MAPE of price on matured predictions is within the horizon's threshold "
    "(passes, saying so, while too few predictions have matured).",
    "coverage_within_5_points": "The champion's 90% interval covers the outcome no more than 5 points less often than "
    "nominal (passes, saying so, while too few predictions have matured).",
}


def as_stored(frame: pl.DataFrame | None, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with exactly a monitoring table's `columns` (in order, cast; null where it has none)."""
    if frame is None:
        return pl.DataFrame(schema=columns)
    return frame.select(
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(dtype).alias(c) for c, dtype in columns.items()
    )


# --- Validation ---------------------------------------------------------------------------------


# The newest origins the forecast plot shows: a live intraday horizon adds up to 1,380 a session, which no plot
# of every origin since the first could show.
PLOTTED_ORIGINS = 1_000


def _forecast_plot(rows: pl.DataFrame, title: str):
    rows = rows.sort("as_of")
    if rows.height > PLOTTED_ORIGINS:
        title = f"{title} (the newest {PLOTTED_ORIGINS:,} of {rows.height:,})"
        rows = rows.tail(PLOTTED_ORIGINS)
    fig, ax = figure(10, 3.5)
    x = rows["as_of"].to_list()
    if rows["lower_90_price"].drop_nulls().len():
        ax.fill_between(
            x,
            rows["lower_90_price"].to_numpy(),
            rows["upper_90_price"].to_numpy(),
            color="#4c72b0",
            alpha=0.2,
            label="90% interval",
        )
    ax.plot(x, rows["forecast_price"].to_numpy(), color="#4c72b0", marker=".", label="forecast")
    ax.plot(x, rows["actual_price"].to_numpy(), color="black", marker=".", label="actual")
    ax.set_title(title)
    ax.set_xlabel("as_of (forecast origin)")
    ax.set_ylabel("price at the target")
    ax.legend(fontsize=8)
    return plot(fig)


def _error_plot(errors: pl.DataFrame, title: str):
    groups = pl.concat(
        [
            errors.group_by(
                pl.concat_str(pl.lit(f"{kind}: "), pl.col(kind).cast(pl.String).fill_null("unknown")).alias("group")
            )
            .agg(pl.col("ape").mean(), pl.len().alias("rows"))
            .with_columns(pl.lit(kind).alias("kind"))
            for kind in ("regime", "move_size")
            if kind in errors.columns
        ]
    )
    # Regimes alphabetically, then the move sizes from small to large.
    size = {f"move_size: {s}": i for i, s in enumerate(("small", "medium", "large", "unknown"))}
    groups = groups.sort(
        "kind", pl.col("group").replace_strict(size, default=0), "group", descending=[True, False, False]
    )
    fig, ax = figure(10, max(2.0, 0.35 * groups.height + 1))
    colours = groups["kind"].replace_strict({"regime": "#4c72b0", "move_size": "#dd8452"}).to_list()
    ax.barh(groups["group"].to_list(), groups["ape"].to_numpy(), color=colours)
    for y, (value, count) in enumerate(zip(groups["ape"].to_list(), groups["rows"].to_list(), strict=True)):
        ax.annotate(
            f"{value:.2f}% (n={count})", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8
        )
    ax.invert_yaxis()
    ax.set_xlabel("mean absolute % error of price")
    ax.set_title(title)
    return plot(fig)


class ValidationConfig(dg.Config):
    """Overrides of the per-horizon MAPE thresholds (% of price, e.g. {"1w": 2.5}; the defaults are
    validation.MAPE_THRESHOLDS) and the matured predictions a verdict needs."""

    mape_thresholds: dict[str, float] = {}
    min_matured: int = validation.MIN_MATURED


STATUS_SCHEMA = {
    "horizon": pl.String,
    "rows": pl.Int64,
    "mape": pl.Float64,
    "mape_threshold": pl.Float64,
    "coverage_90": pl.Float64,
    "coverage_nominal": pl.Float64,
    "mape_ok": pl.Boolean,
    "coverage_ok": pl.Boolean,
    "passed": pl.Boolean,
    "status": pl.String,
    "reason": pl.String,
}
SHOWN = ("status", "rows", "mape", "mape_threshold", "coverage_90", "passed", "reason")


def _validation_asset(market: Market):
    key = dg.AssetKey([market.key, "monitoring", "validation"])

    @horizon_asset(
        market,
        key=key,
        deps=[_upload(market), *reads(*_prices(market), markets=[market])],
        group_name="monitoring",
        kinds={"polars", "duckdb"},
        tags={"layer": "monitoring", **stage("forecast")},
        check_specs=[dg.AssetCheckSpec(name, asset=key, description=text) for name, text in CHECKS.items()],
        description=f"{market} matured predictions against what happened, per horizon: MAPE, return MAE, 80/90% "
        "coverage, direction accuracy and the random walk's MAPE, by regime, state and move size "
        "(monitoring.validation), and the champion's pass/fail status (monitoring.validation_status).",
    )
    def _validation(
        context: dg.AssetExecutionContext, config: ValidationConfig, lake: Lake, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        now = dt.datetime.now(dt.UTC)
        # The exchange's date: the evening cycle runs after 18:00 UTC-5/6, which is already tomorrow in UTC.
        today = now.astimezone(CHICAGO).date()
        history = predictions.read(warehouse, market)
        if history is None:
            context.log.warning(
                f"{predictions.TABLE} does not exist yet: nothing has been published; recording "
                f"'{validation.NO_PREDICTIONS}' for {market} {', '.join(context.partition_keys)}"
            )
        thresholds = {market.symbol: {**validation.MAPE_THRESHOLDS[market.symbol], **config.mape_thresholds}}

        def work(horizon: Horizon) -> Done:
            rules = validation.Rules.of(market, horizon.name, thresholds, config.min_matured)
            rows = None if history is None else history.filter(pl.col("horizon") == horizon.name)
            if rows is None or rows.is_empty():
                verdict = validation.no_predictions(rules)
                context.log.info(f"{market.key} {horizon.name}: {verdict['reason']}")
                return Done(rows=_shown(verdict), value=(verdict, None))
            done = outcomes.matured(rows, lake, market, horizon)
            typical = outcomes.typical_move(lake, market, horizon)
            table = validation.metrics(done, typical)
            verdict = validation.status(done, rules)
            context.log.info(
                f"{market.key} {horizon.name}: {done.height} of {rows.height} predictions matured; {verdict['reason']}"
            )
            metadata = {}
            if done.height:
                champion = done.filter(pl.col("role") == "champion") if "role" in done.columns else done
                shown = champion if champion.height else done
                metadata["forecast_vs_actual"] = _forecast_plot(
                    shown, f"{market} {horizon.name}: forecast and actual price at the target, 90% interval"
                )
                metadata["error_by_group"] = _error_plot(
                    validation.absolute_errors(done, typical),
                    f"{market} {horizon.name}: absolute % error by regime and move size (typical move "
                    f"{typical or float('nan'):.4f})",
                )
                metadata["metrics"] = md_table(table.with_columns(pl.col(pl.Float64).round(4)), 200)
            return Done(
                rows=_shown(verdict),
                metadata=metadata,
                value=(verdict, table.with_columns(pl.lit(horizon.name).alias("horizon"))),
            )

        def finish(done: dict[str, Done]) -> tuple[dict, list[dg.AssetCheckResult]]:
            statuses = [{"horizon": h, **d.value[0]} for h, d in done.items()]
            metrics = [d.value[1] for d in done.values() if d.value[1] is not None]
            labels = [
                pl.lit(market.symbol).alias("asset"),
                pl.lit(today).alias("validated_on"),
                pl.lit(now).alias("validated_at"),
                pl.lit(context.run.run_id).alias("dagster_run_id"),
            ]
            status = pl.DataFrame(statuses, schema=STATUS_SCHEMA).with_columns(labels)
            validated = pl.concat(metrics) if metrics else None
            day = ("asset", "horizon", "validated_on")
            # These horizons' rows of the day are cleared whether or not any matured, so a re-run with fewer groups
            # leaves none behind.
            warehouse.replace_rows(
                "monitoring.validation",
                as_stored(None if validated is None else validated.with_columns(labels), VALIDATION_TABLE),
                day,
                clear=status.select(day),
            )
            warehouse.replace_rows("monitoring.validation_status", as_stored(status, STATUS_TABLE), day)
            # The checks judge the horizons together, with each one's verdict in the description.
            return {"tables": "monitoring.validation, monitoring.validation_status"}, _check_results(statuses)

        return each_horizon(context, market, work, name="validation", summary="status", finish=finish)

    return _validation


def _shown(verdict: dict) -> pl.DataFrame:
    """A horizon's verdict as its row of the asset's status table."""
    row = pl.DataFrame([verdict], schema={k: v for k, v in STATUS_SCHEMA.items() if k != "horizon"})
    return row.select(SHOWN).with_columns(pl.col(pl.Float64).round(4))


def _check_results(statuses: list[dict]) -> list[dg.AssetCheckResult]:
    """One result per check over the run's horizons; it fails (ERROR) when any horizon breaks its rule."""
    out = []
    for name, flag in (("mape_within_threshold", "mape_ok"), ("coverage_within_5_points", "coverage_ok")):
        failed = [s["horizon"] for s in statuses if s[flag] is False]
        unjudged = [s["horizon"] for s in statuses if s[flag] is None]
        by_horizon = {
            s["horizon"]: {
                "status": s["status"],
                "rows": s["rows"],
                "reason": s["reason"],
                "mape": s["mape"],
                "coverage_90": s["coverage_90"],
            }
            for s in statuses
        }
        if failed:
            description = "; ".join(f"{h}: {by_horizon[h]['reason']}" for h in failed)
        elif unjudged and len(unjudged) == len(statuses):
            description = "; ".join(f"{h}: {by_horizon[h]['reason']}" for h in unjudged)
        else:
            description = f"within the rule on {len(statuses) - len(unjudged)} horizon(s)" + (
                f"; not judged yet on {unjudged}" if unjudged else ""
            )
        out.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=description,
                metadata={
                    "failed_horizons": failed,
                    "not_judged": unjudged,
                    "by_horizon": dg.MetadataValue.json(by_horizon),
                },
            )
        )
    return out


# --- Audit --------------------------------------------------------------------------------------


class AuditConfig(dg.Config):
    """Why the audit runs (e.g. 'move', 'manual') and which day it re-checks (ISO date; by default the
    newest day in the lake)."""

    reason: str = "manual"
    day: str | None = None


AUDIT_READS = [
    *reads(*(RAW_DATASETS[name] for name in audit.AUDITED_RAW)),
    *(k for m, tf in audit.AUDITED_MASTERS for k in reads(tables.MASTER, markets=[m], timeframe=tf)),
    *(k for m in MARKETS.values() for k in reads(*_prices(m), markets=[m])),  # the horizons' typical moves
    *(_upload(m) for m in MARKETS.values()),
]


@dg.asset(
    key=["monitoring", "audit"],
    group_name="monitoring",
    deps=AUDIT_READS,
    kinds={"polars", "duckdb"},
    tags={"layer": "monitoring", **stage("cross_market")},
    description="Post-move audit of one day: its raw partitions (ZL, MES, VIX, dollar, BRL), master-feature rows "
    "and published predictions re-checked; every finding in monitoring.audits, one alert when any is "
    "a problem.",
)
def monitoring_audit(
    context: dg.AssetExecutionContext, config: AuditConfig, lake: Lake, warehouse: Warehouse, alerts: Alerts
) -> dg.MaterializeResult:
    if config.day:
        try:
            day = dt.date.fromisoformat(config.day)
        except ValueError:
            raise dg.Failure(f"audit config day {config.day!r} is not an ISO date; give it as YYYY-MM-DD") from None
    else:
        day = audit.newest_day(lake)
        if day is None:
            raise dg.Failure(
                f"{lake.root}: no raw partitions of {', '.join(audit.AUDITED_RAW)}; ingest them, or give a day"
            )
    context.log.info(f"auditing {day} ({config.reason})")
    found = audit.raw_findings(lake, day) + audit.feature_findings(lake, day)
    history = predictions.read(warehouse)
    if history is None:
        found.append(
            audit.finding(
                "predictions",
                predictions.TABLE,
                True,
                f"{predictions.TABLE} does not exist yet: nothing published to audit",
            )
        )
    else:
        rows = audit.day_predictions(history, day)
        if rows.is_empty():
            found.append(audit.finding("predictions", predictions.TABLE, True, f"no predictions made on {day}"))
        else:
            typical = {}
            for a, h in rows.select("asset", "horizon").unique().iter_rows():
                try:
                    typical[(a, h)] = outcomes.typical_move(lake, MARKETS[a], MARKETS[a].horizon(h), until=day)
                except NotBuilt as error:
                    context.log.warning(f"{a} {h}: {error.description}")
                    typical[(a, h)] = None
            found += audit.prediction_findings(rows, typical)
    findings = audit.findings_frame(found)
    audited_at = dt.datetime.now(dt.UTC)
    stored = findings.with_columns(
        pl.lit(audited_at).alias("audited_at"),
        pl.lit(day).alias("day"),
        pl.lit(config.reason).alias("reason"),
        pl.lit(context.run.run_id).alias("dagster_run_id"),
    )
    warehouse.append("monitoring.audits", as_stored(stored, AUDITS_TABLE))
    problems = findings.filter(pl.col("status") == "problem")
    alerted = False
    if problems.height:
        first = problems.row(0, named=True)
        message = (
            f"audit of {day} ({config.reason}): {problems.height} problem(s) in "
            f"{', '.join(sorted(set(problems['area'])))}; first: {first['item']}: {first['detail']}"
        )
        context.log.warning(message)
        alerted = alerts.send(
            "audit",
            message,
            severity="error",
            key=f"audit:{day}:{config.reason}",
            log=context.log,
            details={
                "day": day.isoformat(),
                "reason": config.reason,
                "problems": problems.select("area", "item", "detail").head(50).to_dicts(),
            },
        )
    else:
        context.log.info(f"audit of {day} ({config.reason}): {findings.height} findings, no problems")
    counts = findings.group_by("area", "status").len().sort("area", "status")
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "reason": config.reason,
            "findings": findings.height,
            "problems": problems.height,
            "alert_sent": alerted,
            "by_area": md_table(counts, 20),
            "problem_findings": md_table(problems, 100) if problems.height else "none",
            "all_findings": md_table(findings, 300),
            "counts": dg.MetadataValue.json({f"{a}:{s}": n for a, s, n in counts.iter_rows()}),
            "table": "monitoring.audits",
        }
    )


MONITORING_ASSETS = [*(_validation_asset(m) for m in MARKETS.values()), monitoring_audit]
