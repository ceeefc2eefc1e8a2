"""The stages of the asset graph, each one selection in Dagster's selection syntax.

Every asset names its stage in its `stage` tag. The jobs, the evening automation and `cbi plan`
select by these strings, and so can a person at the command line:

    dagster asset materialize -m cbi_assets.definitions --select 'tag:stage=train and key:"zl/*"' \\
        --partition-range 1w...12m
"""

from __future__ import annotations

from cbi_assets.catalogue import Market

# In the order the graph is built:
#   ingest        raw partitions from the sources (years)
#   prepare       what the day's data makes without any model: roll calendars, the lake inventory, the feature
#                 layers and master tables, the feature catalogue, the regime calendar
#   train         per market and horizon: labels, training sets, folds, meta-learning tasks, every model
#                 family and the leaderboard
#   forecast      per market and horizon, on the trained models: the regime state, ensembles, explanations, the
#                 Reptile meta-learner, backtests, today's forecast, its upload and validation
#   specialists   per market and regime: the regime specialists
#   cross_market  what reads both markets' models and forecasts: the transfer comparison, the audit
STAGES = ("ingest", "prepare", "train", "forecast", "specialists", "cross_market")


def stage(name: str) -> dict[str, str]:
    """The tags that put an asset in a stage."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return {"stage": name}


def of_stage(*names: str, market: Market | None = None) -> str:
    """The selection of the assets of one or more stages; of one market's assets when given (their keys start
    with it)."""
    for name in names:
        stage(name)
    either = " or ".join(f"tag:stage={name}" for name in names)
    either = f"({either})" if len(names) > 1 and market else either
    return either + (f' and key:"{market.key}/*"' if market else "")


def of_raw(partitions: str) -> str:
    """The raw datasets on one of the raw layer's partition definitions (cbi_assets.raw.partitions)."""
    return f"tag:stage=ingest and tag:raw_partitions={partitions}"
