"""The jobs of the daily cycle and of the sensors: ingest, features, predict, validate, retrain, specialists, audit.

Each job selects its assets by key or by a rule on the asset graph, resolved when the Definitions are built, so a
job may name assets that another module defines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import AbstractSet

import dagster as dg

from cbi_assets.partitions import HORIZON_PARTITIONS
from schedules.ingest import INGEST_JOBS, ingest_market_days, ingest_mes_days

MARKETS = tuple(HORIZON_PARTITIONS)
AUDIT_KEY = dg.AssetKey(["monitoring", "audit"])


def _key(market: str, *path: str) -> dg.AssetKey:
    return dg.AssetKey([market, *path])


class DailyFeaturesSelection(dg.AssetSelection):
    """The unpartitioned assets that read nothing a horizon-partitioned asset writes (directly or further up):
    rolls, features, the feature catalogue, the regime calendar, the lake inventory. Assets in `exclude` (run on
    demand by their own job) are left out."""

    def __init__(self, exclude: Sequence[dg.AssetKey] = ()):
        self.exclude = tuple(exclude)

    def resolve_inner(self, asset_graph, allow_missing: bool) -> AbstractSet[dg.AssetKey]:
        horizon_defs = list(HORIZON_PARTITIONS.values())
        after_models: dict[dg.AssetKey, bool] = {}

        def reads_models(key: dg.AssetKey) -> bool:
            # Memoised walk up the graph: whether any ancestor is horizon-partitioned.
            if key not in after_models:
                after_models[key] = False  # guards against revisiting while the walk is under way
                after_models[key] = any(
                    asset_graph.get(parent).partitions_def in horizon_defs or reads_models(parent)
                    for parent in asset_graph.get(key).parent_keys
                )
            return after_models[key]

        return {
            key for key in asset_graph.materializable_asset_keys
            if asset_graph.get(key).partitions_def is None and key not in self.exclude and not reads_models(key)
        }

    def to_selection_str(self) -> str:
        raise NotImplementedError("daily features: a rule on the asset graph, no selection string")


daily_features = dg.define_asset_job(
    "daily_features",
    selection=DailyFeaturesSelection(exclude=[AUDIT_KEY]),
    description="The day's unpartitioned derived assets after the ingest: rolls, features, catalogue, regime calendar.",
)


def _predict_job(market: str) -> dg.UnresolvedAssetJobDefinition:
    keys = [_key(market, "regimes", "state"), _key(market, "regimes", "current"),
            _key(market, "predictions", "forecast"), _key(market, "predictions", "upload")]
    return dg.define_asset_job(
        f"{market}_predict", selection=dg.AssetSelection.assets(*keys),
        description=f"{market.upper()}: the regime state now, then the champion's forecast and its upload "
                    "(one horizon).",
    )


def _validate_job(market: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market}_validate", selection=dg.AssetSelection.assets(_key(market, "monitoring", "validation")),
        description=f"{market.upper()}: matured predictions of one horizon against what happened.",
    )


def retrain_selection(market: str) -> dg.AssetSelection:
    """From the labels through the leaderboard, ensemble and explanations, then forecast and upload: whatever lies
    between the labels and those ends (so meta-learning tasks and backtests, which no end reads, stay out)."""
    ends = [_key(market, "models", "leaderboard"), _key(market, "models", "ensemble"),
            _key(market, "models", "explanations"), _key(market, "predictions", "upload")]
    return (dg.AssetSelection.assets(_key(market, "training", "labels")).downstream()
            & dg.AssetSelection.assets(*ends).upstream())


def _retrain_job(market: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market}_retrain", selection=retrain_selection(market),
        description=f"{market.upper()}: labels, training sets, every model family, leaderboard, ensemble and "
                    "explanations of one horizon, then a fresh forecast and its upload.",
    )


def _specialists_job(market: str) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market}_specialists", selection=dg.AssetSelection.assets(_key(market, "models", "specialists")),
        description=f"{market.upper()}: the regime specialists of one regime partition.",
    )


PREDICT_JOBS = {m: _predict_job(m) for m in MARKETS}
VALIDATE_JOBS = {m: _validate_job(m) for m in MARKETS}
RETRAIN_JOBS = {m: _retrain_job(m) for m in MARKETS}
SPECIALIST_JOBS = {m: _specialists_job(m) for m in MARKETS}

audit = dg.define_asset_job("audit", selection=dg.AssetSelection.assets(AUDIT_KEY),
                            description="A post-move audit (config: reason, day).")

JOBS = [*INGEST_JOBS, daily_features, *PREDICT_JOBS.values(), *VALIDATE_JOBS.values(), *RETRAIN_JOBS.values(),
        *SPECIALIST_JOBS.values(), audit]

__all__ = ["AUDIT_KEY", "JOBS", "MARKETS", "PREDICT_JOBS", "RETRAIN_JOBS", "SPECIALIST_JOBS", "VALIDATE_JOBS",
           "DailyFeaturesSelection", "audit", "daily_features", "ingest_market_days", "ingest_mes_days",
           "retrain_selection"]
