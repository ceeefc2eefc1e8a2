"""Statistical families: ARIMA, exponential smoothing, Prophet and GARCH on the one-step return series.

Each is fitted once on a fold's training returns; its forecast for a test row is the forward log
return over the horizon (the sum of the next `horizon` one-step returns), computed causally: the
fitted parameters are run over the test slice's return history, and each row's forecast uses only
the returns (and features) known at that row's close.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cbi_assets.models.registry import Budget, Forecast, Inputs, register

# Each family's hyperparameters, defined once: the fit uses them and MLflow logs them (register's params).
ARIMA = {"order": (1, 0, 1), "trend": "c"}  # on the one-step returns, with a constant
ETS = {"trend": None, "initialization_method": "estimated"}  # simple: a level, no trend or season
# `regressors`: the first columns of x that Prophet takes as extra regressors; `fourier_order`: of the
# row timeframe's season.
PROPHET = {"growth": "flat", "regressors": 5, "fourier_order": 3}
GARCH = {"mean": "Constant", "vol": "GARCH", "p": 1, "q": 1, "dist": "t"}

# The Kalman filter and the recursions multiply 2x2 matrices, where a second BLAS thread only adds
# hand-offs: on a busy 2-core machine it made ARIMA ten times slower.
_one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


def _returns(inputs: Inputs) -> np.ndarray:
    """The slice's one-step returns as float64, NaN (the first row of a series) read as 0."""
    returns = np.nan_to_num(np.asarray(inputs.returns, dtype=np.float64), nan=0.0)
    if len(returns) < inputs.rows:
        raise ValueError(
            f"Inputs.returns has {len(returns)} entries but the slice has {inputs.rows} rows: "
            "returns must run from the first training row to the slice's last row"
        )
    return returns


def _training_returns(inputs: Inputs, budget: Budget) -> np.ndarray:
    returns = _returns(inputs)
    return returns if budget.max_train_rows is None else returns[-budget.max_train_rows :]


def _unit(returns: np.ndarray) -> float:
    """The standard deviation the optimisers work in: one-step returns are ~1e-2 (daily) to ~1e-4
    (bars), and likelihoods on such tiny numbers converge badly."""
    std = float(np.std(returns))
    return std if std > 0 else 1.0


# --- ARIMA ----------------------------------------------------------------------------------------


def _time_invariant(ssm: Any, name: str, ndim: int) -> np.ndarray:
    """A state-space matrix without its time axis (SARIMAX keeps a constant trend as one column per
    observation)."""
    matrix = np.asarray(ssm[name], dtype=np.float64)
    return matrix[..., -1] if matrix.ndim > ndim else matrix


def _cumulative_moments(ssm: Any, state: np.ndarray, state_cov: np.ndarray, horizon: int):
    """Mean and variance of the sum of the next `horizon` observations from each filtered state.

    With alpha_{t+1} = T alpha_t + c + R eta and y_t = Z alpha_t + d + eps, the sum of y_{t+1..t+h} is
    Z (sum_k T^k) alpha_t + Z sum_k G_{k-1} c + h d + noise, where G_n = I + T + ... + T^n; the
    noise variance is sum_{n<h} Z G_n RQR' G_n' Z' + h H. `state` is (m, rows), `state_cov` (m, m, rows).
    """
    transition = _time_invariant(ssm, "transition", 2)
    design = _time_invariant(ssm, "design", 2)
    state_intercept = _time_invariant(ssm, "state_intercept", 1)
    obs_intercept = float(_time_invariant(ssm, "obs_intercept", 1)[0])
    selection = _time_invariant(ssm, "selection", 2)
    shock_cov = selection @ _time_invariant(ssm, "state_cov", 2) @ selection.T
    obs_cov = float(_time_invariant(ssm, "obs_cov", 2)[0, 0])

    k_states = transition.shape[0]
    power = np.eye(k_states)  # T^k
    partial = np.eye(k_states)  # G_{k-1}
    loading = np.zeros((k_states, k_states))  # sum_{j<=k} T^j
    drift, noise = 0.0, 0.0
    for _ in range(horizon):
        through = (design @ partial)[0]
        drift += through @ state_intercept
        noise += through @ shock_cov @ through
        power = power @ transition
        loading += power
        partial = partial + power
    weights = (design @ loading)[0]
    mean = weights @ state + drift + horizon * obs_intercept
    variance = np.einsum("i,ijn,j->n", weights, state_cov, weights) + noise + horizon * obs_cov
    return mean, variance


@dataclass(frozen=True)
class FittedArima:
    order: tuple[int, int, int]
    names: tuple[str, ...]
    coefficients: np.ndarray  # in unit-variance return space, sigma2 last
    unit: float

    @property
    def params(self) -> dict[str, float]:
        values = dict(zip(self.names, self.coefficients.tolist(), strict=True))
        values["intercept"] *= self.unit
        values["sigma2"] *= self.unit**2
        return values

    @_one_blas_thread
    def predict(self, inputs: Inputs) -> Forecast:
        returns = _returns(inputs) / self.unit
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        model = SARIMAX(returns, order=self.order, trend=ARIMA["trend"])
        # Only the filtered states are read: no covariance of the parameters (most of a filter's time).
        filtered = model.filter(self.coefficients, cov_type="none")
        rows = slice(len(returns) - inputs.rows, len(returns))
        mean, variance = _cumulative_moments(
            model.ssm, filtered.filtered_state[:, rows], filtered.filtered_state_cov[:, :, rows], inputs.horizon
        )
        return Forecast(mean=mean * self.unit, sigma=np.sqrt(np.maximum(variance, 0.0)) * self.unit)


@register("arima", "statistical", "series", "ARIMA(1,0,1) with a constant on the one-step returns", **ARIMA)
@_one_blas_thread
def fit_arima(inputs: Inputs, budget: Budget) -> FittedArima:
    returns = _training_returns(inputs, budget)
    unit = _unit(returns)
    # Concentrating the scale out of the likelihood keeps L-BFGS fast where AR and MA roots nearly
    # cancel (near-white-noise returns), a flat likelihood it otherwise wanders on for a second.
    # statsmodels and scipy take seconds to import: only a fit pays for them, not every process that
    # loads the code location.
    from statsmodels.tools.sm_exceptions import ConvergenceWarning
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    model = SARIMAX(returns / unit, **ARIMA, concentrate_scale=True)
    with warnings.catch_warnings():
        # An unconverged ARMA on near-white noise still forecasts close to the mean: no need to shout.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        result = model.fit(disp=False)
    coefficients = np.append(np.asarray(result.params, dtype=np.float64), float(result.scale))
    return FittedArima(ARIMA["order"], (*model.param_names, "sigma2"), coefficients, unit)


# --- Exponential smoothing ------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedEts:
    smoothing_level: float
    initial_level: float  # in return units
    sigma2: float  # one-step error variance, in return units

    @property
    def params(self) -> dict[str, float]:
        return {"smoothing_level": self.smoothing_level, "initial_level": self.initial_level, "sigma2": self.sigma2}

    def predict(self, inputs: Inputs) -> Forecast:
        returns = _returns(inputs)
        alpha = self.smoothing_level
        # level_t = alpha r_t + (1 - alpha) level_{t-1}, from the initial level before the first return.
        from scipy.signal import lfilter

        level, _ = lfilter([alpha], [1.0, alpha - 1.0], returns, zi=[(1.0 - alpha) * self.initial_level])
        h = inputs.horizon
        # r_{t+k} = level_t + alpha (e_{t+1} + ... + e_{t+k-1}) + e_{t+k}, so e_{t+j} enters the
        # h-step sum 1 + alpha (h - j) times.
        variance = self.sigma2 * float(np.sum((1.0 + alpha * (h - np.arange(1, h + 1))) ** 2))
        mean = h * level[len(returns) - inputs.rows :]
        return Forecast(mean=mean, sigma=np.full(inputs.rows, np.sqrt(variance)))


@register("ets", "statistical", "series", "simple exponential smoothing of the one-step returns", **ETS)
@_one_blas_thread
def fit_ets(inputs: Inputs, budget: Budget) -> FittedEts:
    returns = _training_returns(inputs, budget)
    unit = _unit(returns)
    with warnings.catch_warnings():
        from statsmodels.tools.sm_exceptions import ConvergenceWarning
        from statsmodels.tsa.holtwinters import SimpleExpSmoothing

        warnings.simplefilter("ignore", ConvergenceWarning)
        result = SimpleExpSmoothing(returns / unit, initialization_method=ETS["initialization_method"]).fit()
    return FittedEts(
        smoothing_level=float(result.params["smoothing_level"]),
        initial_level=float(result.params["initial_level"]) * unit,
        sigma2=float(result.sse) / len(returns) * unit**2,
    )


# --- Prophet --------------------------------------------------------------------------------------

# Rows have no regular calendar (sessions skip weekends and holidays, bars skip the night), so Prophet
# sees a synthetic clock with one row per hour: a season of `season` rows is then exactly
# `season / 24` days, and any realistic number of rows fits inside pandas' timestamp range (rows as
# days would overflow after ~95,000 bars).
PROPHET_EPOCH = pd.Timestamp("2000-01-01")
PROPHET_ROWS_PER_DAY = 24
# Prophet 1.x calls a pandas method pandas has deprecated; once per fit and predict it would fill the
# run log with the same warning, so it is filtered where Prophet runs.
PANDAS_INPLACE = "The inplace keyword"


def _prophet_frame(clock: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"ds": PROPHET_EPOCH + pd.to_timedelta(clock, unit="h")})
    for j in range(x.shape[1]):
        frame[f"x{j}"] = x[:, j]
    return frame


def _prophet_regressors(inputs: Inputs) -> np.ndarray:
    """The first features of each row, NaN as 0 (Prophet refuses missing regressors); a sequence
    window's last step is its own row."""
    x = inputs.x[:, -1, :] if inputs.x.ndim == 3 else inputs.x
    return np.nan_to_num(np.asarray(x[:, : PROPHET["regressors"]], dtype=np.float64))


@dataclass(frozen=True)
class FittedProphet:
    model: Any  # prophet.Prophet
    origin: int  # position of the first training row Prophet saw, counted from the first return
    regressors: tuple[str, ...]

    @property
    def params(self) -> dict[str, float]:
        fitted = self.model.params
        values = {name: float(fitted[name][0, 0]) for name in ("k", "m", "sigma_obs")}
        for j, name in enumerate(self.regressors):
            # Prophet fits on y / y_scale and standardised regressors: back to log return per unit of x.
            beta = float(fitted["beta"][0, -len(self.regressors) + j])
            values[f"beta_{name}"] = beta * self.model.y_scale / self.model.extra_regressors[f"x{j}"]["std"]
        return values

    def predict(self, inputs: Inputs) -> Forecast:
        if inputs.rows == 0:  # Prophet refuses an empty frame
            return Forecast(mean=np.zeros(0))
        # Test returns start at the same first training row as the training returns did.
        clock = len(inputs.returns) - inputs.rows + np.arange(inputs.rows) - self.origin
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=PANDAS_INPLACE)
            forecast = self.model.predict(_prophet_frame(clock, _prophet_regressors(inputs)))
        return Forecast(mean=forecast["yhat"].to_numpy())


@register(
    "prophet",
    "statistical",
    "series",
    "Prophet on the forward return: flat trend, the row timeframe's season, the first features as regressors",
    **PROPHET,
)
def fit_prophet(inputs: Inputs, budget: Budget) -> FittedProphet:
    # Imported here: loading Prophet and Stan costs a second on every import of the registry. Prophet logs an
    # error on import that its interactive plots need plotly, which forecasting does not use.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    from cmdstanpy.utils import get_logger
    from prophet import Prophet

    # cmdstanpy configures its logger on first use (INFO, to stderr); quiet it once it exists.
    get_logger().setLevel(logging.WARNING)
    # Prophet regresses the label itself on its season and the row's own features, so the
    # features move the forecast. (Fitted on the price path instead, a forecast is the path's
    # difference over the horizon, where the features held at the row's values cancel out.)
    keep = slice(-budget.max_train_rows, None) if budget.max_train_rows else slice(None)
    y = np.asarray(inputs.y, dtype=np.float64)[keep]
    x = _prophet_regressors(inputs)[keep]
    frame = _prophet_frame(np.arange(len(y)), x)
    frame["y"] = y

    model = Prophet(
        growth=PROPHET["growth"],
        yearly_seasonality=False,
        weekly_seasonality=False,
        daily_seasonality=False,
        uncertainty_samples=0,
        mcmc_samples=0,
    )
    if len(y) >= 2 * inputs.season:  # the row timeframe's own season, once two are seen
        model.add_seasonality(
            "season", period=inputs.season / PROPHET_ROWS_PER_DAY, fourier_order=PROPHET["fourier_order"]
        )
    for j in range(x.shape[1]):
        model.add_regressor(f"x{j}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PANDAS_INPLACE)
        model.fit(frame)
    names = inputs.feature_names[: x.shape[1]] or tuple(f"x{j}" for j in range(x.shape[1]))
    return FittedProphet(model, inputs.rows - len(y), tuple(names))


# --- GARCH ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedGarch:
    """GARCH(1,1) coefficients in unit-variance return space (see `_unit`)."""

    mu: float
    omega: float
    alpha: float
    beta: float
    nu: float  # Student t degrees of freedom
    backcast: float  # arch's starting variance
    unit: float

    @property
    def params(self) -> dict[str, float]:
        return {
            "mu": self.mu * self.unit,
            "omega": self.omega * self.unit**2,
            "alpha": self.alpha,
            "beta": self.beta,
            "nu": self.nu,
        }

    def predict(self, inputs: Inputs) -> Forecast:
        squared = (_returns(inputs) / self.unit - self.mu) ** 2
        first = self.omega + (self.alpha + self.beta) * self.backcast
        # sigma2_{t+1} = omega + alpha eps_t^2 + beta sigma2_t: the next row's variance, known at t.
        from scipy.signal import lfilter

        following, _ = lfilter([1.0], [1.0, -self.beta], self.omega + self.alpha * squared, zi=[self.beta * first])
        step = following[len(squared) - inputs.rows :]
        total = np.zeros(inputs.rows)
        for _ in range(inputs.horizon):
            total += step
            step = self.omega + (self.alpha + self.beta) * step
        return Forecast(
            mean=np.full(inputs.rows, inputs.horizon * self.mu * self.unit),
            sigma=np.sqrt(total) * self.unit,
        )


@register("garch", "statistical", "series", "GARCH(1,1), Student t, constant mean", **GARCH)
@_one_blas_thread
def fit_garch(inputs: Inputs, budget: Budget) -> FittedGarch:
    returns = _training_returns(inputs, budget)
    unit = _unit(returns)
    # arch takes two seconds to import: only a GARCH fit pays for it.
    from arch import arch_model
    from arch.utility.exceptions import ConvergenceWarning as ArchConvergenceWarning

    model = arch_model(returns / unit, **GARCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ArchConvergenceWarning)
        result = model.fit(disp="off")
    params = result.params
    return FittedGarch(
        mu=float(params["mu"]),
        omega=float(params["omega"]),
        alpha=float(params["alpha[1]"]),
        beta=float(params["beta[1]"]),
        nu=float(params["nu"]),
        backcast=float(model.volatility.backcast(np.asarray(result.resid))),
        unit=unit,
    )
