"""Where things live and which sources run, from environment variables with project-local defaults.

| variable                     | default                                  |
| ---------------------------- | ---------------------------------------- |
| CBI_LAKE                     | <project>/TrainingData                   |
| CBI_MODELS                   | <project>/Models                         |
| CBI_WAREHOUSE                | <lake>/warehouse.duckdb (a team's shared file, or md:<db> for |
|                              | MotherDuck with MOTHERDUCK_TOKEN set)    |
| CBI_WAREHOUSE_URL            | unset: the DuckDB file above; postgresql://user[:password]@host: |
|                              | port/db: the warehouse on PostgreSQL (password masked in output) |
| CBI_MLFLOW_URI               | sqlite:///<models>/mlflow.db (a team server: http://...) |
| CBI_SOURCE                   | auto: a real source where its key is set, else the sample |
|                              | sample / live (Databento, FRED, Yahoo) / local |
| CBI_LOCAL_DIR                | folder for CBI_SOURCE=local              |
| CBI_END                      | the last day to take in from a source (YYYY-MM-DD); unset: |
|                              | today (the sample: its last session)     |
| CBI_SAMPLE_END               | the last session before today            |
| CBI_SAMPLE_START             | 2016-01-04 (the sample's first daily day) |
| CBI_SAMPLE_INTRADAY_SESSIONS | 60 (MES 1-minute bars)                   |
| CBI_SAMPLE_TICK_SESSIONS     | 2 (MES trades, TBBO, MBP-10)             |
| CBI_PROFILE                  | sample when the futures come from the sample, else full, |
|                              | or the path of your own profile (.toml): how much training |
|                              | a run does (cbi_assets/profiles.py)      |
| CBI_SET_ASIDE                | unset: a batch with an impossible value (a price of 0, a high |
|                              | below the low, NaN) is refused; 1: its other records are taken |
|                              | and those set aside beside the day partitions |
| DATABENTO_API_KEY, FRED_API_KEY | the real sources' keys                |
| CBI_CELERY_BROKER            | unset: a run's steps run on this machine; redis://...: on |
|                              | the team's Celery workers (cbi_assets/team.py)            |
| CBI_CELERY_BACKEND           | with a broker: where workers return results (redis://...) |
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cbi_assets.calendars import CHICAGO, settlement_days
from cbi_assets.lake import warehouse_file
from cbi_assets.profiles import load_profile
from cbi_assets.warehouse import SCHEMES, masked

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The main job's sample starts its daily history here: 11 years hold every regime from the commodity
# slump on and keep `cbi demo` within minutes on 2 cores (the sample itself reaches back to 2000).
SAMPLE_START = dt.date(2016, 1, 4)
SOURCES = ("auto", "sample", "live", "local")


def last_complete_session(today: dt.date | None = None) -> dt.date:
    """The latest settlement day strictly before today in Chicago: the last one fully known."""
    today = today or dt.datetime.now(CHICAGO).date()
    return settlement_days(today - dt.timedelta(days=14), today - dt.timedelta(days=1))[-1]


@dataclass(frozen=True)
class Settings:
    lake: Path
    models: Path
    warehouse: str  # a DuckDB file path, or a MotherDuck database (md:<name>)
    tracking_uri: str
    source: str
    local_dir: Path | None
    sample_end: dt.date
    sample_start: dt.date
    sample_intraday_sessions: int
    sample_tick_sessions: int
    profile: str  # a built-in profile's name, or the path of a TOML file
    end: dt.date | None = None  # the last day to take in; None: the sample's last session, or today

    on_sample: bool = True  # the futures come from the embedded sample
    set_aside: bool = False  # take the other records of a batch with impossible values (raw.ingest)
    # The warehouse on PostgreSQL (CBI_WAREHOUSE_URL) instead of the DuckDB file; it may carry a password.
    warehouse_url: str | None = field(default=None, repr=False)
    celery_broker: str | None = field(
        default=None, repr=False
    )  # the team's Celery broker: steps run on its workers (cbi_assets/team.py)

    @property
    def last_day(self) -> dt.date:
        """The last day the lake takes in from its sources."""
        if self.end:
            return self.end
        return self.sample_end if self.on_sample else dt.datetime.now(CHICAGO).date()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        lake = Path(env.get("CBI_LAKE") or PROJECT_ROOT / "TrainingData")
        source = env.get("CBI_SOURCE", "auto").lower()
        if source not in SOURCES:
            raise ValueError(f"CBI_SOURCE={source!r} is not one of {', '.join(SOURCES)}")
        sample_end = env.get("CBI_SAMPLE_END")
        on_sample = source == "sample" or (source == "auto" and not env.get("DATABENTO_API_KEY"))
        profile = env.get("CBI_PROFILE") or ("sample" if on_sample else "full")
        if not profile.endswith(".toml"):
            profile = profile.lower()
        try:
            load_profile(profile)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"CBI_PROFILE={profile!r}: {error}") from None
        models = Path(env.get("CBI_MODELS") or PROJECT_ROOT / "Models")
        return cls(
            lake=lake,
            models=models,
            tracking_uri=env.get("CBI_MLFLOW_URI") or f"sqlite:///{models.resolve() / 'mlflow.db'}",
            warehouse=env.get("CBI_WAREHOUSE") or str(warehouse_file(lake)),
            source=source,
            local_dir=Path(env["CBI_LOCAL_DIR"]) if env.get("CBI_LOCAL_DIR") else None,
            sample_end=dt.date.fromisoformat(sample_end) if sample_end else last_complete_session(),
            sample_start=_day(env.get("CBI_SAMPLE_START"), "CBI_SAMPLE_START") or SAMPLE_START,
            sample_intraday_sessions=int(env.get("CBI_SAMPLE_INTRADAY_SESSIONS", 60)),
            sample_tick_sessions=int(env.get("CBI_SAMPLE_TICK_SESSIONS", 2)),
            profile=profile,
            end=_day(env.get("CBI_END"), "CBI_END"),
            on_sample=on_sample,
            set_aside=_flag(env.get("CBI_SET_ASIDE"), "CBI_SET_ASIDE"),
            warehouse_url=_warehouse_url(env.get("CBI_WAREHOUSE_URL")),
            celery_broker=_celery_broker(env),
        )


def _celery_broker(env: dict[str, str]) -> str | None:
    broker = env.get("CBI_CELERY_BROKER") or None
    if broker and not env.get("CBI_CELERY_BACKEND"):
        raise ValueError(
            "CBI_CELERY_BROKER is set but CBI_CELERY_BACKEND is not: set it to where the workers return their "
            "results (e.g. the broker's Redis with another database number, redis://<host>:6379/1)"
        )
    return broker


def _warehouse_url(url: str | None) -> str | None:
    if not url:
        return None
    if urlsplit(url).scheme not in SCHEMES:
        raise ValueError(
            f"CBI_WAREHOUSE_URL={masked(url)!r} is not a PostgreSQL URL: give it as postgresql://user@host:port/db, "
            "or unset it for the DuckDB file (CBI_WAREHOUSE)"
        )
    return url


def _flag(text: str | None, variable: str) -> bool:
    if text is None or text.strip().lower() in ("", "0", "false", "no"):
        return False
    if text.strip().lower() in ("1", "true", "yes"):
        return True
    raise ValueError(f"{variable}={text!r} is not a yes or no: set it to 1 or 0")


def _day(text: str | None, variable: str) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a date: give it as YYYY-MM-DD") from None
