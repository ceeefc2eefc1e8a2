"""Cross-asset transfer: pairs of equal horizons, a shared-layer encoder that helps an asset with few
rows when the markets share a latent factor, a purged split that no later row can move, and the
Dagster asset on a small lake of two synthetic markets."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from cbi_assets.meta import transfer
from cbi_assets.meta.transfer import Side
from cbi_assets.profiles import PROFILES

SHARED, OWN = 16, 4
BUDGET = replace(
    PROFILES["sample"].meta,
    transfer_epochs=30,
    transfer_patience=5,
    encoder_units=32,
    latent=8,
    head_units=8,
    max_train_rows=None,
    few_rows=150,
)


def test_pairs_join_the_horizons_of_equal_length():
    pairs = [(p.zl, p.mes, p.bars) for p in transfer.horizon_pairs()]
    assert pairs == [("1w", "7d", 5), ("1m", "30d", 21), ("3m", "3m", 63), ("6m", "6m", 126), ("12m", "12m", 252)]
    assert transfer.horizon_pairs()[0].name == "1w_7d" and transfer.horizon_pairs()[0].horizon("MES") == "7d"


# --- Synthetic markets that share a latent factor ----------------------------------------------


def latent(shared: np.ndarray, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).normal(0.0, 1.0, shared.shape[1]) / np.sqrt(shared.shape[1])
    return np.tanh(2.0 * shared @ w)


def side(rng: np.random.Generator, rows: int, beta: float) -> Side:
    """A market whose return loads `beta` on the shared factor, plus a little of its own first feature."""
    shared = rng.standard_normal((rows, SHARED)).astype(np.float32)
    own = rng.standard_normal((rows, OWN)).astype(np.float32)
    y = 0.01 * (beta * latent(shared) + 0.3 * own[:, 0] + 0.3 * rng.standard_normal(rows))
    return Side(shared, own, y, np.ones(rows), np.exp(y))


def test_the_pre_trained_encoder_helps_the_market_with_few_rows():
    rng = np.random.default_rng(3)
    train = {"ZL": side(rng, 2000, 1.0), "MES": side(rng, 120, -0.8)}
    test = {"ZL": side(rng, 1000, 1.0), "MES": side(rng, 1000, -0.8)}
    table = transfer.compare(train, test, BUDGET, bars=1)
    mse = {(r["asset"], r["model"]): r["mse_vs_rw"] for r in table.iter_rows(named=True)}
    assert mse[("MES", "random_walk")] == 1.0
    # Measured: transfer 0.29, asset-only 0.35 of the random walk's MSE.
    assert mse[("MES", "transfer")] < 0.9 * mse[("MES", "asset_only")], mse
    assert mse[("MES", "transfer")] < 0.5
    # With plenty of its own rows, ZL learns the factor either way: transfer costs it little.
    assert mse[("ZL", "transfer")] < 0.5 and mse[("ZL", "asset_only")] < 0.5
    assert set(table["pretrain_rows"]) == {2120}


def market_frames(
    rows: int = 900, horizon: int = 5, seed: int = 5
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """(training sets, catalogues) of two markets on one calendar with the same shared layer."""
    rng = np.random.default_rng(seed)
    dates = [dt.date(2015, 1, 5) + dt.timedelta(days=i) for i in range(rows + horizon)]
    shared = rng.standard_normal((rows, SHARED)).astype(np.float32)
    factor = latent(shared)
    shared_names = [f"macro_{i}" for i in range(SHARED)]
    frames, catalogues = {}, {}
    for asset, beta in (("ZL", 1.0), ("MES", -0.8)):
        own = rng.standard_normal((rows, OWN)).astype(np.float32)
        y = 0.01 * (beta * factor + 0.3 * own[:, 0] + 0.3 * rng.standard_normal(rows))
        own_names = [f"{asset.lower()}_own_{i}" for i in range(OWN)]
        frames[asset] = pl.DataFrame(
            {
                "date": dates[:rows],
                "label_end": dates[horizon:],
                "forward_return": y,
                "forward_price": 100 * np.exp(y),
                "regime": "synthetic",
                "weight": 1.0,
                **{n: shared[:, i] for i, n in enumerate(shared_names)},
                **{n: own[:, i] for i, n in enumerate(own_names)},
            }
        )
        catalogues[asset] = pl.DataFrame(
            {"name": shared_names + own_names, "layer": ["shared/macro"] * SHARED + [asset] * OWN}
        )
    return frames, catalogues


def test_columns_split_into_the_shared_layer_and_each_markets_own():
    frames, catalogues = market_frames(60)
    # A shared-layer column one market lacks is that market's own, not shared.
    frames["MES"] = frames["MES"].drop("macro_3")
    shared, own = transfer.column_roles(catalogues, frames)
    assert shared == [f"macro_{i}" for i in range(SHARED) if i != 3]
    assert own["ZL"] == ["macro_3", *(f"zl_own_{i}" for i in range(OWN))]
    assert own["MES"] == [f"mes_own_{i}" for i in range(OWN)]


def test_the_split_is_purged_and_nothing_after_it_moves_the_training_side():
    frames, catalogues = market_frames()
    shared, own = transfer.column_roles(catalogues, frames)
    split = transfer.split_date(frames, 0.2)
    assert split == frames["ZL"]["date"][720]
    train, test = transfer.sides(frames, shared, own, split, None)
    purged = frames["ZL"].filter(pl.col("label_end") < split)
    assert train["ZL"].rows == purged.height == 720 - 5 and test["ZL"].rows == 180
    np.testing.assert_array_equal(train["ZL"].y, purged["forward_return"].to_numpy())

    # Every row whose label reaches the split, features and labels, changed wildly: the training side stays.
    def shake(frame: pl.DataFrame) -> pl.DataFrame:
        columns = [c for c in frame.columns if c not in ("date", "label_end", "regime", "weight")]
        return frame.with_columns(
            pl.when(pl.col("label_end") >= split).then(pl.col(c) * -7 + 3).otherwise(pl.col(c)).alias(c)
            for c in columns
        )

    shaken = {a: shake(f) for a, f in frames.items()}
    again, moved = transfer.sides(shaken, shared, own, split, None)
    for asset in frames:
        for name in ("shared", "own", "y"):
            np.testing.assert_array_equal(getattr(train[asset], name), getattr(again[asset], name))
        assert not np.array_equal(test[asset].y, moved[asset].y)


def test_transfer_comparison_reports_both_scenarios_beside_the_random_walk():
    frames, catalogues = market_frames()
    table = transfer.transfer_comparison(frames, catalogues, transfer.horizon_pairs()[0], BUDGET)
    assert table.height == 2 * 3 + 2 * 3  # all rows: both markets; few rows: each market once
    assert set(table["scenario"]) == {"all", "few"} and set(table["model"]) == set(transfer.MODELS)
    assert table.filter(pl.col("model") == "random_walk")["mse_vs_rw"].to_list() == [1.0] * 4
    few = table.filter(pl.col("scenario") == "few")
    assert few["train_rows"].to_list() == [BUDGET.few_rows] * 6
    assert table.filter(pl.col("asset") == "MES")["horizon"].unique().to_list() == ["7d"]
    assert table["shared_features"].unique().to_list() == [SHARED] and table["own_features"].unique().to_list() == [OWN]


def test_too_little_common_history_is_a_clear_error():
    frames, catalogues = market_frames(60)
    later = pl.duration(days=3650)
    frames["MES"] = frames["MES"].with_columns(pl.col("date") + later, pl.col("label_end") + later)
    with pytest.raises(ValueError, match="share 0 sessions"):
        transfer.transfer_comparison(frames, catalogues, transfer.horizon_pairs()[0], BUDGET)


# --- The Dagster asset -----------------------------------------------------------------------------


@pytest.mark.integration
def test_transfer_asset_stores_the_comparison_of_the_chosen_pairs(tmp_path):
    import dagster as dg

    from cbi_assets import lake as tables
    from cbi_assets.features.master import Table
    from cbi_assets.features.spec import FeatureSpec
    from cbi_assets.meta.assets import META_ASSETS
    from cbi_assets_tests.conftest import lake_resources

    resources = lake_resources(tmp_path)
    lake = resources["lake"]
    frames, catalogues = market_frames(400, horizon=63)
    for market in transfer.TRANSFER_MARKETS:
        frame = frames[market.symbol]
        lake.write(tables.TRAINING_SET, frame, market=market, horizon="3m")
        specs = [
            FeatureSpec(row["name"], row["layer"], "synthetic", "1d", None, "test", "")
            for row in catalogues[market.symbol].iter_rows(named=True)
        ]
        master = Table(frame.select("date", *(s.name for s in specs)), specs, ("date",))
        lake.write_features(tables.MASTER, master, "master_1d", market=market, timeframe="1d")
    asset_def = next(a for a in META_ASSETS if a.key == dg.AssetKey(["shared", "models", "transfer"]))

    def run(pairs: list[str]):
        config = {"ops": {"shared__models__transfer": {"config": {"pairs": pairs}}}}
        return dg.materialize([asset_def], resources=resources, run_config=config, raise_on_error=False)

    result = run(["3m_3m"])
    assert result.success
    stored = lake.read(tables.TRANSFER)
    assert set(stored["pair"]) == {"3m_3m"} and stored.height == 12
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert "asset_only" in metadata["comparison"].value and "image/png" in metadata["transfer_vs_asset_only"].value

    # A pair whose training sets are missing fails, naming the file, and leaves the stored table as it was.
    before = lake.path(tables.TRANSFER).read_bytes()
    failed = run(["6m_6m"])
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ZL/training/by_horizon/6m/all.parquet" in str(failure.event_specific_data.error.message)
    assert lake.path(tables.TRANSFER).read_bytes() == before
    assert not run(["2w_2w"]).success
