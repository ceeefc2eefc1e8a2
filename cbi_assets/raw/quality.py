"""What the raw layer checks: the schema on the way in, and duplicates, order and gaps after.

`validate` refuses a batch that cannot be taken in (it raises before anything is written).
Duplicates, out-of-order rows and gaps are facts about what a source sent: they are reported
with examples and never dropped, sorted away or filled.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from cbi_assets.calendars import expected_days, trade_date
from cbi_assets.raw.datasets import Kind, RawDataset
from cbi_assets.raw.errors import RawDataError

UTC_NS = pl.Datetime("ns", "UTC")
_TICK = {
    "ts_event": UTC_NS,
    "ts_recv": UTC_NS,
    "instrument_id": pl.UInt32,
    "price": pl.Float64,
    "size": pl.UInt32,
    "side": pl.String,
    "action": pl.String,
    "sequence": pl.UInt32,
}

# Columns every record of a kind must have, with their types. Sources may send more.
REQUIRED: dict[Kind, dict[str, pl.DataType]] = {
    "bars": {"ts_event": UTC_NS, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64, "close": pl.Float64},
    "trades": _TICK,
    "tbbo": {**_TICK, "bid_px_00": pl.Float64, "ask_px_00": pl.Float64, "bid_sz_00": pl.UInt32, "ask_sz_00": pl.UInt32},
    "mbp-10": {
        **_TICK,
        **{
            f"{side}_{what}_{level:02d}": (pl.Float64 if what == "px" else pl.UInt32)
            for level in range(10)
            for side in ("bid", "ask")
            for what in ("px", "sz")
        },
    },
    "definition": {"ts_event": UTC_NS, "instrument_id": pl.UInt32, "raw_symbol": pl.String},
    "observations": {"ts_event": UTC_NS, "value": pl.Float64},
}

# What identifies one record, for the duplicate check.
RECORD_KEY: dict[Kind, tuple[str, ...]] = {
    "bars": ("ts_event", "instrument_id"),
    "trades": ("ts_event", "instrument_id", "sequence"),
    "tbbo": ("ts_event", "instrument_id", "sequence"),
    "mbp-10": ("ts_event", "instrument_id", "sequence"),
    "definition": ("ts_event", "instrument_id"),
    "observations": ("ts_event",),
}
# Databento sends tick records in receive order; everything else is in event order.
ORDER_COLUMN: dict[Kind, str] = {"trades": "ts_recv", "tbbo": "ts_recv", "mbp-10": "ts_recv"}

EXAMPLES = 5  # rows quoted in an error or a check's metadata


def partition_day(dataset: RawDataset) -> pl.Expr:
    """The day partition a record belongs to: its Globex trade date, else its event date."""
    if dataset.intraday:
        return trade_date(pl.col("ts_event"))
    return pl.col("ts_event").dt.date()


def validate(dataset: RawDataset, frame: pl.DataFrame, origin: str) -> None:
    """Raise a RawDataError naming the origin, column and rows when `frame` cannot be stored."""
    required = REQUIRED[dataset.kind]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RawDataError(
            f"{origin}: {dataset.describe()} is missing column(s) {missing}; it has {frame.columns}. "
            "The source changed its format or the file is not this dataset. Nothing was written."
        )
    wrong = {c: str(frame.schema[c]) for c, dtype in required.items() if frame.schema[c] != dtype}
    if wrong:
        expected = {c: str(required[c]) for c in wrong}
        raise RawDataError(
            f"{origin}: {dataset.describe()} column types {wrong}, expected {expected}. Nothing was written."
        )
    if frame["ts_event"].null_count():
        rows = frame.with_row_index("record").filter(pl.col("ts_event").is_null())["record"].head(EXAMPLES).to_list()
        raise RawDataError(
            f"{origin}: {dataset.describe()} has records without an event time (records {rows}). Nothing was written."
        )
    for column in dataset.price_columns:
        bad = ~pl.col(column).is_finite()
        if not dataset.negative_prices_possible:
            bad = bad | (pl.col(column) < 0)
        offending = frame.with_row_index("record").filter(bad.fill_null(False))
        if offending.height:
            shown = ", ".join(
                f"{v} at {ts} (record {i})"
                for i, ts, v in offending.select("record", "ts_event", column).head(EXAMPLES).iter_rows()
            )
            raise RawDataError(
                f"{origin}: {dataset.describe()} column {column!r} has negative or non-finite prices: {shown}. "
                f"{dataset.symbol} does not trade below zero; fix the source data. Nothing was written."
            )


@dataclass
class Finding:
    """One check's verdict on a batch, with what a person needs to see."""

    passed: bool
    summary: str
    metadata: dict = field(default_factory=dict)

    def result(self, check_name: str, severe: bool) -> dg.AssetCheckResult:
        """As a Dagster check result; a severe one fails as an error, the others as warnings."""
        return dg.AssetCheckResult(
            check_name=check_name,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR if severe else dg.AssetCheckSeverity.WARN,
            description=self.summary,
            metadata={
                k: v if isinstance(v, (int, float, str)) else dg.MetadataValue.json(v) for k, v in self.metadata.items()
            },
        )


def schema_finding(dataset: RawDataset, frame: pl.DataFrame) -> Finding:
    required = REQUIRED[dataset.kind]
    missing = [c for c in required if c not in frame.columns]
    mistyped = [c for c, t in required.items() if c in frame.columns and frame.schema[c] != t]
    extra = [c for c in frame.columns if c not in required]
    passed = not missing and not mistyped
    return Finding(
        passed,
        "schema as expected" if passed else f"missing {missing}, mistyped {mistyped}",
        {
            "columns": len(frame.columns),
            "missing": missing,
            "mistyped": mistyped,
            "additional": extra,
            "schema": {c: str(t) for c, t in frame.schema.items()},
        },
    )


def duplicate_finding(dataset: RawDataset, frame: pl.DataFrame) -> Finding:
    key = [c for c in RECORD_KEY[dataset.kind] if c in frame.columns]
    dupes = frame.filter(pl.struct(key).is_duplicated()) if frame.height else frame
    count = dupes.height
    return Finding(
        count == 0,
        f"{count} records share a key {key}",
        {"duplicate_records": count, "key": key, "examples": _examples(dupes, key)},
    )


def order_finding(dataset: RawDataset, frame: pl.DataFrame) -> Finding:
    column = ORDER_COLUMN.get(dataset.kind, "ts_event")
    group = ["instrument_id"] if "instrument_id" in frame.columns else []
    previous = pl.col(column).shift(1)
    steps = frame.with_row_index("row").with_columns(
        back=(pl.col(column) < (previous.over(group) if group else previous)).fill_null(False)
    )
    backwards = steps.filter("back")
    return Finding(
        backwards.height == 0,
        f"{backwards.height} records arrive before the one ahead of them in {column}",
        {
            "out_of_order_records": backwards.height,
            "ordered_by": column,
            "examples": _examples(backwards, ["row", column, *group]),
        },
    )


def gap_finding(
    dataset: RawDataset, frame: pl.DataFrame, start: dt.date, end: dt.date, tolerance: float = 0.02
) -> Finding:
    """Expected days without a record; for 1-minute bars also the holes inside sessions."""
    expected = set(expected_days(dataset.calendar, max(start, dataset.start), end))
    present = set(frame.select(partition_day(dataset)).to_series().unique().to_list()) if frame.height else set()
    missing = sorted(expected - present)
    share = len(missing) / len(expected) if expected else 0.0
    metadata = {
        "expected_days": len(expected),
        "missing_days": len(missing),
        "missing_share": round(share, 4),
        "first_missing": [d.isoformat() for d in missing[:20]],
    }
    if dataset.kind == "bars" and dataset.intraday and frame.height:
        holes = minute_holes(frame)
        metadata.update(
            {
                "minute_holes": holes.height,
                "longest_hole_minutes": int(holes["minutes"].max() or 0) if holes.height else 0,
            }
        )
    return Finding(share <= tolerance, f"{len(missing)} of {len(expected)} expected days missing", metadata)


def minute_holes(bars: pl.DataFrame) -> pl.DataFrame:
    """Missing minutes between consecutive 1-minute bars of the same session (halts excluded)."""
    return (
        bars.select("ts_event")
        .sort("ts_event")
        .with_columns(session=trade_date(pl.col("ts_event")))
        .with_columns(minutes=(pl.col("ts_event").diff().over("session").dt.total_minutes() - 1))
        .filter(pl.col("minutes") > 0)
    )


def _examples(frame: pl.DataFrame, columns: list[str]) -> list[dict]:
    return [{k: str(v) for k, v in row.items()} for row in frame.select(columns).head(EXAMPLES).to_dicts()]
