"""Listed futures contracts: expiries, volume rolls and stable instrument ids, by exchange rule.

Business days are XNYS sessions, which CBOT, NYMEX and CME share for settlement.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass

import numpy as np

from cbi_assets.catalogue import FUTURES, MONTH_CODES

_AGS = ("ZL", "ZS", "ZM")
_EQUITY = ("ES", "MES")
# Sessions before the rule's reference day on which the next contract takes the volume lead.
_AGS_ROLL_BEFORE_FIRST_NOTICE = 4
_ENERGY_ROLL_BEFORE_EXPIRY = 5
# CME's equity roll date is the Thursday eight calendar days before the third Friday.
_EQUITY_ROLL_DAYS = 8


@dataclass(frozen=True)
class Contract:
    symbol: str
    year: int
    month: int
    expiry: dt.date  # last trade date
    roll: dt.date  # first session on which the next contract trades more

    @property
    def code(self) -> str:
        return MONTH_CODES[self.month - 1]

    @property
    def raw_symbol(self) -> str:
        """The exchange symbol with a one-digit year, as Databento spells it: ZLZ4, MESH5."""
        return f"{self.symbol}{self.code}{self.year % 10}"

    @property
    def instrument_id(self) -> int:
        # The one-digit raw symbol repeats every decade; the two-digit name keeps ids distinct.
        return zlib.crc32(f"{self.symbol}{self.code}{self.year % 100:02d}".encode())


def third_friday(year: int, month: int) -> dt.date:
    """The expiry day of quarterly equity index futures."""
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def _last_day_of_previous_month(year: int, month: int) -> dt.date:
    return dt.date(year, month, 1) - dt.timedelta(days=1)


class _BusinessDays:
    def __init__(self, days: np.ndarray):
        self.days = days

    def on_or_before(self, day: dt.date, back: int = 0) -> dt.date:
        i = int(np.searchsorted(self.days, np.datetime64(day), side="right")) - 1 - back
        return self.days[i].astype(dt.date)

    def before(self, day: dt.date, back: int = 1) -> dt.date:
        i = int(np.searchsorted(self.days, np.datetime64(day), side="left")) - back
        return self.days[i].astype(dt.date)

    def on_or_after(self, day: dt.date) -> dt.date:
        return self.days[int(np.searchsorted(self.days, np.datetime64(day), side="left"))].astype(dt.date)


def _expiry_and_roll(symbol: str, year: int, month: int, days: _BusinessDays) -> tuple[dt.date, dt.date]:
    if symbol in _AGS:
        # CBOT: last trade the business day before the 15th; first notice day is the last
        # business day of the month before delivery, and volume leaves ahead of it.
        expiry = days.before(dt.date(year, month, 15))
        first_notice = days.on_or_before(_last_day_of_previous_month(year, month))
        return expiry, days.on_or_before(first_notice, back=_AGS_ROLL_BEFORE_FIRST_NOTICE)
    if symbol == "CL":
        # NYMEX WTI: three business days before the 25th of the prior month, counted from the last
        # business day before the 25th when the 25th is not one.
        prior = _last_day_of_previous_month(year, month)
        the_25th = dt.date(prior.year, prior.month, 25)
        reference = days.on_or_before(the_25th)
        expiry = days.before(reference, back=3)
        return expiry, days.before(expiry, back=_ENERGY_ROLL_BEFORE_EXPIRY)
    if symbol == "HO":
        # NYMEX ULSD: the last business day of the month before delivery.
        expiry = days.on_or_before(_last_day_of_previous_month(year, month))
        return expiry, days.before(expiry, back=_ENERGY_ROLL_BEFORE_EXPIRY)
    if symbol in _EQUITY:
        expiry = days.on_or_before(third_friday(year, month))
        return expiry, days.on_or_after(third_friday(year, month) - dt.timedelta(days=_EQUITY_ROLL_DAYS))
    raise KeyError(f"no expiry rule for futures symbol {symbol!r}; add one to cbi_assets/sample/contracts.py")


def contract_chain(symbol: str, first_year: int, last_year: int, business_days: np.ndarray) -> list[Contract]:
    """Every listed contract of `symbol` delivering from `first_year` to `last_year`, by expiry."""
    months = [MONTH_CODES.index(code) + 1 for code in FUTURES[symbol].contract_months]
    days = _BusinessDays(business_days)
    chain = []
    for year in range(first_year, last_year + 1):
        for month in months:
            expiry, roll = _expiry_and_roll(symbol, year, month, days)
            chain.append(Contract(symbol, year, month, expiry, roll))
    return sorted(chain, key=lambda c: c.expiry)


def nearest_two(chain: list[Contract], days: np.ndarray) -> np.ndarray:
    """Index into `chain` of the nearest unexpired contract on each day (the next is index + 1)."""
    expiries = np.array([c.expiry for c in chain], dtype="datetime64[D]")
    nearest = np.searchsorted(expiries, days, side="left")  # a contract still trades on its expiry
    if nearest.max(initial=0) + 1 >= len(chain):
        raise ValueError(f"the {chain[0].symbol} contract chain ends too early for {days.max()}")
    return nearest
