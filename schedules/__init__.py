"""Jobs, schedules and sensors of the code location."""

from cbi_assets.live.health import live_health, live_health_schedule
from schedules.automation import VALIDATION_SCHEDULES, cycle_failure_alert, evening_cycle
from schedules.ingest import INGEST_JOBS, INGEST_SCHEDULES
from schedules.jobs import JOBS as ON_DEMAND_JOBS
from schedules.sensors import SENSORS as DATA_SENSORS

JOBS = [*INGEST_JOBS.values(), *ON_DEMAND_JOBS, live_health]
SCHEDULES = [*INGEST_SCHEDULES, *VALIDATION_SCHEDULES, live_health_schedule]
SENSORS = [evening_cycle, cycle_failure_alert, *DATA_SENSORS]

__all__ = ["JOBS", "SCHEDULES", "SENSORS"]
