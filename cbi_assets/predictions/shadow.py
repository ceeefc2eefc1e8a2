"""Shadow models: when a challenger has earned the champion's place.

A challenger forecasts every day beside the champion, stored but unpublished. It is promoted only
on forecasts both made for the same origins and that have matured since: the challenger must have at
least `min_days` days of such origins (an intraday horizon's origins of one session are one day of evidence,
however many minutes it has), and its absolute errors on them must beat the champion's by the same
significance rule that crowns a champion on the walk-forward (`models.significance`: Diebold-Mariano
with the horizon's overlap, on every matured origin and on the most recent third). Walk-forward
scores got it registered; live, matured forecasts decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cbi_assets.calendars import trade_date
from cbi_assets.models.significance import DEFAULT_LEVEL, edge


@dataclass(frozen=True)
class Verdict:
    promote: bool
    days: int  # trade dates of the matured origins both forecast
    champion_mae: float | None
    challenger_mae: float | None
    why: str


def verdict(
    matured: pl.DataFrame,
    champion: str,
    challenger: str,
    min_days: int,
    horizon_rows: int = 1,
    level: float = DEFAULT_LEVEL,
) -> Verdict:
    """Compare two model versions on `matured` (rows of predictions.history with `actual_return`);
    `horizon_rows` is how many origins one label spans (the test's overlap)."""
    if min_days < 1:
        raise ValueError(f"min_days={min_days}: a challenger needs at least one matured day to be judged")

    def errors(version: str, name: str) -> pl.DataFrame:
        return matured.filter(pl.col("model_version") == version).select(
            "as_of", (pl.col("forecast_return") - pl.col("actual_return")).abs().alias(name)
        )

    both = errors(champion, "champion").join(errors(challenger, "challenger"), on="as_of").sort("as_of")
    days = trade_dates(both["as_of"])
    shared = f"{days} matured day(s)" if days == both.height else f"{both.height} matured origins on {days} day(s)"
    if days < min_days:
        return Verdict(False, days, None, None, f"{shared} shared with the champion; {min_days} days needed")
    mine, theirs = float(both["challenger"].mean()), float(both["champion"].mean())
    found = edge(both["challenger"].to_numpy(), both["champion"].to_numpy(), horizon_rows)
    return Verdict(
        found.earned(level),
        days,
        theirs,
        mine,
        f"over {shared} the challenger's mean absolute error {mine:.5f} against the champion's "
        f"{theirs:.5f}: it {found.why(level, against='the champion')}",
    )


def trade_dates(as_of: pl.Series) -> int:
    """How many trade dates the origins fall on: the evening's one a day, or a session's minutes."""
    if as_of.dtype == pl.Date:
        return as_of.n_unique()
    return as_of.to_frame("as_of").select(trade_date(pl.col("as_of"))).to_series().n_unique()
