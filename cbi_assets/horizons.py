"""Running a partitioned asset one partition at a time: the one place that owns the partition loop.

An asset partitioned by horizon (or by regime) runs every partition of a range in one process
(single-run backfill). `each_horizon` calls the asset's work for each of them, says in the run log
how far it is, keeps going when one partition fails (the others' results are stored), merges what
each partition reports into the asset's metadata and checks, and fails the run at the end, naming
every partition that failed.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import polars as pl

from cbi_assets.catalogue import Horizon, Market
from cbi_assets.partitions import horizon_partitions
from cbi_assets.ui import table


def horizon_asset(market: Market, **asset: Any):
    """The `dg.asset` decorator of a per-horizon asset of `market`: partitioned by the market's horizons, and a run
    over several of them is one process (a single-run backfill) whose body loops with `each_horizon`."""
    return dg.asset(partitions_def=horizon_partitions(market), backfill_policy=dg.BackfillPolicy.single_run(), **asset)


@dataclass
class Done:
    """What one partition's work reports.

    rows:     its rows of the asset's summary table (the partition is added as the first column)
    metadata: more entries for the asset's metadata (plots, tables); each key gets `_<partition>`
    checks:   per check name, (passed, what was found)
    failed:   parts of it that failed while the rest was stored ("lightgbm: ..."), reported at the end
    value:    anything the asset's `finish` needs
    """

    rows: list[dict] | pl.DataFrame | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, tuple[bool, dict]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    value: Any = None


# The cross-partition work after the loop (warehouse writes, combined plots): more metadata, or more
# metadata and check results that judge every partition together.
Finish = Callable[[dict[str, Done]], dict[str, Any] | tuple[dict[str, Any], list[dg.AssetCheckResult]]]


def each_partition(
    context: dg.AssetExecutionContext,
    work: Callable[[str], Done | None],
    *,
    name: str,
    dimension: str = "horizon",
    summary: str = "summary",
    finish: Finish | None = None,
    metadata: dict[str, Any] | None = None,
) -> dg.MaterializeResult:
    """Run `work` for every partition of the run; `name` labels the log lines ("ZL labels")."""
    keys = list(context.partition_keys)
    done: dict[str, Done] = {}
    failed: list[str] = []
    began = time.monotonic()
    for i, key in enumerate(keys, 1):
        started = time.monotonic()
        try:
            result = work(key) or Done()
        except Exception as error:  # one partition's failure must not lose the others' results
            if isinstance(error, dg.Failure):  # a failure the code foresaw says what to do
                reason, trace = error.description, ""
            else:
                reason, trace = f"{type(error).__name__}: {error}", "\n" + traceback.format_exc()
            context.log.error(f"{name} {key} ({i}/{len(keys)}) failed: {reason}{trace}")
            failed.append(f"{key}: {reason}")
            continue
        done[key] = result
        failed += [f"{key}/{part}" for part in result.failed]
        context.log.info(
            f"{name} {key} ({i}/{len(keys)}) done in {time.monotonic() - started:.1f}s "
            f"({time.monotonic() - began:.0f}s since the start)"
        )
    out: dict[str, Any] = dict(metadata or {})
    rows = [_labelled(d.rows, dimension, k) for k, d in done.items() if d.rows is not None and len(d.rows)]
    if rows:
        out[summary] = table(pl.concat(rows, how="diagonal_relaxed"), 500)
    for key, result in done.items():
        out |= {f"{entry}_{key}": value for entry, value in result.metadata.items()}
    checks = _check_results(done, dimension)
    if finish and done:
        finished = finish(done)
        more, judged = finished if isinstance(finished, tuple) else (finished, [])
        out |= more
        checks += judged
    if failed:
        whole = len(keys) - len(done)  # partitions that failed; the rest of `failed` are parts of the others
        raise dg.Failure(
            f"{name}: {whole} of {len(keys)} {dimension}s failed and {len(failed) - whole} parts of the others "
            f"(first: {failed[0]}); what succeeded is stored",
            metadata={"failed": dg.MetadataValue.json(failed), **out},
        )
    return dg.MaterializeResult(metadata=out, check_results=checks)


def each_horizon(
    context: dg.AssetExecutionContext,
    market: Market,
    work: Callable[[Horizon], Done | None],
    *,
    name: str,
    summary: str = "horizons",
    finish: Finish | None = None,
    metadata: dict[str, Any] | None = None,
) -> dg.MaterializeResult:
    """`each_partition` over a market's horizon partitions, handing `work` the Horizon."""
    return each_partition(
        context,
        lambda key: work(market.horizon(key)),
        name=f"{market} {name}",
        summary=summary,
        finish=finish,
        metadata=metadata,
    )


def _labelled(rows: list[dict] | pl.DataFrame, dimension: str, key: str) -> pl.DataFrame:
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, infer_schema_length=None)
    if dimension in frame.columns:
        return frame
    return frame.select(pl.lit(key).alias(dimension), pl.all())


def _check_results(done: dict[str, Done], dimension: str) -> list[dg.AssetCheckResult]:
    """One result per check over the run's partitions: it passes when every partition passes."""
    names = dict.fromkeys(name for d in done.values() for name in d.checks)
    out = []
    for name in names:
        found = {key: d.checks[name] for key, d in done.items() if name in d.checks}
        failing = [key for key, (passed, _) in found.items() if not passed]
        out.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=not failing,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    f"failed_{dimension}s": failing,
                    f"by_{dimension}": dg.MetadataValue.json({key: seen for key, (_, seen) in found.items()}),
                },
            )
        )
    return out
