"""Backtest assets per market, partitioned by horizon, on the walk-forward out-of-fold forecasts only:
ZL procurement (timing a fixed monthly purchase against TWAP and the first day) and MES trading (the
forecast's sign after costs against buy-and-hold). Nothing is refitted here."""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl

from cbi_assets.backtests.procurement import (
    ProcurementPlan,
    procure,
    procurement_summary,
)
from cbi_assets.backtests.trading import SIZINGS, backtest
from cbi_assets.catalogue import MARKETS
from cbi_assets.ensembles.assets import ensemble_dir
from cbi_assets.models.assets import models_dir
from cbi_assets.models.inputs import horizon_rows, rows_per_year
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS
from cbi_assets.training.sets import horizon_of, time_key
from cbi_assets.ui import figure, partly_failed, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import replace_horizons

ENSEMBLE = "ensemble"  # the blend's forecasts in ensemble/intervals.parquet


def backtests_dir(lake: Path, asset: str, horizon: str) -> Path:
    return lake / asset.upper() / "backtests" / "by_horizon" / horizon


def _champion(conn, asset: str, horizon: str) -> str | None:
    try:
        found = conn.execute("select family from models.leaderboard where asset = ? and horizon = ? and champion",
                             [asset.upper(), horizon]).fetchone()
    except duckdb.CatalogException:  # no leaderboard materialized yet
        return None
    return found[0] if found else None


def read_forecasts(lake: Path, asset: str, horizon: str, source: str, conn, log) -> tuple[pl.DataFrame, str]:
    """The out-of-fold forecasts to backtest and what they are: the ensemble's blend when `source` is
    "ensemble" and it is stored (else the leaderboard's champion family), or the named family's."""
    if source == ENSEMBLE:
        path = ensemble_dir(lake, asset, horizon) / "intervals.parquet"
        if path.is_file():
            return pl.read_parquet(path), "ensemble blend"
        champion = _champion(conn, asset, horizon)
        if champion is None:
            raise dg.Failure(f"{path}: no ensemble forecasts and no champion in models.leaderboard for {asset} "
                             f"{horizon}; materialize {asset}/models/ensemble (or the leaderboard) for it first")
        log.warning(f"{asset} {horizon}: {path} is not built; backtesting the champion family {champion} instead")
        source = champion
    path = models_dir(lake, asset, horizon) / "oof" / f"{source}.parquet"
    if not path.is_file():
        raise dg.Failure(f"{path}: no out-of-fold forecasts of family {source!r} for {asset} {horizon}; materialize "
                         f"the model assets for this horizon or choose another source")
    return pl.read_parquet(path), source


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
            return ProcurementPlan(volume=self.volume, cap=self.cap, gain=self.gain, cost_bps=cost_bps,
                                   slippage_bps=self.slippage_bps, min_sessions=self.min_sessions, lag=self.lag)
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


@dg.asset(
    key=["zl", "backtests", "procurement"], group_name="zl_backtests", partitions_def=HORIZON_PARTITIONS["zl"],
    backfill_policy=dg.BackfillPolicy.single_run(), deps=[dg.AssetKey(["zl", "models", "ensemble"])],
    required_resource_keys={"lake", "warehouse"}, kinds={"python", "duckdb"}, tags={"layer": "backtests"},
    description="ZL procurement backtest per forecast horizon: a fixed volume bought every month, timed inside the "
                "month by the walk-forward forecasts, against buying evenly and on the first day, after costs "
                "(ZL/backtests/by_horizon/<h>/procurement_{sessions,months}.parquet; warehouse backtests.procurement).",
)
def zl_procurement(context: dg.AssetExecutionContext, config: ProcurementConfig) -> dg.MaterializeResult:
    lake = Path(context.resources.lake.root)
    plan = config.plan(MARKETS["ZL"].cost_bps)
    months, summaries, plots, failed = {}, [], {}, []
    with context.resources.warehouse.get_connection() as conn:
        for partition in context.partition_keys:
            try:  # one horizon's failure must not lose the others' results
                frame, source = read_forecasts(lake, "zl", partition, config.source, conn, context.log)
                try:
                    sessions, monthly = procure(frame, plan, key=time_key(horizon_of("zl", partition)))
                except ValueError as error:
                    raise dg.Failure(f"zl {partition} ({source}): {error}") from error
            except dg.Failure as error:
                context.log.error(error.description)
                failed.append(error.description)
                continue
            out = backtests_dir(lake, "zl", partition)
            write_frame(sessions, out / "procurement_sessions.parquet")
            write_frame(monthly, out / "procurement_months.parquet")
            total = procurement_summary(monthly)
            summaries.append({"horizon": partition, "source": source, **total})
            months[partition] = monthly.with_columns(pl.lit("ZL").alias("asset"), pl.lit(partition).alias("horizon"),
                                                     pl.lit(source).alias("source"))
            plots[f"monthly_{partition}"] = _monthly_plot(
                monthly, f"ZL {partition} forecasts: savings per month against TWAP, after costs")
            context.log.info(f"zl {partition} ({source}): over {total['months']} months paid {total['strategy_paid']:.3f} "
                             f"c/lb against TWAP {total['twap_paid']:.3f} ({total['savings_vs_twap_pct']:+.3f}%, "
                             f"${total['savings_vs_twap_usd']:,.0f}) and first day {total['first_day_paid']:.3f} "
                             f"({total['savings_vs_first_day_pct']:+.3f}%); months saved vs TWAP "
                             f"{total['hit_rate_vs_twap']:.0%}")
        if months:
            replace_horizons(conn, "backtests.procurement", pl.concat(months.values(), how="diagonal_relaxed"))
    metadata: dict = {"path": dg.MetadataValue.path(str(backtests_dir(lake, "zl", "").parent)),
                      "table": "backtests.procurement", "volume_per_month": plan.volume, "cost_bps": plan.cost_bps,
                      "slippage_bps": plan.slippage_bps, "lag_sessions": plan.lag}
    if summaries:
        shown = pl.DataFrame(summaries).select(
            "horizon", "source", "months", "strategy_paid", "twap_paid", "first_day_paid", "savings_vs_twap",
            "savings_vs_twap_pct", "savings_vs_twap_usd", "hit_rate_vs_twap", "t_stat_vs_twap", "savings_vs_first_day",
            "savings_vs_first_day_pct", "savings_vs_first_day_usd", "hit_rate_vs_first_day")
        metadata["savings"] = md_table(shown.with_columns(pl.col(pl.Float64).round(4)), 20)
        metadata["cumulative_savings"] = _savings_plot(
            months, f"ZL procurement of {plan.volume:,.0f} contracts a month")
        metadata |= plots
    if failed:
        raise partly_failed(failed, f"of {len(context.partition_keys)} horizons' backtests", metadata)
    return dg.MaterializeResult(metadata=metadata)


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


@dg.asset(
    key=["mes", "backtests", "trading"], group_name="mes_backtests", partitions_def=HORIZON_PARTITIONS["mes"],
    backfill_policy=dg.BackfillPolicy.single_run(), deps=[dg.AssetKey(["mes", "models", "ensemble"])],
    required_resource_keys={"lake", "warehouse"}, kinds={"python", "duckdb"}, tags={"layer": "backtests"},
    description="MES trading backtest per horizon: the walk-forward forecast's sign held over the horizon on "
                "non-overlapping origins, after costs, beside buy-and-hold on the same periods: Sharpe, drawdown, "
                "turnover (MES/backtests/by_horizon/<h>/trading.parquet; warehouse backtests.trading).",
)
def mes_trading(context: dg.AssetExecutionContext, config: TradingConfig) -> dg.MaterializeResult:
    if config.sizing not in SIZINGS:
        raise dg.Failure(f"trading configuration: sizing={config.sizing!r}; choose one of {SIZINGS}")
    lake = Path(context.resources.lake.root)
    cost_bps = MARKETS["MES"].cost_bps
    summaries, curves, failed = [], {}, []
    with context.resources.warehouse.get_connection() as conn:
        for partition in context.partition_keys:
            horizon = horizon_of("mes", partition)
            per_year = rows_per_year(horizon)
            try:
                frame, source = read_forecasts(lake, "mes", partition, config.source, conn, context.log)
                try:
                    periods, summary = backtest(frame, horizon_rows(horizon), per_year, cost_bps,
                                                key=time_key(horizon), sizing=config.sizing)
                except ValueError as error:
                    raise dg.Failure(f"mes {partition} ({source}): {error}") from error
            except dg.Failure as error:
                context.log.error(error.description)
                failed.append(error.description)
                continue
            write_frame(periods, backtests_dir(lake, "mes", partition) / "trading.parquet")
            summaries.append(summary.with_columns(pl.lit("MES").alias("asset"), pl.lit(partition).alias("horizon"),
                                                  pl.lit(source).alias("source"), pl.lit(config.sizing).alias("sizing"),
                                                  pl.lit(cost_bps).alias("cost_bps")))
            curves[partition] = periods.rename({time_key(horizon): "time"}, strict=False)
            mine, hold = summary.row(0, named=True), summary.row(1, named=True)
            context.log.info(f"mes {partition} ({source}): Sharpe {mine['sharpe']:.2f} against buy-and-hold "
                             f"{hold['sharpe']:.2f}, max drawdown {mine['max_drawdown']:.1%}, turnover "
                             f"{mine['turnover_per_year']:.1f}/year over {mine['periods']} trades")
        if summaries:
            replace_horizons(conn, "backtests.trading", pl.concat(summaries, how="diagonal_relaxed"))
    metadata: dict = {"path": dg.MetadataValue.path(str(backtests_dir(lake, "mes", "").parent)),
                      "table": "backtests.trading", "cost_bps": cost_bps, "sizing": config.sizing}
    if summaries:
        shown = pl.concat(summaries).select("horizon", "source", "strategy", "periods", "years", "annual_return",
                                            "sharpe", "max_drawdown", "turnover_per_year", "hit_rate")
        metadata["performance"] = md_table(shown.with_columns(pl.col(pl.Float64).round(4)), 50)
        intraday = {h: c for h, c in curves.items() if horizon_of("mes", h).intraday}
        daily = {h: c for h, c in curves.items() if not horizon_of("mes", h).intraday}
        for name, group in (("equity_intraday", intraday), ("equity_daily", daily)):
            if group:
                metadata[name] = _equity_plot(group, "time", f"MES trading the forecasts after {cost_bps:g} bp a side")
    if failed:
        raise partly_failed(failed, f"of {len(context.partition_keys)} horizons' backtests", metadata)
    return dg.MaterializeResult(metadata=metadata)


BACKTEST_ASSETS = [zl_procurement, mes_trading]
