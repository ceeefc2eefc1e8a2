"""Explanation assets per market, partitioned by horizon: SHAP values of every forecast of the tree
families and the champion, each forecast's top drivers, and how importance moved between the last
two trainings of each family.

The models come from MLflow (the last fold's model of each family's latest run, the champion by its
registered alias), so what is explained is what forecasts. Stored under
`TrainingData/<A>/models/by_horizon/<h>/explain/`; the latest origin's drivers go to the warehouse
table `models.drivers`.
"""


from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets.explain.importance import importance, importance_drift
from cbi_assets.explain.rows import PLANS, ExplainedRows, ExplainPlan, explained_rows
from cbi_assets.explain.shapley import (
    Attribution,
    NoAttribution,
    attribute,
    drivers,
    long_format,
    no_attribution_reason,
    window_length,
)
from cbi_assets.features.assets import master_path
from cbi_assets.models.assets import models_dir
from cbi_assets.models.inputs import TrainingArrays
from cbi_assets.models.registry import BUDGETS, Budget, families
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS
from cbi_assets.training.assets import horizon_dir
from cbi_assets.training.sets import (
    feature_columns,
    trained_on,
    feature_timeframe,
    horizon_of,
    time_key,
)
from cbi_assets.ui import figure, partly_failed, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import replace_horizons

PARTS = ("shap", "drivers", "importance", "drift")  # the folders under explain/, one file per family


def explain_dir(lake: Path, asset: str, horizon: str) -> Path:
    return models_dir(lake, asset, horizon) / "explain"


@dataclass
class Explained:
    """One family's explanation on one horizon (frames empty when it has no attribution)."""

    family: str
    run_id: str
    champion: bool
    status: str  # how it was explained, or why it has no attribution
    attribution: Attribution | None = None
    values: np.ndarray | None = None
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    drift: dict = field(default_factory=dict)


def _read(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise dg.Failure(f"{path}: {what} not built yet; materialize it for this horizon first")
    return pl.read_parquet(path)


def _attribute(model, features: tuple[str, ...], rows: ExplainedRows, budget: Budget,
               plan: ExplainPlan) -> tuple[Attribution, ExplainedRows]:
    """SHAP values of a model on the explained rows (the newest few for a network), with its columns
    picked by name from the training set's."""
    index = [rows.features.index(f) for f in features]
    length = window_length(model)
    if length is None:
        x = rows.tabular(budget)[:, index]
        return attribute(model, x, features), rows
    newest = rows.last(plan.network_rows + 1)
    windows, background = newest.windows(budget, length, plan.background)
    return attribute(model, windows[:, :, index], features, background=background[:, :, index],
                     permutations=plan.permutations), newest


def explain_family(tracking, asset: str, horizon: str, family: str, run_ids: list[str], rows: ExplainedRows,
                   budget: Budget, plan: ExplainPlan, champion: bool) -> Explained:
    """Explain the latest training (run_ids[0]) on the rows and, when there is a previous one
    (run_ids[1]), compare their importance on the same rows."""
    model, features = tracking.load_model(run_ids[0])
    features = trained_on(features)
    if features != rows.features:
        raise ValueError(f"{asset} {horizon} {family}: MLflow run {run_ids[0]} was trained on {len(features)} features "
                         f"but the training set has {len(rows.features)}; rematerialize {asset}/models for this horizon")
    reason = no_attribution_reason(model)
    if reason:
        return Explained(family, run_ids[0], champion, f"no feature attribution: {reason}",
                         drift={"drift": "no feature attribution to compare"})
    found, shown = _attribute(model, tuple(features), rows, budget, plan)
    out = Explained(family, run_ids[0], champion, f"{found.method} on {shown.rows} forecasts", found, shown.raw)
    keys = pl.DataFrame({rows.key: shown.times, "origin": list(shown.origin)}).with_row_index("row").with_columns(
        pl.col("row").cast(pl.Int64), pl.Series("base", found.base), pl.Series("forecast", found.forecast))
    out.frames["shap"] = keys.select("row", rows.key, "origin").join(long_format(found, shown.raw), on="row").drop("row")
    out.frames["drivers"] = keys.join(drivers(found, shown.raw, plan.drivers), on="row").drop("row")
    latest = importance(found)
    out.frames["importance"] = latest
    if len(run_ids) < 2:
        out.drift = {"drift": f"one training so far (run {run_ids[0][:8]}); drift needs a second"}
        return out
    previous, previous_features = tracking.load_model(run_ids[1])
    previous_features = trained_on(previous_features)
    missing = [f for f in previous_features if f not in rows.features]
    if missing:
        out.drift = {"drift": f"the previous training (run {run_ids[1][:8]}) used {len(missing)} features the training "
                              f"set no longer has (first: {missing[0]}); not compared"}
        return out
    before, _ = _attribute(previous, tuple(previous_features), rows, budget, plan)
    summary, movers = importance_drift(importance(before), latest)
    out.frames["drift"] = movers
    out.drift = {"previous_run": run_ids[1], **summary}
    return out


def explain_horizon(lake: Path, tracking, asset: str, partition: str, profile: str, log) -> list[Explained]:
    """Every tree family and the champion of one asset x horizon, explained; `log` is a logger (info, warning)."""
    horizon = horizon_of(asset, partition)
    folder = horizon_dir(lake, asset, partition)
    frame = _read(folder / "all.parquet", f"{asset}/training/sets")
    folds = _read(folder / "folds.parquet", f"{asset}/training/folds")
    scalers = _read(folder / "scalers.parquet", f"{asset}/training/folds")
    master = master_path(lake, asset, feature_timeframe(horizon))
    if not master.is_file():
        raise dg.Failure(f"{master}: the master feature table is missing; materialize "
                         f"{asset}/features/master_{feature_timeframe(horizon)}")
    champion = tracking.champion(asset, partition)
    if champion is None:
        raise dg.Failure(f"{asset} {partition}: no champion registered in MLflow; materialize {asset}/models/leaderboard")
    budget, plan = BUDGETS[profile], PLANS[profile]
    registry = {f.name: f for f in families()}
    chosen = [f.name for f in families("tree")]
    if champion["family"] not in chosen:
        chosen.append(champion["family"])
    runs = {}
    for family in chosen:
        found = [r["run_id"] for r in tracking.family_runs(asset, partition, family, 2)]
        if not found:
            raise dg.Failure(f"{asset} {partition}: MLflow has no run of {family}; materialize {asset}/models/"
                             f"{'trees' if family in registry and registry[family].kind == 'tree' else 'leaderboard'}")
        if family == champion["family"] and champion["run_id"] not in found[:1]:
            log.warning(f"{asset} {partition}: the champion is {family} run {champion['run_id'][:8]}, older than its latest "
                        f"run {found[0][:8]}; the latest is explained; rematerialize {asset}/models/leaderboard")
        runs[family] = found
    try:
        data = TrainingArrays.of(frame, asset, horizon)
    except ValueError as error:
        raise dg.Failure(f"{folder / 'all.parquet'}: {error}") from error
    # A network's window reaches back before the latest origin: as far as any profile's windows do.
    history = max(b.sequence_length for b in BUDGETS.values()) if any(
        f in registry and registry[f].shape == "sequence" for f in chosen) else 1
    rows = explained_rows(frame, folds, scalers, master, data, time_key(horizon), plan.max_rows, history)
    out = []
    for family in chosen:
        try:
            found = explain_family(tracking, asset, partition, family, runs[family], rows, budget, plan,
                                   family == champion["family"])
        except NoAttribution as error:
            found = Explained(family, runs[family][0], family == champion["family"], f"no feature attribution: {error}",
                              drift={"drift": "no feature attribution to compare"})
        log.info(f"{asset} {partition} {family}{' (champion)' if found.champion else ''}: {found.status}"
            + (f"; rank correlation with the previous training {found.drift['rank_correlation']:.2f}"
               if "rank_correlation" in found.drift else ""))
        out.append(found)
    return out


def write_explained(folder: Path, explained: list[Explained]) -> None:
    """Each family's frames, then a summary; files of families no longer explained are removed."""
    kept = {part: set() for part in PARTS}
    for found in explained:
        for part, frame in found.frames.items():
            write_frame(frame, folder / part / f"{found.family}.parquet")
            kept[part].add(f"{found.family}.parquet")
    write_frame(summary_frame(explained), folder / "summary.parquet")
    for part in PARTS:
        for stale in (folder / part).glob("*.parquet") if (folder / part).is_dir() else ():
            if stale.name not in kept[part]:
                stale.unlink()


def summary_frame(explained: list[Explained]) -> pl.DataFrame:
    return pl.DataFrame([{
        "family": e.family, "champion": e.champion, "run_id": e.run_id, "status": e.status,
        "top_feature": e.frames["importance"]["feature"][0] if "importance" in e.frames else None,
        "previous_run": e.drift.get("previous_run"), "rank_correlation": e.drift.get("rank_correlation"),
        "drift": e.drift.get("drift", ""),
    } for e in explained], schema={"family": pl.String, "champion": pl.Boolean, "run_id": pl.String, "status": pl.String,
                                   "top_feature": pl.String, "previous_run": pl.String, "rank_correlation": pl.Float64,
                                   "drift": pl.String})


def warehouse_drivers(asset: str, horizon: str, key: str, explained: list[Explained]) -> pl.DataFrame:
    """models.drivers rows: the top drivers of the latest origin of each explained family."""
    schema = {"asset": pl.String, "horizon": pl.String, "family": pl.String, "champion": pl.Boolean,
              "date": pl.Date, "ts": pl.Datetime("us", "UTC"), "rank": pl.Int32, "feature": pl.String,
              "value": pl.Float64, "shap": pl.Float64, "sign": pl.Int8}
    parts = []
    for e in explained:
        if "drivers" not in e.frames:
            continue
        latest = e.frames["drivers"].filter(pl.col("origin") == "latest")
        when = latest[key]
        parts.append(latest.select(
            pl.lit(asset.upper()).alias("asset"), pl.lit(horizon).alias("horizon"), pl.lit(e.family).alias("family"),
            pl.lit(e.champion).alias("champion"),
            (when if key == "date" else pl.lit(None)).cast(pl.Date).alias("date"),
            (when if key == "ts" else pl.lit(None)).cast(schema["ts"]).alias("ts"),
            "rank", "feature", "value", "shap", "sign"))
    return pl.concat(parts).cast(schema) if parts else pl.DataFrame(schema=schema)


# --- How it reads in the UI ---------------------------------------------------------------------


BP = 1e4  # plots read in basis points of forward log return: a week's SHAP values are ~1e-4


def _explanation(found: Explained):
    import shap

    return shap.Explanation(values=found.attribution.shap * BP, base_values=found.attribution.base * BP,
                            data=found.values, feature_names=list(found.attribution.features))


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
    ax.set_title(f"{title}\nbase {base:+.1f} bp + these drivers {shap[top].sum():+.1f} bp + the other "
                 f"{len(shap) - len(top)} features {shap.sum() - shap[top].sum():+.1f} bp = forecast "
                 f"{base + shap.sum():+.1f} bp", fontsize=9)
    return plot(fig)


def _plots(asset: str, horizon: str, key: str, explained: list[Explained]) -> dict[str, dg.MetadataValue]:
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
        return f"{asset.upper()} {horizon} {e.family}{' (champion)' if e.champion else ''}"

    when = latest.frames["drivers"][key].max()
    return {
        f"shap_summary_{horizon}": summary_plot(swarm, f"{name(swarm)}: SHAP values of {len(swarm.values)} forecasts "
                                                       "(the last fold's and the latest)"),
        f"latest_forecast_{horizon}": latest_plot(latest, f"{name(latest)}: the forecast of {when}, driver by driver"),
    }


def _explain_asset(asset: str):
    @dg.asset(
        key=[asset, "models", "explanations"], group_name=f"{asset}_models", partitions_def=HORIZON_PARTITIONS[asset],
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey([asset, "models", "trees"]), dg.AssetKey([asset, "models", "leaderboard"])],
        required_resource_keys={"lake", "warehouse", "tracking"}, kinds={"python", "mlflow", "duckdb"},
        tags={"layer": "models"},
        description=f"{asset.upper()} SHAP explanations per horizon: every forecast of the last walk-forward fold and "
                    "the latest origin, for the tree families and the champion (from MLflow); the top drivers of each "
                    "forecast (warehouse models.drivers), and how mean |SHAP| moved between the last two trainings.",
    )
    def _explanations(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        profile = context.resources.lake.profile
        tracking = context.resources.tracking
        plots, latest, drift, status, warehouse_rows, failed = {}, [], [], {}, [], []
        for partition in context.partition_keys:
            key = time_key(horizon_of(asset, partition))
            try:
                explained = explain_horizon(lake, tracking, asset, partition, profile, context.log)
            except Exception as error:  # one horizon's failure must not lose the others' explanations
                reason = getattr(error, "description", None) or str(error)
                context.log.error(f"{asset} {partition} explanations failed: {reason}")
                failed.append(f"{partition}: {reason}")
                continue
            write_explained(explain_dir(lake, asset, partition), explained)
            warehouse_rows.append(warehouse_drivers(asset, partition, key, explained))
            status[partition] = {e.family + (" (champion)" if e.champion else ""): e.status for e in explained}
            plots.update(_plots(asset, partition, key, explained))
            for e in explained:
                if "drivers" in e.frames:
                    top = e.frames["drivers"].filter((pl.col("origin") == "latest") & (pl.col("rank") <= 5))
                    latest.append(top.select(pl.lit(partition).alias("horizon"), pl.lit(e.family).alias("family"),
                                             pl.col(key).cast(pl.String).alias("origin"), "rank", "feature",
                                             pl.col("value").round(4), (pl.col("shap") * BP).round(3).alias("shap_bp")))
                drift.append({"horizon": partition, "family": e.family,
                              "rank_correlation": round(e.drift["rank_correlation"], 3)
                              if "rank_correlation" in e.drift else None,
                              "biggest_movers": ", ".join(e.frames["drift"]["feature"].head(3))
                              if "drift" in e.frames else "", "note": e.drift.get("drift", "")})
        metadata = {**plots, "attribution": dg.MetadataValue.json(status),
                    "path": dg.MetadataValue.path(str(explain_dir(lake, asset, "").parent)), "table": "models.drivers"}
        if latest:
            metadata["latest_drivers"] = md_table(pl.concat(latest), 300)
        if drift:
            metadata["importance_drift"] = md_table(pl.DataFrame(drift), 200)
        if warehouse_rows:
            with context.resources.warehouse.get_connection() as conn:
                replace_horizons(conn, "models.drivers", pl.concat(warehouse_rows))
        if failed:
            raise partly_failed(failed, f"of {len(context.partition_keys)} horizons", metadata)
        return dg.MaterializeResult(metadata=metadata)

    return _explanations


EXPLAIN_ASSETS = [_explain_asset(a) for a in ("zl", "mes")]
