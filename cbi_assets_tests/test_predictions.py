"""Predictions on ZL 1w of the sample: the newest origin forecast by the registered champion, uploaded
to an append-only history with a latest view, a challenger kept out of it, and promoted once it beats
the champion on matured forecasts."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.calendars import settlement_days
from cbi_assets.catalogue import ZL
from cbi_assets.definitions import defs
from cbi_assets.lake import Lake
from cbi_assets.models.registry import families
from cbi_assets.monitoring.outcomes import realized
from cbi_assets.predictions import history
from cbi_assets.predictions.assets import PREDICTION_ASSETS
from cbi_assets.predictions.shadow import verdict
from cbi_assets.settings import Settings
from cbi_assets.warehouse import Warehouse
from resources import Alerts, Tracking, build_resources

pytestmark = [pytest.mark.xdist_group("feature_lake"), pytest.mark.integration]
ONE_WEEK = {"dagster/asset_partition_range_start": "1w", "dagster/asset_partition_range_end": "1w"}
ZL_PREDICTIONS = [a for a in PREDICTION_ASSETS if a.key.path[0] == ZL.key]


@pytest.fixture()
def own_registry(zl_model_lake, tmp_path):
    """The model lake's resources with a copy of its MLflow store (so aliases moved here stay here) and
    a warehouse of this test's own."""
    lake, resources = zl_model_lake
    store = resources["tracking"].tracking_uri.removeprefix("sqlite:///")
    shutil.copy(store, tmp_path / "mlflow.db")
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"))
    return lake, {**resources, "tracking": tracking, "warehouse": warehouse, "alerts": Alerts(warehouse=warehouse)}


def _run(resources, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(ZL_PREDICTIONS, resources=resources, tags=ONE_WEEK, run_config=config)


def _stored(resources) -> tuple[pl.DataFrame, pl.DataFrame]:
    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        return (
            conn.sql("select * from predictions.history order by role").pl(),
            conn.sql("select * from predictions.vw_zl_1w_latest").pl(),
        )


def test_the_daily_forecast_twice_leaves_one_row_per_key(own_registry):
    """The code location's regime state, forecast and upload (what the evening cycle runs) twice for the same day."""
    lake, resources = own_registry
    settings = Settings.from_env({"CBI_LAKE": str(lake), "CBI_SOURCE": "sample"})
    predict = dg.define_asset_job(
        "zl_predict",
        selection=" or ".join(
            f'key:"zl/{name}"' for name in ("regimes/state", "predictions/forecast", "predictions/upload")
        ),
    )
    location = dg.Definitions(
        assets=list(defs.assets), jobs=[predict], resources={**build_resources(settings), **resources}
    )
    job = location.resolve_job_def("zl_predict")
    instance = dg.DagsterInstance.ephemeral()
    for _ in range(2):
        assert job.execute_in_process(partition_key="1w", instance=instance).success
    rows, latest = _stored(resources)
    assert rows.height == 1 and latest.height == 1
    assert rows.select(history.KEY).n_unique() == rows.height
    row = rows.row(0, named=True)
    champion = resources["tracking"].champion(ZL, "1w")
    assert (row["model_version"], row["run_id"], row["role"]) == (
        champion["model_version"],
        champion["run_id"],
        "champion",
    )
    newest = Lake(root=str(lake)).read(tables.MASTER, columns=["date"], market=ZL, timeframe="1d")["date"].max()
    assert row["as_of"].date() == newest
    assert row["target_time"].date() == settlement_days(newest, newest + dt.timedelta(days=20))[5]
    assert row["forecast_price"] == pytest.approx(row["price"] * np.exp(row["forecast_return"]))
    assert row["lower_90"] < row["lower_80"] <= row["forecast_return"] <= row["upper_80"] < row["upper_90"]
    assert row["lower_90_price"] == pytest.approx(row["price"] * np.exp(row["lower_90"]))
    assert 0 <= row["conviction"] <= 1 and 0 < row["confidence"] <= 1
    assert row["regime"] == "trump_2023_2025" and row["state"] in ("calm", "normal", "stressed", "crisis")
    assert row["stale_inputs"] == ""  # every input of the sample is fresh at its last session
    drivers = json.loads(row["drivers"])
    if {f.name: f.kind for f in families()}[row["family"]] in ("tree", "neural"):  # models with features
        assert len(drivers) == 5 and {"feature", "value", "shap"} <= set(drivers[0])
        assert [abs(d["shap"]) for d in drivers] == sorted((abs(d["shap"]) for d in drivers), reverse=True)
    else:
        assert drivers == []


def test_a_challenger_stays_in_the_shadow_until_it_beats_the_champion(own_registry):
    lake, resources = own_registry
    tracking = resources["tracking"]
    champion = tracking.champion(ZL, "1w")
    other = next(
        f
        for f in ("lightgbm", "xgboost", "ridge", "drift")
        if f != champion["family"] and tracking.family_runs(ZL, "1w", f, 1)
    )
    tracking.register(ZL, "1w", tracking.family_runs(ZL, "1w", other, 1)[0]["run_id"], other, "challenger")
    challenger = tracking.challenger(ZL, "1w")
    assert _run(resources).success
    rows, latest = _stored(resources)
    assert sorted(rows["role"]) == ["challenger", "champion"]
    assert latest["model_version"].to_list() == [champion["model_version"]]

    # Thirty matured origins where the challenger was right and the champion 1% off: better on every one,
    # and six weekly outcomes in all (two in the most recent third), enough for the significance rule.
    stored = Lake(root=str(lake))
    days = stored.read(tables.MASTER, columns=["date"], market=ZL, timeframe="1d")["date"].sort().tail(60).head(30)
    at = days.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    actual = realized(stored, ZL, ZL.horizon("1w"), at)
    assert actual.is_not_null().all()
    past = pl.concat(
        [
            pl.DataFrame(
                {
                    "asset": "ZL",
                    "horizon": "1w",
                    "as_of": at,
                    "model_version": version,
                    "role": role,
                    "price": 50.0,
                    "forecast_return": actual + error,
                }
            )
            for version, role, error in (
                (champion["model_version"], "champion", 0.01),
                (challenger["model_version"], "challenger", 0.0),
            )
        ]
    )
    assert history.append(resources["warehouse"], past) == 60
    assert _run(resources, {"ops": {"zl__predictions__upload": {"config": {"promote_after_days": 31}}}}).success
    assert tracking.champion(ZL, "1w")["version"] == champion["version"]  # 30 shared days < 31

    assert _run(resources, {"ops": {"zl__predictions__upload": {"config": {"promote_after_days": 30}}}}).success
    assert tracking.champion(ZL, "1w")["version"] == challenger["version"]
    assert tracking.challenger(ZL, "1w") is None
    with duckdb.connect(resources["warehouse"].database, read_only=True) as conn:
        alerts = conn.sql("select kind, asset, horizon, message from monitoring.alerts").pl()
    assert alerts.rows() == [("promotion", "ZL", "1w", alerts["message"][0])] and other in alerts["message"][0]


def test_shadow_verdict_needs_enough_shared_matured_days():
    at = [dt.datetime(2026, 1, d, tzinfo=dt.UTC) for d in (5, 6, 7, 8, 9, 12)]
    rows = pl.DataFrame(
        {
            "as_of": at * 2,
            "model_version": ["a"] * 6 + ["b"] * 6,
            "forecast_return": [0.01, 0.02, -0.01, 0.01, 0.02, -0.01, 0.0, 0.01, 0.0, 0.0, 0.01, 0.0],
            "actual_return": [0.0, 0.01, 0.0] * 4,
        }
    )
    # a's errors 0.01 on each day; b's 0: b is better on every one of six daily outcomes.
    assert verdict(rows, "a", "b", 6).promote and verdict(rows, "a", "b", 6).days == 6
    assert not verdict(rows, "a", "b", 7).promote
    assert not verdict(rows, "b", "a", 6).promote
    assert verdict(rows.filter(pl.col("as_of") != at[0]), "a", "b", 3).days == 5


def test_an_intraday_challenger_needs_days_not_minutes():
    """Live 1-minute forecasts: a session's 1,380 origins are one day of evidence toward `min_days`."""
    rng = np.random.default_rng(5)
    opens = dt.datetime(2026, 1, 4, 23, 0, tzinfo=dt.UTC)  # Monday's session, 17:00 Chicago on Sunday
    at = [opens + dt.timedelta(days=d, minutes=m) for d in range(3) for m in range(1_380)]
    actual = rng.normal(0, 0.001, len(at))
    rows = pl.concat(
        pl.DataFrame({"as_of": at, "model_version": name, "forecast_return": forecast, "actual_return": actual})
        for name, forecast in (("a", actual + rng.normal(0, 0.001, len(at))), ("b", actual))
    )
    waiting = verdict(rows, "a", "b", 5)
    assert not waiting.promote and waiting.days == 3
    assert "4140 matured origins on 3 day(s) shared with the champion; 5 days needed" in waiting.why
    judged = verdict(rows, "a", "b", 3)
    assert judged.promote and judged.days == 3, judged.why
