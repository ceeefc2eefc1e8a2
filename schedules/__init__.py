"""Jobs, schedules and sensors of the code location."""

from schedules.cycle import VALIDATION_SCHEDULES, daily_cycle_sensor
from schedules.ingest import INGEST_JOBS, INGEST_SCHEDULES, daily_cycle
from schedules.jobs import JOBS
from schedules.sensors import SENSORS as DATA_SENSORS

SCHEDULES = [daily_cycle, *VALIDATION_SCHEDULES]
SENSORS = [daily_cycle_sensor, *DATA_SENSORS]

__all__ = ["INGEST_JOBS", "INGEST_SCHEDULES", "JOBS", "SCHEDULES", "SENSORS"]
