"""Model assets per market, partitioned by horizon: one asset per family kind (references,
statistical, trees, neural) that walks every registered family of that kind over the purged
folds, and a leaderboard that ranks them against the random walk and crowns the champion.

The families come from the registry, so a new family appears in its kind's asset with no change
here. Neural training runs in the concurrency pool `gpu`: one GPU job at a time.
"""

import hashlib
import pickle
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from matplotlib.ticker import MaxNLocator

from cbi_assets.catalogue import market
from cbi_assets.models.evaluation import METRICS, overall, scored
from cbi_assets.models.leaderboard import leaderboard, registry_role
from cbi_assets.models.inputs import (
    SESSIONS_PER_YEAR,
    TrainingArrays,
    fold_inputs,
    horizon_rows,
    season_rows,
)
from cbi_assets.models.registry import BUDGETS, KINDS, Family, families
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS
from cbi_assets.training.assets import horizon_dir
from cbi_assets.training.scaling import RobustScaler
from cbi_assets.training.sets import horizon_of, time_key
from cbi_assets.ui import figure, partly_failed, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import replace_horizons

KIND_ASSETS = {"reference": "references", "statistical": "statistical", "tree": "trees", "neural": "neural"}


def models_dir(lake: Path, asset: str, horizon: str) -> Path:
    return lake / asset.upper() / "models" / "by_horizon" / horizon


def _read(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise dg.Failure(f"{path}: {what} not built yet; materialize it for this horizon first")
    return pl.read_parquet(path)


def _save(model, folder: Path) -> None:
    """The fitted model in the folder MLflow logs: Keras writes its own format, the rest pickle."""
    if hasattr(model, "save"):
        model.save(folder / "model.keras")
    else:
        with open(folder / "model.pkl", "wb") as out:
            pickle.dump(model, out)


def walk_family(family: Family, frame: pl.DataFrame, folds: pl.DataFrame, scalers: pl.DataFrame, asset: str,
                horizon_name: str, budget, log, data: TrainingArrays | None = None) -> tuple[pl.DataFrame, object, dict]:
    """Train and test one family on every fold: its out-of-fold forecasts, its last model and timings.

    `data` is the frame as arrays; pass it when walking several families over one frame.
    """
    horizon = horizon_of(asset, horizon_name)
    if data is None:
        data = TrainingArrays.of(frame, asset, horizon)
    key = time_key(horizon)
    parts, fit_s, predict_s, predicted = [], 0.0, 0.0, 0
    model = None
    for fold in folds.iter_rows(named=True):
        scaler = RobustScaler.from_frame(scalers.filter(pl.col("fold") == fold["fold"]).drop("fold"))
        train, test = fold_inputs(data, fold, scaler, family.shape, budget)
        started = time.perf_counter()
        model = family.fit(train, budget)
        fitted = time.perf_counter()
        forecast = model.predict(test)
        fit_s, predict_s = fit_s + fitted - started, predict_s + time.perf_counter() - fitted
        predicted += test.rows
        if forecast.mean.shape != (test.rows,) or not np.isfinite(forecast.mean).all():
            raise ValueError(f"{family.name} fold {fold['fold']}: the forecast has shape {forecast.mean.shape} or "
                             f"non-finite values; expected {test.rows} finite returns")
        rows = frame.slice(fold["test_lo"], test.rows).select(key, "regime", "forward_price", "forward_return")

        def column(values):
            return pl.Series(values, dtype=pl.Float64) if values is not None else pl.lit(None, pl.Float64)

        parts.append(rows.with_columns(
            pl.lit(fold["fold"]).alias("fold"),
            (pl.col("forward_price") * (-pl.col("forward_return")).exp()).alias("price"),
            pl.col("forward_return").alias("actual"),
            column(forecast.mean).alias("forecast"),
            column(forecast.lower).alias("lower"),
            column(forecast.upper).alias("upper"),
            column(forecast.sigma).alias("sigma"),
        ).drop("forward_return"))
        log(f"{family.name} {horizon_name} fold {fold['fold'] + 1}/{folds.height}: trained on {train.rows:,} rows "
            f"in {fitted - started:.2f}s")
    timings = {"train_s_per_fold": fit_s / max(folds.height, 1), "predict_rows_per_s": predicted / max(predict_s, 1e-9)}
    return pl.concat(parts), model, timings


def _error_plot(scores: dict[str, pl.DataFrame], title: str):
    fig, ax = figure(9, 3.2)
    for name, frame in scores.items():
        folds = frame.filter(pl.col("scope") == "fold")
        ax.plot(folds["group"].cast(pl.Int64).to_list(), folds["mase"].to_list(), marker="o", label=name)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="random walk")
    ax.set_xlabel("fold (test window, in time order)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("MASE")
    ax.set_title(f"{title}: walk-forward error per fold against the random walk")
    ax.legend(fontsize=7, ncols=4)
    return plot(fig)


def _kind_asset(asset: str, kind: str):
    name = KIND_ASSETS[kind]
    key = dg.AssetKey([asset, "models", name])
    neural = kind == "neural"

    @dg.asset(
        key=key, group_name=f"{asset}_models", partitions_def=HORIZON_PARTITIONS[asset],
        backfill_policy=dg.BackfillPolicy.single_run(), deps=[dg.AssetKey([asset, "training", "folds"])],
        required_resource_keys={"lake", "tracking"}, pool="gpu" if neural else None,
        kinds={"keras" if neural else "python", "mlflow"}, tags={"layer": "models"},
        description=f"{asset.upper()} {name} models per horizon: every registered {kind} family trained and tested "
                    "on the purged walk-forward folds; out-of-fold forecasts, metrics per fold, regime and overall, "
                    "and an MLflow run per family.",
    )
    def _models(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        budget = BUDGETS[context.resources.lake.profile]
        tracking = context.resources.tracking
        members = families(kind)
        tags = {"profile": context.resources.lake.profile, "dagster_run": context.run.run_id}
        if neural:
            from cbi_assets.models.device import training_device

            device = training_device()
            tags["device"] = device["device"]
            context.log.info(f"neural training on {device}")
        summary, plots, failed = [], {}, []
        for partition in context.partition_keys:
            horizon = horizon_of(asset, partition)
            folder = horizon_dir(lake, asset, partition)
            frame = _read(folder / "all.parquet", f"{asset}/training/sets")
            folds = _read(folder / "folds.parquet", f"{asset}/training/folds")
            scalers = _read(folder / "scalers.parquet", f"{asset}/training/folds")
            data_hash = hashlib.sha256((folder / "all.parquet").read_bytes()).hexdigest()[:16]
            try:
                data = TrainingArrays.of(frame, asset, horizon)  # once per horizon, shared by every family
            except ValueError as error:
                raise dg.Failure(f"{folder / 'all.parquet'}: {error}") from error
            out = models_dir(lake, asset, partition)
            per_year = SESSIONS_PER_YEAR * (season_rows(horizon) if horizon.intraday else 1)
            scores_by_family = {}
            for family in members:
                try:
                    oof, model, timings = walk_family(family, frame, folds, scalers, asset, partition, budget,
                                                      context.log.debug, data)
                except Exception as error:  # one family's failure must not lose the others' results
                    context.log.error(f"{asset} {partition} {family.name} failed: {error!r}")
                    failed.append(f"{partition}/{family.name}: {error}")
                    continue
                scores = scored(oof, horizon=horizon_rows(horizon), periods_per_year=per_year,
                                cost_bps=market(asset).cost_bps)
                with tempfile.TemporaryDirectory() as tmp:
                    _save(model, Path(tmp))
                    params = {**family.params, **budget.__dict__, **getattr(model, "params", {}),
                              "folds": folds.height, "kind": kind, **timings}
                    run_id = tracking.log_family(asset, partition, family.name, params=params, scores=scores,
                                                 model_dir=Path(tmp), features=list(data.features), data_hash=data_hash,
                                                 tags={**tags, "kind": kind})
                write_frame(oof, out / "oof" / f"{family.name}.parquet")
                write_frame(scores.with_columns(pl.lit(family.name).alias("family"), pl.lit(kind).alias("kind"),
                                                pl.lit(run_id).alias("run_id")), out / "metrics" / f"{family.name}.parquet")
                scores_by_family[family.name] = scores
                best = overall(scores)
                summary.append({"horizon": partition, "family": family.name,
                                **{m: round(best[m], 4) for m in METRICS},
                                "train_s_per_fold": round(timings["train_s_per_fold"], 3)})
                context.log.info(f"{asset} {partition} {family.name}: MASE {best['mase']:.3f}, direction "
                                 f"{best['directional_accuracy']:.3f} over {folds.height} folds "
                                 f"({timings['train_s_per_fold']:.2f}s per fold)")
            if scores_by_family:
                plots[f"errors_{partition}"] = _error_plot(scores_by_family, f"{asset.upper()} {partition} {name}")
        metadata = {"families": dg.MetadataValue.json([f.name for f in members]), **plots,
                    "path": dg.MetadataValue.path(str(models_dir(lake, asset, "").parent))}
        if summary:
            metadata["metrics"] = md_table(pl.DataFrame(summary), 200)
        if neural:
            metadata["device"] = dg.MetadataValue.json(device)
        if failed:
            raise partly_failed(failed, "family x horizon runs", metadata)
        return dg.MaterializeResult(metadata=metadata)

    return _models


# --- Leaderboard --------------------------------------------------------------------------------


def _leaderboard_plot(boards: dict[str, pl.DataFrame], title: str):
    fig, (mase, hits) = figure(10, 6, rows=2)
    width = 0.8 / max(len(boards), 1)
    names = sorted({f for b in boards.values() for f in b["family"]})
    for i, (horizon, board) in enumerate(boards.items()):
        values = dict(board.select("family", "mase").iter_rows())
        accuracy = dict(board.select("family", "directional_accuracy").iter_rows())
        x = np.arange(len(names)) + i * width
        mase.bar(x, [values.get(n, np.nan) for n in names], width, label=horizon)
        hits.bar(x, [accuracy.get(n, np.nan) for n in names], width)
    mase.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    mase.set_ylabel("MASE (random walk = 1)")
    mase.set_title(title)
    mase.legend(fontsize=7, ncols=6)
    hits.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    hits.set_ylabel("directional accuracy")
    hits.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right", fontsize=8)
    return plot(fig)


def _leaderboard_asset(asset: str):
    @dg.asset(
        key=[asset, "models", "leaderboard"], group_name=f"{asset}_models", partitions_def=HORIZON_PARTITIONS[asset],
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey([asset, "models", name]) for name in KIND_ASSETS.values()],
        required_resource_keys={"lake", "warehouse", "tracking"}, kinds={"duckdb", "mlflow"}, tags={"layer": "models"},
        description=f"{asset.upper()} leaderboard per horizon: every family's walk-forward metrics beside the random "
                    "walk's (warehouse models.leaderboard). The best MASE is registered in MLflow: as `champion` the "
                    "first time or when it is the champion's family, else as `challenger` (a shadow model).",
    )
    def _leaderboard(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        registered = {f.name for f in families()}
        boards, champions = {}, []
        for partition in context.partition_keys:
            folder = models_dir(lake, asset, partition) / "metrics"
            files = [folder / f"{name}.parquet" for name in sorted(registered) if (folder / f"{name}.parquet").is_file()]
            if not files:
                raise dg.Failure(f"{folder}: no model metrics for {asset} {partition}; materialize the model assets first")
            try:
                board = leaderboard(pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed"))
            except ValueError as error:
                raise dg.Failure(f"{asset} {partition}: {error}") from error
            best = board.row(0, named=True)
            tracking = context.resources.tracking
            role = registry_role(tracking.champion(asset, partition), best["family"])
            version = tracking.register(asset, partition, best["run_id"], best["family"], role)
            published = tracking.champion(asset, partition)
            challenger = tracking.challenger(asset, partition)
            champions.append({"horizon": partition, "best": best["family"], "mase": round(best["mase"], 4),
                              "directional_accuracy": round(best["directional_accuracy"], 4),
                              "registered_as": f"{role} (version {version})", "champion": published["family"],
                              "challenger": challenger["family"] if challenger else ""})
            board = board.with_columns((pl.col("family") == published["family"]).alias("champion"),
                                       ((pl.col("family") == challenger["family"]) if challenger else pl.lit(False))
                                       .alias("challenger"))
            context.log.info(f"{asset} {partition}: best {best['family']} (MASE {best['mase']:.3f}), registered as "
                             f"{role} version {version}; the champion is {published['family']}")
            boards[partition] = board
        rows = pl.concat([b.with_columns(pl.lit(asset.upper()).alias("asset"), pl.lit(h).alias("horizon"))
                          for h, b in boards.items()], how="diagonal_relaxed")
        with context.resources.warehouse.get_connection() as conn:
            replace_horizons(conn, "models.leaderboard", rows)
        shown = rows.select("horizon", "rank", "family", "kind", *METRICS).with_columns(pl.col(METRICS).round(4))
        return dg.MaterializeResult(metadata={
            "champions": md_table(pl.DataFrame(champions), 50),
            "leaderboard": md_table(shown, 400),
            "mase_and_direction": _leaderboard_plot(boards, f"{asset.upper()} walk-forward leaderboard"),
            "table": "models.leaderboard",
        })

    return _leaderboard


MODEL_ASSETS = [
    *(_kind_asset(a, kind) for a in ("zl", "mes") for kind in KINDS),
    *(_leaderboard_asset(a) for a in ("zl", "mes")),
]
