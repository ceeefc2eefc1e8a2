"""Regime, label, training-set, fold and meta-learning assets materialized by Dagster on the sample lake."""

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from cbi_assets.catalogue import MARKETS, market, REGIMES
from cbi_assets.partitions import HORIZON_PARTITIONS, REGIME_PARTITIONS
from cbi_assets.regimes.assets import REGIME_ASSETS, regime_calendar
from cbi_assets.training.assets import (
    TRAINING_ASSETS,
    horizon_dir,
    meta_dir,
)
from resources import Lake

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def _resources(lake):
    return {"lake": Lake(root=str(lake), profile="sample"), "warehouse": DuckDBResource(database=str(lake / "warehouse.duckdb"))}


@pytest.mark.xdist_group("feature_lake")
def test_regimes_and_training_sets_for_every_asset_and_horizon(feature_lake):
    lake, _ = feature_lake
    instance = dg.DagsterInstance.ephemeral()
    calendar = dg.materialize([regime_calendar], resources=_resources(lake), instance=instance)
    assert calendar.success
    for asset, partitions in HORIZON_PARTITIONS.items():
        keys = partitions.get_partition_keys()
        regimes = dg.materialize([a for a in REGIME_ASSETS if a.key.path[0] == asset], resources=_resources(lake),
                                 instance=instance, tags={RANGE_START: keys[0], RANGE_END: keys[-1]})
        assert regimes.success
    # The calendar seeds the regime partitions.
    assert set(instance.get_dynamic_partitions(REGIME_PARTITIONS.name)) >= {r.name for r in REGIMES}
    # One state per valid asset x horizon; a longer horizon needs a change to last longer.
    state = {h: pl.read_parquet(lake / "shared" / "regimes" / "ZL" / h / "state.parquet") for h in ("1w", "12m")}
    assert state["1w"]["date"].is_sorted() and state["1w"].height > 2000
    assert state["1w"].select("date", "state").equals(state["12m"].select("date", "state"))
    shifts = {h: pl.read_parquet(lake / "shared" / "regimes" / "ZL" / h / "shifts.parquet").height for h in state}
    assert 0 < shifts["12m"] < shifts["1w"], shifts
    assert not (lake / "shared" / "regimes" / "ZL" / "1min").exists()
    with duckdb.connect(str(lake / "warehouse.duckdb"), read_only=True) as conn:
        current = conn.sql("select asset, horizon, named_regime from regimes.current order by asset, horizon").pl()
    assert current.height == sum(len(a.horizons) for a in MARKETS.values())
    assert set(current["named_regime"]) == {"trump_2023_2025"}

    for asset, partitions in HORIZON_PARTITIONS.items():
        keys = partitions.get_partition_keys()
        assert keys == [h.name for h in market(asset).horizons]  # no MES 1w, no ZL 1min
        selected = [a for a in TRAINING_ASSETS if a.key.path[0] == asset]
        result = dg.materialize(selected, resources=_resources(lake), instance=instance,
                                tags={RANGE_START: keys[0], RANGE_END: keys[-1]})
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
        assert {"purged", "embargoed", "tiled", "spans_forward", "tail_unlabelled"} <= {c.check_name for c in checks}
        for key in keys:
            folder = horizon_dir(lake, asset, key)
            frame = pl.read_parquet(folder / "all.parquet")
            folds = pl.read_parquet(folder / "folds.parquet")
            assert frame.height > 100 and folds.height == 5
            assert frame["forward_return"].null_count() == 0
            # The weight is the regime's weight times the label's uniqueness.
            weights = dict(zip([r.name for r in REGIMES], [float(r.weight) for r in REGIMES], strict=True))
            expected = frame["regime"].replace_strict(weights, return_dtype=pl.Float64) * frame["uniqueness"]
            assert (frame["weight"] - expected).abs().max() < 1e-9
            subsets = sorted(p.name for p in folder.glob("regime=*.parquet"))
            assert subsets == sorted(f"regime={r}.parquet" for r in frame["regime"].unique())
            scalers = pl.read_parquet(folder / "scalers.parquet")
            assert scalers["fold"].n_unique() == 5
            assert any((meta_dir(lake, asset, key)).glob("*/support.parquet"))


@pytest.mark.xdist_group("feature_lake")
def test_a_regime_added_by_configuration_becomes_a_partition(feature_lake):
    lake, _ = feature_lake
    instance = dg.DagsterInstance.ephemeral()
    entries = [{"name": r.name, "start": r.start and r.start.isoformat(), "end": r.end and r.end.isoformat(),
                "weight": r.weight} for r in REGIMES]
    entries[-1]["end"] = "2025-12-31"
    entries.append({"name": "tariff_shock_2026", "start": "2026-01-01", "end": None, "weight": 2000.0})
    config = {"ops": {regime_calendar.op.name: {"config": {"regimes": entries}}}}
    result = dg.materialize([regime_calendar], resources=_resources(lake), instance=instance, run_config=config)
    assert result.success
    assert "tariff_shock_2026" in instance.get_dynamic_partitions(REGIME_PARTITIONS.name)

    entries[-1]["start"] = "2026-01-05"  # leaves 2026-01-01..04 without a regime
    with pytest.raises(dg.Failure, match="must meet"):
        dg.materialize([regime_calendar], resources=_resources(lake), instance=instance,
                       run_config={"ops": {regime_calendar.op.name: {"config": {"regimes": entries}}}})
