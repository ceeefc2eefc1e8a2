"""Procurement backtest: a buyer who must take a fixed volume of soybean oil every calendar month times
the purchases inside the month from the walk-forward forecasts, against buying evenly every session
(TWAP) and buying everything on the month's first session.

The rule, at each session d of a month with n sessions (the exchange calendar is known in advance):
    even      = V / n, the TWAP quantity;
    signal    = forecast_d / scale_d, the forecast in units of the typical forecast size, where scale_d
                is the mean |forecast| of the `scale_window` origins before d (0 until `scale_min_rows`
                of them exist, so the rule starts as TWAP);
    tilt      = clip(1 + gain x signal, 0, cap): a forecast rise buys ahead of it, a fall defers;
    quantity  = tilt x remaining / sessions left, held between
                floor = remaining - cap x even x (sessions left - 1)  (what must be bought now for the rest
                        to fit under the cap) and
                ceiling = min(remaining, cap x even),
so the month always ends with exactly V bought, the last session buys what is left, and no session
buys more than `cap` even days. A forecast of zero gives TWAP exactly.

Timing: a forecast made at the close of session d uses that close, so it cannot also buy at that
settlement. With `lag` = 1 (the default) the quantity bought at session d's settlement `price` follows
the forecast made at d - 1; `lag` = 0 trades at the forecast's own origin, the optimistic reading. The
decision at d never reads a row dated after d.

Costs: every unit pays `cost_bps` (a side's fees and a tick, from the catalogue) plus `slippage_bps`
for each even day's volume bought in that session (a linear market-impact term, 0 by default), so
a strategy that concentrates its buying pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

POUNDS_PER_CONTRACT = 60_000  # CBOT soybean oil: prices in cents per pound, 60,000 lb a contract
SAVING_TOLERANCE = 1e-9  # relative to the price paid


@dataclass(frozen=True)
class ProcurementPlan:
    volume: float = 1_000.0  # contracts to buy every month
    cap: float = 3.0  # the most one session buys, in even days' volume (>= 1 keeps every month feasible)
    gain: float = 1.0  # how hard a forecast of one typical size tilts the day's quantity
    cost_bps: float = 3.0  # per unit bought, one side
    slippage_bps: float = 0.0  # per unit, per even day's volume bought in the same session
    scale_window: int = 252  # origins whose mean |forecast| sets the typical forecast size
    scale_min_rows: int = 20  # origins needed before the forecast tilts anything
    min_sessions: int = 15  # months with fewer sessions in the data (its first and last month) are left out
    lag: int = 1  # sessions between a forecast's origin and the purchase it steers

    def __post_init__(self) -> None:
        if self.volume <= 0:
            raise ValueError(f"volume={self.volume}: the monthly volume must be positive")
        if self.cap < 1:
            raise ValueError(f"cap={self.cap}: a session cap below 1 even day cannot buy the month's volume")
        if self.gain < 0 or self.cost_bps < 0 or self.slippage_bps < 0:
            raise ValueError("gain, cost_bps and slippage_bps must not be negative")
        if self.scale_window < 1 or self.scale_min_rows < 1 or self.min_sessions < 1:
            raise ValueError("scale_window, scale_min_rows and min_sessions must be at least 1")
        if self.lag < 0:
            raise ValueError(f"lag={self.lag}: a purchase cannot follow a forecast made after it")


def forecast_signal(forecast: np.ndarray, window: int, min_rows: int) -> np.ndarray:
    """Each forecast over the mean |forecast| of the `window` origins before it (0 before `min_rows`)."""
    size = np.abs(forecast)
    cumulative = np.r_[0.0, np.cumsum(size)]
    index = np.arange(forecast.size)
    start = np.maximum(index - window, 0)
    count = index - start
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (cumulative[index] - cumulative[start]) / count
        signal = np.where((count >= min_rows) & (scale > 0), forecast / scale, 0.0)
    return signal


def month_quantities(signal: np.ndarray, plan: ProcurementPlan) -> np.ndarray:
    """Quantities bought at each session of one month from each session's signal (see the module's rule)."""
    n = signal.size
    even = plan.volume / n
    bought = np.zeros(n)
    remaining = plan.volume
    for d in range(n):
        left = n - d
        tilt = float(np.clip(1.0 + plan.gain * signal[d], 0.0, plan.cap))
        floor = max(0.0, remaining - plan.cap * even * (left - 1))
        ceiling = min(remaining, plan.cap * even)
        quantity = remaining if left == 1 else max(floor, min(ceiling, tilt * remaining / left))
        bought[d] = quantity
        remaining -= quantity
    return bought


def _unit_cost(price: np.ndarray, quantity: np.ndarray, even: float, plan: ProcurementPlan) -> np.ndarray:
    """Cost per unit bought at each session, in price units."""
    return price * (plan.cost_bps + plan.slippage_bps * quantity / even) / 1e4


def procure(
    frame: pl.DataFrame, plan: ProcurementPlan = ProcurementPlan(), *, key: str = "date"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sessions and months of the procurement backtest from walk-forward forecasts.

    `frame`: a row per session with `key` (a date), `price` (settlement at the origin) and `forecast`
    (the forecast log return). Returns (sessions: quantities of the strategy, TWAP and first-day buyer;
    months: average prices paid, gross and after costs, and the strategy's savings against each benchmark
    in price units, % and dollars).
    """
    missing = {key, "price", "forecast"} - set(frame.columns)
    if missing:
        raise ValueError(f"the procurement backtest needs columns {sorted(missing)}; found {frame.columns}")
    rows = frame.select(key, "price", "forecast").sort(key)
    if rows[key].is_duplicated().any():
        raise ValueError(f"{key} repeats: the procurement backtest needs one row per session")
    if rows["price"].null_count() or not (rows["price"] > 0).all():
        raise ValueError("price has nulls or values <= 0: a purchase needs the settlement price of every session")
    if rows["forecast"].null_count() or not rows["forecast"].is_finite().all():
        raise ValueError("forecast has nulls or non-finite values: every session needs its forecast")
    signal = forecast_signal(rows["forecast"].to_numpy(), plan.scale_window, plan.scale_min_rows)
    rows = rows.with_columns(
        pl.Series("signal", signal).shift(plan.lag, fill_value=0.0), pl.col(key).dt.truncate("1mo").alias("month")
    )
    sessions, months = [], []
    for (month,), part in rows.partition_by("month", as_dict=True, maintain_order=True).items():
        n = part.height
        if n < plan.min_sessions:
            continue
        price = part["price"].to_numpy()
        even = plan.volume / n
        quantities = {
            "strategy": month_quantities(part["signal"].to_numpy(), plan),
            "twap": np.full(n, even),
            "first_day": np.r_[plan.volume, np.zeros(n - 1)],
        }
        sessions.append(part.with_columns(pl.Series(f"{name}_quantity", q) for name, q in quantities.items()))
        row = {"month": month, "sessions": n, "volume": plan.volume}
        for name, q in quantities.items():
            row[f"{name}_price"] = float(q @ price / plan.volume)
            row[f"{name}_paid"] = float(q @ (price + _unit_cost(price, q, even, plan)) / plan.volume)
            row[f"{name}_trades"] = int(np.count_nonzero(q > 1e-12))
        for bench in ("twap", "first_day"):
            saving = row[f"{bench}_paid"] - row["strategy_paid"]
            row[f"savings_vs_{bench}"] = saving
            row[f"savings_vs_{bench}_gross"] = row[f"{bench}_price"] - row["strategy_price"]
            row[f"savings_vs_{bench}_pct"] = 100 * saving / row[f"{bench}_paid"]
            row[f"savings_vs_{bench}_usd"] = saving / 100 * POUNDS_PER_CONTRACT * plan.volume
        months.append(row)
    if not months:
        raise ValueError(
            f"no month has {plan.min_sessions} sessions of forecasts ({rows.height} rows in all); "
            "lower min_sessions or give the backtest more walk-forward rows"
        )
    return pl.concat(sessions), pl.DataFrame(months).with_columns(
        pl.col("savings_vs_twap_usd").cum_sum().alias("cumulative_usd_vs_twap"),
        pl.col("savings_vs_first_day_usd").cum_sum().alias("cumulative_usd_vs_first_day"),
    )


def procurement_summary(months: pl.DataFrame) -> dict:
    """Totals over the months: average prices paid, savings against each benchmark and their hit rates."""
    out = {
        "months": months.height,
        "volume_per_month": float(months["volume"][0]),
        "first_month": months["month"].min(),
        "last_month": months["month"].max(),
    }
    for name in ("strategy", "twap", "first_day"):
        out[f"{name}_paid"] = float(months[f"{name}_paid"].mean())  # equal volume every month
    for bench in ("twap", "first_day"):
        out[f"savings_vs_{bench}"] = out[f"{bench}_paid"] - out["strategy_paid"]
        out[f"savings_vs_{bench}_pct"] = 100 * out[f"savings_vs_{bench}"] / out[f"{bench}_paid"]
        out[f"savings_vs_{bench}_usd"] = float(months[f"savings_vs_{bench}_usd"].sum())
        # A saving within rounding of nothing (a forecast of no change buys as TWAP) is not a hit.
        saved = months[f"savings_vs_{bench}"] > SAVING_TOLERANCE * months[f"{bench}_paid"]
        out[f"hit_rate_vs_{bench}"] = float(saved.mean())
        # Months do not overlap, so their savings are roughly independent: how far the mean is from 0.
        spread = months[f"savings_vs_{bench}"].std()
        out[f"t_stat_vs_{bench}"] = (
            float(months[f"savings_vs_{bench}"].mean() / spread * months.height**0.5) if spread and spread > 0 else 0.0
        )
    return out
