"""Shadow models: when a challenger has earned the champion's place.

A challenger forecasts every day beside the champion, stored but unpublished. It is promoted only
on forecasts both made for the same origins and that have matured since: the challenger must have at
least `min_days` such origins, and its absolute errors on them must beat the champion's by the same
significance rule that crowns a champion on the walk-forward (`models.significance`: Diebold-Mariano
with the horizon's overlap, on every matured origin and on the most recent third). Walk-forward
scores got it registered; live, matured forecasts decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cbi_assets.models.significance import DEFAULT_LEVEL, edge


@dataclass(frozen=True)
class Verdict:
    promote: bool
    days: int  # matured origins both forecast
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
    days = both.height
    if days < min_days:
        return Verdict(False, days, None, None, f"{days} matured day(s) shared with the champion; {min_days} needed")
    mine, theirs = float(both["challenger"].mean()), float(both["champion"].mean())
    found = edge(both["challenger"].to_numpy(), both["champion"].to_numpy(), horizon_rows)
    return Verdict(
        found.earned(level),
        days,
        theirs,
        mine,
        f"over {days} matured days the challenger's mean absolute error {mine:.5f} against the champion's "
        f"{theirs:.5f}: it {found.why(level, against='the champion')}",
    )
