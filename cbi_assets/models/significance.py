"""Whether a model has earned the right to replace the random walk (or a champion): the one rule the
leaderboard, the MLflow champion alias, the regime specialists, the published forecasts and the shadow
promotion all apply.

A lower walk-forward MASE is not an edge: with a few folds and overlapping labels, noise often looks
better than the random walk. A candidate earns it only when a one-sided Diebold-Mariano test of its
absolute errors against the reference's rejects "no better" at the configured level, both on every
walk-forward row and on the most recent third of the folds (an edge that has faded is no edge).

The test, and why each choice:
- loss: the absolute error of the log return, the loss MASE ranks by;
- variance: h-step labels overlap, so the loss differences of neighbouring rows share h - 1 steps of
  the same path. The long-run variance is the original Diebold-Mariano one: autocovariances up to
  lag h - 1 with equal weights (exact for that overlap), falling back to Newey-West's Bartlett
  weights when the sum is not positive;
- small samples: Harvey, Leybourne and Newbold's correction of the statistic, and Student's t with
  one degree of freedom less than the independent outcomes the rows hold (rows / h): a year's
  horizon over four years of rows is four outcomes, not a thousand;
- many candidates: the leaderboard crowns the best of several families, so each is tested at
  level / candidates (Bonferroni): otherwise one of fifteen families of noise would pass often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

DEFAULT_LEVEL = 0.05
RECENT_SHARE = 1 / 3  # the most recent folds an edge must hold on too


@dataclass(frozen=True)
class DieboldMariano:
    """One Diebold-Mariano test of a candidate's losses against a reference's on the same rows."""

    statistic: float  # > 0: the candidate's losses are lower; NaN where it cannot be computed
    p_value: float  # one-sided: the chance of a statistic this high if the candidate were no better
    rows: int
    outcomes: float  # rows / h: about how many independent outcomes the test rests on


def diebold_mariano(loss: np.ndarray, reference: np.ndarray, horizon_rows: int) -> DieboldMariano:
    """The one-sided test that `loss` is lower than `reference` on average (rows in time order; rows
    where either is not finite are left out)."""
    loss, reference = np.asarray(loss, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    keep = np.isfinite(loss) & np.isfinite(reference)
    d = reference[keep] - loss[keep]
    n, h = len(d), max(int(horizon_rows), 1)
    outcomes = n / h
    if outcomes < 2:
        return DieboldMariano(math.nan, 1.0, n, outcomes)
    centred = d - d.mean()
    lags = min(h - 1, n - 1)
    gammas = np.array([centred[j:] @ centred[: n - j] / n for j in range(lags + 1)])
    variance = gammas[0] + 2 * gammas[1:].sum()
    if variance <= 0:
        variance = gammas[0] + 2 * (gammas[1:] * (1 - np.arange(1, lags + 1) / (lags + 1))).sum()
    if not variance > 0:
        # Every row's difference the same: better on every row is certain, no different is no edge.
        better = d.mean() > 0
        return DieboldMariano(math.inf if better else math.nan, 0.0 if better else 1.0, n, outcomes)
    correction = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    statistic = float(d.mean() / math.sqrt(variance / n) * correction)
    freedom = max(math.floor(outcomes) - 1, 1)
    return DieboldMariano(statistic, float(stats.t.sf(statistic, freedom)), n, outcomes)


def recent_rows(groups: np.ndarray | None, rows: int) -> np.ndarray:
    """Which rows are in the most recent third: of the folds when `groups` (each row's fold) is given,
    else of the rows themselves (matured forecasts in time order)."""
    if groups is None:
        mask = np.zeros(rows, dtype=bool)
        mask[rows - math.ceil(rows * RECENT_SHARE) :] = True
        return mask
    groups = np.asarray(groups)
    ordered = np.unique(groups)
    return np.isin(groups, ordered[len(ordered) - math.ceil(len(ordered) * RECENT_SHARE) :])


@dataclass(frozen=True)
class Edge:
    """A candidate against a reference: the test on every row and on the most recent third."""

    overall: DieboldMariano
    recent: DieboldMariano

    def earned(self, level: float = DEFAULT_LEVEL, candidates: int = 1) -> bool:
        """THE rule: better on both, each significant at `level` shared by the candidates compared."""
        return earns(self.overall, self.recent, level, candidates)

    def why(self, level: float = DEFAULT_LEVEL, candidates: int = 1, against: str = "the random walk") -> str:
        verdict = "beats" if self.earned(level, candidates) else "shows no significant edge over"
        shared = f" / {candidates} candidates" if candidates > 1 else ""
        return (
            f"{verdict} {against} (Diebold-Mariano at {level:g}{shared}: all rows {_shown(self.overall)}; "
            f"most recent third {_shown(self.recent)})"
        )


def _shown(test: DieboldMariano) -> str:
    return f"DM {test.statistic:+.2f}, p {test.p_value:.3f}, {test.outcomes:.0f} outcomes"


def edge(
    loss: np.ndarray,
    reference: np.ndarray,
    horizon_rows: int,
    groups: np.ndarray | None = None,
) -> Edge:
    """The candidate's `loss` against the `reference` loss (same rows, in time order; `groups` each
    row's fold, else the recent third is of the rows)."""
    recent = recent_rows(groups, len(loss))
    return Edge(
        diebold_mariano(loss, reference, horizon_rows),
        diebold_mariano(np.asarray(loss)[recent], np.asarray(reference)[recent], horizon_rows),
    )


def earns(overall: DieboldMariano, recent: DieboldMariano, level: float = DEFAULT_LEVEL, candidates: int = 1) -> bool:
    """Whether a candidate earns its place: lower losses, significant at `level` / `candidates`, on
    every row and on the most recent third. Stored tests (the leaderboard's) are judged here too."""
    check_level(level)
    each = level / max(int(candidates), 1)
    return all(t.statistic > 0 and t.p_value <= each for t in (overall, recent))


def check_level(level: float) -> float:
    if not 0 < level < 0.5:
        raise ValueError(f"significance level {level}: give a one-sided test level between 0 and 0.5, e.g. 0.05")
    return level
