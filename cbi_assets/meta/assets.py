"""Meta-learning and transfer assets: a Reptile meta-learner per market and horizon, and the
cross-asset transfer comparison of the two markets.

`{zl,mes}/models/meta_learner` (partitioned by horizon, like the model families) meta-trains the
base network on the regime tasks, scores it leave-one-regime-out against the same network from
scratch and the random walk, stores the meta-initialisation a new regime adapts from
(`cbi_assets.meta.reptile.adapt`) and records an MLflow run of family `meta_reptile`.

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

from cbi_assets.catalogue import market
from cbi_assets.features.assets import master_path
from cbi_assets.features.tables import catalogue_path
from cbi_assets.meta import reptile, transfer
from cbi_assets.meta.budget import BUDGETS, MetaBudget
from cbi_assets.meta.scores import SHOWN
from cbi_assets.models.inputs import SESSIONS_PER_YEAR, horizon_rows, season_rows
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS
from cbi_assets.training.assets import horizon_dir, meta_dir
from cbi_assets.training.sets import feature_columns, horizon_of, time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table

FAMILY = "meta_reptile"
TASK_COLUMNS = ("forward_return", "forward_price", "label_end")


def _read(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise dg.Failure(f"{path}: {what} not built yet; materialize it for this horizon first")
    return pl.read_parquet(path)


def _budget(context) -> MetaBudget:
    profile = context.resources.lake.profile
    if profile not in BUDGETS:
        raise dg.Failure(f"lake profile {profile!r} has no meta-learning budget; use one of {sorted(BUDGETS)}")
    return BUDGETS[profile]


# --- Meta-learner -------------------------------------------------------------------------------


def _checked_tasks(tasks: list[reptile.Task], features: list[str], folder: Path) -> None:
    """Every task carries the training set's features and labels, or the run stops before training."""
    for task in tasks:
        for name, part in (("support", task.support), ("query", task.query)):
            missing = [c for c in (task.key, *TASK_COLUMNS, *features) if c not in part.columns]
            if missing:
                path = folder / task.regime / f"{name}.parquet"
                raise dg.Failure(f"{path}: lacks {len(missing)} training-set columns "
                                 f"(first: {missing[:3]}); rematerialize the meta_tasks for this horizon")


def _adaptation_plot(curves: dict[str, pl.DataFrame], adapt_epochs: int, title: str):
    fig, ax = figure(9, 3.4)
    colours = iter(["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                    "#ccb974", "#64b5cd", "#1b9e77", "#d95f02"])
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


def _meta_asset(asset: str):
    @dg.asset(
        key=[asset, "models", "meta_learner"], group_name=f"{asset}_models", partitions_def=HORIZON_PARTITIONS[asset],
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[dg.AssetKey([asset, "training", "meta_tasks"]), dg.AssetKey([asset, "training", "sets"])],
        required_resource_keys={"lake", "tracking"}, pool="gpu", kinds={"keras", "mlflow"}, tags={"layer": "models"},
        description=f"{asset.upper()} meta-learner per horizon: a small Keras MLP meta-trained with Reptile across the "
                    "named-regime tasks so that it adapts to a new regime from its first ~30 sessions in 5 epochs; "
                    "scored leave-one-regime-out against the same network from scratch, unadapted, and the random "
                    "walk; the meta-initialisation for `cbi_assets.meta.reptile.adapt` and an MLflow run.",
    )
    def _meta(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from cbi_assets.models.device import training_device

        lake = Path(context.resources.lake.root)
        budget = _budget(context)
        tracking = context.resources.tracking
        device = training_device()
        tags = {"profile": context.resources.lake.profile, "dagster_run": context.run.run_id,
                "device": device["device"], "kind": "meta"}
        context.log.info(f"meta-learning on {device}")
        if not meta_dir(lake, asset, "").is_dir():
            raise dg.Failure(f"{meta_dir(lake, asset, '')}: no meta-learning tasks for {asset.upper()}; materialize "
                             f"{asset}/training/meta_tasks first")
        tables, summaries, curves, skipped, runs = [], [], {}, {}, {}
        for partition in context.partition_keys:
            started = time.perf_counter()
            horizon = horizon_of(asset, partition)
            key = time_key(horizon)
            training = horizon_dir(lake, asset, partition) / "all.parquet"
            frame = _read(training, f"{asset}/training/sets")
            features = feature_columns(frame)
            folder = meta_dir(lake, asset, partition)
            tasks = reptile.load_tasks(folder, key, regimes=frame["regime"].unique().to_list())
            _checked_tasks(tasks, features, folder)
            if len(tasks) < budget.min_meta_tasks:
                skipped[partition] = (f"{len(tasks)} regime task(s) under {folder}; meta-learning needs at least "
                                      f"{budget.min_meta_tasks}")
                context.log.warning(f"{asset} {partition}: skipped, {skipped[partition]}")
                continue
            history = frame.select(key, *features)
            per_year = SESSIONS_PER_YEAR * (season_rows(horizon) if horizon.intraday else 1)
            scoring = {"horizon": horizon_rows(horizon), "periods_per_year": per_year,
                       "cost_bps": market(asset).cost_bps}
            context.log.info(f"{asset} {partition}: {len(tasks)} regime tasks ({', '.join(t.regime for t in tasks)})")
            evaluation = reptile.few_shot(tasks, history, features, budget, log=context.log.info, **scoring)
            init = reptile.meta_train(tasks, history, features, budget, log=context.log.debug)
            seconds = time.perf_counter() - started

            # Everything is computed: only now is anything stored, so a failure leaves the last results whole.
            scores = reptile.tracked_scores(evaluation.queries, **scoring)
            paths = [training, *sorted(folder.glob("*/*.parquet"))]
            with tempfile.TemporaryDirectory() as tmp:
                init.save(Path(tmp))
                params = {**budget.__dict__, "tasks": len(tasks), "target_scale": init.target_scale,
                          "held_out_tasks": evaluation.table["regime"].n_unique(), "seconds": round(seconds, 2)}
                runs[partition] = tracking.log_family(asset, partition, FAMILY, params=params, scores=scores,
                                                      model_dir=Path(tmp), features=features,
                                                      data_hash=_data_hash(paths), tags=tags)
            out = reptile.meta_folder(lake, asset, partition)
            init.save(out)
            table = evaluation.table.with_columns(pl.lit(partition).alias("horizon"))
            write_frame(table, out / "few_shot.parquet")
            write_frame(evaluation.curves, out / "curves.parquet")
            write_frame(evaluation.queries, out / "query_forecasts.parquet")
            tables.append(table)
            summaries.append(reptile.summary(evaluation.table).with_columns(pl.lit(partition).alias("horizon")))
            if not evaluation.curves.is_empty():
                curves[partition] = evaluation.curves
            else:
                context.log.warning(f"{asset} {partition}: no regime has {budget.min_meta_tasks} earlier tasks to be "
                                    "held out; the meta-initialisation is stored unscored")
            context.log.info(f"{asset} {partition}: meta-initialisation from {len(tasks)} tasks -> {out} "
                             f"({seconds:.1f}s)")
        metadata = {"path": dg.MetadataValue.path(str(reptile.meta_folder(lake, asset, "").parent)),
                    "device": dg.MetadataValue.json(device), "mlflow_runs": dg.MetadataValue.json(runs)}
        if tables:
            shown = pl.concat(tables).select("horizon", "regime", "model", "epochs", *SHOWN, "meta_tasks",
                                             "support_rows", "query_rows").with_columns(pl.col(SHOWN).round(4))
            metadata["few_shot"] = md_table(shown, 400)
        if summaries:
            metadata["few_shot_mean"] = md_table(pl.concat(summaries).select("horizon", "model", "tasks", *SHOWN)
                                                 .with_columns(pl.col(SHOWN).round(4)), 200)
        if curves:
            title = f"{asset.upper()}: query loss while adapting to a held-out regime"
            metadata["adaptation"] = _adaptation_plot(curves, budget.adapt_epochs, title)
        if skipped:
            metadata["skipped"] = dg.MetadataValue.json(skipped)
        return dg.MaterializeResult(metadata=metadata)

    return _meta


# --- Cross-asset transfer -----------------------------------------------------------------------


def transfer_path(lake: Path) -> Path:
    return lake / "shared" / "models" / "transfer" / "comparison.parquet"


class TransferConfig(dg.Config):
    """Which horizon pairs to compare (names such as "3m_3m"; default: every pair)."""

    pairs: list[str] | None = None


def _transfer_plot(table: pl.DataFrame):
    assets = [a for a in transfer.TRANSFER_ASSETS if a in set(table["asset"])]
    fig, axes = figure(10, 3.0 * len(assets), rows=len(assets))
    axes = np.atleast_1d(axes)
    pairs = list(dict.fromkeys(table["pair"]))
    bars = [(m, s) for s in ("all", "few") for m in ("transfer", "asset_only")]
    width = 0.8 / len(bars)
    for ax, asset in zip(axes, assets, strict=True):
        for i, (model, scenario) in enumerate(bars):
            part = table.filter((pl.col("asset") == asset) & (pl.col("model") == model)
                                & (pl.col("scenario") == scenario))
            values = dict(part.select("pair", "mse_vs_rw").iter_rows())
            ax.bar(np.arange(len(pairs)) + i * width, [values.get(p, np.nan) for p in pairs], width,
                   label=f"{model.replace('_', '-')}, {scenario} rows", hatch="//" if scenario == "few" else None,
                   color="#4c72b0" if model == "transfer" else "#dd8452", alpha=0.6 if scenario == "few" else 1.0)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_ylabel(f"{asset}: test MSE / RW")
        ax.legend(fontsize=7, ncols=4)
    axes[-1].set_xticks(np.arange(len(pairs)) + 0.4 - width / 2, pairs)
    axes[0].set_title("Cross-asset transfer against asset-only on the held-out tail (random walk = 1)")
    return plot(fig)


@dg.asset(
    key=["shared", "models", "transfer"], group_name="shared_models",
    deps=[dg.AssetKey([a, "training", "sets"]) for a in ("zl", "mes")]
    + [dg.AssetKey([a, "features", "master_1d"]) for a in ("zl", "mes")],
    required_resource_keys={"lake"}, pool="gpu", kinds={"keras", "parquet"}, tags={"layer": "models"},
    description="Cross-asset transfer: an encoder of the shared-layer features pre-trained on ZL and MES together, "
                "with a head per asset on its own features, against the same network trained on the asset alone, on "
                "the held-out tail of the markets' common history (purged), per pair of equal-length daily horizons.",
)
def transfer_comparison(context: dg.AssetExecutionContext, config: TransferConfig) -> dg.MaterializeResult:
    from cbi_assets.models.device import training_device

    lake = Path(context.resources.lake.root)
    budget = _budget(context)
    pairs = transfer.horizon_pairs()
    if config.pairs is not None:
        unknown = sorted(set(config.pairs) - {p.name for p in pairs})
        if unknown:
            raise dg.Failure(f"transfer pairs {unknown} are unknown; choose from {[p.name for p in pairs]}")
        pairs = [p for p in pairs if p.name in config.pairs]
    catalogues = {}
    for asset in transfer.TRANSFER_ASSETS:
        path = catalogue_path(master_path(lake, asset.lower(), "1d"))
        catalogues[asset] = _read(path, f"{asset.lower()}/features/master_1d (its feature catalogue)")
    context.log.info(f"transfer on {training_device()} for pairs {[p.name for p in pairs]}")
    parts = []
    for pair in pairs:
        started = time.perf_counter()
        frames = {a: _read(horizon_dir(lake, a, pair.horizon(a)) / "all.parquet",
                           f"{a.lower()}/training/sets {pair.horizon(a)}") for a in transfer.TRANSFER_ASSETS}
        try:
            parts.append(transfer.transfer_comparison(frames, catalogues, pair, budget,
                                                      log=lambda m, p=pair: context.log.info(f"{p.name} {m}")))
        except ValueError as error:
            raise dg.Failure(f"transfer {pair.name} (ZL {pair.zl}, MES {pair.mes}): {error}") from error
        context.log.info(f"transfer {pair.name}: done in {time.perf_counter() - started:.1f}s")
    table = pl.concat(parts)
    path = transfer_path(lake)
    if path.is_file():  # pairs not run this time keep their stored rows
        kept = pl.read_parquet(path).filter(~pl.col("pair").is_in(table["pair"].unique().implode()))
        order = {p.name: i for i, p in enumerate(transfer.horizon_pairs())}
        table = pl.concat([kept, table], how="diagonal_relaxed").sort(
            pl.col("pair").replace_strict(order, default=len(order)), maintain_order=True)
    write_frame(table, path)
    shown = table.select("pair", "asset", "scenario", "model", *SHOWN, "train_rows", "test_rows", "test_start")
    return dg.MaterializeResult(metadata={
        "comparison": md_table(shown.with_columns(pl.col(SHOWN).round(4)), 200),
        "transfer_vs_asset_only": _transfer_plot(table),
        "shared_features": int(table["shared_features"][0]),
        "path": dg.MetadataValue.path(str(path)),
    })


META_ASSETS = [*(_meta_asset(a) for a in ("zl", "mes")), transfer_comparison]
