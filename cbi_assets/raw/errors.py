"""Errors that tell a person what was wrong with incoming data, where, and what to do.

Every one of them is raised before anything is written, so a failed ingest never touches
what the lake already holds.
"""

from __future__ import annotations


class RawDataError(ValueError):
    """Incoming data is malformed: a file, a column or a row that cannot be taken in."""


class EmptyResponseError(RawDataError):
    """A source answered without records for a range that has trading days."""


class SourceUnavailableError(RuntimeError):
    """A source kept failing (rate limits, server errors) after every retry."""


class MissingApiKeyError(RuntimeError):
    """A real source is selected but its API key is not in the environment."""

    def __init__(self, variable: str, source: str):
        super().__init__(
            f"{source} is selected but the environment variable {variable} is not set. "
            f"Export your {source} API key as {variable}, or set CBI_SOURCE=sample to run on "
            "the embedded sample data (CBI_SOURCE=local with CBI_LOCAL_DIR for a folder of files)."
        )
        self.variable = variable
