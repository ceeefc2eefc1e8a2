"""Writing per-horizon rows to the DuckDB warehouse."""

from __future__ import annotations

import polars as pl


def replace_horizons(conn, table: str, frame: pl.DataFrame) -> None:
    """Replace `table`'s rows for the (asset, horizon) pairs in `frame` with `frame`'s rows.

    The table is created from the frame's columns on first use; rows of other assets and horizons
    stay, so a run over some horizons leaves the others as they were.
    """
    schema = table.split(".")[0]
    conn.execute(f"create schema if not exists {schema}")
    conn.register("incoming", frame.to_arrow())
    conn.execute(f"create table if not exists {table} as select * from incoming where false")
    conn.execute(f"delete from {table} where (asset, horizon) in (select distinct asset, horizon from incoming)")
    conn.execute(f"insert into {table} by name select * from incoming")
    conn.unregister("incoming")
