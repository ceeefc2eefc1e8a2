"""Databento Binary Encoding (DBN): decode a download into a polars frame, and encode records.

Every futures record enters the lake through `frame_from_store`, whether it came from the
Databento API, a file in a local folder or the embedded sample, so all three share one path.
"""

from __future__ import annotations

import io
from pathlib import Path

import databento as db
import databento_dbn as dbn
import numpy as np
import polars as pl
import zstandard

from cbi_assets.raw.errors import RawDataError

PRICE_SCALE = 1e-9  # DBN prices are fixed-point integers in units of 1e-9
_UNDEF_PRICE = np.int64(dbn.UNDEF_PRICE)
_UNDEF_TIMESTAMP = np.uint64(dbn.UNDEF_TIMESTAMP)

RECORD_TYPES: dict[str, type] = {
    "ohlcv-1d": dbn.OHLCVMsg,
    "ohlcv-1m": dbn.OHLCVMsg,
    "trades": dbn.TradeMsg,
    "tbbo": dbn.MBP1Msg,
    "mbp-10": dbn.MBP10Msg,
    "definition": dbn.InstrumentDefMsg,
}
RTYPES: dict[str, int] = {
    "ohlcv-1d": int(dbn.RType.OHLCV_1D),
    "ohlcv-1m": int(dbn.RType.OHLCV_1M),
    "trades": int(dbn.RType.MBP_0),
    "tbbo": int(dbn.RType.MBP_1),
    "mbp-10": int(dbn.RType.MBP_10),
    "definition": int(dbn.RType.INSTRUMENT_DEF),
}

# Instrument definitions carry ~80 fields; these are the ones a desk reads.
DEFINITION_FIELDS = (
    "ts_event",
    "ts_recv",
    "instrument_id",
    "raw_symbol",
    "asset",
    "group",
    "exchange",
    "security_type",
    "instrument_class",
    "currency",
    "expiration",
    "activation",
    "min_price_increment",
    "display_factor",
    "unit_of_measure",
    "unit_of_measure_qty",
    "min_price_increment_amount",
    "high_limit_price",
    "low_limit_price",
)
_DEFINITION_PRICES = {
    "min_price_increment",
    "high_limit_price",
    "low_limit_price",
    "min_price_increment_amount",
    "unit_of_measure_qty",
    "display_factor",
}
_TIMESTAMPS = {"ts_event", "ts_recv", "expiration", "activation"}
_HEADER_ONLY = {"length", "rtype"}


def record_dtype(schema: str) -> np.dtype:
    """The exact binary layout of one record of `schema` (DBN version 3)."""
    return np.dtype(RECORD_TYPES[schema]._dtypes)


def empty_records(schema: str, n: int) -> np.ndarray:
    """`n` zeroed records of `schema` with their header filled in, ready to be given values."""
    dtype = record_dtype(schema)
    records = np.zeros(n, dtype=dtype)
    records["length"] = dtype.itemsize // 4  # the header counts 32-bit words
    records["rtype"] = RTYPES[schema]
    records["publisher_id"] = 1  # GLBX.MDP3
    return records


def encode(
    records: np.ndarray,
    *,
    schema: str,
    dataset: str,
    symbols: list[str],
    stype_in: str,
    start_ns: int,
    end_ns: int,
    mappings: dict[str, list[tuple[str, str, int]]] | None = None,
) -> bytes:
    """Zstandard-compressed DBN: the metadata header, then the records as they lie in memory.

    `mappings` maps each requested symbol to (start_date, end_date, instrument_id) intervals,
    which is how a real download tells which instrument each record belongs to.
    """
    symbol_mappings = [
        _Mapping(symbol, [_Interval(s, e, str(i)) for s, e, i in intervals])
        for symbol, intervals in (mappings or {}).items()
    ]
    metadata = dbn.Metadata(
        dataset=dataset,
        start=start_ns,
        end=end_ns,
        schema=dbn.Schema.from_str(schema),
        stype_in=dbn.SType.from_str(stype_in),
        stype_out=dbn.SType.INSTRUMENT_ID,
        symbols=symbols,
        mappings=symbol_mappings,
    )
    raw = bytes(metadata) + records.tobytes()
    return zstandard.ZstdCompressor(level=3).compress(raw)


class _Interval:
    def __init__(self, start: str, end: str, symbol: str):
        import datetime as dt

        self.start_date = dt.date.fromisoformat(start)
        self.end_date = dt.date.fromisoformat(end)
        self.symbol = symbol


class _Mapping:
    def __init__(self, raw_symbol: str, intervals: list[_Interval]):
        self.raw_symbol = raw_symbol
        self.intervals = intervals


def open_dbn(source: Path | bytes, origin: str) -> db.DBNStore:
    """Open a DBN file or download, with an error that names it when it is not valid DBN."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return db.DBNStore.from_bytes(io.BytesIO(source))
        return db.DBNStore.from_file(source)
    except Exception as exc:  # the reader raises several types for bad headers
        raise RawDataError(
            f"{origin}: not a readable DBN file ({type(exc).__name__}: {exc}). "
            "It is corrupt or not DBN; download it again. Nothing was written."
        ) from exc


def frame_from_store(store: db.DBNStore, origin: str) -> pl.DataFrame:
    """Decode every record of a DBN store into a typed frame with real prices and UTC times."""
    schema = str(store.schema) if store.schema is not None else None
    if schema not in RECORD_TYPES:
        raise RawDataError(f"{origin}: DBN schema {schema!r} is not one the lake takes ({', '.join(RECORD_TYPES)})")
    refuse_cut_short(store, origin)
    try:
        records = store.to_ndarray()
    except Exception as exc:
        raise RawDataError(
            f"{origin}: the DBN records cannot be decoded ({type(exc).__name__}: {exc}). "
            "The file is truncated or corrupt; download it again. Nothing was written."
        ) from exc
    records = np.asarray(records).reshape(-1)
    frame = frame_from_records(records, schema)
    symbols = _symbol_of_instrument(store)
    symbol = frame["instrument_id"].replace_strict(symbols, default=None, return_dtype=pl.String)
    return frame.with_columns(symbol.alias("symbol"))


def refuse_cut_short(store: db.DBNStore, origin: str) -> None:
    """Raise when the records do not end on a record boundary: the decoder would drop the partial last
    record without a word, and the days it belonged to would be missing from the lake for good."""
    stream = store.reader  # the decompressed DBN stream from its first byte
    header = stream.read(8)  # "DBN", the version, then the metadata's length
    metadata_length = int.from_bytes(header[4:8], "little")
    stream.read(metadata_length)
    tail = stream.read(16)
    if not tail:
        return
    size = tail[0] * 4  # each record's first byte is its length in 32-bit words; one schema, one length
    total = len(tail)
    while chunk := stream.read(1 << 22):
        total += len(chunk)
        tail = (tail + chunk)[-2 * size :]
    cut = total % size if size else total
    if not cut:
        return
    complete = total - cut
    offset = 8 + metadata_length + complete
    if complete:
        last = tail[len(tail) - cut - size : len(tail) - cut]
        when = f"the last of its {complete // size:,} complete records is from {_timestamp_text(last[8:16])}"
    else:
        when = "no record in it is complete"
    raise RawDataError(
        f"{origin}: the DBN records stop in the middle of a record at byte {offset:,} of the decompressed "
        f"stream ({cut} of its {size} bytes are there); {when}. The file was cut short: download it again. "
        "Nothing of this file was stored."
    )


def _timestamp_text(raw: bytes) -> str:
    ns = int.from_bytes(raw, "little")
    return np.datetime64(ns, "ns").astype("datetime64[s]").item().isoformat(sep=" ") + " UTC"


def frame_from_records(records: np.ndarray, schema: str) -> pl.DataFrame:
    names = DEFINITION_FIELDS if schema == "definition" else [n for n in records.dtype.names if n not in _HEADER_ONLY]
    columns: dict[str, pl.Series] = {}
    for name in names:
        values = records[name]
        if name in _TIMESTAMPS:
            columns[name] = _timestamps(name, values)
        elif values.dtype.kind == "S":
            columns[name] = pl.Series(name, values).cast(pl.Binary).cast(pl.String).replace("", None)
        elif _is_price(name, schema):
            columns[name] = _prices(name, values)
        else:
            columns[name] = pl.Series(name, values)
    return pl.DataFrame(columns)


def records_from_frame(frame: pl.DataFrame, schema: str) -> np.ndarray:
    """The DBN records of a frame `frame_from_records` made (the lake's rows back into the wire's layout):
    real prices back to fixed point, nulls back to the undefined values, UTC times back to nanoseconds."""
    if schema == "definition":
        raise ValueError("instrument definitions are stored in part; they cannot be turned back into records")
    records = empty_records(schema, frame.height)
    for name in records.dtype.names:
        if name in _HEADER_ONLY or name not in frame.columns:
            continue
        column = frame[name]
        if name in _TIMESTAMPS:
            ns = column.dt.cast_time_unit("ns").dt.replace_time_zone(None).cast(pl.Int64).fill_null(0)
            records[name] = np.where(column.is_null().to_numpy(), _UNDEF_TIMESTAMP, ns.to_numpy().astype(np.uint64))
        elif records.dtype[name].kind == "S":
            records[name] = column.fill_null("").cast(pl.Binary).to_numpy().astype(records.dtype[name])
        elif _is_price(name, schema):
            fixed = (column / PRICE_SCALE).round().cast(pl.Int64)
            records[name] = fixed.fill_null(int(_UNDEF_PRICE)).to_numpy()
        else:
            records[name] = column.to_numpy()
    return records


def _is_price(name: str, schema: str) -> bool:
    if schema == "definition":
        return name in _DEFINITION_PRICES
    return name in ("price", "open", "high", "low", "close") or "_px_" in name


def _prices(name: str, values: np.ndarray) -> pl.Series:
    prices = values.astype(np.float64) * PRICE_SCALE
    return pl.Series(name, prices).set(pl.Series(values == _UNDEF_PRICE), None)


def _timestamps(name: str, values: np.ndarray) -> pl.Series:
    ns = pl.Series(name, values.astype(np.int64))
    undefined = pl.Series(values == _UNDEF_TIMESTAMP)
    return ns.set(undefined, None).cast(pl.Datetime("ns", "UTC"))


def _symbol_of_instrument(store: db.DBNStore) -> dict[int, str]:
    """instrument_id -> the symbol it was requested as, from the download's symbology mappings."""
    out: dict[int, str] = {}
    for requested, intervals in store.mappings.items():
        for interval in intervals:
            try:
                out[int(interval["symbol"])] = requested
            except (TypeError, ValueError):
                continue
    return out
