"""Prediction assets per market, partitioned by horizon: today's forecast and its upload.

`{a}/predictions/forecast` forecasts the newest origin of the master features with every family's
model from MLflow, and publishes the champion's forecast (a regime specialist's while its regime is
current and it earned it), with intervals, regime, conviction, confidence, model version and top
drivers; a registered challenger forecasts beside it as a shadow. `{a}/predictions/upload` appends
both to the warehouse history, refreshes the latest views, and promotes a challenger that has
beaten the champion on matured forecasts.
"""


import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets.calendars import settlement_days
from cbi_assets.ensembles.members import training_origins
from cbi_assets.ensembles.conformal import LEVELS, MIN_SCORES, Calibration, level_name
from cbi_assets.ensembles.members import assemble, read_oof
from cbi_assets.explain.shapley import (
    NoAttribution,
    top_drivers,
    tree_kind,
    window_length,
    window_predictor,
)
from cbi_assets.features.assets import (
    MASTER_KEYS,
    bars_path,
    continuous_bars,
    master_path,
)
from cbi_assets.models.assets import models_dir
from cbi_assets.models.inputs import fold_inputs, horizon_rows, rows_per_year
from cbi_assets.models.registry import BUDGETS, Budget, families
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS
from cbi_assets.predictions import history, shadow
from cbi_assets.predictions.forecast import drivers_json, history_of, published
from cbi_assets.predictions.origin import (
    LatestOrigin,
    as_timestamp,
    latest_origin,
    origin_price,
    origin_regime,
    origin_state,
)
from cbi_assets.regimes.assets import state_path
from cbi_assets.specialists.choice import choose_model, load_specialist
from cbi_assets.training.assets import horizon_dir
from cbi_assets.training.sets import feature_timeframe, horizon_of, time_key, trained_on
from cbi_assets.ui import figure, partly_failed, plot
from cbi_assets.ui import table as md_table


def predictions_dir(lake: Path, asset: str, horizon: str) -> Path:
    return Path(lake) / asset.upper() / "predictions" / "by_horizon" / horizon


class ForecastConfig(dg.Config):
    levels: list[float] = list(LEVELS)  # conformal interval coverage levels
    min_scores: int = MIN_SCORES  # matured walk-forward errors an interval needs
    drivers: int = 5  # top drivers kept per forecast


def forecast_of(model, inputs) -> float:
    """A stored model's forecast of the last input row: a family's fitted model, or the Keras network a
    sequence family stores (its output layer already gives the forward log return)."""
    if type(model).__module__.startswith("keras"):
        return float(window_predictor(model)(np.asarray(inputs.x))[-1])
    return float(model.predict(inputs).mean[-1])


def family_forecasts(tracking, asset: str, partition: str, origin: LatestOrigin, budget: Budget,
                     log) -> tuple[dict[str, float], dict[str, tuple[str, object]]]:
    """Every family's forecast for the origin, from its latest MLflow run: ({family: log return},
    {family: (run_id, model)}). A family without a usable run is left out with a warning."""
    forecasts, models = {}, {}
    for family in families():
        runs = tracking.family_runs(asset, partition, family.name, 1)
        if not runs:
            log.warning(f"{asset} {partition}: MLflow has no run of {family.name}; it does not forecast today")
            continue
        model, logged = tracking.load_model(runs[0]["run_id"])
        if trained_on(logged) != origin.data.features:
            log.warning(f"{asset} {partition}: {family.name} run {runs[0]['run_id'][:8]} was trained on other features "
                        "than the training set has now; retrain it (left out today)")
            continue
        value = forecast_of(model, origin.inputs(family.shape, budget))
        if not np.isfinite(value):
            log.warning(f"{asset} {partition}: {family.name} forecast {value} for {origin.time}; left out today")
            continue
        forecasts[family.name], models[family.name] = value, (runs[0]["run_id"], model)
    return forecasts, models


BACKGROUND = 16  # training windows a network's features are replaced with when its forecast is explained


def _drivers(model, x_row: np.ndarray, origin: LatestOrigin, index: list[int], k: int, budget: Budget) -> str:
    """Top drivers of a model's forecast for the origin: TreeSHAP for a tree (`x_row`, scaled), sampled
    SHAP against training windows for a network; '[]' for a model without features (random walk, ARIMA...)."""
    names, shown = [origin.data.features[i] for i in index], origin.raw[index]
    length = window_length(model)
    try:
        if tree_kind(model):
            return drivers_json(top_drivers(model, x_row, names, k, values=shown))
        if length is None:
            return "[]"
        windowed = dataclasses.replace(budget, sequence_length=length)
        train = fold_inputs(origin.data, origin.fold, origin.scaler, "sequence", windowed)[0].x
        picked = np.unique(np.linspace(0, len(train) - 1, min(BACKGROUND, len(train))).round().astype(int))
        window = origin.inputs("sequence", windowed).x[0]
        return drivers_json(top_drivers(model, window, names, k, background=np.asarray(train[picked]), values=shown))
    except NoAttribution:
        return "[]"


def specialist_forecast(folder: Path, origin: LatestOrigin, k: int) -> tuple[float, str]:
    """A regime specialist's forecast for the origin (scaled by its own training rows' scaler) and its drivers."""
    model, scaler, names = load_specialist(folder)
    missing = [n for n in names if n not in origin.data.features]
    if missing:
        raise ValueError(f"{folder}: the specialist uses features the master table lacks (first: {missing[0]}); "
                         "retrain it")
    index = [origin.data.features.index(n) for n in names]
    data = dataclasses.replace(origin.data, x=origin.data.x[:, index], features=tuple(names))
    x = fold_inputs(data, origin.fold, scaler, "tabular", NO_CAP)[1]
    return float(model.predict(x).mean[-1]), _drivers(model, x.x[0], origin, index, k, NO_CAP)


NO_CAP = dataclasses.replace(BUDGETS["full"], max_train_rows=None)  # the origin's slice is cut already


def _required(path: Path, what: str) -> Path:
    if not path.is_file():
        raise dg.Failure(f"{path}: not built yet; materialize {what} for this horizon first")
    return path


def forecast_horizon(lake: Path, tracking, asset: str, partition: str, profile: str, config: ForecastConfig,
                     log) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the published rows: the champion's, and the challenger's when one is registered; every family's
    forecast) for the newest origin of one asset x horizon."""
    horizon = horizon_of(asset, partition)
    key = time_key(horizon)
    folder = horizon_dir(lake, asset, partition)
    keys = pl.read_parquet(_required(folder / "all.parquet", f"{asset}/training/sets"), columns=[key])[key]
    folds = pl.read_parquet(_required(folder / "folds.parquet", f"{asset}/training/folds"))
    scalers = pl.read_parquet(_required(folder / "scalers.parquet", f"{asset}/training/folds"))
    master = _required(master_path(lake, asset, feature_timeframe(horizon)), f"{asset}/features/master")
    state = pl.read_parquet(_required(state_path(lake, asset, partition), f"{asset}/regimes/state"))
    champion = tracking.champion(asset, partition)
    if champion is None:
        raise dg.Failure(f"{asset} {partition}: no champion registered in MLflow; materialize {asset}/models/leaderboard")
    budget = BUDGETS[profile]
    newest = pl.scan_parquet(master).select(pl.col(key).max()).collect().item()
    day = newest.date() if isinstance(newest, dt.datetime) else newest
    sessions = settlement_days(day, day + dt.timedelta(days=550))  # past the longest horizon
    oof_dir = models_dir(lake, asset, partition) / "oof"
    try:
        origin = latest_origin(keys, folds, scalers, master, asset, horizon, budget, sessions)
        oof, missing = read_oof(oof_dir, [f.name for f in families()])
        members = assemble(oof, training_origins(lake, asset, partition), state, key, missing, where=str(oof_dir))
    except ValueError as error:
        raise dg.Failure(f"{asset} {partition}: {error}") from error
    bars = (continuous_bars(lake, (asset.upper(),))[asset] if key == "date"
            else pl.scan_parquet(bars_path(lake, feature_timeframe(horizon))).select("ts", "close")
            .filter(pl.col("ts") == origin.time).collect())  # one bar of a table of millions
    price = origin_price(bars, origin)
    now_state, regime = origin_state(origin, state), origin_regime(origin)
    forecasts, models = family_forecasts(tracking, asset, partition, origin, budget, log)
    history = history_of(members)
    calibration = Calibration.of(horizon_rows(horizon), rows_per_year(horizon))
    levels = tuple(sorted(config.levels))
    every = list(range(len(origin.data.features)))
    tabular = origin.inputs("tabular", budget).x[0]

    def row(role: str, registered: dict) -> dict:
        family = registered["family"]
        if family not in forecasts:
            raise dg.Failure(f"{asset} {partition}: the {role} {family} ({registered['model_version']}) could not "
                             f"forecast {origin.time} (see the warnings above); retrain it or register another")
        out = {"model_version": registered["model_version"], "run_id": registered["run_id"], "family": family,
               "role": role, "source": role}
        chosen = choose_model(lake, asset, partition, regime) if role == "champion" else None
        if chosen is not None:
            log.info(f"{asset} {partition}: {chosen.why}")
        if chosen is not None and chosen.source == "specialist":
            point, drivers = specialist_forecast(chosen.path, origin, config.drivers)
            out |= {"model_version": f"specialist/{regime}/{chosen.run_id[:8]}", "run_id": chosen.run_id,
                    "family": chosen.model, "source": "specialist"}
        else:
            point = forecasts[family]
            drivers = _drivers(models[family][1], tabular, origin, every, config.drivers, budget)
        # A specialist's interval is calibrated on the champion it stands in for: its own regime folds are few.
        values = published(point, family, forecasts, history, origin.time, price, origin.scale, levels,
                           config.min_scores, calibration)
        return {"asset": asset.upper(), "horizon": partition, "as_of": as_timestamp(origin.time),
                "target_time": origin.target, **out, **values, "regime": regime, "state": now_state,
                "drivers": drivers}

    rows = [row("champion", champion)]
    challenger = tracking.challenger(asset, partition)
    if challenger is not None:
        rows.append(row("challenger", challenger))
    frame = pl.DataFrame(rows, schema_overrides=row_schema(levels), infer_schema_length=None)
    table = pl.DataFrame({"family": list(forecasts), "forecast_return": list(forecasts.values()),
                          "run_id": [models[f][0] for f in forecasts]}).with_columns(
        (pl.col("forecast_return").exp() * price).alias("forecast_price"))
    return frame, table


def row_schema(levels: tuple[float, ...]) -> dict:
    bounds = {f"{side}_{level_name(v)}{price}": pl.Float64 for v in levels for side in ("lower", "upper")
              for price in ("", "_price")}
    return {"as_of": pl.Datetime("us", "UTC"), "target_time": pl.Datetime("us", "UTC"), "forecast_return": pl.Float64,
            "forecast_price": pl.Float64, "price": pl.Float64, "conviction": pl.Float64, "confidence": pl.Float64,
            "spread": pl.Float64, "typical_move": pl.Float64, **bounds}


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
                    axis.vlines(r["target_time"], r[f"lower_{level}_price"], r[f"upper_{level}_price"], linewidth=6,
                                alpha=alpha, color="tab:blue")
            axis.plot([r["as_of"], r["target_time"]], [r["price"], r["forecast_price"]], color="tab:blue",
                      linewidth=0.8, marker="o", markersize=3)
            axis.annotate(r["horizon"], (r["target_time"], r["forecast_price"]), fontsize=8, xytext=(4, 0),
                          textcoords="offset points")
        axis.set_ylabel("price")
        axis.set_title(f"{title} ({'intraday horizons' if name == 'intraday' else 'daily horizons'}; bands 80/90%)")
    return plot(fig)


def _recent_prices(lake: Path, asset: str, intraday: bool, since) -> pl.DataFrame:
    if intraday:
        return (pl.scan_parquet(bars_path(lake, "5min")).filter(pl.col("ts") >= since)
                .select(pl.col("ts").alias("time"), "close").collect())
    frame = continuous_bars(lake, (asset.upper(),))[asset]
    return frame.filter(pl.col("date") >= since).select(pl.col("date").alias("time"), "close")


def _forecast_asset(asset: str):
    @dg.asset(
        key=[asset, "predictions", "forecast"], group_name=f"{asset}_predictions",
        partitions_def=HORIZON_PARTITIONS[asset], backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey([asset, "models", "leaderboard"]), dg.AssetKey([asset, "regimes", "state"]),
              *(k for k in MASTER_KEYS if k.path[0] == asset)],
        required_resource_keys={"lake", "tracking"}, kinds={"mlflow", "polars"}, tags={"layer": "predictions"},
        description=f"{asset.upper()} forecast per horizon for the newest origin of the master features: the champion's "
                    "(or the current regime's specialist's) point forecast as return and price, conformal 80/90% "
                    "intervals, regime and state, conviction, confidence, model version (MLflow) and top drivers; a "
                    "registered challenger forecasts beside it as a shadow.",
    )
    def _forecast(context: dg.AssetExecutionContext, config: ForecastConfig) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        frames, failed = [], []
        for partition in context.partition_keys:
            try:
                frame, table = forecast_horizon(lake, context.resources.tracking, asset, partition,
                                                context.resources.lake.profile, config, context.log)
            except dg.Failure as error:
                context.log.error(error.description)
                failed.append(error.description)
                continue
            folder = predictions_dir(lake, asset, partition)
            write_frame(frame, folder / "latest.parquet")
            write_frame(table, folder / "families.parquet")
            top = frame.row(0, named=True)
            context.log.info(f"{asset} {partition} at {top['as_of']}: {top['family']} forecasts {top['forecast_return']:+.4f} "
                             f"({top['price']:.2f} -> {top['forecast_price']:.2f}) by {top['target_time']:%Y-%m-%d %H:%M}")
            frames.append(frame.with_columns(pl.lit(horizon_of(asset, partition).intraday).alias("intraday")))
        metadata: dict = {"path": dg.MetadataValue.path(str(predictions_dir(lake, asset, "").parent))}
        if frames:
            rows = pl.concat(frames, how="diagonal_relaxed")
            metadata["forecasts"] = md_table(rows.select(
                "horizon", "role", "family", "model_version", "as_of", "target_time", "price", "forecast_price",
                *(c for c in ("lower_90_price", "upper_90_price") if c in rows.columns), "regime", "state",
                "conviction", "confidence").with_columns(pl.col(pl.Float64).round(4)), 50)
            first = rows["as_of"].min()
            bars = {"daily": _recent_prices(lake, asset, False, (first - dt.timedelta(days=365)).date())}
            if rows["intraday"].any():
                bars["intraday"] = _recent_prices(lake, asset, True, first - dt.timedelta(hours=12))
            metadata["forecast_fan"] = _fan_plot(frames, bars, f"{asset.upper()} forecasts at {first:%Y-%m-%d}")
        if failed:
            raise partly_failed(failed, f"of {len(context.partition_keys)} horizons' forecasts", metadata)
        return dg.MaterializeResult(metadata=metadata)

    return _forecast


class UploadConfig(dg.Config):
    promote_after_days: int = 20  # matured origins a challenger must share with the champion before it can win


def _upload_asset(asset: str):
    @dg.asset(
        key=[asset, "predictions", "upload"], group_name=f"{asset}_predictions",
        partitions_def=HORIZON_PARTITIONS[asset], backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey([asset, "predictions", "forecast"])],
        required_resource_keys={"lake", "warehouse", "tracking", "alerts"}, kinds={"duckdb", "mlflow"},
        tags={"layer": "predictions"},
        description=f"{asset.upper()} forecasts appended to the warehouse history predictions.history (one row per "
                    "asset, horizon, as-of and model version; a re-run adds nothing), the latest champion forecast "
                    f"per horizon in the views predictions.vw_{asset}_<horizon>_latest, and a challenger promoted to "
                    "champion (the MLflow alias moves) once it beats the champion on enough matured forecasts.",
    )
    def _upload(context: dg.AssetExecutionContext, config: UploadConfig) -> dg.MaterializeResult:
        from cbi_assets.monitoring.outcomes import matured

        lake = Path(context.resources.lake.root)
        tracking = context.resources.tracking
        now = dt.datetime.now(dt.UTC)
        added, views, verdicts = [], [], []
        for partition in context.partition_keys:
            path = predictions_dir(lake, asset, partition) / "latest.parquet"
            if not path.is_file():
                raise dg.Failure(f"{path}: no forecast for {asset} {partition}; materialize {asset}/predictions/forecast")
            frame = pl.read_parquet(path).with_columns(pl.lit(now).alias("published_at"),
                                                       pl.lit(context.run.run_id).alias("dagster_run_id"))
            with context.resources.warehouse.get_connection() as conn:
                count = history.append(conn, frame)
                views.append(history.refresh_view(conn, asset, partition))
                stored = history.read(conn, asset, partition)  # not None: the table was just written
            added.append({"horizon": partition, "as_of": str(frame["as_of"][0]), "rows_added": count,
                          "rows_in_history": stored.height})
            context.log.info(f"{asset} {partition}: {count} new forecast row(s) in {history.TABLE} "
                             f"({stored.height} stored)")
            champion, challenger = tracking.champion(asset, partition), tracking.challenger(asset, partition)
            if challenger is None or champion is None:
                continue
            found = shadow.verdict(matured(stored, lake, asset, partition), champion["model_version"],
                                   challenger["model_version"], config.promote_after_days)
            verdicts.append({"horizon": partition, "champion": champion["model_version"],
                             "challenger": challenger["model_version"], "promoted": found.promote, "why": found.why})
            if found.promote:
                tracking.promote(asset, partition)
                context.resources.alerts.send(
                    "promotion", f"{asset.upper()} {partition}: {challenger['family']} ({challenger['model_version']}) "
                                 f"replaces {champion['family']} as champion: {found.why}",
                    severity="info", asset=asset.upper(), horizon=partition,
                    key=f"promotion:{asset}:{partition}:{challenger['model_version']}", log=context.log)
        metadata = {"uploaded": md_table(pl.DataFrame(added)), "views": dg.MetadataValue.json(views),
                    "table": history.TABLE}
        if verdicts:
            metadata["shadow_models"] = md_table(pl.DataFrame(verdicts))
        return dg.MaterializeResult(metadata=metadata)

    return _upload


PREDICTION_ASSETS = [f(a) for a in ("zl", "mes") for f in (_forecast_asset, _upload_asset)]
