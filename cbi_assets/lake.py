"""The lake under `TrainingData/`: every table it holds, where it lies, which asset builds it, and how
it is read and written. This module is the lake's one owner: nothing else spells a path in it.

A table is a path pattern with named parts (`{MARKET}`/`{market}`, `{horizon}`, `{timeframe}`,
`{regime}`, `{family}`, ...) and the key pattern of the asset that builds it. Reading a table that
is not there raises `NotBuilt`, which says which asset (and partition) to materialize. Every write
goes to a temporary name beside the file and is renamed over it once complete, so a failed or
killed run leaves the previous version in place.

Inside an asset run, reading a table whose building asset the running asset does not declare as a
dependency is refused: the lineage the web UI draws is what the code reads.
"""

from __future__ import annotations

import os
import shutil
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from cbi_assets.catalogue import Market, market
from cbi_assets.processes import follow_parent
from cbi_assets.raw.datasets import RawDataset
from cbi_assets.raw.store import PartitionStore
from cbi_assets.temporary import is_orphan, remove_orphans, sync_folder, temporary_name

# The lake is Parquet with zstd (docs/architecture.md). Derived tables are rebuilt often, so at the
# fastest level: on MES 1-minute master parts (278k rows x 263 columns) level 1 wrote in 0.26 s what
# the default level 3 took 0.35 s for, files 5% larger. The raw layer, written once, keeps level 3.
DERIVED = {"compression": "zstd", "compression_level": 1}

# The model kinds' assets: `{market}/models/<name>` walks every family of that kind.
KIND_ASSETS = {"reference": "references", "statistical": "statistical", "tree": "trees", "neural": "neural"}


class NotBuilt(dg.Failure):
    """A table the run needs is not in the lake yet."""


@dataclass(frozen=True)
class Table:
    """One table of the lake (a Parquet file, or a folder of files for `folder` tables)."""

    name: str  # what a person calls it
    pattern: str  # the path under the lake root, with {parts}
    builder: str | Callable[[dict[str, str]], str]  # the building asset's key ("a/b/c", with {parts})
    folder: bool = False
    # The part that is the building asset's partition, for the message when the table is missing.
    partition: str | None = "horizon"

    @property
    def parts(self) -> tuple[str, ...]:
        return _fields(self.pattern)

    @property
    def builder_parts(self) -> tuple[str, ...]:
        return _fields(self.builder) if isinstance(self.builder, str) else ("market", "family")

    def values(self, parts: dict[str, Any], needed: tuple[str, ...]) -> dict[str, str]:
        """The parts as text; `market` gives both {market} ("zl") and {MARKET} ("ZL")."""
        missing = sorted(set(needed) - set(parts))
        if missing:
            raise TypeError(f"the {self.name} table needs {', '.join(missing)}")
        out = {k: str(v) for k, v in parts.items() if k != "market"}
        if "market" in parts:
            m = market(parts["market"])
            out |= {"market": m.key, "MARKET": m.symbol}
        return out

    def relative(self, **parts: Any) -> str:
        return self.pattern.format(**self.values(parts, self.parts))

    def asset_key(self, **parts: Any) -> dg.AssetKey:
        values = self.values(parts, self.builder_parts)
        key = self.builder(values) if callable(self.builder) else self.builder.format(**values)
        return dg.AssetKey(key.split("/"))


def _fields(pattern: str) -> tuple[str, ...]:
    """The named parts of a pattern, lower-cased ({MARKET} and {market} are both `market`)."""
    return tuple(dict.fromkeys(f.lower() for _, f, _, _ in string.Formatter().parse(pattern) if f))


def _family_asset(values: dict[str, str]) -> str:
    """The model-kind asset that writes a family's out-of-fold forecasts and metrics."""
    from cbi_assets.models.registry import FAMILIES, families

    families()  # registers every family
    family = FAMILIES.get(values["family"])
    if family is None:
        raise KeyError(f"no model family {values['family']!r}; registered: {', '.join(sorted(FAMILIES))}")
    return f"{values['market']}/models/{KIND_ASSETS[family.kind]}"


BY_HORIZON = "{MARKET}/training/by_horizon/{horizon}"
MODELS = "{MARKET}/models/by_horizon/{horizon}"

# --- Raw ------------------------------------------------------------------------------------------
ROLL_CALENDAR = Table("roll calendar", "{MARKET}/raw/roll_calendar.parquet", "{market}/raw/roll_calendar")

# --- Features -------------------------------------------------------------------------------------
CONTINUOUS = Table(
    "continuous daily bars", "{MARKET}/features/continuous_1d.parquet", "{market}/features/continuous_1d"
)
SHARED_LAYER = Table("shared feature layer", "shared/{layer}/{layer}_1d.parquet", "shared/features/{layer}")
MARKET_LAYER = Table(
    "market feature layer", "{MARKET}/features/{market}_layer_1d.parquet", "{market}/features/{market}_layer_1d"
)
MASTER = Table(
    "master features", "{MARKET}/features/master_{timeframe}.parquet", "{market}/features/master_{timeframe}"
)
BARS = Table("MES bars", "MES/features/bars_{timeframe}.parquet", "mes/features/bars")
MICROSTRUCTURE = Table(
    "MES microstructure", "MES/features/microstructure_1min.parquet", "mes/features/microstructure_1min"
)
FEATURE_CATALOGUE = Table("feature catalogue", "feature_catalogue.parquet", "features/catalogue")
# Feature tables keep their features' catalogue entries in a file beside them.
FEATURE_TABLES = (SHARED_LAYER, MARKET_LAYER, MASTER, MICROSTRUCTURE)

# --- Live -----------------------------------------------------------------------------------------
# The master rows the live service computed at each closed bar, per session: what its forecasts saw.
LIVE_FEATURES = Table("live master rows", "MES/live/{day}/master_{timeframe}.parquet", "mes/live/health")

# --- Regimes --------------------------------------------------------------------------------------
REGIME_CALENDAR = Table("regime calendar", "shared/regimes/calendar.parquet", "shared/regimes/calendar")
REGIME_STATE = Table("regime state", "shared/regimes/{MARKET}/{horizon}/state.parquet", "{market}/regimes/state")
REGIME_SHIFTS = Table("regime shifts", "shared/regimes/{MARKET}/{horizon}/shifts.parquet", "{market}/regimes/state")

# --- Training -------------------------------------------------------------------------------------
LABELS = Table("labels", f"{BY_HORIZON}/labels.parquet", "{market}/training/labels")
TRAINING_SET = Table("training set", f"{BY_HORIZON}/all.parquet", "{market}/training/sets")
REGIME_SET = Table("training set of one regime", f"{BY_HORIZON}/regime={{regime}}.parquet", "{market}/training/sets")
FOLDS = Table("walk-forward folds", f"{BY_HORIZON}/folds.parquet", "{market}/training/folds")
SCALERS = Table("fold scalers", f"{BY_HORIZON}/scalers.parquet", "{market}/training/folds")
META_TASK = Table(
    "meta-learning task", "meta_learning/{MARKET}/{horizon}/{regime}/{part}.parquet", "{market}/training/meta_tasks"
)

# --- Models ---------------------------------------------------------------------------------------
OOF = Table("out-of-fold forecasts", f"{MODELS}/oof/{{family}}.parquet", _family_asset)
FAMILY_METRICS = Table("walk-forward metrics", f"{MODELS}/metrics/{{family}}.parquet", _family_asset)
ENSEMBLE_OOF = Table("ensemble forecasts", f"{MODELS}/ensemble/{{name}}.parquet", "{market}/models/ensemble")
ENSEMBLE_METRICS = Table("ensemble metrics", f"{MODELS}/ensemble/metrics/{{name}}.parquet", "{market}/models/ensemble")
INTERVALS = Table("ensemble intervals", f"{MODELS}/ensemble/intervals.parquet", "{market}/models/ensemble")
MEMBERS = Table("ensemble members", f"{MODELS}/ensemble/members.parquet", "{market}/models/ensemble")
EXPLANATION = Table("explanations", f"{MODELS}/explain/{{part}}/{{family}}.parquet", "{market}/models/explanations")
EXPLAIN_SUMMARY = Table("explanation summary", f"{MODELS}/explain/summary.parquet", "{market}/models/explanations")
REPTILE = Table("Reptile meta-learner", f"{MODELS}/reptile", "{market}/models/reptile", folder=True)
REPTILE_RESULT = Table("Reptile results", f"{MODELS}/reptile/{{name}}.parquet", "{market}/models/reptile")
SPECIALIST = Table(
    "regime specialist",
    "{MARKET}/models/specialists/{regime}/{horizon}",
    "{market}/models/specialists",
    folder=True,
    partition="regime",
)
TRANSFER = Table(
    "cross-asset transfer comparison", "shared/models/transfer/comparison.parquet", "shared/models/transfer"
)

# --- Predictions and backtests --------------------------------------------------------------------
FORECAST = Table(
    "latest forecast", "{MARKET}/predictions/by_horizon/{horizon}/latest.parquet", "{market}/predictions/forecast"
)
FAMILY_FORECASTS = Table(
    "every family's latest forecast",
    "{MARKET}/predictions/by_horizon/{horizon}/families.parquet",
    "{market}/predictions/forecast",
)
BACKTEST = Table("backtest", "{MARKET}/backtests/by_horizon/{horizon}/{name}.parquet", "{market}/backtests/{kind}")


def warehouse_file(root: Path) -> Path:
    """The embedded DuckDB warehouse's default file."""
    return Path(root) / "warehouse.duckdb"


def sample_folder(root: Path) -> Path:
    """Where the embedded sample source keeps the files it generates (DBN, CSV)."""
    return Path(root) / "sample"


def live_status(root: Path) -> Path:
    """The live service's status (JSON, rewritten at every closed minute): what its health check reads."""
    return Path(root) / "MES" / "live" / "status.json"


def raw_folder(root: Path, dataset: RawDataset) -> Path:
    """The day partitions of a raw dataset: `<root>/<area>/raw/<name>/date=YYYY-MM-DD/`."""
    return Path(root) / dataset.area / "raw" / dataset.name


# --- Atomic files ---------------------------------------------------------------------------------


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed over `path` once the block completes,
    removed when it fails. Rename is atomic on one filesystem: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent)  # what a killed run of this folder's writers left
    incoming = path.with_name(temporary_name(path.name))
    try:
        yield incoming
        if incoming.is_file():
            with open(incoming, "rb") as done:
                os.fsync(done.fileno())  # the content is on disk before the name points to it
        incoming.replace(path)
        sync_folder(path.parent)  # and the new name is on disk too
    finally:
        if incoming.is_dir():
            shutil.rmtree(incoming, ignore_errors=True)
        else:
            incoming.unlink(missing_ok=True)


def write_parquet(frame: pl.DataFrame, path: Path) -> Path:
    with replacing(path) as incoming:
        frame.write_parquet(incoming, **DERIVED)
    return path


def sink_parquet(frame: pl.LazyFrame, path: Path) -> Path:
    """As write_parquet, for a lazy frame streamed to disk: it never sits whole in memory."""
    with replacing(path) as incoming:
        frame.sink_parquet(incoming, **DERIVED)
    return path


# --- The resource ---------------------------------------------------------------------------------


class Lake(dg.ConfigurableResource):
    """The lake's root folder (a path every process of a deployment sees) and its tables."""

    root: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step that touches the lake stops with the process that runs it (cbi_assets.processes).
        follow_parent(context.instance, context.run)

    # -- where ----------------------------------------------------------------------------------
    def path(self, table: Table, **parts: Any) -> Path:
        return Path(self.root) / table.relative(**parts)

    def where(self, table: Table, **parts: Any) -> str:
        """Where a table lies, with the parts not given left as {placeholders}: a metadata "path" for an
        asset that writes many files (`where(OOF, market=ZL)` -> .../ZL/models/by_horizon/{horizon}/oof/...)."""
        filled = {p: f"{{{p}}}" for p in table.parts}
        return str(
            Path(self.root) / table.pattern.format(**{**filled, "MARKET": "{market}", **table.values(parts, ())})
        )

    def exists(self, table: Table, **parts: Any) -> bool:
        path = self.path(table, **parts)
        return path.is_dir() if table.folder else path.is_file()

    def present(self, table: Table, which: str, /, **parts: Any) -> list[str]:
        """The values of the part `which` that have a stored file, e.g. the regimes with a training set."""
        relative = table.relative(**parts, **{which: "\x00"})
        head, tail = relative.split("\x00", 1)
        root = Path(self.root)
        values = []
        for found in root.glob(relative.replace("\x00", "*")):
            name = found.relative_to(root).as_posix()
            value = name[len(head) : len(name) - len(tail)]
            if value and "/" not in value and not value.startswith("."):
                values.append(value)
        return sorted(values)

    def missing(self, table: Table, **parts: Any) -> NotBuilt:
        """The error for a table that is not built: what it is, where, and what to materialize."""
        key = table.asset_key(**parts)
        partition = parts.get(table.partition) if table.partition else None
        label = " ".join(
            str(parts[k])
            for k in ("market", "layer", "horizon", "timeframe", "regime", "family", "name", "part")
            if k in parts
        )
        return NotBuilt(
            f"the {table.name}{' ' + label if label else ''} is not built yet: materialize "
            f"{key.to_user_string()}{f' (partition {partition})' if partition else ''}; looked for "
            f"{self.path(table, **parts)}"
        )

    # -- reading --------------------------------------------------------------------------------
    def read(self, table: Table, columns: Sequence[str] | None = None, **parts: Any) -> pl.DataFrame:
        path = self._readable(table, parts)
        return pl.read_parquet(path, columns=list(columns) if columns is not None else None)

    def scan(self, table: Table, **parts: Any) -> pl.LazyFrame:
        return pl.scan_parquet(self._readable(table, parts))

    def columns(self, table: Table, **parts: Any) -> list[str]:
        return pl.read_parquet_schema(self._readable(table, parts)).names()

    def folder(self, table: Table, **parts: Any) -> Path:
        """A folder table to read from (a stored model and its files)."""
        return self._readable(table, parts)

    def read_features(self, table: Table, **parts: Any):
        """A feature table (`features.master.Table`): its frame and its features' catalogue entries."""
        from cbi_assets.features.tables import read_table

        return read_table(self._readable(table, parts), self._catalogue(table, parts))

    def feature_catalogue(self, table: Table, **parts: Any) -> pl.DataFrame:
        """The catalogue entries stored beside a feature table."""
        self._readable(table, parts)
        return pl.read_parquet(self._catalogue(table, parts))

    def _readable(self, table: Table, parts: dict[str, Any]) -> Path:
        self._declared(table, parts)
        path = self.path(table, **parts)
        if not (path.is_dir() if table.folder else path.is_file()):
            raise self.missing(table, **parts)
        return path

    @staticmethod
    def _declared(table: Table, parts: dict[str, Any]) -> None:
        """Inside an asset run: refuse a read the asset does not declare, so lineage is what the code reads."""
        try:
            context = dg.AssetExecutionContext.get()
        except dg.DagsterInvariantViolationError:
            return  # a sensor, a test or the command line
        key = table.asset_key(**parts)
        assets = context.assets_def
        if key not in assets.keys and key not in set(assets.dependency_keys):
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} reads the {table.name} table, built by {key.to_user_string()}, "
                "which it does not declare; add the table to the asset's reads"
            )

    def _catalogue(self, table: Table, parts: dict[str, Any]) -> Path:
        if table not in FEATURE_TABLES:
            raise TypeError(f"the {table.name} table is not a feature table")
        path = self.path(table, **parts)
        return path.with_name(path.name.replace(".parquet", ".catalogue.parquet"))

    # -- writing --------------------------------------------------------------------------------
    def write(self, table: Table, frame: pl.DataFrame, **parts: Any) -> Path:
        return write_parquet(frame, self.path(table, **parts))

    def delete(self, table: Table, **parts: Any) -> None:
        path = self.path(table, **parts)
        if table.folder:
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def write_features(self, table: Table, features, name: str, **parts: Any) -> Path:
        """A feature table and its catalogue entries, each written atomically."""
        from cbi_assets.features.spec import catalogue_frame

        path = self.write(table, features.frame, **parts)
        write_parquet(catalogue_frame(features.specs, name), self._catalogue(table, parts))
        return path

    def stream_features(self, table: Table, build, name: str, take, **parts: Any) -> Path:
        """A feature table built part by part and streamed into one file (features.tables.stream_table)."""
        from cbi_assets.features.spec import catalogue_frame
        from cbi_assets.features.tables import stream_table

        path = self.path(table, **parts)
        specs = stream_table(build, lambda frame: sink_parquet(frame, path), name, take)
        write_parquet(catalogue_frame(specs, name), self._catalogue(table, parts))
        return path

    @contextmanager
    def replacing_folder(self, table: Table, **parts: Any) -> Iterator[Path]:
        """A fresh staging folder to write a folder table into; it replaces the stored folder only once
        the block completes, so a failed run leaves the old one whole."""
        folder = self.path(table, **parts)
        folder.parent.mkdir(parents=True, exist_ok=True)
        for old in folder.parent.glob(f".incoming-*.{folder.name}.old"):
            if not folder.exists() and is_orphan(old.name):  # killed between the two renames below
                old.rename(folder)
        remove_orphans(folder.parent)
        stage = folder.with_name(temporary_name(folder.name))
        stage.mkdir()
        try:
            yield stage
            old = folder.with_name(temporary_name(folder.name + ".old"))
            if folder.exists():
                folder.rename(old)
            stage.rename(folder)
            sync_folder(folder.parent)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    # -- raw ------------------------------------------------------------------------------------
    def raw(self, dataset: RawDataset) -> PartitionStore:
        """The versioned day partitions of a raw dataset."""
        self._declared_raw(dataset)
        return PartitionStore(raw_folder(Path(self.root), dataset))

    @staticmethod
    def _declared_raw(dataset: RawDataset) -> None:
        try:
            context = dg.AssetExecutionContext.get()
        except dg.DagsterInvariantViolationError:
            return
        assets = context.assets_def
        if dataset.key not in assets.keys and dataset.key not in set(assets.dependency_keys):
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} reads the raw dataset {dataset.name}, which it does not declare; "
                "add it to the asset's reads"
            )

    def read_raw(self, dataset: RawDataset, start=None, end=None) -> pl.DataFrame | None:
        """The latest stored records of a raw dataset in [start, end], or None when nothing is stored."""
        stored = self.raw(dataset).read(start, end)
        return None if stored is None else stored.collect()


def reads(
    *tables: Table | RawDataset, markets: Sequence[Market | str] = (), **parts: Any
) -> list[dg.AssetKey | dg.AssetDep]:
    """The asset keys that build `tables`: an asset's declared dependencies, from what it reads.

    A table with a {market} part is read for each of `markets`; other parts that the building asset's
    key needs (timeframe, layer, family) come from `parts`, where a list means one of each. A table built
    per regime is read whole: every regime partition of its asset.
    """
    keys: dict[dg.AssetKey, dg.AssetKey | dg.AssetDep] = {}
    for table in tables:
        if isinstance(table, RawDataset):
            keys[table.key] = table.key
            continue
        for combination in _combinations(table, list(markets), parts):
            key = table.asset_key(**combination)
            keys[key] = (
                dg.AssetDep(key, partition_mapping=dg.AllPartitionMapping()) if table.partition == "regime" else key
            )
    return list(keys.values())


def _combinations(table: Table, markets: list, parts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the parts the table's building asset's key needs."""
    options: dict[str, list] = {}
    for name in table.builder_parts:
        values = markets if name == "market" else parts.get(name)
        if values is None or values == []:
            raise TypeError(f"reads({table.name}): give {name} (the building asset's key depends on it)")
        options[name] = list(values) if isinstance(values, list | tuple) else [values]
    out: list[dict[str, Any]] = [{}]
    for name, values in options.items():
        out = [{**o, name: v} for o in out for v in values]
    return out
