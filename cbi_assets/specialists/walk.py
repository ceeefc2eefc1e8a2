"""A specialist's walk forward inside its regime, beside the generalist on the same folds.

A regime's rows are contiguous in a training set: a calendar regime is one period of the calendar,
a detected regime (`detected_<state>_<yyyymmdd>`) runs from its start to the newest row. Inside them,
purged and embargoed expanding folds (the same `walk_forward` as the generalist's) test the later
rows; each fold trains a specialist on the regime's earlier rows only and, for comparison, a
generalist on every row before the same cut-off (all regimes), each with a scaler fitted on its own
training rows. Both forecast exactly the same test rows, so the difference is what the training
rows taught them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from cbi_assets.models.evaluation import EDGE, METRICS, metrics, scope_test, scored
from cbi_assets.models.inputs import TrainingArrays, fold_inputs
from cbi_assets.models.registry import Budget, Fitted, Inputs
from cbi_assets.models.significance import DEFAULT_LEVEL, Edge
from cbi_assets.training.folds import FoldPlan, walk_forward
from cbi_assets.training.scaling import RobustScaler

DETECTED = re.compile(r"^detected_(?P<state>[a-z]+)_(?P<since>\d{8})$")
MODELS = ("specialist", "generalist", "generalist_oof", "random_walk")


@dataclass(frozen=True)
class SpecialistPlan:
    n_folds: int = 3
    test_fraction: float = 0.5  # the regime's later rows that are tested on
    min_train_rows: int = 60  # the first fold must train on at least this many regime rows
    min_test_rows: int = 10  # and every fold test at least this many
    oof_coverage: float = 0.5  # the stored generalist oof counts when it covers this share of the test rows
    significance: float = DEFAULT_LEVEL  # the level it must beat the random walk at (the profile's)


def regime_span(frame: pl.DataFrame, regime: str, calendar: list[str], day: str) -> tuple[int, int] | None:
    """First and last row (inclusive) of a regime in a training set, or None when it has no rows.

    A calendar regime's rows are those its `regime` column names; a detected regime's are the rows
    from its start date on. ValueError for a name that is neither.
    """
    if regime in calendar:
        rows = (frame["regime"] == regime).arg_true()
    elif (found := DETECTED.match(regime)) is not None:
        since = dt.datetime.strptime(found["since"], "%Y%m%d").date()
        rows = (frame[day].cast(pl.Date) >= since).arg_true()
    else:
        raise ValueError(
            f"regime {regime!r} is neither in the regime calendar ({', '.join(calendar)}) nor a detected "
            "regime named detected_<state>_<yyyymmdd>; add it to the calendar or fix the partition name"
        )
    if rows.is_empty():
        return None
    lo, hi = int(rows[0]), int(rows[-1])
    if hi - lo + 1 != rows.len():
        raise ValueError(
            f"regime {regime!r}: its {rows.len()} rows are not contiguous in the training set (rows {lo}-{hi}); "
            "the training set must be sorted by time"
        )
    return lo, hi


def regime_folds(
    frame: pl.DataFrame, span: tuple[int, int], key: str, embargo: int, plan: SpecialistPlan
) -> pl.DataFrame | str:
    """Purged, embargoed expanding folds over the regime's rows, as row indices of the whole
    training set (train_lo is the regime's first row), or why the regime is too short for them."""
    lo, hi = span
    rows = frame.slice(lo, hi - lo + 1)
    fold_plan = FoldPlan(plan.n_folds, "expanding", embargo=embargo, test_fraction=plan.test_fraction)
    try:
        folds = walk_forward(rows[key], rows["label_end"], fold_plan)
    except ValueError as error:
        return (
            f"too few rows ({rows.height}) for {plan.n_folds} purged folds with an embargo of {embargo} rows ({error})"
        )
    short = []
    if folds["train_rows"].min() < plan.min_train_rows:
        short.append(f"the first fold would train on {folds['train_rows'].min()} rows (at least {plan.min_train_rows})")
    if folds["test_rows"].min() < plan.min_test_rows:
        short.append(
            f"the smallest test window would hold {folds['test_rows'].min()} rows (at least {plan.min_test_rows})"
        )
    if short:
        return f"too few rows ({rows.height}): " + " and ".join(short)
    return folds.with_columns(pl.col("train_lo", "train_hi", "test_lo", "test_hi") + lo)


def _scaler(frame: pl.DataFrame, features: tuple[str, ...], lo: int, hi: int) -> RobustScaler:
    return RobustScaler.fit(frame.slice(lo, hi - lo + 1), features)


def walk_regime(
    frame: pl.DataFrame,
    data: TrainingArrays,
    folds: pl.DataFrame,
    key: str,
    fit: Callable[[Inputs, Budget], Fitted],
    budget: Budget,
    log=lambda message: None,
) -> pl.DataFrame:
    """Out-of-fold forecasts of the specialist and the same-fold generalist on the regime's test rows:
    key, regime, fold, price, forward_price, actual, specialist, generalist, random_walk."""
    parts = []
    for fold in folds.iter_rows(named=True):
        forecasts = {}
        for name, train_lo in (("specialist", fold["train_lo"]), ("generalist", 0)):
            cut = {**fold, "train_lo": train_lo}
            scaler = _scaler(frame, data.features, train_lo, fold["train_hi"])
            train, test = fold_inputs(data, cut, scaler, "tabular", budget)
            forecasts[name] = fit(train, budget).predict(test).mean
            log(f"{name} fold {fold['fold'] + 1}/{folds.height}: trained on {train.rows:,} rows, tests {test.rows:,}")
        rows = frame.slice(fold["test_lo"], fold["test_hi"] - fold["test_lo"] + 1)
        parts.append(
            rows.select(
                key,
                "regime",
                pl.lit(fold["fold"], pl.Int64).alias("fold"),
                (pl.col("forward_price") * (-pl.col("forward_return")).exp()).alias("price"),
                "forward_price",
                pl.col("forward_return").alias("actual"),
                pl.Series("specialist", forecasts["specialist"], pl.Float64),
                pl.Series("generalist", forecasts["generalist"], pl.Float64),
                pl.lit(0.0).alias("random_walk"),
            )
        )
    return pl.concat(parts)


def train_specialist(
    frame: pl.DataFrame,
    data: TrainingArrays,
    span: tuple[int, int],
    fit: Callable[[Inputs, Budget], Fitted],
    budget: Budget,
) -> tuple[Fitted, RobustScaler]:
    """The specialist to forecast with: trained on every row of its regime (all labels have matured:
    the training set keeps labelled rows only), with a scaler fitted on those rows."""
    lo, hi = span
    scaler = _scaler(frame, data.features, lo, hi)
    whole = {"fold": -1, "train_lo": lo, "train_hi": hi, "test_lo": hi, "test_hi": hi}
    train, _ = fold_inputs(data, whole, scaler, "tabular", budget)
    return fit(train, budget), scaler


def with_generalist_oof(walked: pl.DataFrame, oof: pl.DataFrame | None, key: str) -> pl.DataFrame:
    """The stored generalist's out-of-fold forecast beside each test row it covers (null elsewhere)."""
    if oof is None:
        return walked.with_columns(pl.lit(None, pl.Float64).alias("generalist_oof"))
    stored = oof.select(key, pl.col("forecast").alias("generalist_oof"))
    return walked.join(stored, on=key, how="left")


def scores(walked: pl.DataFrame, *, horizon: int, periods_per_year: float, cost_bps: float) -> pl.DataFrame:
    """Metrics of every model (MODELS) per fold and overall on the rows it forecast: model, scope,
    group, rows, METRICS. The random walk and the specialist are also scored on the rows the stored
    generalist oof covers (groups `oof_rows`), so those three compare on the same rows."""
    out = []
    covered = walked.filter(pl.col("generalist_oof").is_not_null())
    for model in MODELS:
        rows = covered if model == "generalist_oof" else walked
        if rows.is_empty():
            continue
        frame = rows.select("fold", "regime", "price", "forward_price", "actual", pl.col(model).alias("forecast"))
        part = scored(frame, horizon=horizon, periods_per_year=periods_per_year, cost_bps=cost_bps)
        out.append(part.filter(pl.col("scope") != "regime").with_columns(pl.lit(model).alias("model")))
        if model in ("specialist", "random_walk") and not covered.is_empty():
            values = metrics(
                *(covered[c].to_numpy() for c in ("actual", model, "price", "forward_price")),
                horizon=horizon,
                periods_per_year=periods_per_year,
                cost_bps=cost_bps,
            )
            out.append(
                pl.DataFrame(
                    [
                        {
                            "scope": "overall",
                            "group": "oof_rows",
                            "rows": covered.height,
                            **values,
                            **dict.fromkeys(EDGE),
                            "model": model,
                        }
                    ],
                    schema=out[-1].schema,
                )
            )
    return pl.concat(out).select("model", "scope", "group", "rows", *METRICS, *EDGE)


def verdict(board: pl.DataFrame, plan: SpecialistPlan) -> dict[str, Any]:
    """Whether the specialist beat the generalist and the random walk and why.

    It must beat the generalist trained on every regime over the same folds (MASE, lower is better)
    and, where the stored generalist oof covers most of the test rows, that oof on the rows it covers
    too. Beating a generalist that is itself no better than the random walk is not enough to forecast
    with, so the random walk is a separate bar: the champion's significance rule at `plan.significance`.
    """

    def value(model: str, group: str, metric: str = "mase") -> float | None:
        found = board.filter((pl.col("model") == model) & (pl.col("scope") == "overall") & (pl.col("group") == group))
        return None if found.is_empty() else found[metric][0]

    tested = int(value("specialist", "all", "rows"))
    spec, gen = value("specialist", "all"), value("generalist", "all")
    beats = spec < gen
    why = [
        f"specialist MASE {spec:.3f} vs generalist {gen:.3f} on the same {tested} test rows "
        f"(direction {value('specialist', 'all', 'directional_accuracy'):.3f} vs "
        f"{value('generalist', 'all', 'directional_accuracy'):.3f}; random walk MASE 1)"
    ]
    covered = value("generalist_oof", "all", "rows") or 0
    oof_mase = value("generalist_oof", "all")
    if covered >= plan.oof_coverage * tested and oof_mase is not None:
        on_oof = value("specialist", "oof_rows")
        beats = beats and on_oof < oof_mase
        why.append(
            f"on the {int(covered)} rows the stored generalist oof covers: specialist {on_oof:.3f} vs oof {oof_mase:.3f}"
        )
    else:
        why.append(f"the stored generalist oof covers {int(covered)} of the {tested} test rows, too few to compare")
    specialist = board.filter((pl.col("model") == "specialist") & (pl.col("group") != "oof_rows"))
    against = Edge(*(scope_test(specialist, scope) for scope in ("overall", "recent")))
    earned = against.earned(plan.significance)
    why.append(f"it {against.why(plan.significance)}")
    verdict = "beats the generalist" if beats else "does not beat the generalist"
    verdict += " and the random walk" if beats and earned else " but not the random walk" if beats else ""
    return {
        "beats_generalist": bool(beats),
        "beats_random_walk": earned,
        "specialist_mase": spec,
        "generalist_mase": gen,
        "generalist_oof_mase": oof_mase if covered else None,
        "oof_rows": int(covered),
        "test_rows": tested,
        "why": f"{verdict}: " + "; ".join(why),
    }


def purge_violations(frame: pl.DataFrame, folds: pl.DataFrame, key: str) -> int:
    """Training rows whose label ends at or after their fold's first test row (0 for a purged walk)."""
    times, ends = frame[key], frame["label_end"]
    return sum(
        int((ends.slice(f["train_lo"], f["train_hi"] - f["train_lo"] + 1) >= times[f["test_lo"]]).sum())
        for f in folds.iter_rows(named=True)
    )
