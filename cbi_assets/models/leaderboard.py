"""The leaderboard: every family's walk-forward metrics beside the random walk's, best first, and where
the best goes in the model registry."""

from __future__ import annotations

import polars as pl

from cbi_assets.models.evaluation import METRICS


def leaderboard(metrics: pl.DataFrame) -> pl.DataFrame:
    """Every family's overall metrics beside the random walk's, best MASE first.

    `metrics` holds the stored metrics tables of one market x horizon (scope, family, kind, run_id, METRICS).
    """
    board = metrics.filter(pl.col("scope") == "overall").select("family", "kind", "run_id", *METRICS)
    walk = board.filter(pl.col("family") == "random_walk").select(
        *(pl.col(m).alias(f"random_walk_{m}") for m in ("mape", "mae", "directional_accuracy"))
    )
    if walk.is_empty():
        raise ValueError("the leaderboard needs the random walk's metrics; materialize the reference models first")
    return (
        board.join(walk, how="cross")
        .sort(pl.col("mase").fill_nan(None), nulls_last=True)
        .with_row_index("rank", offset=1)
    )


def registry_role(champion: dict | None, best_family: str) -> str:
    """Where the leaderboard's best goes in the registry. The first, or a retraining of the champion's own
    family, becomes the champion; another family becomes the challenger: a shadow whose forecasts are
    stored but not published until it beats the champion on matured predictions (predictions/upload)."""
    if champion is None or champion["family"] == best_family:
        return "champion"
    return "challenger"
