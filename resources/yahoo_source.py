"""Yahoo Finance through `yfinance` as the source of long daily history (no key needed)."""

from __future__ import annotations

import datetime as dt
import warnings
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import requests
import yfinance as yf
from requests.adapters import HTTPAdapter
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError

from cbi_assets.catalogue import YAHOO_TICKERS
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.errors import RawDataError
from cbi_assets.raw.source import Source
from resources.retries import with_retries


class YahooSource(Source):
    """Daily bars of the catalogue's Yahoo tickers, unadjusted, with Yahoo's adjusted close beside."""

    # Route Yahoo's hosts through this base URL (a company mirror, or a test server); empty: Yahoo.
    gateway: str = ""
    max_attempts: int = 5
    backoff_seconds: float = 1.0

    @property
    def label(self) -> str:
        return "Yahoo Finance"

    def fetch(self, dataset: RawDataset, start: dt.date, end: dt.date) -> pl.DataFrame:
        if dataset.role != "history" or dataset.symbol not in YAHOO_TICKERS:
            raise ValueError(f"Yahoo serves the catalogue's history tickers, not {dataset.describe()}")
        session = requests.Session()
        if self.gateway:
            session.mount("https://", _Gateway(self.gateway))
        statuses: list[int] = []
        session.hooks["response"].append(lambda response, *args, **kwargs: statuses.append(response.status_code))
        what = f"Yahoo {dataset.symbol} {start}..{end}"

        def request():
            statuses.clear()
            # yfinance memoises answers for past ranges, failed ones too; a retry must ask again.
            YfData.cache_get.cache_clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    return yf.Ticker(dataset.symbol, session=session).history(
                        start=start.isoformat(),
                        end=(end + dt.timedelta(days=1)).isoformat(),
                        interval="1d",
                        auto_adjust=False,
                        actions=False,
                        raise_errors=True,
                    )
                except YFPricesMissingError:
                    if any(code >= 500 for code in statuses):
                        raise
                    return None  # Yahoo has no bars in the range: an empty answer
                except (ValueError, KeyError, TypeError) as exc:
                    if any(code >= 500 for code in statuses):
                        raise
                    raise RawDataError(
                        f"{what}: Yahoo's answer could not be read ({type(exc).__name__}: {exc}). Nothing was written."
                    ) from None

        def transient(exc: BaseException) -> str | None:
            if isinstance(exc, YFRateLimitError):
                return "HTTP 429 (rate limited)"
            failed = [code for code in statuses if code >= 500]
            if failed:
                return f"HTTP {failed[-1]}"
            if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                return type(exc).__name__
            return None

        history = with_retries(
            request, what=what, transient=transient, attempts=self.max_attempts, backoff_seconds=self.backoff_seconds
        )
        return history_frame(history)


def history_frame(history) -> pl.DataFrame:
    """yfinance's pandas frame as (ts_event at 00:00 UTC of the session date, OHLC, adj_close, volume)."""
    columns = {
        "Open": "open",
        "High": "high",
        "Low": "low",
        "Close": "close",
        "Adj Close": "adj_close",
        "Volume": "volume",
    }
    if history is None or len(history) == 0:
        return pl.DataFrame(
            {"ts_event": [], **{name: [] for name in columns.values()}},
            schema={"ts_event": pl.Datetime("ns", "UTC"), **{n: pl.Float64 for n in columns.values()}},
        )
    days = [ts.date() for ts in history.index]  # session dates in the exchange's own time zone
    frame = pl.DataFrame({"ts_event": pl.Series(days, dtype=pl.Date)}).with_columns(
        pl.col("ts_event").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    )
    for yahoo, name in columns.items():
        values = history[yahoo].to_numpy(dtype=float) if yahoo in history else [None] * len(days)
        frame = frame.with_columns(pl.Series(name, values, dtype=pl.Float64).fill_nan(None))
    return frame


class _Gateway(HTTPAdapter):
    """Sends every HTTPS request to the same path on another base URL."""

    def __init__(self, base: str):
        super().__init__()
        self.base = urlsplit(base)

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        request.url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, parts.fragment))
        return super().send(request, **kwargs)
