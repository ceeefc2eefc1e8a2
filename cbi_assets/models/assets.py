"""Model assets per market, partitioned by horizon: one asset per family kind (references,
statistical, trees, neural) that walks every registered family of that kind over the purged
folds, and a leaderboard that ranks them against the random walk and crowns the champion.

The families come from the registry, so a new family appears in its kind's asset with no change
here. Neural training runs in the concurrency pool and Celery queue `gpu` (cbi_assets/team.py): one GPU job
at a time.
"""

import hashlib
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from cbi_assets import lake as tables
from cbi_assets.catalogue import MARKETS, Horizon, Market
from cbi_assets.horizons import Done, each_horizon, horizon_asset
from cbi_assets.lake import KIND_ASSETS, Lake, reads
from cbi_assets.models import serving
from cbi_assets.models.evaluation import METRICS, overall, scored
from cbi_assets.models.inputs import TrainingArrays, horizon_rows, rows_per_year
from cbi_assets.models.leaderboard import RANDOM_WALK, crowned, leaderboard, registry_role
from cbi_assets.models.registry import KINDS, families
from cbi_assets.models.walk import walk_family
from cbi_assets.predictions.origin import last_fold
from cbi_assets.profiles import TrainingProfile
from cbi_assets.selections import stage
from cbi_assets.team import on_gpu
from cbi_assets.training.sets import time_key
from cbi_assets.ui import figure, plot
from cbi_assets.ui import table as md_table
from cbi_assets.warehouse import Warehouse
from resources.tracking import Tracking


def _error_plot(scores: dict[str, pl.DataFrame], title: str):
    fig, ax = figure(9, 3.2)
    for name, frame in scores.items():
        folds = frame.filter(pl.col("scope") == "fold")
        ax.plot(folds["group"].cast(pl.Int64).to_list(), folds["mase"].to_list(), marker="o", label=name)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="random walk")
    ax.set_xlabel("fold (test window, in time order)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("MASE")
    ax.set_title(f"{title}: walk-forward error per fold against the random walk")
    ax.legend(fontsize=7, ncols=4)
    return plot(fig)


def _models_folder(lake: Lake, market: Market) -> str:
    return lake.where(tables.OOF, market=market)


def _kind_asset(market: Market, kind: str):
    name = KIND_ASSETS[kind]
    neural = kind == "neural"

    @horizon_asset(
        market,
        key=[market.key, "models", name],
        group_name=f"{market.key}_models",
        deps=reads(tables.TRAINING_SET, tables.FOLDS, tables.SCALERS, tables.REGIME_CALENDAR, markets=[market]),
        # The networks are the longest step of a market's run: in the gpu pool they go before the Reptile model,
        # which nothing after it waits for (dagster/priority orders a process per step, dagster-celery/priority
        # the Celery queues, whose default is 5).
        **(on_gpu({"dagster/priority": "1", "dagster-celery/priority": "6"}) if neural else {}),
        kinds={"keras" if neural else "python", "mlflow"},
        tags={"layer": "models", **stage("train")},
        description=f"{market} {name} models per horizon: every registered {kind} family trained and tested "
        "on the purged walk-forward folds (each fold's rows weighted by the regimes declared by the end of its "
        "training); out-of-fold forecasts, metrics per fold, regime and overall, and an MLflow run per family.",
    )
    def _models(
        context: dg.AssetExecutionContext, lake: Lake, tracking: Tracking, profile: TrainingProfile
    ) -> dg.MaterializeResult:
        loaded = profile.load()
        budget = loaded.training
        members = families(kind)
        tags = {"profile": loaded.name, "dagster_run": context.run.run_id, "kind": kind}
        metadata = {
            "families": dg.MetadataValue.json([f.name for f in members]),
            "path": dg.MetadataValue.path(_models_folder(lake, market)),
        }
        if neural:
            from cbi_assets.models.device import training_device

            device = training_device()
            tags["device"] = device["device"]
            metadata["device"] = dg.MetadataValue.json(device)
            context.log.info(f"neural training on {device}")

        calendar = lake.read(tables.REGIME_CALENDAR)

        def work(horizon: Horizon) -> Done:
            parts = {"market": market, "horizon": horizon.name}
            frame = lake.read(tables.TRAINING_SET, **parts)
            folds = lake.read(tables.FOLDS, **parts)
            scalers = lake.read(tables.SCALERS, **parts)
            data_hash = hashlib.sha256(lake.path(tables.TRAINING_SET, **parts).read_bytes()).hexdigest()[:16]
            try:
                data = TrainingArrays.of(frame, market, horizon, calendar)  # once per horizon, shared by every family
                last = last_fold(frame[time_key(horizon)], folds, scalers, budget)  # the fold whose models are kept
            except ValueError as error:
                raise dg.Failure(f"{tables.TRAINING_SET.name} {market} {horizon.name}: {error}") from error
            done, scores_by_family = Done(rows=[]), {}
            for family in members:
                try:
                    oof, model, timings = walk_family(
                        family, frame, folds, scalers, market, horizon, budget, context.log.debug, data
                    )
                except Exception as error:  # one family's failure must not lose the others' results
                    context.log.error(f"{market} {horizon.name} {family.name} failed: {error!r}")
                    done.failed.append(f"{family.name}: {error}")
                    continue
                scores = scored(
                    oof,
                    horizon=horizon_rows(horizon),
                    periods_per_year=rows_per_year(horizon),
                    cost_bps=market.cost_bps,
                )
                with tempfile.TemporaryDirectory() as tmp:
                    # A pyfunc model (with the library's own flavour inside) that serves the forecast the daily
                    # forecast computes: the last fold's scaler and training span travel with it.
                    folder = serving.save(Path(tmp) / "model", model, family, market, horizon, last, budget)
                    params = {
                        **family.params,
                        **budget.__dict__,
                        **getattr(model, "params", {}),
                        "folds": folds.height,
                        "kind": kind,
                        **timings,
                    }
                    run_id = tracking.log_family(
                        market,
                        horizon.name,
                        family.name,
                        params=params,
                        scores=scores,
                        model_dir=folder,
                        features=list(data.features),
                        data_hash=data_hash,
                        tags=tags,
                    )
                lake.write(tables.OOF, oof, **parts, family=family.name)
                lake.write(
                    tables.FAMILY_METRICS,
                    scores.with_columns(
                        pl.lit(family.name).alias("family"), pl.lit(kind).alias("kind"), pl.lit(run_id).alias("run_id")
                    ),
                    **parts,
                    family=family.name,
                )
                scores_by_family[family.name] = scores
                best = overall(scores)
                done.rows.append(
                    {
                        "family": family.name,
                        **{m: round(best[m], 4) for m in METRICS},
                        "train_s_per_fold": round(timings["train_s_per_fold"], 3),
                    }
                )
                context.log.info(
                    f"{market} {horizon.name} {family.name}: MASE {best['mase']:.3f}, direction "
                    f"{best['directional_accuracy']:.3f} over {folds.height} folds "
                    f"({timings['train_s_per_fold']:.2f}s per fold)"
                )
            if scores_by_family:
                done.metadata["errors"] = _error_plot(scores_by_family, f"{market} {horizon.name} {name}")
            return done

        return each_horizon(context, market, work, name=f"{name} models", summary="metrics", metadata=metadata)

    return _models


# --- Leaderboard --------------------------------------------------------------------------------


def _leaderboard_plot(boards: dict[str, pl.DataFrame], title: str):
    """MASE and direction per family and horizon. A solid, outlined bar beat the random walk by the
    significance rule; a hatched, pale one merely looks better (MASE below 1, no significant edge)."""
    from matplotlib.patches import Patch

    fig, (mase, hits) = figure(10, 6, rows=2)
    width = 0.8 / max(len(boards), 1)
    names = sorted({f for b in boards.values() for f in b["family"]})
    for i, (horizon, board) in enumerate(boards.items()):
        values = dict(board.select("family", "mase").iter_rows())
        accuracy = dict(board.select("family", "directional_accuracy").iter_rows())
        earned = dict(board.select("family", "beats_random_walk").iter_rows())
        x = np.arange(len(names)) + i * width
        bars = mase.bar(x, [values.get(n, np.nan) for n in names], width, label=horizon)
        for name, bar in zip(names, bars, strict=True):
            if earned.get(name):
                bar.set_edgecolor("black")
                bar.set_linewidth(1.2)
            elif (values.get(name) or np.inf) < 1:
                bar.set_hatch("///")
                bar.set_alpha(0.45)
        hits.bar(x, [accuracy.get(n, np.nan) for n in names], width)
    mase.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
    mase.set_ylabel("MASE (random walk = 1)")
    mase.set_title(f"{title}\noutlined: beats the random walk (Diebold-Mariano); hatched: merely looks better")
    # Plain patches in the legend: a horizon's first bar may be hatched or outlined.
    mase.legend(handles=[Patch(color=f"C{i}", label=h) for i, h in enumerate(boards)], fontsize=7, ncols=6)
    hits.axhline(0.5, color="black", linestyle="--", linewidth=0.8)
    hits.set_ylabel("directional accuracy")
    hits.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right", fontsize=8)
    return plot(fig)


def _leaderboard_asset(market: Market):
    registered = [f.name for f in families()]

    @horizon_asset(
        market,
        key=[market.key, "models", "leaderboard"],
        group_name=f"{market.key}_models",
        deps=reads(tables.FAMILY_METRICS, markets=[market], family=registered),
        kinds={"duckdb", "mlflow"},
        tags={"layer": "models", **stage("train")},
        description=f"{market} leaderboard per horizon: every family's walk-forward metrics and its "
        "Diebold-Mariano test against the random walk (warehouse models.leaderboard). The best MASE among the "
        "families that beat the random walk significantly (all folds and the recent third) is crowned, else "
        "the random walk; the crowned family is registered in MLflow as `champion` the first time, when it is "
        "the champion's family or the random walk, else as `challenger` (a shadow model).",
    )
    def _leaderboard(
        context: dg.AssetExecutionContext,
        lake: Lake,
        warehouse: Warehouse,
        tracking: Tracking,
        profile: TrainingProfile,
    ) -> dg.MaterializeResult:
        level = profile.load().significance

        def work(horizon: Horizon) -> Done:
            parts = {"market": market, "horizon": horizon.name}
            stored = [
                lake.read(tables.FAMILY_METRICS, **parts, family=name)
                for name in sorted(registered)
                if lake.exists(tables.FAMILY_METRICS, **parts, family=name)
            ]
            if not stored:
                raise dg.Failure(f"no model metrics for {market} {horizon.name}; materialize the model assets first")
            try:
                board = leaderboard(pl.concat(stored, how="diagonal_relaxed"), level)
            except ValueError as error:
                raise dg.Failure(f"{market} {horizon.name}: {error}") from error
            best = crowned(board)
            role = registry_role(tracking.champion(market, horizon.name), best["family"])
            version = tracking.register(market, horizon.name, best["run_id"], best["family"], role)
            published = tracking.champion(market, horizon.name)
            challenger = tracking.challenger(market, horizon.name)
            board = board.with_columns(
                (pl.col("family") == published["family"]).alias("champion"),
                ((pl.col("family") == challenger["family"]) if challenger else pl.lit(False)).alias("challenger"),
            )
            lowest = board.row(0, named=True)
            edge = (
                f"{best['family']} beats the random walk (DM {best['dm_statistic']:+.2f}, p {best['dm_p_value']:.4f})"
                if best["family"] != RANDOM_WALK
                else f"no family beats the random walk at {level:g} (lowest MASE: {lowest['family']} "
                f"{lowest['mase']:.3f}, p {_p(lowest)})"
            )
            context.log.info(
                f"{market} {horizon.name}: {edge}; {best['family']} registered as {role} version {version}; "
                f"the champion is {published['family']}"
            )
            return Done(
                rows=[
                    {
                        "crowned": best["family"],
                        "edge": edge,
                        "lowest_mase": lowest["family"],
                        "mase": round(best["mase"], 4),
                        "directional_accuracy": round(best["directional_accuracy"], 4),
                        "registered_as": f"{role} (version {version})",
                        "champion": published["family"],
                        "challenger": challenger["family"] if challenger else "",
                    }
                ],
                value=board,
            )

        def finish(done: dict[str, Done]) -> dict:
            boards = {h: d.value for h, d in done.items()}
            rows = pl.concat(
                [
                    b.with_columns(pl.lit(market.symbol).alias("asset"), pl.lit(h).alias("horizon"))
                    for h, b in boards.items()
                ],
                how="diagonal_relaxed",
            )
            warehouse.replace_horizons("models.leaderboard", rows)
            shown = rows.select(
                "horizon",
                "rank",
                "family",
                "kind",
                *METRICS,
                "dm_statistic",
                "dm_p_value",
                "recent_dm_p_value",
                "beats_random_walk",
                "crowned",
            ).with_columns(pl.col(*METRICS, "dm_statistic", "dm_p_value", "recent_dm_p_value").round(4))
            return {
                "leaderboard": md_table(shown, 400),
                "mase_and_direction": _leaderboard_plot(boards, f"{market} walk-forward leaderboard"),
            }

        return each_horizon(
            context,
            market,
            work,
            name="leaderboard",
            summary="champions",
            finish=finish,
            metadata={"table": "models.leaderboard"},
        )

    return _leaderboard


def _p(row: dict) -> str:
    return "n/a" if row["dm_p_value"] is None or not np.isfinite(row["dm_p_value"]) else f"{row['dm_p_value']:.3f}"


MODEL_ASSETS = [
    *(_kind_asset(m, kind) for m in MARKETS.values() for kind in KINDS),
    *(_leaderboard_asset(m) for m in MARKETS.values()),
]
