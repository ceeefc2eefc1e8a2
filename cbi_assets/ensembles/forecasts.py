"""One market x horizon from its families' out-of-fold forecasts to the ensembles' forecasts table:
stacked and blended forecasts per walk-forward test row, the blend's conformal intervals beside
LightGBM's quantiles, conviction, confidence, and every model scored on the same folds.

The blend is the point forecast that carries the intervals: forecast combination studies find
simple precision-weighted means hard to beat with fitted weights (the "forecast combination
puzzle"), and it can be recomputed for a new origin from stored history without refitting
(`forecast_at`). The stackers are scored beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl
import polars.selectors as cs

from cbi_assets.ensembles.blend import BlendPlan, blend, blend_weights
from cbi_assets.ensembles.conformal import (
    LEVELS,
    MIN_SCORES,
    Calibration,
    check_levels,
    coverage,
    interval_at,
    level_name,
    scores_of,
    walk_forward_intervals,
)
from cbi_assets.ensembles.conviction import confidence, conviction, typical_move
from cbi_assets.ensembles.members import DIRECTIONLESS, Members
from cbi_assets.ensembles.stacking import STACKERS, trainable_folds, walk_stacked
from cbi_assets.models.evaluation import METRICS, overall, scope_test, scored
from cbi_assets.models.significance import earns

POINT = "blend"  # the ensemble whose forecast the intervals, conviction and confidence describe
ENSEMBLES = (*STACKERS, POINT)


@dataclass(frozen=True)
class EnsemblePlan:
    levels: tuple[float, ...] = LEVELS
    blend: BlendPlan = field(default_factory=BlendPlan)
    stack_min_rows: int = 100  # matured rows a fold's stacker needs; folds with fewer are left out
    stack_max_rows: int | None = 50_000  # the most recent matured rows a stacker fits on
    min_scores: int = MIN_SCORES  # matured conformal scores a fold's interval needs
    threads: int | None = 1

    def __post_init__(self) -> None:
        check_levels(self.levels, self.min_scores)
        if self.stack_min_rows < 1:
            raise ValueError(f"stack_min_rows={self.stack_min_rows}: a stacker needs at least 1 matured row")


@dataclass(frozen=True)
class Ensembled:
    oof: dict[str, pl.DataFrame]  # per ensemble, in the families' out-of-fold schema
    forecasts: pl.DataFrame  # a row per evaluated origin: the blend, its intervals, conviction, confidence
    scores: dict[str, pl.DataFrame]  # every family and ensemble scored on the evaluated rows
    coverage: pl.DataFrame
    evaluated: list[int]  # the folds every model is compared on


def in_price(columns: list[str]) -> list[pl.Expr]:
    """Log-return columns as prices: the origin's price moved by each return."""
    return [(pl.col("price") * pl.col(c).exp()).alias(f"{c}_price") for c in columns]


def ensemble(
    members: Members,
    horizon_rows: int,
    plan: EnsemblePlan = EnsemblePlan(),
    *,
    periods_per_year: float,
    cost_bps: float,
    log: Callable[[str], None] = lambda _: None,
) -> Ensembled:
    """Stack, blend and calibrate one market x horizon; see the module's docstring."""
    directional = members.directional
    if len(directional) < 2:
        raise ValueError(
            f"ensembles need at least 2 families besides {', '.join(DIRECTIONLESS)}; found "
            f"{list(directional)} (missing: {list(members.missing)}); materialize the model assets"
        )
    rows, key = members.rows, members.key
    folds = rows["fold"].to_numpy()
    actual = rows["actual"].to_numpy().astype(np.float64)
    label_end, origins = rows["label_end"], rows[key]
    evaluated = trainable_folds(folds, label_end, origins, max(plan.stack_min_rows, plan.blend.min_rows))
    if not evaluated:
        raise ValueError(
            f"no fold has {max(plan.stack_min_rows, plan.blend.min_rows)} matured out-of-fold rows "
            f"before it ({rows.height} rows in {len(np.unique(folds))} folds, labels {horizon_rows} rows "
            "long): there is nothing to fit an ensemble on; use more folds or a lower stack_min_rows"
        )
    keep = np.isin(folds, evaluated)
    log(
        f"ensembles on folds {evaluated[0]}..{evaluated[-1]} ({int(keep.sum()):,} of {rows.height:,} rows); "
        f"members: {', '.join(members.names)}"
    )

    forecasts: dict[str, np.ndarray] = {}
    votes, states = members.of(directional), members.state_inputs()
    for name, stacker in STACKERS.items():
        forecasts[name] = walk_stacked(
            stacker,
            votes,
            states,
            actual,
            folds,
            label_end,
            origins,
            evaluated,
            horizon_rows,
            max_rows=plan.stack_max_rows,
            threads=plan.threads,
            log=log,
        )
    weights, fell_back = blend_weights(
        members.forecasts, actual, rows["state"].to_numpy(), label_end, origins, plan.blend
    )
    forecasts[POINT] = np.where(keep, blend(members.forecasts, weights), np.nan)

    point = forecasts[POINT]
    scale = rows["scale"].to_numpy().astype(np.float64)
    calibration = Calibration.of(horizon_rows, periods_per_year)
    lower, upper, _ = walk_forward_intervals(
        point, actual, scale, folds, label_end, origins, plan.levels, plan.min_scores, calibration
    )
    # Unscaled, for comparison: the same weights; a normal prior needs a volatility scale.
    raw_lower, raw_upper, _ = walk_forward_intervals(
        point,
        actual,
        np.ones_like(scale),
        folds,
        label_end,
        origins,
        plan.levels,
        plan.min_scores,
        replace(calibration, normal_prior=False),
    )
    # The random walk's own empirical band: the conformal quantile of the raw h-step moves matured so far,
    # around no move. An interval is only better than it where it covers as well and is narrower.
    walk_lower, walk_upper, _ = walk_forward_intervals(
        np.zeros_like(point), actual, np.ones_like(scale), folds, label_end, origins, plan.levels, plan.min_scores
    )
    spread = votes.std(axis=1)
    typical = typical_move(actual, label_end, origins)
    widest = len(plan.levels) - 1

    names = [level_name(v) for v in plan.levels]
    table = (
        rows.select(key, "fold", "regime", "state", "label_end", "price")
        .with_columns(
            pl.Series("forecast", point),
            pl.Series("scale", scale),
            pl.Series("score", scores_of(point, actual, scale)),
            *(pl.Series(f"lower_{n}", lower[:, i]) for i, n in enumerate(names)),
            *(pl.Series(f"upper_{n}", upper[:, i]) for i, n in enumerate(names)),
            *(pl.Series(f"unscaled_lower_{n}", raw_lower[:, i]) for i, n in enumerate(names)),
            *(pl.Series(f"unscaled_upper_{n}", raw_upper[:, i]) for i, n in enumerate(names)),
            *(pl.Series(f"unscaled_walk_lower_{n}", walk_lower[:, i]) for i, n in enumerate(names)),
            *(pl.Series(f"unscaled_walk_upper_{n}", walk_upper[:, i]) for i, n in enumerate(names)),
            rows["quantile_lower"],
            rows["quantile_upper"],
            pl.Series("conviction", conviction(votes, point)),
            pl.Series("confidence", confidence((upper[:, widest] - lower[:, widest]) / 2, spread, typical)),
            pl.Series("spread", spread),
            pl.Series("typical_move", typical),
            pl.Series("blend_fell_back", fell_back),
            rows["actual"],
            rows["forward_price"],
        )
        .filter(pl.Series(keep))
        .with_columns(pl.col(pl.Float64).fill_nan(None))
    )
    interval_columns = [
        "forecast",
        *(f"{side}_{n}" for n in names for side in ("lower", "upper")),
        "quantile_lower",
        "quantile_upper",
    ]
    table = table.with_columns(in_price(interval_columns))

    named = list(zip(plan.levels, names, strict=True))
    intervals = {("conformal", level): (f"lower_{n}", f"upper_{n}") for level, n in named}
    intervals |= {("conformal_unscaled", level): (f"unscaled_lower_{n}", f"unscaled_upper_{n}") for level, n in named}
    intervals |= {
        ("random_walk_empirical", level): (f"unscaled_walk_lower_{n}", f"unscaled_walk_upper_{n}") for level, n in named
    }
    if table["quantile_lower"].is_not_null().any():
        # LightGBM's interval is its 10% and 90% quantiles: nominally 80%.
        intervals[("lightgbm_quantile", 0.8)] = ("quantile_lower", "quantile_upper")
    covered = coverage(table, intervals, horizon_rows)
    table = table.drop(cs.starts_with("unscaled_"))

    base = rows.select(key, "regime", "forward_price", "fold", "price", "actual")
    oof, scores = {}, {}
    for name, values in {**dict(zip(members.names, members.forecasts.T, strict=True)), **forecasts}.items():
        frame = base.with_columns(
            pl.Series("forecast", values),
            pl.lit(None, pl.Float64).alias("lower"),
            pl.lit(None, pl.Float64).alias("upper"),
            pl.lit(None, pl.Float64).alias("sigma"),
        )
        frame = frame.filter(pl.Series(keep))
        if name == POINT and 0.8 in plan.levels:
            # The families' own interval is 10-90%; the blend's stored beside it is its conformal 80%.
            frame = frame.with_columns(table["lower_80"].alias("lower"), table["upper_80"].alias("upper"))
        scores[name] = scored(frame, horizon=horizon_rows, periods_per_year=periods_per_year, cost_bps=cost_bps)
        if name in forecasts:
            oof[name] = frame
    return Ensembled(oof, table, scores, covered, evaluated)


def comparison(result: Ensembled, members: Members) -> pl.DataFrame:
    """Each ensemble's overall metrics beside the best single family's on the same rows.

    The best family is picked by its MASE on these very rows, with hindsight the ensemble does not
    have: beating it is the harder test.
    """
    families = {n: overall(result.scores[n]) for n in members.names}
    best = min(families, key=lambda n: np.inf if np.isnan(families[n]["mase"]) else families[n]["mase"])
    rows = result.oof[POINT].height
    out = []
    for name in result.oof:
        mine = overall(result.scores[name])
        out.append(
            {
                "ensemble": name,
                "folds": len(result.evaluated),
                "first_fold": result.evaluated[0],
                "rows": rows,
                **{m: mine[m] for m in METRICS},
                "best_family": best,
                "best_family_mase": families[best]["mase"],
                "best_family_directional_accuracy": families[best]["directional_accuracy"],
                "random_walk_mase": families["random_walk"]["mase"] if "random_walk" in families else np.nan,
                "mase_vs_best": mine["mase"] - families[best]["mase"],
                "beats_best_family": bool(mine["mase"] < families[best]["mase"]),
                # The champion's rule: an ensemble has an edge only where the test against the random walk says so.
                "dm_p_value": scope_test(result.scores[name], "overall").p_value,
                "beats_random_walk": earns(
                    scope_test(result.scores[name], "overall"), scope_test(result.scores[name], "recent")
                ),
                "members": ",".join(members.names),
                "missing": ",".join(members.missing),
            }
        )
    return pl.DataFrame(out)


# --- The latest origin -----------------------------------------------------------------------------


def weights_at(
    history: pl.DataFrame, names: tuple[str, ...], state: str, origin, plan: BlendPlan | None = None
) -> dict[str, float] | None:
    """The blend's weights for one new origin in regime state `state`, from the stored members table
    (`label_end`, `state`, `actual` and a forecast column per family); the same rule as `blend_weights`.
    None when fewer than `plan.min_rows` rows have matured."""
    plan = plan or BlendPlan()
    matured = history.filter(pl.col("label_end") < origin)
    own = matured.filter(pl.col("state") == state).tail(plan.window)
    chosen = own if own.height >= plan.min_rows else matured.tail(plan.window)
    if chosen.height < plan.min_rows:
        return None
    mse = chosen.select(((pl.col(n) - pl.col("actual")) ** 2).mean() for n in names).row(0)
    precision = 1.0 / np.maximum(np.asarray(mse, dtype=np.float64), 1e-18)
    return dict(zip(names, precision / precision.sum(), strict=True))


def forecast_at(
    family_forecasts: dict[str, float],
    state: str,
    origin,
    price: float,
    scale: float,
    members: pl.DataFrame,
    history: pl.DataFrame,
    plan: EnsemblePlan = EnsemblePlan(),
    *,
    calibration: Calibration,
) -> dict:
    """The ensemble for a new origin: the blend of the families' forecasts, its conformal intervals,
    conviction and confidence, from stored history only.

    family_forecasts: each family's forecast log return for the origin (families without history are
                      left out; at least two directional ones are needed).
    state:            the data-driven regime state at the origin (`members.state_asof`'s label).
    scale:            `conformal.volatility_scale` at the origin.
    members:          the stored members table (ensemble/members.parquet); history: the stored
                      forecasts table (ensemble/intervals.parquet, with its time key, `fold`, `label_end`
                      and `score`).
    calibration:      the horizon's, as the walk used (`Calibration.of`).
    """
    names = tuple(n for n in family_forecasts if n in members.columns)
    directional = [n for n in names if n not in DIRECTIONLESS]
    if len(directional) < 2:
        stored = [c for c in members.columns if c not in MEMBER_COLUMNS]
        raise ValueError(
            f"forecast_at needs forecasts of at least 2 stored families besides the random walk; got "
            f"{list(family_forecasts)} (stored: {stored})"
        )
    weights = weights_at(members, names, state, origin, plan.blend)
    if weights is None:
        raise ValueError(
            f"forecast_at: fewer than {plan.blend.min_rows} stored rows had matured before {origin}; "
            "materialize the ensemble on more history"
        )
    point = float(sum(weights[n] * family_forecasts[n] for n in names))
    key = "ts" if "ts" in history.columns else "date"
    intervals = interval_at(
        point, scale, history.rename({key: "origin"}), origin, plan.levels, plan.min_scores, calibration
    )
    votes = np.array([family_forecasts[n] for n in directional])
    return {
        "origin": origin,
        "state": state,
        "price": price,
        "weights": weights,
        **described(point, votes, intervals, typical_move_before(members, origin), price),
    }


def typical_move_before(history: pl.DataFrame, origin) -> float:
    """Mean absolute forward return of the stored rows (`label_end`, `actual`) matured before `origin`."""
    matured = history.filter(pl.col("label_end") < origin)["actual"].abs()
    return float(matured.mean()) if matured.len() else np.nan


def described(
    point: float, votes: np.ndarray, intervals: dict[float, tuple[float, float]] | None, typical: float, price: float
) -> dict:
    """One origin's forecast as the desk reads it: `forecast` (log return) and `forecast_price`; `conviction`
    across the directional members' forecasts `votes` (None without any); their `spread`; the
    `typical_move`; each level's bounds (`lower_80`, `upper_80_price`, ... only when `intervals` is
    given) and `confidence` from the widest (None without intervals)."""
    votes = np.asarray(votes, dtype=np.float64).reshape(1, -1)
    spread = float(votes.std()) if votes.size else np.nan
    out = {
        "forecast": point,
        "forecast_price": price * float(np.exp(point)),
        "conviction": float(conviction(votes, np.array([point]))[0]) if votes.size else None,
        "spread": spread,
        "typical_move": typical,
        "confidence": None,
    }
    if intervals is not None:
        for level, (lo, hi) in intervals.items():
            n = level_name(level)
            out |= {
                f"lower_{n}": lo,
                f"upper_{n}": hi,
                f"lower_{n}_price": price * float(np.exp(lo)),
                f"upper_{n}_price": price * float(np.exp(hi)),
            }
        lo, hi = intervals[max(intervals)]
        out["confidence"] = float(confidence(np.array([(hi - lo) / 2]), np.array([spread]), np.array([typical]))[0])
    return out


MEMBER_COLUMNS = ("fold", "label_end", "state", "actual")


def members_table(members: Members) -> pl.DataFrame:
    """What `forecast_at` needs of the families' history: a row per out-of-fold row, a column per family."""
    return members.rows.select(members.key, *MEMBER_COLUMNS).with_columns(
        pl.Series(n, members.forecasts[:, i]) for i, n in enumerate(members.names)
    )
