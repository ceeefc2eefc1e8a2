"""Regime specialist assets per market, partitioned by regime (the dynamic `regime` partitions: the
named calendar regimes and those the state detects). Each partition trains a LightGBM specialist
per daily horizon on that regime's rows, walks it forward inside the regime beside the generalist
and the random walk, and logs it to MLflow as `specialist_<regime>`.

A new regime is trained by materializing its partition, from the UI or from a sensor
(`lake.SPECIALIST.asset_key(market=...)` is each market's asset key). `choice.choose_model` reads
the stored verdicts.
"""

import dataclasses
import hashlib
import pickle

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.horizons import Done, each_partition
from cbi_assets.lake import Lake, reads
from cbi_assets.models.evaluation import METRICS
from cbi_assets.models.inputs import SESSIONS_PER_YEAR, TrainingArrays, horizon_rows
from cbi_assets.models.registry import Budget, families
from cbi_assets.partitions import REGIME_PARTITIONS
from cbi_assets.profiles import TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.specialists.choice import MODEL_FILE, MODEL_FOLDER, SCALER_FILE, VERDICT_FILE, WALKED_FILE
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
from cbi_assets.training.sets import time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from resources.tracking import Tracking

GENERALIST = "lightgbm"  # the family a specialist is a regime-only version of
VERDICT_SCHEMA = {
    "asset": pl.String,
    "horizon": pl.String,
    "regime": pl.String,
    "status": pl.String,
    "beats_generalist": pl.Boolean,
    "beats_random_walk": pl.Boolean,
    "specialist_mase": pl.Float64,
    "generalist_mase": pl.Float64,
    "generalist_oof_mase": pl.Float64,
    "oof_rows": pl.Int64,
    "test_rows": pl.Int64,
    "regime_rows": pl.Int64,
    "first": pl.String,
    "last": pl.String,
    "run_id": pl.String,
    "why": pl.String,
}


class SpecialistConfig(dg.Config):
    """Which horizons to train (default: every daily horizon of the market) and the walk inside a regime."""

    horizons: list[str] | None = None
    n_folds: int = SpecialistPlan().n_folds
    min_train_rows: int = SpecialistPlan().min_train_rows

    def plan(self) -> SpecialistPlan:
        return SpecialistPlan(n_folds=self.n_folds, min_train_rows=self.min_train_rows)


def _store(frame: pl.DataFrame, folder, name: str) -> None:
    tables.write_parquet(frame, folder / name)


def specialise(
    lake: Lake,
    tracking: Tracking,
    market: Market,
    regime: str,
    horizon: Horizon,
    calendar: list[str],
    budget: Budget,
    plan: SpecialistPlan,
    tags: dict[str, str],
    log,
) -> dict:
    """Train, walk and store one regime's specialist for one horizon; its verdict row."""
    parts = {"market": market, "horizon": horizon.name}
    frame = lake.read(tables.TRAINING_SET, **parts)
    where = lake.path(tables.TRAINING_SET, **parts)  # named in errors
    key = time_key(horizon)
    row = {
        "asset": market.symbol,
        "horizon": horizon.name,
        "regime": regime,
        "status": "skipped",
        "beats_generalist": False,
        "beats_random_walk": False,
    }
    folder = {**parts, "regime": regime}
    try:
        span = regime_span(frame, regime, calendar, "trade_date" if horizon.intraday else "date")
    except ValueError as error:
        raise dg.Failure(f"{where}: {error}") from error
    folds = (
        "no rows in the training set" if span is None else regime_folds(frame, span, key, horizon_rows(horizon), plan)
    )
    if isinstance(folds, str):
        reason = f"{regime} on {market} {horizon.name}: {folds}"
        log(f"skipped: {reason}")
        with lake.replacing_folder(tables.SPECIALIST, **folder) as stage:
            _store(pl.DataFrame([{**row, "why": reason}], schema=VERDICT_SCHEMA), stage, VERDICT_FILE)
        return {**row, "why": reason}
    if purge_violations(frame, folds, key):
        raise dg.Failure(
            f"{market} {horizon.name} {regime}: a training label reaches into its test window; "
            "the walk inside the regime is not purged"
        )
    try:
        data = TrainingArrays.of(frame, market, horizon)
    except ValueError as error:
        raise dg.Failure(f"{where}: {error}") from error
    generalist = next(f for f in families("tree") if f.name == GENERALIST)
    fit = generalist.fit
    log(f"{regime} {market} {horizon.name}: {span[1] - span[0] + 1:,} regime rows, {folds.height} folds")
    walked = walk_regime(frame, data, folds, key, fit, budget, lambda m: log(f"{regime} {horizon.name} {m}"))
    stored = {**parts, "family": GENERALIST}
    generalist_oof = lake.read(tables.OOF, **stored) if lake.exists(tables.OOF, **stored) else None
    walked = with_generalist_oof(walked, generalist_oof, key)
    board = scores(walked, horizon=horizon_rows(horizon), periods_per_year=SESSIONS_PER_YEAR, cost_bps=market.cost_bps)
    decision = verdict(board, plan)
    model, scaler = train_specialist(frame, data, span, fit, budget)

    overall = (pl.col("scope") == "overall") & (pl.col("group") == "all")
    versus = board.filter((pl.col("model") != "specialist") & overall).with_columns(
        pl.lit("versus").alias("scope"), pl.col("model").alias("group")
    )
    logged = pl.concat([board.filter((pl.col("model") == "specialist") & (pl.col("group") != "oof_rows")), versus])
    rows = frame.slice(span[0], span[1] - span[0] + 1)
    with lake.replacing_folder(tables.SPECIALIST, **folder) as stage:
        model_dir = stage / MODEL_FOLDER
        model_dir.mkdir()
        with open(model_dir / MODEL_FILE, "wb") as target:
            pickle.dump(model, target)
        _store(scaler.to_frame(), model_dir, SCALER_FILE)
        data_hash = hashlib.sha256(where.read_bytes()).hexdigest()[:16]
        run_id = tracking.log_family(
            market,
            horizon.name,
            f"specialist_{regime}",
            params={
                **generalist.params,
                **budget.__dict__,
                **getattr(model, "params", {}),
                "regime": regime,
                "regime_rows": rows.height,
                "folds": folds.height,
                "generalist": GENERALIST,
            },
            scores=logged.drop("model"),
            model_dir=model_dir,
            features=list(data.features),
            data_hash=data_hash,
            tags={
                **tags,
                "kind": "specialist",
                "regime": regime,
                "beats_generalist": str(decision["beats_generalist"]),
                "beats_random_walk": str(decision["beats_random_walk"]),
            },
        )
        row = {
            **row,
            **decision,
            "status": "trained",
            "regime_rows": rows.height,
            "first": str(rows[key].min()),
            "last": str(rows[key].max()),
            "run_id": run_id,
        }
        _store(walked, stage, WALKED_FILE)
        _store(board, stage, "metrics.parquet")
        _store(folds, stage, "folds.parquet")
        _store(pl.DataFrame([row], schema=VERDICT_SCHEMA), stage, VERDICT_FILE)
    log(f"{regime} {market} {horizon.name}: {decision['why']}")
    return {**row, "board": board}


def _comparison_plot(rows: list[dict], title: str):
    """MASE and direction per horizon: the specialist, the generalist on the same folds, the stored oof."""
    fig, (mase, hits) = figure(9, 5, rows=2)
    trained = [r for r in rows if r["status"] == "trained"]
    x = np.arange(len(trained))
    for i, (model, label) in enumerate(
        (
            ("specialist", "specialist"),
            ("generalist", "generalist, same folds"),
            ("generalist_oof", "generalist oof (rows it covers)"),
        )
    ):
        values, accuracy = [], []
        for r in trained:
            found = r["board"].filter(
                (pl.col("model") == model) & (pl.col("scope") == "overall") & (pl.col("group") == "all")
            )
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


def _verdicts(rows: list[dict]) -> dict:
    """The metadata over every regime and horizon of the run: verdicts, who beat the generalist, each fold."""
    shown = pl.DataFrame([{k: v for k, v in r.items() if k != "board"} for r in rows], schema=VERDICT_SCHEMA)
    verdicts = shown.select(
        "regime",
        "horizon",
        "status",
        "beats_generalist",
        "beats_random_walk",
        *(pl.col(c).round(4) for c in ("specialist_mase", "generalist_mase", "generalist_oof_mase")),
        "oof_rows",
        "test_rows",
        "regime_rows",
        "why",
    )
    per_fold = [
        r["board"]
        .filter(pl.col("scope") == "fold")
        .select(
            pl.lit(r["regime"]).alias("regime"),
            pl.lit(r["horizon"]).alias("horizon"),
            "model",
            pl.col("group").alias("fold"),
            "rows",
            *(pl.col(m).round(4) for m in METRICS),
        )
        for r in rows
        if "board" in r
    ]
    metadata = {
        "verdicts": md_table(verdicts, 200),
        "beats_generalist": dg.MetadataValue.json(
            {f"{r['regime']}/{r['horizon']}": r["beats_generalist"] for r in rows}
        ),
    }
    if per_fold:
        metadata["folds"] = md_table(pl.concat(per_fold), 300)
    return metadata


def _specialist_asset(market: Market):
    every_horizon = dg.AllPartitionMapping()  # every horizon's training set and generalist, for each regime

    @dg.asset(
        key=tables.SPECIALIST.asset_key(market=market),
        group_name=f"{market.key}_models",
        partitions_def=REGIME_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[
            *(
                dg.AssetDep(key, partition_mapping=every_horizon)
                for key in reads(tables.TRAINING_SET, tables.OOF, markets=[market], family=GENERALIST)
            ),
            *reads(tables.REGIME_CALENDAR),
        ],
        kinds={"python", "mlflow"},
        tags={"layer": "models", **stage("specialists")},
        description=f"{market} regime specialists: per regime partition and daily horizon, LightGBM trained on "
        "that regime's rows only, walked forward inside the regime (purged) beside the generalist on the "
        "same folds, its stored oof and the random walk; logged to MLflow as specialist_<regime>. Used "
        "while the regime is current only where it beat the generalist.",
    )
    def _specialists(
        context: dg.AssetExecutionContext,
        config: SpecialistConfig,
        lake: Lake,
        tracking: Tracking,
        profile: TrainingProfile,
    ) -> dg.MaterializeResult:
        settings = profile.load()
        budget = settings.training
        plan = dataclasses.replace(config.plan(), significance=settings.significance)
        daily = [h.name for h in market.daily_horizons]
        names = config.horizons or daily
        unknown = [h for h in names if h not in {h.name for h in market.horizons}]
        if unknown:
            raise dg.Failure(f"horizons {unknown} are not {market} horizons; use some of {', '.join(daily)}")
        calendar = lake.read(tables.REGIME_CALENDAR)["regime"].to_list()
        tags = {"profile": settings.name, "dagster_run": context.run.run_id}

        def work(regime: str) -> Done:
            found, failed = [], []
            for name in names:
                try:
                    found.append(
                        specialise(
                            lake,
                            tracking,
                            market,
                            regime,
                            market.horizon(name),
                            calendar,
                            budget,
                            plan,
                            tags,
                            context.log.info,
                        )
                    )
                except Exception as error:  # one horizon's failure must not lose the others' specialists
                    reason = getattr(error, "description", None) or str(error)
                    context.log.error(f"{market} {regime} {name} specialist failed: {reason}")
                    failed.append(f"{name}: {reason}")
            metadata = {}
            if any(r["status"] == "trained" for r in found):
                title = f"{market} {regime}: specialist against the generalist"
                metadata["comparison"] = _comparison_plot(found, title)
            return Done(metadata=metadata, failed=failed, value=found)

        def finish(done: dict[str, Done]) -> dict:
            return _verdicts([r for d in done.values() for r in d.value])

        return each_partition(
            context,
            work,
            name=f"{market} specialists",
            dimension="regime",
            finish=finish,
            metadata={"path": dg.MetadataValue.path(lake.where(tables.SPECIALIST, market=market))},
        )

    return _specialists


SPECIALIST_ASSETS = [_specialist_asset(m) for m in MARKETS.values()]
