"""The raw layer's day store: how fast new days are published, each file and its folder flushed to disk.

    .venv/bin/python benchmarks/raw_store.py --days 2000

One small Parquet file per day (a daily bar), as a backfill of daily history writes them: staged by
`PartitionStore.write_days`' encoder threads (written and fsynced), linked to their version names, and each
day's folder fsynced. Most of a small file's cost is the file system's, so this is mostly the disk. The last
line is `store_days_per_s=<n> store_ms_per_day=<n>` (best of three, each into an empty store).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

import polars as pl

from cbi_assets.raw.store import PartitionStore, day_digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=2000)
    args = parser.parse_args()
    days = [dt.date(2016, 1, 4) + dt.timedelta(days=i) for i in range(args.days)]
    frame = pl.DataFrame(
        {
            "day": days,
            "ts_event": [dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) for d in days],
            "close": [50.0 + i * 0.01 for i in range(args.days)],
        }
    )
    digests = day_digests(frame, "day")
    batch = [
        (day, part, digests[day])
        for (day,), part in sorted(frame.partition_by("day", as_dict=True, include_key=False).items())
    ]
    best = float("inf")
    for attempt in range(3):
        with tempfile.TemporaryDirectory(prefix="cbi-store-") as root:
            began = time.perf_counter()
            PartitionStore(root).write_days(batch)
            seconds = time.perf_counter() - began
        print(f"attempt {attempt + 1}: {args.days:,} new days in {seconds:.2f} s", flush=True)
        best = min(best, seconds)
    print(f"store_days_per_s={args.days / best:.0f} store_ms_per_day={1000 * best / args.days:.3f}")


if __name__ == "__main__":
    main()
