"""Training assets per market, partitioned by the market's horizons: labels, training sets, purged
walk-forward folds with their scalers, and meta-learning tasks.

Each asset is one Dagster asset per market (`zl/training/...`, `mes/training/...`) whose
partitions are that market's horizons, so the UI shows exactly the valid market x horizon
pairs. A run over several horizons is one process (single-run backfill).
"""

import functools

import dagster as dg
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.features.inputs import continuous_bars
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import Lake, reads
from cbi_assets.profiles import Profile, TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.training import sets
from cbi_assets.training.folds import FoldPlan, fold_findings, walk_forward
from cbi_assets.training.sets import MetaPlan
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table


def _training_asset(
    market: Market, table: tables.Table, description: str, deps: list, checks: dict[str, str] | None = None
):
    key = table.asset_key(market=market)
    return horizon_asset(
        market,
        key=key,
        description=description,
        deps=deps,
        group_name=f"{market.key}_training",
        kinds={"polars", "parquet"},
        tags={"layer": "training", **stage("train")},
        check_specs=[dg.AssetCheckSpec(n, asset=key, description=t) for n, t in (checks or {}).items()],
    )


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


def _labels_asset(market: Market):
    intraday = sorted({sets.feature_timeframe(h) for h in market.horizons if h.intraday})
    deps = reads(tables.CONTINUOUS, markets=[market])
    if intraday:
        deps += reads(tables.BARS, tables.MASTER, markets=[market], timeframe=intraday)

    @_training_asset(
        market,
        tables.LABELS,
        f"{market} labels per horizon: forward log return and price, direction"
        + (", and triple-barrier labels with first-touch time for intraday horizons" if intraday else ""),
        deps,
        LABEL_CHECKS,
    )
    def _labels(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        daily = continuous_bars(lake, (market,))[market.key]

        @functools.cache
        def minute_bars() -> pl.DataFrame:  # read once, by the first intraday horizon
            return lake.read(tables.BARS, timeframe="1min")

        def work(horizon: Horizon) -> Done:
            if horizon.intraday:
                bars = minute_bars()
                at = lake.read(tables.MASTER, columns=["ts"], market=market, timeframe=sets.feature_timeframe(horizon))[
                    "ts"
                ]
                labels = sets.labels_for(horizon, minutes=bars, at=at)
                tail = labels.filter(pl.col("ts") + pl.duration(minutes=horizon.bars) > bars["ts"].max())
                too_long = labels.filter(pl.col("label_end") > pl.col("ts") + pl.duration(minutes=horizon.bars))
            else:
                labels = sets.labels_for(horizon, daily=daily)
                tail = labels.tail(horizon.bars)
                too_long = (
                    labels.with_row_index("row")
                    .join(
                        labels.select("date").with_row_index("end_row"),
                        left_on="label_end",
                        right_on="date",
                        how="left",
                    )
                    .filter(pl.col("end_row") - pl.col("row") > horizon.bars)
                )
            backwards = labels.filter(pl.col("label_end") <= pl.col(sets.time_key(horizon)))
            path = lake.write(tables.LABELS, labels, market=market, horizon=horizon.name)
            labelled = labels["forward_return"].drop_nulls()
            context.log.info(
                f"{market.key} {horizon.name}: {labelled.len():,} labelled of {labels.height:,} rows -> {path}"
            )
            barriers = None
            if "barrier_label" in labels.columns:
                counts = labels.group_by("barrier_label").len().drop_nulls()
                barriers = {f"barrier_{k}": v for k, v in counts.iter_rows()}
            return Done(
                rows=[
                    {
                        "rows": labels.height,
                        "labelled": labelled.len(),
                        "up_share": round(float((labels["direction"] == 1).mean() or 0.0), 3),
                    }
                ],
                checks={
                    "spans_forward": (
                        backwards.is_empty() and too_long.is_empty(),
                        {"backwards": backwards.height, "beyond_horizon": too_long.height},
                    ),
                    "tail_unlabelled": (
                        tail["forward_return"].null_count() == tail.height,
                        {
                            "tail_rows": tail.height,
                            "labelled_in_tail": tail.height - tail["forward_return"].null_count(),
                        },
                    ),
                },
                value=(labels["forward_return"], barriers),
            )

        def finish(done: dict[str, Done]) -> dict:
            out = {
                "forward_returns": _label_plot(
                    {key: d.value[0] for key, d in done.items()}, f"{market} forward log returns by horizon"
                )
            }
            barriers = [{"horizon": key, **d.value[1]} for key, d in done.items() if d.value[1] is not None]
            if barriers:
                out["triple_barrier"] = md_table(pl.DataFrame(barriers, infer_schema_length=None).fill_null(0))
            return out

        return each_horizon(
            context,
            market,
            work,
            name="labels",
            finish=finish,
            metadata={"path": dg.MetadataValue.path(lake.where(tables.LABELS, market=market))},
        )

    return _labels


# --- Training sets ------------------------------------------------------------------------------


def _sets_asset(market: Market):
    timeframes = sorted({sets.feature_timeframe(h) for h in market.horizons})

    @_training_asset(
        market,
        tables.TRAINING_SET,
        f"{market} training set per horizon: master features, labels, named "
        "regime and sample weight (regime weight x label uniqueness); all regimes and one file per "
        "regime.",
        reads(tables.LABELS, tables.REGIME_CALENDAR, tables.MASTER, markets=[market], timeframe=timeframes),
    )
    def _sets(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
        calendar = lake.read(tables.REGIME_CALENDAR)

        def work(horizon: Horizon) -> Done:
            parts = {"market": market, "horizon": horizon.name}
            table = lake.read_features(tables.MASTER, market=market, timeframe=sets.feature_timeframe(horizon))
            labels = lake.read(tables.LABELS, **parts)
            frame = sets.training_set(table.frame, table.features, labels, horizon, calendar)
            path = lake.write(tables.TRAINING_SET, frame, **parts)
            by_regime = frame.partition_by("regime", as_dict=True)
            for (regime,), part in by_regime.items():
                lake.write(tables.REGIME_SET, part, regime=regime, **parts)
            # A regime renamed in the calendar leaves no stale subset.
            for stale in set(lake.present(tables.REGIME_SET, "regime", **parts)) - {r for (r,) in by_regime}:
                lake.delete(tables.REGIME_SET, regime=stale, **parts)
            key = sets.time_key(horizon)
            context.log.info(
                f"{market.key} {horizon.name}: {frame.height:,} rows x {len(table.features)} features -> {path.parent}"
            )
            return Done(
                rows=[
                    {
                        "rows": frame.height,
                        "features": len(table.features),
                        "first": str(frame[key].min()),
                        "last": str(frame[key].max()),
                    }
                ],
                value=[
                    {
                        "horizon": horizon.name,
                        "regime": regime,
                        "rows": part.height,
                        "weight_share": part["weight"].sum() / frame["weight"].sum(),
                    }
                    for (regime,), part in by_regime.items()
                ],
            )

        def finish(done: dict[str, Done]) -> dict:
            per_regime = pl.DataFrame([row for d in done.values() for row in d.value])
            return {"rows_by_regime": md_table(per_regime.with_columns(pl.col("weight_share").round(3)), 200)}

        return each_horizon(
            context,
            market,
            work,
            name="training sets",
            finish=finish,
            metadata={"path": dg.MetadataValue.path(lake.where(tables.TRAINING_SET, market=market))},
        )

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

    def plan(self, profile: Profile, market: Market, horizon: Horizon) -> FoldPlan:
        base = profile.fold_plan(market, horizon)
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


def _folds_asset(market: Market):
    @_training_asset(
        market,
        tables.FOLDS,
        f"{market} purged walk-forward folds per horizon (train and test spans), "
        "and a robust scaler per fold fitted on its training rows only.",
        reads(tables.TRAINING_SET, markets=[market]),
        FOLD_CHECKS,
    )
    def _folds(
        context: dg.AssetExecutionContext, config: FoldConfig, lake: Lake, profile: TrainingProfile
    ) -> dg.MaterializeResult:
        chosen = profile.load()

        def work(horizon: Horizon) -> Done:
            parts = {"market": market, "horizon": horizon.name}
            frame = lake.read(tables.TRAINING_SET, **parts)
            key = sets.time_key(horizon)
            plan = config.plan(chosen, market, horizon)
            try:
                folds = walk_forward(frame[key], frame["label_end"], plan)
            except ValueError as error:
                raise dg.Failure(f"{market.key} {horizon.name}: {error}") from error
            scalers = sets.fold_scalers(frame, folds, sets.feature_columns(frame))
            lake.write(tables.FOLDS, folds, **parts)
            lake.write(tables.SCALERS, scalers, **parts)
            findings = fold_findings(frame, folds, key, plan.embargo)
            context.log.info(
                f"{market.key} {horizon.name}: {folds.height} {plan.scheme} folds, embargo {plan.embargo} rows"
            )
            purged, embargoed, tiled = findings["purged"], findings["embargoed"], findings["tiled"]
            return Done(
                rows=[
                    {
                        "folds": folds.height,
                        "scheme": plan.scheme,
                        "embargo_rows": plan.embargo,
                        "test_fraction": plan.test_fraction,
                        "first_test": str(folds["test_start"][0]),
                        "min_train_rows": folds["train_rows"].min(),
                        "test_rows": folds["test_rows"].sum(),
                    }
                ],
                metadata={"timeline": _fold_plot(folds, f"{market} {horizon.name}")},
                checks={
                    "purged": (purged["overlapping_train_rows"] == 0, purged),
                    "embargoed": (embargoed["folds_inside_embargo"] == 0, embargoed),
                    "tiled": (tiled["gaps_or_overlaps"] == 0 and tiled["test_reaches_end"], tiled),
                },
            )

        return each_horizon(context, market, work, name="folds")

    return _folds


# --- Meta-learning tasks ------------------------------------------------------------------------


class MetaConfig(dg.Config):
    support_days: int = MetaPlan().support_days
    query_days: int = MetaPlan().query_days


def _meta_asset(market: Market):
    @_training_asset(
        market,
        tables.META_TASK,
        f"{market} meta-learning tasks per horizon: for each named regime a "
        "support set (its first sessions) and a query set after the support labels end.",
        reads(tables.TRAINING_SET, markets=[market]),
    )
    def _meta(context: dg.AssetExecutionContext, config: MetaConfig, lake: Lake) -> dg.MaterializeResult:
        plan = MetaPlan(support_days=config.support_days, query_days=config.query_days)

        def work(horizon: Horizon) -> Done:
            parts = {"market": market, "horizon": horizon.name}
            frame = lake.read(tables.TRAINING_SET, **parts)
            rows = []
            for (regime,), part in sorted(frame.partition_by("regime", as_dict=True).items()):
                task = sets.meta_task(part, horizon, plan)
                if isinstance(task, str):
                    rows.append({"regime": regime, "support_rows": 0, "query_rows": 0, "skipped_because": task})
                    continue
                support, query = task
                lake.write(tables.META_TASK, support, regime=regime, part="support", **parts)
                lake.write(tables.META_TASK, query, regime=regime, part="query", **parts)
                rows.append(
                    {
                        "regime": regime,
                        "support_rows": support.height,
                        "query_rows": query.height,
                        "skipped_because": "",
                    }
                )
            return Done(rows=rows)

        def finish(done: dict[str, Done]) -> dict:
            return {"tasks": sum(row["support_rows"] > 0 for d in done.values() for row in d.rows)}

        return each_horizon(
            context,
            market,
            work,
            name="meta-learning tasks",
            summary="summary",
            finish=finish,
            metadata={"path": dg.MetadataValue.path(lake.where(tables.META_TASK, market=market))},
        )

    return _meta


TRAINING_ASSETS = [
    factory(m) for m in MARKETS.values() for factory in (_labels_asset, _sets_asset, _folds_asset, _meta_asset)
]
