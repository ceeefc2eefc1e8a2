"""Feature layer assets: thin wiring around the functions of cbi_assets.features.

Each asset reads its inputs from the lake, computes a table, writes it atomically with its
catalogue entries, and reports the feature-table checks with what they found.
"""

import time
from pathlib import Path

import dagster as dg
import polars as pl

from cbi_assets.catalogue import FRED_SERIES, INTRADAY_TIMEFRAMES, TIMEFRAMES
from cbi_assets.features import inputs, layers
from cbi_assets.features.master import (
    MIN_FEATURES,
    Table,
    intraday_context,
    intraday_master_parts,
    microstructure_table,
)
from cbi_assets.features.pit import RELEASE_LAGS, ReleaseLag
from cbi_assets.features.quality import Profile
from cbi_assets.features.spec import catalogue_frame
from cbi_assets.features.tables import read_table, stream_table, write_table
from cbi_assets.parquet import write_frame
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.ui import table as md_table

CHECKS = {
    "finite": "No infinite values in any feature.",
    "nulls_after_warmup": "Each feature has at most 5% nulls once its window has filled.",
    "increasing": "Rows strictly increasing in time.",
    "calendar": "Rows in line with the exchange calendar.",
}
MASTER_CHECKS = {**CHECKS, "distinct": "Enough features; none constant, none a copy of another."}
SEVERE = {"finite", "increasing", "distinct"}  # these fail as errors; the others warn


def _raw_keys(*names: str) -> list[dg.AssetKey]:
    return [RAW_DATASETS[n].key for n in names]


def _lake(context) -> Path:
    return Path(context.resources.lake.root)


def _checked(context, table: Table, path: Path, name: str, timeframe: str, master: str | None = None) -> dg.MaterializeResult:
    write_table(table, path, name)
    return _reported(context, Profile().add(table), path, name, timeframe, master)


def _reported(context, profile: Profile, path: Path, name: str, timeframe: str, master: str | None = None) -> dg.MaterializeResult:
    """The written table's metadata and its checks, from the profile of its rows."""
    findings = profile.findings(timeframe, MIN_FEATURES[master] if master else None)
    features = [s.name for s in profile.specs]
    by_layer = pl.DataFrame({"layer": [s.layer for s in profile.specs]}).group_by("layer").len().sort("len", descending=True)
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
        },
        check_results=[f.result(check, severe=check in SEVERE) for check, f in findings.items()],
    )


def _feature_asset(key: str, description: str, deps: list, timeframe: str = "1d", master: str | None = None):
    """Decorator for a feature asset with its checks, in the group of its area."""
    asset_key = dg.AssetKey(key.split("/"))
    return dg.asset(
        key=asset_key,
        description=description,
        deps=deps,
        group_name=f"{key.split('/')[0]}_features",
        required_resource_keys={"lake"},
        check_specs=[dg.AssetCheckSpec(name, asset=asset_key, description=text)
                     for name, text in (MASTER_CHECKS if master else CHECKS).items()],
        kinds={"polars", "parquet"},
        tags={"layer": "features"},
        metadata={"timeframe": timeframe},
    )


def _write_bars(frame: pl.DataFrame, path: Path) -> dg.MaterializeResult:
    write_frame(frame, path)
    return dg.MaterializeResult(metadata={"rows": frame.height, "path": dg.MetadataValue.path(str(path)),
                                          "preview": md_table(frame.tail(5), 5)})


# --- Continuous daily bars ----------------------------------------------------------------------


def _continuous_asset(area: str, symbols: list[str], description: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=[area.lower(), "features", "continuous_1d"], group_name=f"{area.lower()}_features",
        required_resource_keys={"lake"}, deps=_raw_keys(*(f"{s.lower()}_ohlcv_1d" for s in symbols)),
        description=description, kinds={"polars", "parquet"}, tags={"layer": "features"},
    )
    def _bars(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        series = inputs.continuous(inputs.daily_bars(_lake(context), symbols))
        frame = pl.concat([f.with_columns(pl.lit(s).alias("symbol")) for s, f in series.items()])
        return _write_bars(frame, _lake(context) / area / "features" / "continuous_1d.parquet")

    return _bars


zl_continuous = _continuous_asset(
    "ZL", inputs.ZL_SYMBOLS, "Front-month daily bars of ZL, ZS, ZM, CL and HO by volume, with the roll adjustment factor."
)
mes_continuous = _continuous_asset(
    "MES", inputs.MES_SYMBOLS, "E-mini and MES front daily bars; `mes` carries the E-mini's history before MES listed (May 2019)."
)


def continuous_bars(lake: Path, areas: tuple[str, ...] = ("ZL", "MES")) -> dict[str, pl.DataFrame]:
    out = {}
    for area in areas:
        frame = pl.read_parquet(lake / area / "features" / "continuous_1d.parquet")
        for (symbol,), part in frame.partition_by("symbol", as_dict=True).items():
            out[symbol] = part.drop("symbol").sort("date")
    return out


CONTINUOUS = [dg.AssetKey(["zl", "features", "continuous_1d"]), dg.AssetKey(["mes", "features", "continuous_1d"])]


# --- Shared layer -------------------------------------------------------------------------------


def shared_path(lake: Path, name: str) -> Path:
    return lake / "shared" / name / f"{name}_1d.parquet"


SHARED_DESCRIPTIONS = {
    "macro": ("Rates, curve, policy path, dollar, inflation expectations, credit spread and CPI, each placed on the "
              "session it was published (per-series release lags).", [f"fred_{s.lower()}" for s in FRED_SERIES]),
    "volatility": ("VIX level, percentile and bands; realised volatility of ES and ZL; vol of vol.", ["yahoo_vix", "fred_vixcls"]),
    "fx": ("The dollar against CNY, EUR, JPY, BRL and MYR (where a source has them): levels, returns, volatility.",
           ["fred_dexchus", "fred_dexuseu", "fred_dexjpus", "yahoo_brl", "yahoo_myr", "yahoo_dxy"]),
    "cross_asset": ("Rolling correlations and betas of ZL against CL, HO, MES (E-mini) and the dollar at 21/63/252 sessions.",
                    ["yahoo_dxy", "fred_dtwexbgs"]),
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
        return {**RELEASE_LAGS, **{k: ReleaseLag(business_days=v) for k, v in self.business_days.items()},
                **{k: ReleaseLag(calendar_days=v) for k, v in self.calendar_days.items()}}


def _shared_asset(name: str):
    description, raw = SHARED_DESCRIPTIONS[name]

    @_feature_asset(f"shared/features/{name}", description, _raw_keys(*raw) + CONTINUOUS)
    def _shared(context: dg.AssetExecutionContext, config: ReleaseLags) -> dg.MaterializeResult:
        lake = _lake(context)
        table = layers.shared_layer(name, continuous_bars(lake), inputs.lake_series(lake), config.lags())
        return _checked(context, table, shared_path(lake, name), f"shared_{name}", "1d")

    return _shared


SHARED_ASSETS = [_shared_asset(name) for name in layers.SHARED_LAYERS]


SHARED_KEYS = [dg.AssetKey(["shared", "features", n]) for n in layers.SHARED_LAYERS]


def _shared_tables(lake: Path) -> list[Table]:
    return [read_table(shared_path(lake, n)) for n in layers.SHARED_LAYERS]


# --- Asset layers and daily masters -------------------------------------------------------------


def layer_path(lake: Path, asset: str) -> Path:
    return lake / asset.upper() / "features" / f"{asset}_layer_1d.parquet"


def master_path(lake: Path, asset: str, timeframe: str) -> Path:
    return lake / asset.upper() / "features" / f"master_{timeframe}.parquet"


LAYER_DESCRIPTIONS = {
    "zl": "ZL technicals, the core of ZS/ZM/CL/HO, the crush margin, oil share, BOHO, ZL/CL ratio and the crop-year seasons.",
    "mes": "MES daily technicals (E-mini before May 2019) and the core of ZL/CL/HO.",
}
MASTER_DESCRIPTIONS = {
    "zl": "ZL master features: the ZL layer with the shared layer, per session.",
    "mes": "MES daily master features: the MES layer, the equity calendar and the shared layer.",
}


def _layer_asset(asset: str):
    @_feature_asset(f"{asset}/features/{asset}_layer_1d", LAYER_DESCRIPTIONS[asset], CONTINUOUS)
    def _layer(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = _lake(context)
        table = layers.asset_layer(asset, continuous_bars(lake))
        return _checked(context, table, layer_path(lake, asset), f"{asset}_layer_1d", "1d")

    return _layer


def _daily_master_asset(asset: str):
    @_feature_asset(f"{asset}/features/master_1d", MASTER_DESCRIPTIONS[asset],
                    [dg.AssetKey([asset, "features", f"{asset}_layer_1d"]), *SHARED_KEYS], master="daily")
    def _master(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = _lake(context)
        table = layers.asset_master(asset, read_table(layer_path(lake, asset)), _shared_tables(lake))
        return _checked(context, table, master_path(lake, asset, "1d"), f"{asset}_master_1d", "1d", master="daily")

    return _master


LAYERS = [_layer_asset(asset) for asset in ("zl", "mes")]
DAILY_MASTERS = [_daily_master_asset(asset) for asset in ("zl", "mes")]


# --- MES intraday -------------------------------------------------------------------------------


def bars_path(lake: Path, timeframe: str) -> Path:
    return lake / "MES" / "features" / f"bars_{timeframe}.parquet"


@dg.asset(
    key=["mes", "features", "bars"], group_name="mes_features", required_resource_keys={"lake"},
    deps=[RAW_DATASETS["mes_ohlcv_1m"].key, dg.AssetKey(["mes", "features", "continuous_1d"])],
    description="The canonical MES 1-minute bar table and, from it, bars at 5min, 15min, 30min, 1h, 4h and 1d "
                "aligned to the Globex session; each bar stamped with its close `ts`.",
    kinds={"polars", "parquet"}, tags={"layer": "features"},
)
def mes_bars(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    from cbi_assets.features.bars import resample

    lake = _lake(context)
    minutes = inputs.minutes(inputs.read_raw(lake, "mes_ohlcv_1m"), continuous_bars(lake, ("MES",))["mes"])
    if minutes is None:
        raise dg.Failure("mes/raw/mes_ohlcv_1m has no records: materialize its partitions first")
    counts = {}
    for timeframe in TIMEFRAMES:
        frame = resample(minutes, timeframe)
        write_frame(frame, bars_path(lake, timeframe))
        counts[timeframe] = frame.height
    return dg.MaterializeResult(metadata={"bars": dg.MetadataValue.json(counts),
                                          "path": dg.MetadataValue.path(str(bars_path(lake, "1min").parent))})


def micro_path(lake: Path) -> Path:
    return lake / "MES" / "features" / "microstructure_1min.parquet"


@_feature_asset("mes/features/microstructure_1min", "Order flow, microprice, spreads, depth imbalance, aggressor flow, "
                "trade and quote intensity and liquidity estimates from MES trades, TBBO and MBP-10, per minute.",
                [*_raw_keys("mes_trades", "mes_tbbo", "mes_mbp_10"), dg.AssetKey(["mes", "features", "bars"])], timeframe="1min")
def mes_microstructure(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    lake = _lake(context)
    minutes = pl.read_parquet(bars_path(lake, "1min"))
    ticks = inputs.lake_ticks(lake)
    table = microstructure_table(minutes, ticks["trades"], ticks["tbbo"], ticks["mbp_10"])
    return _checked(context, table, micro_path(lake), "mes_microstructure_1min", "1min")


def _intraday_master_asset(timeframe: str):
    @_feature_asset(f"mes/features/master_{timeframe}",
                    f"MES {timeframe} master features: {timeframe} technicals, closed higher-timeframe bars, "
                    "microstructure, session and calendar, and the last settled session's daily layers.",
                    [dg.AssetKey(["mes", "features", "bars"]), dg.AssetKey(["mes", "features", "microstructure_1min"]),
                     dg.AssetKey(["mes", "features", "master_1d"])], timeframe=timeframe, master="intraday")
    def _master(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = _lake(context)
        bars = {tf: pl.read_parquet(bars_path(lake, tf)) for tf in INTRADAY_TIMEFRAMES}
        micro = read_table(micro_path(lake)) if micro_path(lake).is_file() else None
        built = intraday_context(bars["1min"], micro, read_table(master_path(lake, "mes", "1d")), bars)
        parts, profile, began = intraday_master_parts(built, timeframe), Profile(), time.monotonic()

        def take(part: Table) -> None:
            profile.add(part)
            if profile.parts % 10 == 0 or profile.parts == len(parts):
                context.log.info(f"mes_master_{timeframe}: {profile.parts} of {len(parts)} parts built, {profile.rows:,} rows "
                                 f"up to {profile.last}, {time.monotonic() - began:.0f} s")

        path = master_path(lake, "mes", timeframe)
        stream_table(parts, path, f"mes_master_{timeframe}", take)
        return _reported(context, profile, path, f"mes_master_{timeframe}", timeframe, master="intraday")

    return _master


INTRADAY_MASTERS = [_intraday_master_asset(tf) for tf in INTRADAY_TIMEFRAMES]
MASTER_KEYS = [dg.AssetKey(["zl", "features", "master_1d"]), dg.AssetKey(["mes", "features", "master_1d"]),
               *(dg.AssetKey(["mes", "features", f"master_{tf}"]) for tf in INTRADAY_TIMEFRAMES)]


@dg.asset(
    key=["features", "catalogue"], group_name="features", deps=MASTER_KEYS,
    required_resource_keys={"lake", "warehouse"},
    description="Every feature of every master table with its layer, source, timeframe, window and lag.",
    kinds={"duckdb", "parquet"}, tags={"layer": "features"},
)
def feature_catalogue(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    lake = _lake(context)
    tables = {"zl_master_1d": master_path(lake, "zl", "1d"), "mes_master_1d": master_path(lake, "mes", "1d"),
              **{f"mes_master_{tf}": master_path(lake, "mes", tf) for tf in INTRADAY_TIMEFRAMES}}
    catalogue = pl.concat([catalogue_frame(read_table(path).specs, name) for name, path in tables.items()])
    path = lake / "feature_catalogue.parquet"
    write_frame(catalogue, path)
    with context.resources.warehouse.get_connection() as conn:
        conn.execute("create schema if not exists features")
        conn.register("catalogue", catalogue.to_arrow())
        conn.execute("create or replace table features.catalogue as select * from catalogue")
    counts = catalogue.group_by("table").len().sort("table")
    return dg.MaterializeResult(metadata={
        "features": catalogue.height,
        "distinct_names": catalogue["name"].n_unique(),
        "per_table": md_table(counts, 20),
        "catalogue": md_table(catalogue.filter(pl.col("table") == "zl_master_1d").select(
            "name", "layer", "source", "timeframe", "window", "lag", "description"), 300),
        "path": dg.MetadataValue.path(str(path)),
        "table": "features.catalogue",
    })


FEATURE_ASSETS = [
    zl_continuous, mes_continuous, *SHARED_ASSETS, *LAYERS, *DAILY_MASTERS,
    mes_bars, mes_microstructure, *INTRADAY_MASTERS, feature_catalogue,
]
