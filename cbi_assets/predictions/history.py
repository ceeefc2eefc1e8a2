"""The warehouse's record of what was forecast: `predictions.history`, append-only and keyed by
(asset, horizon, as_of, model_version), and a view per market x horizon with the champion's latest
forecast (`predictions.vw_zl_1w_latest`, ...).

Append-only means a forecast once published is never rewritten: a re-run for the same origin and
model adds nothing, so validation always judges what the desk saw.
"""

from __future__ import annotations

import polars as pl

from cbi_assets.catalogue import Market
from cbi_assets.warehouse import add_new_columns

TABLE = "predictions.history"
KEY = ("asset", "horizon", "as_of", "model_version")


def view_name(market: Market, horizon: str) -> str:
    return f"predictions.vw_{market.key}_{horizon.lower()}_latest"


def append(conn, frame: pl.DataFrame) -> int:
    """Insert the rows of `frame` whose key is not in the history yet; returns how many were added."""
    missing = [c for c in KEY if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions to upload lack key columns {missing}")
    if frame.select(KEY).is_duplicated().any():
        raise ValueError("predictions to upload repeat a key (asset, horizon, as_of, model_version)")
    conn.execute("create schema if not exists predictions")
    conn.register("incoming", frame.to_arrow())
    try:
        conn.execute(f"create table if not exists {TABLE} as select * from incoming where false")
        add_new_columns(conn, TABLE, frame)
        before = _count(conn)
        match = " and ".join(f"h.{c} = i.{c}" for c in KEY)
        conn.execute(
            f"insert into {TABLE} by name select * from incoming i "
            f"where not exists (select 1 from {TABLE} h where {match})"
        )
        return _count(conn) - before
    finally:
        conn.unregister("incoming")


def refresh_view(conn, market: Market, horizon: str) -> str:
    """(Re)create the latest-forecast view of one market x horizon: the champion's newest origin (a
    challenger's shadow forecasts never show), the latest published on a tie."""
    name = view_name(market, horizon)
    conn.execute(
        f"create or replace view {name} as select * from {TABLE} "
        f"where asset = '{market.symbol}' and horizon = '{horizon}' and role = 'champion' "
        "qualify row_number() over (order by as_of desc, published_at desc) = 1"
    )
    return name


def exists(conn) -> bool:
    return (
        conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'predictions' "
            "and table_name = 'history'"
        ).fetchall()[0][0]
        > 0
    )


def read(conn, market: Market | None = None, horizon: str | None = None) -> pl.DataFrame | None:
    """The stored forecasts (of one market, and horizon, when given), or None before the first upload."""
    if not exists(conn):
        return None
    where = {"asset": market.symbol if market else None, "horizon": horizon}
    clauses = [f"{column} = ${column}" for column, value in where.items() if value is not None]
    query = f"select * from {TABLE}{' where ' + ' and '.join(clauses) if clauses else ''} order by as_of, role"
    return conn.sql(query, params={c: v for c, v in where.items() if v is not None}).pl()


def _count(conn) -> int:
    return conn.execute(f"select count(*) from {TABLE}").fetchall()[0][0]
