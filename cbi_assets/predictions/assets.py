"""Prediction assets per market, partitioned by horizon: today's forecast and its upload.

`{market}/predictions/forecast` forecasts the newest origin of the master features with every family's
model from MLflow, and publishes the champion's forecast (a regime specialist's while its regime is
current and it earned it), with intervals, regime, conviction, confidence, model version and top
drivers; a registered challenger forecasts beside it as a shadow (`today.py`). `{market}/predictions/upload`
appends both to the warehouse history, refreshes the latest views, and promotes a challenger that has
beaten the champion on matured forecasts.
"""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.automation import EVENING
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.ensembles.conformal import LEVELS, MIN_SCORES
from cbi_assets.features.inputs import continuous_bars
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, reads
from cbi_assets.models.inputs import horizon_rows
from cbi_assets.models.leaderboard import RANDOM_WALK
from cbi_assets.models.registry import families
from cbi_assets.monitoring.outcomes import matured
from cbi_assets.predictions import history, shadow
from cbi_assets.predictions.today import forecast_horizon
from cbi_assets.profiles import TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.training.sets import feature_timeframe
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse
from resources.alerts import Alerts
from resources.tracking import Tracking


class ForecastConfig(dg.Config):
    levels: list[float] = list(LEVELS)  # conformal interval coverage levels
    min_scores: int = MIN_SCORES  # matured walk-forward errors an interval needs
    drivers: int = 5  # top drivers kept per forecast


# --- Assets -------------------------------------------------------------------------------------


def _fan_plot(frames: list[pl.DataFrame], bars: dict[str, pl.DataFrame], title: str):
    """Each horizon's published forecast at its target time, with its 80% and 90% intervals, after the
    recent prices (a panel per time scale: sessions, and intraday minutes where a market has them)."""
    rows = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("role") == "champion")
    panels = [(name, rows.filter(pl.col("intraday") == (name == "intraday"))) for name in bars]
    panels = [(n, r) for n, r in panels if r.height]
    fig, axes = figure(11, 4 * len(panels), rows=len(panels), sharex=False)  # sessions above, minutes below
    for axis, (name, shown) in zip(np.atleast_1d(axes), panels, strict=True):
        recent = bars[name]
        axis.plot(recent["time"].to_list(), recent["close"].to_list(), color="black", linewidth=0.8, label="close")
        for r in shown.iter_rows(named=True):
            for level, alpha in (("90", 0.25), ("80", 0.5)):
                if r.get(f"lower_{level}_price") is not None:
                    axis.vlines(
                        r["target_time"],
                        r[f"lower_{level}_price"],
                        r[f"upper_{level}_price"],
                        linewidth=6,
                        alpha=alpha,
                        color="tab:blue",
                    )
            axis.plot(
                [r["as_of"], r["target_time"]],
                [r["price"], r["forecast_price"]],
                color="tab:blue",
                linewidth=0.8,
                marker="o",
                markersize=3,
            )
            axis.annotate(
                r["horizon"] + (" (random walk: no edge)" if r.get("family") == RANDOM_WALK else ""),
                (r["target_time"], r["forecast_price"]),
                fontsize=8,
                xytext=(4, 0),
                textcoords="offset points",
            )
        axis.set_ylabel("price")
        axis.set_title(f"{title} ({'intraday horizons' if name == 'intraday' else 'daily horizons'}; bands 80/90%)")
    return plot(fig)


def _recent_prices(lake: Lake, market: Market, intraday: bool, since) -> pl.DataFrame:
    if intraday:
        return (
            lake.scan(tables.BARS, timeframe="5min")
            .filter(pl.col("ts") >= since)
            .select(pl.col("ts").alias("time"), "close")
            .collect()
        )
    frame = continuous_bars(lake, (market,))[market.key]
    return frame.filter(pl.col("date") >= since).select(pl.col("date").alias("time"), "close")


def _intraday(market: Market) -> bool:
    return any(h.intraday for h in market.horizons)


def _forecast_reads(market: Market) -> list[dg.AssetKey]:
    """What a market's forecast reads: the training set, folds and scalers, the master tables its horizons
    learn from, the regime state, every family's oof and metrics (the champion's calibration and the
    specialists' choice), the specialists, the prices; and the champion the leaderboard crowns in MLflow."""
    bars = [tables.BARS] if _intraday(market) else []
    return [
        *reads(
            tables.TRAINING_SET,
            tables.FOLDS,
            tables.SCALERS,
            tables.MASTER,
            tables.REGIME_STATE,
            tables.OOF,
            tables.FAMILY_METRICS,
            tables.SPECIALIST,
            tables.CONTINUOUS,
            *bars,
            markets=[market],
            timeframe=sorted({feature_timeframe(h) for h in market.horizons}),
            family=[f.name for f in families()],
        ),
        dg.AssetKey([market.key, "models", "leaderboard"]),
    ]


def _forecast_asset(market: Market):
    @horizon_asset(
        market,
        key=tables.FORECAST.asset_key(market=market),
        group_name=f"{market.key}_predictions",
        deps=_forecast_reads(market),
        kinds={"mlflow", "polars"},
        tags={"layer": "predictions", **stage("forecast")},
        # A regime's specialists are optional (without one the champion forecasts) and trained on demand: a regime
        # partition not trained yet must not hold back the evening's forecast.
        automation_condition=EVENING.ignore(dg.AssetSelection.assets(tables.SPECIALIST.asset_key(market=market))),
        description=f"{market} forecast per horizon for the newest origin of the master features: the champion's "
        "(or the current regime's specialist's) point forecast as return and price, conformal 80/90% "
        "intervals, regime and state, conviction, confidence, model version (MLflow) and top drivers; a "
        "registered challenger forecasts beside it as a shadow.",
    )
    def _forecast(
        context: dg.AssetExecutionContext,
        config: ForecastConfig,
        lake: Lake,
        tracking: Tracking,
        profile: TrainingProfile,
    ) -> dg.MaterializeResult:
        loaded = profile.load()
        budget = loaded.training

        def work(horizon: Horizon) -> Done:
            frame, table = forecast_horizon(
                lake,
                tracking,
                market,
                horizon,
                budget,
                tuple(config.levels),
                config.min_scores,
                config.drivers,
                context.log,
                loaded.significance,
            )
            lake.write(tables.FORECAST, frame, market=market, horizon=horizon.name)
            lake.write(tables.FAMILY_FORECASTS, table, market=market, horizon=horizon.name)
            top = frame.row(0, named=True)
            context.log.info(
                f"{market.key} {horizon.name} at {top['as_of']}: {top['family']} forecasts "
                f"{top['forecast_return']:+.4f} ({top['price']:.2f} -> {top['forecast_price']:.2f}) "
                f"by {top['target_time']:%Y-%m-%d %H:%M}"
            )
            shown = frame.select(
                "horizon",
                "role",
                "family",
                "model_version",
                "as_of",
                "target_time",
                "price",
                "forecast_price",
                *(c for c in ("lower_90_price", "upper_90_price") if c in frame.columns),
                "regime",
                "state",
                "conviction",
                "confidence",
                "edge",
            ).with_columns(pl.col(pl.Float64).round(4))
            return Done(
                rows=shown,
                value=frame.with_columns(pl.lit(horizon.intraday).alias("intraday")),
            )

        def finish(done: dict[str, Done]) -> dict:
            frames = [d.value for d in done.values()]
            rows = pl.concat(frames, how="diagonal_relaxed")
            first = rows["as_of"].min()
            bars = {"daily": _recent_prices(lake, market, False, (first - dt.timedelta(days=365)).date())}
            if rows["intraday"].any():
                bars["intraday"] = _recent_prices(lake, market, True, first - dt.timedelta(hours=12))
            return {"forecast_fan": _fan_plot(frames, bars, f"{market} forecasts at {first:%Y-%m-%d}")}

        return each_horizon(
            context,
            market,
            work,
            name="forecast",
            summary="forecasts",
            finish=finish,
            metadata={"path": dg.MetadataValue.path(lake.where(tables.FORECAST, market=market))},
        )

    return _forecast


class UploadConfig(dg.Config):
    # Days of matured origins a challenger must share with the champion before it is judged (the significance
    # test then decides; at long horizons a few dozen overlapping origins are only a few outcomes, and a live
    # intraday horizon's minutes of one session count as one day).
    promote_after_days: int = 20


def _upload_asset(market: Market):
    # The forecast to publish, and the prices a challenger's matured forecasts are judged on.
    bars = [tables.BARS] if _intraday(market) else []

    @horizon_asset(
        market,
        key=[market.key, "predictions", "upload"],
        group_name=f"{market.key}_predictions",
        deps=reads(tables.FORECAST, tables.CONTINUOUS, *bars, markets=[market]),
        kinds={"duckdb", "mlflow"},
        tags={"layer": "predictions", **stage("forecast")},
        automation_condition=EVENING,
        description=f"{market} forecasts appended to the warehouse history predictions.history (one row per "
        "asset, horizon, as-of and model version; a re-run adds nothing), the latest champion forecast "
        f"per horizon in the views predictions.vw_{market.key}_<horizon>_latest, and a challenger promoted "
        "to champion (the MLflow alias moves) once it beats the champion on enough matured forecasts.",
    )
    def _upload(
        context: dg.AssetExecutionContext,
        config: UploadConfig,
        lake: Lake,
        warehouse: Warehouse,
        tracking: Tracking,
        alerts: Alerts,
        profile: TrainingProfile,
    ) -> dg.MaterializeResult:
        now = dt.datetime.now(dt.UTC)
        level = profile.load().significance

        def work(horizon: Horizon) -> Done:
            frame = lake.read(tables.FORECAST, market=market, horizon=horizon.name).with_columns(
                pl.lit(now).alias("published_at"), pl.lit(context.run.run_id).alias("dagster_run_id")
            )
            count = history.append(warehouse, frame)
            view = history.refresh_view(warehouse, market, horizon.name)
            stored = history.read(warehouse, market, horizon.name)  # not None: the table was just written
            context.log.info(
                f"{market.key} {horizon.name}: {count} new forecast row(s) in {history.TABLE} ({stored.height} stored)"
            )
            added = {"as_of": str(frame["as_of"][0]), "rows_added": count, "rows_in_history": stored.height}
            champion = tracking.champion(market, horizon.name)
            challenger = tracking.challenger(market, horizon.name)
            if challenger is None or champion is None:
                return Done(rows=[added], value=(view, None))
            found = shadow.verdict(
                matured(stored, lake, market, horizon),
                champion["model_version"],
                challenger["model_version"],
                config.promote_after_days,
                horizon_rows(horizon),
                level,
            )
            if found.promote:
                tracking.promote(market, horizon.name)
                alerts.send(
                    "promotion",
                    f"{market} {horizon.name}: {challenger['family']} ({challenger['model_version']}) "
                    f"replaces {champion['family']} as champion: {found.why}",
                    severity="info",
                    asset=market.symbol,
                    horizon=horizon.name,
                    key=f"promotion:{market.key}:{horizon.name}:{challenger['model_version']}",
                    log=context.log,
                )
            verdict = {
                "horizon": horizon.name,
                "champion": champion["model_version"],
                "challenger": challenger["model_version"],
                "promoted": found.promote,
                "why": found.why,
            }
            return Done(rows=[added], value=(view, verdict))

        def finish(done: dict[str, Done]) -> dict:
            verdicts = [d.value[1] for d in done.values() if d.value[1] is not None]
            out = {"views": dg.MetadataValue.json([d.value[0] for d in done.values()]), "table": history.TABLE}
            if verdicts:
                out["shadow_models"] = md_table(pl.DataFrame(verdicts))
            return out

        return each_horizon(context, market, work, name="upload", summary="uploaded", finish=finish)

    return _upload


PREDICTION_ASSETS = [f(m) for m in MARKETS.values() for f in (_forecast_asset, _upload_asset)]
