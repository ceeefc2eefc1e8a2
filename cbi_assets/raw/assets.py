"""Raw (bronze) assets: one per dataset of the catalogue, plus the roll calendars and an inventory."""

import datetime as dt
import warnings

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from cbi_assets.parquet import write_frame
from cbi_assets.raw.datasets import RAW_DATASETS, RawDataset
from cbi_assets.raw.ingest import ingest, records_by_day
from cbi_assets.raw.partitions import partitions_for, window_days
from cbi_assets.raw.quality import (
    duplicate_finding,
    gap_finding,
    order_finding,
    schema_finding,
)
from cbi_assets.raw.rolls import front_month
from cbi_assets.raw.store import PartitionStore
from cbi_assets.ui import table

# Single-run backfills are a deliberate choice (25 years in one run); the parameter is in beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

CHECKS = {
    "schema": "Every required column is there with its type.",
    "no_duplicates": "No two records share a key (event time, instrument, sequence).",
    "in_order": "Records arrive in time order per instrument.",
    "no_gaps": "Every expected trading day has records; 1-minute holes are counted.",
}


def raw_asset(dataset: RawDataset) -> dg.AssetsDefinition:
    @dg.asset(
        key=dataset.key,
        description=dataset.title,
        partitions_def=partitions_for(dataset),
        # A backfill of 25 years is one run and one request, not thousands.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=f"{dataset.area.lower()}_raw",
        required_resource_keys={"lake", dataset.source_key},
        check_specs=[
            dg.AssetCheckSpec(name, asset=dataset.key, description=text, blocking=name == "schema")
            for name, text in CHECKS.items()
        ],
        kinds={"parquet", dataset.role},
        tags={"layer": "raw"},
        metadata={"symbol": dataset.symbol, "schema": dataset.schema or dataset.kind, "calendar": dataset.calendar},
    )
    def _raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        start, end = window_days(context)
        source = getattr(context.resources, dataset.source_key)
        context.log.info(f"{dataset.name}: requesting {start}..{end} from {source.label}")
        frame = source.fetch(dataset, start, end)
        context.log.info(f"{dataset.name}: received {frame.height:,} records; validating and storing by day")
        store: PartitionStore = context.resources.lake.raw(dataset)
        report = ingest(
            dataset, frame, store, start, end, origin=source.label,
            received_at=dt.datetime.now(dt.timezone.utc), progress=context.log.info,
        )
        context.log.info(
            f"{dataset.name}: {report.rows:,} records over {report.days} days "
            f"({len(report.new)} new, {len(report.unchanged)} unchanged, {len(report.revised)} revised)"
        )
        if report.revised:
            context.log.warning(
                f"{dataset.name}: the source changed {len(report.revised)} stored day(s), e.g. {report.revised[:5]}; "
                "the earlier versions are kept beside the new ones"
            )
        received = pl.concat(records_by_day(dataset, frame, start, end).values()) if report.days else frame.head(0)
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
            },
            check_results=[f.result(name, severe=name == "schema") for name, f in findings.items()],
        )

    return _raw


def roll_calendar_asset(area: str) -> dg.AssetsDefinition:
    daily = [d for d in RAW_DATASETS.values() if d.area == area and d.role == "futures" and d.schema == "ohlcv-1d"]

    @dg.asset(
        key=[area.lower(), "raw", "roll_calendar"],
        description=(
            f"Front-month contract of each {area}-layer future per day, chosen by the previous session's "
            "volume, and the dates it rolls."
        ),
        deps=[d.key for d in daily],
        group_name=f"{area.lower()}_raw",
        required_resource_keys={"lake"},
        kinds={"parquet"},
        tags={"layer": "raw"},
    )
    def _rolls(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = context.resources.lake
        fronts = []
        for dataset in daily:
            stored = lake.raw(dataset).read()
            if stored is None:
                context.log.warning(f"{dataset.name}: nothing stored yet; no roll calendar for {dataset.symbol}")
                continue
            # A front-month file (daily/<SYMBOL>.csv) names no contract: no rolls can be seen in it.
            names = stored.collect_schema().names()
            contract = pl.col("instrument_id") if "instrument_id" in names else pl.lit(None, pl.UInt32).alias("instrument_id")
            bars = stored.select("ts_event", contract, "volume").collect()
            fronts.append(front_month(bars).with_columns(pl.lit(dataset.symbol).alias("symbol")))
            context.log.info(f"{dataset.symbol}: {bars.height:,} contract-days, {fronts[-1]['rolled'].sum()} rolls")
        calendar = pl.concat(fronts) if fronts else pl.DataFrame()
        path = lake.path(area, "raw", "roll_calendar.parquet")
        write_frame(calendar, path)
        summary = (
            calendar.group_by("symbol").agg(
                pl.col("date").min().alias("first"), pl.col("date").max().alias("last"),
                pl.col("rolled").sum().alias("rolls"), pl.col("date").filter("rolled").max().alias("last_roll"),
            ).sort("symbol") if fronts else calendar
        )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "rolls": int(calendar["rolled"].sum()) if fronts else 0,
                "by_symbol": table(summary),
                "latest_rolls": table(calendar.filter("rolled").sort("date", descending=True).head(12)) if fronts else "none",
            }
        )

    return _rolls


@dg.asset(
    key=["lake", "raw_inventory"],
    description="What the raw layer holds: days, records, revisions and bytes per dataset, in the warehouse.",
    deps=[d.key for d in RAW_DATASETS.values()],
    group_name="lake",
    required_resource_keys={"lake", "warehouse"},
    kinds={"duckdb"},
    tags={"layer": "raw"},
)
def raw_inventory(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    rows = []
    for dataset in RAW_DATASETS.values():
        store = context.resources.lake.raw(dataset)
        latest = store.latest_versions()
        records = pl.scan_parquet([str(v.path) for v in latest]).select(pl.len()).collect().item() if latest else 0
        rows.append({
            "dataset": dataset.name, "area": dataset.area, "role": dataset.role, "symbol": dataset.symbol,
            "days": len(latest), "first_day": latest[0].day if latest else None, "last_day": latest[-1].day if latest else None,
            "records": records, "revised_days": sum(v.number > 1 for v in latest),
            "bytes": sum(v.path.stat().st_size for v in latest),
        })
    inventory = pl.DataFrame(rows)
    warehouse: DuckDBResource = context.resources.warehouse
    with warehouse.get_connection() as conn:
        conn.execute("create schema if not exists lake")
        conn.register("inventory", inventory.to_arrow())
        conn.execute("create or replace table lake.raw_inventory as select *, now() as updated_at from inventory")
    return dg.MaterializeResult(
        metadata={
            "datasets": len(rows),
            "records": int(inventory["records"].sum()),
            "table": "lake.raw_inventory",
            "inventory": table(inventory, 50),
        }
    )


RAW_ASSETS = [raw_asset(d) for d in RAW_DATASETS.values()]
ROLL_CALENDARS = [roll_calendar_asset(area) for area in ("ZL", "MES")]
