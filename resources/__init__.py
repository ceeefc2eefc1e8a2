"""Resources: one per outside system, each with a local implementation beside the remote one."""

from __future__ import annotations

import os

import dagster as dg

from cbi_assets.lake import Lake, sample_folder
from cbi_assets.profiles import TrainingProfile
from cbi_assets.raw.source import Source
from cbi_assets.settings import Settings
from cbi_assets.warehouse import Warehouse
from resources.alerts import Alerts, alerts_from_env
from resources.databento_source import DatabentoSource
from resources.fred_source import FredSource
from resources.local_files import LocalFilesSource
from resources.sample_source import SampleSource
from resources.tracking import Tracking
from resources.yahoo_source import YahooSource

# The resource key of each role's source (RawDataset.source_key); a raw asset asks for its own.
SOURCE_KEYS = {role: f"{role}_source" for role in ("futures", "macro", "history")}

__all__ = [
    "SOURCE_KEYS",
    "Alerts",
    "DatabentoSource",
    "FredSource",
    "Lake",
    "LocalFilesSource",
    "SampleSource",
    "Tracking",
    "TrainingProfile",
    "YahooSource",
    "build_resources",
    "sample_source",
    "source_of",
    "warehouse_of",
]


def sample_source(settings: Settings) -> SampleSource:
    return SampleSource(
        cache_dir=str(sample_folder(settings.lake)),
        end=settings.sample_end.isoformat(),
        start=settings.sample_start.isoformat(),
        intraday_sessions=settings.sample_intraday_sessions,
        tick_sessions=settings.sample_tick_sessions,
    )


def source_of(resources: dict, dataset) -> Source:
    """The source resource that serves a raw dataset."""
    return resources[dataset.source_key]


def _sources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Pick each role's source. `auto` takes a real source only where its key is set."""
    through = settings.end.isoformat() if settings.end else None
    if settings.source == "local":
        if settings.local_dir is None:
            raise ValueError(
                "CBI_SOURCE=local needs CBI_LOCAL_DIR: the folder of files to read (e.g. ../shared/data/real)"
            )
        local = LocalFilesSource(root=str(settings.local_dir), through=through, set_aside=settings.set_aside)
        return {key: local for key in SOURCE_KEYS.values()}
    sample = sample_source(settings)
    if settings.source == "sample":
        return {key: sample for key in SOURCE_KEYS.values()}
    live = settings.source == "live"

    def keyed(source: type[DatabentoSource] | type[FredSource], variable: str) -> dg.ConfigurableResource:
        if os.environ.get(variable):
            # Read from the environment when a run starts (dg.EnvVar), never stored in config.
            return source(api_key=dg.EnvVar(variable), through=through, set_aside=settings.set_aside)
        # Selected but unkeyed: the source says which variable to set when it is first used.
        return source(through=through, set_aside=settings.set_aside) if live else sample

    return {
        "futures_source": keyed(DatabentoSource, "DATABENTO_API_KEY"),
        "macro_source": keyed(FredSource, "FRED_API_KEY"),
        "history_source": YahooSource(through=through, set_aside=settings.set_aside) if live else sample,
    }


def warehouse_of(settings: Settings) -> Warehouse:
    """The warehouse: PostgreSQL when CBI_WAREHOUSE_URL is set, else the DuckDB file."""
    url = settings.warehouse_url
    if url and os.environ.get("CBI_WAREHOUSE_URL") == url:
        # Read from the environment when a run starts (dg.EnvVar): its password never enters the run's config.
        url = dg.EnvVar("CBI_WAREHOUSE_URL")
    return Warehouse(database=settings.warehouse, url=url)


def build_resources(settings: Settings) -> dict[str, object]:
    warehouse = warehouse_of(settings)
    return {
        "lake": Lake(root=str(settings.lake)),
        "profile": TrainingProfile(name=settings.profile),
        "warehouse": warehouse,
        "tracking": Tracking(tracking_uri=settings.tracking_uri, artifact_root=str(settings.models / "artifacts")),
        "alerts": alerts_from_env(warehouse),  # CBI_ALERT_*: webhook and mail, off when unset
        **_sources(settings),
    }
