"""Regime specialist assets per market, partitioned by regime (the dynamic `regime` partitions: the
named calendar regimes and those the state detects). Each partition trains a LightGBM specialist
per daily horizon on that regime's rows, walks it forward inside the regime beside the generalist
and the random walk, and logs it to MLflow as `specialist_<regime>`.

A new regime is trained by materializing its partition, from the UI or from a sensor
(SPECIALIST_KEYS gives each market's asset key). `choice.choose_model` reads the stored verdicts.
"""

import hashlib
import pickle
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets.catalogue import market
from cbi_assets.models.assets import models_dir
from cbi_assets.models.evaluation import METRICS
from cbi_assets.models.inputs import SESSIONS_PER_YEAR, TrainingArrays, horizon_rows
from cbi_assets.models.registry import BUDGETS, Budget, families
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS, REGIME_PARTITIONS
from cbi_assets.regimes.assets import read_calendar, regime_calendar
from cbi_assets.specialists.choice import specialist_dir
from cbi_assets.specialists.walk import (
    SpecialistPlan,
    purge_violations,
    regime_folds,
    regime_span,
    scores,
    train_specialist,
    verdict,
    walk_regime,
    with_generalist_oof,
)
from cbi_assets.training.assets import horizon_dir
from cbi_assets.training.sets import horizon_of, time_key
from cbi_assets.ui import figure, partly_failed, plot
from cbi_assets.ui import table as md_table

GENERALIST = "lightgbm"  # the family a specialist is a regime-only version of
SPECIALIST_KEYS = {a: dg.AssetKey([a, "models", "specialists"]) for a in ("zl", "mes")}
VERDICT_SCHEMA = {
    "asset": pl.String, "horizon": pl.String, "regime": pl.String, "status": pl.String, "beats_generalist": pl.Boolean,
    "beats_random_walk": pl.Boolean,
    "specialist_mase": pl.Float64, "generalist_mase": pl.Float64, "generalist_oof_mase": pl.Float64,
    "oof_rows": pl.Int64, "test_rows": pl.Int64, "regime_rows": pl.Int64, "first": pl.String, "last": pl.String,
    "run_id": pl.String, "why": pl.String,
}


def daily_horizons(asset: str) -> list[str]:
    """The horizons a market's specialists cover: its daily ones (an intraday regime has few sessions)."""
    return [h.name for h in market(asset).horizons if not h.intraday]


class SpecialistConfig(dg.Config):
    """Which horizons to train (default: every daily horizon of the market) and the walk inside a regime."""

    horizons: list[str] | None = None
    n_folds: int = SpecialistPlan().n_folds
    min_train_rows: int = SpecialistPlan().min_train_rows

    def plan(self) -> SpecialistPlan:
        return SpecialistPlan(n_folds=self.n_folds, min_train_rows=self.min_train_rows)


def _replace_folder(stage: Path, folder: Path) -> None:
    """Put a fully written staging folder in place of `folder`, so a failed run leaves the old one."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    stage.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _stage(folder: Path) -> Path:
    stage = folder.with_name(f".{folder.name}.incoming")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def specialise(lake: Path, tracking, asset: str, regime: str, horizon_name: str, calendar: list[str], budget: Budget,
               plan: SpecialistPlan, tags: dict[str, str], log) -> dict:
    """Train, walk and store one regime's specialist for one horizon; its verdict row."""
    horizon = horizon_of(asset, horizon_name)
    folder = horizon_dir(lake, asset, horizon_name)
    path = folder / "all.parquet"
    if not path.is_file():
        raise dg.Failure(f"{path}: the {asset.upper()} {horizon_name} training set is not built yet; materialize "
                         f"{asset}/training/sets for {horizon_name}")
    frame = pl.read_parquet(path)
    key = time_key(horizon)
    row = {"asset": asset.upper(), "horizon": horizon_name, "regime": regime, "status": "skipped",
           "beats_generalist": False, "beats_random_walk": False}
    out = specialist_dir(lake, asset, regime, horizon_name)
    try:
        span = regime_span(frame, regime, calendar, "trade_date" if horizon.intraday else "date")
    except ValueError as error:
        raise dg.Failure(f"{path}: {error}") from error
    folds = "no rows in the training set" if span is None else regime_folds(frame, span, key, horizon_rows(horizon), plan)
    if isinstance(folds, str):
        reason = f"{regime} on {asset.upper()} {horizon_name}: {folds}"
        log(f"skipped: {reason}")
        stage = _stage(out)
        write_frame(pl.DataFrame([{**row, "why": reason}], schema=VERDICT_SCHEMA), stage / "verdict.parquet")
        _replace_folder(stage, out)
        return {**row, "why": reason}
    if purge_violations(frame, folds, key):
        raise dg.Failure(f"{asset} {horizon_name} {regime}: a training label reaches into its test window; "
                         "the walk inside the regime is not purged")
    try:
        data = TrainingArrays.of(frame, asset, horizon)
    except ValueError as error:
        raise dg.Failure(f"{path}: {error}") from error
    generalist = next(f for f in families("tree") if f.name == GENERALIST)
    fit = generalist.fit
    log(f"{regime} {asset.upper()} {horizon_name}: {span[1] - span[0] + 1:,} regime rows, {folds.height} folds")
    walked = walk_regime(frame, data, folds, key, fit, budget, lambda m: log(f"{regime} {horizon_name} {m}"))
    stored = models_dir(lake, asset, horizon_name) / "oof" / f"{GENERALIST}.parquet"
    walked = with_generalist_oof(walked, pl.read_parquet(stored) if stored.is_file() else None, key)
    board = scores(walked, horizon=horizon_rows(horizon), periods_per_year=SESSIONS_PER_YEAR,
                   cost_bps=market(asset).cost_bps)
    decision = verdict(board, plan)
    model, scaler = train_specialist(frame, data, span, fit, budget)

    versus = (board.filter((pl.col("model") != "specialist") & (pl.col("scope") == "overall") & (pl.col("group") == "all"))
              .with_columns(pl.lit("versus").alias("scope"), pl.col("model").alias("group")))
    logged = pl.concat([board.filter((pl.col("model") == "specialist") & (pl.col("group") != "oof_rows")), versus])
    rows = frame.slice(span[0], span[1] - span[0] + 1)
    stage = _stage(out)
    model_dir = stage / "model"
    model_dir.mkdir()
    with open(model_dir / "model.pkl", "wb") as target:
        pickle.dump(model, target)
    write_frame(scaler.to_frame(), model_dir / "scaler.parquet")
    data_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    run_id = tracking.log_family(
        asset, horizon_name, f"specialist_{regime}",
        params={**generalist.params, **budget.__dict__, **getattr(model, "params", {}), "regime": regime,
                "regime_rows": rows.height, "folds": folds.height, "generalist": GENERALIST},
        scores=logged.drop("model"), model_dir=model_dir, features=list(data.features), data_hash=data_hash,
        tags={**tags, "kind": "specialist", "regime": regime, "beats_generalist": str(decision["beats_generalist"]),
              "beats_random_walk": str(decision["beats_random_walk"])})
    row = {**row, **decision, "status": "trained", "regime_rows": rows.height, "first": str(rows[key].min()),
           "last": str(rows[key].max()), "run_id": run_id}
    write_frame(walked, stage / "oof.parquet")
    write_frame(board, stage / "metrics.parquet")
    write_frame(folds, stage / "folds.parquet")
    write_frame(pl.DataFrame([row], schema=VERDICT_SCHEMA), stage / "verdict.parquet")
    _replace_folder(stage, out)
    log(f"{regime} {asset.upper()} {horizon_name}: {decision['why']}")
    return {**row, "board": board}


def _comparison_plot(rows: list[dict], title: str):
    """MASE and direction per horizon: the specialist, the generalist on the same folds, the stored oof."""
    fig, (mase, hits) = figure(9, 5, rows=2)
    trained = [r for r in rows if r["status"] == "trained"]
    x = np.arange(len(trained))
    for i, (model, label) in enumerate((("specialist", "specialist"), ("generalist", "generalist, same folds"),
                                        ("generalist_oof", "generalist oof (rows it covers)"))):
        values, accuracy = [], []
        for r in trained:
            found = r["board"].filter((pl.col("model") == model) & (pl.col("scope") == "overall")
                                      & (pl.col("group") == "all"))
            values.append(found["mase"][0] if found.height else np.nan)
            accuracy.append(found["directional_accuracy"][0] if found.height else np.nan)
        mase.bar(x + i * 0.27, values, 0.27, label=label)
        hits.bar(x + i * 0.27, accuracy, 0.27)
    mase.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="random walk")
    mase.set_ylabel("MASE (random walk = 1)")
    mase.set_title(title)
    mase.legend(fontsize=7)
    hits.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    hits.set_ylabel("directional accuracy")
    hits.set_xticks(x + 0.27, [r["horizon"] for r in trained])
    return plot(fig)


def _specialist_asset(asset: str):
    horizon_dep = dg.AllPartitionMapping()  # every horizon's training set and generalist, for each regime

    @dg.asset(
        key=SPECIALIST_KEYS[asset], group_name=f"{asset}_models", partitions_def=REGIME_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetDep(dg.AssetKey([asset, "training", "sets"]), partition_mapping=horizon_dep),
              dg.AssetDep(dg.AssetKey([asset, "models", "trees"]), partition_mapping=horizon_dep),
              regime_calendar.key],
        required_resource_keys={"lake", "tracking"}, kinds={"python", "mlflow"}, tags={"layer": "models"},
        description=f"{asset.upper()} regime specialists: per regime partition and daily horizon, LightGBM trained on "
                    "that regime's rows only, walked forward inside the regime (purged) beside the generalist on the "
                    "same folds, its stored oof and the random walk; logged to MLflow as specialist_<regime>. Used "
                    "while the regime is current only where it beat the generalist.",
    )
    def _specialists(context: dg.AssetExecutionContext, config: SpecialistConfig) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        profile = context.resources.lake.profile
        budget, plan = BUDGETS[profile], config.plan()
        horizons = config.horizons or daily_horizons(asset)
        unknown = [h for h in horizons if h not in HORIZON_PARTITIONS[asset].get_partition_keys()]
        if unknown:
            raise dg.Failure(f"horizons {unknown} are not {asset.upper()} horizons; use some of "
                             f"{', '.join(daily_horizons(asset))}")
        calendar = read_calendar(lake)["regime"].to_list()
        tags = {"profile": profile, "dagster_run": context.run.run_id}
        rows, plots, failed = [], {}, []
        for regime in context.partition_keys:
            found = []
            for horizon in horizons:
                try:
                    found.append(specialise(lake, context.resources.tracking, asset, regime, horizon, calendar, budget,
                                            plan, tags, context.log.info))
                except Exception as error:  # one horizon's failure must not lose the others' specialists
                    reason = getattr(error, "description", None) or str(error)
                    context.log.error(f"{asset} {regime} {horizon} specialist failed: {reason}")
                    failed.append(f"{regime}/{horizon}: {reason}")
            rows += found
            if any(r["status"] == "trained" for r in found):
                plots[f"comparison_{regime}"] = _comparison_plot(found, f"{asset.upper()} {regime}: specialist against "
                                                                        "the generalist")
        shown = pl.DataFrame([{k: v for k, v in r.items() if k != "board"} for r in rows], schema=VERDICT_SCHEMA)
        verdicts = shown.select("regime", "horizon", "status", "beats_generalist", "beats_random_walk",
                                *(pl.col(c).round(4) for c in ("specialist_mase", "generalist_mase", "generalist_oof_mase")),
                                "oof_rows", "test_rows", "regime_rows", "why")
        per_fold = [r["board"].filter(pl.col("scope") == "fold").select(
            pl.lit(r["regime"]).alias("regime"), pl.lit(r["horizon"]).alias("horizon"), "model",
            pl.col("group").alias("fold"), "rows", *(pl.col(m).round(4) for m in METRICS))
            for r in rows if "board" in r]
        metadata = {
            "verdicts": md_table(verdicts, 200),
            "beats_generalist": dg.MetadataValue.json({f"{r['regime']}/{r['horizon']}": r["beats_generalist"]
                                                       for r in rows}),
            "path": dg.MetadataValue.path(str(lake / asset.upper() / "models" / "specialists")),
            **plots,
        }
        if per_fold:
            metadata["folds"] = md_table(pl.concat(per_fold), 300)
        if failed:
            raise partly_failed(failed, "regime x horizon specialists", metadata)
        return dg.MaterializeResult(metadata=metadata)

    return _specialists


SPECIALIST_ASSETS = [_specialist_asset(a) for a in ("zl", "mes")]
