"""The feature-table checks, by hand on small tables, and the same whether a table is taken whole
or part by part as it streams to disk (the MES intraday masters are)."""

import datetime as dt
import math

import polars as pl
import pytest

from cbi_assets import lake as tables
from cbi_assets.catalogue import MES
from cbi_assets.features.master import Table
from cbi_assets.features.quality import Profile
from cbi_assets.features.spec import FeatureSpec
from cbi_assets.lake import Lake

T0 = dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)


def table(frame: pl.DataFrame, windows: dict[str, int] | None = None) -> Table:
    keys = tuple(c for c in ("ts", "trade_date", "date") if c in frame.columns)
    specs = [
        FeatureSpec(c, "test", "hand-made", "1min", (windows or {}).get(c), "test", c)
        for c in frame.columns
        if c not in keys
    ]
    return Table(frame, specs, keys)


def in_parts(whole: Table, sizes: list[int]) -> Profile:
    profile, start = Profile(), 0
    for size in sizes:
        profile.add(Table(whole.frame.slice(start, size), whole.specs, whole.keys))
        start += size
    assert start == whole.frame.height
    return profile


def test_each_check_finds_what_it_should():
    inf = math.inf
    frame = pl.DataFrame(
        {
            # The fifth row repeats the fourth's time.
            "ts": [T0 + dt.timedelta(minutes=m) for m in (1, 2, 3, 4, 4, 5)],
            "a": [1.0, inf, 3.0, -inf, 5.0, 6.0],
            # First value on row 2, a window of 1: warmed up from row 3, where 2 of 3 are null.
            "b": [None, None, 1.0, None, None, 2.0],
            "c": [7.0, 7.0, None, 7.0, 7.0, 7.0],
            "d": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "e": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "f": [None] * 6,
        },
        schema_overrides={"f": pl.Float32},
    )
    profile = Profile().add(table(frame, {"b": 1}))

    assert profile.finite().metadata["columns_with_infinities"] == {"a": 2}
    nulls = profile.nulls()
    assert nulls.metadata["over_limit"] == {"f": 1.0, "b": round(2 / 3, 4), "c": round(1 / 6, 4)} and not nulls.passed
    assert profile.order().metadata["not_increasing"] == 1
    distinct = profile.distinct(minimum=6)
    assert distinct.metadata["constant"] == ["c", "f"] and distinct.metadata["duplicates"] == [["d", "e"]]
    assert not distinct.passed and not profile.distinct(minimum=7).passed


def test_a_clean_table_passes_and_too_few_features_fail():
    frame = pl.DataFrame(
        {"ts": [T0 + dt.timedelta(minutes=m) for m in range(4)], "x": [1.0, 2.0, 3.0, 4.0], "y": [4.0, 3.0, 2.0, 1.0]}
    )
    profile = Profile().add(table(frame))
    assert profile.finite().passed and profile.nulls().passed and profile.order().passed
    assert profile.distinct(minimum=2).passed and not profile.distinct(minimum=3).passed


def test_daily_calendar_counts_sessions_between_first_and_last():
    # 2024-03-04 (Mon) .. 03-08 (Fri): five sessions; one left out.
    days = [dt.date(2024, 3, d) for d in (4, 5, 7, 8)]
    frame = pl.DataFrame({"date": days, "x": [1.0, 2.0, 3.0, 4.0]})
    missing = Profile().add(table(frame)).calendar("1d")
    assert not missing.passed and missing.metadata == {
        "rows": 4,
        "sessions": 5,
        "first": "2024-03-04",
        "last": "2024-03-08",
    }
    full = pl.DataFrame({"date": [dt.date(2024, 3, d) for d in range(4, 9)], "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    assert in_parts(table(full), [2, 3]).calendar("1d").passed


def whole_and_parts_table() -> Table:
    """1,000 minutes over 4 sessions, with features whose verdicts turn on rows in another part."""
    n = 1000
    x = pl.Series([math.sin(0.37 * m) for m in range(n)])
    frame = pl.DataFrame(
        {
            "ts": [T0 + dt.timedelta(minutes=m) for m in range(n)],
            "trade_date": [dt.date(2024, 3, 4) + dt.timedelta(days=m // 250) for m in range(n)],
            "base": x,
            # Null until row 450, then every 7th row: with a window of 30, warmed up from row 480.
            "late": pl.Series([None if m < 450 or m % 7 == 0 else float(m) for m in range(n)]),
            # A copy of `base` but for the last row: only the last part tells them apart.
            "almost": pl.Series([*x[:-1], 9.0]),
            "copy": x,
            # Constant within each part of 100 rows, different across them.
            "steps": pl.Series([float(m // 100) for m in range(n)]),
            # The same value for 700 rows, then another.
            "shift": pl.Series([1.0 if m < 700 else 2.0 for m in range(n)]),
            "spike": pl.Series([math.inf if m in (120, 880) else 0.5 * m for m in range(n)]),
            "still": pl.Series([3.0] * n),
            # Null in the early parts, then different: copies of each other only for a while.
            "quiet_a": pl.Series([None if m < 600 else float(m) for m in range(n)]),
            "quiet_b": pl.Series([None if m < 600 else float(-m) for m in range(n)]),
        }
    )
    # Row 500 goes back a minute: out of order exactly at a part boundary.
    frame = frame.with_columns(
        pl.when(pl.int_range(n) == 500).then(pl.col("ts") - dt.timedelta(minutes=2)).otherwise(pl.col("ts")).alias("ts")
    )
    return table(frame, {"late": 30, "base": 5, "spike": 10})


@pytest.mark.parametrize("sizes", [[1000], [1, 99, 400, 500], [500, 500], [100] * 10, [450, 1, 549]])
def test_findings_in_parts_equal_the_findings_whole(sizes):
    whole = whole_and_parts_table()
    one, parts = Profile().add(whole), in_parts(whole, sizes)
    for a, b in zip(one.findings("1min", 5).values(), parts.findings("1min", 5).values(), strict=True):
        assert (a.passed, a.summary, a.metadata) == (b.passed, b.summary, b.metadata)
    distinct = parts.distinct(5).metadata
    assert distinct["constant"] == ["still"] and distinct["duplicates"] == [["base", "copy"]]
    assert parts.finite().metadata["columns_with_infinities"] == {"spike": 2}
    assert parts.order().metadata["not_increasing"] == 1
    assert parts.nulls().metadata["worst"]["late"] == round(sum(m % 7 == 0 for m in range(480, 1000)) / 520, 4)
    assert parts.calendar("1min").metadata["sessions"] == 4 and parts.rows == 1000


def builders(whole: Table, sizes: list[int], fail_at: int | None = None):
    starts = [sum(sizes[:k]) for k in range(len(sizes))]

    def build(k: int) -> Table:
        if k == fail_at:
            raise RuntimeError(f"part {k} could not be built")
        return Table(whole.frame.slice(starts[k], sizes[k]), whole.specs, whole.keys)

    return [lambda k=k: build(k) for k in range(len(sizes))]


def _stream(lake: Lake, parts, take=lambda part: None):
    return lake.stream_features(tables.MASTER, parts, "mes_master_1min", take, market=MES, timeframe="1min")


def _files(root) -> list[str]:
    """Every file under the lake, hidden temporaries included."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_table_streamed_in_parts_is_the_whole_table_with_its_catalogue(tmp_path):
    whole, lake = whole_and_parts_table(), Lake(root=str(tmp_path))
    profile, seen = Profile(), []

    def take(part: Table) -> None:
        seen.append(part.frame.height)
        profile.add(part)

    _stream(lake, builders(whole, [300, 200, 100, 400]), take)
    stored = lake.read_features(tables.MASTER, market=MES, timeframe="1min")
    assert stored.frame.equals(whole.frame) and stored.specs == whole.specs
    assert seen == [300, 200, 100, 400]  # each part built once, in time order
    assert profile.parts == 4 and profile.rows == 1000
    assert _files(tmp_path) == ["MES/features/master_1min.catalogue.parquet", "MES/features/master_1min.parquet"]


def test_a_failed_part_leaves_the_stored_table_as_it_was(tmp_path):
    whole, lake = whole_and_parts_table(), Lake(root=str(tmp_path))
    _stream(lake, builders(whole, [500, 500]))
    path = lake.path(tables.MASTER, market=MES, timeframe="1min")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="part 2 could not be built"):
        _stream(lake, builders(whole, [300, 300, 400], fail_at=2))
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["MES/features/master_1min.catalogue.parquet", "MES/features/master_1min.parquet"]


def test_a_part_with_other_features_is_refused(tmp_path):
    whole = whole_and_parts_table()
    parts = builders(whole, [500, 500])
    narrow = Table(whole.frame.drop("still"), [s for s in whole.specs if s.name != "still"], whole.keys)
    parts[1] = lambda: Table(narrow.frame.slice(500), narrow.specs, narrow.keys)
    with pytest.raises(ValueError, match="part 1 has other features than part 0"):
        _stream(Lake(root=str(tmp_path)), parts)
    assert _files(tmp_path) == []
