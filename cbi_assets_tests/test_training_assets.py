"""Regime, label, training-set, fold and meta-learning assets materialized by Dagster on the sample lake."""

import dagster as dg
import duckdb
import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, REGIMES, ZL
from cbi_assets.lake import Lake, warehouse_file
from cbi_assets.partitions import REGIME_PARTITIONS, horizon_partitions
from cbi_assets.regimes.assets import REGIME_ASSETS, regime_calendar
from cbi_assets.training.assets import TRAINING_ASSETS
from cbi_assets_tests.conftest import lake_resources

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("feature_lake")]

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_regimes_and_training_sets_for_every_asset_and_horizon(feature_lake):
    root, _ = feature_lake
    lake = Lake(root=str(root))
    instance = dg.DagsterInstance.ephemeral()
    calendar = dg.materialize([regime_calendar], resources=lake_resources(root), instance=instance)
    assert calendar.success
    for market in MARKETS.values():
        keys = horizon_partitions(market).get_partition_keys()
        regimes = dg.materialize(
            [a for a in REGIME_ASSETS if a.key.path[0] == market.key],
            resources=lake_resources(root),
            instance=instance,
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        )
        assert regimes.success
    # The calendar seeds the regime partitions.
    assert set(instance.get_dynamic_partitions(REGIME_PARTITIONS.name)) >= {r.name for r in REGIMES}
    # One state per valid market x horizon; a longer horizon needs a change to last longer.
    state = {h: lake.read(tables.REGIME_STATE, market=ZL, horizon=h) for h in ("1w", "12m")}
    assert state["1w"]["date"].is_sorted() and state["1w"].height > 2000
    assert state["1w"].select("date", "state").equals(state["12m"].select("date", "state"))
    shifts = {h: lake.read(tables.REGIME_SHIFTS, market=ZL, horizon=h).height for h in state}
    assert 0 < shifts["12m"] < shifts["1w"], shifts
    assert lake.present(tables.REGIME_STATE, "horizon", market=ZL) == sorted(h.name for h in ZL.horizons)  # no 1min
    with duckdb.connect(str(warehouse_file(root)), read_only=True) as conn:
        current = conn.sql("select asset, horizon, named_regime from regimes.current order by asset, horizon").pl()
    assert current.height == sum(len(m.horizons) for m in MARKETS.values())
    assert set(current["named_regime"]) == {"trump_2023_2025"}

    for market in MARKETS.values():
        keys = horizon_partitions(market).get_partition_keys()
        assert keys == [h.name for h in market.horizons]  # no MES 1w, no ZL 1min
        selected = [a for a in TRAINING_ASSETS if a.key.path[0] == market.key]
        result = dg.materialize(
            selected,
            resources=lake_resources(root),
            instance=instance,
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        )
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
        assert {"purged", "embargoed", "tiled", "spans_forward", "tail_unlabelled"} <= {c.check_name for c in checks}
        for key in keys:
            parts = {"market": market, "horizon": key}
            frame = lake.read(tables.TRAINING_SET, **parts)
            folds = lake.read(tables.FOLDS, **parts)
            assert frame.height > 100 and folds.height == 3
            assert frame["forward_return"].null_count() == 0
            # The weight is the regime's weight times the label's uniqueness.
            weights = dict(zip([r.name for r in REGIMES], [float(r.weight) for r in REGIMES], strict=True))
            expected = frame["regime"].replace_strict(weights, return_dtype=pl.Float64) * frame["uniqueness"]
            assert (frame["weight"] - expected).abs().max() < 1e-9
            assert lake.present(tables.REGIME_SET, "regime", **parts) == sorted(frame["regime"].unique())
            scalers = lake.read(tables.SCALERS, **parts)
            assert scalers["fold"].n_unique() == 3
            regimes = frame["regime"].unique()
            assert any(lake.exists(tables.META_TASK, regime=r, part="support", **parts) for r in regimes)


def test_a_regime_added_by_configuration_becomes_a_partition(feature_lake):
    root, _ = feature_lake
    instance = dg.DagsterInstance.ephemeral()
    entries = [
        {
            "name": r.name,
            "start": r.start and r.start.isoformat(),
            "end": r.end and r.end.isoformat(),
            "weight": r.weight,
        }
        for r in REGIMES
    ]
    entries[-1]["end"] = "2025-12-31"
    entries.append({"name": "tariff_shock_2026", "start": "2026-01-01", "end": None, "weight": 2000.0})
    config = {"ops": {regime_calendar.op.name: {"config": {"regimes": entries}}}}
    result = dg.materialize([regime_calendar], resources=lake_resources(root), instance=instance, run_config=config)
    assert result.success
    assert "tariff_shock_2026" in instance.get_dynamic_partitions(REGIME_PARTITIONS.name)

    entries[-1]["start"] = "2026-01-05"  # leaves 2026-01-01..04 without a regime
    with pytest.raises(dg.Failure, match="must meet"):
        dg.materialize(
            [regime_calendar],
            resources=lake_resources(root),
            instance=instance,
            run_config={"ops": {regime_calendar.op.name: {"config": {"regimes": entries}}}},
        )
