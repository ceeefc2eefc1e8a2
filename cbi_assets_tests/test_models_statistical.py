"""The statistical families on small synthetic series: shapes, agreement with statsmodels and arch,
signal where the series has one, and causality (a row's forecast ignores every later return)."""

import dataclasses
import pickle

import numpy as np
import pytest
from arch import arch_model
from statsmodels.tsa.holtwinters import SimpleExpSmoothing
from statsmodels.tsa.statespace.sarimax import SARIMAX

from cbi_assets.models import statistical  # noqa: F401  (registers the families)
from cbi_assets.models.registry import FAMILIES, Inputs
from cbi_assets.profiles import PROFILES

STATISTICAL = ("arima", "ets", "prophet", "garch")
TRAIN, GAP, TEST = 600, 5, 200
SEASON = 50
SAMPLE = PROFILES["sample"].training


def _market(seed: int = 3, rows: int = TRAIN + GAP + TEST) -> np.ndarray:
    """One-step log returns with what each family can find: AR(1) persistence, a seasonal drift,
    volatility storms (three in training, one in the test rows), and the NaN a series starts with."""
    rng = np.random.default_rng(seed)
    vol = np.full(rows, 0.01)
    for start in (150, 320, 480, TRAIN + GAP + 100):  # storms of 20 rows, the last in the test rows
        vol[start : start + 20] = 0.04
    shocks = rng.standard_normal(rows) * vol
    season = 0.002 * np.cos(2 * np.pi * np.arange(rows) / SEASON)
    returns = np.zeros(rows)
    for t in range(1, rows):
        returns[t] = 0.6 * returns[t - 1] + shocks[t]
    returns += season
    returns[0] = np.nan
    return returns


def _split(returns: np.ndarray, horizon: int, seed: int = 5) -> tuple[Inputs, Inputs]:
    """A fold: training rows first, a purge gap, then the test rows, whose returns carry the history."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(returns), 6)).astype(np.float32)
    test_start = len(returns) - TEST

    # The label: the sum of the next `horizon` returns (the training rows' labels end in the gap).
    path = np.concatenate([[0.0], np.cumsum(np.nan_to_num(returns))])
    rows_ = np.arange(len(returns))
    forward = path[np.minimum(rows_ + 1 + horizon, len(returns))] - path[rows_ + 1]

    def inputs(rows: slice, labelled: bool) -> Inputs:
        n = rows.stop - rows.start
        return Inputs(
            x=x[rows],
            y=forward[rows] if labelled else None,
            weight=np.ones(n),
            returns=returns[: rows.stop],
            horizon=horizon,
            season=SEASON,
        )

    return inputs(slice(0, TRAIN), True), inputs(slice(test_start, len(returns)), False)


_FITTED: dict[str, object] = {}


def _fitted(name: str):
    """Each family fitted once on the market series (Prophet is the slow one): the horizon enters
    only at prediction, through the test Inputs."""
    if name not in _FITTED:
        train, _ = _split(_market(), horizon=5)
        _FITTED[name] = FAMILIES[name].fit(train, SAMPLE)
    return _FITTED[name]


@pytest.mark.parametrize("name", STATISTICAL)
def test_forecasts_have_one_finite_value_per_row_and_vary(name):
    _, test = _split(_market(), horizon=5)
    forecast = _fitted(name).predict(test)
    assert forecast.mean.shape == (TEST,)
    assert np.isfinite(forecast.mean).all()
    # GARCH's mean is its constant by design; its volatility is what moves.
    moving = forecast.sigma if name == "garch" else forecast.mean
    assert np.std(moving) > 1e-6
    if forecast.sigma is not None:
        assert forecast.sigma.shape == (TEST,)
        assert (forecast.sigma > 0).all()
    assert FAMILIES[name].kind == "statistical" and FAMILIES[name].shape == "series"


@pytest.mark.parametrize("name", STATISTICAL)
def test_a_forecast_ignores_later_returns_and_features(name):
    returns = _market()
    _, test = _split(returns, horizon=5)
    row = 80  # the test row whose forecast must not move
    changed_returns = returns.copy()
    changed_returns[len(returns) - TEST + row + 1 :] *= -3.0
    changed_x = test.x.copy()
    changed_x[row + 1 :] += 2.0
    changed = dataclasses.replace(test, returns=changed_returns, x=changed_x)

    fitted = _fitted(name)
    before, after = fitted.predict(test), fitted.predict(changed)
    np.testing.assert_array_equal(after.mean[: row + 1], before.mean[: row + 1])
    if before.sigma is not None:
        np.testing.assert_array_equal(after.sigma[: row + 1], before.sigma[: row + 1])
    # The test could fail: the rows after it do see the change.
    if name in ("arima", "ets"):
        assert not np.allclose(after.mean[row + 1 :], before.mean[row + 1 :])
    if name == "garch":
        assert not np.allclose(after.sigma[row + 1 :], before.sigma[row + 1 :])


@pytest.mark.parametrize("name", STATISTICAL)
def test_fitted_models_pickle_and_report_their_coefficients(name):
    _, test = _split(_market(), horizon=5)
    fitted = _fitted(name)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.predict(test).mean, fitted.predict(test).mean)
    assert fitted.params and all(np.isfinite(v) for v in fitted.params.values())


def test_arima_beats_the_zero_forecast_on_an_autocorrelated_series():
    returns = _market()
    _, test = _split(returns, horizon=1)
    forecast = _fitted("arima").predict(test)
    outcome = returns[len(returns) - TEST + 1 :]  # each row's next return
    arima_error = np.abs(forecast.mean[:-1] - outcome).mean()
    zero_error = np.abs(outcome).mean()
    assert arima_error < 0.9 * zero_error
    assert 0.4 < _fitted("arima").params["ar.L1"] < 0.8  # the series' 0.6


@pytest.mark.parametrize("horizon", [1, 5])
def test_arima_cumulative_forecast_matches_statsmodels(horizon):
    returns = _market()
    _, test = _split(returns, horizon)
    fitted = _fitted("arima")
    forecast = fitted.predict(test)
    history = np.nan_to_num(returns) / fitted.unit
    for row in (0, 57, TEST - 1):
        end = len(returns) - TEST + row + 1
        ahead = SARIMAX(history[:end], order=fitted.order, trend="c").filter(fitted.coefficients).get_forecast(horizon)
        assert forecast.mean[row] == pytest.approx(ahead.predicted_mean.sum() * fitted.unit, rel=1e-8, abs=1e-12)
        if horizon == 1:
            assert forecast.sigma[row] == pytest.approx(np.sqrt(ahead.var_pred_mean[0]) * fitted.unit, rel=1e-8)
    # The variance of a sum of autocorrelated returns exceeds the sum of their variances (phi > 0).
    one_step = fitted.predict(dataclasses.replace(test, horizon=1)).sigma
    assert (forecast.sigma >= np.sqrt(horizon) * one_step * (1 - 1e-9)).all()


def test_ets_level_is_statsmodels_smoothed_level():
    returns = _market()
    train, _ = _split(returns, horizon=1)
    fitted = _fitted("ets")
    assert 0.0 < fitted.smoothing_level < 1.0
    reference = SimpleExpSmoothing(
        np.nan_to_num(returns[:TRAIN]), initialization_method="known", initial_level=fitted.initial_level
    ).fit(smoothing_level=fitted.smoothing_level, optimized=False)
    forecast = fitted.predict(train)
    np.testing.assert_allclose(forecast.mean[:-1], reference.fittedvalues[1:], rtol=1e-9, atol=1e-12)
    assert forecast.mean[-1] == pytest.approx(reference.forecast(1)[0], rel=1e-9)
    assert forecast.sigma[0] == pytest.approx(np.sqrt(fitted.sigma2))


def test_garch_volatility_matches_arch_and_rises_after_a_burst():
    returns = _market()
    train, test = _split(returns, horizon=5)
    fitted = _fitted("garch")

    # On the training rows, arch's own h-step variance forecasts from the same coefficients.
    scaled = np.nan_to_num(returns[:TRAIN]) / fitted.unit
    fixed = arch_model(scaled, mean="Constant", vol="GARCH", p=1, q=1, dist="t").fix(
        [fitted.mu, fitted.omega, fitted.alpha, fitted.beta, fitted.nu]
    )
    variance = fixed.forecast(horizon=5, start=0, reindex=False).variance.to_numpy().sum(axis=1)
    np.testing.assert_allclose(fitted.predict(train).sigma, np.sqrt(variance) * fitted.unit, rtol=1e-6)

    sigma = fitted.predict(test).sigma
    assert (sigma > 0).all()
    calm, stormy = sigma[90:100].mean(), sigma[103:113].mean()  # the storm spans test rows 100-119
    assert stormy > 2 * calm
    assert fitted.predict(test).mean == pytest.approx(np.full(TEST, 5 * fitted.params["mu"]))


def test_prophet_forecast_follows_the_season_and_the_regressors():
    returns = _market()
    train, test = _split(returns, horizon=5)
    # The label's seasonal part: the drift summed over the next five rows.
    following = len(returns) - TEST + np.arange(TEST)[:, None] + np.arange(1, 6)
    seasonal = np.cos(2 * np.pi * following / SEASON).sum(axis=1)
    assert np.corrcoef(_fitted("prophet").predict(test).mean, seasonal)[0, 1] > 0.3
    # A label that moves with the first feature: the forecast follows the test rows' own feature.
    driven = dataclasses.replace(train, y=train.y + 0.05 * train.x[:, 0])
    forecast = FAMILIES["prophet"].fit(driven, SAMPLE).predict(test).mean
    assert np.corrcoef(forecast, test.x[:, 0])[0, 1] > 0.8


def test_fits_use_only_the_budgets_most_recent_rows():
    returns = _market()
    train, _ = _split(returns, horizon=1)
    wild = returns[:TRAIN].copy()
    wild[: TRAIN - 300] = np.random.default_rng(0).standard_normal(TRAIN - 300)  # 100x the volatility
    budget = dataclasses.replace(SAMPLE, max_train_rows=300)
    recent = dataclasses.replace(train, returns=returns[:TRAIN])
    for name in ("arima", "ets", "garch"):
        clean = FAMILIES[name].fit(recent, budget).params
        noisy = FAMILIES[name].fit(dataclasses.replace(train, returns=wild), budget).params
        assert noisy == pytest.approx(clean), name
