"""MES instrument definitions: the record a Databento definition download holds for each contract."""

from __future__ import annotations

import datetime as dt

import databento_dbn as dbn
import numpy as np
import polars as pl

from cbi_assets.catalogue import FUTURES, GLOBEX_OPEN
from cbi_assets.raw.dbn import empty_records
from cbi_assets.sample.contracts import third_friday
from cbi_assets.sample.sessions import chicago_ns, globex_open_ns

PRICE_UNIT = 1_000_000_000  # DBN fixed-point prices
MES_MULTIPLIER = 5  # dollars per index point
# Equity index futures stop at the Special Opening Quotation on expiry day.
_EXPIRY_TIME = dt.time(8, 30)
# A quarterly contract is listed when the one five quarters before it expires.
_LISTED_QUARTERS_AHEAD = 5
# CME's final daily price limit on equity index futures, from the prior settlement.
_PRICE_LIMIT = 0.20
_UNDEF_I32 = 2_147_483_647


def _activation_ns(year: int, month: int, listed_ns: int) -> int:
    months = year * 12 + (month - 1) - 3 * _LISTED_QUARTERS_AHEAD
    activation = chicago_ns(third_friday(months // 12, months % 12 + 1), _EXPIRY_TIME)
    return max(activation, listed_ns)


def mes_definitions(bars: pl.DataFrame, window: list[dt.date]) -> np.ndarray:
    """One definition record per session of `window` and listed contract (the nearest two).

    `bars` are the MES daily bars of both contracts (integer ticks); each record is stamped at
    its session's 17:00 open and carries price limits around the previous settlement.
    """
    mes = FUTURES["MES"]
    tick_fixed = round(mes.tick_size * PRICE_UNIT)
    listed_ns = chicago_ns(mes.listed - dt.timedelta(days=1), GLOBEX_OPEN)
    rows = (
        bars.sort("date")
        .with_columns(reference=pl.col("close").shift(1).over("instrument_id"))
        .with_columns(reference=pl.col("reference").fill_null(pl.col("open")))  # first day listed
        .filter(pl.col("date").is_in(window))
        .sort("date", "instrument_id")
    )
    n = rows.height
    records = empty_records("definition", n)
    session_open_ns = dict(zip(window, globex_open_ns(np.array(window, dtype="datetime64[D]")).tolist(), strict=False))

    expiry_dates = rows["expiration"].to_list()
    raw_symbols = rows["raw_symbol"].to_list()
    # The contract's year comes from its expiry; the raw symbol holds a single digit.
    years = [d.year for d in expiry_dates]
    months = [d.month for d in expiry_dates]
    reference = rows["reference"].to_numpy().astype(np.int64)

    records["ts_event"] = [session_open_ns[d] for d in rows["date"].to_list()]
    records["ts_recv"] = records["ts_event"]
    records["instrument_id"] = rows["instrument_id"].to_numpy()
    records["raw_symbol"] = [s.encode() for s in raw_symbols]
    records["asset"] = b"MES"
    records["group"] = b"ES"
    records["exchange"] = b"XCME"
    records["security_type"] = b"FUT"
    records["instrument_class"] = b"F"
    records["cfi"] = b"FFIXSX"
    records["currency"] = b"USD"
    records["settl_currency"] = b"USD"
    records["unit_of_measure"] = b"IPNT"
    records["match_algorithm"] = b"F"
    records["security_update_action"] = b"A"
    records["user_defined_instrument"] = b"N"
    records["expiration"] = [chicago_ns(d, _EXPIRY_TIME) for d in expiry_dates]
    records["activation"] = [_activation_ns(y, m, listed_ns) for y, m in zip(years, months, strict=False)]
    records["min_price_increment"] = tick_fixed
    records["display_factor"] = PRICE_UNIT
    records["unit_of_measure_qty"] = MES_MULTIPLIER * PRICE_UNIT
    records["min_price_increment_amount"] = round(mes.tick_size * MES_MULTIPLIER * PRICE_UNIT)
    high_limit = np.floor(reference * (1 + _PRICE_LIMIT)).astype(np.int64)
    low_limit = np.ceil(reference * (1 - _PRICE_LIMIT)).astype(np.int64)
    records["high_limit_price"] = high_limit * tick_fixed
    records["low_limit_price"] = low_limit * tick_fixed
    records["max_price_variation"] = 60 * PRICE_UNIT
    for name in ("price_ratio", "strike_price", "leg_price", "leg_delta"):
        records[name] = dbn.UNDEF_PRICE
    for name in ("contract_multiplier", "decay_quantity", "original_contract_size"):
        records[name] = _UNDEF_I32
    records["min_lot_size_round_lot"] = 1
    records["max_trade_vol"] = 3000
    records["min_trade_vol"] = 1
    records["market_depth"] = 10
    records["maturity_year"] = years
    records["maturity_month"] = months
    records["maturity_day"] = 255
    records["maturity_week"] = 255
    records["decay_start_date"] = 65535
    records["main_fraction"] = 255
    records["price_display_format"] = 255
    records["sub_fraction"] = 255
    records["underlying_product"] = 5  # equity index
    records["contract_multiplier_unit"] = 127
    records["flow_schedule_type"] = 127
    records["tick_rule"] = 255
    return records
