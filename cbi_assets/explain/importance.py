"""Feature importance as mean |SHAP|, and its drift between two trainings of one family.

Both trainings are explained on the same rows, so a change in importance is the model's (what it
learned from new data), not a change in the rows it was shown.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from cbi_assets.explain.shapley import Attribution


def importance(attribution: Attribution) -> pl.DataFrame:
    """feature, mean_abs_shap, rank (1 = the largest mean |SHAP|), most important first."""
    mean_abs = (
        np.mean(np.abs(attribution.shap), axis=0) if len(attribution.shap) else np.zeros(len(attribution.features))
    )
    return (
        pl.DataFrame({"feature": list(attribution.features), "mean_abs_shap": mean_abs})
        .sort("mean_abs_shap", descending=True, maintain_order=True)
        .with_row_index("rank", offset=1)
        .select(pl.col("feature"), pl.col("mean_abs_shap"), pl.col("rank").cast(pl.Int32))
    )


def importance_drift(previous: pl.DataFrame, latest: pl.DataFrame, movers: int = 10) -> tuple[dict, pl.DataFrame]:
    """How importance moved from the previous training to the latest (frames from `importance`).

    Returns ({rank_correlation, features, top_previous, top_latest}, the biggest movers): the
    Spearman rank correlation of mean |SHAP| over the features either training knows (a feature one
    of them lacks counts as 0), and the `movers` features whose mean |SHAP| changed most, with their
    ranks before and after. The correlation is NaN when either training attributes nothing.
    """
    both = (
        previous.select("feature", pl.col("mean_abs_shap").alias("previous"))
        .join(
            latest.select("feature", pl.col("mean_abs_shap").alias("latest")), on="feature", how="full", coalesce=True
        )
        .with_columns(pl.col("previous", "latest").fill_null(0.0))
        .with_columns(
            pl.col("previous").rank("min", descending=True).cast(pl.Int32).alias("previous_rank"),
            pl.col("latest").rank("min", descending=True).cast(pl.Int32).alias("latest_rank"),
            (pl.col("latest") - pl.col("previous")).alias("change"),
        )
    )
    constant = both["previous"].n_unique() < 2 or both["latest"].n_unique() < 2
    correlation = math.nan if constant else float(both.select(pl.corr("previous", "latest", method="spearman")).item())
    moved = (
        both.sort(pl.col("change").abs(), descending=True, maintain_order=True)
        .head(movers)
        .select("feature", "previous", "latest", "change", "previous_rank", "latest_rank")
    )
    summary = {
        "rank_correlation": correlation,
        "features": both.height,
        "top_previous": both.sort("previous_rank")["feature"][0] if both.height else None,
        "top_latest": both.sort("latest_rank")["feature"][0] if both.height else None,
    }
    return summary, moved
