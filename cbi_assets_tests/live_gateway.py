"""A local Databento live subscription gateway on 127.0.0.1, so tests can drive the real, unmodified `databento.Live`.

It follows the protocol as databento 0.87.0's own client speaks it: `databento/live/gateway.py` (the `key=value|...`
control lines), `live/protocol.py` (greeting, CRAM challenge, authentication, `sub` lines, `start_session`, then DBN)
and `live/session.py` (reconnection: what turns a lost connection into a reconnect, and how the gap is reported).
After `start_session` a session streams the DBN metadata, one symbol mapping per subscribed symbol the gateway
knows, then the records a test fed, in the order fed, as `bytes(record)`; it then idles like a quiet market,
with heartbeats, until the client hangs up. `drop_after` cuts a session's connection the way a network does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import hashlib
import secrets
import socket
import string
import struct
import termios
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Literal

import databento_dbn as dbn

HOST = "127.0.0.1"
LSG_VERSION = "0.0.0-local"
# The gateway's heartbeat interval when the client asks for none; `live/session.py` assumes the same 30 s.
DEFAULT_HEARTBEAT_S = 30
_WAIT_S = 10.0  # how long the test's thread waits for the gateway's own thread to answer
_CRAM_ALPHABET = string.ascii_letters + string.digits  # never "|" or "=", which would break the control line
# Not market data: always passed on, whatever the session subscribed to.
_CONTROL_RECORDS = (dbn.SymbolMappingMsg, dbn.SystemMsg, dbn.ErrorMsg)


def cram_response(challenge: str, key: str) -> str:
    """The answer a client owes the challenge: sha256 of "challenge|key", then the key's last 5 characters (its
    bucket id), as `databento/common/cram.py` computes it. Written out here so a client that computed it
    differently would be refused."""
    return f"{hashlib.sha256(f'{challenge}|{key}'.encode()).hexdigest()}-{key[-5:]}"


@dataclasses.dataclass(frozen=True)
class Instrument:
    """What a subscribed symbol resolves to; the gateway announces it in a `SymbolMappingMsg`."""

    instrument_id: int
    raw_symbol: str
    publisher_id: int = 1  # GLBX.MDP3


@dataclasses.dataclass
class Subscription:
    """One `schema=...|stype_in=...|symbols=...` line as the client sent it (a list over 500 symbols comes as
    several lines, the last with is_last=True)."""

    schema: str
    stype_in: str
    symbols: list[str]
    start: int | None  # intraday replay from this UNIX time in ns; recorded, not replayed
    snapshot: bool
    id: int | None
    is_last: bool
    after_start: bool = False  # sent after start_session: recorded, not served


@dataclasses.dataclass
class GatewaySession:
    """What one connection asked for and what the gateway did with it."""

    session_id: str
    authenticated: bool = False
    dataset: str | None = None
    ts_out: bool = False
    heartbeat_interval_s: int | None = None
    client: str | None = None  # the client's user agent, e.g. "Databento/0.87.0 Python/3.11.7 Linux/6.8"
    subscriptions: list[Subscription] = dataclasses.field(default_factory=list)
    started: bool = False
    first_record: int | None = None  # the index into the feed this session streamed from
    sent: int = 0  # fed records sent (mappings and heartbeats not counted)
    dropped: bool = False  # its connection was cut by `drop_after`
    error: str | None = None  # why the gateway refused or ended it

    @property
    def schemas(self) -> list[str]:
        return list(dict.fromkeys(s.schema for s in self.subscriptions))

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(symbol for s in self.subscriptions for symbol in s.symbols))


@dataclasses.dataclass(frozen=True)
class _Drop:
    after: int
    skip: int


class LiveGateway:
    """`with LiveGateway(key, instruments={"MES.c.0": Instrument(...)}) as gateway:` serves on
    `gateway.host`:`gateway.port` from a background thread until the block ends; then every connection, the
    listening socket and the thread are closed.

    A connection that answers the challenge for `key` is accepted; any other is refused with
    `success=0|error=...`, which the client raises as `BentoError` from `subscribe`.
    """

    def __init__(self, key: str, instruments: Mapping[str, Instrument] | None = None) -> None:
        self.key = key
        self.host = HOST
        self.port = 0
        self._instruments = dict(instruments or {})
        self._feed: list[dbn.DBNRecord] = []
        self._grew = asyncio.Event()  # replaced each time the feed grows; sessions wait on the current one
        self._sessions: list[GatewaySession] = []
        self._drop: _Drop | None = None
        self._resume_at: int | None = None
        self._lock = threading.Lock()  # guards the fields above that the test's thread also touches
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-gateway", daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- The test's side ---------------------------------------------------------------------------------

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._serve, HOST, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self._shut_down())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_WAIT_S)
            self._loop.close()

    @property
    def sessions(self) -> list[GatewaySession]:
        """Every connection so far, refused ones included, in the order they came."""
        with self._lock:
            return list(self._sessions)

    def feed(self, records: Iterable[dbn.DBNRecord]) -> None:
        """Append records to the feed, which every started session streams in order: nothing is sorted or
        deduplicated, so a test can feed duplicates and records out of order. Sessions already streaming get
        them as they are fed. A session sends only the records of the schemas it subscribed to (and any
        `SystemMsg`/`ErrorMsg`/`SymbolMappingMsg` fed)."""
        records = list(records)
        if self._thread.is_alive():
            self._run(self._extend(records))
        else:
            self._feed.extend(records)

    def drop_after(self, n: int, *, resume: Literal["next", "skip"] = "next", skip: int = 0) -> None:
        """The next session to start cuts its connection, without a goodbye, after sending `n` fed records.

        The client sees a reset connection (not a clean close, which it would take as the end) and, with
        `reconnect_policy="reconnect"`, connects again. The session after the drop streams from the record after
        the last one sent (`resume="next"`), or loses the next `skip` fed records first (`resume="skip"`): the
        gap a real gateway, streaming from "now", leaves for the historical API to fill.
        """
        if n < 0:
            raise ValueError(f"drop_after: n must be 0 or more, was {n}")
        if resume == "next" and skip:
            raise ValueError(f"drop_after: resume='next' loses nothing; skip={skip} needs resume='skip'")
        if resume == "skip" and skip < 1:
            raise ValueError(f"drop_after: resume='skip' needs skip of 1 or more, was {skip}")
        with self._lock:
            self._drop = _Drop(after=n, skip=skip)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_WAIT_S)

    # --- The gateway's thread ----------------------------------------------------------------------------

    async def _extend(self, records: list[dbn.DBNRecord]) -> None:
        self._feed.extend(records)
        grew, self._grew = self._grew, asyncio.Event()
        grew.set()

    async def _shut_down(self) -> None:
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())
        # Written data leaves our buffer before `drain` returns, so a drop never discards records already sent.
        writer.transport.set_write_buffer_limits(high=0)
        with self._lock:
            session = GatewaySession(session_id=str(len(self._sessions) + 1))
            self._sessions.append(session)
        try:
            if await self._authenticate(session, reader, writer) and await self._await_start(session, reader):
                await self._stream(session, reader, writer)
        except ConnectionError:
            pass  # the client went away; there is no one to tell
        except asyncio.CancelledError:
            pass  # the gateway is closing; Python 3.11's start_server would log a cancelled handler as an error
        except ValueError as exc:
            # A line the gateway cannot parse. Once authenticated the client reads DBN, so a text reply would
            # not parse either: the gateway can only hang up.
            session.error = str(exc)
        finally:
            self._tasks.discard(asyncio.current_task())
            writer.transport.abort()  # no lingering: on a drop the socket is already gone, otherwise a plain FIN

    async def _authenticate(
        self, session: GatewaySession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        challenge = "".join(secrets.choice(_CRAM_ALPHABET) for _ in range(32))
        writer.write(f"lsg_version={LSG_VERSION}\ncram={challenge}\n".encode())
        line = await reader.readline()
        if not line:
            return False
        request = _fields(line)
        session.dataset = request.get("dataset")
        session.ts_out = request.get("ts_out") == "1"
        session.heartbeat_interval_s = (
            int(request["heartbeat_interval_s"]) if "heartbeat_interval_s" in request else None
        )
        session.client = request.get("client")
        if request.get("auth") != cram_response(challenge, self.key):
            session.error = "Authentication failed: the challenge response does not match the gateway's key."
        elif not session.dataset:
            session.error = "Authentication failed: no dataset."
        elif request.get("encoding", "dbn") != "dbn":
            session.error = f"Unsupported encoding {request['encoding']}: this gateway sends DBN only."
        elif request.get("compression", "none") != "none":
            session.error = (
                f"Unsupported compression {request['compression']}: this gateway sends uncompressed DBN only."
            )
        if session.error is not None:
            writer.write(f"success=0|error={session.error}\n".encode())
            await writer.drain()
            return False
        session.authenticated = True
        writer.write(f"success=1|session_id={session.session_id}\n".encode())
        await writer.drain()
        return True

    async def _await_start(self, session: GatewaySession, reader: asyncio.StreamReader) -> bool:
        """Record subscriptions until `start_session`; False when the client leaves first."""
        while line := await reader.readline():
            fields = _fields(line)
            if "start_session" in fields:
                return True
            session.subscriptions.append(_subscription(fields))
        return False

    async def _stream(
        self, session: GatewaySession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with self._lock:
            first, self._resume_at = self._resume_at or 0, None
            drop, self._drop = self._drop, None
        session.started, session.first_record = True, first
        wanted = {dbn.RType.from_schema(dbn.Schema.from_str(schema)) for schema in session.schemas}
        start = self._session_start(session, first, wanted)
        await _send(writer, self._metadata(session, start).encode())
        for mapping in self._mappings(session, start):
            await _send(writer, _wire(mapping, session.ts_out))

        hung_up = asyncio.create_task(self._listen(session, reader))
        heartbeat_s = session.heartbeat_interval_s or DEFAULT_HEARTBEAT_S
        index = first
        try:
            while not hung_up.done():
                if drop is not None and session.sent == drop.after:
                    await self._cut(session, writer, resume_at=index + drop.skip)
                    return
                if index < len(self._feed):
                    record = self._feed[index]
                    index += 1
                    if isinstance(record, _CONTROL_RECORDS) or record.rtype in wanted:
                        await _send(writer, _wire(record, session.ts_out))
                        session.sent += 1
                    continue
                grew = asyncio.ensure_future(self._grew.wait())
                try:
                    done, _ = await asyncio.wait(
                        {grew, hung_up}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    await _cancel(grew)
                if not done:  # a quiet market: the client takes silence past its interval as a dead gateway
                    heartbeat = dbn.SystemMsg(time.time_ns(), "Heartbeat", code=dbn.SystemCode.HEARTBEAT)
                    await _send(writer, _wire(heartbeat, session.ts_out))
        finally:
            await _cancel(hung_up)

    async def _listen(self, session: GatewaySession, reader: asyncio.StreamReader) -> None:
        """Read what the client sends while streaming; returns when it hangs up."""
        try:
            while line := await reader.readline():
                try:
                    subscription = _subscription(_fields(line))
                except ValueError:
                    continue
                session.subscriptions.append(dataclasses.replace(subscription, after_start=True))
        except ConnectionError:
            pass

    async def _cut(self, session: GatewaySession, writer: asyncio.StreamWriter, resume_at: int) -> None:
        with self._lock:
            self._resume_at = resume_at
        session.dropped = True
        await writer.drain()
        sock = writer.get_extra_info("socket")
        # A reset throws away what the kernel has not yet sent (past its first congestion window of ten
        # segments, say), so the client would lose records counted as sent: wait for the client to hold them.
        deadline = time.monotonic() + _WAIT_S
        while _unacknowledged(sock) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        # A reset, not a FIN: `DatabentoLiveProtocol.connection_lost` takes a clean close as the end of the
        # session and only an error as a reason to reconnect.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    def _session_start(self, session: GatewaySession, first: int, wanted: set[dbn.RType]) -> int:
        """The metadata's `start`, which the client reports as the end of a reconnection gap: the replay start
        asked for, else the time of the first record this session will send (the gateway's "now"), else now."""
        starts = [s.start for s in session.subscriptions if s.start is not None]
        if starts:
            return min(starts)
        for record in self._feed[first:]:
            if record.rtype in wanted:
                return record.ts_event
        return time.time_ns()

    def _metadata(self, session: GatewaySession, start: int) -> dbn.Metadata:
        # Live metadata has no schema and no stype_in, as one session mixes them (Databento's metadata docs);
        # it must come out the same on every reconnection, which `SessionMetadata.check` enforces.
        return dbn.Metadata(
            dataset=session.dataset,
            start=start,
            stype_in=None,
            stype_out=dbn.SType.INSTRUMENT_ID,
            schema=None,
            symbols=session.symbols,
            ts_out=session.ts_out,
        )

    def _mappings(self, session: GatewaySession, start: int) -> list[dbn.SymbolMappingMsg]:
        mapped: dict[tuple[str, str], dbn.SymbolMappingMsg] = {}
        for subscription in session.subscriptions:
            for symbol in subscription.symbols:
                instrument = self._instruments.get(symbol)
                if instrument is None or (subscription.stype_in, symbol) in mapped:
                    continue
                mapped[subscription.stype_in, symbol] = dbn.SymbolMappingMsg(
                    instrument.publisher_id,
                    instrument.instrument_id,
                    start,
                    dbn.SType.from_str(subscription.stype_in),
                    symbol,
                    dbn.SType.RAW_SYMBOL,
                    instrument.raw_symbol,
                    start,
                    dbn.UNDEF_TIMESTAMP,
                )
        return list(mapped.values())


def _fields(line: bytes) -> dict[str, str]:
    """A control line `k=v|k=v\\n` as a dict, parsed as `GatewayControl.parse` does."""
    return dict(token.partition("=")[::2] for token in line.decode().rstrip("\n").split("|"))


def _subscription(fields: dict[str, str]) -> Subscription:
    missing = [name for name in ("schema", "stype_in", "symbols") if name not in fields]
    if missing:
        raise ValueError(f"not a subscription request (no {', '.join(missing)}): {fields}")
    dbn.Schema.from_str(fields["schema"])  # raises ValueError on a schema Databento does not have
    return Subscription(
        schema=fields["schema"],
        stype_in=fields["stype_in"],
        symbols=fields["symbols"].split(","),
        start=int(fields["start"]) if "start" in fields else None,
        snapshot=fields.get("snapshot", "0") == "1",
        id=int(fields["id"]) if "id" in fields else None,
        is_last=fields.get("is_last", "1") == "1",
    )


def _unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on `sock` that the peer has not acknowledged yet (Linux's SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]


def _wire(record: dbn.DBNRecord, ts_out: bool) -> bytes:
    """A record as the gateway sends it; with ts_out, followed by the send time, which the header's length (in
    32-bit words) then counts."""
    body = bytes(record)[: record.size_hint]  # without a ts_out, whether or not the record was built with one
    if ts_out:
        body += time.time_ns().to_bytes(8, "little")
    return bytes([len(body) // 4]) + body[1:]


async def _cancel(task: asyncio.Future) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # let it end before the loop can stop under it


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
