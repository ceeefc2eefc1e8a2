"""The live MES service's speed: a recorded session replayed through the service as fast as it goes.

    .venv/bin/python benchmarks/live.py [--lake TrainingData] [--models Models] [--day YYYY-MM-DD] [--minutes N]

Run it after `cbi demo` (the lake and MLflow store it reads are copied to a temporary folder first: the
benchmark writes nothing of yours). It replays the session `--day` (the lake's last by default) from the
lake's raw layer, standing on what was stored before the session opened, and prints:

    live_p50_ms=<n> live_p99_ms=<n> replay_bars_per_s=<n>

- live_p50_ms / live_p99_ms: per closed 1-minute bar that forecast, the time from its record reaching the
  service to every forecast due at that bar written to predictions.history (features, every family's
  forecast of every horizon whose bar closed, intervals, the warehouse's commit);
- replay_bars_per_s: 1-minute bars per second of the whole replay (ticks and the raw layer's writes included).

The lines before them say what was measured (bars, forecasts, ticks, the horizons without a model) and where a
bar's time goes: its features, its forecasts (every family's, the intervals), the warehouse's write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cbi_assets.calendars import globex_session
from cbi_assets.lake import Lake
from cbi_assets.live.replay import lake_session, replay, sent_at
from cbi_assets.live.run import build_service
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.settings import PROJECT_ROOT, Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, default=PROJECT_ROOT / "TrainingData")
    parser.add_argument("--models", type=Path, default=PROJECT_ROOT / "Models")
    parser.add_argument("--day", type=dt.date.fromisoformat, help="the session to replay (default: the lake's last)")
    parser.add_argument("--minutes", type=int, help="replay only the session's first N minutes")
    parser.add_argument("--profile", default="sample")
    args = parser.parse_args()
    days = Lake(root=str(args.lake)).raw(RAW_DATASETS["mes_ohlcv_1m"]).days()
    if not days or not (args.models / "mlflow.db").is_file():
        sys.exit(f"no MES 1-minute bars in {args.lake} or no MLflow store in {args.models}: run `cbi demo` first")
    day = args.day or days[-1]
    with tempfile.TemporaryDirectory(prefix="cbi-live-bench-") as scratch:
        lake, models = Path(scratch) / "lake", Path(scratch) / "models"
        print(f"copying {args.lake} and {args.models} to {scratch}", flush=True)
        shutil.copytree(args.lake, lake, ignore=shutil.ignore_patterns("sample"))
        shutil.copytree(args.models, models)
        settings = Settings.from_env(
            {
                "CBI_LAKE": str(lake),
                "CBI_MODELS": str(models),
                "CBI_SOURCE": "sample",
                "CBI_PROFILE": args.profile,
            }
        )
        opens = globex_session(day)[0]
        service = build_service(settings, opens, pipeline="replay")
        symbols, records = lake_session(Lake(root=str(lake)), day)
        if args.minutes:
            cut = int((opens + dt.timedelta(minutes=args.minutes)).timestamp()) * 1_000_000_000
            records = itertools.takewhile(lambda r: sent_at(r) <= cut, records)
        began = time.perf_counter()
        fed = replay(service, symbols, records)
        service.stop()
        seconds = time.perf_counter() - began
    counts = service.counts
    latencies = np.array(counts.latencies_ms)
    print(
        f"session {day}: {fed:,} records, {counts.bars} bars, {counts.forecasts} forecasts of "
        f"{', '.join(sorted(service.horizons))}; without a model: {', '.join(counts.failed) or 'none'}"
    )
    stages = np.array(counts.stages_ms)
    print(
        "where a bar's time goes (p50 / p99 ms): "
        + ", ".join(
            f"{name} {np.percentile(stages[:, i], 50):.1f} / {np.percentile(stages[:, i], 99):.1f}"
            for i, name in enumerate(("features", "forecasts", "warehouse write"))
        )
    )
    print(
        f"live_p50_ms={np.percentile(latencies, 50):.1f} live_p99_ms={np.percentile(latencies, 99):.1f} "
        f"replay_bars_per_s={counts.bars / seconds:.1f}"
    )


if __name__ == "__main__":
    main()
