"""The jobs a person or a sensor starts: validate, retrain, train a regime's specialists, predict, audit a day.

Each selects by stage and key (cbi_assets/selections.py), the same selections `cbi plan` uses.
"""

from __future__ import annotations

import dagster as dg

from cbi_assets.catalogue import MARKETS, Market
from cbi_assets.selections import of_stage


def _validate_job(market: Market) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market.key}_validate",
        selection=f'key:"{market.key}/monitoring/validation"',
        description=f"{market}: matured predictions of one horizon against what happened.",
    )


def retrain_selection(market: Market) -> str:
    """Labels through the leaderboard, then the ensemble, the explanations and a fresh forecast and upload: what a
    changed market needs before it forecasts again (meta-learning tasks, Reptile and backtests wait for the plan)."""
    return f'({of_stage("train", market=market)} and not key:"{market.key}/training/meta_tasks") or ' + " or ".join(
        f'key:"{market.key}/{name}"'
        for name in ("models/ensemble", "models/explanations", "predictions/forecast", "predictions/upload")
    )


def _retrain_job(market: Market) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market.key}_retrain",
        selection=retrain_selection(market),
        description=f"{market}: labels, training sets, every model family, leaderboard, ensemble and explanations of "
        "one horizon, then a fresh forecast and its upload.",
    )


def _predict_job(market: Market) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market.key}_predict",
        selection=" or ".join(f'key:"{market.key}/predictions/{name}"' for name in ("forecast", "upload")),
        description=f"{market}: today's forecast of the chosen horizons from the registered models, and its upload to "
        "the warehouse history (the evening cycle's last step; run again, it adds no row twice).",
    )


def _specialists_job(market: Market) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{market.key}_specialists",
        selection=of_stage("specialists", market=market),
        description=f"{market}: the regime specialists of one regime partition.",
    )


VALIDATE_JOBS = {m.key: _validate_job(m) for m in MARKETS.values()}
RETRAIN_JOBS = {m.key: _retrain_job(m) for m in MARKETS.values()}
SPECIALIST_JOBS = {m.key: _specialists_job(m) for m in MARKETS.values()}
PREDICT_JOBS = {m.key: _predict_job(m) for m in MARKETS.values()}

audit = dg.define_asset_job(
    "audit", selection='key:"monitoring/audit"', description="A post-move audit (config: reason, day)."
)

JOBS = [
    *VALIDATE_JOBS.values(),
    *RETRAIN_JOBS.values(),
    *SPECIALIST_JOBS.values(),
    *PREDICT_JOBS.values(),
    audit,
]
