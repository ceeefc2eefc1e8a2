"""When a forecast's outcome is known: the one rule every fitted combination and calibration obeys.

A row's label has matured for an origin when it ended strictly before that origin (`label_end <
origin`): for a daily horizon of h sessions that leaves out the last h rows before the origin, the
purge the base folds use. Whatever is fitted for an origin (a stacker, blend weights, a
conformal quantile) sees only rows matured by then.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def matured_counts(label_end: pl.Series | np.ndarray, origins: pl.Series | np.ndarray) -> np.ndarray:
    """For each origin, how many rows (a prefix, in time order) have labels that ended before it.

    `label_end` holds each row's label end in row (time) order; it must not decrease, which holds for
    labels of one fixed horizon. `origins` may be the same rows' times or any other times of the
    same type.
    """
    if isinstance(label_end, pl.Series) and isinstance(origins, pl.Series) and origins.dtype != label_end.dtype:
        origins = origins.cast(label_end.dtype)  # e.g. datetimes in another time unit
    ends = _physical(label_end)
    if ends.dtype.kind == "f" and np.isnan(ends).any():
        raise ValueError("matured_counts: label_end has missing values; every forecast row needs its label end")
    if np.any(np.diff(ends) < 0):
        row = int(np.flatnonzero(np.diff(ends) < 0)[0]) + 1
        raise ValueError(
            f"matured_counts: label_end decreases at row {row}; sort the rows by time (one horizon per frame)"
        )
    return np.searchsorted(ends, _physical(origins), side="left")


def _physical(values: pl.Series | np.ndarray) -> np.ndarray:
    """Dates and datetimes as their integer representation, so numpy compares them in order."""
    if isinstance(values, pl.Series):
        if values.null_count():
            raise ValueError(
                f"matured_counts: {values.name or 'a time column'} has {values.null_count()} nulls; "
                "every forecast row needs its time and label end"
            )
        return values.to_physical().to_numpy()
    return np.asarray(values)
