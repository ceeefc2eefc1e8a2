"""The base families' out-of-fold forecasts side by side, with what each row knew at its origin: its
label end, its volatility scale and the data-driven regime state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import Horizon, Market
from cbi_assets.ensembles.conformal import volatility_scale
from cbi_assets.lake import Lake
from cbi_assets.models.inputs import horizon_rows, return_column
from cbi_assets.regimes.state import PROBABILITIES, STATES
from cbi_assets.training.sets import time_key

# A family that forecasts no move by construction: a member of every blend, but it has no direction
# to agree or disagree with, so conviction and spread leave it out; stacking leaves out its constant.
DIRECTIONLESS = ("random_walk",)
UNKNOWN_STATE = "unknown"  # before the regime state has history
ROW_COLUMNS = ("fold", "regime", "price", "forward_price", "actual")


@dataclass(frozen=True)
class Members:
    """One market x horizon: a row per walk-forward test row, a column per family present.

    rows:      the time key, fold, regime (named), price, forward_price, actual, label_end, scale (the
               volatility scale known at the origin), state (data-driven regime state), the state
               probabilities p_calm..p_crisis, and LightGBM's quantile interval (quantile_lower/upper,
               null when LightGBM is missing).
    forecasts: (rows, families) forecast log returns, in the order of `names`.
    missing:   the expected families that had no out-of-fold file.
    """

    rows: pl.DataFrame
    names: tuple[str, ...]
    forecasts: np.ndarray
    missing: tuple[str, ...]
    key: str

    def of(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        return self.forecasts[:, [self.names.index(n) for n in names]]

    @property
    def directional(self) -> tuple[str, ...]:
        """Members that forecast a direction (all but the random walk)."""
        return tuple(n for n in self.names if n not in DIRECTIONLESS)

    def state_inputs(self) -> np.ndarray:
        """(rows, 4) the regime state as numbers: its filtered probabilities."""
        return self.rows.select(PROBABILITIES).to_numpy().astype(np.float64)


def origins_of(training: pl.DataFrame, market: Market, horizon: Horizon) -> pl.DataFrame:
    """What each training-set row knew at its origin: the time key, `label_end`, `scale` (the volatility
    scale over the horizon, from the one-step returns up to the row) and, intraday, `trade_date`."""
    key, column = time_key(horizon), return_column(market, horizon)
    absent = [c for c in (key, "label_end", column) if c not in training.columns]
    if absent:
        raise ValueError(f"{market} {horizon.name}: the training set lacks columns {absent}; rematerialize it")
    returns = training[column].cast(pl.Float64).fill_nan(None).fill_null(0.0).to_numpy()
    extra = ["trade_date"] if horizon.intraday and "trade_date" in training.columns else []
    return training.select(key, "label_end", *extra).with_columns(
        pl.Series("scale", volatility_scale(returns, horizon_rows(horizon)))
    )


def family_oof(
    lake: Lake, market: Market, horizon: str, names: list[str] | tuple[str, ...]
) -> tuple[dict[str, pl.DataFrame], tuple[str, ...]]:
    """The stored out-of-fold forecasts of the families `names` that have them, and the names missing."""
    parts = {"market": market, "horizon": horizon}
    found = {n: lake.read(tables.OOF, **parts, family=n) for n in names if lake.exists(tables.OOF, **parts, family=n)}
    return found, tuple(n for n in names if n not in found)


def state_asof(rows: pl.DataFrame, state: pl.DataFrame | None, key: str) -> pl.DataFrame:
    """Each row's data-driven regime state as known at its origin: `state` and `p_calm`..`p_crisis`.

    `state` is the market's daily regime state table (date, regime = the confirmed state, state = the day's
    own reading, p_*). A daily row takes its own session's state (computed at that close, as its
    features are); an intraday row the state of the last session before its trade date (`trade_date`
    when the rows carry it, else the calendar date of `ts`), since its own session has not settled.
    The label is the confirmed regime, else the day's reading, else "unknown"; probabilities the
    Markov filter's, else the label as one-hot (all zero for unknown).
    """
    if state is None or state.is_empty():
        return pl.DataFrame(
            {"state": [UNKNOWN_STATE] * rows.height, **{p: [0.0] * rows.height for p in PROBABILITIES}},
            schema={"state": pl.String, **dict.fromkeys(PROBABILITIES, pl.Float64)},
        )
    missing = [c for c in ("date", "regime", "state", *PROBABILITIES) if c not in state.columns]
    if missing:
        raise ValueError(f"the regime state lacks columns {missing}; rematerialize <market>/regimes/state")
    daily = state.sort("date").select(
        pl.col("date").alias("_day"),
        pl.coalesce("regime", "state", pl.lit(UNKNOWN_STATE)).alias("state"),
        *(pl.col(p).cast(pl.Float64) for p in PROBABILITIES),
    )
    if key == "date":
        day, exact = pl.col("date"), True
    else:
        day = pl.col("trade_date") if "trade_date" in rows.columns else pl.col(key).dt.date()
        exact = False
    left = rows.select(day.cast(pl.Date).alias("_day")).with_row_index("_row")
    joined = left.sort("_day").join_asof(daily, on="_day", strategy="backward", allow_exact_matches=exact).sort("_row")
    known = pl.all_horizontal(pl.col(p).is_not_null() for p in PROBABILITIES)
    return joined.select(
        pl.col("state").fill_null(UNKNOWN_STATE),
        *(
            pl.when(known).then(pl.col(p)).otherwise((pl.col("state") == name).cast(pl.Float64).fill_null(0.0)).alias(p)
            for p, name in zip(PROBABILITIES, STATES, strict=True)
        ),
    )


def assemble(
    oof: dict[str, pl.DataFrame],
    origins: pl.DataFrame,
    state: pl.DataFrame | None,
    key: str,
    missing: tuple[str, ...] = (),
    where: str = "",
) -> Members:
    """Line up the families' out-of-fold forecasts on their common test rows.

    `origins` holds every row of the training set: the time key, `label_end`, `scale` (see
    `conformal.volatility_scale`) and, intraday, `trade_date`. Every family must forecast the same
    rows in the same folds: a file from an older training set is an error, not a silent join.
    `where` says whose forecasts they are in errors (a market and horizon).
    """
    if len(oof) < 1:
        raise ValueError(f"{where}: no family has out-of-fold forecasts; materialize the model assets first")
    names = tuple(oof)
    reference_name = "random_walk" if "random_walk" in oof else names[0]
    reference = oof[reference_name]
    for name, frame in oof.items():
        absent = [c for c in (key, *ROW_COLUMNS, "forecast") if c not in frame.columns]
        if absent:
            raise ValueError(
                f"{where}: the out-of-fold forecasts of {name} lack columns {absent}; rematerialize that "
                "family's model asset"
            )
        same = (
            frame.height == reference.height
            and frame[key].equals(reference[key])
            and frame["fold"].equals(reference["fold"])
        )
        if not same:
            raise ValueError(
                f"{where}: {name} covers {frame.height} rows but {reference_name} covers "
                f"{reference.height} (or other times or folds): they were trained on different folds; "
                "rematerialize the model assets for this horizon"
            )
        if not frame["forecast"].is_finite().all():
            raise ValueError(
                f"{where}: the forecasts of {name} have missing or infinite values; "
                "rematerialize that family's model asset"
            )
    extra = [c for c in ("trade_date",) if c in origins.columns]
    rows = reference.select(key, *ROW_COLUMNS).join(
        origins.select(key, "label_end", "scale", *extra), on=key, how="left", maintain_order="left"
    )
    unmatched = rows["label_end"].is_null()
    if unmatched.any():
        first = rows[key][int(unmatched.arg_true()[0])]
        raise ValueError(
            f"{where}: {int(unmatched.sum())} out-of-fold rows (first {first}) are not in the training "
            "set (or have no label end); the training set changed since the models ran: retrain them"
        )
    lightgbm = oof.get("lightgbm")
    quantiles = (
        lightgbm.select(pl.col("lower").alias("quantile_lower"), pl.col("upper").alias("quantile_upper"))
        if lightgbm is not None and {"lower", "upper"} <= set(lightgbm.columns)
        else pl.DataFrame(
            {"quantile_lower": [None] * rows.height, "quantile_upper": [None] * rows.height},
            schema={"quantile_lower": pl.Float64, "quantile_upper": pl.Float64},
        )
    )
    rows = pl.concat([rows, state_asof(rows, state, key), quantiles.cast(pl.Float64)], how="horizontal")
    forecasts = np.column_stack([oof[n]["forecast"].to_numpy().astype(np.float64) for n in names])
    return Members(rows.drop(extra), names, forecasts, missing, key)


def training_origins(lake: Lake, market: Market, horizon: str) -> pl.DataFrame:
    """The training set's key, label end and one-step return (and trade date), read as columns only."""
    h = market.horizon(horizon)
    have = set(lake.columns(tables.TRAINING_SET, market=market, horizon=horizon))
    wanted = [time_key(h), "label_end", return_column(market, h), "trade_date"]
    frame = lake.read(tables.TRAINING_SET, columns=[c for c in wanted if c in have], market=market, horizon=horizon)
    try:
        return origins_of(frame, market, h)
    except ValueError as error:
        raise ValueError(f"the {tables.TRAINING_SET.name} of {market} {horizon}: {error}") from None
