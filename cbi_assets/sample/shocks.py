"""Random shocks for the sample: one generator per component, so every history is prefix-stable.

A component draws its whole history in one call from a generator seeded by (seed, its name).
numpy draws are sequential, so the first k shocks never depend on how many follow: moving the
sample's end later leaves every earlier record as it was.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np


def component_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one named component of the history (a market, a series, a noise term)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def session_rng(seed: int, name: str, trade_date: dt.date) -> np.random.Generator:
    """The generator of one session's intraday or tick path: independent of the window around it."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), trade_date.toordinal()])


def normals(seed: int, name: str, n: int, columns: int = 1) -> np.ndarray:
    """`n` rows of standard normal shocks of the component `name` (row i is always the same)."""
    draws = component_rng(seed, name).standard_normal(n * columns)
    return draws.reshape(n, columns) if columns > 1 else draws


def fat_tailed(seed: int, name: str, n: int, dof: int = 6, limit: float = 7.0) -> np.ndarray:
    """Student-t shocks scaled to unit variance: crashes come from the tails, not only from vol.

    The normal numerator and the chi-squared mixing variable come from separate streams, and the
    chi-squared is a row-wise sum of `dof` squared normals, so both stay prefix-stable. Shocks
    beyond `limit` deviations are cut back: markets have limits and circuit breakers.
    """
    numerator = normals(seed, name, n)
    chi2 = np.square(normals(seed, f"{name}.mix", n, dof)).sum(axis=1)
    return np.clip(numerator / np.sqrt(chi2 / dof) * np.sqrt((dof - 2) / dof), -limit, limit)


# GARCH(1,1) reaction to yesterday's squared shock and persistence; the multiplier is capped so
# that fat tails cannot compound into volatility no market has shown outside its crisis regimes.
GARCH_ALPHA = 0.06
GARCH_BETA = 0.92
GARCH_CAP = 4.0


def correlated(common: np.ndarray, own: np.ndarray, rho: np.ndarray | float) -> np.ndarray:
    """Unit-variance shocks with correlation `rho` to `common` (both unit-variance)."""
    return rho * common + np.sqrt(1.0 - np.square(rho)) * own


def _garch_path(shocks: np.ndarray) -> np.ndarray:
    g = np.empty(len(shocks) + 1)
    g[0] = 1.0
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    for i, z in enumerate(shocks):
        g[i + 1] = min(omega + (GARCH_ALPHA * z * z + GARCH_BETA) * g[i], GARCH_CAP)
    return g


def garch_multiplier(shocks: np.ndarray) -> np.ndarray:
    """Unit-mean GARCH(1,1) variance multiplier driven by standardized shocks.

    The conditional variance of day t is `target_t * g_t`; g reacts to yesterday's squared shock,
    which is what makes calm and turbulent weeks cluster. A plain recursion: ~7,000 steps.
    """
    return _garch_path(shocks)[:-1]


def garch_forecast(shocks: np.ndarray) -> np.ndarray:
    """The multiplier for the next day as known at each day's close (what an option prices)."""
    return _garch_path(shocks)[1:]


def mean_reverting(innovations: np.ndarray, phi: float) -> np.ndarray:
    """AR(1) deviation x_t = phi * x_{t-1} + e_t, starting from zero (causal, so prefix-stable)."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -phi], innovations)
