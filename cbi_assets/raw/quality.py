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
    validate_structure(dataset, frame, origin)
    problems = impossible_values(dataset, frame)
    if problems.height:
        raise RawDataError(describe_impossible(dataset, problems, origin) + " Nothing was written.")


def validate_structure(dataset: RawDataset, frame: pl.DataFrame, origin: str) -> None:
    """Raise when a column is missing or mistyped, or a record has no event time."""
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


# Where a record came from, when the source knows: the line of a CSV file. Never stored.
SOURCE_LINE = "source_line"
LISTED = 20  # impossible values named one by one in an error


def impossible_values(dataset: RawDataset, frame: pl.DataFrame) -> pl.DataFrame:
    """Every value no market can have, one row each: the record, its day, the column, the value and why.

    Non-finite numbers (a missing value is a null, never NaN or inf), prices of zero or below (where the
    market cannot trade there: WTI settled at -37.63 on 2020-04-20), a high below the low, and an open or
    close outside the bar's [low, high]."""
    rules: list[tuple[str, pl.Expr, str]] = [
        (name, ~pl.col(name).is_finite(), "is not a finite number (a missing value is an empty cell)")
        for name, dtype in frame.schema.items()
        if dtype.is_float()
    ]
    if not dataset.negative_prices_possible:
        rules += [
            (c, pl.col(c) <= 0, f"is zero or below, where {dataset.symbol} never trades") for c in dataset.price_columns
        ]
    if dataset.kind == "bars":
        rules.append(("high", pl.col("high") < pl.col("low"), "is below the low"))
        rules += [
            (c, ~pl.col(c).is_between("low", "high"), "lies outside the bar's [low, high]") for c in ("open", "close")
        ]
    rules = [rule for rule in rules if rule[0] in frame.columns]
    if not rules or frame.is_empty():
        return _NO_PROBLEMS
    # One pass over the batch says which rules any record breaks; only those are looked at row by row.
    broken = frame.select(bad.fill_null(False).any().alias(str(i)) for i, (_, bad, _) in enumerate(rules)).row(0)
    rules = [rule for rule, hit in zip(rules, broken, strict=True) if hit]
    if not rules:
        return _NO_PROBLEMS
    where = frame.select(
        pl.col(SOURCE_LINE) if SOURCE_LINE in frame.columns else pl.lit(None, pl.UInt32).alias(SOURCE_LINE),
        partition_day(dataset).alias("day"),
        *(pl.col(c).alias(c) if c in frame.columns else pl.lit(None, pl.Float64).alias(c) for c in ("low", "high")),
    ).with_row_index("record")
    found = []
    for column, bad, problem in rules:
        mask = frame.select(bad.fill_null(False)).to_series()
        found.append(
            where.filter(mask).with_columns(
                pl.lit(column).alias("column"),
                frame[column].filter(mask).cast(pl.Float64).alias("value"),
                pl.lit(problem).alias("problem"),
            )
        )
    # A value that breaks two rules (a price of 0 below the low) is named once, for the first.
    return pl.concat(found).unique(["record", "column"], keep="first", maintain_order=True).sort("record")


_NO_PROBLEMS = pl.DataFrame(
    schema={"record": pl.UInt32, SOURCE_LINE: pl.UInt32, "day": pl.Date, "column": pl.String, "value": pl.Float64}
)


def describe_impossible(dataset: RawDataset, problems: pl.DataFrame, origin: str) -> str:
    """Each impossible value on a line of its own (up to LISTED), then one line that says what and what to do."""
    lines = []
    for row in problems.head(LISTED).iter_rows(named=True):
        at = f"line {row[SOURCE_LINE]}" if row[SOURCE_LINE] is not None else f"record {row['record']}"
        bounds = f" [low {row['low']}, high {row['high']}]" if "[low, high]" in row["problem"] else ""
        shown = "empty" if row["value"] is None else row["value"]
        lines.append(f"  {at}, {row['day']}: {row['column']} = {shown} {row['problem']}{bounds}")
    if problems.height > LISTED:
        lines.append(f"  ... and {problems.height - LISTED} more")
    return "\n".join(
        [
            f"{origin}: impossible values in {dataset.describe()}:",
            *lines,
            f"{origin}: {dataset.describe()} has {summarize_impossible(problems)}. Correct the source data and "
            "ingest again, or take the rest and set these aside (CBI_SET_ASIDE=1).",
        ]
    )


def summarize_impossible(problems: pl.DataFrame) -> str:
    """ "3 impossible value(s) in 2 record(s) (columns open, close; the first at line 14, 2012-01-17)"."""
    columns = ", ".join(problems["column"].unique(maintain_order=True).to_list())
    first = problems.row(0, named=True)
    at = f"line {first[SOURCE_LINE]}" if first[SOURCE_LINE] is not None else f"record {first['record']}"
    return (
        f"{problems.height} impossible value(s) in {problems['record'].n_unique()} record(s) "
        f"(columns {columns}; the first at {at}, {first['day']})"
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
