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


def plot(figure) -> dg.MetadataValue:
    """A matplotlib figure as an image in the asset's metadata (markdown with an inline PNG)."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})")


def figure(width: float = 10, height: float = 4, rows: int = 1, sharex: bool = True):
    """A headless matplotlib figure and its axes (asset runs have no display); rows share the x axis
    unless `sharex` is False."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, 1, figsize=(width, height), sharex=sharex)
