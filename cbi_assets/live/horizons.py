"""One intraday horizon as the live service forecasts it: its forecaster and the master rows it stands on.

The rows are the ones the evening forecast would read (`origin_rows`: from the last walk-forward fold's
first training row on), converted to arrays once and grown by one row per closed bar, so a forecast
costs the models' own time and not a re-read of the table.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from cbi_assets.catalogue import Horizon, Market
from cbi_assets.models.inputs import TrainingArrays, return_column
from cbi_assets.predictions.origin import LatestOrigin, origin_arrays, origin_of, origin_rows
from cbi_assets.predictions.today import HorizonForecaster
from cbi_assets.training.sets import feature_timeframe


class OriginRows:
    """The master rows of one horizon from the last fold's first training row on, as growing arrays."""

    def __init__(self, forecaster: HorizonForecaster, master: pl.LazyFrame):
        self.market, self.horizon, self.last = forecaster.market, forecaster.horizon, forecaster.last
        self.key, self.column = forecaster.key, return_column(forecaster.market, forecaster.horizon)
        table = f"the {self.market} master_{feature_timeframe(self.horizon)} table"
        rows = origin_rows(master, self.key, self.last, self.column, table)
        data, fold = origin_arrays(rows, self.key, self.last, self.column, self.horizon)
        self.train_hi = fold["train_hi"]
        self.n = rows.height
        self._x, self._returns = data.x, data.returns
        self.newest = rows[self.key][-1]
        self.template = data

    def append(self, row: pl.DataFrame) -> bool:
        """Add a master row (one closed bar, newer than every row held); False when it is not newer."""
        time = row[self.key][0]
        if time <= self.newest:
            return False
        data, _ = origin_arrays(row, self.key, self.last, self.column, self.horizon)  # the same conversion
        if self.n == len(self._x):  # grow by half: appending stays amortised O(1)
            grow = max(self.n // 2, 64)
            self._x = np.concatenate([self._x, np.zeros((grow, self._x.shape[1]), np.float32)])
            self._returns = np.concatenate([self._returns, np.zeros(grow)])
        self._x[self.n], self._returns[self.n] = data.x[0], data.returns[0]
        self.n += 1
        self.newest = time
        return True

    def origin(self, sessions: list[dt.date]) -> LatestOrigin:
        """The newest row as the forecast origin, exactly as `latest_origin` makes it from the table."""
        n = self.n
        data = TrainingArrays(
            x=self._x[:n],
            y=np.zeros(n),
            weight=np.ones(n),
            returns=self._returns[:n],
            features=self.template.features,
            horizon=self.template.horizon,
            season=self.template.season,
        )
        fold = {"fold": self.last.fold, "train_lo": 0, "train_hi": self.train_hi, "test_lo": n - 1, "test_hi": n - 1}
        return origin_of(self.last, data, fold, self.key, self.newest, self.horizon, sessions)


class LiveHorizon:
    """A horizon's forecaster and its rows; `version` is the champion's model version it serves."""

    def __init__(self, forecaster: HorizonForecaster, master: pl.LazyFrame):
        self.forecaster = forecaster
        self.rows = OriginRows(forecaster, master)

    @property
    def horizon(self) -> Horizon:
        return self.forecaster.horizon

    @property
    def market(self) -> Market:
        return self.forecaster.market

    @property
    def version(self) -> str:
        return self.forecaster.versions[0]

    def forecast(self, price: float) -> pl.DataFrame:
        """The published rows (champion, and challenger) for the newest row held."""
        frame, _ = self.forecaster.forecast(self.rows.origin([]), price)
        return frame
