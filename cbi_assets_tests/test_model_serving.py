"""Models a team can serve: a family's MLflow model loads with `mlflow.pyfunc.load_model` and, from a frame of
master feature rows (unscaled, in time order), forecasts what the forecast path computes for the last row.

On the sample lake: each registered champion through `models:/<name>@champion` against the forecast asset's
published row, and every family's run through `runs:/<run_id>/model` against its forecast beside it. On a small
synthetic intraday table (the fast loop): a tree, a network and a return-series family, with UTC bar times.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow.exceptions import MlflowException

from cbi_assets import lake as tables
from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import MARKETS, MES, ZL
from cbi_assets.explain.shapley import window_predictor
from cbi_assets.lake import Lake
from cbi_assets.models import serving
from cbi_assets.models.inputs import TrainingArrays, fold_inputs, horizon_rows, return_column, season_rows
from cbi_assets.models.registry import Budget, families
from cbi_assets.predictions.assets import PREDICTION_ASSETS
from cbi_assets.predictions.origin import last_fold, latest_origin
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import feature_columns, feature_timeframe, time_key
from resources.tracking import Tracking, model_name

FLAVOURS = {"lightgbm": "lightgbm", "lightgbm_dart": "lightgbm", "xgboost": "xgboost", "prophet": "prophet"}


@pytest.fixture()
def registry(monkeypatch):
    """Point MLflow's own URIs (what a team's serving code uses) at a store; quiet its download bars."""
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    def use(uri: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri

    return use


def _frame(lake: Lake, market, horizon) -> pd.DataFrame:
    """The master feature rows as the training set holds them (its time key and features), as pandas."""
    parts = {"market": market, "horizon": horizon.name}
    features = feature_columns(lake.read(tables.TRAINING_SET, **parts).head(0))
    master = lake.read(tables.MASTER, market=market, timeframe=feature_timeframe(horizon))
    return master.select(time_key(horizon), *features).sort(time_key(horizon)).to_pandas()


@pytest.fixture(scope="module")
def published(zl_model_lake):
    """Every market x horizon with a registered champion, its forecast published by the forecast asset:
    {(market, horizon): (published rows, every family's forecast, master frame)}."""
    _, resources = zl_model_lake
    return {
        (market.symbol, horizon.name): (
            *_forecast(resources, market, horizon.name),
            _frame(resources["lake"], market, horizon),
        )
        for market in MARKETS.values()
        for horizon in market.horizons
        if resources["tracking"].champion(market, horizon.name) is not None
    }


def _forecast(resources, market, horizon: str):
    """The forecast asset of `market` materialized for `horizon`: (published rows, every family's forecast)."""
    forecast = [a for a in PREDICTION_ASSETS if a.key == tables.FORECAST.asset_key(market=market)]
    tags = {"dagster/asset_partition_range_start": horizon, "dagster/asset_partition_range_end": horizon}
    assert dg.materialize(forecast, resources=resources, tags=tags).success
    parts = {"market": market, "horizon": horizon}
    return resources["lake"].read(tables.FORECAST, **parts), resources["lake"].read(tables.FAMILY_FORECASTS, **parts)


def _serves_the_champion(tracking: Tracking, market, horizon: str, rows, table, frame) -> str:
    """Check the registered champion, loaded by MLflow alone, forecasts what the forecast asset published
    from `frame`; its family."""
    champion = rows.filter(pl.col("role") == "champion").row(0, named=True)
    registered = tracking.champion(market, horizon)
    model = mlflow.pyfunc.load_model(f"models:/{model_name(market, horizon)}@champion")
    assert model.metadata.signature is not None

    served = model.predict(frame).iloc[0]
    assert served[time_key(market.horizon(horizon))].date() == champion["as_of"].date()
    # The champion family's own forecast is what the registry serves; the published row is that forecast
    # unless the current regime's specialist earned the row (a specialist is not a registered model).
    own = table.filter(pl.col("family") == registered["family"]).row(0, named=True)
    assert own["run_id"] == registered["run_id"]  # today's forecast read the champion's own run
    assert served[serving.OUTPUT] == pytest.approx(own["forecast_return"], rel=1e-9, abs=1e-12)
    if champion["source"] == "champion":
        assert champion["family"] == registered["family"]
        assert served[serving.OUTPUT] == pytest.approx(champion["forecast_return"], rel=1e-9, abs=1e-12)
    return registered["family"]


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
def test_each_champion_serves_the_published_forecast(zl_model_lake, published, registry):
    _, resources = zl_model_lake
    registry(resources["tracking"].tracking_uri)
    assert ("ZL", "1w") in published  # the lake's one trained horizon
    for (symbol, horizon), (rows, table, frame) in published.items():
        _serves_the_champion(resources["tracking"], MARKETS[symbol], horizon, rows, table, frame)


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
def test_a_crowned_tree_serves_the_published_forecast(zl_model_lake, published, registry, tmp_path):
    """The sample's champion is often the random walk (a forecast of zero): crown LightGBM in a copy of the
    registry, publish again, and serve it."""
    _, resources = zl_model_lake
    shutil.copy(resources["tracking"].tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"))
    tracking.register(ZL, "1w", tracking.family_runs(ZL, "1w", "lightgbm", 1)[0]["run_id"], "lightgbm", "champion")
    rows, table = _forecast({**resources, "tracking": tracking}, ZL, "1w")
    registry(tracking.tracking_uri)
    assert _serves_the_champion(tracking, ZL, "1w", rows, table, published[("ZL", "1w")][2]) == "lightgbm"
    assert rows.filter(pl.col("role") == "champion")["forecast_return"][0] != 0.0


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
@pytest.mark.filterwarnings("ignore:The 'convert_dates' keyword")  # Prophet's own JSON reader, on pandas 3
def test_every_family_run_serves_its_forecast_with_its_own_flavour_inside(zl_model_lake, published, registry):
    _, resources = zl_model_lake
    registry(resources["tracking"].tracking_uri)
    _, table, frame = published[("ZL", "1w")]
    kinds, shapes = {f.name: f.kind for f in families()}, {f.name: f.shape for f in families()}
    assert set(table["family"]) == set(kinds)  # every family forecast today, so every family is checked
    horizon, budget = ZL.horizon("1w"), resources["profile"].load().training
    origin = _origin(resources["lake"], budget, horizon)

    import mlflow.keras
    import mlflow.lightgbm
    import mlflow.prophet
    import mlflow.xgboost

    for family, expected, run_id in table.select("family", "forecast_return", "run_id").iter_rows():
        uri = f"runs:/{run_id}/model"
        info = mlflow.models.get_model_info(uri)
        assert info.signature.inputs.input_names()[0] == "date" and "python_function" in info.flavors
        model = mlflow.pyfunc.load_model(uri)
        served = model.predict(frame)
        assert served[serving.OUTPUT][0] == pytest.approx(expected, rel=1e-9, abs=1e-12), family

        native = f"{uri}/{_data_path(info)}/{serving.NATIVE}"
        x = origin.inputs(shapes[family], budget).x
        if kinds[family] == "neural":  # the network is its Keras flavour
            network = mlflow.keras.load_model(native)
            assert float(window_predictor(network)(x)[-1]) == pytest.approx(expected, rel=1e-6, abs=1e-9)
        elif FLAVOURS.get(family) == "lightgbm":
            booster = mlflow.lightgbm.load_model(native)
            assert float(booster.predict(x)[-1]) == pytest.approx(expected, rel=1e-9, abs=1e-12)
        elif FLAVOURS.get(family) == "xgboost":
            import xgboost as xgb

            booster = mlflow.xgboost.load_model(native)
            value = booster.predict(xgb.DMatrix(x))[-1]  # the saved booster holds the best round's trees only
            assert float(value) == pytest.approx(expected, rel=1e-6, abs=1e-9)
        elif FLAVOURS.get(family) == "prophet":
            assert type(mlflow.prophet.load_model(native)).__name__ == "Prophet"
        else:  # a reference or statistical family: only the pyfunc model
            assert len(info.flavors) == 1

    # The served model reads the frame: its last row is the origin (a day earlier forecasts as the forecast path
    # would have that day), and the schema is enforced.
    before = _origin(resources["lake"], budget, horizon, before=origin.time)
    for family in ("lightgbm", "ets", "lstm"):
        model = mlflow.pyfunc.load_model(f"runs:/{_run_of(table, family)}/model")
        earlier = model.predict(frame.iloc[:-1]).iloc[0]
        expected = serving.forecast_of(model.get_raw_model(), before.inputs(shapes[family], budget))
        assert earlier["date"] == pd.Timestamp(before.time) < pd.Timestamp(origin.time)
        assert earlier[serving.OUTPUT] == pytest.approx(expected, rel=1e-9, abs=1e-12), family
    with pytest.raises(MlflowException, match=re.escape(frame.columns[5])):
        model.predict(frame.drop(columns=[frame.columns[5]]))


def _run_of(table: pl.DataFrame, family: str) -> str:
    return table.filter(pl.col("family") == family)["run_id"][0]


def _data_path(info) -> str:
    return info.flavors["python_function"]["data"]


def _origin(lake: Lake, budget: Budget, horizon, before: dt.date | None = None):
    """The forecast path's newest origin of ZL `horizon` (the newest before `before`, when given)."""
    parts = {"market": ZL, "horizon": horizon.name}
    master = lake.scan(tables.MASTER, market=ZL, timeframe="1d")
    if before is not None:
        master = master.filter(pl.col("date") < before)
    newest = master.select(pl.col("date").max()).collect().item()
    keys = lake.read(tables.TRAINING_SET, columns=["date"], **parts)["date"]
    sessions = settlement_days(newest, newest + dt.timedelta(days=550))
    folds, scalers = lake.read(tables.FOLDS, **parts), lake.read(tables.SCALERS, **parts)
    return latest_origin(last_fold(keys, folds, scalers, budget), master, ZL, horizon, sessions)


# --- The fast loop: a synthetic intraday table ------------------------------------------------------

ROWS, LATER, FEATURES = 320, 12, 6
BUDGET = Budget(epochs=2, patience=1, boost_rounds=30, sequence_length=8, batch_size=64, max_train_rows=150, threads=1)
SERVED = ("lightgbm", "ets", "seasonal_naive", "lstm")  # a tree, a return-series family, a reference, a network


def _intraday():
    """A MES 5-minute master table (UTC bar times), a training set of its first ROWS - LATER rows with
    two purged folds and their scalers: (master, training set, folds, scalers)."""
    horizon = MES.horizon("5min")
    rng = np.random.default_rng(5)
    ts = pl.Series(
        "ts", [dt.datetime(2024, 6, 3, 13, 30, tzinfo=dt.UTC) + dt.timedelta(minutes=5 * i) for i in range(ROWS)]
    ).cast(pl.Datetime("us", "UTC"))
    returns = 0.001 * rng.standard_normal(ROWS)
    features = {f"x{j}": rng.standard_normal(ROWS) for j in range(FEATURES)}
    master = pl.DataFrame(
        {"ts": ts, return_column(MES, horizon): returns, **features, "other": np.arange(ROWS)}
    ).with_columns(pl.exclude("ts", "other").cast(pl.Float32))
    learnable = 0.002 * features["x0"] + 0.0005 * rng.standard_normal(ROWS)  # a tree finds x0
    frame = master.head(ROWS - LATER).with_columns(
        pl.Series("forward_return", learnable[: ROWS - LATER]), pl.lit(1.0).alias("weight")
    )
    folds = pl.DataFrame(
        {"fold": [0, 1], "train_lo": [0, 0], "train_hi": [179, 239], "test_lo": [181, 241], "test_hi": [239, 307]}
    )
    names = [c for c in master.columns if c not in ("ts", "other")]
    scalers = pl.concat(
        RobustScaler.fit(frame.slice(0, hi + 1), names).to_frame().with_columns(pl.lit(fold).alias("fold"))
        for fold, hi in folds.select("fold", "train_hi").iter_rows()
    )
    return horizon, master, frame, folds, scalers


def test_served_intraday_models_forecast_as_the_forecast_path_does(tmp_path):
    horizon, master, frame, folds, scalers = _intraday()
    names = [c for c in master.columns if c not in ("ts", "other")]
    data = TrainingArrays(
        x=frame.select(names).to_numpy().astype(np.float32),
        y=frame["forward_return"].to_numpy(),
        weight=frame["weight"].to_numpy(),
        returns=frame[return_column(MES, horizon)].cast(pl.Float64).to_numpy(),
        features=tuple(names),
        horizon=horizon_rows(horizon),
        season=season_rows(horizon),
    )
    last = last_fold(frame["ts"], folds, scalers, BUDGET)
    assert last.first == frame["ts"][239 + 1 - BUDGET.max_train_rows]  # the cap moves the first training row
    origin = latest_origin(last, master.lazy(), MES, horizon, [])
    assert origin.time == master["ts"][-1]
    # MLflow's datetime type has no time zone: bar times go in as naive UTC, and extra columns are ignored.
    given = master.with_columns(pl.col("ts").dt.replace_time_zone(None)).to_pandas()

    chosen = [f for f in families() if f.name in SERVED]
    assert sorted(f.name for f in chosen) == sorted(SERVED)
    for family in chosen:
        train, _ = fold_inputs(data, folds.row(-1, named=True), last.scaler, family.shape, BUDGET)
        fitted = family.fit(train, BUDGET)
        folder = serving.save(tmp_path / family.name, fitted, family, MES, horizon, last, BUDGET)
        model = mlflow.pyfunc.load_model(str(folder))
        # The forecast path: the stored model as `Tracking.load_model` reads it, on the origin's inputs.
        expected = serving.forecast_of(serving.fitted(folder), origin.inputs(family.shape, BUDGET))
        served = model.predict(given).iloc[0]
        assert served["ts"] == pd.Timestamp(origin.time) and np.isfinite(expected)
        assert served[serving.OUTPUT] == pytest.approx(expected, rel=1e-9, abs=1e-12), family.name
        # Rows before the last fold's first training row change nothing; the origin's own row does, and a
        # return-series family refuses a frame that starts after that row (its history would be cut short).
        first = int(master["ts"].search_sorted(last.first))
        assert model.predict(given.iloc[first // 2 :]).iloc[0][serving.OUTPUT] == served[serving.OUTPUT]
        if family.shape == "series":
            with pytest.raises(ValueError, match="after the last fold's first training row"):
                model.predict(given.iloc[first + 1 :])
        if family.name == "lightgbm":
            moved = given.copy()
            moved.loc[moved.index[-1], names] = moved.loc[moved.index[-1], names] + 3.0
            assert model.predict(moved).iloc[0][serving.OUTPUT] != pytest.approx(served[serving.OUTPUT], abs=1e-12)
