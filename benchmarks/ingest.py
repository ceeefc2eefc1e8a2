"""Raw-layer ingest speed: N million MES 1-minute bars, written as DBN, taken into day partitions.

    .venv/bin/python benchmarks/ingest.py --million-bars 1

The sample source writes the bars as a Databento DBN file. The benchmark then runs what a raw
asset runs: decode the DBN through databento's reader, validate, and store one immutable Parquet
partition per Globex trade date. The last line is
`ingest_rows_per_s=<n> peak_rss_mb=<n>`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

from cbi_assets.lake import Lake
from cbi_assets.raw.datasets import raw_dataset
from cbi_assets.raw.ingest import ingest
from cbi_assets.sample import SampleConfig, build_sample
from resources.local_files import LocalFilesSource
from resources.sample_source import SampleSource

BARS_PER_SESSION = 1_375  # a Globex session has 1,380 minutes, a few of them without trades
END = dt.date(2026, 10, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--million-bars", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cbi-ingest-"))
    sessions = math.ceil(args.million_bars * 1e6 / BARS_PER_SESSION)
    dataset = raw_dataset("mes_ohlcv_1m")

    began = time.perf_counter()
    folder = build_sample(SampleConfig(end=END, intraday_sessions=sessions, tick_sessions=1), work / "sample")
    written = time.perf_counter() - began
    dbn_file = folder / "dbn" / "GLBX.MDP3" / "MES.v.0.ohlcv-1m.dbn.zst"
    source = SampleSource(cache_dir=str(work), end=END.isoformat(), intraday_sessions=sessions, tick_sessions=1)
    first, last = source.coverage(dataset)

    began = time.perf_counter()
    bars = LocalFilesSource(root=str(folder)).fetch(dataset, first, last)
    decoded = time.perf_counter() - began
    store = Lake(root=str(work / "lake")).raw(dataset)
    began = time.perf_counter()
    report = ingest(dataset, bars, store, first, last, origin=str(dbn_file), received_at=dt.datetime.now(dt.UTC))
    stored = time.perf_counter() - began

    total = decoded + stored
    rows_per_s = report.rows / total
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bars written as DBN        {bars.height:,} over {sessions:,} sessions ({first}..{last})")
    print(
        f"DBN file                   {dbn_file.stat().st_size / 1e6:.1f} MB, generated and written in {written:.1f} s"
    )
    print(f"decode (databento reader)  {decoded:.2f} s  ({bars.height / decoded:,.0f} rows/s)")
    print(
        f"validate + store by day    {stored:.2f} s  ({report.rows / stored:,.0f} rows/s, {report.days:,} partitions)"
    )
    print(f"lake size                  {sum(p.stat().st_size for p in store.root.rglob('*.parquet')) / 1e6:.1f} MB")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"ingest_rows_per_s={rows_per_s:.0f} peak_rss_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
