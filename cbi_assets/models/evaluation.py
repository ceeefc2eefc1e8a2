"""Walk-forward evaluation: out-of-fold forecasts and the metrics every family is judged by.

All metrics compare a forecast of the forward log return with what happened, on test rows only:
- mape: mean absolute percentage error of the price derived from the forecast (price x e^return);
- rmse, mae: of the return;
- mase: MAE over the random walk's MAE on the same rows (below 1 beats the random walk);
- directional_accuracy: the share of rows that moved whose sign is right (a price that did not
  move has no direction to call: minute bars often close unchanged); a forecast of no change
  scores half;
- sharpe: annualised Sharpe ratio of holding the forecast's sign over each horizon, net of costs.

Beside them, the Diebold-Mariano test of the absolute errors against the random walk's
(`significance`): on every row (scope overall) and on the most recent third of the folds (scope
recent, which also gets its own metrics). Whether that is an edge is the leaderboard's call.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from cbi_assets.models.significance import DieboldMariano, edge, recent_rows

METRICS = ("mape", "rmse", "mae", "mase", "directional_accuracy", "sharpe")
EDGE = ("dm_statistic", "dm_p_value", "dm_outcomes")  # against the random walk, on the overall and recent rows


def sign_returns(actual: np.ndarray, forecast: np.ndarray, horizon: int, cost_bps: float) -> np.ndarray:
    """Net log returns of holding sign(forecast) over each horizon, on non-overlapping origins.

    Taking every `horizon`-th row keeps the trades apart, so one move is not counted `horizon`
    times; a change of position pays `cost_bps` per unit traded.
    """
    position = np.sign(forecast[::horizon])
    traded = np.abs(np.diff(position, prepend=0.0))
    return position * actual[::horizon] - traded * cost_bps / 1e4


def metrics(
    actual: np.ndarray,
    forecast: np.ndarray,
    price: np.ndarray,
    forward_price: np.ndarray,
    *,
    horizon: int,
    periods_per_year: float,
    cost_bps: float,
) -> dict[str, float]:
    """The metrics of one set of test rows (a fold, a regime, or all of them)."""
    if len(actual) == 0:
        return dict.fromkeys(METRICS, math.nan)
    error = forecast - actual
    mae = float(np.mean(np.abs(error)))
    naive = float(np.mean(np.abs(actual)))  # the random walk forecasts a return of zero
    moved = actual != 0
    hit = np.where(forecast[moved] == 0, 0.5, np.sign(forecast[moved]) == np.sign(actual[moved]))
    net = sign_returns(actual, forecast, horizon, cost_bps)
    spread = float(np.std(net, ddof=1)) if len(net) > 1 else 0.0
    return {
        "mape": float(np.mean(np.abs(price * np.exp(forecast) - forward_price) / forward_price) * 100),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": mae,
        "mase": mae / naive if naive > 0 else math.nan,
        "directional_accuracy": float(np.mean(hit)) if hit.size else math.nan,
        "sharpe": float(np.mean(net) / spread * math.sqrt(periods_per_year / horizon)) if spread > 0 else 0.0,
    }


def scored(oof: pl.DataFrame, *, horizon: int, periods_per_year: float, cost_bps: float) -> pl.DataFrame:
    """Metrics per fold, per regime, overall and on the most recent third of the folds: columns scope
    (fold/regime/overall/recent), group, rows, METRICS and, on the overall and recent rows, EDGE."""

    def row(scope: str, group: str, part: pl.DataFrame, test: DieboldMariano | None = None) -> dict:
        values = metrics(
            *(part[c].to_numpy() for c in ("actual", "forecast", "price", "forward_price")),
            horizon=horizon,
            periods_per_year=periods_per_year,
            cost_bps=cost_bps,
        )
        tested = (test.statistic, test.p_value, test.outcomes) if test else (math.nan,) * len(EDGE)
        return {"scope": scope, "group": group, "rows": part.height, **values, **dict(zip(EDGE, tested, strict=True))}

    rows = [
        row("fold", str(k), part) for (k,), part in oof.partition_by("fold", as_dict=True, maintain_order=True).items()
    ]
    rows += [row("regime", r, part) for (r,), part in sorted(oof.partition_by("regime", as_dict=True).items())]
    actual, forecast = oof["actual"].to_numpy(), oof["forecast"].to_numpy()
    folds = oof["fold"].to_numpy() if "fold" in oof.columns else None
    against = edge(np.abs(forecast - actual), np.abs(actual), horizon, folds)
    rows.append(row("overall", "all", oof, against.overall))
    rows.append(row("recent", "recent", oof.filter(pl.Series(recent_rows(folds, oof.height))), against.recent))
    return pl.DataFrame(
        rows,
        schema={
            "scope": pl.String,
            "group": pl.String,
            "rows": pl.Int64,
            **dict.fromkeys((*METRICS, *EDGE), pl.Float64),
        },
    )


def stored_test(row: dict, prefix: str = "") -> DieboldMariano:
    """The Diebold-Mariano test a metrics row holds (`dm_*`, or `<prefix>dm_*` in a leaderboard row); a row
    without one (stored before the test, or of a model that was not tested) has no edge."""

    def value(name: str, missing: float) -> float:
        found = row.get(f"{prefix}{name}")
        return missing if found is None else float(found)

    return DieboldMariano(
        value("dm_statistic", math.nan), value("dm_p_value", 1.0), int(row.get("rows") or 0), value("dm_outcomes", 0.0)
    )


def scope_test(scores: pl.DataFrame, scope: str) -> DieboldMariano:
    """The test of one scope (overall or recent) of a metrics table."""
    found = scores.filter(pl.col("scope") == scope)
    return stored_test(found.row(0, named=True) if found.height else {})


def overall(scores: pl.DataFrame) -> dict[str, float]:
    return scores.filter(pl.col("scope") == "overall").select(METRICS).row(0, named=True)
