"""Ensemble assets per market, partitioned by horizon: the families' out-of-fold forecasts stacked and
blended, the blend's conformal intervals beside LightGBM's quantiles, conviction and confidence, and
how each ensemble fares against the best single family on the same folds."""

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.ensembles.blend import BlendPlan
from cbi_assets.ensembles.conformal import LEVELS, MIN_SCORES, level_name
from cbi_assets.ensembles.forecasts import (
    POINT,
    Ensembled,
    EnsemblePlan,
    comparison,
    ensemble,
    members_table,
)
from cbi_assets.ensembles.members import Members, assemble, family_oof, training_origins
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, reads
from cbi_assets.models.inputs import horizon_rows, rows_per_year
from cbi_assets.models.registry import families
from cbi_assets.profiles import TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.training.sets import time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse


class EnsembleConfig(dg.Config):
    """Interval levels, the blend's look-back and the least history each part needs."""

    levels: list[float] = list(LEVELS)  # conformal interval coverage levels
    blend_window: int = BlendPlan().window  # matured rows whose errors weight the blend
    blend_min_rows: int = BlendPlan().min_rows  # fewer in the current state: weights from every state
    stack_min_rows: int = EnsemblePlan().stack_min_rows  # matured rows before a fold for it to be forecast
    min_scores: int = MIN_SCORES  # matured scores before an interval is given

    def plan(self, threads: int | None) -> EnsemblePlan:
        try:
            return EnsemblePlan(
                levels=tuple(self.levels),
                blend=BlendPlan(self.blend_window, self.blend_min_rows),
                stack_min_rows=self.stack_min_rows,
                min_scores=self.min_scores,
                threads=threads,
            )
        except ValueError as error:
            raise dg.Failure(f"ensemble configuration: {error}") from error


STATE_COLOURS = {
    "calm": "#4caf50",
    "normal": "#9e9e9e",
    "stressed": "#ff9800",
    "crisis": "#e53935",
    "unknown": "#d0d0d0",
}


def _coverage_plot(coverage: pl.DataFrame, title: str):
    """Coverage per horizon against each nominal level (shaded: within 3 points), and of the widest
    level per regime state."""
    fig, (levels, states) = figure(max(8.0, 0.9 * coverage["horizon"].n_unique() + 4), 6.5, rows=2)
    horizons = list(dict.fromkeys(coverage["horizon"]))
    x = np.arange(len(horizons))
    overall = coverage.filter(pl.col("scope") == "overall")
    nominal = sorted(set(overall.filter(pl.col("method") == "conformal")["level"]))
    for i, level in enumerate(nominal):
        levels.axhspan(level - 0.03, level + 0.03, color=f"C{i}", alpha=0.12, linewidth=0)
        levels.axhline(level, color=f"C{i}", linestyle="--", linewidth=0.8)
        for method, marker, shift in (
            ("conformal", "o", -0.08),
            ("random_walk_empirical", "s", 0.0),
            ("lightgbm_quantile", "x", 0.08),
        ):
            values = dict(
                overall.filter((pl.col("method") == method) & (pl.col("level") == level))
                .select("horizon", "coverage")
                .iter_rows()
            )
            if values:
                levels.scatter(
                    x + shift,
                    [values.get(h, np.nan) for h in horizons],
                    marker=marker,
                    s=45,
                    color=f"C{i}",
                    label=f"{method.replace('_', ' ')} {level:.0%}",
                )
    levels.set_ylabel("empirical coverage")
    levels.set_title(f"{title} (dashed: nominal, shaded: within 3 points)")
    levels.legend(fontsize=7, ncols=4)
    top = max(nominal)
    by_state = coverage.filter(
        (pl.col("scope") == "state") & (pl.col("method") == "conformal") & (pl.col("level") == top)
    )
    groups = [g for g in STATE_COLOURS if g in set(by_state["group"])]
    width = 0.8 / max(len(groups), 1)
    for i, group in enumerate(groups):
        values = dict(by_state.filter(pl.col("group") == group).select("horizon", "coverage").iter_rows())
        states.bar(
            x - 0.4 + (i + 0.5) * width,
            [values.get(h, np.nan) for h in horizons],
            width,
            color=STATE_COLOURS[group],
            label=group,
        )
    states.axhline(top, color="black", linestyle="--", linewidth=0.8)
    states.set_ylim(0, 1.05)
    states.set_ylabel(f"coverage of the {top:.0%} interval")
    states.set_xticks(x, horizons)
    states.set_xlabel("horizon; bars: data-driven regime state at the origin")
    states.legend(fontsize=7, ncols=5, loc="lower right")
    return plot(fig)


def _fan_plot(table: pl.DataFrame, key: str, levels: tuple[float, ...], title: str, folds: int = 2, rows: int = 400):
    """Price, the blend's price forecast for each target time, and its bands over the last folds (at
    most their last `rows` origins, so minute bars stay readable)."""
    last = table.filter(pl.col("fold") >= table["fold"].max() - folds + 1).tail(rows)
    fig, ax = figure(11, 4)
    ax.plot(last[key], last["price"], color="black", linewidth=0.8, label="price at the origin")
    target = last["label_end"]
    for level, alpha in zip(sorted(levels, reverse=True), (0.18, 0.3, 0.4, 0.5), strict=False):
        n = level_name(level)
        ax.fill_between(
            target,
            last[f"lower_{n}_price"].fill_null(np.nan),
            last[f"upper_{n}_price"].fill_null(np.nan),
            color="C0",
            alpha=alpha,
            linewidth=0,
            label=f"{level:.0%} conformal",
        )
    ax.plot(target, last["forecast_price"], color="C0", linewidth=1.0, label="blend forecast")
    ax.plot(target, last["forward_price"], color="C3", linewidth=0.8, label="what happened")
    ax.set_title(title)
    ax.set_ylabel("price")
    ax.set_xlabel("target time (origin + horizon)")
    ax.legend(fontsize=7, ncols=5)
    return plot(fig)


def _write(lake: Lake, market: Market, horizon: str, result: Ensembled, members: Members) -> None:
    """Every table of one horizon, each replaced atomically; written only once all were computed."""
    parts = {"market": market, "horizon": horizon}
    for name, frame in result.oof.items():
        lake.write(tables.ENSEMBLE_OOF, frame, **parts, name=name)
        lake.write(
            tables.ENSEMBLE_METRICS,
            result.scores[name].with_columns(pl.lit(name).alias("family"), pl.lit("ensemble").alias("kind")),
            **parts,
            name=name,
        )
    lake.write(tables.INTERVALS, result.forecasts, **parts)
    lake.write(tables.MEMBERS, members_table(members), **parts)


def ensemble_horizon(
    lake: Lake, market: Market, horizon: Horizon, plan: EnsemblePlan, log
) -> tuple[Ensembled, Members]:
    """Read one horizon's families, regime state and training origins, and ensemble them (nothing written)."""
    where = f"{market} {horizon.name}"
    state = lake.read(tables.REGIME_STATE, market=market, horizon=horizon.name)
    origins = training_origins(lake, market, horizon.name)
    oof, missing = family_oof(lake, market, horizon.name, [f.name for f in families()])
    if missing:
        log.warning(
            f"{where}: no out-of-fold forecasts of {', '.join(missing)}; ensembling the {len(oof)} families present"
        )
    try:
        members = assemble(oof, origins, state, time_key(horizon), missing, where=where)
        result = ensemble(
            members,
            horizon_rows(horizon),
            plan,
            periods_per_year=rows_per_year(horizon),
            cost_bps=market.cost_bps,
            log=lambda m: log.debug(f"{where}: {m}"),
        )
    except ValueError as error:
        raise dg.Failure(f"{where}: {error}") from error
    return result, members


def _ensemble_asset(market: Market):
    registered = [f.name for f in families()]

    @horizon_asset(
        market,
        key=[market.key, "models", "ensemble"],
        group_name=f"{market.key}_models",
        deps=reads(tables.OOF, markets=[market], family=registered)
        + reads(tables.TRAINING_SET, tables.REGIME_STATE, markets=[market]),
        kinds={"python", "duckdb"},
        tags={"layer": "models", **stage("forecast")},
        description=f"{market} ensembles per horizon on the families' out-of-fold forecasts: stacked (ridge, "
        "LightGBM) and a regime-aware blend, walked forward on matured rows only; the blend's conformal "
        "intervals beside LightGBM's quantiles, conviction and confidence per row (ensemble/intervals"
        ".parquet); warehouse models.ensembles (MASE against the best family on the same folds) and "
        "models.coverage.",
    )
    def _ensemble(
        context: dg.AssetExecutionContext,
        config: EnsembleConfig,
        lake: Lake,
        warehouse: Warehouse,
        profile: TrainingProfile,
    ) -> dg.MaterializeResult:
        plan = config.plan(profile.load().training.threads)
        top = max(plan.levels)

        def work(horizon: Horizon) -> Done:
            result, members = ensemble_horizon(lake, market, horizon, plan, context.log)
            _write(lake, market, horizon.name, result, members)
            labels = [pl.lit(market.symbol).alias("asset"), pl.lit(horizon.name).alias("horizon")]
            board = comparison(result, members).with_columns(labels)
            point = board.filter(pl.col("ensemble") == POINT).row(0, named=True)
            interval = result.coverage.filter(
                (pl.col("method") == "conformal") & (pl.col("scope") == "overall") & (pl.col("level") == top)
            )
            covered_now = (
                f"{top:.0%} conformal coverage {interval['coverage'][0]:.3f} on {interval['rows'][0]:,} "
                f"rows (about {interval['outcomes'][0]:,.0f} independent outcomes)"
                if interval.height
                else f"no conformal interval yet (fewer than {plan.min_scores} matured scores before any fold)"
            )
            context.log.info(
                f"{market} {horizon.name}: blend MASE {point['mase']:.3f} against the best family "
                f"({point['best_family']}) {point['best_family_mase']:.3f} on folds "
                f"{result.evaluated[0]}..{result.evaluated[-1]}; {covered_now}"
            )
            fan = _fan_plot(
                result.forecasts,
                members.key,
                plan.levels,
                f"{market} {horizon.name}: the blend's forecast and conformal bands, last test origins",
            )
            return Done(
                metadata={"fan": fan},
                value={
                    "board": board,
                    "coverage": result.coverage.with_columns(labels),
                    "missing": list(members.missing),
                },
            )

        def finish(done: dict[str, Done]) -> dict:
            boards = pl.concat([d.value["board"] for d in done.values()], how="diagonal_relaxed")
            coverage = pl.concat([d.value["coverage"] for d in done.values()], how="diagonal_relaxed")
            warehouse.replace_horizons("models.ensembles", boards)
            warehouse.replace_horizons("models.coverage", coverage)
            return {
                "missing_families": dg.MetadataValue.json(
                    {h: d.value["missing"] for h, d in done.items() if d.value["missing"]}
                ),
                "against_best_family": md_table(
                    boards.select(
                        "horizon",
                        "ensemble",
                        "folds",
                        "rows",
                        "mase",
                        "best_family",
                        "best_family_mase",
                        "mase_vs_best",
                        "directional_accuracy",
                        "best_family_directional_accuracy",
                        "random_walk_mase",
                    ).with_columns(pl.col(pl.Float64).round(4)),
                    100,
                ),
                "coverage": md_table(
                    coverage.filter(pl.col("scope") != "regime")
                    .select(
                        "horizon",
                        "method",
                        "level",
                        "scope",
                        "group",
                        "rows",
                        "outcomes",
                        "coverage",
                        "mean_width",
                    )
                    .with_columns(pl.col(pl.Float64).round(4)),
                    400,
                ),
                "coverage_plot": _coverage_plot(coverage, f"{market} interval coverage on the walk-forward test folds"),
            }

        return each_horizon(
            context,
            market,
            work,
            name="ensembles",
            finish=finish,
            metadata={
                "path": dg.MetadataValue.path(lake.where(tables.INTERVALS, market=market)),
                "tables": "models.ensembles, models.coverage",
            },
        )

    return _ensemble


ENSEMBLE_ASSETS = [_ensemble_asset(m) for m in MARKETS.values()]
