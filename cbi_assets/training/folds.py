"""Purged, embargoed walk-forward folds: which rows each fold trains on and which it tests on.

A row is one bar; its label spans [its time, its label end]. Training rows always come before the
test window, and no training label may reach into it (purge), nor into the `embargo` rows before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

Scheme = Literal["expanding", "sliding"]
SCHEMES: tuple[Scheme, ...] = ("expanding", "sliding")

FOLD_COLUMNS = (
    "fold",
    "scheme",
    "train_start",
    "train_end",
    "train_label_end",
    "test_start",
    "test_end",
    "test_label_end",
    "train_rows",
    "test_rows",
    "train_lo",
    "train_hi",
    "test_lo",
    "test_hi",
)


@dataclass(frozen=True)
class FoldPlan:
    """How to cut a history into walk-forward folds; `embargo` and `train_rows` count rows (bars)."""

    n_folds: int
    scheme: Scheme
    embargo: int = 0
    test_fraction: float = 0.5
    train_rows: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.n_folds < 1:
            problems.append(f"n_folds={self.n_folds} must be at least 1")
        if self.scheme not in SCHEMES:
            problems.append(f"scheme={self.scheme!r} must be one of {', '.join(SCHEMES)}")
        if self.embargo < 0:
            problems.append(f"embargo={self.embargo} must be 0 or more rows")
        if not 0 < self.test_fraction < 1:
            problems.append(f"test_fraction={self.test_fraction} must lie strictly between 0 and 1")
        if self.scheme == "sliding" and (self.train_rows is None or self.train_rows < 1):
            problems.append(f"a sliding plan needs train_rows >= 1 (the window length in rows), got {self.train_rows}")
        if self.scheme == "expanding" and self.train_rows is not None:
            problems.append("train_rows only applies to sliding plans: drop it or use scheme='sliding'")
        if problems:
            raise ValueError("FoldPlan: " + "; ".join(problems))


# --- Folds ------------------------------------------------------------------------------------


def walk_forward(times: pl.Series, label_end: pl.Series, plan: FoldPlan) -> pl.DataFrame:
    """One row per fold (columns FOLD_COLUMNS); `*_lo`/`*_hi` are inclusive row indices.

    `times` are the rows' times, strictly increasing; `label_end` is when each row's label ends,
    null where a row has no label (it is then neither trained nor tested on). The test period is
    the last `test_fraction` of the labelled rows, cut into `n_folds` consecutive windows.
    """
    t, label_end = _checked(times, label_end)
    labelled = label_end.is_not_null().to_numpy()
    rows = np.flatnonzero(labelled)  # labelled rows; "positions" below index into this
    ends = label_end.filter(pl.Series(labelled))
    # A label ending between two bars counts as reaching the later one, which is the safe side.
    end_row = np.searchsorted(t, ends.to_physical().to_numpy(), side="left")

    n_test = int(len(rows) * plan.test_fraction)
    if n_test < plan.n_folds:
        raise ValueError(
            f"walk_forward: {len(rows)} labelled rows x test_fraction {plan.test_fraction} give {n_test} test rows, "
            f"fewer than n_folds={plan.n_folds}; lower n_folds, raise test_fraction or use a longer history"
        )
    cuts = len(rows) - n_test + np.arange(plan.n_folds + 1) * n_test // plan.n_folds
    test_first, test_last = cuts[:-1], cuts[1:] - 1
    test_lo = rows[test_first]

    # Training is the longest run of labelled rows from the start whose labels all end, plus the
    # embargo, before the test window. The running maximum keeps that run contiguous (a slice)
    # even where label ends are not monotone, as with barrier labels; it implies the purge too,
    # since every such label ends at a bar before the test window's first bar.
    reach = np.maximum.accumulate(end_row)
    n_trainable = np.searchsorted(reach, test_lo - plan.embargo, side="left")
    if (n_trainable == 0).any():
        k = int(np.flatnonzero(n_trainable == 0)[0])
        raise ValueError(
            f"walk_forward: fold {k} (test from row {test_lo[k]}) has no training row: the first label ends at row "
            f"{end_row[0]} and the embargo is {plan.embargo} rows; use a longer history, a smaller test_fraction "
            f"({plan.test_fraction}) or embargo, or fewer folds"
        )
    train_first = np.zeros_like(n_trainable)
    if plan.scheme == "sliding":
        train_first = np.maximum(n_trainable - plan.train_rows, 0)
    train_last = n_trainable - 1

    def label_max(first: np.ndarray, last: np.ndarray) -> pl.Series:
        # Gathered by position rather than rebuilt from Python values, so the dtype (time zone) stays.
        at = [a + ends.slice(int(a), int(b - a + 1)).arg_max() for a, b in zip(first, last, strict=True)]
        return ends.gather(at)

    return pl.DataFrame(
        {
            "fold": np.arange(plan.n_folds, dtype=np.int64),
            "scheme": [plan.scheme] * plan.n_folds,
            "train_start": times.gather(rows[train_first]),
            "train_end": times.gather(rows[train_last]),
            "train_label_end": label_max(train_first, train_last),
            "test_start": times.gather(test_lo),
            "test_end": times.gather(rows[test_last]),
            "test_label_end": label_max(test_first, test_last),
            "train_rows": (train_last - train_first + 1).astype(np.int64),
            "test_rows": (test_last - test_first + 1).astype(np.int64),
            "train_lo": rows[train_first].astype(np.int64),
            "train_hi": rows[train_last].astype(np.int64),
            "test_lo": test_lo.astype(np.int64),
            "test_hi": rows[test_last].astype(np.int64),
        }
    )


def _checked(times: pl.Series, label_end: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """The times as numbers, and label_end in the times' type; raises on anything that breaks a fold."""
    if not (times.dtype == pl.Date or isinstance(times.dtype, pl.Datetime) or times.dtype.is_integer()):
        raise TypeError(f"walk_forward: times must be Date, Datetime or integer bar numbers, got {times.dtype}")
    if len(label_end) != len(times):
        raise ValueError(f"walk_forward: label_end has {len(label_end)} rows but times has {len(times)}")
    if label_end.dtype == pl.Null:
        label_end = label_end.cast(times.dtype)
    if label_end.dtype != times.dtype:
        raise ValueError(
            f"walk_forward: label_end is {label_end.dtype} but times is {times.dtype}; cast label_end first"
        )
    if times.null_count():
        raise ValueError(f"walk_forward: times has {times.null_count()} nulls; every row needs a time")
    t = times.to_physical().to_numpy()
    if len(t) > 1 and not (np.diff(t) > 0).all():
        row = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
        raise ValueError(
            f"walk_forward: times must increase strictly; row {row} ({times[row]}) does not; sort and deduplicate"
        )
    early = (label_end < times).fill_null(False)
    if early.any():
        row = int(early.arg_true()[0])
        raise ValueError(
            f"walk_forward: row {row}'s label ends at {label_end[row]}, before the row's time {times[row]}"
        )
    return t, label_end


def split(
    frame: pl.DataFrame, fold: Mapping[str, Any], label_end: str | None = "label_end"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The training and test rows of one fold (`folds.row(k, named=True)`) of a frame in fold row order.

    Rows whose `label_end` is null fall inside the slices but are never trained or tested on, so
    they are dropped; pass label_end=None for a frame without that column (pure slices).
    """
    if frame.height <= fold["test_hi"]:
        raise ValueError(
            f"split: the frame has {frame.height} rows but fold {fold['fold']} tests up to row {fold['test_hi']}; "
            "pass the frame whose times built the folds"
        )
    train = frame.slice(fold["train_lo"], fold["train_hi"] - fold["train_lo"] + 1)
    test = frame.slice(fold["test_lo"], fold["test_hi"] - fold["test_lo"] + 1)
    if label_end is not None:
        train, test = (part.filter(pl.col(label_end).is_not_null()) for part in (train, test))
    return train, test


def fold_membership(label_end: pl.Series, folds: pl.DataFrame) -> pl.DataFrame:
    """Every (fold, row, role) with role "train" or "test": the folds as a table to join on."""
    labelled = label_end.is_not_null().to_numpy()
    parts = []
    for fold in folds.iter_rows(named=True):
        for role in ("train", "test"):
            row = np.arange(fold[f"{role}_lo"], fold[f"{role}_hi"] + 1)
            row = row[labelled[row]]
            parts.append(pl.DataFrame({"fold": np.full(len(row), fold["fold"]), "row": row, "role": [role] * len(row)}))
    schema = {"fold": pl.Int64, "row": pl.Int64, "role": pl.String}
    return pl.concat([p.cast(schema) for p in parts]) if parts else pl.DataFrame(schema=schema)


def fold_findings(frame: pl.DataFrame, folds: pl.DataFrame, key: str, embargo: int) -> dict[str, dict]:
    """Recount purge, embargo and tiling from the rows themselves (independent of walk_forward)."""
    times, ends = frame[key], frame["label_end"]
    overlaps, short, gaps = 0, 0, 0
    previous_hi = None
    for f in folds.iter_rows(named=True):
        test_first = times[f["test_lo"]]
        train_ends = ends.slice(f["train_lo"], f["train_hi"] - f["train_lo"] + 1)
        overlaps += int((train_ends >= test_first).sum())
        last_end_row = times.search_sorted(train_ends.max(), side="right") - 1
        short += int(f["test_lo"] - last_end_row <= embargo)
        gaps += int(previous_hi is not None and f["test_lo"] != previous_hi + 1)
        previous_hi = f["test_hi"]
    return {
        "purged": {"overlapping_train_rows": overlaps},
        "embargoed": {"folds_inside_embargo": short},
        "tiled": {"gaps_or_overlaps": gaps, "test_reaches_end": previous_hi == frame.height - 1},
    }
