"""The DuckDB warehouse, and writing per-horizon rows to it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource


class Warehouse(DuckDBResource):
    """The warehouse: a DuckDB file (beside the lake by default) or a MotherDuck database (md:<name>)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # DuckDB cannot create a file in a folder that is not there, and the resource retries that for
        # minutes before it says so: a new lake's folder is made here instead.
        if not self.database.startswith("md:") and self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)


def replace_horizons(conn, table: str, frame: pl.DataFrame) -> None:
    """Replace `table`'s rows for the (asset, horizon) pairs in `frame` with `frame`'s rows.

    The table is created from the frame's columns on first use; rows of other assets and horizons
    stay, so a run over some horizons leaves the others as they were.
    """
    schema = table.split(".")[0]
    conn.execute(f"create schema if not exists {schema}")
    conn.register("incoming", frame.to_arrow())
    conn.execute(f"create table if not exists {table} as select * from incoming where false")
    add_new_columns(conn, table, frame)
    conn.execute(f"delete from {table} where (asset, horizon) in (select distinct asset, horizon from incoming)")
    conn.execute(f"insert into {table} by name select * from incoming")
    conn.unregister("incoming")


def add_new_columns(conn, table: str, frame: pl.DataFrame) -> None:
    """Columns a newer version of an asset writes are added to its existing table (null in older rows).
    `frame` must be registered as `incoming`."""
    schema, name = table.split(".")
    have = {
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchall()
    }
    incoming = conn.sql("select * from incoming limit 0")
    for column, kind in zip(incoming.columns, incoming.dtypes, strict=True):
        if column not in have:
            conn.execute(f'alter table {table} add column "{column}" {kind}')
