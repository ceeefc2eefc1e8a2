"""Training assets per asset, partitioned by the asset's horizons: labels, training sets, purged
walk-forward folds with their scalers, and meta-learning tasks.

Each asset is one Dagster asset per market (`zl/training/...`, `mes/training/...`) whose
partitions are that market's horizons, so the UI shows exactly the valid asset x horizon
pairs. A run over several horizons is one process (single-run backfill).
"""


from pathlib import Path

import dagster as dg
import polars as pl

from cbi_assets.catalogue import MARKETS, market
from cbi_assets.features.assets import bars_path, continuous_bars, master_path
from cbi_assets.features.tables import read_table
from cbi_assets.parquet import write_frame
from cbi_assets.partitions import HORIZON_PARTITIONS
from cbi_assets.regimes.assets import read_calendar, regime_calendar
from cbi_assets.training import sets
from cbi_assets.training.folds import (
    FoldPlan,
    default_plan,
    fold_findings,
    walk_forward,
)
from cbi_assets.training.sets import MetaPlan, horizon_of
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table


def horizon_dir(lake: Path, asset: str, horizon: str) -> Path:
    return lake / asset.upper() / "training" / "by_horizon" / horizon


def meta_dir(lake: Path, asset: str, horizon: str) -> Path:
    return lake / "meta_learning" / asset.upper() / horizon


def _training_asset(asset: str, name: str, description: str, deps: list, checks: dict[str, str] | None = None, **kwargs):
    key = dg.AssetKey([asset, "training", name])
    return dg.asset(
        key=key, description=description, deps=deps, group_name=f"{asset}_training",
        partitions_def=HORIZON_PARTITIONS[asset], backfill_policy=dg.BackfillPolicy.single_run(),
        required_resource_keys={"lake"}, kinds={"polars", "parquet"}, tags={"layer": "training"},
        check_specs=[dg.AssetCheckSpec(n, asset=key, description=t) for n, t in (checks or {}).items()],
        **kwargs,
    )


def _read(path: Path, what: str) -> pl.DataFrame:
    if not path.is_file():
        raise dg.Failure(f"{path}: {what} not built yet; materialize it for this horizon first")
    return pl.read_parquet(path)


def _checks(found: dict[str, list[tuple[str, bool, dict]]]) -> list[dg.AssetCheckResult]:
    """One result per check over the run's horizons: it passes when every horizon passes."""
    return [
        dg.AssetCheckResult(check_name=name, passed=all(ok for _, ok, _ in rows), severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"failed_horizons": [h for h, ok, _ in rows if not ok],
                                      "by_horizon": dg.MetadataValue.json({h: m for h, _, m in rows})})
        for name, rows in found.items()
    ]


# --- Labels -------------------------------------------------------------------------------------

LABEL_CHECKS = {
    "spans_forward": "Every label ends after its row and no later than the horizon allows.",
    "tail_unlabelled": "Rows whose horizon reaches past the data carry no label.",
}


def _label_plot(returns: dict[str, pl.Series], title: str):
    fig, ax = figure(8, 3)
    for horizon, values in returns.items():
        ax.hist(values.drop_nulls().to_numpy(), bins=60, histtype="step", label=horizon)
    ax.set_title(title)
    ax.set_xlabel("forward log return")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return plot(fig)


def _labels_asset(asset: str):
    deps = [dg.AssetKey([asset, "features", "continuous_1d"])]
    if asset == "mes":
        deps += [dg.AssetKey(["mes", "features", "bars"]),
                 *(dg.AssetKey(["mes", "features", f"master_{h.name}"]) for h in MARKETS["MES"].horizons if h.intraday)]

    @_training_asset(asset, "labels", f"{asset.upper()} labels per horizon: forward log return and price, direction"
                     + (", and triple-barrier labels with first-touch time for intraday horizons" if asset == "mes" else ""),
                     deps, LABEL_CHECKS)
    def _labels(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        daily = continuous_bars(lake, (asset.upper(),))[asset]
        minutes = None
        summary, returns, barriers = [], {}, []
        found = {name: [] for name in LABEL_CHECKS}
        for partition in context.partition_keys:
            horizon = horizon_of(asset, partition)
            if horizon.intraday:
                minutes = minutes if minutes is not None else pl.read_parquet(bars_path(lake, "1min"))
                at = pl.read_parquet(master_path(lake, asset, sets.feature_timeframe(horizon)), columns=["ts"])["ts"]
                labels = sets.labels_for(horizon, minutes=minutes, at=at)
                last_known = minutes["ts"].max()
                tail = labels.filter(pl.col("ts") + pl.duration(minutes=horizon.bars) > last_known)
                too_long = labels.filter(pl.col("label_end") > pl.col("ts") + pl.duration(minutes=horizon.bars))
            else:
                labels = sets.labels_for(horizon, daily=daily)
                tail = labels.tail(horizon.bars)
                too_long = labels.with_row_index("row").join(
                    labels.select("date").with_row_index("end_row"), left_on="label_end", right_on="date", how="left"
                ).filter(pl.col("end_row") - pl.col("row") > horizon.bars)
            key = sets.time_key(horizon)
            backwards = labels.filter(pl.col("label_end") <= pl.col(key))
            path = horizon_dir(lake, asset, partition) / "labels.parquet"
            write_frame(labels, path)
            labelled = labels["forward_return"].drop_nulls()
            context.log.info(f"{asset} {partition}: {labelled.len():,} labelled of {labels.height:,} rows -> {path}")
            summary.append({"horizon": partition, "rows": labels.height, "labelled": labelled.len(),
                            "up_share": round(float((labels["direction"] == 1).mean() or 0.0), 3)})
            returns[partition] = labels["forward_return"]
            if "barrier_label" in labels.columns:
                counts = labels.group_by("barrier_label").len().drop_nulls()
                barriers.append({"horizon": partition, **{f"barrier_{k}": v for k, v in counts.iter_rows()}})
            found["spans_forward"].append((partition, backwards.is_empty() and too_long.is_empty(),
                                           {"backwards": backwards.height, "beyond_horizon": too_long.height}))
            found["tail_unlabelled"].append((partition, tail["forward_return"].null_count() == tail.height,
                                             {"tail_rows": tail.height,
                                              "labelled_in_tail": tail.height - tail["forward_return"].null_count()}))
        metadata = {"horizons": md_table(pl.DataFrame(summary)),
                    "forward_returns": _label_plot(returns, f"{asset.upper()} forward log returns by horizon"),
                    "path": dg.MetadataValue.path(str(horizon_dir(lake, asset, "").parent))}
        if barriers:
            metadata["triple_barrier"] = md_table(pl.DataFrame(barriers, infer_schema_length=None).fill_null(0))
        return dg.MaterializeResult(metadata=metadata, check_results=_checks(found))

    return _labels


# --- Training sets ------------------------------------------------------------------------------


def _sets_asset(asset: str):
    deps = [dg.AssetKey([asset, "training", "labels"]), regime_calendar.key,
            *{dg.AssetKey([asset, "features", f"master_{sets.feature_timeframe(h)}"]) for h in market(asset).horizons}]

    @_training_asset(asset, "sets", f"{asset.upper()} training set per horizon: master features, labels, named regime and "
                     "sample weight (regime weight x label uniqueness); all regimes and one file per regime.",
                     sorted(deps, key=lambda k: k.to_user_string()))
    def _sets(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        calendar = read_calendar(lake)
        summary, per_regime = [], []
        for partition in context.partition_keys:
            horizon = horizon_of(asset, partition)
            table = read_table(master_path(lake, asset, sets.feature_timeframe(horizon)))
            labels = _read(horizon_dir(lake, asset, partition) / "labels.parquet", f"{asset}/training/labels")
            frame = sets.training_set(table.frame, table.features, labels, horizon, calendar)
            folder = horizon_dir(lake, asset, partition)
            write_frame(frame, folder / "all.parquet")
            for old in folder.glob("regime=*.parquet"):  # a regime renamed in the calendar leaves no stale subset
                old.unlink()
            for (regime,), part in frame.partition_by("regime", as_dict=True).items():
                write_frame(part, folder / f"regime={regime}.parquet")
                per_regime.append({"horizon": partition, "regime": regime, "rows": part.height,
                                   "weight_share": part["weight"].sum() / frame["weight"].sum()})
            key = sets.time_key(horizon)
            summary.append({"horizon": partition, "rows": frame.height, "features": len(table.features),
                            "first": str(frame[key].min()), "last": str(frame[key].max())})
            context.log.info(f"{asset} {partition}: {frame.height:,} rows x {len(table.features)} features -> {folder}")
        return dg.MaterializeResult(metadata={
            "horizons": md_table(pl.DataFrame(summary)),
            "rows_by_regime": md_table(pl.DataFrame(per_regime).with_columns(pl.col("weight_share").round(3)), 200),
            "path": dg.MetadataValue.path(str(horizon_dir(lake, asset, "").parent)),
        })

    return _sets


# --- Walk-forward folds -------------------------------------------------------------------------

FOLD_CHECKS = {
    "purged": "No training label span intersects its fold's test label span.",
    "embargoed": "Each test window starts at least `embargo` rows after its training labels end.",
    "tiled": "The test windows cover the test period in order, without gaps or overlap.",
}


class FoldConfig(dg.Config):
    """The walk-forward plan; unset values come from the profile's plan (full: 60 folds for daily ZL)."""

    n_folds: int | None = None
    scheme: str | None = None  # expanding or sliding
    embargo: int | None = None  # rows
    test_fraction: float | None = None
    train_rows: int | None = None  # sliding window length

    def plan(self, profile: str, asset: str, horizon) -> FoldPlan:
        base = default_plan(profile, asset.upper(), horizon)
        given = {k: v for k, v in self.model_dump().items() if v is not None}
        if given.get("scheme") not in (None, "expanding", "sliding"):
            raise dg.Failure(f"scheme {given['scheme']!r}: use expanding or sliding")
        return FoldPlan(**{**base.__dict__, **given})


def _fold_plot(folds: pl.DataFrame, title: str):
    fig, ax = figure(10, min(8.0, max(2.0, 0.12 * folds.height + 1)))
    for row in folds.iter_rows(named=True):
        ax.plot([row["train_start"], row["train_end"]], [row["fold"]] * 2, color="#4c72b0", linewidth=3)
        ax.plot([row["test_start"], row["test_end"]], [row["fold"]] * 2, color="#dd8452", linewidth=3)
    ax.invert_yaxis()
    ax.set_ylabel("fold")
    ax.set_title(f"{title}: training (blue) and test (orange) spans")
    return plot(fig)


def _folds_asset(asset: str):
    @_training_asset(asset, "folds", f"{asset.upper()} purged walk-forward folds per horizon (train and test spans), and a "
                     "robust scaler per fold fitted on its training rows only.",
                     [dg.AssetKey([asset, "training", "sets"])], FOLD_CHECKS)
    def _folds(context: dg.AssetExecutionContext, config: FoldConfig) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        summary, timelines = [], {}
        found = {name: [] for name in FOLD_CHECKS}
        for partition in context.partition_keys:
            horizon = horizon_of(asset, partition)
            folder = horizon_dir(lake, asset, partition)
            frame = _read(folder / "all.parquet", f"{asset}/training/sets")
            key = sets.time_key(horizon)
            plan = config.plan(context.resources.lake.profile, asset, horizon)
            try:
                folds = walk_forward(frame[key], frame["label_end"], plan)
            except ValueError as error:
                raise dg.Failure(f"{asset} {partition}: {error}") from error
            scalers = sets.fold_scalers(frame, folds, sets.feature_columns(frame))
            write_frame(folds, folder / "folds.parquet")
            write_frame(scalers, folder / "scalers.parquet")
            findings = fold_findings(frame, folds, key, plan.embargo)
            context.log.info(f"{asset} {partition}: {folds.height} {plan.scheme} folds, embargo {plan.embargo} rows")
            summary.append({"horizon": partition, "folds": folds.height, "scheme": plan.scheme, "embargo_rows": plan.embargo,
                            "test_fraction": plan.test_fraction, "first_test": str(folds["test_start"][0]),
                            "min_train_rows": folds["train_rows"].min(), "test_rows": folds["test_rows"].sum()})
            timelines[f"timeline_{partition}"] = _fold_plot(folds, f"{asset.upper()} {partition}")
            found["purged"].append((partition, findings["purged"]["overlapping_train_rows"] == 0, findings["purged"]))
            found["embargoed"].append((partition, findings["embargoed"]["folds_inside_embargo"] == 0, findings["embargoed"]))
            found["tiled"].append((partition, findings["tiled"]["gaps_or_overlaps"] == 0 and findings["tiled"]["test_reaches_end"],
                                   findings["tiled"]))
        return dg.MaterializeResult(metadata={"horizons": md_table(pl.DataFrame(summary)), **timelines},
                                    check_results=_checks(found))

    return _folds


# --- Meta-learning tasks ------------------------------------------------------------------------


class MetaConfig(dg.Config):
    support_days: int = MetaPlan().support_days
    query_days: int = MetaPlan().query_days


def _meta_asset(asset: str):
    @_training_asset(asset, "meta_tasks", f"{asset.upper()} meta-learning tasks per horizon: for each named regime a "
                     "support set (its first sessions) and a query set after the support labels end.",
                     [dg.AssetKey([asset, "training", "sets"])])
    def _meta(context: dg.AssetExecutionContext, config: MetaConfig) -> dg.MaterializeResult:
        lake = Path(context.resources.lake.root)
        plan = MetaPlan(support_days=config.support_days, query_days=config.query_days)
        rows = []
        for partition in context.partition_keys:
            horizon = horizon_of(asset, partition)
            frame = _read(horizon_dir(lake, asset, partition) / "all.parquet", f"{asset}/training/sets")
            out = meta_dir(lake, asset, partition)
            for (regime,), part in sorted(frame.partition_by("regime", as_dict=True).items()):
                task = sets.meta_task(part, horizon, plan)
                if isinstance(task, str):
                    rows.append((partition, regime, 0, 0, task))
                    continue
                support, query = task
                write_frame(support, out / regime / "support.parquet")
                write_frame(query, out / regime / "query.parquet")
                rows.append((partition, regime, support.height, query.height, ""))
        summary = pl.DataFrame(rows, schema=["horizon", "regime", "support_rows", "query_rows", "skipped_because"], orient="row")
        return dg.MaterializeResult(metadata={
            "tasks": int((summary["support_rows"] > 0).sum()), "summary": md_table(summary, 300),
            "path": dg.MetadataValue.path(str(meta_dir(lake, asset, "").parent)),
        })

    return _meta


TRAINING_ASSETS = [factory(a) for a in ("zl", "mes") for factory in (_labels_asset, _sets_asset, _folds_asset, _meta_asset)]
