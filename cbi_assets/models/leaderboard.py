"""The leaderboard: every family's walk-forward metrics beside the random walk's, best first, which
family is crowned, and where it goes in the model registry.

The crown goes to the best MASE among the families that beat the random walk by the significance
rule (`significance.earns`, at the profile's level shared by the families compared); when none
does, the random walk is crowned: a buyer gets the random walk and its honest band unless a model
has earned more.
"""

from __future__ import annotations

import polars as pl

from cbi_assets.models.evaluation import EDGE, METRICS, stored_test
from cbi_assets.models.significance import DEFAULT_LEVEL, earns

RANDOM_WALK = "random_walk"


def leaderboard(metrics: pl.DataFrame, level: float = DEFAULT_LEVEL) -> pl.DataFrame:
    """Every family's overall metrics beside the random walk's, best MASE first, with its
    Diebold-Mariano tests (overall and on the recent third: `dm_*`, `recent_dm_*`), whether it
    `beats_random_walk` by the rule, and the one row `crowned`.

    `metrics` holds the stored metrics tables of one market x horizon (scope, family, kind, run_id,
    METRICS, EDGE).
    """
    for column in EDGE:  # metrics stored before the test was added: no edge proven
        if column not in metrics.columns:
            metrics = metrics.with_columns(pl.lit(None, pl.Float64).alias(column))
    board = metrics.filter(pl.col("scope") == "overall").select("family", "kind", "run_id", *METRICS, *EDGE)
    recent = metrics.filter(pl.col("scope") == "recent").select(
        "family", *(pl.col(c).alias(f"recent_{c}") for c in ("mase", *EDGE))
    )
    walk = board.filter(pl.col("family") == RANDOM_WALK).select(
        *(pl.col(m).alias(f"random_walk_{m}") for m in ("mape", "mae", "directional_accuracy"))
    )
    if walk.is_empty():
        raise ValueError("the leaderboard needs the random walk's metrics; materialize the reference models first")
    board = board.join(recent, on="family", how="left").join(walk, how="cross")
    candidates = board.filter(pl.col("family") != RANDOM_WALK).height
    beats = [
        family != RANDOM_WALK and earns(stored_test(row), stored_test(row, "recent_"), level, candidates)
        for family, row in zip(board["family"], board.iter_rows(named=True), strict=True)
    ]
    board = (
        board.with_columns(pl.Series("beats_random_walk", beats, dtype=pl.Boolean))
        .sort(pl.col("mase").fill_nan(None), nulls_last=True)
        .with_row_index("rank", offset=1)
    )
    earners = board.filter(pl.col("beats_random_walk"))
    crowned = earners["family"][0] if earners.height else RANDOM_WALK
    return board.with_columns((pl.col("family") == crowned).alias("crowned"))


def crowned(board: pl.DataFrame) -> dict:
    """The crowned row of a leaderboard."""
    return board.filter(pl.col("crowned")).row(0, named=True)


def registry_role(champion: dict | None, crowned_family: str) -> str:
    """Where the crowned family goes in the registry. The first, a retraining of the champion's own
    family, or the random walk (no edge left: the fall-back is never held back) becomes the champion;
    another family becomes the challenger: a shadow whose forecasts are stored but not published until
    it beats the champion on matured predictions by the same significance rule (predictions/upload)."""
    if champion is None or champion["family"] == crowned_family or crowned_family == RANDOM_WALK:
        return "champion"
    return "challenger"
