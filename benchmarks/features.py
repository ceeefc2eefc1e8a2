"""Feature-building speed: every MES master table from N 1-minute bars, beside `ta` and TA-Lib.

    .venv/bin/python benchmarks/features.py                  # 3,700 sessions: about 5 million bars
    .venv/bin/python benchmarks/features.py --sessions 740   # about 1 million

The sample writes the bars (not timed). Timed end to end: from the raw records to every MES
master table (1d, 1min, 5min, 15min, 30min, 1h, 4h) with the shared layer and microstructure, each
written to Parquet and checked by the product's own path, the one its asset runs: intraday tables
are built in parts of about 140,000 rows (PART_ROWS in master.py) streamed into one file
(tables.stream_table), each part taken into the checks' profile (quality.Profile) as it passes, so
a long history never sits whole in memory.

Peers, on the same bars:
- `ta.add_all_ta_features` (pandas), on a slice of the rows;
- TA-Lib (C) and our path for the core indicators both compute (RSI, ATR, MACD, SMA, EMA and
  Bollinger bands): the compiled single pass the feature families use (features/kernels.py).

The last line is `features_rows_per_s=<n> ta_ratio=<n> talib_ratio=<n> peak_rss_mb=<n>`:
- `ta_ratio` is our end-to-end rows/s over ta's rows/s;
- `talib_ratio` is our core-indicator rows/s over TA-Lib's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

from cbi_assets.catalogue import INTRADAY_TIMEFRAMES
from cbi_assets.features import inputs
from cbi_assets.features.kernels import CoreWindows, with_core
from cbi_assets.features.layers import (
    SHARED_LAYERS,
    asset_layer,
    asset_master,
    shared_layer,
)
from cbi_assets.features.master import (
    MIN_FEATURES,
    intraday_context,
    intraday_master_parts,
    microstructure_table,
)
from cbi_assets.features.quality import Profile
from cbi_assets.lake import MASTER, Lake
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets.sample import SampleConfig, build_sample
from resources.local_files import LocalFilesSource
from resources.sample_source import SampleSource

END = dt.date(2026, 10, 30)
TA_ROWS = 20_000  # `ta` is slow; its rows/s come from a slice


def build_masters(records: dict, out: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """Every MES master table from raw records, each written and checked as its asset does, into a scratch
    lake at `out`. Returns (minute rows, shapes)."""
    lake = Lake(root=str(out))
    continuous = inputs.continuous(
        {s: records[f"{s.lower()}_ohlcv_1d"] for s in ("ZL", "ZS", "ZM", "CL", "HO", "ES", "MES")}
    )
    series = inputs.series(records)
    minutes = inputs.minutes(records["mes_ohlcv_1m"], continuous["mes"])
    shared = [shared_layer(name, continuous, series) for name in SHARED_LAYERS]
    mes_daily = asset_master("mes", asset_layer("mes", continuous), shared)
    lake.write_features(MASTER, mes_daily, "mes_master_1d", market="MES", timeframe="1d")
    profiles = {"1d": Profile().add(mes_daily)}
    micro = microstructure_table(minutes, records["mes_trades"], records["mes_tbbo"], records["mes_mbp_10"])
    context = intraday_context(minutes, micro, mes_daily)
    for timeframe in INTRADAY_TIMEFRAMES:
        profiles[timeframe] = Profile()
        lake.stream_features(
            MASTER,
            intraday_master_parts(context, timeframe),
            f"mes_master_{timeframe}",
            profiles[timeframe].add,
            market="MES",
            timeframe=timeframe,
        )
    for timeframe, profile in profiles.items():
        minimum = MIN_FEATURES["daily" if timeframe == "1d" else "intraday"]
        failed = [check for check, found in profile.findings(timeframe, minimum).items() if not found.passed]
        if failed:
            print(f"master {timeframe}: checks failed: {failed}")
    return minutes.height, {timeframe: (p.rows, len(p.specs)) for timeframe, p in profiles.items()}


CORE = CoreWindows(rsi=(14,), atr=(14,), ema=(20,), rolling=(20,), macd=((12, 26, 9),))


def core_ours(bars: pl.DataFrame) -> pl.DataFrame:
    """The product's path for these indicators: the compiled pass, then the bands from its mean and
    standard deviation (the MACD as a fraction of price, as the features use it)."""
    k = with_core(bars, "", CORE, "k_")
    return k.select(
        "k_rsi_14",
        "k_atr_14",
        "k_mean_20",
        "k_ema_20",
        "k_macd_12_26_9",
        "k_macd_signal_12_26_9",
        "k_macd_hist_12_26_9",
        (pl.col("k_mean_20") + 2 * pl.col("k_std_20")).alias("boll_upper"),
        (pl.col("k_mean_20") - 2 * pl.col("k_std_20")).alias("boll_lower"),
    )


def core_talib(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> None:
    import talib

    talib.RSI(close, 14)
    talib.ATR(high, low, close, 14)
    talib.MACD(close, 12, 26, 9)
    talib.SMA(close, 20)
    talib.EMA(close, 20)
    talib.BBANDS(close, 20, 2, 2)


def best_of(runs: int, call) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sessions", type=int, default=3_700, help="MES sessions of 1-minute bars (1,380 minutes each)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cbi-features-"))
    try:
        config = SampleConfig(end=END, intraday_sessions=args.sessions, tick_sessions=2)
        folder = build_sample(config, work / "sample")
        source = LocalFilesSource(root=str(folder))
        coverage = SampleSource(
            cache_dir=str(work), end=END.isoformat(), intraday_sessions=args.sessions, tick_sessions=2
        )
        records = {name: source.fetch(d, *coverage.coverage(d)) for name, d in RAW_DATASETS.items()}
        (work / "out").mkdir()

        began = time.perf_counter()
        rows, shapes = build_masters(records, work / "out")
        built = time.perf_counter() - began
        ours = rows / built
        for timeframe, (n, features) in shapes.items():
            print(f"master {timeframe:5s}  {n:>10,} rows x {features} features")
        print(f"all MES master tables from {rows:,} 1-minute bars in {built:.1f} s: {ours:,.0f} rows/s end to end")

        bars = records["mes_ohlcv_1m"].select("open", "high", "low", "close", pl.col("volume").cast(pl.Float64))
        high, low, close = (bars[c].to_numpy() for c in ("high", "low", "close"))
        talib_s = best_of(7, lambda: core_talib(high, low, close))
        ours_core_s = best_of(7, lambda: core_ours(bars))
        print(
            f"core indicators on {bars.height:,} rows: ours {bars.height / ours_core_s:,.0f} rows/s, "
            f"TA-Lib {bars.height / talib_s:,.0f} rows/s"
        )

        import ta

        frame = bars.head(TA_ROWS).to_pandas()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ta_s = best_of(
                3, lambda: ta.add_all_ta_features(frame, "open", "high", "low", "close", "volume", fillna=False)
            )
        ta_rate = TA_ROWS / ta_s
        print(f"ta.add_all_ta_features on {TA_ROWS:,} rows: {ta_rate:,.0f} rows/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"features_rows_per_s={ours:.0f} ta_ratio={ours / ta_rate:.1f} "
        f"talib_ratio={(bars.height / ours_core_s) / (bars.height / talib_s):.2f} peak_rss_mb={peak:.0f}"
    )


if __name__ == "__main__":
    main()
