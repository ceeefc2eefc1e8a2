"""The warehouse resource on a lake that is not there yet."""

import dagster as dg

from cbi_assets.warehouse import Warehouse


def test_the_warehouse_makes_its_folder_instead_of_retrying_for_minutes(tmp_path):
    database = tmp_path / "new-lake" / "warehouse.duckdb"
    with (
        dg.build_resources({"warehouse": Warehouse(database=str(database))}) as resources,
        resources.warehouse.get_connection() as conn,
    ):
        assert conn.execute("select 42").fetchone() == (42,)
    assert database.is_file()
