"""Model assets materialized by Dagster on the sample lake: every family walks the purged folds,
MLflow records a run per family, and the leaderboard crowns a champion in the registry."""

import duckdb
import polars as pl
import pytest
from mlflow import MlflowClient

from cbi_assets import lake as tables
from cbi_assets.catalogue import ZL
from cbi_assets.models.registry import KINDS, families
from resources.tracking import experiment_name, model_name

pytestmark = pytest.mark.integration


@pytest.mark.xdist_group("feature_lake")
def test_zl_models_walk_forward_tracked_and_ranked(zl_model_lake):
    _, resources = zl_model_lake
    lake, uri = resources["lake"], resources["tracking"].tracking_uri

    one_week = {"market": ZL, "horizon": "1w"}
    folds = lake.read(tables.FOLDS, **one_week)
    for family in families():
        oof = lake.read(tables.OOF, **one_week, family=family.name)
        assert oof.height == folds["test_rows"].sum() and oof["forecast"].is_finite().all()
        scores = lake.read(tables.FAMILY_METRICS, **one_week, family=family.name)
        assert scores.filter(pl.col("scope") == "fold").height == folds.height
        assert scores.filter(pl.col("scope") == "regime").height == oof["regime"].n_unique()

    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        board = conn.sql("select * from models.leaderboard where asset = 'ZL' and horizon = '1w' order by rank").pl()
    assert set(board["family"]) == {f.name for f in families()}
    assert board.filter(pl.col("family") == "random_walk")["mase"][0] == pytest.approx(1.0)
    # The crown goes to the best family that beats the random walk significantly, else to the random walk.
    assert board["champion"].sum() == 1 and board["champion"].to_list() == board["crowned"].to_list()
    crowned = board.filter(pl.col("crowned")).row(0, named=True)
    earners = board.filter(pl.col("beats_random_walk"))
    assert crowned["family"] == (earners["family"][0] if earners.height else "random_walk")
    assert board["dm_p_value"].is_not_null().sum() >= board.height - 1

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name(ZL, "1w"))
    # The experiment also holds the Reptile model's and the specialists' runs when their tests share the lake.
    runs = [r for kind in KINDS for r in client.search_runs([experiment.experiment_id], f"tags.kind = '{kind}'")]
    assert {r.data.tags["family"] for r in runs} == {f.name for f in families()}
    lightgbm = next(r for r in runs if r.data.tags["family"] == "lightgbm")
    assert len(client.get_metric_history(lightgbm.info.run_id, "fold_mase")) == folds.height
    assert lightgbm.data.tags["data_hash"] and "mase" in lightgbm.data.metrics
    assert {a.path for a in client.list_artifacts(lightgbm.info.run_id, "model")} >= {
        "model/MLmodel",  # a pyfunc MLflow model (cbi_assets/models/serving.py)
        "model/features.json",
    }
    neural = next(r for r in runs if r.data.tags["family"] == "lstm")
    assert neural.data.tags["device"] == "cpu"
    champion = client.get_model_version_by_alias(model_name(ZL, "1w"), "champion")
    assert champion.run_id == crowned["run_id"] and champion.tags["family"] == crowned["family"]
