"""A robust scaler, (x - median) / IQR, fitted on a fold's training rows and stored beside them.

Median and interquartile range rather than mean and standard deviation, because the price and
flow features carry fat tails (2008, 2020) that would otherwise set the scale for every other day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class RobustScaler:
    columns: tuple[str, ...]
    median: tuple[float, ...]
    scale: tuple[float, ...]  # q75 - q25; 1.0 where that is 0 or unknown

    @classmethod
    def fit(cls, train: pl.DataFrame, columns: Iterable[str]) -> RobustScaler:
        """Fit on the training rows only; nulls and NaNs are ignored."""
        columns = tuple(columns)
        _require(train.schema, columns, "fit")
        if not columns:
            return cls((), (), ())

        def x(c: str) -> pl.Expr:
            return pl.col(c).cast(pl.Float64).fill_nan(None)

        # One pass over the frame for every column's three quantiles; linear interpolation, as
        # numpy's percentile and scikit-learn's RobustScaler use.
        stats = train.select(
            *(x(c).median().alias(f"median_{i}") for i, c in enumerate(columns)),
            *(
                (x(c).quantile(0.75, "linear") - x(c).quantile(0.25, "linear")).alias(f"iqr_{i}")
                for i, c in enumerate(columns)
            ),
        ).row(0, named=True)
        median = [stats[f"median_{i}"] for i in range(len(columns))]
        iqr = [stats[f"iqr_{i}"] for i in range(len(columns))]
        # A column without any value gets median 0: its nulls stay null, and 0 keeps the scaler
        # comparable (NaN != NaN) and storable.
        return cls(
            columns=columns,
            median=tuple(0.0 if m is None else float(m) for m in median),
            # A constant (or empty) column has no spread to divide by; leave its centred values as they are.
            scale=tuple(1.0 if s is None or s == 0 else float(s) for s in iqr),
        )

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """(x - median) / scale for the fitted columns; other columns untouched, Float32 stays Float32."""
        schema = frame.schema
        _require(schema, self.columns, "transform")
        return frame.with_columns(
            ((pl.col(c) - m) / s).cast(pl.Float32 if schema[c] == pl.Float32 else pl.Float64)
            for c, m, s in zip(self.columns, self.median, self.scale, strict=True)
        )

    def to_frame(self) -> pl.DataFrame:
        """One row per column, to store beside the training set it was fitted on."""
        return pl.DataFrame(
            {"column": list(self.columns), "median": list(self.median), "scale": list(self.scale)},
            schema={"column": pl.String, "median": pl.Float64, "scale": pl.Float64},
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> RobustScaler:
        missing = {"column", "median", "scale"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"RobustScaler.from_frame: the stored scaler lacks columns {sorted(missing)}; "
                "it was not written by to_frame"
            )
        return cls(
            columns=tuple(frame["column"].to_list()),
            median=tuple(float(v) for v in frame["median"]),
            scale=tuple(float(v) for v in frame["scale"]),
        )


def _require(schema: pl.Schema, columns: tuple[str, ...], step: str) -> None:
    missing = [c for c in columns if c not in schema]
    if missing:
        raise ValueError(f"RobustScaler.{step}: the frame has no columns {missing}; it has {list(schema)}")
    odd = [f"{c} ({schema[c]})" for c in columns if not schema[c].is_numeric()]
    if odd:
        raise ValueError(f"RobustScaler.{step}: columns {odd} are not numeric; scale only numeric features")
