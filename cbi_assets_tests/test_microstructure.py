"""MES microstructure: tick records to 1-minute rows, and the features on them, checked by hand."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cbi_assets.catalogue import FUTURES
from cbi_assets.features.microstructure import (
    BOOK_LEVELS,
    MINUTE_COLUMNS,
    microstructure_features,
    minute_microstructure,
)
from cbi_assets.features.spec import FeatureSet
from cbi_assets.raw.dbn import frame_from_store, open_dbn
from cbi_assets.sample import SampleConfig, build_sample

TICK = FUTURES["MES"].tick_size  # 0.25
T0 = dt.datetime(2024, 6, 27, 14, 0, tzinfo=dt.UTC)  # 09:00 Chicago, inside a session
UTC_NS = pl.Datetime("ns", "UTC")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def book_frame(states: list[tuple]) -> pl.DataFrame:
    """MBP-10 records from (seconds after T0, bid px, bid sizes, ask px, ask sizes[, action]).

    Sizes are per level from the best; missing levels hold 0. Deeper prices are not read.
    """
    rows = []
    for state in states:
        seconds, bid_px, bid_sz, ask_px, ask_sz, *action = state
        row = {
            "ts_recv": at(seconds),
            "instrument_id": 1,
            "action": action[0] if action else "A",
            "bid_px_00": bid_px,
            "ask_px_00": ask_px,
        }
        for i in range(BOOK_LEVELS):
            row[f"bid_sz_{i:02d}"] = bid_sz[i] if i < len(bid_sz) else 0
            row[f"ask_sz_{i:02d}"] = ask_sz[i] if i < len(ask_sz) else 0
        rows.append(row)
    schema = {
        "ts_recv": UTC_NS,
        "instrument_id": pl.UInt32,
        "action": pl.String,
        "bid_px_00": pl.Float64,
        "ask_px_00": pl.Float64,
    } | {f"{s}_sz_{i:02d}": pl.UInt32 for i in range(BOOK_LEVELS) for s in ("bid", "ask")}
    return pl.DataFrame(rows, schema=schema)


def trade_frame(trades: list[tuple]) -> pl.DataFrame:
    """Trades from (seconds after T0, price, size, aggressor side)."""
    return pl.DataFrame(
        [{"ts_recv": at(s), "price": p, "size": q, "side": side} for s, p, q, side in trades],
        schema={"ts_recv": UTC_NS, "price": pl.Float64, "size": pl.UInt32, "side": pl.String},
    )


def tbbo_frame(trades: list[tuple]) -> pl.DataFrame:
    """TBBO records from (seconds after T0, trade price, best bid, best ask before the trade)."""
    return pl.DataFrame(
        [{"ts_recv": at(s), "price": p, "bid_px_00": b, "ask_px_00": a} for s, p, b, a in trades],
        schema={"ts_recv": UTC_NS, "price": pl.Float64, "bid_px_00": pl.Float64, "ask_px_00": pl.Float64},
    )


NO_TRADES, NO_TBBO, NO_BOOK = trade_frame([]), tbbo_frame([]), book_frame([])


def minute(index: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=index)


def row(frame: pl.DataFrame, index: int) -> dict:
    found = frame.filter(pl.col("ts_event") == minute(index))
    assert found.height == 1, f"expected one row for minute {index}, got {found.height}"
    return found.row(0, named=True)


def features(tick_size: float = TICK) -> FeatureSet:
    fs = FeatureSet("MES/microstructure", "MES front 1-minute bars and ticks", "1min", "closed 1-minute bar")
    microstructure_features(fs, tick_size)
    return fs


def feature(frame: pl.DataFrame, name: str) -> pl.Series:
    """One feature on bars, with null minute columns where the frame has none (as without ticks);
    NaN, which the finished table stores as null, as null."""
    fs = features()
    absent = [c for c in MINUTE_COLUMNS if c not in frame.columns]
    frame = frame.with_columns(pl.lit(None, pl.Float64).alias(c) for c in absent)
    return fs.prepare(frame).select(fs.exprs[fs.names.index(name)]).to_series().fill_nan(None)


# --- Minute aggregation on hand-made records -------------------------------------------------------


def test_microprice_leans_toward_the_thin_side_and_spreads_are_in_ticks():
    book = book_frame(
        [
            # Minute 0: bid 100.00 x 10, ask 100.25 x 30. Microprice (100*30 + 100.25*10)/40 = 100.0625,
            # mid 100.125, so the deviation is -0.0625 / 0.25 = -0.25 ticks: the thin bid is about to go.
            (10, 100.00, [10], 100.25, [30]),
            # Minute 1: the same state (-0.25), then bid 100.00 x 20, ask 100.50 x 20 (deviation 0, spread 2).
            (70, 100.00, [10], 100.25, [30]),
            (80, 100.00, [20], 100.50, [20]),
        ]
    )
    out = minute_microstructure(NO_TRADES, NO_TBBO, book, TICK)
    assert row(out, 0)["microprice_dev"] == pytest.approx(-0.25)
    assert row(out, 0)["quoted_spread"] == pytest.approx(1.0)
    assert row(out, 1)["microprice_dev"] == pytest.approx((-0.25 + 0.0) / 2)
    assert row(out, 1)["quoted_spread"] == pytest.approx((1 + 2) / 2)


def test_order_flow_imbalance_sums_the_best_level_changes_of_each_minute():
    book = book_frame(
        [
            (5, 100.00, [10], 100.25, [20]),  # first record of the session: 0
            (10, 100.00, [15], 100.25, [20]),  # bid grows 10 -> 15 at the same price: +5
            (20, 100.00, [15], 100.25, [12]),  # ask shrinks 20 -> 12 at the same price: +8
            # Minute 1, compared with the last state of minute 0:
            (65, 100.25, [4], 100.50, [30]),  # bid up (+4 new bid), ask up (+12 old ask withdrawn): +16
            (70, 100.00, [25], 100.25, [7]),  # bid down (-4 old bid), ask down (-7 new ask): -11
        ]
    )
    out = minute_microstructure(NO_TRADES, NO_TBBO, book, TICK)
    assert row(out, 0)["ofi"] == 0 + 5 + 8  # 13
    assert row(out, 1)["ofi"] == 16 - 11  # 5


def test_order_flow_imbalance_restarts_each_session_and_counts_an_emptied_side():
    # 22:00 UTC is 17:00 Chicago in June: the record after it opens the next trade date's session.
    close = dt.datetime(2024, 6, 27, 20, 59, 30, tzinfo=dt.UTC)
    opening = dt.datetime(2024, 6, 27, 22, 0, 30, tzinfo=dt.UTC)
    book = book_frame(
        [
            (0, 100.00, [10], 100.25, [5]),
            (1, None, [0], 100.25, [5]),  # the bid side empties: -10 (old bid withdrawn)
            (2, 100.00, [6], 100.25, [5]),  # and refills: +6
            (3, 100.00, [6], None, [0]),  # the offer side empties: +5 (old offer withdrawn)
            (4, 100.00, [6], 100.25, [8]),  # and refills: -8
        ]
    )
    sessions = book_frame([(0, 100.00, [10], 100.25, [5]), (0, 120.00, [99], 120.25, [1])]).with_columns(
        pl.Series("ts_recv", [close, opening], dtype=UTC_NS)
    )
    out = minute_microstructure(NO_TRADES, NO_TBBO, book, TICK)
    assert row(out, 0)["ofi"] == -10 + 6 + 5 - 8
    across = minute_microstructure(NO_TRADES, NO_TBBO, sessions, TICK)
    # Without the restart the new session's first record would count 99 + 5 (bid and offer up) instead of 0.
    assert across["ofi"].to_list() == [0.0, 0.0]


def test_depth_imbalance_reads_the_top_levels_of_the_minutes_last_book():
    bid = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    ask = [30, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    book = book_frame(
        [
            (10, 100.00, ask, 100.25, bid),  # earlier in the minute, the mirror image: ignored
            (50, 100.00, bid, 100.25, ask),
        ]
    )
    out = row(minute_microstructure(NO_TRADES, NO_TBBO, book, TICK), 0)
    assert out["depth_imbalance_1"] == pytest.approx((10 - 30) / (10 + 30))  # -0.5
    assert out["depth_imbalance_5"] == pytest.approx((150 - 70) / (150 + 70))  # 4/11
    assert out["depth_imbalance_10"] == pytest.approx((550 - 120) / (550 + 120))  # 43/67


def test_trades_are_signed_by_their_aggressor_and_spreads_measured_against_the_mid():
    trades = trade_frame(
        [
            (1, 100.00, 5, "B"),  # buyer lifted the offer
            (2, 100.25, 3, "A"),  # seller hit the bid
            (3, 100.50, 2, "B"),
            (4, 100.00, 4, "N"),  # no aggressor: volume but no sign
        ]
    )
    tbbo = tbbo_frame(
        [
            (2, 100.25, 100.00, 100.25),  # mid 100.125: 2 * 0.125 / 0.25 = 1 tick
            (3, 100.50, 100.00, 100.50),  # mid 100.25: 2 * 0.25 / 0.25 = 2 ticks
        ]
    )
    out = row(minute_microstructure(trades, tbbo, NO_BOOK, TICK), 0)
    assert out["signed_volume"] == (5 + 2) - 3
    assert out["buy_share"] == pytest.approx(7 / 14)
    assert out["trade_count"] == 4
    assert out["mean_trade_size"] == pytest.approx(14 / 4)
    assert out["vwap"] == pytest.approx((100.00 * 5 + 100.25 * 3 + 100.50 * 2 + 100.00 * 4) / 14)  # 100.125
    assert out["effective_spread"] == pytest.approx((1 + 2) / 2)
    # No book records in the minute: no book updates and no OFI, the book's means unknown.
    assert (out["quote_count"], out["ofi"]) == (0, 0)
    assert out["microprice_dev"] is None and out["depth_imbalance_5"] is None


def test_records_count_in_the_minute_they_were_received():
    trades = trade_frame(
        [
            (59.9, 100.00, 1, "B"),
            (60.0002, 100.25, 2, "B"),  # happened before 14:01 on the exchange, known only after
        ]
    )
    book = book_frame(
        [(30, 100.00, [5], 100.25, [5]), (61, 100.00, [5], 100.25, [6]), (130, 100.00, [5], 100.25, [6], "T")]
    )
    out = minute_microstructure(trades, NO_TBBO, book, TICK)
    assert out["ts_event"].to_list() == [minute(0), minute(1), minute(2)]
    assert [row(out, i)["signed_volume"] for i in range(3)] == [1, 2, 0]
    # Minute 2 has a trade record in the book but no book update and no trade in the trades feed.
    assert row(out, 2)["quote_count"] == 0 and row(out, 1)["quote_count"] == 1
    assert row(out, 2)["trade_count"] == 0 and row(out, 2)["buy_share"] is None and row(out, 2)["vwap"] is None


# --- Features on hand-made 1-minute tables ---------------------------------------------------------


def bars_from_closes(close: np.ndarray, **columns) -> pl.DataFrame:
    n = len(close)
    return pl.DataFrame(
        {
            "ts_event": pl.datetime_range(T0, T0 + dt.timedelta(minutes=n - 1), "1m", time_zone="UTC", eager=True),
            "open": close,
            "high": close + TICK,
            "low": close - TICK,
            "close": close,
            "volume": np.full(n, 100),
            **columns,
        }
    )


def test_kyle_lambda_recovers_the_price_impact_per_contract():
    rng = np.random.default_rng(7)
    signed = rng.integers(-300, 300, 120).astype(np.float64)
    # log return = 2e-5 x signed volume exactly, so the slope is 2e-5 whatever the window.
    close = 5000 * np.exp(np.cumsum(2e-5 * signed))
    frame = bars_from_closes(close, signed_volume=signed)
    for n in (15, 60):
        kyle = feature(frame, f"mes_1min_kyle_lambda_{n}")
        assert kyle[:n].null_count() == n  # the first return needs the row before it
        assert np.allclose(kyle[n:].to_numpy(), 2e-5, rtol=1e-6)


def test_roll_spread_of_a_bid_ask_bounce_is_the_spread():
    # Trades at the bid (100.00) or the offer (100.25) of a fixed quote, q = +,-,+,+ repeating: a
    # quarter of the price changes are followed by a reversal, so cov(dc_t, dc_t-1) = -s^2/4 over
    # any 60 rows and Roll's 2 sqrt(s^2/4) = s = 1 tick.
    bounce = np.tile([100.25, 100.00, 100.25, 100.25], 30)
    roll = feature(bars_from_closes(bounce), "mes_1min_roll_spread_60")
    assert roll[:61].null_count() == 61
    assert np.allclose(roll[61:].to_numpy(), 1.0)
    # Plain alternation reverses every change: cov = -s^2, twice the spread.
    alternating = feature(bars_from_closes(np.tile([100.25, 100.00], 60)), "mes_1min_roll_spread_60")
    assert np.allclose(alternating[61:].to_numpy(), 2.0)
    # A steady trend has no reversals and no implied spread.
    trend = feature(bars_from_closes(100 + TICK * np.arange(120.0)), "mes_1min_roll_spread_60")
    assert np.allclose(trend[61:].to_numpy(), 0.0)


def test_bar_liquidity_proxies_by_hand():
    close = np.array([100.0, 101.0, 100.0] * 40)
    frame = bars_from_closes(close).with_columns(pl.Series("volume", np.tile([10, 20, 40], 40)))
    # From row 1 the close changes repeat: up on 20 contracts, down on 40, unchanged on 10. Over 15
    # rows that is 5 of each: tick-rule volume (5*20 - 5*40) / (5*70) = -2/7.
    tick_rule = feature(frame, "mes_1min_tick_rule_volume_15")
    assert tick_rule[15] == pytest.approx(-2 / 7) and tick_rule[:15].null_count() == 15
    # Amihud: |log(101/100)| / (20 * 101) and |log(100/101)| / (40 * 100) and 0, x 1e10, averaged.
    r = math.log(101 / 100)
    expected = (r / (20 * 101) + r / (40 * 100) + 0) / 3 * 1e10
    assert feature(frame, "mes_1min_amihud_60")[61] == pytest.approx(expected)
    # Corwin-Schultz on bars that all span 99.75-100.25: with h = ln(H/L), beta = 2 h^2 and gamma = h^2,
    # so alpha = (2 - sqrt 2) h / (3 - 2 sqrt 2) - h / sqrt(3 - 2 sqrt 2) = h, about the 2-tick range.
    flat = bars_from_closes(np.full(40, 100.0))
    k = 3 - 2 * math.sqrt(2)
    hl = math.log(100.25 / 99.75)
    alpha = (2 * hl - math.sqrt(2) * hl) / k - hl / math.sqrt(k)
    spread = max(0.0, 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha)))
    assert feature(flat, "mes_1min_corwin_schultz_30")[35] == pytest.approx(spread * 100 / TICK)
    assert spread > 0


def test_every_feature_is_named_once_with_a_window_that_matches_its_first_value():
    fs = features()
    assert 35 <= len(fs.names) <= 45 and all(n.startswith("mes_1min_") for n in fs.names)
    assert all(s.description for s in fs.specs)
    rng = np.random.default_rng(3)
    n = 200
    close = 5000 + TICK * np.cumsum(rng.integers(-2, 3, n))
    frame = bars_from_closes(close.astype(np.float64)).with_columns(
        high=pl.col("close") + TICK * pl.Series(rng.integers(0, 3, n)),
        low=pl.col("close") - TICK * pl.Series(rng.integers(0, 3, n)),
        volume=pl.Series(rng.integers(1, 500, n)),
        ofi=pl.Series(rng.normal(0, 300, n)),
        microprice_dev=pl.Series(rng.normal(0, 0.2, n)),
        quoted_spread=pl.Series(1 + rng.random(n)),
        effective_spread=pl.Series(1 + rng.random(n)),
        depth_imbalance_1=pl.Series(rng.uniform(-1, 1, n)),
        depth_imbalance_5=pl.Series(rng.uniform(-1, 1, n)),
        depth_imbalance_10=pl.Series(rng.uniform(-1, 1, n)),
        signed_volume=pl.Series(rng.normal(0, 100, n)),
        buy_share=pl.Series(rng.random(n)),
        trade_count=pl.Series(rng.integers(1, 50, n)),
        quote_count=pl.Series(rng.integers(0, 80, n)),
        mean_trade_size=pl.Series(1 + rng.random(n) * 10),
        vwap=pl.col("close") + 0.01,
    )
    out = fs.apply(frame, [])
    for spec in fs.specs:
        values = out[spec.name].fill_nan(None)  # NaN is stored as null
        first = int(values.is_not_null().arg_true()[0])
        assert first == (spec.warmup - 1 if spec.window else 0), (spec.name, first, spec.window)
        assert values[first:].is_not_null().all() and values[first:].is_finite().all(), spec.name


# --- The sample's ticks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_ticks(tmp_path_factory):
    folder = build_sample(
        SampleConfig(end=dt.date(2024, 6, 28), intraday_sessions=3, tick_sessions=2, trades_per_session=6000),
        tmp_path_factory.mktemp("micro_sample"),
    )

    def load(schema: str) -> pl.DataFrame:
        path = folder / "dbn" / "GLBX.MDP3" / f"MES.v.0.{schema}.dbn.zst"
        return frame_from_store(open_dbn(path, str(path)), str(path))

    return {s: load(s) for s in ("trades", "tbbo", "mbp-10", "ohlcv-1m")}


def master_table(ticks: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    minutes = minute_microstructure(ticks["trades"], ticks["tbbo"], ticks["mbp-10"], TICK)
    bars = ticks["ohlcv-1m"].select("ts_event", "open", "high", "low", "close", "volume").sort("ts_event")
    return minutes, bars.join(minutes, on="ts_event", how="left")


def test_sample_ticks_make_one_sane_row_per_minute(sample_ticks):
    minutes, master = master_table(sample_ticks)
    received = pl.concat([sample_ticks[s]["ts_recv"].dt.truncate("1m") for s in ("trades", "tbbo", "mbp-10")])
    assert minutes["ts_event"].to_list() == received.unique().sort().to_list()
    assert minutes["ofi"].is_finite().all() and (minutes["quoted_spread"] >= 1).all()
    assert (minutes["effective_spread"].drop_nulls() >= 1).all()
    assert minutes["trade_count"].sum() == sample_ticks["trades"].height
    assert minutes["signed_volume"].abs().le(minutes["trade_count"] * minutes["mean_trade_size"] + 1e-9).all()
    # Buying pressure moves the price: the sign of the minute's OFI goes with its return.
    moves = master.select(
        pl.col("ofi").sign().alias("ofi_sign"), (pl.col("close") / pl.col("close").shift(1)).log().alias("ret")
    ).drop_nulls()
    assert moves.height > 2_000
    assert moves.select(pl.corr("ofi_sign", "ret")).item() > 0.1


def test_nothing_after_a_time_changes_the_rows_before_it(sample_ticks):
    fs = features()
    cut = dt.datetime(2024, 6, 28, 14, 30, tzinfo=dt.UTC)
    minutes, master = master_table(sample_ticks)

    def disturb(frame: pl.DataFrame, shifts: dict[str, float], sizes: list[str]) -> pl.DataFrame:
        """From the cut on: a third of the records gone, prices moved, sizes changed, sides flipped."""
        late = pl.col("ts_recv") >= cut
        changed = [pl.when(late).then(pl.col(c) + shift).otherwise(pl.col(c)).alias(c) for c, shift in shifts.items()]
        changed += [pl.when(late).then(pl.col(c) * 3 + 1).otherwise(pl.col(c)).alias(c) for c in sizes]
        if "side" in frame.columns:
            changed.append(pl.when(late).then(pl.col("side").replace({"A": "B", "B": "A"})).otherwise(pl.col("side")))
        kept = frame.with_row_index("row").filter(~late | (pl.col("row") % 3 != 0)).drop("row")
        return kept.with_columns(changed)

    # Bids move a tick less than offers, so the spreads change as well as the levels.
    levels = {f"{s}_px_{i:02d}": 7.25 if s == "bid" else 7.5 for i in range(BOOK_LEVELS) for s in ("bid", "ask")}
    sizes = [f"{s}_sz_{i:02d}" for i in range(BOOK_LEVELS) for s in ("bid", "ask")]
    bars = sample_ticks["ohlcv-1m"]
    late_bar = pl.col("ts_event") >= cut
    disturbed = {
        "trades": disturb(sample_ticks["trades"], {"price": 7.5}, ["size"]),
        "tbbo": disturb(sample_ticks["tbbo"], {"price": 7.5, "bid_px_00": 7.25, "ask_px_00": 7.5}, ["size"]),
        "mbp-10": disturb(sample_ticks["mbp-10"], levels, sizes),
        "ohlcv-1m": bars.with_columns(
            *(
                pl.when(late_bar).then(pl.col(c) * 1.01).otherwise(pl.col(c)).alias(c)
                for c in ("open", "high", "low", "close")
            ),
            pl.when(late_bar).then(pl.col("volume") * 5).otherwise(pl.col("volume")).alias("volume"),
        ),
    }
    minutes_2, master_2 = master_table(disturbed)
    before = pl.col("ts_event") < cut
    assert minutes.filter(before).height > 1_000
    assert_frame_equal(minutes.filter(before), minutes_2.filter(before))
    original, changed = fs.apply(master, ["ts_event"]), fs.apply(master_2, ["ts_event"])
    assert_frame_equal(original.filter(before), changed.filter(before))
    # The disturbance reaches every feature, so the equality above is not for want of a change.
    unchanged = [n for n in fs.names if original.filter(~before)[n].equals(changed.filter(~before)[n])]
    assert unchanged == []
