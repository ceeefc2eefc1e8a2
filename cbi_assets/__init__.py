"""CBI: the forecasting asset graph for ZL (CBOT soybean oil) and MES (Micro E-mini S&P 500)."""

import warnings

import dagster as dg

# Single-run backfills are a deliberate choice (25 years of raw data in one run, every horizon of a market in
# one process) and `backfill_policy` is in beta (pyproject.toml pins Dagster below its next minor release): said
# once here, not once per asset in every process's log.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy")
# Dagster's own parser of the selection syntax the jobs and `cbi plan` use warns of a beta parameter it passes.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*include_sources")

# A failed `dagster asset materialize` ends with the cause of each failed step (cbi_assets.failures).
from cbi_assets.failures import report_causes_at_exit  # noqa: E402

report_causes_at_exit()
