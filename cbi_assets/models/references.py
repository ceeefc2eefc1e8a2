"""Reference forecasts every family must beat: the random walk, the drift and the seasonal naive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbi_assets.models.registry import Budget, Forecast, Inputs, register


@dataclass(frozen=True)
class RandomWalk:
    params = {}

    def predict(self, inputs: Inputs) -> Forecast:
        return Forecast(mean=np.zeros(inputs.rows))


@register("random_walk", "reference", "series", "Tomorrow's price is today's: a forward return of zero.")
def random_walk(train: Inputs, budget: Budget) -> RandomWalk:
    return RandomWalk()


@dataclass(frozen=True)
class Drift:
    step: float  # mean one-step log return of the training window

    @property
    def params(self) -> dict:
        return {"step": self.step}

    def predict(self, inputs: Inputs) -> Forecast:
        return Forecast(mean=np.full(inputs.rows, self.step * inputs.horizon))


@register("drift", "reference", "series", "The training window's mean move, carried over the horizon.")
def drift(train: Inputs, budget: Budget) -> Drift:
    return Drift(float(np.nanmean(train.returns)) if train.returns.size else 0.0)


@dataclass(frozen=True)
class SeasonalNaive:
    params = {}

    def predict(self, inputs: Inputs) -> Forecast:
        # The move over the same span one season earlier: rows (t - season, t - season + horizon],
        # all known at t because the season is at least the horizon.
        season = max(inputs.season, inputs.horizon)
        path = np.concatenate([[0.0], np.cumsum(np.nan_to_num(inputs.returns))])
        end = np.arange(len(inputs.returns) - inputs.rows, len(inputs.returns)) + 1 - season + inputs.horizon
        start = end - inputs.horizon
        known = start >= 0
        mean = np.zeros(inputs.rows)
        mean[known] = path[end[known]] - path[start[known]]
        return Forecast(mean=mean)


@register(
    "seasonal_naive",
    "reference",
    "series",
    "The move over the same horizon one season earlier (a year of sessions; a session intraday).",
)
def seasonal_naive(train: Inputs, budget: Budget) -> SeasonalNaive:
    return SeasonalNaive()
