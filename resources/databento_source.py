"""Databento historical API (GLBX.MDP3) as the futures source."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import databento as db
import polars as pl
import requests

from cbi_assets.calendars import globex_session
from cbi_assets.catalogue import DATABENTO_DATASET, FUTURES
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.dbn import frame_from_store
from cbi_assets.raw.errors import MissingApiKeyError, RawDataError
from cbi_assets.raw.source import Source
from resources.retries import with_retries


class DatabentoSource(Source):
    """Daily and intraday futures records from Databento's historical API.

    Daily bars are requested as the continuous front contract by volume (`ZL.v.0`) or, with
    `symbology="parent"`, as every listed contract (`ZL.FUT`), from which the roll calendar
    picks the front by volume. Intraday MES records always follow the continuous front.
    """

    api_key: str = ""
    gateway: str = "https://hist.databento.com"
    symbology: Literal["continuous", "parent"] = "continuous"
    max_attempts: int = 5
    backoff_seconds: float = 1.0

    @property
    def label(self) -> str:
        return f"Databento {DATABENTO_DATASET}"

    def fetch(self, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        if dataset.role != "futures" or dataset.schema is None:
            raise ValueError(f"Databento serves futures records, not {dataset.describe()}")
        if not self.api_key:
            raise MissingApiKeyError("DATABENTO_API_KEY", "Databento")
        future = FUTURES[dataset.symbol]
        if dataset.schema == "definition" or (dataset.schema == "ohlcv-1d" and self.symbology == "parent"):
            symbol, stype = future.parent, "parent"
        else:
            symbol, stype = future.continuous, "continuous"
        if dataset.intraday:
            begin, finish = globex_session(start)[0], globex_session(end)[1]
        else:
            begin = dt.datetime.combine(start, dt.time(0), dt.UTC)
            finish = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), dt.UTC)
        what = f"{self.label} {dataset.schema} {symbol} {start}..{end}"
        client = db.Historical(key=self.api_key, gateway=self.gateway)

        def request() -> db.DBNStore:
            try:
                return client.timeseries.get_range(
                    dataset=DATABENTO_DATASET,
                    symbols=[symbol],
                    stype_in=stype,
                    schema=dataset.schema,
                    start=begin,
                    end=finish,
                )
            except (db.BentoHttpError, requests.RequestException):
                raise
            except Exception as exc:  # the body could not be read as DBN
                raise RawDataError(
                    f"{what}: the response is not valid DBN ({type(exc).__name__}: {exc}). "
                    "Databento sent an empty or broken body; try again. Nothing was written."
                ) from None

        try:
            store = with_retries(
                request,
                what=what,
                transient=_transient,
                attempts=self.max_attempts,
                backoff_seconds=self.backoff_seconds,
            )
        except db.BentoClientError as exc:
            raise RuntimeError(
                f"{what}: Databento refused the request (HTTP {exc.http_status}: {exc.message}). "
                "Check DATABENTO_API_KEY, the symbol and your subscription. Nothing was written."
            ) from None
        return frame_from_store(store, what)


def _transient(exc: BaseException) -> str | None:
    if isinstance(exc, db.BentoServerError):
        return f"HTTP {exc.http_status}"
    if isinstance(exc, db.BentoClientError) and exc.http_status == 429:
        return "HTTP 429 (rate limited)"
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return f"{type(exc).__name__}"
    return None
