"""The main job's plan: every asset of the graph once, each with the partitions the sample holds."""

import datetime as dt

import dagster as dg

from cbi_assets.cli import plan
from cbi_assets.definitions import defs
from cbi_assets.partitions import REGIME_PARTITIONS
from cbi_assets.settings import Settings


def test_plan_materializes_every_asset_once_within_its_partitions():
    settings = Settings.from_env({"CBI_SAMPLE_END": "2024-06-28", "CBI_SOURCE": "sample"})
    steps = plan(settings)
    planned = [key for step in steps for key in step.selection.split(",")]
    graph = defs.resolve_asset_graph()
    assert sorted(planned) == sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    for step in steps:
        partitioned = {graph.get(_key(k)).partitions_def for k in step.selection.split(",")}
        assert len(partitioned) == 1  # one partitions definition per `dagster asset materialize`
        (partitions,) = partitioned
        if partitions is None:
            assert step.partition_range is None
        else:
            first, last = step.partition_range.split("...")
            if isinstance(partitions, dg.StaticPartitionsDefinition):  # a market's horizons: all of them
                keys = partitions.get_partition_keys()
                assert (first, last) == (keys[0], keys[-1])
            elif partitions == REGIME_PARTITIONS:  # specialists: the regime the sample ends in
                assert first == last == "trump_2023_2025"
            else:  # day partitions: up to the sample's last session
                assert partitions.has_partition_key(first) and last == "2024-06-28"
    # The raw days come first, then the derived layers, the horizon assets of each market, the
    # current regime's specialists, and last what reads both markets' training sets.
    ranges = [s.partition_range for s in steps]
    derived = next(i for i, s in enumerate(steps) if s.partition_range is None)
    assert all(r and r.endswith("2024-06-28") for r in ranges[:derived])
    assert ranges[derived + 1:] == ["1w...12m", "1min...12m", "1w...12m", "1min...12m",
                                    "trump_2023_2025...trump_2023_2025", None]
    # Each market's leaderboard comes in the first of its two steps, with everything it reads.
    zl_models, mes_models = steps[derived + 1].selection.split(","), steps[derived + 2].selection.split(",")
    assert "zl/models/leaderboard" in zl_models and "zl/models/ensemble" not in zl_models
    assert "mes/models/leaderboard" in mes_models and "mes/backtests/trading" in steps[derived + 4].selection
    assert steps[-1].selection.split(",") == ["monitoring/audit", "shared/models/transfer"]
    assert "zl/features/master_1d" in steps[derived].selection and "shared/models/transfer" not in steps[derived].selection
    mes_ticks = next(s for s in steps if "mes/raw/mes_trades" in s.selection)
    first = dt.date.fromisoformat(mes_ticks.partition_range.split("...")[0])
    assert first == dt.date(2024, 6, 27)  # the last two sessions
    assert "--partition-range" in mes_ticks.command() and "materialize" in mes_ticks.command()


def _key(user_string):
    import dagster as dg

    return dg.AssetKey.from_user_string(user_string)
