"""Raw (bronze) assets: one per dataset of the catalogue, plus the roll calendars and an inventory."""

import datetime as dt
import time

import dagster as dg
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.automation import EVENING
from cbi_assets.catalogue import MARKETS, Market
from cbi_assets.lake import Lake
from cbi_assets.raw.datasets import RAW_DATASETS, RawDataset
from cbi_assets.raw.ingest import ingest
from cbi_assets.raw.partitions import partitions_for, partitions_name, window_days
from cbi_assets.raw.quality import (
    duplicate_finding,
    gap_finding,
    order_finding,
    schema_finding,
)
from cbi_assets.raw.rolls import front_month
from cbi_assets.raw.source import Source
from cbi_assets.selections import stage
from cbi_assets.ui import table
from cbi_assets.warehouse import Warehouse

CHECKS = {
    "schema": "Every required column is there with its type.",
    "no_duplicates": "No two records share a key (event time, instrument, sequence).",
    "in_order": "Records arrive in time order per instrument.",
    "no_gaps": "Every expected trading day has records; 1-minute holes are counted.",
}


class RawConfig(dg.Config):
    """Intraday records of a day are final once published, so the refresh of one year fetches only the days
    from the last one stored (taken again, in case it was cut short) to the year's end; `refetch` asks the
    source for every day of the year, to see whether it changed any. Daily records are always fetched whole:
    FRED and the exchanges revise them."""

    refetch: bool = False


def raw_asset(dataset: RawDataset) -> dg.AssetsDefinition:
    decorate = dg.asset(
        key=dataset.key,
        description=dataset.title,
        partitions_def=partitions_for(dataset),
        # A backfill of 25 years is one run and one request per dataset, not hundreds.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=f"{dataset.area.lower()}_raw",
        check_specs=[
            dg.AssetCheckSpec(name, asset=dataset.key, description=text, blocking=name == "schema")
            for name, text in CHECKS.items()
        ],
        kinds={"parquet", dataset.role},
        tags={"layer": "raw", **stage("ingest"), "raw_partitions": partitions_name(dataset)},
        metadata={"symbol": dataset.symbol, "schema": dataset.schema or dataset.kind, "calendar": dataset.calendar},
    )
    # Each dataset asks for the source resource of its role by name.
    if dataset.role == "futures":

        @decorate
        def _raw(
            context: dg.AssetExecutionContext, config: RawConfig, lake: Lake, futures_source: Source
        ) -> dg.MaterializeResult:
            return take_in(context, dataset, lake, futures_source, config.refetch)

    elif dataset.role == "macro":

        @decorate
        def _raw(
            context: dg.AssetExecutionContext, config: RawConfig, lake: Lake, macro_source: Source
        ) -> dg.MaterializeResult:
            return take_in(context, dataset, lake, macro_source, config.refetch)

    else:

        @decorate
        def _raw(
            context: dg.AssetExecutionContext, config: RawConfig, lake: Lake, history_source: Source
        ) -> dg.MaterializeResult:
            return take_in(context, dataset, lake, history_source, config.refetch)

    return _raw


def take_in(
    context: dg.AssetExecutionContext, dataset: RawDataset, lake: Lake, source: Source, refetch: bool = False
) -> dg.MaterializeResult:
    """Fetch the run's partitions of `dataset` from `source`, check them and store them by day."""
    began, cpu = time.perf_counter(), time.process_time()
    start, end = requested_days(dataset, source, *window_days(context))
    store = lake.raw(dataset)
    # The evening refresh of one year: intraday days stored already are final (a backfill of several years
    # takes every day, gaps included).
    if dataset.intraday and not refetch and len(context.partition_keys) == 1:
        stored = store.days(start, end)
        if stored:
            start = stored[-1]
            context.log.info(
                f"{dataset.name}: {len(stored)} days of {context.partition_key} stored already; fetching from the "
                f"last of them, {start} (run config refetch: true fetches every day)"
            )
    if start > end:
        context.log.info(
            f"{dataset.name}: {source.label} has no days of {context.partition_key_range.start}.."
            f"{context.partition_key_range.end}; nothing to request"
        )
        return dg.MaterializeResult(
            metadata={
                "source": source.label,
                "rows": 0,
                "path": dg.MetadataValue.path(str(store.root)),
                "seconds": round(time.perf_counter() - began, 3),
                "cpu_seconds": round(time.process_time() - cpu, 3),
            },
            check_results=[
                dg.AssetCheckResult(check_name=name, passed=True, description="no days to check") for name in CHECKS
            ],
        )
    context.log.info(f"{dataset.name}: requesting {start}..{end} from {source.label}")
    frame = source.fetch(dataset, start, end)
    context.log.info(f"{dataset.name}: received {frame.height:,} records; validating and storing by day")
    report = ingest(
        dataset,
        frame,
        store,
        start,
        end,
        origin=source.origin(dataset),
        received_at=dt.datetime.now(dt.UTC),
        progress=context.log.info,
        set_aside=source.set_aside,
    )
    if store.orphans_removed:
        context.log.info(f"{dataset.name}: removed {store.orphans_removed} temporary file(s) a killed run left behind")
    context.log.info(
        f"{dataset.name}: {report.rows:,} records over {report.days} days "
        f"({len(report.new)} new, {len(report.unchanged)} unchanged, {len(report.revised)} revised)"
    )
    if report.revised:
        context.log.warning(
            f"{dataset.name}: the source changed {len(report.revised)} stored day(s), e.g. "
            f"{', '.join(d.isoformat() for d in report.revised[:5])}; "
            "the earlier versions are kept beside the new ones"
        )
    if report.set_aside:
        context.log.warning(
            f"{dataset.name}: {report.set_aside} record(s) with impossible values set aside in "
            f"{store.root / 'set_aside'} (CBI_SET_ASIDE); correct the source to take them in"
        )
    received = report.taken
    findings = {
        "schema": schema_finding(dataset, received),
        "no_duplicates": duplicate_finding(dataset, received),
        "in_order": order_finding(dataset, received),
        "no_gaps": gap_finding(dataset, received, start, end),
    }
    return dg.MaterializeResult(
        metadata={
            **report.metadata(),
            "path": dg.MetadataValue.path(str(store.root)),
            # Dagster copies this metadata onto every partition of the range: keep it small.
            "preview": table(received.tail(5).drop("ingested_at", strict=False), 5),
            # Fetching, checking and storing, without Dagster's bookkeeping of the partitions.
            "seconds": round(time.perf_counter() - began, 3),
            "cpu_seconds": round(time.process_time() - cpu, 3),
        },
        check_results=[f.result(name, severe=name == "schema") for name, f in findings.items()],
    )


def requested_days(dataset: RawDataset, source, first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
    """The days of a partition window to ask a source for: not before the dataset starts, and not after
    the last day the source can have (the sample's last session; for a real source, today in Chicago:
    the evening cycle runs after the close)."""
    known = source.coverage(dataset)
    return max(first, dataset.start, known[0]), min(last, known[1])


def roll_calendar_asset(market: Market) -> dg.AssetsDefinition:
    daily = [
        d for d in RAW_DATASETS.values() if d.area == market.symbol and d.role == "futures" and d.schema == "ohlcv-1d"
    ]

    @dg.asset(
        key=tables.ROLL_CALENDAR.asset_key(market=market),
        description=(
            f"Front-month contract of each {market}-layer future per day, chosen by the previous session's "
            "volume, and the dates it rolls."
        ),
        deps=tables.reads(*daily),
        group_name=f"{market.key}_raw",
        kinds={"parquet"},
        tags={"layer": "raw", **stage("prepare")},
        automation_condition=EVENING,
    )
    def _rolls(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        fronts = []
        for dataset in daily:
            stored = lake.raw(dataset).read()
            if stored is None:
                context.log.warning(f"{dataset.name}: nothing stored yet; no roll calendar for {dataset.symbol}")
                continue
            # A front-month file (daily/<SYMBOL>.csv) names no contract: no rolls can be seen in it.
            names = stored.collect_schema().names()
            contract = (
                pl.col("instrument_id") if "instrument_id" in names else pl.lit(None, pl.UInt32).alias("instrument_id")
            )
            bars = stored.select("ts_event", contract, "volume").collect()
            fronts.append(front_month(bars).with_columns(pl.lit(dataset.symbol).alias("symbol")))
            context.log.info(f"{dataset.symbol}: {bars.height:,} contract-days, {fronts[-1]['rolled'].sum()} rolls")
        calendar = pl.concat(fronts) if fronts else pl.DataFrame()
        path = lake.write(tables.ROLL_CALENDAR, calendar, market=market)
        summary = (
            calendar.group_by("symbol")
            .agg(
                pl.col("date").min().alias("first"),
                pl.col("date").max().alias("last"),
                pl.col("rolled").sum().alias("rolls"),
                pl.col("date").filter("rolled").max().alias("last_roll"),
            )
            .sort("symbol")
            if fronts
            else calendar
        )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "rolls": int(calendar["rolled"].sum()) if fronts else 0,
                "by_symbol": table(summary),
                "latest_rolls": table(calendar.filter("rolled").sort("date", descending=True).head(12))
                if fronts
                else "none",
            }
        )

    return _rolls


@dg.asset(
    key=["lake", "raw_inventory"],
    description="What the raw layer holds: days, records, revisions and bytes per dataset, in the warehouse.",
    deps=tables.reads(*RAW_DATASETS.values()),
    group_name="lake",
    kinds={"duckdb"},
    tags={"layer": "raw", **stage("prepare")},
    automation_condition=EVENING,
)
def raw_inventory(context: dg.AssetExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.MaterializeResult:
    rows = []
    for dataset in RAW_DATASETS.values():
        store = lake.raw(dataset)
        latest = store.latest_versions()
        records = pl.scan_parquet([str(v.path) for v in latest]).select(pl.len()).collect().item() if latest else 0
        rows.append(
            {
                "dataset": dataset.name,
                "area": dataset.area,
                "role": dataset.role,
                "symbol": dataset.symbol,
                "days": len(latest),
                "first_day": latest[0].day if latest else None,
                "last_day": latest[-1].day if latest else None,
                "records": records,
                "revised_days": sum(v.number > 1 for v in latest),
                "bytes": sum(v.path.stat().st_size for v in latest),
            }
        )
    inventory = pl.DataFrame(rows)
    warehouse.replace_table(
        "lake.raw_inventory", inventory.with_columns(pl.lit(dt.datetime.now(dt.UTC)).alias("updated_at"))
    )
    return dg.MaterializeResult(
        metadata={
            "datasets": len(rows),
            "records": int(inventory["records"].sum()),
            "table": "lake.raw_inventory",
            "inventory": table(inventory, 50),
        }
    )


RAW_ASSETS = [raw_asset(d) for d in RAW_DATASETS.values()]
ROLL_CALENDARS = [roll_calendar_asset(m) for m in MARKETS.values()]
