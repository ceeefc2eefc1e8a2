"""Feature layer assets: thin wiring around the functions of cbi_assets.features.

Each asset reads its inputs from the lake, computes a table, writes it atomically with its
catalogue entries, and reports the feature-table checks with what they found.
"""

import time

import dagster as dg
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.automation import EVENING
from cbi_assets.catalogue import FRED_SERIES, INTRADAY_TIMEFRAMES, MARKETS, MES, TIMEFRAMES, ZL, Market
from cbi_assets.features import inputs, layers
from cbi_assets.features.freshness import freshness_findings, input_freshness
from cbi_assets.features.inputs import continuous_bars
from cbi_assets.features.master import (
    MIN_FEATURES,
    Table,
    intraday_context,
    intraday_master_parts,
    microstructure_table,
)
from cbi_assets.features.pit import RELEASE_LAGS, ReleaseLag
from cbi_assets.features.quality import Profile
from cbi_assets.lake import Lake, reads
from cbi_assets.selections import stage
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse

CHECKS = {
    "finite": "No infinite values in any feature.",
    "nulls_after_warmup": "Each feature has at most 5% nulls once its window has filled.",
    "increasing": "Rows strictly increasing in time.",
    "calendar": "Rows in line with the exchange calendar.",
}
MASTER_CHECKS = {**CHECKS, "distinct": "Enough features; none constant, none a copy of another."}
# A layer's inputs on its last session: a source that stopped blocks the masters (their features would be null
# at the forecast origin); one that ended long ago warns (its features are null from its end, never constant).
INPUT_CHECKS = {
    "inputs_fresh": "Every input has a value within its freshness rule on the last session (blocks the masters).",
    "inputs_running": "No input has ended (no value for more than 63 sessions).",
}
SEVERE = {"finite", "increasing", "distinct", "inputs_fresh"}  # these fail as errors; the others warn


def _checked(
    context,
    lake: Lake,
    table: Table,
    target: tables.Table,
    name: str,
    timeframe: str,
    master: str | None = None,
    parts: dict | None = None,
    inputs: pl.DataFrame | None = None,
    metadata: dict | None = None,
) -> dg.MaterializeResult:
    path = lake.write_features(target, table, name, **(parts or {}))
    return _reported(context, Profile().add(table), path, name, timeframe, master, inputs, metadata)


def _reported(
    context,
    profile: Profile,
    path,
    name: str,
    timeframe: str,
    master: str | None = None,
    inputs: pl.DataFrame | None = None,
    metadata: dict | None = None,
) -> dg.MaterializeResult:
    """The written table's metadata and its checks, from the profile of its rows (and its inputs' freshness)."""
    findings = profile.findings(timeframe, MIN_FEATURES[master] if master else None)
    extra = dict(metadata or {})
    if inputs is not None:
        findings |= freshness_findings(inputs)
        extra["inputs"] = md_table(inputs, 40)
        for check in ("inputs_fresh", "inputs_running"):
            if not findings[check].passed:
                context.log.warning(f"{name}: {findings[check].summary}")
    features = [s.name for s in profile.specs]
    by_layer = (
        pl.DataFrame({"layer": [s.layer for s in profile.specs]}).group_by("layer").len().sort("len", descending=True)
    )
    context.log.info(f"{name}: {profile.rows:,} rows x {len(features)} features -> {path}")
    first, last = profile.bounds or (None, None)
    return dg.MaterializeResult(
        metadata={
            "rows": profile.rows,
            "features": len(features),
            "first": str(first) if profile.rows else None,
            "last": str(last) if profile.rows else None,
            "path": dg.MetadataValue.path(str(path)),
            "features_by_layer": md_table(by_layer),
            "nulls_worst": dg.MetadataValue.json(findings["nulls_after_warmup"].metadata["worst"]),
            "preview": md_table(profile.tail.select(list(profile.keys) + features[:8]), 3),
            **extra,
        },
        check_results=[f.result(check, severe=check in SEVERE) for check, f in findings.items()],
    )


def _feature_asset(
    key: str, description: str, deps: list, timeframe: str = "1d", master: str | None = None, inputs: bool = False
):
    """Decorator for a feature asset with its checks (and its inputs' freshness), in the group of its area."""
    asset_key = dg.AssetKey(key.split("/"))
    checks = {**(MASTER_CHECKS if master else CHECKS), **(INPUT_CHECKS if inputs else {})}
    return dg.asset(
        key=asset_key,
        description=description,
        deps=deps,
        group_name=f"{key.split('/')[0]}_features",
        check_specs=[
            dg.AssetCheckSpec(name, asset=asset_key, description=text, blocking=name == "inputs_fresh")
            for name, text in checks.items()
        ],
        kinds={"polars", "parquet"},
        tags={"layer": "features", **stage("prepare")},
        metadata={"timeframe": timeframe},
        automation_condition=EVENING,
    )


def _written(frame: pl.DataFrame, path) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"rows": frame.height, "path": dg.MetadataValue.path(str(path)), "preview": md_table(frame.tail(5), 5)}
    )


# --- Continuous daily bars ----------------------------------------------------------------------

SYMBOLS = {"ZL": inputs.ZL_SYMBOLS, "MES": inputs.MES_SYMBOLS}
CONTINUOUS_DESCRIPTIONS = {
    "ZL": "Front-month daily bars of ZL, ZS, ZM, CL and HO by volume, with the roll adjustment factor.",
    "MES": "E-mini and MES front daily bars; `mes` carries the E-mini's history before MES listed (May 2019).",
}


def _continuous_asset(market: Market) -> dg.AssetsDefinition:
    symbols = SYMBOLS[market.symbol]

    @dg.asset(
        key=tables.CONTINUOUS.asset_key(market=market),
        group_name=f"{market.key}_features",
        deps=reads(*inputs.daily_datasets(symbols)),
        description=CONTINUOUS_DESCRIPTIONS[market.symbol],
        kinds={"polars", "parquet"},
        tags={"layer": "features", **stage("prepare")},
        automation_condition=EVENING,
    )
    def _bars(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        series = inputs.continuous(inputs.daily_bars(lake, symbols))
        frame = pl.concat([f.with_columns(pl.lit(s).alias("symbol")) for s, f in series.items()])
        return _written(frame, lake.write(tables.CONTINUOUS, frame, market=market))

    return _bars


CONTINUOUS_ASSETS = [_continuous_asset(m) for m in MARKETS.values()]


# --- Shared layer -------------------------------------------------------------------------------

SHARED_DESCRIPTIONS = {
    "macro": "Rates, curve, policy path, dollar, inflation expectations and credit spread, each placed on the "
    "session it was published (per-series release lags).",
    "volatility": "VIX level, percentile and bands; realised volatility of ES and ZL; vol of vol.",
    "fx": "The dollar against CNY, EUR, JPY, BRL and MYR (where a source has them): levels, returns, volatility.",
    "cross_asset": "Rolling correlations and betas of ZL against CL, HO, MES (E-mini) and the dollar at 21/63/252 "
    "sessions.",
}


class ReleaseLags(dg.Config):
    """When FRED publishes each series, if not the default (daily: next business day; CPI: 45 days).

    For example {"business_days": {"DGS10": 2}, "calendar_days": {"CPIAUCSL": 50}}.
    """

    business_days: dict[str, int] = {}
    calendar_days: dict[str, int] = {}

    def lags(self) -> dict:
        unknown = sorted((set(self.business_days) | set(self.calendar_days)) - set(FRED_SERIES))
        if unknown:
            raise dg.Failure(f"release lags given for unknown FRED series {unknown}; known: {sorted(FRED_SERIES)}")
        return {
            **RELEASE_LAGS,
            **{k: ReleaseLag(business_days=v) for k, v in self.business_days.items()},
            **{k: ReleaseLag(calendar_days=v) for k, v in self.calendar_days.items()},
        }


def _shared_asset(name: str):
    series = inputs.series_datasets(layers.SHARED_SERIES[name])

    @_feature_asset(
        tables.SHARED_LAYER.asset_key(layer=name).to_user_string(),
        SHARED_DESCRIPTIONS[name],
        reads(tables.CONTINUOUS, *series, markets=[ZL, MES]),
        inputs=True,
    )
    def _shared(context: dg.AssetExecutionContext, lake: Lake, config: ReleaseLags) -> dg.MaterializeResult:
        continuous, observed, lags = continuous_bars(lake), inputs.series(inputs.read_many(lake, series)), config.lags()
        table = layers.shared_layer(name, continuous, observed, lags)
        fresh = input_freshness(table.frame["date"], continuous, *_inputs(name, observed), lags)
        return _checked(
            context, lake, table, tables.SHARED_LAYER, f"shared_{name}", "1d", parts={"layer": name}, inputs=fresh
        )

    return _shared


SHARED_ASSETS = [_shared_asset(name) for name in layers.SHARED_LAYERS]


def _inputs(name: str, series: dict) -> tuple[list[str], dict, list[str]]:
    symbols, keys = layers.layer_inputs(name, series)
    return symbols, series, keys


def _shared_tables(lake: Lake) -> list[Table]:
    return [lake.read_features(tables.SHARED_LAYER, layer=n) for n in layers.SHARED_LAYERS]


# --- Market layers and daily masters ------------------------------------------------------------

LAYER_DESCRIPTIONS = {
    "ZL": "ZL technicals, the core of ZS/ZM/CL/HO, the crush margin, oil share, BOHO, ZL/CL ratio and the crop-year "
    "seasons.",
    "MES": "MES daily technicals (E-mini before May 2019) and the core of ZL/CL/HO.",
}
MASTER_DESCRIPTIONS = {
    "ZL": "ZL master features: the ZL layer with the shared layer, per session.",
    "MES": "MES daily master features: the MES layer, the equity calendar and the shared layer.",
}


def _layer_asset(market: Market):
    @_feature_asset(
        tables.MARKET_LAYER.asset_key(market=market).to_user_string(),
        LAYER_DESCRIPTIONS[market.symbol],
        reads(tables.CONTINUOUS, markets=[ZL, MES]),
        inputs=True,
    )
    def _layer(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        continuous = continuous_bars(lake)
        table = layers.asset_layer(market.key, continuous)
        fresh = input_freshness(table.frame["date"], continuous, *_inputs(market.key, {}), {})
        return _checked(
            context,
            lake,
            table,
            tables.MARKET_LAYER,
            f"{market.key}_layer_1d",
            "1d",
            parts={"market": market},
            inputs=fresh,
        )

    return _layer


def _daily_master_asset(market: Market):
    @_feature_asset(
        tables.MASTER.asset_key(market=market, timeframe="1d").to_user_string(),
        MASTER_DESCRIPTIONS[market.symbol],
        reads(tables.MARKET_LAYER, markets=[market]) + reads(tables.SHARED_LAYER, layer=list(layers.SHARED_LAYERS)),
        master="daily",
    )
    def _master(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        table = layers.asset_master(
            market.key, lake.read_features(tables.MARKET_LAYER, market=market), _shared_tables(lake)
        )
        silent = sources_silent_at_the_end(table)
        if silent:
            context.log.warning(
                f"{market} master: on its last session every feature of {', '.join(silent)} is null (a stale or "
                "ended input; the layers' inputs_fresh and inputs_running checks say since when)"
            )
        return _checked(
            context,
            lake,
            table,
            tables.MASTER,
            f"{market.key}_master_1d",
            "1d",
            master="daily",
            parts={"market": market, "timeframe": "1d"},
            metadata={"inputs_null_on_last_session": ", ".join(silent) or "none"},
        )

    return _master


def sources_silent_at_the_end(table: Table) -> list[str]:
    """The inputs (feature sources) all of whose features are null on the table's last row."""
    last = table.frame.tail(1)
    by_source: dict[str, list[bool]] = {}
    for spec in table.specs:
        by_source.setdefault(spec.source, []).append(last[spec.name][0] is None)
    return sorted(source for source, nulls in by_source.items() if source and all(nulls))


LAYERS = [_layer_asset(m) for m in MARKETS.values()]
DAILY_MASTERS = [_daily_master_asset(m) for m in MARKETS.values()]


# --- MES intraday -------------------------------------------------------------------------------


@dg.asset(
    key=tables.BARS.asset_key(),
    group_name="mes_features",
    deps=reads(inputs.MINUTE_DATASET, tables.CONTINUOUS, markets=[MES]),
    description="The canonical MES 1-minute bar table and, from it, bars at 5min, 15min, 30min, 1h, 4h and 1d "
    "aligned to the Globex session; each bar stamped with its close `ts`.",
    kinds={"polars", "parquet"},
    tags={"layer": "features", **stage("prepare")},
    automation_condition=EVENING,
)
def mes_bars(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    from cbi_assets.features.bars import resample

    minutes = inputs.minutes(lake.read_raw(inputs.MINUTE_DATASET), continuous_bars(lake, (MES,))["mes"])
    if minutes is None:
        raise dg.Failure(
            f"{inputs.MINUTE_DATASET.key.to_user_string()} has no records: materialize its partitions first"
        )
    counts = {}
    for timeframe in TIMEFRAMES:
        frame = resample(minutes, timeframe)
        lake.write(tables.BARS, frame, timeframe=timeframe)
        counts[timeframe] = frame.height
    return dg.MaterializeResult(
        metadata={
            "bars": dg.MetadataValue.json(counts),
            "path": dg.MetadataValue.path(str(lake.path(tables.BARS, timeframe="1min"))),
        }
    )


@_feature_asset(
    tables.MICROSTRUCTURE.asset_key().to_user_string(),
    "Order flow, microprice, spreads, depth imbalance, aggressor flow, trade and quote intensity and "
    "liquidity estimates from MES trades, TBBO and MBP-10, per minute.",
    reads(*inputs.TICK_DATASETS, tables.BARS),
    timeframe="1min",
)
def mes_microstructure(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    minutes = lake.read(tables.BARS, timeframe="1min")
    ticks = inputs.lake_ticks(lake)
    table = microstructure_table(minutes, ticks["trades"], ticks["tbbo"], ticks["mbp_10"])
    return _checked(context, lake, table, tables.MICROSTRUCTURE, "mes_microstructure_1min", "1min")


def _intraday_master_asset(timeframe: str):
    @_feature_asset(
        tables.MASTER.asset_key(market=MES, timeframe=timeframe).to_user_string(),
        f"MES {timeframe} master features: {timeframe} technicals, closed higher-timeframe bars, "
        "microstructure, session and calendar, and the last settled session's daily layers.",
        reads(tables.BARS, tables.MICROSTRUCTURE, tables.MASTER, markets=[MES], timeframe="1d"),
        timeframe=timeframe,
        master="intraday",
    )
    def _master(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        bars = {tf: lake.read(tables.BARS, timeframe=tf) for tf in INTRADAY_TIMEFRAMES}
        micro = lake.read_features(tables.MICROSTRUCTURE) if lake.exists(tables.MICROSTRUCTURE) else None
        daily = lake.read_features(tables.MASTER, market=MES, timeframe="1d")
        built = intraday_context(bars["1min"], micro, daily, bars)
        parts, profile, began = intraday_master_parts(built, timeframe), Profile(), time.monotonic()
        name = f"mes_master_{timeframe}"

        def take(part: Table) -> None:
            profile.add(part)
            if profile.parts % 10 == 0 or profile.parts == len(parts):
                context.log.info(
                    f"{name}: {profile.parts} of {len(parts)} parts built, {profile.rows:,} rows "
                    f"up to {profile.last}, {time.monotonic() - began:.0f} s"
                )

        path = lake.stream_features(tables.MASTER, parts, name, take, market=MES, timeframe=timeframe)
        return _reported(context, profile, path, name, timeframe, master="intraday")

    return _master


INTRADAY_MASTERS = [_intraday_master_asset(tf) for tf in INTRADAY_TIMEFRAMES]
# Every master table: (market, timeframe).
MASTERS = [(ZL, "1d"), (MES, "1d"), *((MES, tf) for tf in INTRADAY_TIMEFRAMES)]


@dg.asset(
    key=tables.FEATURE_CATALOGUE.asset_key(),
    group_name="features",
    deps=[tables.MASTER.asset_key(market=m, timeframe=tf) for m, tf in MASTERS],
    description="Every feature of every master table with its layer, source, timeframe, window and lag.",
    kinds={"duckdb", "parquet"},
    tags={"layer": "features", **stage("prepare")},
    automation_condition=EVENING,
)
def feature_catalogue(context: dg.AssetExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.MaterializeResult:
    # The entries stored beside each master table: reading the tables themselves would cost minutes. A source
    # without MES minute bars builds no intraday masters.
    built = [(m, tf) for m, tf in MASTERS if lake.exists(tables.MASTER, market=m, timeframe=tf)]
    if not built:
        raise lake.missing(tables.MASTER, market=ZL, timeframe="1d")
    catalogue = pl.concat([lake.feature_catalogue(tables.MASTER, market=m, timeframe=tf) for m, tf in built])
    path = lake.write(tables.FEATURE_CATALOGUE, catalogue)
    warehouse.replace_table("features.catalogue", catalogue)
    counts = catalogue.group_by("table").len().sort("table")
    return dg.MaterializeResult(
        metadata={
            "features": catalogue.height,
            "distinct_names": catalogue["name"].n_unique(),
            "per_table": md_table(counts, 20),
            "catalogue": md_table(
                catalogue.filter(pl.col("table") == "zl_master_1d").select(
                    "name", "layer", "source", "timeframe", "window", "lag", "description"
                ),
                300,
            ),
            "path": dg.MetadataValue.path(str(path)),
            "table": "features.catalogue",
        }
    )


FEATURE_ASSETS = [
    *CONTINUOUS_ASSETS,
    *SHARED_ASSETS,
    *LAYERS,
    *DAILY_MASTERS,
    mes_bars,
    mes_microstructure,
    *INTRADAY_MASTERS,
    feature_catalogue,
]
