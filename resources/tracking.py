"""Experiment tracking in MLflow: a local SQLite store under `Models/` by default, or a team server.

One object with one job: training code hands it what it measured and the model it fitted, and
never learns where they are stored. An experiment per market x horizon, a run per family.
"""

from __future__ import annotations

import fcntl
import json
import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from cbi_assets.catalogue import Market


def experiment_name(market: Market, horizon: str) -> str:
    return f"cbi/{market.symbol}/{horizon}"


def model_name(market: Market, horizon: str) -> str:
    """The registered model of a market x horizon; its `champion` alias is the family in use."""
    return f"cbi-{market.symbol}-{horizon}"


# MLflow's SQL store uses a SQLAlchemy loader strategy SQLAlchemy has deprecated: a warning per query otherwise.
warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")


class Tracking(dg.ConfigurableResource):
    tracking_uri: str  # sqlite:///<Models>/mlflow.db locally, http(s)://... for a team server
    artifact_root: str  # where local runs keep their models; a server decides for itself

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.create_store()

    def create_store(self) -> None:
        """Create the tracking store's tables now, if they are not there. Processes that start at once on a new
        SQLite store would each try to create them: one at a time, under a lock beside the database."""
        if not self.tracking_uri.startswith("sqlite:///"):
            self._ensure_tables()
            return
        database = Path(self.tracking_uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._ensure_tables()

    def _ensure_tables(self) -> None:
        client = self._client()
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)

    def _experiment(self, client, market: Market, horizon: str) -> str:
        name = experiment_name(market, horizon)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if not self.tracking_uri.startswith("http"):
            location = (Path(self.artifact_root) / market.symbol / horizon).resolve().as_uri()
        return client.create_experiment(name, artifact_location=location)

    def log_family(
        self,
        market: Market,
        horizon: str,
        family: str,
        *,
        params: Mapping[str, Any],
        scores: pl.DataFrame,
        model_dir: Path,
        features: list[str],
        data_hash: str,
        tags: Mapping[str, str],
    ) -> str:
        """One run: parameters, metrics per fold (step = fold) and overall, the model folder (logged as
        `model`: a family's is an MLflow pyfunc model, `cbi_assets/models/serving.py`), the feature list and
        the training data's hash. Returns the run id."""
        from mlflow.entities import Metric, Param, RunTag

        client = self._client()
        run = client.create_run(
            self._experiment(client, market, horizon),
            run_name=family,
            tags={"family": family, "asset": market.symbol, "horizon": horizon, "data_hash": data_hash, **tags},
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        metrics = []
        for row in scores.iter_rows(named=True):
            for name, value in row.items():
                if name in ("scope", "group", "rows") or value is None or not math.isfinite(value):
                    continue
                if row["scope"] == "fold":
                    metrics.append(Metric(f"fold_{name}", value, now, int(row["group"])))
                elif row["scope"] == "overall":
                    metrics.append(Metric(name, value, now, 0))
                else:
                    metrics.append(Metric(f"{row['group']}_{name}", value, now, 0))
        client.log_batch(
            run_id,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag("features", str(len(features)))],
        )
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        (model_dir / "features.json").write_text(json.dumps(features))
        client.log_artifacts(run_id, str(model_dir), "model")
        client.set_terminated(run_id)
        return run_id

    def register(self, market: Market, horizon: str, run_id: str, family: str, alias: str) -> str:
        """Register the run's model as a new version and point `alias` (champion or challenger) at it."""
        client = self._client()
        name = model_name(market, horizon)
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name, description=f"The champion forecaster of {market.symbol} {horizon}")
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        version = client.create_model_version(name, source=source, run_id=run_id, tags={"family": family})
        client.set_registered_model_alias(name, alias, version.version)
        return version.version

    def champion(self, market: Market, horizon: str) -> dict[str, str] | None:
        """The champion's version, family and run, or None before any was crowned."""
        return self.aliased(market, horizon, "champion")

    def challenger(self, market: Market, horizon: str) -> dict[str, str] | None:
        """The shadow model's version, family and run, or None when there is none."""
        return self.aliased(market, horizon, "challenger")

    def aliased(self, market: Market, horizon: str, alias: str) -> dict[str, str] | None:
        from mlflow.exceptions import MlflowException

        try:
            version = self._client().get_model_version_by_alias(model_name(market, horizon), alias)
        except MlflowException:
            return None
        return {
            "version": version.version,
            "family": version.tags.get("family", ""),
            "run_id": version.run_id,
            "model_version": f"{model_name(market, horizon)}/{version.version}",
        }

    def promote(self, market: Market, horizon: str) -> dict[str, str]:
        """Move the `champion` alias to the challenger's version and retire the `challenger` alias."""
        challenger = self.challenger(market, horizon)
        name = model_name(market, horizon)
        if challenger is None:
            raise ValueError(f"{name} has no challenger to promote")
        client = self._client()
        client.set_registered_model_alias(name, "champion", challenger["version"])
        client.delete_registered_model_alias(name, "challenger")
        return challenger

    def family_runs(self, market: Market, horizon: str, family: str, limit: int = 2) -> list[dict[str, Any]]:
        """The latest finished runs (trainings) of a family for a market x horizon, newest first:
        run_id, start_time (ms) and data_hash of each; [] before the first."""
        client = self._client()
        found = client.get_experiment_by_name(experiment_name(market, horizon))
        if found is None:
            return []
        runs = client.search_runs(
            [found.experiment_id],
            max_results=limit,
            order_by=["attributes.start_time DESC"],
            filter_string=f"tags.family = '{family}' and attributes.status = 'FINISHED'",
        )
        return [
            {"run_id": r.info.run_id, "start_time": r.info.start_time, "data_hash": r.data.tags.get("data_hash", "")}
            for r in runs
        ]

    def load_model(self, run_id: str) -> tuple[Any, list[str]]:
        """A run's fitted model and the feature list it was trained on. A family's run logs a pyfunc MLflow
        model (cbi_assets/models/serving.py) and this is the family inside it; other runs (a specialist's,
        the meta-learner's) log a folder with model/model.pkl, or model/model.keras for a network."""
        import os
        import pickle
        import tempfile

        # MLflow draws a progress bar on stderr for every download; a run loads a few models per horizon.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(self._client().download_artifacts(run_id, "model", tmp))
            features = json.loads((folder / "features.json").read_text())
            if (folder / "MLmodel").is_file():
                from cbi_assets.models import serving

                return serving.fitted(folder), features
            if (folder / "model.pkl").is_file():
                with open(folder / "model.pkl", "rb") as stored:
                    return pickle.load(stored), features
            if (folder / "model.keras").is_file():
                import keras

                return keras.saving.load_model(folder / "model.keras"), features
        raise ValueError(
            f"MLflow run {run_id} has no model/MLmodel, model/model.pkl or model/model.keras artifact; "
            "retrain its family"
        )
