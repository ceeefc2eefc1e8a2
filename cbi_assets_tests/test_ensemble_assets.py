"""The ensemble asset materialized by Dagster on the sample lake: ensembles stored beside the families,
scored on the same folds, intervals with coverage in the warehouse, and plots in the metadata."""

import dagster as dg
import duckdb
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.catalogue import ZL
from cbi_assets.ensembles.assets import ENSEMBLE_ASSETS
from cbi_assets.ensembles.conformal import Calibration
from cbi_assets.ensembles.forecasts import ENSEMBLES, forecast_at
from cbi_assets.models.evaluation import METRICS

pytestmark = pytest.mark.integration


@pytest.mark.xdist_group("feature_lake")
def test_zl_ensemble_materializes(zl_model_lake):
    _, resources = zl_model_lake
    lake = resources["lake"]
    zl = [a for a in ENSEMBLE_ASSETS if a.key.path[0] == ZL.key]
    one_week = {"dagster/asset_partition_range_start": "1w", "dagster/asset_partition_range_end": "1w"}
    result = dg.materialize(zl, resources={k: resources[k] for k in ("lake", "warehouse", "profile")}, tags=one_week)
    assert result.success

    parts = {"market": ZL, "horizon": "1w"}
    random_walk = lake.read(tables.OOF, **parts, family="random_walk")
    oof = {name: lake.read(tables.ENSEMBLE_OOF, **parts, name=name) for name in ENSEMBLES}
    blend = oof["blend"]
    assert set(blend["fold"]) < set(random_walk["fold"]) and 0 not in set(blend["fold"])
    for frame in oof.values():  # the families' schema, on the same rows for every ensemble
        assert frame.columns == random_walk.columns and frame["date"].equals(blend["date"])
        assert frame["forecast"].is_finite().all()
    scores = lake.read(tables.ENSEMBLE_METRICS, **parts, name="blend")
    assert set(METRICS) <= set(scores.columns)
    assert scores.filter(pl.col("scope") == "fold").height == blend["fold"].n_unique()

    table = lake.read(tables.INTERVALS, **parts)
    assert table["date"].equals(blend["date"]) and table["forecast"].equals(blend["forecast"])
    have = table.filter(pl.col("lower_90").is_not_null())
    assert have.height > 0
    assert (have["lower_90"] <= have["lower_80"]).all() and (have["lower_80"] < have["forecast"]).all()
    assert (have["forecast"] < have["upper_80"]).all() and (have["upper_80"] <= have["upper_90"]).all()
    assert (have["lower_90_price"] < have["forecast_price"]).all() and have["quantile_lower"].is_not_null().all()
    assert table["conviction"].is_between(0, 1).all() and have["confidence"].is_between(0, 1).all()
    assert set(table["state"]) <= {"calm", "normal", "stressed", "crisis", "unknown"}

    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        boards = conn.sql("select * from models.ensembles where asset = 'ZL' and horizon = '1w'").pl()
        coverage = conn.sql("select * from models.coverage where asset = 'ZL' and horizon = '1w'").pl()
    assert set(boards["ensemble"]) == set(ENSEMBLES)
    blend_row = boards.filter(pl.col("ensemble") == "blend").row(0, named=True)
    assert blend_row["mase"] == pytest.approx(scores.filter(pl.col("scope") == "overall")["mase"][0])
    assert blend_row["random_walk_mase"] == pytest.approx(1.0) and blend_row["best_family_mase"] <= 1.0
    overall = coverage.filter(pl.col("scope") == "overall")
    assert {("conformal", 0.8), ("conformal", 0.9), ("lightgbm_quantile", 0.8)} <= set(
        overall.select("method", "level").iter_rows()
    )
    assert overall.filter(pl.col("method") == "conformal")["rows"].to_list() == [have.height] * 2
    assert set(coverage["scope"]) == {"overall", "regime", "state"}

    metadata = result.asset_materializations_for_node(zl[0].op.name)[0].metadata
    assert {"against_best_family", "coverage", "coverage_plot", "fan_1w", "missing_families"} <= set(metadata)
    assert "data:image/png;base64" in metadata["coverage_plot"].value and "data:image" in metadata["fan_1w"].value
    assert "| blend" in metadata["against_best_family"].value

    # The prediction layer's call for a new origin, from the stored tables only.
    members = lake.read(tables.MEMBERS, **parts)
    last = members.row(-1, named=True)
    latest = forecast_at(
        {n: last[n] for n in ("random_walk", "lightgbm", "xgboost", "arima")},
        last["state"],
        last["label_end"],
        price=50.0,
        scale=float(have["scale"][-1]),
        members=members,
        history=table,
        calibration=Calibration.of(5, 252),
    )  # ZL 1w: 5 sessions, 252 a year
    assert latest["lower_90"] < latest["lower_80"] < latest["forecast"] < latest["upper_80"] < latest["upper_90"]
    assert 0 <= latest["conviction"] <= 1 and 0 <= latest["confidence"] <= 1
    assert sum(latest["weights"].values()) == pytest.approx(1.0)
