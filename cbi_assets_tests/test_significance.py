"""The significance rule a champion must pass: the Diebold-Mariano test with the overlap of h-step
labels, and on synthetic series the leaderboard's crown (noise never beats the random walk, a planted
signal is found)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from cbi_assets.catalogue import MARKETS
from cbi_assets.models.evaluation import scored
from cbi_assets.models.leaderboard import RANDOM_WALK, crowned, leaderboard, registry_role
from cbi_assets.models.registry import families
from cbi_assets.models.significance import DieboldMariano, diebold_mariano, earns, edge, recent_rows
from cbi_assets.models.walk import walk_family
from cbi_assets.predictions.shadow import verdict
from cbi_assets.profiles import PROFILES
from cbi_assets.training.folds import FoldPlan, walk_forward
from cbi_assets.training.sets import fold_scalers

ZL = MARKETS["ZL"]
WEEK = ZL.horizon("1w")
H = WEEK.bars  # 5 sessions: neighbouring labels share 4 of them


def overlapping(rng: np.random.Generator, rows: int, h: int) -> np.ndarray:
    """h-step sums of one-step noise: the forward returns of rows one session apart."""
    steps = rng.normal(0, 0.01, rows + h)
    return np.convolve(steps, np.ones(h), "valid")[:rows]


def test_a_candidate_identical_to_the_reference_has_no_edge():
    loss = np.abs(np.random.default_rng(0).normal(size=300))
    found = diebold_mariano(loss, loss, 5)
    assert np.isnan(found.statistic) and found.p_value == 1.0
    assert not edge(loss, loss, 5).earned()


def test_a_clearly_better_forecast_earns_it_and_the_recent_third_must_hold_too():
    rng = np.random.default_rng(1)
    actual = overlapping(rng, 900, H)
    good = np.abs(actual - 0.8 * actual)  # sees most of the move
    found = edge(good, np.abs(actual), H, np.repeat(np.arange(9), 100))
    assert found.overall.statistic > 3 and found.recent.p_value < 0.01 and found.earned()
    # The same edge that vanished in the last three folds: better overall, not recently.
    faded = good.copy()
    faded[600:] = np.abs(actual[600:]) + 0.002
    lost = edge(faded, np.abs(actual), H, np.repeat(np.arange(9), 100))
    assert lost.overall.statistic > 0 and lost.recent.statistic < 0 and not lost.earned()
    assert "shows no significant edge" in lost.why()


def test_the_recent_third_is_of_the_folds_or_of_the_rows():
    assert recent_rows(np.array([0, 0, 1, 1, 2, 2, 3, 3]), 8).tolist() == [False] * 4 + [True] * 4  # 2 of 4 folds
    assert recent_rows(None, 6).tolist() == [False] * 4 + [True] * 2


def test_the_overlap_of_h_step_labels_is_accounted_for():
    """Two equally skilled forecasts of overlapping weekly labels: the test finds a false edge about as
    often as its level says. Treating the rows as independent (h = 1) finds one far more often."""
    rng = np.random.default_rng(7)
    rejections, naive = [], []
    for _ in range(400):
        actual = overlapping(rng, 500, H)
        other = np.abs(actual - 0.3 * overlapping(rng, 500, H))
        twin = np.abs(actual - 0.3 * overlapping(rng, 500, H))  # two equally bad forecasts: no edge either way
        rejections.append(diebold_mariano(twin, other, H).p_value <= 0.05)
        naive.append(diebold_mariano(twin, other, 1).p_value <= 0.05)
    assert np.mean(rejections) <= 0.08, f"false edges {np.mean(rejections):.3f} at the 5% level"
    assert np.mean(naive) > 2 * np.mean(rejections)


def test_many_candidates_share_the_level():
    strong = DieboldMariano(2.5, 0.01, 500, 100)
    assert earns(strong, strong, 0.05, 1)
    assert not earns(strong, strong, 0.05, 10)  # one of ten at 0.005 each
    with pytest.raises(ValueError, match="between 0 and 0.5"):
        earns(strong, strong, 0.7)


def test_the_random_walk_is_never_held_back_as_a_challenger():
    champion = {"family": "lightgbm"}
    assert registry_role(champion, RANDOM_WALK) == "champion"
    assert registry_role(champion, "xgboost") == "challenger"
    assert registry_role(None, "xgboost") == "champion"


def test_a_challenger_is_promoted_only_with_a_significant_edge():
    rng = np.random.default_rng(3)
    days = pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 12, 31), "1d", eager=True).head(300)
    actual = overlapping(rng, 300, H)
    champion = actual + rng.normal(0, 0.01, 300)

    def matured(challenger: np.ndarray) -> pl.DataFrame:
        return pl.concat(
            [
                pl.DataFrame({"as_of": days, "model_version": name, "forecast_return": values, "actual_return": actual})
                for name, values in (("m/1", champion), ("m/2", challenger))
            ]
        )

    slightly = matured(actual + rng.normal(0, 0.0099, 300))  # lower mean error, by luck
    found = verdict(slightly, "m/1", "m/2", 20, H)
    assert not found.promote and "no significant edge over the champion" in found.why
    better = verdict(matured(actual + rng.normal(0, 0.002, 300)), "m/1", "m/2", 20, H)
    assert better.promote and "beats the champion" in better.why
    assert better.challenger_mae < better.champion_mae


# --- The crown on synthetic series ------------------------------------------------------------------

FAMILIES_TRIED = ("random_walk", "drift", "seasonal_naive", "ets", "lightgbm", "xgboost")
BUDGET = PROFILES["sample"].training
REGISTERED = {f.name: f for f in families()}


def synthetic_set(seed: int, signal: float, rows: int = 1000) -> pl.DataFrame:
    """A ZL-like weekly training set: a random walk's prices, six noise features and, when `signal` > 0,
    a seventh feature known at the origin that moves the forward return by signal x its value."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.01, rows + H)
    close = 100 * np.exp(np.cumsum(steps))
    planted = rng.normal(0, 1, rows)
    forward = np.log(close[H : H + rows] / close[:rows]) + signal * 0.01 * planted
    days = pl.date_range(dt.date(2020, 1, 1), dt.date(2030, 1, 1), "1d", eager=True).head(rows + H)
    features = {f"noise_{i}": rng.normal(0, 1, rows) for i in range(6)}
    return pl.DataFrame(
        {
            "date": days.head(rows),
            "label_end": days.slice(H, rows),
            "forward_return": forward,
            "forward_price": close[:rows] * np.exp(forward),
            "regime": "synthetic",
            "weight": 1.0,
            "zl_1d_ret_1": np.r_[0.0, np.diff(np.log(close[:rows]))],
            **features,
            "planted": planted,
        }
    )


def crowned_family(seed: int, signal: float) -> tuple[str, pl.DataFrame]:
    frame = synthetic_set(seed, signal)
    folds = walk_forward(frame["date"], frame["label_end"], FoldPlan(5, "expanding", embargo=H))
    features = [c for c in frame.columns if c.startswith(("noise", "planted", "zl_"))]
    scalers = fold_scalers(frame, folds, features)
    stored = []
    for name in FAMILIES_TRIED:
        oof, _, _ = walk_family(REGISTERED[name], frame, folds, scalers, ZL, WEEK, BUDGET, lambda _: None)
        scores = scored(oof, horizon=H, periods_per_year=252, cost_bps=0)
        stored.append(
            scores.with_columns(pl.lit(name).alias("family"), pl.lit("x").alias("kind"), pl.lit(name).alias("run_id"))
        )
    board = leaderboard(pl.concat(stored), 0.05)
    return crowned(board)["family"], board


def test_on_a_pure_random_walk_the_random_walk_stays_champion():
    """Forty seeds of a random walk with noise features: some family always looks better than the random
    walk by luck; the rule must keep the random walk in at least 95% of them."""
    seeds = range(40)
    crowns, looked_better = [], 0
    for seed in seeds:
        family, board = crowned_family(seed, 0.0)
        crowns.append(family)
        looked_better += board.filter(pl.col("family") != RANDOM_WALK)["mase"].min() < 1
    kept = crowns.count(RANDOM_WALK) / len(crowns)
    assert kept >= 0.95, f"the random walk kept its crown in {kept:.0%} of seeds: {crowns}"
    # The rule is doing the work: by MASE alone, noise would have been crowned in some seeds.
    assert looked_better > 0


def test_a_planted_signal_is_crowned_to_the_family_that_can_see_it():
    for seed in range(3):
        family, board = crowned_family(100 + seed, 2.0)
        assert family in ("lightgbm", "xgboost"), board.select("family", "mase", "dm_p_value", "beats_random_walk")
        seen = board.filter(pl.col("family") == family).row(0, named=True)
        assert seen["beats_random_walk"] and seen["mase"] < 1
        # The families that only see past prices cannot see it.
        blind = board.filter(pl.col("family").is_in(["drift", "seasonal_naive", "ets"]))
        assert not blind["beats_random_walk"].any()
