"""Schedules and sensors of the code location."""

from schedules.ingest import INGEST_JOBS, INGEST_SCHEDULES

__all__ = ["INGEST_JOBS", "INGEST_SCHEDULES"]
