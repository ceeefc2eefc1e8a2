"""Explanation assets per market, partitioned by horizon: SHAP values of every forecast of the tree
families and the champion, each forecast's top drivers, and how importance moved between the last
two trainings of each family.

The models come from MLflow (the last fold's model of each family's latest run, the champion by its
registered alias), so what is explained is what forecasts. Stored in the lake's explanation tables;
the latest origin's drivers go to the warehouse table `models.drivers`.
"""

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.explain.explained import PARTS, Explained, explain_family, summary_frame, warehouse_drivers
from cbi_assets.explain.rows import explained_rows
from cbi_assets.explain.shapley import NoAttribution
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, reads
from cbi_assets.models.inputs import TrainingArrays
from cbi_assets.models.registry import families
from cbi_assets.profiles import PROFILES, Profile, TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.training.sets import feature_timeframe, time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse
from resources.tracking import Tracking


def explain_horizon(
    lake: Lake, tracking: Tracking, market: Market, horizon: Horizon, profile: Profile, log
) -> list[Explained]:
    """Every tree family and the champion of one market x horizon, explained; `log` is a logger (info, warning)."""
    parts = {"market": market, "horizon": horizon.name}
    where = f"{market} {horizon.name}"
    frame = lake.read(tables.TRAINING_SET, **parts)
    folds = lake.read(tables.FOLDS, **parts)
    scalers = lake.read(tables.SCALERS, **parts)
    master = lake.scan(tables.MASTER, market=market, timeframe=feature_timeframe(horizon))
    champion = tracking.champion(market, horizon.name)
    if champion is None:
        raise dg.Failure(f"{where}: no champion registered in MLflow; materialize {market.key}/models/leaderboard")
    budget, plan = profile.training, profile.explain
    registry = {f.name: f for f in families()}
    chosen = [f.name for f in families("tree")]
    if champion["family"] not in chosen:
        chosen.append(champion["family"])
    runs = {}
    for family in chosen:
        found = [r["run_id"] for r in tracking.family_runs(market, horizon.name, family, 2)]
        if not found:
            kind = "trees" if family in registry and registry[family].kind == "tree" else "leaderboard"
            raise dg.Failure(f"{where}: MLflow has no run of {family}; materialize {market.key}/models/{kind}")
        if family == champion["family"] and champion["run_id"] not in found[:1]:
            log.warning(
                f"{where}: the champion is {family} run {champion['run_id'][:8]}, older than its latest run "
                f"{found[0][:8]}; the latest is explained; rematerialize {market.key}/models/leaderboard"
            )
        runs[family] = found
    try:
        data = TrainingArrays.of(frame, market, horizon)
    except ValueError as error:
        raise dg.Failure(f"the {tables.TRAINING_SET.name} of {where}: {error}") from error
    # A network's window reaches back before the latest origin: as far as any profile's windows do.
    history = (
        max(p.training.sequence_length for p in (*PROFILES.values(), profile))
        if any(f in registry and registry[f].shape == "sequence" for f in chosen)
        else 1
    )
    rows = explained_rows(frame, folds, scalers, master, data, time_key(horizon), plan.max_rows, history)
    out = []
    for family in chosen:
        try:
            found = explain_family(
                tracking, market, horizon, family, runs[family], rows, budget, plan, family == champion["family"]
            )
        except NoAttribution as error:
            found = Explained(
                family,
                runs[family][0],
                family == champion["family"],
                f"no feature attribution: {error}",
                drift={"drift": "no feature attribution to compare"},
            )
        log.info(
            f"{where} {family}{' (champion)' if found.champion else ''}: {found.status}"
            + (
                f"; rank correlation with the previous training {found.drift['rank_correlation']:.2f}"
                if "rank_correlation" in found.drift
                else ""
            )
        )
        out.append(found)
    return out


def write_explained(lake: Lake, market: Market, horizon: str, explained: list[Explained]) -> None:
    """Each family's tables, then a summary; tables of families no longer explained are removed."""
    parts = {"market": market, "horizon": horizon}
    kept = {part: set() for part in PARTS}
    for found in explained:
        for part, frame in found.frames.items():
            lake.write(tables.EXPLANATION, frame, **parts, part=part, family=found.family)
            kept[part].add(found.family)
    lake.write(tables.EXPLAIN_SUMMARY, summary_frame(explained), **parts)
    # A family no longer explained (unregistered, or now without attribution) leaves no stale file behind.
    for part in PARTS:
        for family in set(lake.present(tables.EXPLANATION, "family", **parts, part=part)) - kept[part]:
            lake.delete(tables.EXPLANATION, **parts, part=part, family=family)


# --- How it reads in the UI ---------------------------------------------------------------------


BP = 1e4  # plots read in basis points of forward log return: a week's SHAP values are ~1e-4


def _explanation(found: Explained):
    import shap

    return shap.Explanation(
        values=found.attribution.shap * BP,
        base_values=found.attribution.base * BP,
        data=found.values,
        feature_names=list(found.attribution.features),
    )


def summary_plot(found: Explained, title: str) -> dg.MetadataValue:
    """A beeswarm of each feature's SHAP values over the explained forecasts, largest mean |SHAP| first."""
    import shap

    fig, ax = figure(9, 6)
    shap.plots.beeswarm(_explanation(found), max_display=15, show=False, ax=ax, plot_size=None)
    ax.set_xlabel("SHAP value (basis points of the forward log return)")
    ax.set_title(title, fontsize=10)
    return plot(fig)


def latest_plot(found: Explained, title: str) -> dg.MetadataValue:
    """The latest forecast driver by driver: each top feature's push up (red) or down (blue), with the
    base value, the rest of the features and the forecast they add up to."""
    last = len(found.values) - 1
    shap = found.attribution.shap[last] * BP
    top = np.argsort(-np.abs(shap), kind="stable")[:12][::-1]
    fig, ax = figure(8, 4.5)
    ax.barh(np.arange(len(top)), shap[top], color=np.where(shap[top] > 0, "#d62728", "#1f77b4"))
    names = [f"{found.attribution.features[i]} = {found.values[last, i]:.4g}" for i in top]
    ax.set_yticks(np.arange(len(top)), names, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("SHAP value (basis points of the forward log return)")
    base = found.attribution.base[last] * BP
    ax.set_title(
        f"{title}\nbase {base:+.1f} bp + these drivers {shap[top].sum():+.1f} bp + the other "
        f"{len(shap) - len(top)} features {shap.sum() - shap[top].sum():+.1f} bp = forecast "
        f"{base + shap.sum():+.1f} bp",
        fontsize=9,
    )
    return plot(fig)


def _plots(market: Market, horizon: str, key: str, explained: list[Explained]) -> dict[str, dg.MetadataValue]:
    """The summary beeswarm (the champion's when it explains enough forecasts for a swarm, else
    LightGBM's) and the drivers of the champion's latest forecast (LightGBM's when the champion has
    no features)."""
    attributed = [e for e in explained if e.attribution is not None]
    if not attributed:
        return {}
    champion = next((e for e in attributed if e.champion), None)
    swarm = champion if champion is not None and len(champion.values) >= 20 else attributed[0]
    latest = champion or attributed[0]

    def name(e: Explained) -> str:
        return f"{market} {horizon} {e.family}{' (champion)' if e.champion else ''}"

    when = latest.frames["drivers"][key].max()
    return {
        "shap_summary": summary_plot(
            swarm, f"{name(swarm)}: SHAP values of {len(swarm.values)} forecasts (the last fold's and the latest)"
        ),
        "latest_forecast": latest_plot(latest, f"{name(latest)}: the forecast of {when}, driver by driver"),
    }


def _explain_asset(market: Market):
    timeframes = sorted({feature_timeframe(h) for h in market.horizons})
    # The models and the champion come from MLflow, written by the trees and the leaderboard.
    models = [dg.AssetKey([market.key, "models", "trees"]), dg.AssetKey([market.key, "models", "leaderboard"])]

    @horizon_asset(
        market,
        key=[market.key, "models", "explanations"],
        group_name=f"{market.key}_models",
        deps=reads(tables.TRAINING_SET, tables.FOLDS, tables.SCALERS, markets=[market])
        + reads(tables.MASTER, markets=[market], timeframe=timeframes)
        + models,
        kinds={"python", "mlflow", "duckdb"},
        tags={"layer": "models", **stage("forecast")},
        description=f"{market} SHAP explanations per horizon: every forecast of the last walk-forward fold and "
        "the latest origin, for the tree families and the champion (from MLflow); the top drivers of each "
        "forecast (warehouse models.drivers), and how mean |SHAP| moved between the last two trainings.",
    )
    def _explanations(
        context: dg.AssetExecutionContext,
        lake: Lake,
        warehouse: Warehouse,
        tracking: Tracking,
        profile: TrainingProfile,
    ) -> dg.MaterializeResult:
        loaded = profile.load()

        def work(horizon: Horizon) -> Done:
            key = time_key(horizon)
            explained = explain_horizon(lake, tracking, market, horizon, loaded, context.log)
            write_explained(lake, market, horizon.name, explained)
            latest, drift = [], []
            for e in explained:
                if "drivers" in e.frames:
                    top = e.frames["drivers"].filter((pl.col("origin") == "latest") & (pl.col("rank") <= 5))
                    latest.append(
                        top.select(
                            pl.lit(horizon.name).alias("horizon"),
                            pl.lit(e.family).alias("family"),
                            pl.col(key).cast(pl.String).alias("origin"),
                            "rank",
                            "feature",
                            pl.col("value").round(4),
                            (pl.col("shap") * BP).round(3).alias("shap_bp"),
                        )
                    )
                drift.append(
                    {
                        "horizon": horizon.name,
                        "family": e.family,
                        "rank_correlation": round(e.drift["rank_correlation"], 3)
                        if "rank_correlation" in e.drift
                        else None,
                        "biggest_movers": ", ".join(e.frames["drift"]["feature"].head(3))
                        if "drift" in e.frames
                        else "",
                        "note": e.drift.get("drift", ""),
                    }
                )
            status = {e.family + (" (champion)" if e.champion else ""): e.status for e in explained}
            return Done(
                metadata=_plots(market, horizon.name, key, explained),
                value={
                    "drivers": warehouse_drivers(market, horizon.name, key, explained),
                    "status": status,
                    "latest": latest,
                    "drift": drift,
                },
            )

        def finish(done: dict[str, Done]) -> dict:
            warehouse.replace_horizons("models.drivers", pl.concat([d.value["drivers"] for d in done.values()]))
            latest = [frame for d in done.values() for frame in d.value["latest"]]
            drift = [row for d in done.values() for row in d.value["drift"]]
            out = {"attribution": dg.MetadataValue.json({h: d.value["status"] for h, d in done.items()})}
            if latest:
                out["latest_drivers"] = md_table(pl.concat(latest), 300)
            if drift:
                out["importance_drift"] = md_table(pl.DataFrame(drift), 200)
            return out

        return each_horizon(
            context,
            market,
            work,
            name="explanations",
            finish=finish,
            metadata={
                "path": dg.MetadataValue.path(lake.where(tables.EXPLANATION, market=market)),
                "table": "models.drivers",
            },
        )

    return _explanations


EXPLAIN_ASSETS = [_explain_asset(m) for m in MARKETS.values()]
