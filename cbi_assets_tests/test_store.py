"""The raw store never overwrites: identical content is a no-op, new content a new version."""

import datetime as dt
import os
import socket
import subprocess
import threading

import polars as pl
import pytest

from cbi_assets.raw.store import PartitionStore, day_digests, frame_digest

DAY = dt.date(2024, 3, 1)


def bars(close: float, ingested: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_event": [dt.datetime(2024, 3, 1, tzinfo=dt.UTC)],
            "close": [close],
            "ingested_at": [dt.datetime(2024, 3, 2, ingested, tzinfo=dt.UTC)],
        }
    )


def test_same_content_again_changes_nothing(tmp_path):
    store = PartitionStore(tmp_path)
    assert store.write(DAY, bars(45.0)) == "new"
    first = store.latest(DAY)
    # Received again later: the receipt time differs, the content does not.
    assert store.write(DAY, bars(45.0, ingested=5)) == "unchanged"
    assert store.versions(DAY) == [first]
    assert first.path.stat().st_mtime_ns == store.latest(DAY).path.stat().st_mtime_ns


def test_different_content_becomes_a_new_version_beside_the_old(tmp_path):
    store = PartitionStore(tmp_path)
    store.write(DAY, bars(45.0))
    assert store.write(DAY, bars(45.5)) == "revised"
    versions = store.versions(DAY)
    assert [v.number for v in versions] == [1, 2]
    assert pl.read_parquet(versions[0].path)["close"].item() == 45.0
    assert store.read().collect()["close"].to_list() == [45.5]
    # Going back to the first content is a revision too, never a rewrite of version 1.
    assert store.write(DAY, bars(45.0)) == "revised"
    assert len(store.versions(DAY)) == 3


def test_a_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    store = PartitionStore(tmp_path)
    store.write(DAY, bars(45.0))

    def crash(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(OSError):
        store.write(DAY, bars(46.0))
    monkeypatch.undo()
    assert not list(store.day_dir(DAY).glob(".incoming-*"))
    assert [v.number for v in store.versions(DAY)] == [1]
    assert store.read().collect()["close"].item() == 45.0


def test_a_day_that_cannot_be_encoded_leaves_no_file_of_its_batch(tmp_path):
    store = PartitionStore(tmp_path)
    days = [(DAY + dt.timedelta(days=i), bars(45.0 + i), f"{i:016x}") for i in range(8)]
    unwritable = pl.DataFrame({"ts_event": [object()]}, schema={"ts_event": pl.Object})  # Parquet has no type for it
    with pytest.raises(Exception, match="(?i)object"):
        store.write_days([*days[:5], (DAY + dt.timedelta(days=5), unwritable, "f" * 16), *days[5:]])
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [".lock"]  # nothing stored, nothing staged
    assert store.write_days(days) == ["new"] * 8


def test_concurrent_writers_never_share_a_version(tmp_path):
    closes = [40.0 + i for i in range(8)]
    threads = [threading.Thread(target=PartitionStore(tmp_path).write, args=(DAY, bars(c))) for c in closes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = PartitionStore(tmp_path).versions(DAY)
    assert [v.number for v in versions] == list(range(1, 9))
    assert sorted(pl.read_parquet(v.path)["close"].item() for v in versions) == closes


def test_read_takes_the_latest_version_of_each_day_in_range(tmp_path):
    store = PartitionStore(tmp_path)
    for i in range(5):
        day = DAY + dt.timedelta(days=i)
        frame = bars(float(i)).with_columns(pl.lit(dt.datetime(2024, 3, 1 + i, tzinfo=dt.UTC)).alias("ts_event"))
        store.write(day, frame)
    assert store.days(DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=3)) == [
        DAY + dt.timedelta(days=i) for i in (1, 2, 3)
    ]
    assert store.read(DAY + dt.timedelta(days=3)).collect()["close"].to_list() == [3.0, 4.0]
    assert PartitionStore(tmp_path / "nothing").read() is None


def test_digest_sees_values_types_order_and_nulls_but_not_receipt_time():
    a = pl.DataFrame({"x": [1.0, 2.0], "s": ["a", None]})
    assert frame_digest(a) == frame_digest(a.with_columns(pl.lit(1).alias("ingested_at")))
    assert frame_digest(a) != frame_digest(a.reverse())
    assert frame_digest(a) != frame_digest(a.with_columns(pl.col("x").cast(pl.Float32)))
    assert frame_digest(a) != frame_digest(a.with_columns(pl.col("s").fill_null("")))
    assert frame_digest(a) != frame_digest(a.with_columns(pl.col("x") + 1e-9))


def test_batch_digests_equal_the_digest_of_each_day_alone():
    frame = pl.DataFrame(
        {
            "day": [dt.date(2024, 3, 2), dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 1)],
            "x": [1.0, None, 3.0, 4.0],
            "s": ["b", "a", None, "dd"],
        }
    )
    digests = day_digests(frame, "day")
    for (day,), part in frame.partition_by("day", as_dict=True, maintain_order=True, include_key=False).items():
        assert digests[day] == frame_digest(part)
    assert digests[dt.date(2024, 3, 1)] != digests[dt.date(2024, 3, 2)]


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_and_a_living_ones_kept(tmp_path):
    store = PartitionStore(tmp_path)
    store.write(DAY, bars(45.0))
    finished = subprocess.Popen(["true"])
    finished.wait()  # a process that has ended: its pid names no living writer
    host = socket.gethostname()
    orphan = store.day_dir(DAY) / f".incoming-{host}-{finished.pid}-0123abcd.parquet"
    living = store.day_dir(DAY) / f".incoming-{host}-{os.getpid()}-0123abcd.parquet"
    elsewhere = store.day_dir(DAY) / f".incoming-another-host-{finished.pid}-0123abcd.parquet"
    for path in (orphan, living, elsewhere):
        path.write_bytes(b"partial")
    assert store.write(DAY, bars(45.0)) == "unchanged"
    assert not orphan.exists() and living.exists() and elsewhere.exists()
    assert store.orphans_removed == 1
