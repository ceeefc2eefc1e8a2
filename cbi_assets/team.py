"""The team deployment: where a run's steps execute.

On one machine (the default) a run's steps are processes of the run itself: Dagster's multiprocess
executor. For a team, `CBI_CELERY_BROKER` names a Redis broker and every run hands its steps to Celery
workers through `dagster-celery`, started on any machine that sees the same lake, Dagster instance
and MLflow server (docs/deploy.md):

    dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -q dagster -n cpu1 -- --concurrency 1
    dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -q dagster,gpu -n gpu1 -- --concurrency 1

Steps that train networks go to the queue `gpu`, which only workers with a GPU consume, and hold a slot of
the concurrency pool `gpu` (its limit, 1, is set on the instance: deploy/dagster.yaml), so one network
trains at a time across the whole deployment. Everything else goes to Celery's default queue, `dagster`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from cbi_assets.settings import PROJECT_ROOT, Settings

GPU = "gpu"  # the concurrency pool and the Celery queue of the steps that train networks
QUEUE_TAG = "dagster-celery/queue"  # dagster-celery routes a step to the queue this op tag names
CELERY_CONFIG = PROJECT_ROOT / "deploy" / "celery.yaml"  # the executor's and the workers' one configuration


def on_gpu(op_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The asset decorator's arguments of a step that trains networks: the `gpu` pool and queue."""
    return {"pool": GPU, "op_tags": {QUEUE_TAG: GPU, **(op_tags or {})}}


def celery_config(path: Path = CELERY_CONFIG) -> dict[str, Any]:
    """The Celery executor's configuration, as the workers read it (`-y deploy/celery.yaml`)."""
    try:
        return yaml.safe_load(path.read_text())["execution"]["config"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: the Celery configuration of the team deployment cannot be read ({error})") from None


def executor(settings: Settings) -> dg.ExecutorDefinition | None:
    """The executor of every job: Celery workers when the deployment names a broker, else None (Dagster's
    default, a process per step on this machine)."""
    if not settings.celery_broker:
        return None
    from dagster_celery import celery_executor

    # The broker's URL stays in the environment (it may carry a password): the config says where to read it.
    return celery_executor.configured(celery_config(), name="celery")
