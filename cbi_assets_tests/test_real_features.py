"""The ZL master table built from the real files in ../shared/data/real (local-files source)."""

import datetime as dt

import polars as pl

from cbi_assets.features import inputs
from cbi_assets.features.layers import (
    SHARED_LAYERS,
    asset_layer,
    asset_master,
    shared_layer,
)
from cbi_assets.features.master import MIN_FEATURES
from cbi_assets.features.quality import Profile
from cbi_assets.raw.datasets import RAW_DATASETS
from resources.local_files import LocalFilesSource

START, END = dt.date(2000, 1, 1), dt.date(2019, 11, 5)


def test_zl_master_from_real_data(real_data, capsys):
    source = LocalFilesSource(root=str(real_data))
    records = {
        name: source.fetch(d, START, END)
        for name, d in RAW_DATASETS.items()
        if d.role == "macro"
        or name in ("zl_ohlcv_1d", "zs_ohlcv_1d", "zm_ohlcv_1d", "cl_ohlcv_1d", "ho_ohlcv_1d", "es_ohlcv_1d")
    }
    daily = {name.split("_")[0].upper(): frame for name, frame in records.items() if name.endswith("_ohlcv_1d")}
    continuous = inputs.continuous(daily)
    series = inputs.series(records)
    shared = [shared_layer(name, continuous, series) for name in SHARED_LAYERS]
    master = asset_master("zl", asset_layer("zl", continuous), shared)

    frame = master.frame
    profile = Profile().add(master)
    nulls, distinct = profile.nulls(), profile.distinct(MIN_FEATURES["daily"])
    with capsys.disabled():
        print(
            f"\nZL master from real data: {frame.height} rows ({frame['date'].min()}..{frame['date'].max()}), "
            f"{len(master.features)} features"
        )
        print(f"worst null shares after warm-up: {nulls.metadata['worst']}")
        whole = frame.select(pl.col(n).null_count() / pl.len() for n in master.features).row(0)
        print(f"null share over all rows: median {sorted(whole)[len(whole) // 2]:.3f}, max {max(whole):.3f}")
    assert 4900 <= frame.height <= 5050  # one row per session with a ZL settlement, 2000-2019
    assert len(master.features) >= MIN_FEATURES["daily"], distinct.summary
    assert distinct.passed, distinct.metadata
    assert nulls.passed, nulls.metadata["over_limit"]
    # The crush margin of real prices sits in its known range ($/bu).
    assert frame["crush_margin"].drop_nulls().is_between(-1.5, 5.0).all()
