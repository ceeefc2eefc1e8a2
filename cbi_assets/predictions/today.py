"""Today's forecast of one market x horizon: every family's forecast of the newest origin from its
MLflow run, and the published rows: the champion's (or the current regime's specialist's, where it
earned it) with intervals, conviction, confidence and top drivers, and a registered challenger's beside it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import Horizon, Market
from cbi_assets.ensembles.conformal import Calibration, level_name
from cbi_assets.ensembles.members import assemble, family_oof, training_origins
from cbi_assets.explain.shapley import (
    NoAttribution,
    top_drivers,
    tree_kind,
    window_length,
)
from cbi_assets.features.inputs import continuous_bars
from cbi_assets.lake import Lake
from cbi_assets.models.inputs import fold_inputs, forecast_inputs, horizon_rows, rows_per_year
from cbi_assets.models.leaderboard import RANDOM_WALK
from cbi_assets.models.registry import Budget, families
from cbi_assets.models.serving import forecast_of
from cbi_assets.models.significance import DEFAULT_LEVEL
from cbi_assets.predictions.forecast import drivers_json, history_of, published
from cbi_assets.predictions.origin import (
    LatestOrigin,
    as_timestamp,
    last_fold,
    latest_origin,
    origin_price,
    origin_regime,
    origin_state,
)
from cbi_assets.profiles import PROFILES
from cbi_assets.specialists.choice import board_of, choose_model, load_specialist
from cbi_assets.training.sets import feature_timeframe, time_key, trained_on
from resources.tracking import Tracking


def family_models(
    tracking: Tracking, market: Market, horizon: Horizon, features: list[str], log
) -> dict[str, tuple[str, object]]:
    """Every family's model from its latest MLflow run, {family: (run_id, model)}. A family without a run,
    or whose run was trained on other `features` than the training set has now, is left out with a warning."""
    models = {}
    for family in families():
        runs = tracking.family_runs(market, horizon.name, family.name, 1)
        if not runs:
            log.warning(f"{market.key} {horizon.name}: MLflow has no run of {family.name}; it does not forecast")
            continue
        model, logged = tracking.load_model(runs[0]["run_id"])
        if trained_on(logged) != tuple(features):
            log.warning(
                f"{market.key} {horizon.name}: {family.name} run {runs[0]['run_id'][:8]} was trained on other "
                "features than the training set has now; retrain it (left out)"
            )
            continue
        models[family.name] = (runs[0]["run_id"], model)
    return models


def family_forecasts(
    models: dict[str, tuple[str, object]], market: Market, horizon: Horizon, origin: LatestOrigin, budget: Budget, log
) -> dict[str, float]:
    """Every family's forecast for the origin (a log return); a non-finite one is left out with a warning."""
    shapes = {f.name: f.shape for f in families()}
    forecasts = {}
    for name, (_, model) in models.items():
        value = forecast_of(model, origin.inputs(shapes[name], budget))
        if not np.isfinite(value):
            log.warning(f"{market.key} {horizon.name}: {name} forecast {value} for {origin.time}; left out")
            continue
        forecasts[name] = value
    return forecasts


BACKGROUND = 16  # training windows a network's features are replaced with when its forecast is explained


def _drivers(model, origin: LatestOrigin, index: list[int], k: int, budget: Budget, x_row=None) -> str:
    """Top drivers of a model's forecast for the origin: TreeSHAP for a tree (`x_row`, scaled; the origin's
    tabular row by default), sampled SHAP against training windows for a network; '[]' for a model without
    features (random walk, ARIMA...)."""
    names, shown = [origin.data.features[i] for i in index], origin.raw[index]
    length = window_length(model)
    try:
        if tree_kind(model):
            x_row = origin.inputs("tabular", budget).x[0] if x_row is None else x_row
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


def specialist_forecast(specialist, folder: Path, origin: LatestOrigin, k: int) -> tuple[float, str]:
    """A regime specialist's forecast for the origin (scaled by its own training rows' scaler) and its top `k`
    drivers; `specialist` is `load_specialist(folder)`."""
    model, scaler, names = specialist
    missing = [n for n in names if n not in origin.data.features]
    if missing:
        raise ValueError(
            f"{folder}: the specialist uses features the master table lacks (first: {missing[0]}); retrain it"
        )
    index = [origin.data.features.index(n) for n in names]
    data = dataclasses.replace(origin.data, x=origin.data.x[:, index], features=tuple(names))
    x = forecast_inputs(data, origin.fold, scaler, "tabular", NO_CAP)
    shown = _drivers(model, origin, index, k, NO_CAP, x_row=x.x[0]) if k else "[]"
    return float(model.predict(x).mean[-1]), shown


NO_CAP = dataclasses.replace(PROFILES["full"].training, max_train_rows=None)  # the origin's slice is cut already


def silent_inputs(origin, catalogue: pl.DataFrame) -> list[str]:
    """The inputs (feature sources) the models were trained on of which every feature is null at the origin."""
    null = {name for name, value in zip(origin.data.features, origin.raw, strict=True) if np.isnan(value)}
    used = catalogue.filter(pl.col("name").is_in(list(origin.data.features)))
    by_source = used.group_by("source").agg(pl.col("name"))
    return sorted(source for source, names in by_source.iter_rows() if source and all(name in null for name in names))


class HorizonForecaster:
    """What one market x horizon's forecast needs besides its origin, read once from the lake and MLflow: the
    last fold, every family's model, the champion and challenger, the walk-forward history the intervals are
    calibrated on, the leaderboard. The evening forecast uses it for the newest origin; the live service for
    every closed bar.

    levels: the conformal intervals' coverage levels; min_scores: the matured walk-forward errors an
    interval needs; drivers: the top drivers kept per forecast (0: none); level: the significance rule's.
    """

    def __init__(
        self,
        lake: Lake,
        tracking: Tracking,
        market: Market,
        horizon: Horizon,
        budget: Budget,
        levels: tuple[float, ...],
        min_scores: int,
        drivers: int,
        log,
        level: float = DEFAULT_LEVEL,
    ):
        self.lake, self.market, self.horizon, self.budget, self.log = lake, market, horizon, budget, log
        self.levels, self.min_scores, self.drivers, self.level = tuple(sorted(levels)), min_scores, drivers, level
        self.key = time_key(horizon)
        parts = {"market": market, "horizon": horizon.name}
        self.champion = tracking.champion(market, horizon.name)
        if self.champion is None:
            raise dg.Failure(
                f"{market.key} {horizon.name}: no champion registered in MLflow; materialize "
                f"{market.key}/models/leaderboard"
            )
        keys = lake.read(tables.TRAINING_SET, columns=[self.key], **parts)[self.key]
        self.challenger = tracking.challenger(market, horizon.name)
        self.state = lake.read(tables.REGIME_STATE, **parts)
        try:
            self.last = last_fold(keys, lake.read(tables.FOLDS, **parts), lake.read(tables.SCALERS, **parts), budget)
            oof, missing = family_oof(lake, market, horizon.name, [f.name for f in families()])
            members = assemble(
                oof,
                training_origins(lake, market, horizon.name),
                self.state,
                self.key,
                missing,
                where=f"the {market} {horizon.name} out-of-fold forecasts",
            )
        except ValueError as error:
            raise dg.Failure(f"{market} {horizon.name}: {error}") from error
        self.models = family_models(tracking, market, horizon, self.last.features, log)
        self.history = history_of(members)
        self.board = board_of(lake, market, horizon.name, level)
        self.calibration = Calibration.of(horizon_rows(horizon), rows_per_year(horizon))
        self.catalogue = lake.feature_catalogue(tables.MASTER, market=market, timeframe=feature_timeframe(horizon))
        self._choices: dict[str, object] = {}  # regime -> the model choose_model picks (read once per regime)
        self._stale: list[str] = []
        self._quantiles: dict = {}  # the intervals' calibration, per family and matured rows (`published`)

    @property
    def versions(self) -> tuple[str | None, str | None]:
        """The registered champion's and challenger's model versions this forecaster serves."""
        return self.champion["model_version"], (self.challenger or {}).get("model_version")

    def latest_origin(self, master: pl.LazyFrame) -> LatestOrigin:
        """The newest row of `master` (the horizon's master feature table) as the last fold's test row."""
        newest = master.select(pl.col(self.key).max()).collect().item()
        day = newest.date() if isinstance(newest, dt.datetime) else newest
        sessions = settlement_days(day, day + dt.timedelta(days=550))  # past the longest horizon
        try:
            return latest_origin(self.last, master, self.market, self.horizon, sessions)
        except ValueError as error:
            raise dg.Failure(f"{self.market} {self.horizon.name}: {error}") from error

    def choice(self, regime: str):
        if regime not in self._choices:
            chosen = choose_model(self.lake, self.market, self.horizon.name, regime, self.level)
            self.log.info(f"{self.market.key} {self.horizon.name}: {chosen.why}")
            specialist = load_specialist(chosen.path) if chosen.source == "specialist" else None
            self._choices[regime] = (chosen, specialist)
        return self._choices[regime]

    def forecast(self, origin: LatestOrigin, price: float) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the published rows: the champion's, and the challenger's when one is registered; every family's
        forecast) for `origin`, whose front-contract close is `price`."""
        market, horizon = self.market, self.horizon
        now_state, regime = origin_state(origin, self.state), origin_regime(origin)
        forecasts = family_forecasts(self.models, market, horizon, origin, self.budget, self.log)
        every = list(range(len(origin.data.features)))
        stale = silent_inputs(origin, self.catalogue)
        if stale and stale != self._stale:  # said once while the same inputs stay silent (origin after origin)
            self.log.warning(
                f"{market.key} {horizon.name}: at {origin.time} no value of {', '.join(stale)} (stale or ended)"
            )
        self._stale = stale

        def row(role: str, registered: dict) -> dict:
            family = registered["family"]
            if family not in forecasts:
                raise dg.Failure(
                    f"{market.key} {horizon.name}: the {role} {family} ({registered['model_version']}) could "
                    f"not forecast {origin.time} (see the warnings above); retrain it or register another"
                )
            out = {
                "model_version": registered["model_version"],
                "run_id": registered["run_id"],
                "family": family,
                "role": role,
                "source": role,
            }
            chosen, specialist = self.choice(regime) if role == "champion" else (None, None)
            if specialist is not None:
                point, shown = specialist_forecast(specialist, chosen.path, origin, self.drivers)
                out |= {
                    "model_version": f"specialist/{regime}/{chosen.run_id[:8]}",
                    "run_id": chosen.run_id,
                    "family": chosen.model,
                    "source": "specialist",
                    "edge": f"beats the random walk on the {regime} folds",
                }
            else:
                point = forecasts[family]
                out["edge"] = edge_shown(self.board, family)
                shown = (
                    _drivers(self.models[family][1], origin, every, self.drivers, self.budget) if self.drivers else "[]"
                )
            # A specialist's interval is calibrated on the champion it stands in for: its own regime folds are few.
            values = published(
                point,
                family,
                forecasts,
                self.history,
                origin.time,
                price,
                origin.scale,
                self.levels,
                self.min_scores,
                self.calibration,
                self._quantiles,
            )
            return {
                "asset": market.symbol,
                "horizon": horizon.name,
                "as_of": as_timestamp(origin.time),
                "target_time": origin.target,
                **out,
                **values,
                "regime": regime,
                "state": now_state,
                "drivers": shown,
                # Inputs the models saw nothing of at the origin: a stale source reads null, never a constant.
                "stale_inputs": ", ".join(stale),
            }

        rows = [row("champion", self.champion)]
        if self.challenger is not None:
            rows.append(row("challenger", self.challenger))
        frame = pl.DataFrame(rows, schema_overrides=row_schema(self.levels), infer_schema_length=None)
        table = pl.DataFrame(
            {
                "family": list(forecasts),
                "forecast_return": list(forecasts.values()),
                "run_id": [self.models[f][0] for f in forecasts],
            }
        ).with_columns((pl.col("forecast_return").exp() * price).alias("forecast_price"))
        return frame, table


def forecast_horizon(
    lake: Lake,
    tracking: Tracking,
    market: Market,
    horizon: Horizon,
    budget: Budget,
    levels: tuple[float, ...],
    min_scores: int,
    drivers: int,
    log,
    level: float = DEFAULT_LEVEL,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the published rows; every family's forecast) for the newest origin of one market x horizon's master
    table (HorizonForecaster's arguments)."""
    forecaster = HorizonForecaster(lake, tracking, market, horizon, budget, levels, min_scores, drivers, log, level)
    origin = forecaster.latest_origin(lake.scan(tables.MASTER, market=market, timeframe=feature_timeframe(horizon)))
    bars = (
        continuous_bars(lake, (market,))[market.key]
        if origin.key == "date"
        else lake.scan(tables.BARS, timeframe=feature_timeframe(horizon))
        .select("ts", "close")
        .filter(pl.col("ts") == origin.time)
        .collect()
    )  # one bar of a table of millions
    try:
        price = origin_price(bars, origin)
    except ValueError as error:
        raise dg.Failure(f"{market} {horizon.name}: {error}") from error
    return forecaster.forecast(origin, price)


NO_EDGE = "no edge over the random walk"


def edge_shown(board: pl.DataFrame, family: str) -> str:
    """What the published row says of its model's edge over the random walk, from the leaderboard."""
    if family == RANDOM_WALK:
        return NO_EDGE
    found = board.filter(pl.col("family") == family)
    if found.is_empty():
        return f"{family} is not on the leaderboard: its edge is unknown"
    row = found.row(0, named=True)
    tested = f"DM {row['dm_statistic'] or float('nan'):+.2f}, p {row['dm_p_value'] or float('nan'):.4f}"
    if row["beats_random_walk"]:
        return f"beats the random walk ({tested}; recent third p {row['recent_dm_p_value']:.4f})"
    return f"no significant edge over the random walk ({tested})"


def row_schema(levels: tuple[float, ...]) -> dict:
    bounds = {
        f"{side}_{level_name(v)}{price}": pl.Float64
        for v in levels
        for side in ("lower", "upper")
        for price in ("", "_price")
    }
    return {
        "as_of": pl.Datetime("us", "UTC"),
        "target_time": pl.Datetime("us", "UTC"),
        "forecast_return": pl.Float64,
        "forecast_price": pl.Float64,
        "price": pl.Float64,
        "conviction": pl.Float64,
        "confidence": pl.Float64,
        "spread": pl.Float64,
        "typical_move": pl.Float64,
        **bounds,
    }
