"""Regime specialists: the walk inside a regime is purged, a specialist beats a generalist where the
relation flips between regimes, and the Dagster asset trains, stores, logs and is chosen by regime."""

import datetime as dt

import dagster as dg
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from cbi_assets import lake as tables
from cbi_assets.catalogue import ZL
from cbi_assets.lake import Lake
from cbi_assets.models import trees
from cbi_assets.models.evaluation import METRICS
from cbi_assets.models.inputs import TrainingArrays
from cbi_assets.partitions import REGIME_PARTITIONS
from cbi_assets.profiles import PROFILES
from cbi_assets.specialists.assets import SPECIALIST_ASSETS, VERDICT_SCHEMA
from cbi_assets.specialists.choice import choose_model, load_specialist
from cbi_assets.specialists.walk import (
    SpecialistPlan,
    purge_violations,
    regime_folds,
    regime_span,
    scores,
    verdict,
    walk_regime,
    with_generalist_oof,
)
from resources import Tracking
from resources.tracking import experiment_name

HORIZON = 5  # ZL 1w: a label spans 5 sessions
BUDGET = PROFILES["sample"].training


def _two_regimes(flip: bool = True, rows_a: int = 500, rows_b: int = 500, seed: int = 0) -> pl.DataFrame:
    """A daily ZL 1w training set: regime a (the earlier rows), where the label moves with +x0, then
    regime b, where it moves with -x0 (with +x0 too, unless `flip`)."""
    rng = np.random.default_rng(seed)
    n = rows_a + rows_b
    days = pl.date_range(dt.date(2010, 1, 1), dt.date(2016, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    x = rng.normal(size=(n, 4))
    sign = np.where((np.arange(n) >= rows_a) & flip, -1.0, 1.0)
    forward = 0.01 * sign * x[:, 0] + 0.001 * rng.normal(size=n)
    return pl.DataFrame(
        {
            "date": days.head(n),
            "label_end": days.slice(HORIZON, n),
            "forward_return": forward,
            "forward_price": 50 * np.exp(forward),
            "regime": ["a"] * rows_a + ["b"] * rows_b,
            "weight": np.ones(n),
            "zl_1d_ret_1": 0.01 * rng.normal(size=n),
            **{f"x{i}": x[:, i] for i in range(4)},
        }
    )


def test_the_walk_inside_a_regime_is_purged():
    frame = _two_regimes()
    span = regime_span(frame, "b", ["a", "b"], "date")
    assert span == (500, 999)
    folds = regime_folds(frame, span, "date", HORIZON, SpecialistPlan())
    assert not isinstance(folds, str) and folds.height == 3
    assert purge_violations(frame, folds, "date") == 0
    dates, ends = frame["date"], frame["label_end"]
    for fold in folds.iter_rows(named=True):
        assert fold["train_lo"] == 500 and span[0] <= fold["test_lo"] <= fold["test_hi"] <= span[1]
        last_end = ends.slice(fold["train_lo"], fold["train_hi"] - fold["train_lo"] + 1).max()
        # purged and embargoed: the last training label ends more than the embargo before the test window
        assert dates.search_sorted(last_end) + HORIZON < fold["test_lo"]
    # The check can fail: training right up to the test window lets labels reach into it.
    leaky = folds.with_columns((pl.col("test_lo") - 1).alias("train_hi"))
    assert purge_violations(frame, leaky, "date") == 3 * HORIZON

    since = frame["date"][800]
    assert regime_span(frame, f"detected_crisis_{since:%Y%m%d}", ["a", "b"], "date") == (800, 999)
    assert regime_span(frame, "c", ["a", "b", "c"], "date") is None
    with pytest.raises(ValueError, match="neither in the regime calendar"):
        regime_span(frame, "no_such_regime", ["a", "b"], "date")
    assert "too few" in regime_folds(frame, (940, 999), "date", HORIZON, SpecialistPlan())


def test_a_specialist_beats_the_generalist_where_the_relation_flips():
    frame = _two_regimes()
    data = TrainingArrays.of(frame, ZL, ZL.horizon("1w"))
    plan = SpecialistPlan()
    folds = regime_folds(frame, (500, 999), "date", HORIZON, plan)
    walked = with_generalist_oof(walk_regime(frame, data, folds, "date", trees.lightgbm, BUDGET), None, "date")
    board = scores(walked, horizon=HORIZON, periods_per_year=252, cost_bps=0.0)
    mase = dict(
        board.filter((pl.col("scope") == "overall") & (pl.col("group") == "all")).select("model", "mase").iter_rows()
    )
    assert mase["random_walk"] == pytest.approx(1.0)
    assert mase["specialist"] < 0.5 < 0.9 < mase["generalist"]  # the generalist still leans on regime a's sign
    decision = verdict(board, plan)
    assert decision["beats_generalist"] and decision["beats_random_walk"]
    assert decision["test_rows"] == folds["test_rows"].sum()
    assert decision["why"].startswith("beats the generalist and the random walk")
    assert "covers 0 of the" in decision["why"]  # no stored oof to compare with here

    same = _two_regimes(flip=False)
    walked = with_generalist_oof(
        walk_regime(same, TrainingArrays.of(same, ZL, ZL.horizon("1w")), folds, "date", trees.lightgbm, BUDGET),
        None,
        "date",
    )
    again = scores(walked, horizon=HORIZON, periods_per_year=252, cost_bps=0.0)
    both = dict(
        again.filter((pl.col("scope") == "overall") & (pl.col("group") == "all")).select("model", "mase").iter_rows()
    )
    assert both["generalist"] < 0.5  # with one relation the generalist learns it too


def test_choose_model_takes_a_specialist_only_where_it_wins(tmp_path):
    """Specialists that beat everything, lose to the random walk, or lose to the champion's stored oof."""
    days = pl.date_range(dt.date(2020, 1, 1), dt.date(2020, 4, 30), "1d", eager=True).head(100)
    actual = np.where(np.arange(100) % 2, 0.02, -0.02)
    lake = Lake(root=str(tmp_path))
    # LightGBM earned the crown: its Diebold-Mariano tests against the random walk are significant.
    for family, mase, p in (("random_walk", 1.0, 1.0), ("lightgbm", 0.9, 1e-6)):
        lake.write(
            tables.FAMILY_METRICS,
            pl.DataFrame(
                {
                    "scope": ["overall", "recent"],
                    "group": ["all", "recent"],
                    "rows": [100, 34],
                    "mase": [mase] * 2,
                    **{m: [0.5] * 2 for m in METRICS if m != "mase"},
                    "dm_statistic": [5.0 if p < 1 else None] * 2,
                    "dm_p_value": [p] * 2,
                    "dm_outcomes": [20.0, 7.0],
                    "family": [family] * 2,
                    "kind": ["tree"] * 2,
                    "run_id": [f"run-{family}"] * 2,
                }
            ),
            market=ZL,
            horizon="1w",
            family=family,
        )
    lake.write(
        tables.OOF,
        pl.DataFrame({"date": days, "forecast": actual * 0.5}),  # MASE 0.5
        market=ZL,
        horizon="1w",
        family="lightgbm",
    )

    def specialist(regime: str, mase: float, error: float) -> None:
        with lake.replacing_folder(tables.SPECIALIST, market=ZL, regime=regime, horizon="1w") as folder:
            pl.DataFrame({"date": days, "actual": actual, "specialist": actual * (1 - error)}).write_parquet(
                folder / "oof.parquet"
            )
            pl.DataFrame(
                [
                    {
                        "asset": "ZL",
                        "horizon": "1w",
                        "regime": regime,
                        "status": "trained",
                        "beats_generalist": True,
                        "beats_random_walk": mase < 1,
                        "specialist_mase": mase,
                        "run_id": f"run-{regime}",
                        "why": f"verdict of {regime}",
                    }
                ],
                schema=VERDICT_SCHEMA,
            ).write_parquet(folder / "verdict.parquet")

    specialist("sharp", 0.2, error=0.2)  # beats the champion's oof (0.2 vs 0.5) too
    specialist("blunt", 1.05, error=0.2)
    specialist("close", 0.8, error=0.8)  # 0.8 on the rows the champion's oof has at 0.5
    chosen = {r: choose_model(lake, ZL, "1w", r) for r in ("sharp", "blunt", "close", "unseen")}
    assert (chosen["sharp"].source, chosen["sharp"].model, chosen["sharp"].run_id) == (
        "specialist",
        "specialist_sharp",
        "run-sharp",
    )
    assert chosen["sharp"].path == lake.path(tables.SPECIALIST, market=ZL, regime="sharp", horizon="1w") / "model"
    assert all(chosen[r].source == "champion" and chosen[r].model == "lightgbm" for r in ("blunt", "close", "unseen"))
    assert "verdict of blunt" in chosen["blunt"].why
    assert "not the champion" in chosen["close"].why and "(MASE 0.800 vs 0.500)" in chosen["close"].why
    assert "no specialist trained for unseen" in chosen["unseen"].why


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
def test_zl_specialists_materialize_for_a_regime(zl_model_lake, tmp_path):
    _, resources = zl_model_lake
    lake = resources["lake"]
    # Its own MLflow store: the shared one's experiments hold exactly the registered families.
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "artifacts"))
    asset = next(a for a in SPECIALIST_ASSETS if a.key == tables.SPECIALIST.asset_key(market=ZL))
    instance = dg.DagsterInstance.ephemeral()
    regimes = ["trade_war_2017_2019", "historical_pre2000"]
    instance.add_dynamic_partitions(REGIME_PARTITIONS.name, regimes)
    config = {"ops": {asset.op.name: {"config": {"horizons": ["1w"]}}}}
    results = {
        regime: dg.materialize(
            [asset],
            resources={**resources, "tracking": tracking},
            partition_key=regime,
            instance=instance,
            run_config=config,
        )
        for regime in regimes
    }
    assert all(r.success for r in results.values())

    folder = lake.folder(tables.SPECIALIST, market=ZL, regime="trade_war_2017_2019", horizon="1w")
    verdict_row = pl.read_parquet(folder / "verdict.parquet").row(0, named=True)
    assert verdict_row["status"] == "trained" and verdict_row["run_id"]
    walked = pl.read_parquet(folder / "oof.parquet")
    assert walked.height == verdict_row["test_rows"] > 0
    assert walked["regime"].unique().to_list() == ["trade_war_2017_2019"]
    assert walked["date"].min() >= dt.date(2017, 1, 1) and walked["date"].max() <= dt.date(2019, 12, 31)
    frame = lake.read(tables.TRAINING_SET, market=ZL, horizon="1w")
    assert purge_violations(frame, pl.read_parquet(folder / "folds.parquet"), "date") == 0
    board = pl.read_parquet(folder / "metrics.parquet")
    overall = board.filter((pl.col("scope") == "overall") & (pl.col("group") == "all"))
    assert overall.filter(pl.col("model") == "random_walk")["mase"][0] == pytest.approx(1.0)
    assert verdict_row["why"].startswith("beats" if verdict_row["beats_generalist"] else "does not beat")
    if verdict_row["beats_generalist"]:
        assert verdict_row["specialist_mase"] < verdict_row["generalist_mase"]
    _model, scaler, features = load_specialist(folder / "model")
    assert scaler.columns == tuple(features)
    assert len(features) == TrainingArrays.of(frame, ZL, ZL.horizon("1w")).x.shape[1]

    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    run = client.get_run(verdict_row["run_id"])
    assert (
        run.data.tags["family"] == "specialist_trade_war_2017_2019" and run.data.tags["regime"] == "trade_war_2017_2019"
    )
    assert {"mase", "generalist_mase", "random_walk_mase"} <= set(run.data.metrics)
    assert client.get_experiment(run.info.experiment_id).name == experiment_name(ZL, "1w")

    metadata = results["trade_war_2017_2019"].asset_materializations_for_node(asset.op.name)[0].metadata
    assert metadata["beats_generalist"].value == {"trade_war_2017_2019/1w": verdict_row["beats_generalist"]}
    assert "data:image/png;base64" in metadata["comparison_trade_war_2017_2019"].value

    chosen = choose_model(lake, ZL, "1w", "trade_war_2017_2019")
    if not (verdict_row["beats_generalist"] and verdict_row["beats_random_walk"]):
        assert chosen.source == "champion" and verdict_row["why"] in chosen.why
    else:
        assert chosen.source == "specialist" or "not the champion" in chosen.why

    skipped_folder = lake.folder(tables.SPECIALIST, market=ZL, regime="historical_pre2000", horizon="1w")
    skipped = pl.read_parquet(skipped_folder / "verdict.parquet").row(0, named=True)
    assert skipped["status"] == "skipped" and "no rows" in skipped["why"]
    fallback = choose_model(lake, ZL, "1w", "historical_pre2000")
    assert fallback.source == "champion" and "not trained" in fallback.why
    assert "no specialist trained" in choose_model(lake, ZL, "1w", "covid_crisis_2020").why
