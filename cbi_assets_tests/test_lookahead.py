"""No look-ahead: change every input after a time t, rebuild the feature assets, and every row up to t
is unchanged.

The lakes are built as the graph builds them: the raw records stored in the lake, then every feature
asset materialized by Dagster, so the test covers the assets' own loaders as well as the transforms.
"""

import datetime as dt
import os
import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_assets import lake as tables
from cbi_assets.calendars import CHICAGO, trade_date
from cbi_assets.catalogue import MES, ZL
from cbi_assets.features.bars import settled_at
from cbi_assets.lake import Lake, raw_folder
from cbi_assets.raw.datasets import RAW_DATASETS
from cbi_assets_tests.conftest import feature_inputs, lake_resources, sample_records

CUT_DAY = dt.date(2023, 6, 28)  # daily tables: every input after this session changes


def perturb(records: dict, day: dt.date, moment: dt.datetime, settled_too: bool = False) -> dict:
    """Records of `day` and before (and intraday ones before `moment`) kept; everything later changed.

    With `settled_too`, the daily bars of `day` itself change as well: intraday rows before that
    session's settlement must not see it.

    Prices move by up to 5%, volumes and values change, and a fifth of the later rows disappear.
    FRED values dated on or after `day` change too (published the next session), and CPI values
    within the 45 days of its release lag.
    """
    rng = np.random.default_rng(3)
    out = {}
    for name, frame in records.items():
        dataset = RAW_DATASETS[name]
        if dataset.kind in ("trades", "tbbo", "mbp-10"):
            later = pl.col("ts_recv") >= moment
        elif dataset.intraday:
            later = pl.col("ts_event") >= moment
        elif name == "fred_cpiaucsl":
            later = pl.col("ts_event").dt.date() > day - dt.timedelta(days=45)
        elif dataset.role == "macro" or settled_too:
            later = pl.col("ts_event").dt.date() >= day
        else:
            later = pl.col("ts_event").dt.date() > day
        mask = frame.select(later.alias("m"))["m"]
        factor = pl.Series(1 + rng.uniform(-0.05, 0.05, frame.height))
        changes = []
        for column, dtype in frame.schema.items():
            if column in ("ts_event", "ts_recv", "instrument_id", "sequence", "publisher_id") or not dtype.is_numeric():
                continue
            changed = (
                (pl.col(column) * factor).cast(dtype) if dtype.is_float() else (pl.col(column) * 2 + 1).cast(dtype)
            )
            changes.append(pl.when(mask).then(changed).otherwise(pl.col(column)).alias(column))
        kept = pl.Series(rng.uniform(size=frame.height) > 0.2) | ~mask
        out[name] = frame.with_columns(changes).filter(kept)
    return out


def rebuilt(original, records: dict, since: dt.date, root) -> Lake:
    """A lake holding the original lake's raw records before `since` and `records` from `since` on, with
    every feature asset materialized on it."""
    from cbi_assets.features.assets import FEATURE_ASSETS
    from cbi_assets.raw.ingest import ingest

    lake = Lake(root=str(root))
    now = dt.datetime.now(dt.UTC)
    for name, frame in records.items():
        dataset = RAW_DATASETS[name]
        # Stored versions are never rewritten in place, so the copy can share their files (not the writers' lock).
        shutil.copytree(
            raw_folder(original, dataset),
            raw_folder(root, dataset),
            copy_function=os.link,
            ignore=shutil.ignore_patterns(".lock"),
        )
        store = lake.raw(dataset)
        for day in store.days(since):  # a day the perturbation emptied must not keep its old records
            shutil.rmtree(store.day_dir(day))
        if frame.height:  # ingest stores the days from `since` on (a session's day is its trade date)
            ingest(
                dataset,
                frame,
                store,
                since,
                frame["ts_event"].max().date() + dt.timedelta(days=1),
                origin="perturbed sample",
                received_at=now,
            )
    assert dg.materialize(FEATURE_ASSETS, resources=lake_resources(root)).success
    return lake


@pytest.fixture(scope="module")
def before_and_after(feature_lake, sample_folder, tmp_path_factory):
    original, _ = feature_lake
    records = sample_records(sample_folder, start="2016-01-01")  # what the feature lake stores
    sessions = records["mes_ohlcv_1m"].select(pl.col("ts_event")).to_series()
    # The intraday cut: 10:07 Chicago in the first of the two tick sessions, so ticks lie on both
    # sides and the cut falls inside a bar of every timeframe from 5 minutes to 4 hours.
    day = records["mes_trades"].select(trade_date(pl.col("ts_event"))).to_series().min()
    moment = dt.datetime.combine(day, dt.time(10, 7), CHICAGO).astimezone(dt.UTC)
    assert sessions.min() < moment < sessions.max()
    # The perturbation changes nothing before CPI's 45 days of release lag; a margin beyond it.
    before = dt.timedelta(days=60)
    intraday = rebuilt(
        original, perturb(records, day, moment, settled_too=True), day - before, tmp_path_factory.mktemp("intraday_cut")
    )
    daily = rebuilt(
        original,
        perturb(records, CUT_DAY, pl.select(settled_at(pl.lit(CUT_DAY))).item()),
        CUT_DAY - before,
        tmp_path_factory.mktemp("daily_cut"),
    )
    return Lake(root=str(original)), daily, intraday, moment


# Each table by its name in the feature catalogue, with the lake parts that locate it.
DAILY_TABLES = {
    **{
        f"shared_{layer}": (tables.SHARED_LAYER, {"layer": layer})
        for layer in ("macro", "volatility", "fx", "cross_asset")
    },
    **{
        f"{m.key}_{kind}_1d": (table, {"market": m, "timeframe": "1d"} if kind == "master" else {"market": m})
        for m in (ZL, MES)
        for kind, table in (("layer", tables.MARKET_LAYER), ("master", tables.MASTER))
    },
}
INTRADAY_TABLES = {
    "mes_microstructure_1min": (tables.MICROSTRUCTURE, {}),
    **{
        f"mes_master_{tf}": (tables.MASTER, {"market": MES, "timeframe": tf})
        for tf in ("1min", "5min", "15min", "30min", "1h", "4h")
    },
}


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
@pytest.mark.parametrize("name", DAILY_TABLES)
def test_daily_rows_up_to_the_cut_ignore_the_future(before_and_after, name):
    original, changed, _, _ = before_and_after
    table, parts = DAILY_TABLES[name]
    past = pl.col("date") <= CUT_DAY
    before, after = original.read(table, **parts), changed.read(table, **parts)
    assert before.filter(past).height > 1000
    assert before.filter(past).equals(after.filter(past), null_equal=True)
    # The later rows did change, so the test could have seen a leak.
    assert not before.filter(~past).equals(after.filter(~past).head(before.filter(~past).height), null_equal=True)


@pytest.mark.integration
@pytest.mark.xdist_group("feature_lake")
@pytest.mark.parametrize("name", INTRADAY_TABLES)
def test_intraday_rows_up_to_the_cut_ignore_the_future(before_and_after, name):
    original, _, changed, moment = before_and_after
    table, parts = INTRADAY_TABLES[name]
    past = pl.col("ts") <= moment
    before, after = original.read(table, **parts), changed.read(table, **parts)
    assert before.filter(past).filter(pl.col("mes_1min_ofi_sum_15").is_not_null()).height > 0  # ticks before the cut
    assert before.filter(past).equals(after.filter(past), null_equal=True)
    assert not before.filter(~past).equals(after.filter(~past), null_equal=True)


def test_a_table_built_in_chunks_equals_the_table_built_whole(sample_folder):
    from cbi_assets.features.layers import (
        SHARED_LAYERS,
        asset_layer,
        asset_master,
        shared_layer,
    )
    from cbi_assets.features.master import (
        intraday_context,
        intraday_master,
        intraday_master_parts,
        microstructure_table,
    )

    continuous, series, minutes, ticks = feature_inputs(sample_records(sample_folder, start="2022-01-01"))
    shared = [shared_layer(name, continuous, series) for name in SHARED_LAYERS]
    mes_daily = asset_master("mes", asset_layer("mes", continuous), shared)
    micro = microstructure_table(minutes, ticks["trades"], ticks["tbbo"], ticks["mbp_10"], part_rows=minutes.height)
    # The microstructure table is built in parts of minutes as well: here 83 parts of 997.
    micro_parts = microstructure_table(minutes, ticks["trades"], ticks["tbbo"], ticks["mbp_10"], part_rows=997)
    assert -(-minutes.height // 997) == 83 and micro.frame["mes_1min_ofi_sum_60"].is_not_null().sum() > 1_000
    assert_frame_equal(micro_parts.frame, micro.frame, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
    context = intraday_context(minutes, micro, mes_daily)
    for timeframe in ("1min", "15min"):
        whole = intraday_master(context, timeframe).frame
        parts = [build() for build in intraday_master_parts(context, timeframe, chunk_sessions=7)]
        assert len(parts) == 9  # 60 sessions, 7 at a time
        # Rolling sums update incrementally, so their last bits depend on where a run started.
        assert_frame_equal(pl.concat([p.frame for p in parts]), whole, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
