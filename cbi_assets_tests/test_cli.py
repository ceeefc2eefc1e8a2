"""The main job's plan: every asset of the graph once, each with the partitions its source holds, in stage order;
and the options of `cbi run` for a user's own data."""

import dagster as dg
import pytest

from cbi_assets.cli import _parser, plan, settings_for
from cbi_assets.definitions import defs
from cbi_assets.partitions import REGIME_PARTITIONS


def _selected(step, graph) -> set[dg.AssetKey]:
    # The selection must parse as Dagster's selection syntax (a string it cannot parse would select nothing).
    return dg.AssetSelection.from_string(step.selection).resolve(graph)


def test_plan_materializes_every_asset_once_within_its_partitions():
    settings = settings_for(_parser().parse_args(["plan", "--end", "2024-06-28"]))
    steps = plan(settings)
    graph = defs.resolve_asset_graph()
    selections = [_selected(step, graph) for step in steps]
    planned = [key for keys in selections for key in keys]
    # Every asset Dagster materializes, once (the live service's is external: `cbi live` writes it).
    assert sorted(planned) == sorted(k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable)
    for step, keys in zip(steps, selections, strict=True):
        partitions = {graph.get(k).partitions_def for k in keys}
        assert len(partitions) == 1, step.what  # one partitions definition per `dagster asset materialize`
        (partitioned,) = partitions
        if partitioned is None:
            assert step.partition_range is None
            continue
        first, last = step.partition_range.split("...")
        if isinstance(partitioned, dg.StaticPartitionsDefinition):  # a market's horizons: all of them
            keys_ = partitioned.get_partition_keys()
            assert (first, last) == (keys_[0], keys_[-1])
        elif partitioned == REGIME_PARTITIONS:  # specialists: the regime the data ends in
            assert first == last == "trump_2023_2025"
        else:  # raw years: from the first the sample holds to the year of its last session
            assert partitioned.has_partition_key(first) and last == "2024"
    ranges = [s.partition_range for s in steps]
    assert ranges == [
        f"{settings.sample_start.year}...2024",
        "2019...2024",
        None,
        "1w...12m",
        "1min...12m",
        "trump_2023_2025...trump_2023_2025",
        None,
    ]
    # Each market's horizons in one run: its training sets, models, leaderboard, ensembles and forecasts.
    zl = {k.to_user_string() for k in selections[3]}
    assert {"zl/training/labels", "zl/models/leaderboard", "zl/models/ensemble", "zl/predictions/upload"} <= zl
    assert all(k.startswith("zl/") for k in zl)
    assert {k.to_user_string() for k in selections[-1]} == {"monitoring/audit", "shared/models/transfer"}
    assert "--partition-range" in steps[0].command() and "materialize" in steps[0].command()


def test_run_takes_a_folder_a_profile_and_an_end(tmp_path):
    args = _parser().parse_args(
        ["run", "--source", "local", "--local-dir", str(tmp_path), "--profile", "full", "--end", "2019-11-05"]
    )
    settings = settings_for(args)
    assert settings.source == "local" and settings.local_dir == tmp_path.resolve()
    assert settings.profile == "full" and settings.last_day.isoformat() == "2019-11-05"
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--end", "05/11/2019"])
