"""SHAP explanations: tree SHAP adds up to the forecast, the feature that drives a synthetic target
ranks first, importance drift finds a swapped driver (directly and between two MLflow trainings),
and the Dagster asset on the sample lake stores SHAP values, drivers and models.drivers."""

import datetime as dt
import pickle
import time

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.catalogue import ZL
from cbi_assets.explain.assets import EXPLAIN_ASSETS
from cbi_assets.explain.explained import explain_family
from cbi_assets.explain.importance import importance, importance_drift
from cbi_assets.explain.rows import explained_rows
from cbi_assets.explain.shapley import (
    NoAttribution,
    top_drivers,
    tree_attribution,
    window_attribution,
)
from cbi_assets.models import trees
from cbi_assets.models.inputs import TrainingArrays, fold_inputs
from cbi_assets.models.references import RandomWalk
from cbi_assets.models.registry import Inputs, families
from cbi_assets.profiles import PROFILES
from cbi_assets.training.folds import FoldPlan, walk_forward
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import feature_columns, fold_scalers
from resources import Tracking

NAMES = tuple(f"x{i}" for i in range(6))
BUDGET = PROFILES["sample"].training
PLAN = PROFILES["sample"].explain


def _inputs(x: np.ndarray, y: np.ndarray | None) -> Inputs:
    return Inputs(
        x=x, y=y, weight=np.ones(len(x)), returns=np.zeros(len(x)), horizon=5, season=252, feature_names=NAMES
    )


def _synthetic(driver: int, n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 6 features whose target moves most with `driver`, then less and less with the features
    after it (cyclically), and not at all with the one before it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    weights = np.roll([0.01, 0.005, 0.0025, 0.0012, 0.0006, 0.0], driver)
    return x, x @ weights + 0.0003 * rng.normal(size=n)


@pytest.mark.parametrize("fit", [trees.lightgbm, trees.lightgbm_dart, trees.xgboost], ids=lambda f: f.__name__)
def test_tree_shap_adds_up_to_the_forecast(fit):
    x, y = _synthetic(driver=2)
    model = pickle.loads(pickle.dumps(fit(_inputs(x, y), BUDGET)))  # as MLflow gives it back
    held = np.random.default_rng(1).normal(size=(100, len(NAMES))).astype(np.float32)
    found = tree_attribution(model, held, NAMES)
    forecast = model.predict(_inputs(held, None)).mean
    assert np.ptp(forecast) > 1e-3  # the model learned something to explain
    assert found.shap.shape == (100, len(NAMES))
    np.testing.assert_allclose(
        found.base + found.shap.sum(axis=1), forecast, rtol=1e-5, atol=1e-5 * np.abs(forecast).max()
    )


def test_the_feature_that_drives_the_target_ranks_first():
    x, y = _synthetic(driver=3)
    model = trees.lightgbm(_inputs(x, y), BUDGET)
    row = np.array([0.1, -0.2, 0.0, 2.5, 0.3, -0.1], dtype=np.float32)  # far up on the driver
    up = top_drivers(model, row, NAMES, k=3)
    assert up.columns == ["rank", "feature", "value", "shap", "sign"]
    assert up["rank"].to_list() == [1, 2, 3]
    assert up.row(0, named=True) | {"shap": None} == {"rank": 1, "feature": "x3", "value": 2.5, "shap": None, "sign": 1}
    assert (up["shap"].abs().diff().drop_nulls() <= 0).all()  # largest |SHAP| first
    down = top_drivers(model, row * np.array([1, 1, 1, -1, 1, 1], dtype=np.float32), NAMES, k=3)
    assert down["feature"][0] == "x3" and down["sign"][0] == -1 and down["shap"][0] < 0
    assert importance(tree_attribution(model, x[:300], NAMES))["feature"].head(2).to_list() == ["x3", "x4"]


def test_a_model_without_features_has_no_attribution():
    with pytest.raises(NoAttribution, match="no feature inputs to attribute"):
        top_drivers(RandomWalk(), np.zeros(len(NAMES)), NAMES)


def test_window_shap_is_exact_for_an_additive_network():
    """A network that adds each feature's last value (weighted) and feature 0's window mean: its Shapley
    values against a background are known in closed form."""
    rng = np.random.default_rng(3)
    weights = np.array([0.5, -1.0, 0.0, 2.0, 0.25])

    def network(w: np.ndarray) -> np.ndarray:
        return w[:, -1, :].astype(np.float64) @ weights + 0.3 * w[:, :, 0].mean(axis=1)

    windows = rng.normal(size=(3, 4, 5)).astype(np.float32)
    background = rng.normal(size=(6, 4, 5)).astype(np.float32)
    found = window_attribution(network, windows, background, NAMES[:5])
    expected = weights * (windows[:, -1, :] - background[:, -1, :].mean(axis=0))
    expected[:, 0] += 0.3 * (windows[:, :, 0].mean(axis=1) - background[:, :, 0].mean())
    np.testing.assert_allclose(found.shap, expected, atol=1e-5)
    np.testing.assert_allclose(found.base + found.shap.sum(axis=1), network(windows), atol=1e-5)


def test_importance_drift_finds_a_swapped_driver():
    rows = np.random.default_rng(2).normal(size=(300, len(NAMES))).astype(np.float32)

    def trained(driver: int, seed: int) -> pl.DataFrame:
        model = trees.lightgbm(_inputs(*_synthetic(driver, seed=seed)), BUDGET)
        return importance(tree_attribution(model, rows, NAMES))

    before = trained(driver=0, seed=0)
    swapped, movers = importance_drift(before, trained(driver=1, seed=1))
    assert (swapped["top_previous"], swapped["top_latest"]) == ("x0", "x1")
    assert set(movers["feature"].head(2)) == {"x0", "x1"}
    change = dict(movers.select("feature", "change").iter_rows())
    assert change["x0"] < 0 < change["x1"]
    assert swapped["rank_correlation"] < 0.5  # x0 fell from first to last
    # The same relation retrained on other data keeps its driver and its ranking.
    kept, _ = importance_drift(before, trained(driver=0, seed=5))
    assert kept["top_latest"] == "x0" and kept["rank_correlation"] > 0.9


# --- The latest two trainings, fetched through MLflow -------------------------------------------


def _training_set(driver: int, rows: int = 600) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A small daily ZL 1w training set whose label moves with feature x<driver>, its folds and scalers."""
    rng = np.random.default_rng(driver)
    days = pl.date_range(dt.date(2015, 1, 1), dt.date(2020, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    x = rng.normal(size=(rows, len(NAMES)))
    forward = 0.01 * x[:, driver] + 0.0005 * rng.normal(size=rows)
    frame = pl.DataFrame(
        {
            "date": days.head(rows),
            "label_end": days.slice(5, rows),
            "forward_return": forward,
            "forward_price": 50 * np.exp(forward),
            "regime": ["r"] * rows,
            "weight": np.ones(rows),
            "zl_1d_ret_1": 0.01 * rng.normal(size=rows),
            **{n: x[:, i] for i, n in enumerate(NAMES)},
        }
    )
    folds = walk_forward(frame["date"], frame["label_end"], FoldPlan(3, "expanding", embargo=5))
    return frame, folds, fold_scalers(frame, folds, feature_columns(frame))


def test_drift_between_the_last_two_trainings_comes_from_mlflow(tmp_path):
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"))
    horizon = ZL.horizon("1w")
    scores = pl.DataFrame({"scope": ["overall"], "group": ["all"], "rows": [1], "mase": [1.0]})
    logged = []
    for driver in (0, 1):  # the desk's data changed: the second training learned another driver
        frame, folds, scalers = _training_set(driver)
        data = TrainingArrays.of(frame, ZL, horizon)
        last = folds.row(-1, named=True)
        scaler = RobustScaler.from_frame(scalers.filter(pl.col("fold") == last["fold"]).drop("fold"))
        train, _ = fold_inputs(data, last, scaler, "tabular", BUDGET)
        folder = tmp_path / f"model_{driver}"
        folder.mkdir()
        (folder / "model.pkl").write_bytes(pickle.dumps(trees.lightgbm(train, BUDGET)))
        logged.append(
            tracking.log_family(
                ZL,
                "1w",
                "lightgbm",
                params={},
                scores=scores,
                model_dir=folder,
                features=list(data.features),
                data_hash=str(driver),
                tags={},
            )
        )
        time.sleep(0.01)  # runs are ordered by start time
    master = tmp_path / "master_1d.parquet"
    more = frame.select("date", *data.features).tail(1).with_columns(pl.col("date") + dt.timedelta(days=3))
    pl.concat([frame.select("date", *data.features), more]).write_parquet(master)

    runs = [r["run_id"] for r in tracking.family_runs(ZL, "1w", "lightgbm", 2)]
    assert runs == logged[::-1]  # newest first
    rows = explained_rows(frame, folds, scalers, pl.scan_parquet(master), data, "date", 500, 1)
    found = explain_family(tracking, ZL, horizon, "lightgbm", runs, rows, BUDGET, PLAN, champion=False)
    assert found.drift["previous_run"] == logged[0]
    assert (found.drift["top_previous"], found.drift["top_latest"]) == ("x0", "x1")
    assert set(found.frames["drift"]["feature"].head(2)) == {"x0", "x1"}
    drivers = found.frames["drivers"]
    assert drivers.filter(pl.col("origin") == "latest")["date"].unique().to_list() == [more["date"][0]]
    assert drivers.filter(pl.col("rank") == 1)["feature"].value_counts().sort("count")["feature"][-1] == "x1"

    only = explain_family(tracking, ZL, horizon, "lightgbm", runs[:1], rows, BUDGET, PLAN, champion=False)
    assert "one training so far" in only.drift["drift"] and "drift" not in only.frames


# --- The Dagster asset on the sample lake -------------------------------------------------------


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
def test_zl_explanations_materialize(zl_model_lake):
    _, resources = zl_model_lake
    lake, tracking = resources["lake"], resources["tracking"]
    asset = next(a for a in EXPLAIN_ASSETS if a.key.path[0] == ZL.key)
    result = dg.materialize([asset], resources=resources, partition_key="1w")
    assert result.success
    parts = {"market": ZL, "horizon": "1w"}
    champion = tracking.champion(ZL, "1w")
    tree_families = {f.name for f in families("tree")}

    summary = lake.read(tables.EXPLAIN_SUMMARY, **parts)
    assert set(summary["family"]) == tree_families | {champion["family"]}
    assert summary.filter(pl.col("champion"))["family"].to_list() == [champion["family"]]
    explained = set(summary.filter(pl.col("top_feature").is_not_null())["family"])
    assert explained >= tree_families

    # LightGBM's last-fold forecasts rebuilt from SHAP are its stored out-of-fold forecasts: the rows
    # were scaled as the fold's and the model is the one MLflow keeps.
    drivers = lake.read(tables.EXPLANATION, **parts, part="drivers", family="lightgbm")
    shap = lake.read(tables.EXPLANATION, **parts, part="shap", family="lightgbm")
    per_row = drivers.group_by("date", "origin").agg(pl.col("base", "forecast").first())
    added = shap.group_by("date").agg(pl.col("shap").sum()).join(per_row, on="date")
    np.testing.assert_allclose(added["base"] + added["shap"], added["forecast"], rtol=1e-6, atol=1e-9)
    oof = lake.read(tables.OOF, **parts, family="lightgbm")
    last_fold = oof.filter(pl.col("fold") == oof["fold"].max())
    same = per_row.filter(pl.col("origin") == "fold").join(
        last_fold.select("date", pl.col("forecast").alias("oof")), on="date"
    )
    assert same.height == last_fold.height
    np.testing.assert_allclose(same["forecast"], same["oof"], rtol=1e-6, atol=1e-9)
    assert shap.height == per_row.height * shap["feature"].n_unique()

    newest = lake.read(tables.MASTER, columns=["date"], market=ZL, timeframe="1d")["date"].max()
    assert per_row.filter(pl.col("origin") == "latest")["date"].to_list() == [newest]
    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        table = conn.sql("select * from models.drivers where asset = 'ZL' and horizon = '1w'").pl()
    assert set(table["family"]) == explained
    assert table["date"].unique().to_list() == [newest] and table["ts"].is_null().all()
    assert set(table.filter(pl.col("champion"))["family"]) <= {champion["family"]}
    assert table.group_by("family").agg(pl.col("rank").min())["rank"].to_list() == [1] * len(explained)

    metadata = result.asset_materializations_for_node(asset.op.name)[0].metadata
    assert "data:image/png;base64" in metadata["shap_summary_1w"].value
    assert "data:image/png;base64" in metadata["latest_forecast_1w"].value
    assert metadata["table"].value == "models.drivers"
    lightgbm = summary.filter(pl.col("family") == "lightgbm").row(0, named=True)
    if len(tracking.family_runs(ZL, "1w", "lightgbm", 2)) == 1:
        assert lightgbm["drift"].startswith("one training so far")
    else:  # another test retrained the trees on this lake first
        assert lightgbm["previous_run"] and lightgbm["rank_correlation"] is not None
