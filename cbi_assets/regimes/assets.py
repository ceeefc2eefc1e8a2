"""Regime assets: the named calendar, the data-driven state of each asset, and the state now."""


import datetime as dt
from pathlib import Path

import dagster as dg
import polars as pl

from cbi_assets.catalogue import REGIMES, Regime
from cbi_assets.parquet import write_frame
from cbi_assets.regimes.calendar import calendar_frame, regimes_of
from cbi_assets.regimes.state import (
    STATES,
    MarkovPlan,
    current_regime,
    regime_state,
    shifts,
)
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table

# Regimes as a partition dimension: seeded from the calendar, extended when a regime is detected
# or added to the calendar by configuration, with no code change.
REGIME_PARTITIONS = dg.DynamicPartitionsDefinition(name="regime")
STATE_COLOURS = {"calm": "#d8f0d8", "normal": "#f4f4f4", "stressed": "#fbe3c0", "crisis": "#f6c4c4"}


def calendar_path(lake: Path) -> Path:
    return lake / "shared" / "regimes" / "calendar.parquet"


def state_path(lake: Path, asset: str) -> Path:
    return lake / "shared" / "regimes" / f"{asset}_state.parquet"


def shifts_path(lake: Path, asset: str) -> Path:
    return lake / "shared" / "regimes" / f"{asset}_shifts.parquet"


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
    """How the state is detected: Markov-switching refits and how long a change must last to count."""

    persistence: int = 5  # sessions a new state must hold before it is a regime shift
    k: int = MarkovPlan().k
    refit_days: int = MarkovPlan().refit_days
    fit_window: int | None = MarkovPlan().fit_window
    min_history: int = MarkovPlan().min_history

    def plan(self) -> MarkovPlan:
        return MarkovPlan(k=self.k, refit_days=self.refit_days, fit_window=self.fit_window, min_history=self.min_history)


def _state_plot(state: pl.DataFrame, asset: str):
    fig, (price, prob) = figure(11, 5, rows=2)
    dates = state["date"].to_list()
    price.plot(dates, state["close"].to_list(), color="black", linewidth=0.7)
    price.set_yscale("log")
    price.set_title(f"{asset.upper()} roll-adjusted close, shaded by the confirmed regime state")
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


def _state_asset(asset: str):
    @dg.asset(
        key=[asset, "regimes", "state"], group_name="regimes", required_resource_keys={"lake"},
        deps=[dg.AssetKey([asset, "features", "continuous_1d"]), dg.AssetKey(["shared", "features", "volatility"])],
        description=f"{asset.upper()} daily regime state from data known that day: VIX band, trend (bull/bear), "
                    "Markov-switching (switching variance) filtered probabilities, and the confirmed regime shifts.",
        kinds={"statsmodels", "polars"}, tags={"layer": "regimes"},
    )
    def _state(context: dg.AssetExecutionContext, config: RegimeStateConfig) -> dg.MaterializeResult:
        from cbi_assets.features.assets import continuous_bars, shared_path

        lake = Path(context.resources.lake.root)
        bars = continuous_bars(lake, (asset.upper(),))[asset]
        vix = pl.read_parquet(shared_path(lake, "volatility"), columns=["date", "vix"])
        daily = bars.select("date", (pl.col("close") * pl.col("adj")).alias("close")).join(vix, on="date", how="left")
        context.log.info(f"{asset}: fitting the Markov-switching state on {daily.height:,} sessions "
                         f"(refit every {config.refit_days} sessions)")
        state = regime_state(daily, config.plan(), config.persistence)
        found = shifts(state)
        write_frame(state, state_path(lake, asset))
        write_frame(found, shifts_path(lake, asset))
        shares = state.group_by("regime").len().with_columns((pl.col("len") / pl.col("len").sum()).round(3).alias("share"))
        return dg.MaterializeResult(metadata={
            "sessions": state.height,
            "shifts": found.height,
            "state_shares": md_table(shares.sort("regime")),
            "last_shifts": md_table(found.tail(10), 10),
            "states": _state_plot(state, asset),
            "path": dg.MetadataValue.path(str(state_path(lake, asset))),
        })

    return _state


def _current_asset(asset: str):
    @dg.asset(
        key=[asset, "regimes", "current"], group_name="regimes", required_resource_keys={"lake", "warehouse"},
        deps=[dg.AssetKey([asset, "regimes", "state"]), regime_calendar.key],
        description=f"{asset.upper()}'s regime now: the confirmed state and since when, trend, VIX band, and the "
                    "named calendar regime. A confirmed stressed or crisis state that began after the calendar's "
                    "last regime is added as a new regime partition.",
        kinds={"polars", "duckdb"}, tags={"layer": "regimes"},
    )
    def _current(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        state = pl.read_parquet(state_path(lake, asset))
        calendar = read_calendar(lake)
        now = current_regime(state)
        now["named_regime"] = regimes_of(pl.Series([now["date"]]), calendar)[0]
        latest_start = calendar["start"].drop_nulls().max()
        if now["state"] in ("stressed", "crisis") and latest_start and now["since"] > latest_start:
            name = f"detected_{now['state']}_{now['since']:%Y%m%d}"
            if name not in context.instance.get_dynamic_partitions(REGIME_PARTITIONS.name):
                context.instance.add_dynamic_partitions(REGIME_PARTITIONS.name, [name])
                context.log.info(f"new regime partition {name}")
        row = pl.DataFrame([{"asset": asset.upper(), **{k: v for k, v in now.items() if not isinstance(v, dict)}}])
        with context.resources.warehouse.get_connection() as conn:
            conn.execute("create schema if not exists regimes")
            conn.register("row", row.to_arrow())
            conn.execute("create table if not exists regimes.current as select * from row where false")
            conn.execute("delete from regimes.current where asset = ?", [asset.upper()])
            conn.execute("insert into regimes.current by name select * from row")
        return dg.MaterializeResult(metadata={
            "state": now["state"], "since": str(now["since"]), "as_of": str(now["date"]),
            "named_regime": now["named_regime"], "summary": md_table(row),
        })

    return _current


REGIME_ASSETS = [regime_calendar, *(_state_asset(a) for a in ("zl", "mes")), *(_current_asset(a) for a in ("zl", "mes"))]
