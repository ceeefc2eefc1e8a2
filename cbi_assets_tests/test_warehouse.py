"""The warehouse's operations on both backends, the embedded DuckDB file and PostgreSQL (a throwaway server from
`servers.postgres`; skipped where Debian's postgresql is not installed): tables made and widened from frames, rows
replaced by key, keys appended once, the latest-forecast views, alerts, and several processes writing at once."""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing
import os
import uuid
from urllib.parse import urlsplit

import dagster as dg
import polars as pl
import pytest

from cbi_assets.catalogue import ZL
from cbi_assets.predictions import history
from cbi_assets.settings import Settings
from cbi_assets.warehouse import Warehouse, WarehouseUnavailable, masked
from cbi_assets_tests import servers
from resources import Alerts, build_resources, warehouse_of

BACKENDS = ["duckdb", "postgres"]
AT = dt.datetime(2026, 3, 2, 22, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A PostgreSQL cluster for this test session (one per xdist worker that needs it); yields its `cbi` URL."""
    if servers.postgres_bin() is None:
        pytest.skip(servers.missing())
    with servers.postgres(tmp_path_factory.mktemp("pg") / "cluster", ("cbi",)) as urls:
        yield urls["cbi"]


def new_database(server_url: str) -> str:
    """A new, empty database on the server of `server_url`; returns its URL."""
    import psycopg2

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    admin.close()
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


@pytest.fixture(params=BACKENDS)
def warehouse(request, tmp_path) -> Warehouse:
    """An empty warehouse of each backend: a DuckDB file, or a database of its own on the session's server."""
    if request.param == "duckdb":
        return Warehouse(database=str(tmp_path / "lake" / "warehouse.duckdb"))
    return Warehouse(url=new_database(request.getfixturevalue("postgres_server")))


def _board(horizon: str, family: str, mase: float, **more) -> dict:
    return {"asset": "ZL", "horizon": horizon, "family": family, "mase": mase, **more}


def _forecasts(n: int, start: int = 0, version: str = "cbi-ZL-1w/1", role: str = "champion", **more) -> pl.DataFrame:
    """`n` ZL 1w forecasts of consecutive origins from day `start`, published at AT."""
    return pl.DataFrame(
        [
            {
                "asset": "ZL",
                "horizon": "1w",
                "as_of": AT + dt.timedelta(days=i),
                "model_version": version,
                "role": role,
                "price": 50.0 + i,
                "forecast_return": 0.001 * i,
                "published_at": AT,
                **more,
            }
            for i in range(start, start + n)
        ]
    )


def test_the_warehouse_makes_its_folder_instead_of_retrying_for_minutes(tmp_path):
    database = tmp_path / "new-lake" / "warehouse.duckdb"
    with dg.build_resources({"warehouse": Warehouse(database=str(database))}) as resources:
        assert resources.warehouse.query("select 42 as answer")["answer"].to_list() == [42]
    assert database.is_file()


def test_replace_horizons_keeps_the_other_horizons_and_takes_new_columns(warehouse):
    first = pl.DataFrame([_board("1w", "lightgbm", 0.9), _board("1w", "ridge", 1.1), _board("1m", "ridge", 1.0)])
    warehouse.replace_horizons("models.leaderboard", first)
    # A newer version writes a column more, for 1w only: 1w's rows are replaced, 1m's stay (null in the new column).
    warehouse.replace_horizons("models.leaderboard", pl.DataFrame([_board("1w", "keras", 0.8, dm_p_value=0.01)]))
    stored = warehouse.query("select * from models.leaderboard order by horizon, family")
    assert stored.select("horizon", "family", "mase", "dm_p_value").rows() == [
        ("1m", "ridge", 1.0, None),
        ("1w", "keras", 0.8, 0.01),
    ]
    # A run of another market leaves ZL alone.
    warehouse.replace_horizons(
        "models.leaderboard", pl.DataFrame([{"asset": "MES", "horizon": "1w", "family": "ridge", "mase": 2.0}])
    )
    assert warehouse.query("select count(*) as n from models.leaderboard")["n"][0] == 3
    with pytest.raises(ValueError, match="lack key columns"):
        warehouse.replace_horizons("models.leaderboard", pl.DataFrame({"asset": ["ZL"], "mase": [1.0]}))


def test_replace_rows_clears_keys_that_bring_no_rows(warehouse):
    day = dt.date(2026, 3, 2)
    rows = pl.DataFrame(
        {"asset": ["ZL"] * 3, "horizon": ["1w", "1w", "1m"], "validated_on": [day] * 3, "group_value": ["a", "b", "a"]}
    )
    key = ("asset", "horizon", "validated_on")
    warehouse.replace_rows("monitoring.validation", rows, key)
    # The re-run has rows for 1m only, but clears 1w's of the day too.
    clear = pl.DataFrame({"asset": ["ZL", "ZL"], "horizon": ["1w", "1m"], "validated_on": [day, day]})
    warehouse.replace_rows("monitoring.validation", rows.filter(pl.col("horizon") == "1m"), key, clear=clear)
    assert warehouse.query("select horizon, group_value from monitoring.validation").rows() == [("1m", "a")]


def test_replace_table_makes_the_table_exactly_the_frame(warehouse):
    warehouse.replace_table("features.catalogue", pl.DataFrame({"name": ["a", "b"], "window": [5, 21]}))
    warehouse.replace_table("features.catalogue", pl.DataFrame({"name": ["c"], "table": ["zl_master_1d"]}))
    stored = warehouse.query("select * from features.catalogue")
    assert stored.columns == ["name", "table"] and stored.rows() == [("c", "zl_master_1d")]
    assert warehouse.exists("features.catalogue") and not warehouse.exists("features.nothing")
    # The same columns again: the rows change.
    warehouse.replace_table("features.catalogue", pl.DataFrame({"name": ["d", "e"], "table": ["x", "y"]}))
    assert warehouse.query("select name from features.catalogue order by name")["name"].to_list() == ["d", "e"]


def test_append_adds_each_key_once_and_counts_what_it_added(warehouse):
    assert history.read(warehouse) is None
    assert history.append(warehouse, _forecasts(5)) == 5
    assert history.append(warehouse, _forecasts(5)) == 0  # a re-run publishes nothing new
    assert history.append(warehouse, _forecasts(5, start=3)) == 3  # days 5..7 are new
    assert history.append(warehouse, _forecasts(2, version="cbi-ZL-1w/2", role="challenger")) == 2
    stored = history.read(warehouse, ZL, "1w")
    assert stored.height == 10 and stored.select(history.KEY).n_unique() == 10
    assert stored["as_of"].is_sorted()
    assert history.read(warehouse, ZL, "1m").is_empty()
    with pytest.raises(ValueError, match="repeat a key"):
        history.append(warehouse, pl.concat([_forecasts(1), _forecasts(1)]))
    with pytest.raises(ValueError, match="lack key columns"):
        history.append(warehouse, _forecasts(1).drop("model_version"))
    # Without a key every row is added.
    audit = pl.DataFrame({"day": [dt.date(2026, 3, 2)] * 2, "item": ["zl", "zl"]})
    assert warehouse.append("monitoring.audits", audit) == 2 and warehouse.append("monitoring.audits", audit) == 2


def test_every_column_type_comes_back_as_it_went_in(warehouse):
    frame = pl.DataFrame(
        {
            "asset": ["ZL", "MES", None],
            "small": pl.Series([1, -2, None], dtype=pl.Int32),
            "big": [2**40, 0, None],
            "value": [1.5, -0.25, None],
            "ok": [True, False, None],
            "day": [dt.date(2026, 3, 2), dt.date(1999, 12, 31), None],
            "at": [AT, AT - dt.timedelta(hours=30), None],
            "local": [dt.datetime(2026, 3, 2, 17, 30), dt.datetime(2000, 1, 1), None],
            "lag": [dt.timedelta(days=1), dt.timedelta(minutes=90), None],
            "drivers": [[0.5, -1.0], [], None],
            "state": [{"name": "calm", "since": 3}, {"name": "crisis", "since": None}, None],
            "text": ['it\'s "quoted" ? 100%', "ünïcode", None],
            "window": [5, 21, 63],  # reserved words in PostgreSQL
            "Mixed Case": ["a", "b", "c"],
        }
    )
    if warehouse.url is None:
        frame = frame.drop("lag")  # DuckDB keeps a duration as INTERVAL, which polars does not read back
    warehouse.append("models.types", frame)
    stored = warehouse.query('select * from models.types order by "window"')
    assert stored.columns == frame.columns
    assert stored.to_dicts() == frame.to_dicts()
    assert stored.schema["at"].time_zone is not None and stored.schema["local"].time_zone is None
    # NaN and infinities are numbers to both.
    warehouse.append("models.special", pl.DataFrame({"x": [math.nan, math.inf, -math.inf]}))
    x = warehouse.query("select x from models.special")["x"]
    assert x.is_nan().sum() == 1 and sorted(x.filter(~x.is_nan()).to_list()) == [-math.inf, math.inf]
    # Parameters are marked ?, and a literal % needs no doubling.
    found = warehouse.query("select asset from models.types where text like '%quoted%' and big > ?", [2**39])
    assert found["asset"].to_list() == ["ZL"]


def test_the_latest_view_shows_the_champions_newest_forecast_and_new_columns(warehouse):
    history.append(warehouse, _forecasts(3))
    history.append(warehouse, _forecasts(4, version="cbi-ZL-1w/2", role="challenger"))  # newer, but a shadow
    name = history.refresh_view(warehouse, ZL, "1w")
    assert name == "predictions.vw_zl_1w_latest"
    latest = warehouse.query(f"select * from {name}")
    assert latest.height == 1 and latest.row(0, named=True)["as_of"] == AT + dt.timedelta(days=2)
    assert latest.columns == _forecasts(1).columns
    # A newer upload brings a column: the refreshed view shows it.
    history.append(warehouse, _forecasts(1, start=3, edge="beats the random walk"))
    history.refresh_view(warehouse, ZL, "1w")
    latest = warehouse.query(f"select * from {name}")
    assert latest.height == 1 and latest["edge"].to_list() == ["beats the random walk"]
    # The same origin published twice (two versions, later published_at wins).
    later = _forecasts(1, start=3, version="cbi-ZL-1w/3").with_columns(
        pl.lit(AT + dt.timedelta(hours=1)).alias("published_at")
    )
    history.append(warehouse, later)
    history.refresh_view(warehouse, ZL, "1w")
    assert warehouse.query(f"select model_version from {name}")["model_version"].to_list() == ["cbi-ZL-1w/3"]
    views = warehouse.query(
        "select table_name from information_schema.tables where table_schema = 'predictions' and table_type = 'VIEW'"
    )
    assert views["table_name"].to_list() == ["vw_zl_1w_latest"]


def test_an_alert_key_is_claimed_once(warehouse):
    alerts = Alerts(warehouse=warehouse)
    assert alerts.send("drift", "ZL 1w drifts", asset="ZL", horizon="1w", key="drift:zl:1w")
    assert not alerts.send("drift", "ZL 1w drifts again", asset="ZL", horizon="1w", key="drift:zl:1w")
    assert alerts.send("note", "no key") and alerts.send("note", "no key")
    rows = warehouse.query("select kind, key, webhook_status, mail_status from monitoring.alerts order by kind")
    assert rows.rows() == [
        ("drift", "drift:zl:1w", "not configured", "not configured"),
        ("note", None, "not configured", "not configured"),
        ("note", None, "not configured", "not configured"),
    ]


# --- Several processes at once --------------------------------------------------------------------------------------

WORKERS = 6
ROUNDS = 4


def _worker(where: dict, worker: int, start, counts) -> None:
    """Publish forecasts that overlap every other worker's, and replace the same horizons, ROUNDS times."""
    warehouse = Warehouse(**where)
    start.wait()
    added = 0
    for round_ in range(ROUNDS):
        # Everyone publishes days 0..9; each worker also its own days and half of its neighbour's.
        added += history.append(warehouse, _forecasts(10))
        added += history.append(warehouse, _forecasts(10, start=10 + 5 * worker))
        board = pl.DataFrame(
            [_board(h, f"worker{worker}", float(round_), rank=r) for h in ("1w", "1m", "3m") for r in range(3)]
        )
        warehouse.replace_horizons("models.leaderboard", board)
        warehouse.replace_rows(
            "monitoring.validation_status",
            board.select("asset", "horizon", pl.lit(worker).alias("worker")),
            ("asset", "horizon"),
        )
    counts[worker] = added


@pytest.mark.integration
def test_workers_writing_at_once_lose_no_row_and_double_no_key(warehouse):
    context = multiprocessing.get_context("spawn")
    where = {"database": warehouse.database, "url": warehouse.url}
    with context.Manager() as manager:
        start, counts = manager.Barrier(WORKERS), manager.dict()
        workers = [context.Process(target=_worker, args=(where, i, start, counts)) for i in range(WORKERS)]
        for process in workers:
            process.start()
        for process in workers:
            process.join(timeout=240)
        assert [p.exitcode for p in workers] == [0] * WORKERS
        added = sum(counts.values())

    stored = history.read(warehouse)
    days = {i for i in range(10)} | {d for w in range(WORKERS) for d in range(10 + 5 * w, 20 + 5 * w)}
    assert stored.height == len(days) == added  # each key once, and each worker counted only what it added
    assert sorted((stored["as_of"].dt.convert_time_zone("UTC") - AT).dt.total_days().to_list()) == sorted(days)
    board = warehouse.query("select horizon, family, rank from models.leaderboard")
    # Each horizon holds one worker's last replacement whole: 3 ranks, never a mixture or a double.
    assert board.height == 9
    for horizon, rows in board.group_by("horizon"):
        assert rows["family"].n_unique() == 1 and sorted(rows["rank"]) == [0, 1, 2], horizon
    status = warehouse.query("select horizon, worker from monitoring.validation_status")
    assert status.height == 9 and status.group_by("horizon").agg(pl.col("worker").n_unique())["worker"].max() == 1


# --- Settings, secrets, and the assets on PostgreSQL -----------------------------------------------------------------

PASSWORD = "s3cr3t-W4rehouse"


def test_a_warehouse_url_is_shown_without_its_password(monkeypatch):
    url = f"postgresql://cbi:{PASSWORD}@db.example.org:5432/cbi"
    assert masked(url) == "postgresql://cbi:***@db.example.org:5432/cbi"
    assert masked(f"postgresql://db.example.org/cbi?user=cbi&password={PASSWORD}") == (
        "postgresql://db.example.org/cbi?user=cbi&password=***"
    )
    assert masked("postgresql://cbi@db/cbi") == "postgresql://cbi@db/cbi"
    monkeypatch.setenv("CBI_WAREHOUSE_URL", url)
    settings = Settings.from_env()
    assert settings.warehouse_url == url and PASSWORD not in repr(settings)
    warehouse = build_resources(settings)["warehouse"]
    # The run's configuration names the variable, not its value.
    assert isinstance(warehouse.url, dg.EnvVar) and PASSWORD not in repr(warehouse)
    monkeypatch.setenv("CBI_WAREHOUSE_URL", f"mysql://cbi:{PASSWORD}@db/cbi")
    with pytest.raises(ValueError, match=r"CBI_WAREHOUSE_URL='mysql://cbi:\*\*\*@db/cbi' is not a PostgreSQL URL"):
        Settings.from_env()


def test_an_unreachable_postgresql_is_named_without_its_password():
    url = f"postgresql://cbi:{PASSWORD}@127.0.0.1:{servers.free_port()}/cbi"
    warehouse = Warehouse(url=url)
    with pytest.raises(WarehouseUnavailable) as raised:
        warehouse.query("select 1")
    assert "postgresql://cbi:***@127.0.0.1" in str(raised.value) and PASSWORD not in str(raised.value)
    assert warehouse.location == masked(url)


@pytest.mark.integration
def test_the_validation_asset_writes_its_tables_to_postgresql(postgres_server, tmp_path, monkeypatch):
    from cbi_assets.monitoring.assets import MONITORING_ASSETS
    from cbi_assets.regimes.assets import regime_calendar
    from cbi_assets_tests.conftest import lake_resources
    from cbi_assets_tests.test_validation import DAYS, STEP, _continuous, _history

    url = new_database(postgres_server)
    _continuous(tmp_path, ZL, DAYS, [50.0 * math.exp(STEP * i) for i in range(len(DAYS))], [1.0] * len(DAYS))
    # The warehouse as the code location builds it: the URL read from the environment when the run starts.
    monkeypatch.setenv("CBI_WAREHOUSE_URL", url)
    resources = {
        **lake_resources(tmp_path),
        "warehouse": warehouse_of(Settings.from_env({**os.environ, "CBI_LAKE": str(tmp_path)})),
    }
    assert isinstance(resources["warehouse"].url, dg.EnvVar)
    warehouse = Warehouse(url=url)
    assert history.append(warehouse, _history(ape=10.0, covered_every=2, origins=list(range(20)))) == 20
    validation = next(a for a in MONITORING_ASSETS if a.key == dg.AssetKey(["zl", "monitoring", "validation"]))
    for _ in range(2):  # the same day twice: the second run's rows replace the first's
        result = dg.materialize([validation], partition_key="1w", resources=resources, raise_on_error=False)
        assert result.success
    [status] = warehouse.query("select * from monitoring.validation_status").to_dicts()
    assert (status["asset"], status["horizon"], status["rows"], status["passed"]) == ("ZL", "1w", 20, False)
    assert status["mape"] == pytest.approx(10.0) and status["validated_at"].utcoffset() == dt.timedelta(0)
    every = warehouse.query("select * from monitoring.validation where group_kind = 'all'")
    assert every.height == 1 and every["mape"][0] == pytest.approx(10.0)
    assert not (tmp_path / "warehouse.duckdb").exists()  # nothing went to the DuckDB file

    assert dg.materialize([regime_calendar], resources=resources).success
    calendar = warehouse.query("select * from regimes.calendar")
    assert "trump_2023_2025" in calendar["regime"].to_list()
