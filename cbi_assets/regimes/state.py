"""The data-driven regime state of an asset, computed each day from what was known that day.

Three readings: the VIX band, the trend (close against its moving average) and a Markov-switching
model of daily returns whose states differ in variance. A change of state that lasts is a regime shift.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from cbi_assets.features.volatility import vix_band

if TYPE_CHECKING:
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

log = logging.getLogger(__name__)

# The four state names, in the order of `vix_band`'s codes 0-3 (its edges are VIX_BANDS).
STATES = ("calm", "normal", "stressed", "crisis")

# Markov states are named by fitted variance, lowest first. With fewer than four states some names
# are not used and get probability 0. Three states is the default: on ES and ZL daily returns the
# Bayesian information criterion prefers three to four in every 10-year window from 2000 (a fourth
# state splits calm or normal into two of nearly equal variance, whose labels then wander between
# refits). Their top state is the crisis one: about 45-60% annualised volatility on ES whenever the
# window holds 2008. The middle state is the ordinary market, hence "normal"; "stressed" stays a VIX
# band only (it appears in `state` where the Markov state is unknown).
MARKOV_NAMES: dict[int, tuple[str, ...]] = {
    2: ("normal", "crisis"),
    3: ("calm", "normal", "crisis"),
    4: STATES,
}
PROBABILITIES = tuple(f"p_{name}" for name in STATES)


@dataclass(frozen=True)
class MarkovPlan:
    """How the Markov-switching state is fitted, walking forward through the rows.

    Every `refit_days` rows the model is fitted on the trailing `fit_window` rows (None: all rows so
    far), once `min_history` rows exist; those parameters serve the rows after the refit date only.
    """

    k: int = 3
    refit_days: int = 252
    fit_window: int | None = 2520
    min_history: int = 504
    switching_mean: bool = True  # each state has its own drift (crises fall); False: zero mean
    scale: float = 100.0  # returns in percent: the likelihood is badly scaled in raw log returns
    max_iter: int = 1000  # EM iterations before a fit counts as not converged
    tolerance: float = 1e-6  # EM stops when the relative change of the log-likelihood is below this

    def __post_init__(self) -> None:
        if self.k not in MARKOV_NAMES:
            raise ValueError(f"MarkovPlan.k={self.k}: use one of {sorted(MARKOV_NAMES)} regimes (named {MARKOV_NAMES})")
        if self.refit_days < 1:
            raise ValueError(f"MarkovPlan.refit_days={self.refit_days}: refit at least every row (>= 1)")
        if self.min_history < 20 * self.k:
            raise ValueError(
                f"MarkovPlan.min_history={self.min_history}: a {self.k}-state fit needs at least {20 * self.k} returns"
            )
        if self.fit_window is not None and self.fit_window < self.min_history:
            raise ValueError(
                f"MarkovPlan.fit_window={self.fit_window} is shorter than min_history="
                f"{self.min_history}; use a window of at least min_history rows, or None for all"
            )

    def model(self, returns: np.ndarray) -> MarkovRegression:
        # statsmodels takes seconds to import: only a fit pays for it.
        from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

        return MarkovRegression(
            returns, k_regimes=self.k, trend="c" if self.switching_mean else "n", switching_variance=True
        )


def volatility_band(vix: pl.Expr) -> pl.Expr:
    """calm (VIX < 15), normal (15-25), stressed (25-35), crisis (>= 35); null where VIX is null."""
    codes = {code: name for code, name in enumerate(STATES)}
    # `vix_band` sums comparisons, which counts a null VIX as calm; a missing VIX is no band.
    return pl.when(vix.is_not_null() & vix.is_not_nan()).then(
        vix_band(vix).replace_strict(codes, return_dtype=pl.String)
    )


def trend_state(close: pl.Expr, n: int = 200) -> pl.Expr:
    """The trend: "bull" when the close is above its n-day simple moving average, else "bear"; null
    before n closes."""
    average = close.rolling_mean(n)
    return pl.when(close > average).then(pl.lit("bull")).when(close <= average).then(pl.lit("bear"))


def _fit(model: MarkovRegression, plan: MarkovPlan) -> tuple[np.ndarray, bool]:
    """Maximum likelihood by statsmodels' EM, and whether it converged.

    `MarkovRegression.fit` runs a few EM steps and then quasi-Newton with numerical gradients, 10-20
    times slower for the same optimum here; its EM stage (`_fit_em`, private in statsmodels 0.15, so
    pinned by the tests here) run to convergence is enough.
    """
    with warnings.catch_warnings():
        # EM re-scales a transition probability that steps past 0 or 1 for a state it seldom leaves
        # and carries on; that is no failure, and convergence is judged below.
        from statsmodels.tools.sm_exceptions import EstimationWarning

        warnings.simplefilter("ignore", EstimationWarning)
        result = model._fit_em(maxiter=plan.max_iter, tolerance=plan.tolerance)
    llf = result.mle_retvals.llf
    change = 2 * (llf[-1] - llf[-2]) / abs(llf[-1] + llf[-2]) if len(llf) > 1 else np.inf
    converged = bool(np.all(np.isfinite(result.params)) and np.isfinite(llf[-1]) and change <= plan.tolerance)
    return result.params, converged


def markov_state(dates: pl.Series, returns: pl.Series, plan: MarkovPlan = MarkovPlan()) -> pl.DataFrame:
    """Filtered Markov-switching state probabilities, walking forward: each row sees its past only.

    Rows with a null return are skipped by the model and come back null. Columns: `date`, `p_calm`,
    `p_normal`, `p_stressed`, `p_crisis`, `ms_state` (the most probable), `fitted_on` (the refit date
    whose parameters were used: the last one before the row, or an earlier one where that fit failed).
    """
    if len(dates) != len(returns):
        raise ValueError(f"markov_state: {len(dates)} dates but {len(returns)} returns; give one return per date")
    rows = np.flatnonzero(returns.cast(pl.Float64).is_finite().fill_null(False).to_numpy())
    y = returns.cast(pl.Float64).to_numpy()[rows] * plan.scale
    day = dates.to_list()
    probabilities = np.full((len(dates), len(STATES)), np.nan)
    fitted_on: list[dt.date | None] = [None] * len(dates)
    names = MARKOV_NAMES[plan.k]
    used = [STATES.index(name) for name in names]
    params: np.ndarray | None = None
    params_date: dt.date | None = None
    for refit in range(plan.min_history - 1, len(y) - 1, plan.refit_days):
        start = 0 if plan.fit_window is None else max(0, refit + 1 - plan.fit_window)
        end = min(len(y), refit + 1 + plan.refit_days)
        refit_date = day[rows[refit]]
        model = plan.model(y[start : refit + 1])
        try:
            fitted, converged = _fit(model, plan)
            failure = f"did not converge in {plan.max_iter} EM iterations"
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as error:
            fitted, converged, failure = None, False, f"failed ({error})"
        if converged:
            params, params_date = fitted, refit_date
        elif params is not None:
            log.warning(
                f"Markov-switching fit on the {refit + 1 - start} returns to {refit_date} {failure}; "
                f"the rows after it keep the parameters fitted on {params_date}"
            )
        else:
            log.warning(
                f"Markov-switching fit on the {refit + 1 - start} returns to {refit_date} {failure} and no "
                f"earlier fit exists; the rows to {day[rows[end - 1]]} have no Markov state (their state is "
                "the VIX band; raise MarkovPlan.max_iter or min_history)"
            )
            continue
        # The filter over the window and the block: the probability at t uses the returns up to t only.
        filtered = plan.model(y[start:end]).filter(params, cov_type="none").filtered_marginal_probabilities
        order = np.argsort(params[model.parameters["variance"]])
        block = rows[refit + 1 : end]
        probabilities[block] = 0.0
        probabilities[np.ix_(block, used)] = filtered[refit + 1 - start :, order]
        for row in block:
            fitted_on[row] = params_date
    known = ~np.isnan(probabilities[:, 0])
    most = np.where(known, np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1), -1)
    return pl.DataFrame(
        {
            "date": dates,
            **{column: pl.Series(probabilities[:, i]).fill_nan(None) for i, column in enumerate(PROBABILITIES)},
            "ms_state": pl.Series([STATES[i] if i >= 0 else None for i in most], dtype=pl.String),
            "fitted_on": pl.Series(fitted_on, dtype=pl.Date),
        }
    )


def confirm_regime(frame: pl.DataFrame, persistence: int) -> pl.DataFrame:
    """Add `regime`, `regime_since` and `shift` to a frame of `date` and `state`, sorted by date.

    A state becomes the regime on the day it has held `persistence` consecutive rows (known that
    day, never backdated); `regime_since` is the first of those rows; `shift` marks a change of an
    existing regime. A null state breaks a run and leaves the regime as it was.
    """
    if persistence < 1:
        raise ValueError(f"persistence={persistence}: a state must hold at least 1 row to become the regime")
    run = pl.col("state").rle_id()
    held = pl.int_range(1, pl.len() + 1).over(run)
    confirmed = pl.when(pl.col("state").is_not_null() & (held == persistence)).then(pl.col("state"))
    return (
        frame.with_columns(confirmed.alias("_confirmed"), pl.col("date").first().over(run).alias("_run_start"))
        .with_columns(pl.col("_confirmed").forward_fill().shift(1).alias("_before"))
        # A run of the current regime that reaches `persistence` again is no change.
        .with_columns(
            (pl.col("_confirmed").is_not_null() & pl.col("_confirmed").ne_missing(pl.col("_before"))).alias("_changed")
        )
        .with_columns(
            pl.col("_confirmed").forward_fill().alias("regime"),
            pl.when("_changed").then("_run_start").forward_fill().alias("regime_since"),
            (pl.col("_changed") & pl.col("_before").is_not_null()).alias("shift"),
        )
        .drop("_confirmed", "_run_start", "_before", "_changed")
    )


def persistence_for(horizon_sessions: int, base: int = 5, longest: int = 21) -> int:
    """Sessions a new state must hold to be a shift for models of a horizon.

    A quarter of the horizon, at least `base` and at most `longest` (a month): a 12-month model
    should not be retrained for a week of stress, while a 1-week or intraday model should.
    """
    return max(base, min(longest, horizon_sessions // 4))


def regime_state(
    daily: pl.DataFrame, plan: MarkovPlan = MarkovPlan(), persistence: int = 5, trend_days: int = 200
) -> pl.DataFrame:
    """The daily regime state of one asset from `date`, `close` (roll-adjusted) and optional `vix`.

    Columns: `date`, `close`, `vix`, `vol_band`, `trend`, the `markov_state` columns, `state` (the
    Markov state, else the VIX band), and `regime`, `regime_since`, `shift` from `confirm_regime`.
    The Markov model sees daily log returns of `close`.
    """
    missing = [c for c in ("date", "close") if c not in daily.columns]
    if missing:
        raise ValueError(
            f"regime_state: the daily frame lacks {missing} (has {daily.columns}); "
            "pass `date` and the roll-adjusted `close` (close * adj), with `vix` if known"
        )
    if daily["date"].n_unique() != daily.height:
        raise ValueError("regime_state: the daily frame repeats dates; give one row per session")
    vix = pl.col("vix").cast(pl.Float64) if "vix" in daily.columns else pl.lit(None, dtype=pl.Float64)
    frame = (
        daily.sort("date")
        .select("date", pl.col("close").cast(pl.Float64), vix.alias("vix"))
        .with_columns(
            volatility_band(pl.col("vix")).alias("vol_band"),
            trend_state(pl.col("close"), trend_days).alias("trend"),
            (pl.col("close") / pl.col("close").shift(1)).log().alias("_return"),
        )
    )
    markov = markov_state(frame["date"], frame["_return"], plan).drop("date")
    frame = pl.concat([frame.drop("_return"), markov], how="horizontal")
    frame = frame.with_columns(pl.coalesce("ms_state", "vol_band").alias("state"))
    return confirm_regime(frame, persistence)


def shifts(state_frame: pl.DataFrame) -> pl.DataFrame:
    """Each confirmed regime shift: `date` (the day it was confirmed), `since` (the first day of the new
    state), `from_state`, `to_state`."""
    return (
        state_frame.with_columns(pl.col("regime").shift(1).alias("from_state"))
        .filter("shift")
        .select("date", pl.col("regime_since").alias("since"), "from_state", pl.col("regime").alias("to_state"))
    )


def current_regime(state_frame: pl.DataFrame) -> dict:
    """The regime on the last row: `state` (the confirmed regime), `since` (when it began: the `since`
    of the last shift, or of the first confirmed run; the first row where none is confirmed yet), the
    day's own unconfirmed `daily_state`, `trend`, `vol_band`, `ms_state`, `fitted_on` and the
    Markov `probabilities`."""
    if state_frame.is_empty():
        raise ValueError("current_regime: the state frame is empty; compute regime_state on at least one row")
    last = state_frame.row(-1, named=True)
    return {
        "date": last["date"],
        "state": last["regime"],
        "since": last["regime_since"] or state_frame["date"][0],
        "daily_state": last["state"],
        "trend": last["trend"],
        "vol_band": last["vol_band"],
        "ms_state": last["ms_state"],
        "fitted_on": last["fitted_on"],
        "probabilities": {name: last[f"p_{name}"] for name in STATES},
    }
