"""Features as named polars expressions with their catalogue entry, built together.

A feature family adds each column once, with the layer, source, timeframe, window and lag that
describe it; the feature catalogue and the checks read those entries, so a feature is documented
where it is defined and nothing is named twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import polars as pl


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    layer: str  # e.g. "shared/macro", "ZL/soy_complex", "MES/microstructure"
    source: str  # the input series, e.g. "ZL front settlement", "FRED DGS10"
    timeframe: str  # the bars it is computed on: "1d", "1min", ...
    window: int | None  # bars of `timeframe` it looks back over, None for point values
    lag: str  # why it is known at its row's time, e.g. "settled close", "closed 5min bar"
    description: str

    @property
    def warmup(self) -> int:
        """Rows after its first input before it can be defined."""
        return self.window or 0


@dataclass
class FeatureSet:
    """Columns being built for one table; `add` names each one once, with its catalogue entry."""

    layer: str
    source: str
    timeframe: str
    lag: str
    exprs: list[pl.Expr] = field(default_factory=list)
    specs: list[FeatureSpec] = field(default_factory=list)
    # Columns the expressions read that a compiled pass computes first (see `prepare`).
    steps: list[Callable[[pl.DataFrame], pl.DataFrame]] = field(default_factory=list)

    def add(self, name: str, expr: pl.Expr, description: str, window: int | None = None, **overrides) -> None:
        if any(s.name == name for s in self.specs):
            raise ValueError(f"feature {name!r} is defined twice in {self.layer}")
        spec = FeatureSpec(name, self.layer, self.source, self.timeframe, window, self.lag, description)
        self.specs.append(replace(spec, **overrides))
        self.exprs.append(expr.alias(name))

    def extend(self, other: FeatureSet) -> None:
        for expr, spec in zip(other.exprs, other.specs, strict=True):
            if any(s.name == spec.name for s in self.specs):
                raise ValueError(f"feature {spec.name!r} is defined twice")
            self.exprs.append(expr)
            self.specs.append(spec)
        self.steps.extend(other.steps)

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with the columns the expressions read beside its own (run before `exprs`)."""
        for step in self.steps:
            frame = step(frame)
        return frame

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def apply(self, frame: pl.DataFrame, keep: list[str]) -> pl.DataFrame:
        """`keep` columns followed by every feature, computed on `frame`."""
        return self.prepare(frame).select(*keep, *self.exprs)


def catalogue_frame(specs: list[FeatureSpec], table: str) -> pl.DataFrame:
    """The catalogue entries of a table's features, one row each."""
    return pl.DataFrame(
        [
            {
                "table": table,
                **{k: getattr(s, k) for k in ("name", "layer", "source", "timeframe", "window", "lag", "description")},
            }
            for s in specs
        ],
        schema={
            "table": pl.String,
            "name": pl.String,
            "layer": pl.String,
            "source": pl.String,
            "timeframe": pl.String,
            "window": pl.Int64,
            "lag": pl.String,
            "description": pl.String,
        },
    )
