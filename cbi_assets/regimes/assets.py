"""Regime assets: the named calendar, the data-driven state of each asset, and the state now."""


import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl

from cbi_assets.catalogue import market, REGIMES, Regime
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS, REGIME_PARTITIONS
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
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import replace_horizons

STATE_COLOURS = {"calm": "#d8f0d8", "normal": "#f4f4f4", "stressed": "#fbe3c0", "crisis": "#f6c4c4"}


def calendar_path(lake: Path) -> Path:
    return lake / "shared" / "regimes" / "calendar.parquet"


def state_path(lake: Path, asset: str, horizon: str) -> Path:
    return lake / "shared" / "regimes" / asset.upper() / horizon / "state.parquet"


def shifts_path(lake: Path, asset: str, horizon: str) -> Path:
    return lake / "shared" / "regimes" / asset.upper() / horizon / "shifts.parquet"


def read_calendar(lake: Path) -> pl.DataFrame:
    path = calendar_path(lake)
    if not path.is_file():
        raise dg.Failure(f"{path}: the regime calendar is not built yet; materialize shared/regimes/calendar first")
    return pl.read_parquet(path)


class RegimeEntry(dg.Config):
    name: str
    start: str | None = None  # YYYY-MM-DD; null: open towards the past
    end: str | None = None  # YYYY-MM-DD; null: open towards the future
    weight: float


class RegimeCalendarConfig(dg.Config):
    """The named regimes and their training weights (default: the desk's plan in the catalogue)."""

    regimes: list[RegimeEntry] = [
        {"name": r.name, "start": r.start and r.start.isoformat(), "end": r.end and r.end.isoformat(), "weight": r.weight}
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
        regimes = [Regime(e.name, day(e.start, e.name), day(e.end, e.name), e.weight) for e in entries]
        try:
            return calendar_frame(regimes)
        except ValueError as error:
            raise dg.Failure(f"regime calendar configuration: {error}") from error


@dg.asset(
    key=["shared", "regimes", "calendar"], group_name="regimes", required_resource_keys={"lake", "warehouse"},
    description="The named regimes and their training weights; every date maps to exactly one. Editable by run "
                "configuration; new names become regime partitions.",
    kinds={"polars", "duckdb"}, tags={"layer": "regimes"},
)
def regime_calendar(context: dg.AssetExecutionContext, config: RegimeCalendarConfig) -> dg.MaterializeResult:
    lake = Path(context.resources.lake.root)
    calendar = config.calendar()
    write_frame(calendar, calendar_path(lake))
    with context.resources.warehouse.get_connection() as conn:
        conn.execute("create schema if not exists regimes")
        conn.register("calendar", calendar.to_arrow())
        conn.execute("create or replace table regimes.calendar as select * from calendar")
    known = set(context.instance.get_dynamic_partitions(REGIME_PARTITIONS.name))
    added = [name for name in calendar["regime"] if name not in known]
    if added:
        context.instance.add_dynamic_partitions(REGIME_PARTITIONS.name, added)
        context.log.info(f"regime partitions added: {', '.join(added)}")
    return dg.MaterializeResult(metadata={
        "regimes": calendar.height,
        "calendar": md_table(calendar, 50),
        "partitions_added": dg.MetadataValue.json(added),
        "path": dg.MetadataValue.path(str(calendar_path(lake))),
        "table": "regimes.calendar",
    })


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
        return MarkovPlan(k=self.k, refit_days=self.refit_days, fit_window=self.fit_window, min_history=self.min_history)

    def persistence_of(self, asset: str, horizon: str) -> int:
        h = market(asset).horizon(horizon)
        return persistence_for(0 if h.intraday else h.bars, self.persistence, self.longest_persistence)


def _state_plot(state: pl.DataFrame, title: str):
    fig, (price, prob) = figure(11, 5, rows=2)
    dates = state["date"].to_list()
    price.plot(dates, state["close"].to_list(), color="black", linewidth=0.7)
    price.set_yscale("log")
    price.set_title(title)
    runs = state.select("date", "regime").with_columns(pl.col("regime").rle_id().alias("run"))
    for run in runs.group_by("run", maintain_order=True).agg(pl.col("date").first(), pl.col("date").last().alias("end"),
                                                               pl.col("regime").first()).iter_rows(named=True):
        if run["regime"] in STATE_COLOURS:
            price.axvspan(run["date"], run["end"], color=STATE_COLOURS[run["regime"]], linewidth=0)
    for name in STATES:
        if f"p_{name}" in state.columns:
            prob.plot(dates, state[f"p_{name}"].to_list(), linewidth=0.6, label=name)
    prob.set_ylabel("filtered probability")
    prob.legend(loc="upper left", ncols=4, fontsize=8)
    return plot(fig)


def _regime_asset(asset: str, name: str, description: str, deps: list, resources: set[str], kinds: set[str]):
    return dg.asset(
        key=[asset, "regimes", name], group_name="regimes", partitions_def=HORIZON_PARTITIONS[asset],
        backfill_policy=dg.BackfillPolicy.single_run(), required_resource_keys=resources, deps=deps,
        description=description, kinds=kinds, tags={"layer": "regimes"},
    )


def _state_asset(asset: str):
    @_regime_asset(
        asset, "state",
        f"{asset.upper()} daily regime state per horizon from data known that day: VIX band, trend (bull/bear), "
        "Markov-switching (switching variance) filtered probabilities, and the regime shifts confirmed after the "
        "horizon's persistence (longer horizons need a change to last longer).",
        [dg.AssetKey([asset, "features", "continuous_1d"]), dg.AssetKey(["shared", "features", "volatility"])],
        {"lake"}, {"statsmodels", "polars"},
    )
    def _state(context: dg.AssetExecutionContext, config: RegimeStateConfig) -> dg.MaterializeResult:
        from cbi_assets.features.assets import continuous_bars, shared_path

        lake = Path(context.resources.lake.root)
        bars = continuous_bars(lake, (asset.upper(),))[asset]
        vix = pl.read_parquet(shared_path(lake, "volatility"), columns=["date", "vix"])
        daily = bars.select("date", (pl.col("close") * pl.col("adj")).alias("close")).join(vix, on="date", how="left")
        context.log.info(f"{asset}: fitting the Markov-switching state on {daily.height:,} sessions "
                         f"(refit every {config.refit_days} sessions)")
        # The Markov fit is the same for every horizon; only the persistence of a shift differs.
        daily_state = regime_state(daily, config.plan(), 1).drop("regime", "regime_since", "shift")
        summary, shown = [], {}
        for partition in context.partition_keys:
            persistence = config.persistence_of(asset, partition)
            state = confirm_regime(daily_state, persistence)
            found = shifts(state)
            write_frame(state, state_path(lake, asset, partition))
            write_frame(found, shifts_path(lake, asset, partition))
            summary.append({"horizon": partition, "persistence": persistence, "shifts": found.height,
                            **{s: round(float((state["regime"] == s).mean() or 0.0), 3) for s in STATES}})
            shown.setdefault(persistence, (partition, state))
        metadata = {"sessions": daily_state.height, "by_horizon": md_table(pl.DataFrame(summary)),
                    "path": dg.MetadataValue.path(str(state_path(lake, asset, "").parent))}
        for persistence, (partition, state) in shown.items():
            metadata[f"states_{persistence}_sessions"] = _state_plot(
                state, f"{asset.upper()} roll-adjusted close, shaded by the regime confirmed after {persistence} "
                       f"sessions ({partition})")
        return dg.MaterializeResult(metadata=metadata)

    return _state


def _current_asset(asset: str):
    @_regime_asset(
        asset, "current",
        f"{asset.upper()}'s regime now, per horizon: the confirmed state and since when, trend, VIX band, and the "
        "named calendar regime. A confirmed stressed or crisis state that began after the calendar's last regime is "
        "added as a new regime partition.",
        [dg.AssetKey([asset, "regimes", "state"]), regime_calendar.key], {"lake", "warehouse"}, {"polars", "duckdb"},
    )
    def _current(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        calendar = read_calendar(lake)
        latest_start = calendar["start"].drop_nulls().max()
        rows = []
        for partition in context.partition_keys:
            path = state_path(lake, asset, partition)
            if not path.is_file():
                raise dg.Failure(f"{path}: no regime state for {asset} {partition}; materialize {asset}/regimes/state")
            now = current_regime(pl.read_parquet(path))
            now["named_regime"] = regimes_of(pl.Series([now["date"]]), calendar)[0]
            if now["state"] in ("stressed", "crisis") and latest_start and now["since"] > latest_start:
                name = f"detected_{now['state']}_{now['since']:%Y%m%d}"
                if name not in context.instance.get_dynamic_partitions(REGIME_PARTITIONS.name):
                    context.instance.add_dynamic_partitions(REGIME_PARTITIONS.name, [name])
                    context.log.info(f"new regime partition {name}")
            rows.append({"asset": asset.upper(), "horizon": partition,
                         **{k: v for k, v in now.items() if not isinstance(v, dict)}})
        frame = pl.DataFrame(rows)
        with context.resources.warehouse.get_connection() as conn:
            replace_horizons(conn, "regimes.current", frame)
        return dg.MaterializeResult(metadata={"now": md_table(frame, 50), "table": "regimes.current"})

    return _current


REGIME_ASSETS = [regime_calendar, *(_state_asset(a) for a in ("zl", "mes")), *(_current_asset(a) for a in ("zl", "mes"))]
