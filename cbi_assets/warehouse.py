"""The warehouse: the tables and views the desk reads (`predictions.history` and its latest views, `models.*`,
`monitoring.*`, `backtests.*`, ...), in an embedded DuckDB file by default or in PostgreSQL for a team
(`CBI_WAREHOUSE_URL`). Both backends offer the same few operations on polars frames; reads are portable SQL.

On PostgreSQL every write is one transaction that first takes an advisory lock named after its table
(`pg_advisory_xact_lock(hashtext(table))`), so workers that create, widen, replace or append to the same table at
once take turns: no row is lost, no key doubled. On DuckDB the file admits one process at a time; a second one
waits and retries.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import polars as pl
from pydantic import Field

BY_HORIZON = ("asset", "horizon")  # the key of the per-horizon tables: a run replaces the horizons it ran
SCHEMES = ("postgresql", "postgres")


class WarehouseUnavailable(Exception):
    """The warehouse cannot be reached: PostgreSQL refuses the connection, or another process holds the DuckDB
    file for longer than the retries wait."""


def masked(url: str) -> str:
    """`url` with its password (in the authority or a `password=` parameter) shown as ***, for logs and messages."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        credentials, host = netloc.rsplit("@", 1)
        netloc = f"{credentials.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] + re.findall(r"(?:^|&)password=([^&]*)", parts.query)
    return [s for s in found if s]


class Warehouse(dg.ConfigurableResource):
    """The warehouse: a DuckDB file (beside the lake by default, or a MotherDuck database md:<name>), or the
    PostgreSQL database `url` names when it is set.

    Writes (each one transaction):
      replace_rows(table, frame, keys)  the table's rows whose `keys` match the frame's are replaced by its rows
      replace_horizons(table, frame)    the same, keyed by (asset, horizon)
      replace_table(table, frame)       the whole table becomes the frame
      append(table, frame, key)         the frame's rows whose key is not stored yet are added; returns how many
      create_view(view, select)         (re)create a view
      execute(sql, params, table=...)   one portable statement (with the table's lock when named)
    Reads: query(sql, params) -> polars frame; exists(table). SQL marks parameters with `?`.

    A table is created from the first frame written to it (polars types mapped to the backend's), and gains the
    columns a later frame brings (null in older rows).
    """

    database: str = Field(
        default="",
        description="The DuckDB file (a new one is made with its folder), ':memory:', or md:<name> for MotherDuck; "
        "unused when `url` is set.",
    )
    url: str | None = Field(
        default=None,
        repr=False,  # it may carry a password
        description="postgresql://user[:password]@host:port/db: the warehouse on PostgreSQL (give it as an "
        "environment variable, CBI_WAREHOUSE_URL, so its password stays out of the run's configuration).",
    )

    @property
    def location(self) -> str:
        """Where the warehouse is, to show: the DuckDB file, or the URL with its password masked."""
        return masked(self.url) if self.url else self.database

    def query(self, sql: str, params: Sequence = ()) -> pl.DataFrame:
        """The rows of a portable SELECT, with `?` parameters."""
        return self._backend().query(sql, list(params))

    def exists(self, table: str) -> bool:
        """Whether the table or view `schema.name` exists."""
        schema, name = _split(table)
        found = self.query(
            "select count(*) as n from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, name],
        )
        return found["n"][0] > 0

    def execute(self, sql: str, params: Sequence = (), *, table: str | None = None) -> int:
        """Run one portable statement (`?` parameters) in its own transaction; returns the rows it changed. Name
        the `table` it creates or writes to take that table's lock and make its schema first."""
        return self._backend().execute(sql, list(params), table)

    def replace_rows(
        self, table: str, frame: pl.DataFrame, keys: Sequence[str], *, clear: pl.DataFrame | None = None
    ) -> None:
        """Delete the rows of `table` whose `keys` match a row of `clear` (by default `frame`'s), then insert
        `frame`: a re-run replaces what it wrote before and leaves other keys as they were."""
        keys = tuple(keys)
        for what, part in (("frame", frame), ("clear", clear)):
            missing = [k for k in keys if part is not None and k not in part.columns]
            if missing:
                raise ValueError(f"{table}: the rows to replace lack key columns {missing} in `{what}`")
        clearing = (frame if clear is None else clear).select(keys).unique()
        self._backend().replace_rows(table, frame, keys, clearing)

    def replace_horizons(self, table: str, frame: pl.DataFrame) -> None:
        """Replace `table`'s rows for the (asset, horizon) pairs in `frame` with `frame`'s rows."""
        self.replace_rows(table, frame, BY_HORIZON)

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        """Make `table` hold exactly `frame` (its columns and rows)."""
        self._backend().replace_table(table, frame)

    def append(self, table: str, frame: pl.DataFrame, key: Sequence[str] = ()) -> int:
        """Insert the rows of `frame` whose `key` is not in `table` yet (all of them without a key; a row with a null
        key part is always new); returns how many were added. On PostgreSQL the key is a unique constraint."""
        key = tuple(key)
        missing = [k for k in key if k not in frame.columns]
        if missing:
            raise ValueError(f"{table}: the rows to append lack key columns {missing}")
        if key and frame.select(key).drop_nulls().is_duplicated().any():
            raise ValueError(f"{table}: the rows to append repeat a key {key}")
        return self._backend().append(table, frame, key)

    def create_view(self, view: str, select: str) -> None:
        """(Re)create `view` as the portable `select`; call it again when its tables gained columns."""
        self._backend().create_view(view, select)

    def _backend(self) -> _DuckDB | _Postgres:
        if self.url:
            return _Postgres(self.url)
        if not self.database:
            raise ValueError("the warehouse has neither a DuckDB file (database) nor a PostgreSQL url")
        return _DuckDB(self.database)


def _split(table: str) -> tuple[str, str]:
    schema, dot, name = table.partition(".")
    if not dot or not schema or not name or "." in name:
        raise ValueError(f"warehouse table {table!r} is not named schema.table")
    return schema, name


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    return ".".join(_ident(part) for part in _split(table))


def _columns(names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + _ident(n) for n in names)


# --- DuckDB -------------------------------------------------------------------------------------------------------


class _DuckDB:
    RETRIES = 10  # about 100 s in all: another process (a step, the sensors) holds the file meanwhile

    def __init__(self, database: str):
        self.database = database

    def make_folder(self) -> None:
        # DuckDB cannot create a file in a folder that is not there, and the connection would retry that for
        # minutes before it says so: a new lake's folder is made first.
        if not self.database.startswith("md:") and self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _connect(self):
        import duckdb

        self.make_folder()
        delay = 0.1
        for attempt in range(self.RETRIES + 1):
            try:
                conn = duckdb.connect(self.database, config={"custom_user_agent": "dagster"})
                break
            except (RuntimeError, duckdb.IOException) as error:
                if attempt == self.RETRIES:
                    raise WarehouseUnavailable(
                        f"the warehouse {self.database} stayed locked or unreadable for {delay:.0f} s "
                        f"({type(error).__name__}: {error}): another process holds it (a run's step, the sensors of "
                        "`cbi dev`, a notebook); try again once it is done"
                    ) from None
                time.sleep(delay)
                delay *= 2
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self, table: str | None = None):
        with self._connect() as conn:
            conn.execute("begin transaction")
            try:
                if table:
                    conn.execute(f"create schema if not exists {_ident(_split(table)[0])}")
                yield conn
            except BaseException:
                conn.execute("rollback")
                raise
            conn.execute("commit")

    def query(self, sql: str, params: list) -> pl.DataFrame:
        with self._connect() as conn:
            return conn.sql(sql, params=params or None).pl()

    def execute(self, sql: str, params: list, table: str | None) -> int:
        with self._transaction(table) as conn:
            rows = conn.execute(sql, params or None).fetchall()
        return rows[0][0] if rows and len(rows[0]) == 1 and isinstance(rows[0][0], int) else 0

    def _prepare(self, conn, table: str, frame: pl.DataFrame) -> None:
        """`frame` registered as `incoming`, and `table` made from it or widened to take it."""
        conn.register("incoming", frame.to_arrow())
        conn.execute(f"create table if not exists {_qualified(table)} as select * from incoming where false")
        schema, name = _split(table)
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
                conn.execute(f"alter table {_qualified(table)} add column {_ident(column)} {kind}")

    def replace_rows(self, table: str, frame: pl.DataFrame, keys: tuple[str, ...], clearing: pl.DataFrame) -> None:
        with self._transaction(table) as conn:
            self._prepare(conn, table, frame)
            conn.register("clearing", clearing.to_arrow())
            names = _columns(keys)
            conn.execute(f"delete from {_qualified(table)} where ({names}) in (select {names} from clearing)")
            conn.execute(f"insert into {_qualified(table)} by name select * from incoming")

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        with self._transaction(table) as conn:
            conn.register("incoming", frame.to_arrow())
            conn.execute(f"create or replace table {_qualified(table)} as select * from incoming")

    def append(self, table: str, frame: pl.DataFrame, key: tuple[str, ...]) -> int:
        with self._transaction(table) as conn:
            self._prepare(conn, table, frame)
            new = ""
            if key:
                match = " and ".join(f"h.{_ident(c)} = i.{_ident(c)}" for c in key)
                new = f" where not exists (select 1 from {_qualified(table)} h where {match})"
            return conn.execute(f"insert into {_qualified(table)} by name select * from incoming i{new}").fetchone()[0]

    def create_view(self, view: str, select: str) -> None:
        with self._transaction(view) as conn:
            conn.execute(f"create or replace view {_qualified(view)} as {select}")


# --- PostgreSQL ---------------------------------------------------------------------------------------------------

# polars -> PostgreSQL, in format_type()'s spelling so that a stored table's columns compare with a frame's.
_PG_TYPES: dict[type[pl.DataType], str] = {
    pl.Int8: "bigint",
    pl.Int16: "bigint",
    pl.Int32: "bigint",
    pl.Int64: "bigint",
    pl.UInt8: "bigint",
    pl.UInt16: "bigint",
    pl.UInt32: "bigint",
    pl.UInt64: "numeric",
    pl.Int128: "numeric",
    pl.Float32: "double precision",
    pl.Float64: "double precision",
    pl.Decimal: "numeric",
    pl.Boolean: "boolean",
    pl.String: "text",
    pl.Categorical: "text",
    pl.Enum: "text",
    pl.Null: "text",
    pl.Object: "text",
    pl.Binary: "bytea",
    pl.Date: "date",
    pl.Time: "time without time zone",
    pl.Duration: "interval",
    pl.List: "jsonb",
    pl.Array: "jsonb",
    pl.Struct: "jsonb",
}

# PostgreSQL type OIDs -> polars, for reading; the rest (json, jsonb, unknown) are inferred from the values.
_POLARS_OF_OID: dict[int, pl.DataType] = {
    16: pl.Boolean(),
    20: pl.Int64(),
    21: pl.Int64(),
    23: pl.Int64(),
    26: pl.Int64(),
    700: pl.Float64(),
    701: pl.Float64(),
    1700: pl.Float64(),
    18: pl.String(),
    19: pl.String(),
    25: pl.String(),
    1042: pl.String(),
    1043: pl.String(),
    17: pl.Binary(),
    1082: pl.Date(),
    1083: pl.Time(),
    1114: pl.Datetime("us"),
    1184: pl.Datetime("us", "UTC"),
    1186: pl.Duration("us"),
}


def pg_type(dtype: pl.DataType) -> str:
    """The PostgreSQL column type of a polars dtype (nested types are stored as jsonb)."""
    if isinstance(dtype, pl.Datetime):
        return "timestamp with time zone" if dtype.time_zone else "timestamp without time zone"
    try:
        return _PG_TYPES[dtype.base_type()]
    except KeyError:
        raise TypeError(f"no PostgreSQL type for polars {dtype}; add it to warehouse._PG_TYPES") from None


def _portable(sql: str, params: list) -> str:
    """`?` parameters in psycopg2's style (`%s`); a literal % doubled, as psycopg2 then wants."""
    return sql.replace("%", "%%").replace("?", "%s") if params else sql


def _finite(value):
    """A nested value with NaN and infinities as null: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _rows(frame: pl.DataFrame) -> list[tuple]:
    from psycopg2.extras import Json

    columns = []
    for name, dtype in frame.schema.items():
        values = frame[name].to_list()
        if dtype.is_nested():
            values = [
                None if v is None else Json(_finite(v), dumps=lambda v: json.dumps(v, default=str)) for v in values
            ]
        elif isinstance(dtype, pl.Object):
            values = [None if v is None else str(v) for v in values]
        columns.append(values)
    return list(zip(*columns, strict=True))


def _series(name: str, oid: int, values: list) -> pl.Series:
    dtype = _POLARS_OF_OID.get(oid)
    if oid == 17:
        values = [None if v is None else bytes(v) for v in values]
    if dtype is not None:
        return pl.Series(name, values, dtype=dtype, strict=False)
    try:  # json/jsonb come back parsed: lists and objects become polars lists and structs
        return pl.Series(name, values, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        return pl.Series(name, [None if v is None else json.dumps(v) for v in values], dtype=pl.String)


class _Postgres:
    def __init__(self, url: str):
        if urlsplit(url).scheme not in SCHEMES:
            raise ValueError(f"warehouse URL {masked(url)} is not postgresql://user@host:port/database")
        self.url = url

    def _redact(self, text: str) -> str:
        for secret in _secrets(self.url):
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _connect(self):
        import psycopg2

        try:
            conn = psycopg2.connect(self.url, connect_timeout=10, application_name="cbi", options="-c TimeZone=UTC")
        except psycopg2.OperationalError as error:
            raise WarehouseUnavailable(
                f"the warehouse {masked(self.url)} cannot be reached ({self._redact(str(error).strip())}); is "
                "PostgreSQL running there, and is CBI_WAREHOUSE_URL right?"
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _writing(self, table: str) -> Iterator:
        """A cursor in a transaction that holds `table`'s advisory lock, its schema made first."""
        with self._connect() as conn:
            schema = _split(table)[0]
            with conn, conn.cursor() as cursor:
                cursor.execute("select 1 from pg_namespace where nspname = %s", [schema])
                if cursor.fetchone() is None:  # concurrent `create schema if not exists` can collide: one at a time
                    cursor.execute("select pg_advisory_xact_lock(hashtext(%s))", [f"schema {schema}"])
                    cursor.execute(f"create schema if not exists {_ident(schema)}")
            with conn, conn.cursor() as cursor:  # commits at the end, or rolls back on an error
                cursor.execute("select pg_advisory_xact_lock(hashtext(%s))", [table])
                yield cursor

    def query(self, sql: str, params: list) -> pl.DataFrame:
        with self._connect() as conn, conn.cursor() as cursor:
            cursor.execute(_portable(sql, params), params or None)
            rows = cursor.fetchall()
            values = list(zip(*rows, strict=True)) if rows else [() for _ in cursor.description]
            return pl.DataFrame(
                [_series(d.name, d.type_code, list(v)) for d, v in zip(cursor.description, values, strict=True)]
            )

    def execute(self, sql: str, params: list, table: str | None) -> int:
        if table:
            with self._writing(table) as cursor:
                cursor.execute(_portable(sql, params), params or None)
                return max(cursor.rowcount, 0)
        with self._connect() as conn, conn, conn.cursor() as cursor:
            cursor.execute(_portable(sql, params), params or None)
            return max(cursor.rowcount, 0)

    @staticmethod
    def _stored(cursor, table: str) -> dict[str, str]:
        """The columns of `table` and their types (format_type's spelling); empty when it does not exist."""
        cursor.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute "
            "where attrelid = to_regclass(%s) and attnum > 0 and not attisdropped order by attnum",
            [_qualified(table)],
        )
        return dict(cursor.fetchall())

    def _prepare(self, cursor, table: str, frame: pl.DataFrame, key: tuple[str, ...] = ()) -> None:
        """`table` made from `frame`'s columns (with `key` unique) or widened to take them; `frame` staged in the
        temporary table `incoming`."""
        have = self._stored(cursor, table)
        if not have:
            columns = [f"{_ident(c)} {pg_type(t)}" for c, t in frame.schema.items()]
            if key:
                columns.append(f"unique ({_columns(key)})")
            cursor.execute(f"create table {_qualified(table)} ({', '.join(columns)})")
        for column, dtype in frame.schema.items():
            if have and column not in have:
                cursor.execute(f"alter table {_qualified(table)} add column {_ident(column)} {pg_type(dtype)}")
        self._stage(cursor, table, "incoming", frame)

    @staticmethod
    def _stage(cursor, table: str, name: str, frame: pl.DataFrame) -> None:
        from psycopg2.extras import execute_values

        cursor.execute(
            f"create temporary table {name} on commit drop as select {_columns(frame.columns)} "
            f"from {_qualified(table)} where false"
        )
        if frame.height:
            execute_values(
                cursor, f"insert into {name} ({_columns(frame.columns)}) values %s", _rows(frame), page_size=1000
            )

    def replace_rows(self, table: str, frame: pl.DataFrame, keys: tuple[str, ...], clearing: pl.DataFrame) -> None:
        with self._writing(table) as cursor:
            self._prepare(cursor, table, frame)
            self._stage(cursor, table, "clearing", clearing)
            names = _columns(keys)
            cursor.execute(f"delete from {_qualified(table)} where ({names}) in (select {names} from clearing)")
            columns = _columns(frame.columns)
            cursor.execute(f"insert into {_qualified(table)} ({columns}) select {columns} from incoming")

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        from psycopg2.extras import execute_values

        wanted = {c: pg_type(t) for c, t in frame.schema.items()}
        with self._writing(table) as cursor:
            if self._stored(cursor, table) == wanted:  # the same columns: a view or grant on it stays
                cursor.execute(f"delete from {_qualified(table)}")
            else:
                cursor.execute(f"drop table if exists {_qualified(table)}")
                cursor.execute(
                    f"create table {_qualified(table)} ({', '.join(f'{_ident(c)} {t}' for c, t in wanted.items())})"
                )
            if frame.height:
                execute_values(
                    cursor,
                    f"insert into {_qualified(table)} ({_columns(frame.columns)}) values %s",
                    _rows(frame),
                    page_size=1000,
                )

    def append(self, table: str, frame: pl.DataFrame, key: tuple[str, ...]) -> int:
        with self._writing(table) as cursor:
            self._prepare(cursor, table, frame, key)
            columns = _columns(frame.columns)
            new = ""
            if key:
                match = " and ".join(f"h.{_ident(c)} = i.{_ident(c)}" for c in key)
                # The lock makes `not exists` exact; the unique key is the table's own guard.
                new = f" where not exists (select 1 from {_qualified(table)} h where {match}) on conflict do nothing"
            cursor.execute(
                f"insert into {_qualified(table)} ({columns}) select {_columns(frame.columns, 'i.')} from incoming i{new}"
            )
            return max(cursor.rowcount, 0)

    def create_view(self, view: str, select: str) -> None:
        import psycopg2

        # `create or replace` keeps the grants on the view and takes columns its table gained at the end; a view
        # whose columns changed otherwise is dropped and created anew.
        with self._writing(view) as cursor:
            cursor.execute("savepoint replacing")
            try:
                cursor.execute(f"create or replace view {_qualified(view)} as {select}")
            except psycopg2.Error:
                cursor.execute("rollback to savepoint replacing")
                cursor.execute(f"drop view if exists {_qualified(view)}")
                cursor.execute(f"create view {_qualified(view)} as {select}")
