"""The local-files source: real files read, bad files refused with file, line and column."""

import datetime as dt
import io
import shutil
from pathlib import Path

import polars as pl
import pytest
import zstandard

from cbi_assets.raw.datasets import RawDataset, raw_dataset
from cbi_assets.raw.errors import RawDataError
from cbi_assets.raw.ingest import ingest
from cbi_assets.raw.store import PartitionStore
from resources.local_files import LocalFilesSource

NOW = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


HEADER = "date,open,high,low,close,volume,open_interest\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "2024-03-04,45,46,44,45.5,10,5\n04/03/2024,45,46,44,45.5,10,5\n",
            r"column 'date' is not a date.*line 3: '04/03/2024'",
        ),
        ("2024-03-04,45,46,44,45.5,10,5\n2024-03-04,45,46,44,45.6,10,5\n", r"2024-03-04 \(line 2\).*more than once"),
        ("2024-03-04,45,46,44,abc,10,5\n", r"column 'close' is not a number at line 2: 'abc'"),
        ("2024-03-04,45,46,44,,10,5\n", r"column 'close' is empty.*line 2"),
    ],
    ids=["unparseable date", "duplicate date", "non-numeric price", "missing close"],
)
def test_bad_daily_csv_is_refused_naming_file_line_and_column(tmp_path, body, message):
    path = write(tmp_path, "daily/ZL.csv", HEADER + body)
    with pytest.raises(RawDataError, match=message) as caught:
        LocalFilesSource(root=str(tmp_path)).fetch(raw_dataset("zl_ohlcv_1d"), dt.date(2024, 3, 1), dt.date(2024, 3, 8))
    assert str(path) in str(caught.value)


def test_negative_price_in_a_csv_is_refused_before_anything_is_written(tmp_path):
    write(tmp_path, "daily/ZL.csv", HEADER + "2024-03-04,45,46,44,45.5,10,5\n2024-03-05,45,46,-44,45.5,10,5\n")
    source = LocalFilesSource(root=str(tmp_path))
    dataset = raw_dataset("zl_ohlcv_1d")
    frame = source.fetch(dataset, dt.date(2024, 3, 1), dt.date(2024, 3, 8))
    store = PartitionStore(tmp_path / "lake")
    origin = source.origin(dataset)
    with pytest.raises(RawDataError, match=r"ZL.csv: .*\n  line 3, 2024-03-05: low = -44.0 is zero or below"):
        ingest(dataset, frame, store, dt.date(2024, 3, 1), dt.date(2024, 3, 8), origin=origin, received_at=NOW)
    assert store.days() == []  # the good day before it was not stored either

    # Set aside on request: the good day is taken, the bad record kept apart with what was wrong and where.
    report = ingest(
        dataset, frame, store, dt.date(2024, 3, 1), dt.date(2024, 3, 8), origin=origin, received_at=NOW, set_aside=True
    )
    assert store.days() == [dt.date(2024, 3, 4)] and report.set_aside == 1
    assert "source_line" not in store.read().collect().columns
    (aside,) = (store.root / "set_aside").glob("*.parquet")
    kept = pl.read_parquet(aside)
    assert kept["source_line"].to_list() == [3] and kept["origin"].to_list() == [origin]
    assert kept["problems"].to_list() == ["low = -44.0 is zero or below, where ZL never trades"]


def test_fred_missing_marker_is_a_null_and_nan_is_refused(tmp_path):
    write(tmp_path, "fred/DGS10.csv", "date,value\n2024-03-04,4.1\n2024-03-05,.\n2024-03-06,\n2024-03-07,4.2\n")
    source = LocalFilesSource(root=str(tmp_path))
    frame = source.fetch(raw_dataset("fred_dgs10"), dt.date(2024, 3, 1), dt.date(2024, 3, 8))
    assert frame["value"].to_list() == [4.1, None, None, 4.2] and frame["value"].null_count() == 2
    write(tmp_path, "fred/DGS10.csv", "date,value\n2024-03-04,4.1\n2024-03-05,NaN\n")
    frame = source.fetch(raw_dataset("fred_dgs10"), dt.date(2024, 3, 1), dt.date(2024, 3, 8))
    with pytest.raises(RawDataError, match=r"DGS10.csv: .*\n  line 3, 2024-03-05: value = nan is not a finite number"):
        ingest(
            raw_dataset("fred_dgs10"),
            frame,
            PartitionStore(tmp_path / "lake"),
            dt.date(2024, 3, 1),
            dt.date(2024, 3, 8),
            origin=source.origin(raw_dataset("fred_dgs10")),
            received_at=NOW,
        )


def test_empty_csv_and_absent_folder_say_what_to_do(tmp_path):
    write(tmp_path, "daily/ZL.csv", "")
    with pytest.raises(RawDataError, match=r"ZL.csv: the file is empty; it needs the header date,open"):
        LocalFilesSource(root=str(tmp_path)).fetch(raw_dataset("zl_ohlcv_1d"), dt.date(2024, 3, 1), dt.date(2024, 3, 8))
    with pytest.raises(RawDataError, match=r"nowhere: the folder of local files does not exist. Set CBI_LOCAL_DIR"):
        LocalFilesSource(root=str(tmp_path / "nowhere")).fetch(
            raw_dataset("zl_ohlcv_1d"), dt.date(2024, 3, 1), dt.date(2024, 3, 8)
        )


def test_missing_file_names_what_was_expected(tmp_path):
    with pytest.raises(
        RawDataError, match=r"no mes_ohlcv_1m \(MES\): expected .*dbn/GLBX.MDP3/\*.dbn.zst with ohlcv-1m"
    ):
        LocalFilesSource(root=str(tmp_path)).fetch(
            raw_dataset("mes_ohlcv_1m"), dt.date(2024, 3, 1), dt.date(2024, 3, 8)
        )


def test_real_daily_futures_and_fred_series(real_data):
    source = LocalFilesSource(root=str(real_data))
    zl = source.fetch(raw_dataset("zl_ohlcv_1d"), dt.date(2008, 1, 1), dt.date(2008, 12, 31))
    assert 245 <= zl.height <= 256
    assert zl["close"].max() > 60 and zl["close"].min() < 35  # soybean oil's 2008 boom and bust
    cpi = source.fetch(raw_dataset("fred_cpiaucsl"), dt.date(2019, 1, 1), dt.date(2019, 12, 31))
    assert cpi.height == 11 and cpi["ts_event"].dt.day().unique().to_list() == [1]
    dff = source.fetch(raw_dataset("fred_dff"), dt.date(2019, 1, 1), dt.date(2019, 1, 31))
    assert dff.height == 31  # published for every calendar day


@pytest.mark.integration
def test_real_files_ingest_into_the_raw_layer(real_data, tmp_path):
    """The real ZL file has six settlements outside their day's range: refused, naming each line, or, when
    asked, taken without them."""
    source = LocalFilesSource(root=str(real_data))
    dataset = raw_dataset("zl_ohlcv_1d")
    start, end = dt.date(2000, 1, 1), dt.date(2019, 11, 5)
    store = PartitionStore(tmp_path)
    frame = source.fetch(dataset, start, end)
    origin = source.origin(dataset)
    with pytest.raises(RawDataError, match=r"line 3023, 2012-01-17: open = 50.91 lies outside"):
        ingest(dataset, frame, store, start, end, origin=origin, received_at=NOW)
    assert store.days() == []
    report = ingest(dataset, frame, store, start, end, origin=origin, received_at=NOW, set_aside=True)
    assert report.days == 4983 and len(report.new) == 4983 and report.set_aside == 6
    again = ingest(dataset, frame, store, start, end, origin=origin, received_at=NOW, set_aside=True)
    assert len(again.unchanged) == 4983 and not again.new and not again.revised
    assert len(list((store.root / "set_aside").glob("*.parquet"))) == 1  # the same six records, kept once


DBN_SCHEMAS = {
    "ohlcv-1d": "es_ohlcv_1d",
    "ohlcv-1m": "mes_ohlcv_1m",
    "trades": "mes_trades",
    "tbbo": "mes_tbbo",
    "mbp-10": "mes_mbp_10",
    "definition": "mes_definition",
}


@pytest.mark.parametrize("schema", list(DBN_SCHEMAS))
def test_databento_sample_files_parse_through_the_raw_layer(real_data, tmp_path, schema):
    """Databento's own GLBX.MDP3 files (ES, Dec 2020) go through the same reader, checks and store."""
    folder = tmp_path / "dbn" / "GLBX.MDP3"
    folder.mkdir(parents=True)
    shutil.copy(real_data / "dbn" / "GLBX.MDP3" / f"test_data.{schema}.dbn.zst", folder)
    # They hold ES records; read them as the dataset of that schema for ES.
    base = raw_dataset(DBN_SCHEMAS[schema])
    dataset = RawDataset(**{**base.__dict__, "symbol": "ES", "name": f"es_{base.name}"})
    frame = LocalFilesSource(root=str(tmp_path)).fetch(dataset, dt.date(2020, 12, 20), dt.date(2020, 12, 31))
    assert frame.height >= 1 and frame["symbol"].to_list()[0] == "ESH1"
    store = PartitionStore(tmp_path / "lake")
    report = ingest(dataset, frame, store, dt.date(2020, 12, 20), dt.date(2020, 12, 31), origin="test", received_at=NOW)
    stored = store.read().collect()
    assert report.rows == frame.height == stored.height
    assert stored["instrument_id"].unique().to_list() == [5482]
    if "price" in stored.columns:
        assert stored["price"].is_between(3600, 3800).all()  # ES near 3,700 at the end of 2020


def test_corrupt_and_truncated_dbn_files_are_refused(real_data, tmp_path):
    folder = tmp_path / "dbn" / "GLBX.MDP3"
    folder.mkdir(parents=True)
    good = (real_data / "dbn" / "GLBX.MDP3" / "test_data.ohlcv-1m.dbn.zst").read_bytes()
    dataset = RawDataset(**{**raw_dataset("mes_ohlcv_1m").__dict__, "symbol": "ES"})
    source = LocalFilesSource(root=str(tmp_path))

    (folder / "broken.dbn.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(200)))
    with pytest.raises(RawDataError, match=r"broken.dbn.zst: not a readable DBN file"):
        source.fetch(dataset, dt.date(2020, 12, 20), dt.date(2020, 12, 31))

    # A complete zstd frame whose DBN records stop 10 bytes short of the last one's end.
    whole = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(good), read_across_frames=True).read()
    (folder / "broken.dbn.zst").write_bytes(zstandard.ZstdCompressor().compress(whole[:-10]))
    with pytest.raises(RawDataError) as cut:
        source.fetch(dataset, dt.date(2020, 12, 20), dt.date(2020, 12, 31))
    assert str(cut.value) == (
        f"{folder / 'broken.dbn.zst'}: the DBN records stop in the middle of a record at byte 528 of the "
        "decompressed stream (46 of its 56 bytes are there); the last of its 3 complete records is from "
        "2020-12-28 00:02:00 UTC. The file was cut short: download it again. Nothing of this file was stored."
    )

    (folder / "broken.dbn.zst").write_bytes(good[: len(good) // 2])
    with pytest.raises(
        RawDataError, match=r"broken.dbn.zst: (not a readable DBN file|the DBN records cannot be decoded)"
    ):
        source.fetch(dataset, dt.date(2020, 12, 20), dt.date(2020, 12, 31))
