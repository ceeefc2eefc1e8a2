"""The Dagster code location: every asset, check, job, schedule and resource of CBI."""

from __future__ import annotations

import dagster as dg

from cbi_assets.backtests.assets import BACKTEST_ASSETS
from cbi_assets.ensembles.assets import ENSEMBLE_ASSETS
from cbi_assets.explain.assets import EXPLAIN_ASSETS
from cbi_assets.features.assets import FEATURE_ASSETS
from cbi_assets.live.health import LIVE_CHECKS, live_service
from cbi_assets.meta.assets import META_ASSETS
from cbi_assets.models.assets import MODEL_ASSETS
from cbi_assets.monitoring.assets import MONITORING_ASSETS
from cbi_assets.predictions.assets import PREDICTION_ASSETS
from cbi_assets.raw.assets import RAW_ASSETS, ROLL_CALENDARS, raw_inventory
from cbi_assets.regimes.assets import REGIME_ASSETS
from cbi_assets.settings import Settings
from cbi_assets.specialists.assets import SPECIALIST_ASSETS
from cbi_assets.team import executor
from cbi_assets.training.assets import TRAINING_ASSETS
from resources import build_resources
from schedules import JOBS, SCHEDULES, SENSORS

settings = Settings.from_env()

defs = dg.Definitions(
    assets=[
        *RAW_ASSETS,
        *ROLL_CALENDARS,
        raw_inventory,
        *FEATURE_ASSETS,
        *REGIME_ASSETS,
        *TRAINING_ASSETS,
        *MODEL_ASSETS,
        *ENSEMBLE_ASSETS,
        *EXPLAIN_ASSETS,
        *SPECIALIST_ASSETS,
        *META_ASSETS,
        *BACKTEST_ASSETS,
        *PREDICTION_ASSETS,
        *MONITORING_ASSETS,
        live_service,
    ],
    asset_checks=LIVE_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(settings),
    executor=executor(settings),
)
