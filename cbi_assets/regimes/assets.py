"""Regime assets: the named calendar, the data-driven state of each market, and the state now."""

import datetime as dt

import dagster as dg
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.automation import EVENING
from cbi_assets.catalogue import MARKETS, REGIMES, Horizon, Market, Regime
from cbi_assets.features.inputs import continuous_bars
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, reads
from cbi_assets.partitions import REGIME_PARTITIONS
from cbi_assets.regimes.calendar import calendar_frame, regimes_of
from cbi_assets.regimes.state import (
    STATES,
    MarkovPlan,
    confirm_regime,
    current_regime,
    persistence_for,
    regime_state,
    shifts,
)
from cbi_assets.selections import stage
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse

STATE_COLOURS = {"calm": "#d8f0d8", "normal": "#f4f4f4", "stressed": "#fbe3c0", "crisis": "#f6c4c4"}


class RegimeEntry(dg.Config):
    name: str
    start: str | None = None  # YYYY-MM-DD; null: open towards the past
    end: str | None = None  # YYYY-MM-DD; null: open towards the future
    weight: float
    declared: str | None = None  # YYYY-MM-DD when the desk named it; null: its start plus a quarter


class RegimeCalendarConfig(dg.Config):
    """The named regimes and their training weights (default: the desk's plan in the catalogue)."""

    regimes: list[RegimeEntry] = [
        {
            "name": r.name,
            "start": r.start and r.start.isoformat(),
            "end": r.end and r.end.isoformat(),
            "weight": r.weight,
            "declared": r.declared_on and r.declared_on.isoformat(),
        }
        for r in REGIMES
    ]

    def calendar(self) -> pl.DataFrame:
        def day(text: str | None, name: str) -> dt.date | None:
            try:
                return dt.date.fromisoformat(text) if text else None
            except ValueError as error:
                raise dg.Failure(f"regime {name!r}: {text!r} is not a date (YYYY-MM-DD)") from error

        # The default is plain dicts (Dagster's schema needs a serializable default), which pydantic
        # leaves unvalidated; run configuration arrives as RegimeEntry.
        entries = [RegimeEntry(**e) if isinstance(e, dict) else e for e in self.regimes]
        regimes = [
            Regime(e.name, day(e.start, e.name), day(e.end, e.name), e.weight, day(e.declared, e.name)) for e in entries
        ]
        try:
            return calendar_frame(regimes)
        except ValueError as error:
            raise dg.Failure(f"regime calendar configuration: {error}") from error


@dg.asset(
    key=tables.REGIME_CALENDAR.asset_key(),
    group_name="regimes",
    description="The named regimes, their training weights and when each was declared; every date maps to "
    "exactly one. Walk-forward folds weight rows only by regimes declared by the end of their training. Editable "
    "by run configuration; new names become regime partitions.",
    kinds={"polars", "duckdb"},
    tags={"layer": "regimes", **stage("prepare")},
    automation_condition=EVENING,
)
def regime_calendar(
    context: dg.AssetExecutionContext, config: RegimeCalendarConfig, lake: Lake, warehouse: Warehouse
) -> dg.MaterializeResult:
    calendar = config.calendar()
    path = lake.write(tables.REGIME_CALENDAR, calendar)
    warehouse.replace_table("regimes.calendar", calendar)
    known = set(context.instance.get_dynamic_partitions(REGIME_PARTITIONS.name))
    added = [name for name in calendar["regime"] if name not in known]
    if added:
        context.instance.add_dynamic_partitions(REGIME_PARTITIONS.name, added)
        context.log.info(f"regime partitions added: {', '.join(added)}")
    return dg.MaterializeResult(
        metadata={
            "regimes": calendar.height,
            "calendar": md_table(calendar, 50),
            "partitions_added": dg.MetadataValue.json(added),
            "path": dg.MetadataValue.path(str(path)),
            "table": "regimes.calendar",
        }
    )


class RegimeStateConfig(dg.Config):
    """How the state is detected: Markov-switching refits, and how long a change must last to count
    (at least `persistence` sessions, a quarter of the horizon, at most `longest_persistence`)."""

    persistence: int = 5
    longest_persistence: int = 21
    k: int = MarkovPlan().k
    refit_days: int = MarkovPlan().refit_days
    fit_window: int | None = MarkovPlan().fit_window
    min_history: int = MarkovPlan().min_history

    def plan(self) -> MarkovPlan:
        return MarkovPlan(
            k=self.k, refit_days=self.refit_days, fit_window=self.fit_window, min_history=self.min_history
        )

    def persistence_of(self, horizon: Horizon) -> int:
        return persistence_for(0 if horizon.intraday else horizon.bars, self.persistence, self.longest_persistence)


def _state_plot(state: pl.DataFrame, title: str):
    fig, (price, prob) = figure(11, 5, rows=2)
    dates = state["date"].to_list()
    price.plot(dates, state["close"].to_list(), color="black", linewidth=0.7)
    price.set_yscale("log")
    price.set_title(title)
    runs = state.select("date", "regime").with_columns(pl.col("regime").rle_id().alias("run"))
    for run in (
        runs.group_by("run", maintain_order=True)
        .agg(pl.col("date").first(), pl.col("date").last().alias("end"), pl.col("regime").first())
        .iter_rows(named=True)
    ):
        if run["regime"] in STATE_COLOURS:
            price.axvspan(run["date"], run["end"], color=STATE_COLOURS[run["regime"]], linewidth=0)
    for name in STATES:
        if f"p_{name}" in state.columns:
            prob.plot(dates, state[f"p_{name}"].to_list(), linewidth=0.6, label=name)
    prob.set_ylabel("filtered probability")
    prob.legend(loc="upper left", ncols=4, fontsize=8)
    return plot(fig)


def _regime_asset(key: dg.AssetKey, market: Market, description: str, deps: list, kinds: set[str]):
    return horizon_asset(
        market,
        key=key,
        group_name="regimes",
        deps=deps,
        description=description,
        kinds=kinds,
        tags={"layer": "regimes", **stage("forecast")},
        automation_condition=EVENING,
    )


def _state_asset(market: Market):
    @_regime_asset(
        tables.REGIME_STATE.asset_key(market=market),
        market,
        f"{market} daily regime state per horizon from data known that day: VIX band, trend (bull/bear), "
        "Markov-switching (switching variance) filtered probabilities, and the regime shifts confirmed after the "
        "horizon's persistence (longer horizons need a change to last longer).",
        reads(tables.CONTINUOUS, tables.SHARED_LAYER, markets=[market], layer="volatility"),
        {"statsmodels", "polars"},
    )
    def _state(context: dg.AssetExecutionContext, config: RegimeStateConfig, lake: Lake) -> dg.MaterializeResult:
        bars = continuous_bars(lake, (market,))[market.key]
        vix = lake.read(tables.SHARED_LAYER, columns=["date", "vix"], layer="volatility")
        daily = bars.select("date", (pl.col("close") * pl.col("adj")).alias("close")).join(vix, on="date", how="left")
        context.log.info(
            f"{market.key}: fitting the Markov-switching state on {daily.height:,} sessions "
            f"(refit every {config.refit_days} sessions)"
        )
        # The Markov fit is the same for every horizon; only the persistence of a shift differs.
        daily_state = regime_state(daily, config.plan(), 1).drop("regime", "regime_since", "shift")

        def work(horizon: Horizon) -> Done:
            persistence = config.persistence_of(horizon)
            state = confirm_regime(daily_state, persistence)
            found = shifts(state)
            lake.write(tables.REGIME_STATE, state, market=market, horizon=horizon.name)
            lake.write(tables.REGIME_SHIFTS, found, market=market, horizon=horizon.name)
            return Done(
                rows=[
                    {
                        "persistence": persistence,
                        "shifts": found.height,
                        **{s: round(float((state["regime"] == s).mean() or 0.0), 3) for s in STATES},
                    }
                ],
                value=(persistence, state),
            )

        def finish(done: dict[str, Done]) -> dict:
            # One plot per persistence: horizons that share it share the state.
            shown: dict[int, tuple[str, pl.DataFrame]] = {}
            for key, result in done.items():
                shown.setdefault(result.value[0], (key, result.value[1]))
            return {
                f"states_{persistence}_sessions": _state_plot(
                    state,
                    f"{market} roll-adjusted close, shaded by the regime confirmed after {persistence} sessions "
                    f"({key})",
                )
                for persistence, (key, state) in shown.items()
            }

        metadata = {
            "sessions": daily_state.height,
            "path": dg.MetadataValue.path(lake.where(tables.REGIME_STATE, market=market)),
        }
        return each_horizon(
            context, market, work, name="regime state", summary="by_horizon", finish=finish, metadata=metadata
        )

    return _state


def _current_asset(market: Market):
    @_regime_asset(
        dg.AssetKey([market.key, "regimes", "current"]),
        market,
        f"{market}'s regime now, per horizon: the confirmed state and since when, trend, VIX band, and the "
        "named calendar regime. A confirmed stressed or crisis state that began after the calendar's last regime is "
        "added as a new regime partition.",
        reads(tables.REGIME_STATE, tables.REGIME_CALENDAR, markets=[market]),
        {"polars", "duckdb"},
    )
    def _current(context: dg.AssetExecutionContext, lake: Lake, warehouse: Warehouse) -> dg.MaterializeResult:
        calendar = lake.read(tables.REGIME_CALENDAR)
        latest_start = calendar["start"].drop_nulls().max()

        def work(horizon: Horizon) -> Done:
            now = current_regime(lake.read(tables.REGIME_STATE, market=market, horizon=horizon.name))
            now["named_regime"] = regimes_of(pl.Series([now["date"]]), calendar)[0]
            if now["state"] in ("stressed", "crisis") and latest_start and now["since"] > latest_start:
                name = f"detected_{now['state']}_{now['since']:%Y%m%d}"
                if name not in context.instance.get_dynamic_partitions(REGIME_PARTITIONS.name):
                    context.instance.add_dynamic_partitions(REGIME_PARTITIONS.name, [name])
                    context.log.info(f"new regime partition {name}")
            return Done(
                rows=[
                    {
                        "asset": market.symbol,
                        "horizon": horizon.name,
                        **{k: v for k, v in now.items() if not isinstance(v, dict)},
                    }
                ]
            )

        def finish(done: dict[str, Done]) -> dict:
            frame = pl.DataFrame([row for result in done.values() for row in result.rows])
            warehouse.replace_horizons("regimes.current", frame)
            return {"table": "regimes.current"}

        return each_horizon(context, market, work, name="current regime", summary="now", finish=finish)

    return _current


REGIME_ASSETS = [
    regime_calendar,
    *(_state_asset(m) for m in MARKETS.values()),
    *(_current_asset(m) for m in MARKETS.values()),
]
