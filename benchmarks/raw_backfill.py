"""Dagster's bookkeeping over a 25-year backfill of every raw dataset, on its stock SQLite storage.

    .venv/bin/python benchmarks/raw_backfill.py

Every raw asset is materialized over all its year partitions since 2000 from a sample written as files,
in this process (`dg.materialize`), one run per partitions definition. Bookkeeping is what the runs took
beyond what the assets themselves spent fetching, checking and storing (their `seconds` and `cpu_seconds`
metadata). The CPU figure is this process's CPU time, printed beside the wall time; on a shared machine
both move with the load, so compare runs made side by side. The last line is
`partitions=<n> days=<n> bookkeeping_cpu_s=<n> bookkeeping_wall_s=<n> runs_s=<n>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import dagster as dg

from cbi_assets.lake import Lake
from cbi_assets.raw.assets import RAW_ASSETS
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.raw.partitions import RAW_PARTITIONS, partitions_name
from cbi_assets.sample import SampleConfig, build_sample
from resources.local_files import LocalFilesSource

END = dt.date(2024, 6, 28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intraday-sessions", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cbi-backfill-") as work:
        config = SampleConfig(
            end=END, intraday_sessions=args.intraday_sessions, tick_sessions=2, trades_per_session=6_000
        )  # the sample of the test that asserts a materialization per year
        source = LocalFilesSource(root=str(build_sample(config, Path(work) / "sample")))
        lake = Lake(root=str(Path(work) / "lake"))
        resources = {"lake": lake, "futures_source": source, "macro_source": source, "history_source": source}
        wall = cpu = 0.0
        partitions = 0
        with dg.instance_for_test() as instance:
            for name, definition in RAW_PARTITIONS.items():
                assets = [a for a in RAW_ASSETS if partitions_name(RAW_DATASETS[a.key.path[-1]]) == name]
                keys = definition.get_partition_keys()
                tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
                began, began_cpu = time.perf_counter(), time.process_time()
                # The events are still stored; only their echo on the console is left out.
                quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
                dg.materialize(assets, resources=resources, tags=tags, instance=instance, run_config=quiet)
                wall, cpu = wall + time.perf_counter() - began, cpu + time.process_time() - began_cpu
                partitions += len(keys) * len(assets)
                print(f"{name}: {len(keys)} years x {len(assets)} datasets in {wall:.1f} s so far", flush=True)
            # One run step per asset took its whole range; Dagster copies the step's metadata onto every year.
            spent = [
                instance.get_latest_materialization_event(a.key).asset_materialization.metadata for a in RAW_ASSETS
            ]
        days = sum(len(lake.raw(d).days()) for d in RAW_DATASETS.values())
    bookkeeping_cpu = cpu - sum(m["cpu_seconds"].value for m in spent)
    bookkeeping_wall = wall - sum(m["seconds"].value for m in spent)
    print(
        f"partitions={partitions} days={days} bookkeeping_cpu_s={bookkeeping_cpu:.1f} "
        f"bookkeeping_wall_s={bookkeeping_wall:.1f} runs_s={wall:.1f}"
    )


if __name__ == "__main__":
    main()
