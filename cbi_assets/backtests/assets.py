"""Backtest assets per market, partitioned by horizon, on the walk-forward out-of-fold forecasts only:
ZL procurement (timing a fixed monthly purchase against TWAP and the first day) and MES trading (the
forecast's sign after costs against buy-and-hold). Nothing is refitted here."""

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.backtests.procurement import (
    ProcurementPlan,
    procure,
    procurement_summary,
)
from cbi_assets.backtests.trading import SIZINGS, backtest
from cbi_assets.catalogue import MES, ZL, Horizon, Market
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, NotBuilt, reads
from cbi_assets.models.inputs import horizon_rows, rows_per_year
from cbi_assets.models.registry import families
from cbi_assets.selections import stage
from cbi_assets.training.sets import time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse

ENSEMBLE = "ensemble"  # the blend's forecasts: the ensemble's intervals table


def _reads(market: Market) -> list[dg.AssetKey]:
    """The ensemble's blend, or any family's out-of-fold forecasts (a config names one; the leaderboard's
    champion stands in for a missing blend)."""
    return [
        *reads(tables.INTERVALS, tables.OOF, markets=[market], family=[f.name for f in families()]),
        dg.AssetKey([market.key, "models", "leaderboard"]),
    ]


def _champion(warehouse: Warehouse, market: Market, horizon: str) -> str | None:
    if not warehouse.exists("models.leaderboard"):  # no leaderboard materialized yet
        return None
    found = warehouse.query(
        "select family from models.leaderboard where asset = ? and horizon = ? and champion",
        [market.symbol, horizon],
    )
    return found["family"][0] if found.height else None


def read_forecasts(
    lake: Lake, market: Market, horizon: str, source: str, warehouse: Warehouse, log
) -> tuple[pl.DataFrame, str]:
    """The out-of-fold forecasts to backtest and what they are: the ensemble's blend when `source` is
    "ensemble" and it is stored (else the leaderboard's champion family), or the named family's."""
    parts = {"market": market, "horizon": horizon}
    if source == ENSEMBLE:
        if lake.exists(tables.INTERVALS, **parts):
            return lake.read(tables.INTERVALS, **parts), "ensemble blend"
        missing = lake.missing(tables.INTERVALS, **parts)
        champion = _champion(warehouse, market, horizon)
        if champion is None:
            raise NotBuilt(
                f"{missing.description}; and models.leaderboard has no champion for {market} {horizon} to "
                "backtest instead"
            )
        log.warning(f"{market} {horizon}: {missing.description}; backtesting the champion family {champion} instead")
        source = champion
    return lake.read(tables.OOF, family=source, **parts), source


# --- ZL procurement ---------------------------------------------------------------------------


class ProcurementConfig(dg.Config):
    """What the desk buys and how far the forecast may move the purchases (costs from the catalogue)."""

    source: str = ENSEMBLE  # "ensemble" (falls back to the champion) or a family name
    volume: float = ProcurementPlan.volume  # contracts a month
    cap: float = ProcurementPlan.cap  # the most one session buys, in even days' volume
    gain: float = ProcurementPlan.gain
    slippage_bps: float = ProcurementPlan.slippage_bps  # per unit, per even day's volume in one session
    min_sessions: int = ProcurementPlan.min_sessions
    lag: int = ProcurementPlan.lag  # sessions from a forecast's origin to the purchase (0: at the origin's close)

    def plan(self, cost_bps: float) -> ProcurementPlan:
        try:
            return ProcurementPlan(
                volume=self.volume,
                cap=self.cap,
                gain=self.gain,
                cost_bps=cost_bps,
                slippage_bps=self.slippage_bps,
                min_sessions=self.min_sessions,
                lag=self.lag,
            )
        except ValueError as error:
            raise dg.Failure(f"procurement configuration: {error}") from error


def _savings_plot(months: dict[str, pl.DataFrame], title: str):
    fig, (twap, first) = figure(11, 6, rows=2)
    for horizon, frame in months.items():
        twap.plot(frame["month"], frame["cumulative_usd_vs_twap"] / 1e6, label=horizon)
        first.plot(frame["month"], frame["cumulative_usd_vs_first_day"] / 1e6, label=horizon)
    for ax, bench in ((twap, "buying evenly (TWAP)"), (first, "buying on the first day")):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("$ million")
        ax.set_title(f"cumulative savings after costs against {bench}", fontsize=9)
    twap.legend(fontsize=7, ncols=6, title="forecast horizon", title_fontsize=7)
    fig.suptitle(title)
    return plot(fig)


def _monthly_plot(frame: pl.DataFrame, title: str):
    fig, ax = figure(11, 3.5)
    values = frame["savings_vs_twap"].to_numpy()
    ax.bar(frame["month"], values, width=20, color=np.where(values >= 0, "C2", "C3"))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("cents/lb saved vs TWAP")
    ax.set_title(title)
    return plot(fig)


@horizon_asset(
    ZL,
    key=tables.BACKTEST.asset_key(market=ZL, kind="procurement"),
    group_name="zl_backtests",
    deps=_reads(ZL),
    kinds={"python", "duckdb"},
    tags={"layer": "backtests", **stage("forecast")},
    description="ZL procurement backtest per forecast horizon: a fixed volume bought every month, timed inside the "
    "month by the walk-forward forecasts, against buying evenly and on the first day, after costs "
    "(ZL/backtests/by_horizon/<h>/procurement_{sessions,months}.parquet; warehouse backtests.procurement).",
)
def zl_procurement(
    context: dg.AssetExecutionContext, config: ProcurementConfig, lake: Lake, warehouse: Warehouse
) -> dg.MaterializeResult:
    plan = config.plan(ZL.cost_bps)
    metadata: dict = {
        "path": dg.MetadataValue.path(lake.where(tables.BACKTEST, market=ZL)),
        "table": "backtests.procurement",
        "volume_per_month": plan.volume,
        "cost_bps": plan.cost_bps,
        "slippage_bps": plan.slippage_bps,
        "lag_sessions": plan.lag,
    }

    def work(horizon: Horizon) -> Done:
        frame, source = read_forecasts(lake, ZL, horizon.name, config.source, warehouse, context.log)
        try:
            sessions, monthly = procure(frame, plan, key=time_key(horizon))
        except ValueError as error:
            raise dg.Failure(f"ZL {horizon.name} ({source}): {error}") from error
        for name, result in (("procurement_sessions", sessions), ("procurement_months", monthly)):
            lake.write(tables.BACKTEST, result, market=ZL, horizon=horizon.name, name=name)
        total = procurement_summary(monthly)
        context.log.info(
            f"ZL {horizon.name} ({source}): over {total['months']} months paid "
            f"{total['strategy_paid']:.3f} c/lb against TWAP {total['twap_paid']:.3f} "
            f"({total['savings_vs_twap_pct']:+.3f}%, ${total['savings_vs_twap_usd']:,.0f}) and first day "
            f"{total['first_day_paid']:.3f} ({total['savings_vs_first_day_pct']:+.3f}%); months saved vs "
            f"TWAP {total['hit_rate_vs_twap']:.0%}"
        )
        months = monthly.with_columns(
            pl.lit("ZL").alias("asset"), pl.lit(horizon.name).alias("horizon"), pl.lit(source).alias("source")
        )
        title = f"ZL {horizon.name} forecasts: savings per month against TWAP, after costs"
        return Done(
            value=(months, {"horizon": horizon.name, "source": source, **total}),
            metadata={"monthly": _monthly_plot(monthly, title)},
        )

    def finish(done: dict[str, Done]) -> dict:
        months = {h: d.value[0] for h, d in done.items()}
        warehouse.replace_horizons("backtests.procurement", pl.concat(months.values(), how="diagonal_relaxed"))
        shown = pl.DataFrame([d.value[1] for d in done.values()]).select(
            "horizon",
            "source",
            "months",
            "strategy_paid",
            "twap_paid",
            "first_day_paid",
            "savings_vs_twap",
            "savings_vs_twap_pct",
            "savings_vs_twap_usd",
            "hit_rate_vs_twap",
            "t_stat_vs_twap",
            "savings_vs_first_day",
            "savings_vs_first_day_pct",
            "savings_vs_first_day_usd",
            "hit_rate_vs_first_day",
        )
        return {
            "savings": md_table(shown.with_columns(pl.col(pl.Float64).round(4)), 20),
            "cumulative_savings": _savings_plot(months, f"ZL procurement of {plan.volume:,.0f} contracts a month"),
        }

    return each_horizon(context, ZL, work, name="procurement backtest", finish=finish, metadata=metadata)


# --- MES trading ------------------------------------------------------------------------------


class TradingConfig(dg.Config):
    """Which forecasts to trade and how to size them (costs from the catalogue)."""

    source: str = ENSEMBLE  # "ensemble" (falls back to the champion) or a family name
    sizing: str = "sign"  # "sign": +-1; "conviction": the sign times the ensemble's conviction in [0, 1]


def _equity_plot(periods: dict[str, pl.DataFrame], key: str, title: str):
    fig, (equity, drawdown) = figure(11, 6, rows=2)
    for i, (horizon, frame) in enumerate(periods.items()):
        equity.plot(frame[key], frame["strategy_equity"], color=f"C{i}", label=f"{horizon} forecasts")
        equity.plot(frame[key], frame["buy_and_hold_equity"], color=f"C{i}", linestyle=":", linewidth=0.8)
        drawdown.plot(frame[key], 100 * frame["strategy_drawdown"], color=f"C{i}")
    equity.set_yscale("log")
    equity.set_ylabel("equity (log; dotted: buy-and-hold)")
    equity.set_title(title)
    equity.legend(fontsize=7, ncols=6)
    drawdown.set_ylabel("drawdown %")
    return plot(fig)


@horizon_asset(
    MES,
    key=tables.BACKTEST.asset_key(market=MES, kind="trading"),
    group_name="mes_backtests",
    deps=_reads(MES),
    kinds={"python", "duckdb"},
    tags={"layer": "backtests", **stage("forecast")},
    description="MES trading backtest per horizon: the walk-forward forecast's sign held over the horizon on "
    "non-overlapping origins, after costs, beside buy-and-hold on the same periods: Sharpe, drawdown, "
    "turnover (MES/backtests/by_horizon/<h>/trading.parquet; warehouse backtests.trading).",
)
def mes_trading(
    context: dg.AssetExecutionContext, config: TradingConfig, lake: Lake, warehouse: Warehouse
) -> dg.MaterializeResult:
    if config.sizing not in SIZINGS:
        raise dg.Failure(f"trading configuration: sizing={config.sizing!r}; choose one of {SIZINGS}")
    cost_bps = MES.cost_bps
    metadata: dict = {
        "path": dg.MetadataValue.path(lake.where(tables.BACKTEST, market=MES, name="trading")),
        "table": "backtests.trading",
        "cost_bps": cost_bps,
        "sizing": config.sizing,
    }

    def work(horizon: Horizon) -> Done:
        frame, source = read_forecasts(lake, MES, horizon.name, config.source, warehouse, context.log)
        key = time_key(horizon)
        try:
            periods, summary = backtest(
                frame, horizon_rows(horizon), rows_per_year(horizon), cost_bps, key=key, sizing=config.sizing
            )
        except ValueError as error:
            raise dg.Failure(f"MES {horizon.name} ({source}): {error}") from error
        lake.write(tables.BACKTEST, periods, market=MES, horizon=horizon.name, name="trading")
        mine, hold = summary.row(0, named=True), summary.row(1, named=True)
        context.log.info(
            f"MES {horizon.name} ({source}): Sharpe {mine['sharpe']:.2f} against buy-and-hold "
            f"{hold['sharpe']:.2f}, max drawdown {mine['max_drawdown']:.1%}, turnover "
            f"{mine['turnover_per_year']:.1f}/year over {mine['periods']} trades"
        )
        summary = summary.with_columns(
            pl.lit("MES").alias("asset"),
            pl.lit(horizon.name).alias("horizon"),
            pl.lit(source).alias("source"),
            pl.lit(config.sizing).alias("sizing"),
            pl.lit(cost_bps).alias("cost_bps"),
        )
        return Done(value=(summary, periods.rename({key: "time"}, strict=False)))

    def finish(done: dict[str, Done]) -> dict:
        summaries = pl.concat([d.value[0] for d in done.values()], how="diagonal_relaxed")
        warehouse.replace_horizons("backtests.trading", summaries)
        shown = summaries.select(
            "horizon",
            "source",
            "strategy",
            "periods",
            "years",
            "annual_return",
            "sharpe",
            "max_drawdown",
            "turnover_per_year",
            "hit_rate",
        )
        out = {"performance": md_table(shown.with_columns(pl.col(pl.Float64).round(4)), 50)}
        curves = {h: d.value[1] for h, d in done.items()}
        intraday = {h: c for h, c in curves.items() if MES.horizon(h).intraday}
        daily = {h: c for h, c in curves.items() if not MES.horizon(h).intraday}
        for name, group in (("equity_intraday", intraday), ("equity_daily", daily)):
            if group:
                out[name] = _equity_plot(group, "time", f"MES trading the forecasts after {cost_bps:g} bp a side")
        return out

    return each_horizon(context, MES, work, name="trading backtest", finish=finish, metadata=metadata)


BACKTEST_ASSETS = [zl_procurement, mes_trading]
