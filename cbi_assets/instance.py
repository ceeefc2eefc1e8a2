"""Storage of the project's Dagster instance: SQLite, writing a backfill's events in one go.

A single-run backfill of the raw layer records one materialization per day partition per asset:
about 10,000 events for each asset since 2000. Dagster's SQLite event log stores every event in
a connection and transaction of its own (5-10 ms each), which made a 25-year backfill of the raw
layer take most of an hour. Here the materializations of a partition range, which Dagster hands
over as one batch, are written in one transaction, and the planned partitions of a range are
recorded as one range event, so the same backfill takes seconds of bookkeeping.

The project's asset checks are unpartitioned: a raw asset checks the whole batch it received,
once per run. Dagster would still plan such a check once per partition of the run (a row each,
left "planned" forever, as the one result carries no partition); here it is planned once.

`.dagster/dagster.yaml` selects it:

    storage:
      custom:
        module: cbi_assets.instance
        class: ProjectStorage
        config: {base_dir: {env: DAGSTER_HOME}}
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
)
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
)
from dagster_shared.serdes import serialize_value

# Dagster buffers events that arrive as a batch (a range's materializations) only when a batch
# size is set; every process that opens this instance imports this module first.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "2000")


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return True

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        same_run = len({e.run_id for e in events}) == 1
        if not events or not same_run or not all(e.is_dagster_event and e.dagster_event_type in ASSET_EVENTS for e in events):
            super().store_event_batch(events)
            return
        # What store_event does for each asset event, once for the whole batch: each event is
        # serialized once and inserted into the run's shard and the cross-run index.
        rows = [self._event_to_row(e) for e in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            returning = SqlEventLogStorageTable.insert().returning(
                SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
            )
            ids = conn.execute(returning, rows).scalars().all()
            self._store_asset_event_tags(conn, events, ids)
            # An asset's row keeps only its latest event: write it once per asset, not per partition.
            latest = {e.get_dagster_event().asset_key: (e, i) for e, i in zip(events, ids, strict=True)}
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = event.get_dagster_event().event_specific_data
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert().values(
                    asset_key=planned.asset_key.to_string(),
                    check_name=planned.check_name,
                    partition=None,  # one execution per run, like its one result
                    run_id=event.run_id,
                    execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
                    evaluation_event=serialize_value(event),
                    evaluation_event_timestamp=self._event_insert_timestamp(event),
                    evaluation_event_storage_id=event_id,
                )
            )


class ProjectStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, events, schedules under `base_dir`) with the batched event log."""

    def __init__(self, base_dir: str, inst_data=None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage = BatchedSqliteEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> ProjectStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
