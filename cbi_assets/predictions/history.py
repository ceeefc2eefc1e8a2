"""The warehouse's record of what was forecast: `predictions.history`, append-only and keyed by
(asset, horizon, as_of, model_version), and a view per market x horizon with the champion's latest
forecast (`predictions.vw_zl_1w_latest`, ...).

Append-only means a forecast once published is never rewritten: a re-run for the same origin and
model adds nothing, so validation always judges what the desk saw.
"""

from __future__ import annotations

import polars as pl

from cbi_assets.catalogue import Market
from cbi_assets.warehouse import Warehouse

TABLE = "predictions.history"
KEY = ("asset", "horizon", "as_of", "model_version")


def view_name(market: Market, horizon: str) -> str:
    return f"predictions.vw_{market.key}_{horizon.lower()}_latest"


def append(warehouse: Warehouse, frame: pl.DataFrame) -> int:
    """Insert the rows of `frame` whose key is not in the history yet; returns how many were added. Workers that
    publish the same forecasts at once add each key once."""
    missing = [c for c in KEY if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions to upload lack key columns {missing}")
    if frame.select(KEY).is_duplicated().any():
        raise ValueError("predictions to upload repeat a key (asset, horizon, as_of, model_version)")
    return warehouse.append(TABLE, frame, key=KEY)


def latest_select(market: Market, horizon: str) -> str:
    """The champion's newest origin of one market x horizon (a challenger's shadow forecasts never show): the
    latest published on a tie, then the highest model version. Portable SQL (PostgreSQL has no QUALIFY)."""

    def champion(row: str) -> str:
        return f"{row}.asset = '{market.symbol}' and {row}.horizon = '{horizon}' and {row}.role = 'champion'"

    newer = (
        "n.as_of > h.as_of or (n.as_of = h.as_of and (n.published_at > h.published_at or "
        "(n.published_at = h.published_at and n.model_version > h.model_version)))"
    )
    return (
        f"select * from {TABLE} h where {champion('h')} "
        f"and not exists (select 1 from {TABLE} n where {champion('n')} and ({newer}))"
    )


def refresh_view(warehouse: Warehouse, market: Market, horizon: str) -> str:
    """(Re)create the latest-forecast view of one market x horizon (after every upload, so that it shows the
    columns the history gained)."""
    name = view_name(market, horizon)
    warehouse.create_view(name, latest_select(market, horizon))
    return name


def exists(warehouse: Warehouse) -> bool:
    return warehouse.exists(TABLE)


def read(warehouse: Warehouse, market: Market | None = None, horizon: str | None = None) -> pl.DataFrame | None:
    """The stored forecasts (of one market, and horizon, when given), or None before the first upload."""
    if not exists(warehouse):
        return None
    where = {"asset": market.symbol if market else None, "horizon": horizon}
    given = {column: value for column, value in where.items() if value is not None}
    clauses = " and ".join(f"{column} = ?" for column in given)
    query = f"select * from {TABLE}{' where ' + clauses if clauses else ''} order by as_of, role"
    return warehouse.query(query, list(given.values()))
