"""How results read in the Dagster UI: frames as markdown tables."""

from __future__ import annotations

import dagster as dg
import polars as pl


def table(frame: pl.DataFrame, rows: int = 20) -> dg.MetadataValue:
    """A markdown table of the first `rows` rows, every column shown."""
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cols=-1,
        tbl_rows=rows,
        tbl_width_chars=10_000,
        fmt_str_lengths=80,
    ):
        return dg.MetadataValue.md(str(frame.head(rows)))
