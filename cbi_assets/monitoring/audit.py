"""The post-move audit: after a large move, re-check one day's raw data, features and predictions.

Each check gives findings (area, item, status 'ok' or 'problem', detail) that a person can act on:
raw partitions against the raw layer's own rules, the day's master-table rows against the feature
rules, and the day's published predictions against what a forecast must satisfy.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from cbi_assets import lake as tables
from cbi_assets.calendars import expected_days, is_settlement_day, trade_date
from cbi_assets.catalogue import MARKETS, MES, ZL, Market
from cbi_assets.features.master import Table
from cbi_assets.features.quality import NULL_LIMIT, finite_finding
from cbi_assets.features.spec import FeatureSpec
from cbi_assets.lake import Lake
from cbi_assets.monitoring.outcomes import in_utc
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.errors import RawDataError
from cbi_assets.raw.quality import (
    duplicate_finding,
    order_finding,
    schema_finding,
    validate,
)

# The raw datasets a move is re-checked on: the two markets' daily bars, and the VIX, dollar and
# BRL series that the volatility and FX features (and so the regime state) are built from.
AUDITED_RAW = ("zl_ohlcv_1d", "mes_ohlcv_1d", "yahoo_vix", "fred_vixcls", "yahoo_dxy", "fred_dtwexbgs", "yahoo_brl")
# The master tables whose rows of the day are re-checked: (market, timeframe).
AUDITED_MASTERS = ((ZL, "1d"), *((MES, tf) for tf in MES.timeframes))
# A forecast return beyond this many typical moves of its horizon is implausible.
PLAUSIBLE_MOVES = 10.0
FINDING_SCHEMA = {"area": pl.String, "item": pl.String, "status": pl.String, "detail": pl.String}


def finding(area: str, item: str, ok: bool, detail: str) -> dict:
    return {"area": area, "item": item, "status": "ok" if ok else "problem", "detail": detail}


def findings_frame(found: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(found, schema=FINDING_SCHEMA)


def newest_day(lake: Lake) -> dt.date | None:
    """The newest day stored in any audited raw dataset; None when the lake holds none of them."""
    newest = []
    for name in AUDITED_RAW:
        store = lake.raw(RAW_DATASETS[name])
        if not store.root.is_dir():
            continue
        # Newest first, so 25 years of partitions cost one listing and a look into one or two folders.
        for folder in sorted((f.name for f in store.root.iterdir() if f.name.startswith("date=")), reverse=True):
            day = dt.date.fromisoformat(folder[5:])
            if store.latest(day) is not None:
                newest.append(day)
                break
    return max(newest) if newest else None


# --- Raw ----------------------------------------------------------------------------------------


def bars_consistent(frame: pl.DataFrame) -> tuple[bool, str]:
    """Each bar's high is its highest price and its low its lowest."""
    bad = frame.with_row_index("record").filter(
        (pl.col("high") < pl.max_horizontal("open", "close", "low"))
        | (pl.col("low") > pl.min_horizontal("open", "close"))
    )
    if bad.is_empty():
        return True, f"{frame.height} bars with low <= open, close <= high"
    shown = "; ".join(
        f"record {r['record']} at {r['ts_event']}: open {r['open']}, high {r['high']}, low {r['low']}, "
        f"close {r['close']}"
        for r in bad.head(5).iter_rows(named=True)
    )
    return False, f"{bad.height} bars whose high/low do not bracket open and close: {shown}"


def raw_findings(lake: Lake, day: dt.date, names: tuple[str, ...] = AUDITED_RAW) -> list[dict]:
    """The raw layer's checks on `day`'s partition of each dataset the lake holds."""
    out = []
    for name in names:
        dataset = RAW_DATASETS[name]
        store = lake.raw(dataset)
        if not store.root.is_dir():
            continue  # not in this lake (e.g. a source that is not configured)
        version = store.latest(day)
        where = str(version.path) if version else str(store.day_dir(day))
        if version is None:
            expected = day >= dataset.start and day in expected_days(dataset.calendar, day, day)
            out.append(
                finding(
                    "raw",
                    f"{name}:present",
                    not expected,
                    f"{where}: no records; {day} is {'an expected' if expected else 'not a'} "
                    f"{dataset.calendar} day" + ("; ingest that day again" if expected else ""),
                )
            )
            continue
        frame = pl.read_parquet(version.path)
        try:
            validate(dataset, frame, where)
            out.append(
                finding("raw", f"{name}:values", True, f"{frame.height} records, schema, event times and prices valid")
            )
        except RawDataError as error:
            # The ingest wording ("Nothing was written") does not apply to a stored partition.
            out.append(finding("raw", f"{name}:values", False, str(error).replace(" Nothing was written.", "")))
        for check, verdict in (
            ("schema", schema_finding(dataset, frame)),
            ("no_duplicates", duplicate_finding(dataset, frame)),
            ("in_order", order_finding(dataset, frame)),
        ):
            detail = (
                verdict.summary
                if verdict.passed
                else f"{where}: {verdict.summary}; {verdict.metadata.get('examples', '')}"
            )
            out.append(finding("raw", f"{name}:{check}", verdict.passed, detail))
        if dataset.kind == "bars" and {"open", "high", "low", "close"} <= set(frame.columns):
            ok, detail = bars_consistent(frame)
            out.append(finding("raw", f"{name}:ohlc", ok, detail if ok else f"{where}: {detail}"))
    return out


# --- Features -----------------------------------------------------------------------------------


def master_tables(lake: Lake) -> dict[str, tuple[Market, str]]:
    """The master tables the lake holds, by name ("ZL master_1d"): (market, timeframe)."""
    return {
        f"{m} master_{tf}": (m, tf) for m, tf in AUDITED_MASTERS if lake.exists(tables.MASTER, market=m, timeframe=tf)
    }


def _specs(entries: pl.DataFrame) -> list[FeatureSpec]:
    return [
        FeatureSpec(**{k: row[k] for k in ("name", "layer", "source", "timeframe", "window", "lag", "description")})
        for row in entries.iter_rows(named=True)
    ]


def day_rows_findings(
    name: str, day_rows: pl.DataFrame, before: pl.DataFrame, specs: list[FeatureSpec], limit: float = NULL_LIMIT
) -> list[dict]:
    """No infinities in the day's rows, and few nulls among the features that had values on the row
    before the day (warmed up): more than `limit` of those cells null is a problem."""
    features = [s.name for s in specs]
    keys = tuple(c for c in day_rows.columns if c not in set(features))
    finite = finite_finding(Table(day_rows, specs, keys))
    out = [
        finding(
            "features",
            f"{name}:finite",
            finite.passed,
            finite.summary + (f": {finite.metadata['columns_with_infinities']}" if not finite.passed else ""),
        )
    ]
    warmed = [c for c in features if before.height and before[c][-1] is not None]
    if not warmed:
        out.append(
            finding("features", f"{name}:nulls", True, "no feature had a value before the day; nothing to compare")
        )
        return out
    nulls = day_rows.select(pl.col(c).null_count() for c in warmed).row(0, named=True)
    share = sum(nulls.values()) / (len(warmed) * day_rows.height)
    gone = sorted((c for c, n in nulls.items() if n), key=lambda c: -nulls[c])
    detail = f"{share:.1%} of the day's values of {len(warmed)} warmed-up features are null (limit {limit:.0%})" + (
        f"; most nulls in {gone[:10]}" if gone else ""
    )
    out.append(finding("features", f"{name}:nulls", share <= limit, detail))
    return out


def feature_findings(lake: Lake, day: dt.date) -> list[dict]:
    """The feature rules on each master table's rows of `day` (its session for intraday tables)."""
    out = []
    for name, (market, timeframe) in master_tables(lake).items():
        scan = lake.scan(tables.MASTER, market=market, timeframe=timeframe)
        column = "date" if "date" in scan.collect_schema().names() else "trade_date"
        day_rows = scan.filter(pl.col(column) == day).collect()
        if day_rows.is_empty():
            expected = is_settlement_day(day)
            out.append(
                finding(
                    "features",
                    f"{name}:present",
                    not expected,
                    f"{name}: no rows of {day}"
                    + ("; materialize the features for it" if expected else ", which is not a session"),
                )
            )
            continue
        before = scan.filter(pl.col(column) < day).tail(1).collect()
        specs = _specs(lake.feature_catalogue(tables.MASTER, market=market, timeframe=timeframe))
        out += day_rows_findings(name, day_rows, before, specs)
    return out


# --- Predictions --------------------------------------------------------------------------------


# "ASSET/horizon" of every intraday horizon: its predictions belong to a Globex session, not a date.
INTRADAY = [f"{a.symbol}/{h.name}" for a in MARKETS.values() for h in a.horizons if h.intraday]


def day_predictions(history: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Rows of `history` made on `day`: daily origins of that date, intraday ones of that Globex session."""
    if history.is_empty():
        return history
    intraday = pl.concat_str("asset", pl.lit("/"), "horizon").is_in(INTRADAY)
    return in_utc(history, "as_of").filter(
        pl.when(intraday).then(trade_date(pl.col("as_of"))).otherwise(pl.col("as_of").dt.date()) == day
    )


def _describe(rows: pl.DataFrame) -> str:
    return "; ".join(f"{r['model_version']} at {r['as_of']}" for r in rows.head(5).iter_rows(named=True))


def prediction_findings(rows: pl.DataFrame, typical: dict[tuple[str, str], float | None]) -> list[dict]:
    """Per market x horizon of the day's predictions: every interval contains its point, every price is
    positive, and |forecast_return| < PLAUSIBLE_MOVES x the horizon's typical move (`typical`)."""
    out = []
    for (symbol, horizon), part in sorted(rows.partition_by("asset", "horizon", as_dict=True).items()):
        item = f"{symbol} {horizon}"
        outside = pl.lit(False)
        for level in (80, 90):
            lower, upper = pl.col(f"lower_{level}"), pl.col(f"upper_{level}")
            outside = outside | (
                lower.is_not_null()
                & upper.is_not_null()
                & ((pl.col("forecast_return") < lower) | (pl.col("forecast_return") > upper))
            )
        bad = part.filter(outside)
        out.append(
            finding(
                "predictions",
                f"{item}:interval_contains_point",
                bad.is_empty(),
                f"{part.height} predictions"
                if bad.is_empty()
                else f"{bad.height} of {part.height} intervals do not contain their point forecast: {_describe(bad)}",
            )
        )
        prices = [
            c
            for c in ("price", "forecast_price", "lower_80_price", "upper_80_price", "lower_90_price", "upper_90_price")
            if c in part.columns
        ]
        bad = part.filter(
            pl.any_horizontal((pl.col(c) <= 0) | ~pl.col(c).is_finite() for c in prices).fill_null(False)
            | pl.col("price").is_null()
            | pl.col("forecast_price").is_null()
        )
        out.append(
            finding(
                "predictions",
                f"{item}:prices_positive",
                bad.is_empty(),
                "every price positive"
                if bad.is_empty()
                else f"{bad.height} of {part.height} predictions with a price that is not positive: {_describe(bad)}",
            )
        )
        move = typical.get((symbol, horizon))
        if not move:
            out.append(
                finding(
                    "predictions",
                    f"{item}:plausible",
                    False,
                    "no typical move of the horizon in the lake to judge the forecasts against; "
                    "build the continuous bars (or MES 1-minute bars) it is measured on",
                )
            )
            continue
        limit = PLAUSIBLE_MOVES * move
        bad = part.filter(~(pl.col("forecast_return").abs() < limit).fill_null(False))
        out.append(
            finding(
                "predictions",
                f"{item}:plausible",
                bad.is_empty(),
                f"|forecast_return| below {limit:.4f} ({PLAUSIBLE_MOVES:g} x the typical move {move:.4f})"
                if bad.is_empty()
                else f"{bad.height} of {part.height} forecasts move {PLAUSIBLE_MOVES:g}+ typical moves "
                f"({limit:.4f}): "
                + "; ".join(
                    f"{r['model_version']} at {r['as_of']}: {r['forecast_return']:.4f}"
                    for r in bad.head(5).iter_rows(named=True)
                ),
            )
        )
    return out
