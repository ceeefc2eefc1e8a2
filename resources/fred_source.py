"""FRED (Federal Reserve Economic Data) through `fredapi` as the macro source."""

from __future__ import annotations

import datetime as dt
import urllib.error
from xml.etree.ElementTree import ParseError

import polars as pl
from fredapi import Fred

from cbi_assets.catalogue import FRED_SERIES
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.errors import MissingApiKeyError, RawDataError
from cbi_assets.raw.source import Source
from resources.retries import with_retries


class FredSource(Source):
    """Observations of the catalogue's FRED series, as published now (latest vintage)."""

    api_key: str = ""
    api_root: str = "https://api.stlouisfed.org/fred"
    max_attempts: int = 5
    backoff_seconds: float = 1.0

    @property
    def label(self) -> str:
        return "FRED"

    def fetch(self, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        if dataset.role != "macro" or dataset.symbol not in FRED_SERIES:
            raise ValueError(f"FRED serves the catalogue's macro series, not {dataset.describe()}")
        if not self.api_key:
            raise MissingApiKeyError("FRED_API_KEY", "FRED")
        fred = Fred(api_key=self.api_key)
        fred.root_url = self.api_root
        what = f"FRED {dataset.symbol} {start}..{end}"

        def request():
            try:
                return fred.get_series(dataset.symbol, observation_start=start, observation_end=end)
            except (ValueError, ParseError) as exc:
                if _http_status(exc) is not None and _transient(exc):
                    raise
                if isinstance(exc, ParseError):
                    raise RawDataError(
                        f"{what}: FRED answered with a body that is not XML ({exc}). Nothing was written."
                    ) from None
                # fredapi turns FRED's own error answer (bad series, bad key) into a ValueError.
                raise RawDataError(
                    f"{what}: FRED refused the request: {exc}. Check the series id and FRED_API_KEY."
                ) from None

        series = with_retries(
            request, what=what, transient=_transient, attempts=self.max_attempts, backoff_seconds=self.backoff_seconds
        )
        return observations_frame(list(series.index), series.to_numpy(dtype=float))


def observations_frame(dates: list, values) -> pl.DataFrame:
    """Observations as (ts_event at 00:00 UTC of the observation date, value); NaN is a missing value."""
    frame = pl.DataFrame(
        {
            "ts_event": pl.Series(dates, dtype=pl.Datetime("ns")).dt.replace_time_zone("UTC"),
            "value": pl.Series(values, dtype=pl.Float64),
        }
    )
    return frame.with_columns(pl.col("value").fill_nan(None))


def _http_status(exc: BaseException) -> int | None:
    """fredapi hides the HTTP status behind its ValueError; find it in the exception chain."""
    seen = exc
    while seen is not None:
        if isinstance(seen, urllib.error.HTTPError):
            return seen.code
        seen = seen.__context__ or seen.__cause__
    return None


def _transient(exc: BaseException) -> str | None:
    status = _http_status(exc)
    if status == 429:
        return "HTTP 429 (rate limited)"
    if status is not None and status >= 500:
        return f"HTTP {status}"
    if status is None and isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError)):
        return type(exc).__name__
    return None
