"""Meta-learning and transfer assets: the Reptile meta-learner per market and horizon, and the
cross-asset transfer comparison of the two markets.

`{zl,mes}/models/reptile` (partitioned by horizon, like the model families) meta-trains the base
network on the regime tasks (`{market}/training/meta_tasks`), scores it leave-one-regime-out against
the same network from scratch and the random walk, stores the meta-initialisation a new regime
adapts from (`cbi_assets.meta.reptile.adapt`) and records an MLflow run of family `reptile`.

`shared/models/transfer` is one unpartitioned asset over every pair of a ZL horizon with the MES
daily horizon of the same length (1w/7d, 1m/30d, 3m/3m, 6m/6m, 12m/12m): the comparison is about
the two markets together, so it belongs to neither market's horizons, and one table shows every
pair. A config narrows it to some pairs.
"""

import hashlib
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, reads
from cbi_assets.meta import reptile, transfer
from cbi_assets.meta.budget import MetaBudget
from cbi_assets.meta.scores import SHOWN
from cbi_assets.models.inputs import SESSIONS_PER_YEAR, horizon_rows, season_rows
from cbi_assets.profiles import TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.team import on_gpu
from cbi_assets.training.sets import feature_columns, time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from resources.tracking import Tracking

FAMILY = "reptile"  # its MLflow family, beside the model families'
TASK_COLUMNS = ("forward_return", "forward_price", "label_end")
RESULTS = ("few_shot", "curves", "query_forecasts")  # the REPTILE_RESULT tables stored in its folder


# --- The Reptile meta-learner ---------------------------------------------------------------------


def _checked_tasks(lake: Lake, tasks: list[reptile.Task], features: list[str], market: Market, horizon: str) -> None:
    """Every task carries the training set's features and labels, or the run stops before training."""
    for task in tasks:
        for name, part in (("support", task.support), ("query", task.query)):
            missing = [c for c in (task.key, *TASK_COLUMNS, *features) if c not in part.columns]
            if missing:
                path = lake.path(tables.META_TASK, market=market, horizon=horizon, regime=task.regime, part=name)
                raise dg.Failure(
                    f"{path}: lacks {len(missing)} training-set columns "
                    f"(first: {missing[:3]}); rematerialize the meta_tasks for this horizon"
                )


def _adaptation_plot(curves: dict[str, pl.DataFrame], adapt_epochs: int, title: str):
    fig, ax = figure(9, 3.4)
    colours = iter(
        [
            "#4c72b0",
            "#dd8452",
            "#55a868",
            "#c44e52",
            "#8172b3",
            "#937860",
            "#da8bc3",
            "#8c8c8c",
            "#ccb974",
            "#64b5cd",
            "#1b9e77",
            "#d95f02",
        ]
    )
    for horizon, curve in curves.items():
        mean = curve.group_by("epoch").agg(pl.col("meta_init", "scratch").mean()).sort("epoch")
        colour = next(colours)
        tasks = curve["regime"].n_unique()
        ax.plot(mean["epoch"], mean["meta_init"], color=colour, label=f"{horizon} from meta-init ({tasks} held out)")
        ax.plot(mean["epoch"], mean["scratch"], color=colour, linestyle="--", label=f"{horizon} from scratch")
    ax.axhline(1.0, color="black", linewidth=0.8, label="random walk")
    ax.axvline(adapt_epochs, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("adaptation epochs on the held-out regime's support")
    ax.set_yscale("log")  # a ratio: twice as bad and half as bad sit equally far from the random walk
    ax.set_ylabel("query MSE / random walk's\n(mean over held-out regimes)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=2)
    return plot(fig)


def _data_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _task_files(lake: Lake, market: Market, horizon: str) -> list[Path]:
    """Every stored task file of a market x horizon, in path order (what the data hash covers)."""
    parts = {"market": market, "horizon": horizon}
    files = [
        lake.path(tables.META_TASK, regime=r, part=p, **parts)
        for p in ("support", "query")
        for r in lake.present(tables.META_TASK, "regime", part=p, **parts)
    ]
    return sorted(files)


def _no_tasks(lake: Lake, market: Market) -> bool:
    return not any(
        lake.present(tables.META_TASK, "regime", market=market, horizon=h.name, part="support") for h in market.horizons
    )


def meta_learn(
    context: dg.AssetExecutionContext,
    lake: Lake,
    tracking: Tracking,
    budget: MetaBudget,
    market: Market,
    horizon: Horizon,
    tags: dict[str, str],
) -> Done:
    """Meta-train and score one horizon's Reptile meta-learner, then store and track it."""
    started = time.perf_counter()
    key = time_key(horizon)
    parts = {"market": market, "horizon": horizon.name}
    frame = lake.read(tables.TRAINING_SET, **parts)
    features = feature_columns(frame)
    tasks = reptile.load_tasks(lake, market, horizon, regimes=frame["regime"].unique().to_list())
    _checked_tasks(lake, tasks, features, market, horizon.name)
    if len(tasks) < budget.min_meta_tasks:
        where = lake.path(tables.META_TASK, regime="<regime>", part="support", **parts).parent.parent
        skipped = f"{len(tasks)} regime task(s) under {where}; meta-learning needs at least {budget.min_meta_tasks}"
        context.log.warning(f"{market} {horizon.name}: skipped, {skipped}")
        return Done(value={"skipped": skipped})
    history = frame.select(key, *features)
    per_year = SESSIONS_PER_YEAR * (season_rows(horizon) if horizon.intraday else 1)
    scoring = {"horizon": horizon_rows(horizon), "periods_per_year": per_year, "cost_bps": market.cost_bps}
    context.log.info(f"{market} {horizon.name}: {len(tasks)} regime tasks ({', '.join(t.regime for t in tasks)})")
    evaluation = reptile.few_shot(tasks, history, features, budget, log=context.log.info, **scoring)
    init = reptile.meta_train(tasks, history, features, budget, log=context.log.debug)
    seconds = time.perf_counter() - started

    # Everything is computed: only now is anything stored, so a failure leaves the last results whole.
    scores = reptile.tracked_scores(evaluation.queries, **scoring)
    paths = [lake.path(tables.TRAINING_SET, **parts), *_task_files(lake, market, horizon.name)]
    with tempfile.TemporaryDirectory() as tmp:
        init.save(Path(tmp))
        params = {
            **budget.__dict__,
            "tasks": len(tasks),
            "target_scale": init.target_scale,
            "held_out_tasks": evaluation.table["regime"].n_unique(),
            "seconds": round(seconds, 2),
        }
        run = tracking.log_family(
            market,
            horizon.name,
            FAMILY,
            params=params,
            scores=scores,
            model_dir=Path(tmp),
            features=features,
            data_hash=_data_hash(paths),
            tags=tags,
        )
    table = evaluation.table.with_columns(pl.lit(horizon.name).alias("horizon"))
    results = dict(zip(RESULTS, (table, evaluation.curves, evaluation.queries), strict=True))
    with lake.replacing_folder(tables.REPTILE, **parts) as stage:
        init.save(stage)
        for name, result in results.items():
            # The results live in the meta-learner's folder, so they are replaced with it, never apart.
            tables.write_parquet(result, stage / lake.path(tables.REPTILE_RESULT, name=name, **parts).name)
    if evaluation.curves.is_empty():
        context.log.warning(
            f"{market} {horizon.name}: no regime has {budget.min_meta_tasks} earlier tasks to be "
            "held out; the meta-initialisation is stored unscored"
        )
    context.log.info(
        f"{market} {horizon.name}: meta-initialisation from {len(tasks)} tasks -> "
        f"{lake.path(tables.REPTILE, **parts)} ({seconds:.1f}s)"
    )
    summary = reptile.summary(evaluation.table).with_columns(pl.lit(horizon.name).alias("horizon"))
    return Done(value={"run": run, "table": table, "curves": evaluation.curves, "summary": summary})


def _reptile_asset(market: Market):
    @horizon_asset(
        market,
        key=tables.REPTILE.asset_key(market=market),
        group_name=f"{market.key}_models",
        deps=reads(tables.META_TASK, tables.TRAINING_SET, markets=[market]),
        **on_gpu(),
        kinds={"keras", "mlflow"},
        tags={"layer": "models", **stage("forecast")},
        description=f"{market} Reptile meta-learner per horizon: a small Keras MLP meta-trained with Reptile across "
        "the named-regime tasks so that it adapts to a new regime from its first ~30 sessions in 5 epochs; "
        "scored leave-one-regime-out against the same network from scratch, unadapted, and the random "
        "walk; the meta-initialisation for `cbi_assets.meta.reptile.adapt` and an MLflow run.",
    )
    def _reptile(
        context: dg.AssetExecutionContext, lake: Lake, tracking: Tracking, profile: TrainingProfile
    ) -> dg.MaterializeResult:
        from cbi_assets.models.device import training_device

        settings = profile.load()
        budget = settings.meta
        device = training_device()
        tags = {"profile": settings.name, "dagster_run": context.run.run_id, "device": device["device"], "kind": FAMILY}
        context.log.info(f"the Reptile meta-learner on {device}")
        if _no_tasks(lake, market):
            raise lake.missing(
                tables.META_TASK, market=market, horizon=context.partition_keys[0], regime="<regime>", part="support"
            )

        def finish(done: dict[str, Done]) -> dict:
            found = {h: d.value for h, d in done.items()}
            scored = {h: v for h, v in found.items() if "table" in v}
            metadata: dict = {"mlflow_runs": dg.MetadataValue.json({h: v["run"] for h, v in scored.items()})}
            if scored:
                shown = (
                    pl.concat([v["table"] for v in scored.values()])
                    .select("horizon", "regime", "model", "epochs", *SHOWN, "meta_tasks", "support_rows", "query_rows")
                    .with_columns(pl.col(SHOWN).round(4))
                )
                metadata["few_shot"] = md_table(shown, 400)
                metadata["few_shot_mean"] = md_table(
                    pl.concat([v["summary"] for v in scored.values()])
                    .select("horizon", "model", "tasks", *SHOWN)
                    .with_columns(pl.col(SHOWN).round(4)),
                    200,
                )
            curves = {h: v["curves"] for h, v in scored.items() if not v["curves"].is_empty()}
            if curves:
                title = f"{market}: query loss while adapting to a held-out regime"
                metadata["adaptation"] = _adaptation_plot(curves, budget.adapt_epochs, title)
            skipped = {h: v["skipped"] for h, v in found.items() if "skipped" in v}
            if skipped:
                metadata["skipped"] = dg.MetadataValue.json(skipped)
            return metadata

        return each_horizon(
            context,
            market,
            lambda h: meta_learn(context, lake, tracking, budget, market, h, tags),
            name="Reptile meta-learner",
            finish=finish,
            metadata={
                "path": dg.MetadataValue.path(lake.where(tables.REPTILE, market=market)),
                "device": dg.MetadataValue.json(device),
            },
        )

    return _reptile


# --- Cross-asset transfer -----------------------------------------------------------------------


class TransferConfig(dg.Config):
    """Which horizon pairs to compare (names such as "3m_3m"; default: every pair)."""

    pairs: list[str] | None = None


def _transfer_plot(table: pl.DataFrame):
    markets = [m.symbol for m in transfer.TRANSFER_MARKETS if m.symbol in set(table["asset"])]
    fig, axes = figure(10, 3.0 * len(markets), rows=len(markets))
    axes = np.atleast_1d(axes)
    pairs = list(dict.fromkeys(table["pair"]))
    bars = [(m, s) for s in ("all", "few") for m in ("transfer", "asset_only")]
    width = 0.8 / len(bars)
    for ax, symbol in zip(axes, markets, strict=True):
        for i, (model, scenario) in enumerate(bars):
            part = table.filter(
                (pl.col("asset") == symbol) & (pl.col("model") == model) & (pl.col("scenario") == scenario)
            )
            values = dict(part.select("pair", "mse_vs_rw").iter_rows())
            ax.bar(
                np.arange(len(pairs)) + i * width,
                [values.get(p, np.nan) for p in pairs],
                width,
                label=f"{model.replace('_', '-')}, {scenario} rows",
                hatch="//" if scenario == "few" else None,
                color="#4c72b0" if model == "transfer" else "#dd8452",
                alpha=0.6 if scenario == "few" else 1.0,
            )
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_ylabel(f"{symbol}: test MSE / RW")
        ax.legend(fontsize=7, ncols=4)
    axes[-1].set_xticks(np.arange(len(pairs)) + 0.4 - width / 2, pairs)
    axes[0].set_title("Cross-asset transfer against asset-only on the held-out tail (random walk = 1)")
    return plot(fig)


@dg.asset(
    key=tables.TRANSFER.asset_key(),
    group_name="shared_models",
    deps=reads(tables.TRAINING_SET, tables.MASTER, markets=transfer.TRANSFER_MARKETS, timeframe="1d"),
    **on_gpu(),
    kinds={"keras", "parquet"},
    tags={"layer": "models", **stage("cross_market")},
    description="Cross-asset transfer: an encoder of the shared-layer features pre-trained on ZL and MES together, "
    "with a head per asset on its own features, against the same network trained on the asset alone, on "
    "the held-out tail of the markets' common history (purged), per pair of equal-length daily horizons.",
)
def transfer_comparison(
    context: dg.AssetExecutionContext, config: TransferConfig, lake: Lake, profile: TrainingProfile
) -> dg.MaterializeResult:
    from cbi_assets.models.device import training_device

    budget = profile.load().meta
    pairs = transfer.horizon_pairs()
    if config.pairs is not None:
        unknown = sorted(set(config.pairs) - {p.name for p in pairs})
        if unknown:
            raise dg.Failure(f"transfer pairs {unknown} are unknown; choose from {[p.name for p in pairs]}")
        pairs = [p for p in pairs if p.name in config.pairs]
    catalogues = {
        m.symbol: lake.feature_catalogue(tables.MASTER, market=m, timeframe="1d") for m in transfer.TRANSFER_MARKETS
    }
    context.log.info(f"transfer on {training_device()} for pairs {[p.name for p in pairs]}")
    parts = []
    for pair in pairs:
        started = time.perf_counter()
        frames = {
            m.symbol: lake.read(tables.TRAINING_SET, market=m, horizon=pair.horizon(m))
            for m in transfer.TRANSFER_MARKETS
        }
        try:
            parts.append(
                transfer.transfer_comparison(
                    frames, catalogues, pair, budget, log=lambda m, p=pair: context.log.info(f"{p.name} {m}")
                )
            )
        except ValueError as error:
            raise dg.Failure(f"transfer {pair.name} (ZL {pair.zl}, MES {pair.mes}): {error}") from error
        context.log.info(f"transfer {pair.name}: done in {time.perf_counter() - started:.1f}s")
    table = pl.concat(parts)
    if lake.exists(tables.TRANSFER):  # pairs not run this time keep their stored rows
        kept = lake.read(tables.TRANSFER).filter(~pl.col("pair").is_in(table["pair"].unique().implode()))
        order = {p.name: i for i, p in enumerate(transfer.horizon_pairs())}
        table = pl.concat([kept, table], how="diagonal_relaxed").sort(
            pl.col("pair").replace_strict(order, default=len(order)), maintain_order=True
        )
    path = lake.write(tables.TRANSFER, table)
    shown = table.select("pair", "asset", "scenario", "model", *SHOWN, "train_rows", "test_rows", "test_start")
    return dg.MaterializeResult(
        metadata={
            "comparison": md_table(shown.with_columns(pl.col(SHOWN).round(4)), 200),
            "transfer_vs_asset_only": _transfer_plot(table),
            "shared_features": int(table["shared_features"][0]),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


META_ASSETS = [*(_reptile_asset(m) for m in MARKETS.values()), transfer_comparison]
