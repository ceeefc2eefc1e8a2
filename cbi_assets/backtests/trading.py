"""Trading backtest of a horizon's walk-forward forecasts: hold the forecast's sign (or its sign sized by
conviction) over the horizon, after costs, beside buy-and-hold on the same periods.

Trades do not overlap: inside each walk-forward fold (its test rows are consecutive) a position is taken
at every `horizon`-th origin and held for the horizon, so one move is counted once; the purge between
folds keeps their periods apart too. The period's return is the simple return exp(actual) - 1 of the
realised forward log return; every unit of position changed pays `cost_bps`.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

SIZINGS = ("sign", "conviction")


def trade_periods(frame: pl.DataFrame, horizon: int, *, key: str, sizing: str = "sign") -> pl.DataFrame:
    """The non-overlapping origins (every `horizon`-th row of each fold) with their position and return."""
    if sizing not in SIZINGS:
        raise ValueError(f"sizing={sizing!r}: choose one of {SIZINGS}")
    needed = {key, "fold", "forecast", "actual"} | ({"conviction"} if sizing == "conviction" else set())
    missing = needed - set(frame.columns)
    if missing:
        raise ValueError(f"the trading backtest needs columns {sorted(missing)}; found {frame.columns}")
    if horizon < 1:
        raise ValueError(f"horizon={horizon}: a position is held at least one row")
    size = pl.col("conviction").fill_null(0.0).clip(0.0, 1.0) if sizing == "conviction" else pl.lit(1.0)
    return (
        frame.sort(key)
        .filter((pl.int_range(pl.len()).over("fold") % horizon) == 0)
        .filter(pl.col("forecast").is_finite() & pl.col("actual").is_finite())
        .select(
            key,
            "fold",
            "forecast",
            "actual",
            (pl.col("forecast").sign() * size).alias("position"),
            (pl.col("actual").exp() - 1).alias("market_return"),
        )
    )


def net_returns(position: np.ndarray, market: np.ndarray, cost_bps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each period's return net of costs and the position traded into it (flat before the first)."""
    traded = np.abs(np.diff(position, prepend=0.0))
    return position * market - traded * cost_bps / 1e4, traded


def drawdown(returns: np.ndarray) -> np.ndarray:
    """Equity's fall from its running peak after each period (<= 0), equity starting at 1."""
    equity = np.cumprod(1.0 + returns)
    peak = np.maximum.accumulate(np.r_[1.0, equity])[1:]
    return equity / peak - 1.0


def performance(returns: np.ndarray, traded: np.ndarray, periods_per_year: float) -> dict:
    """Annualised return and Sharpe ratio, max drawdown, turnover per year and hit rate of `returns`."""
    n = returns.size
    spread = float(np.std(returns, ddof=1)) if n > 1 else 0.0
    years = n / periods_per_year
    equity = float(np.prod(1.0 + returns))
    return {
        "periods": n,
        "years": years,
        "total_return": equity - 1.0,
        "annual_return": equity ** (1 / years) - 1.0 if years > 0 and equity > 0 else math.nan,
        "sharpe": float(np.mean(returns) / spread * math.sqrt(periods_per_year)) if spread > 0 else 0.0,
        "max_drawdown": float(-drawdown(returns).min()) if n else 0.0,
        "turnover_per_year": float(traded.sum() / years) if years > 0 else math.nan,
        "hit_rate": float(np.mean(returns > 0)) if n else math.nan,
    }


def backtest(
    frame: pl.DataFrame, horizon: int, periods_per_year: float, cost_bps: float, *, key: str, sizing: str = "sign"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(periods: positions, returns, equity and drawdown of the strategy and buy-and-hold; summary: a row
    for each). `periods_per_year` counts rows; a period lasts `horizon` rows."""
    periods = trade_periods(frame, horizon, key=key, sizing=sizing)
    if periods.is_empty():
        raise ValueError("no walk-forward origin with a finite forecast and realised return to trade")
    market = periods["market_return"].to_numpy()
    per_year = periods_per_year / horizon
    summary, columns = [], []
    for name, position in (("strategy", periods["position"].to_numpy()), ("buy_and_hold", np.ones(market.size))):
        returns, traded = net_returns(position, market, cost_bps)
        summary.append({"strategy": name, **performance(returns, traded, per_year)})
        columns += [
            pl.Series(f"{name}_return", returns),
            pl.Series(f"{name}_equity", np.cumprod(1.0 + returns)),
            pl.Series(f"{name}_drawdown", drawdown(returns)),
        ]
    return periods.with_columns(columns), pl.DataFrame(summary)
