"""The local live gateway against the real `databento.Live` client: authentication, subscriptions, the stream,
and a dropped connection the client reconnects after. Every wait ends on an event; the timeout only bounds a failure."""

from __future__ import annotations

import contextlib
import threading

import databento as db
import databento_dbn as dbn
import pytest

from cbi_assets.raw.dbn import PRICE_SCALE
from cbi_assets_tests.live_gateway import Instrument, LiveGateway

KEY = "db-" + "x" * 29
DATASET = "GLBX.MDP3"
MES = Instrument(instrument_id=42140878, raw_symbol="MESM4")
T0 = 1_718_028_000_000_000_000  # 2024-06-10 14:00 UTC
MINUTE = 60_000_000_000
WAIT_S = 10


def fixed(price: float) -> int:
    return round(price / PRICE_SCALE)


def bar(minute: int, close: float) -> dbn.OHLCVMsg:
    return dbn.OHLCVMsg(
        dbn.RType.OHLCV_1M,
        MES.publisher_id,
        MES.instrument_id,
        T0 + minute * MINUTE,
        open=fixed(close - 0.5),
        high=fixed(close + 0.75),
        low=fixed(close - 1.0),
        close=fixed(close),
        volume=100 + minute,
    )


def trade(minute: int, price: float, side: dbn.Side) -> dbn.MBP1Msg:
    """A tbbo record: the trade and the book's top just before it."""
    ts = T0 + minute * MINUTE + 1_000_000
    return dbn.MBP1Msg(
        MES.publisher_id,
        MES.instrument_id,
        ts,
        fixed(price),
        2,
        dbn.Action.TRADE,
        side,
        0,
        ts,
        levels=dbn.BidAskPair(bid_px=fixed(price - 0.25), ask_px=fixed(price), bid_sz=5, ask_sz=3),
    )


def fields(record) -> tuple:
    """What a consumer reads from a record; compared as tuples so a failure shows the values."""
    if isinstance(record, dbn.OHLCVMsg):
        return (
            record.instrument_id,
            record.ts_event,
            record.open,
            record.high,
            record.low,
            record.close,
            record.volume,
        )
    top = record.levels[0]
    return (record.instrument_id, record.ts_event, record.price, record.size, record.side, top.bid_px, top.ask_px)


class Received:
    """The client's record callback: keeps what arrives and lets the test wait for it."""

    def __init__(self) -> None:
        self.records: list = []
        self._arrived = threading.Condition()

    def __call__(self, record) -> None:
        with self._arrived:
            self.records.append(record)
            self._arrived.notify_all()

    def wait_for_data(self, n: int) -> list:
        def data() -> list:
            return [r for r in self.records if isinstance(r, (dbn.OHLCVMsg, dbn.MBP1Msg))]

        with self._arrived:
            assert self._arrived.wait_for(lambda: len(data()) >= n, WAIT_S), f"{len(data())} of {n} records arrived"
            return data()


@contextlib.contextmanager
def streaming(gateway: LiveGateway, schemas: list[str], received: Received, on_reconnect=None, start=None, **options):
    """A real client subscribed to MES.c.0 (continuous) in each schema and started; stopped when the block ends."""
    client = db.Live(key=KEY, gateway=gateway.host, port=gateway.port, **options)
    client.add_callback(received)
    if on_reconnect is not None:
        client.add_reconnect_callback(on_reconnect)
    for schema in schemas:
        client.subscribe(dataset=DATASET, schema=schema, stype_in="continuous", symbols=["MES.c.0"], start=start)
    client.start()
    try:
        yield client
    finally:
        client.stop()
        client.block_for_close(timeout=WAIT_S)


def test_the_client_gets_the_symbol_mapping_then_the_bars_as_fed():
    # A duplicate, a bar out of order and a tbbo record nobody subscribed to: the gateway passes on what it was
    # fed, in that order, in the schemas asked for.
    fed = [
        bar(0, 5300.25),
        bar(1, 5301.0),
        bar(1, 5301.0),
        bar(3, 5302.5),
        trade(3, 5302.5, dbn.Side.ASK),
        bar(2, 5301.75),
    ]
    received = Received()
    with LiveGateway(KEY, instruments={"MES.c.0": MES}) as gateway:
        gateway.feed(fed)
        with streaming(gateway, ["ohlcv-1m"], received) as client:
            got = received.wait_for_data(5)
        [session] = gateway.sessions

    assert [fields(r) for r in got] == [fields(r) for r in fed if isinstance(r, dbn.OHLCVMsg)]
    mapping = received.records[0]
    assert isinstance(mapping, dbn.SymbolMappingMsg)
    assert (mapping.stype_in_symbol, mapping.stype_out_symbol, mapping.instrument_id) == ("MES.c.0", "MESM4", 42140878)
    assert client.symbology_map == {42140878: "MESM4"}
    assert session.authenticated and session.dataset == DATASET
    [subscription] = session.subscriptions
    assert (subscription.schema, subscription.stype_in, subscription.symbols) == ("ohlcv-1m", "continuous", ["MES.c.0"])


def test_a_wrong_key_is_refused_with_the_clients_authentication_error():
    wrong = "db-" + "y" * 24 + KEY[-5:]  # the same bucket id: only the challenge response tells them apart
    with LiveGateway(KEY) as gateway:
        client = db.Live(key=wrong, gateway=gateway.host, port=gateway.port)
        with pytest.raises(db.BentoError, match="Authentication failed"):
            client.subscribe(dataset=DATASET, schema="ohlcv-1m", stype_in="continuous", symbols=["MES.c.0"])
        [session] = gateway.sessions
    assert not session.authenticated and not session.subscriptions


@pytest.mark.parametrize(("resume", "skip"), [("next", 0), ("skip", 1)])
def test_a_dropped_connection_reconnects_and_reports_the_gap(resume, skip):
    fed = [bar(minute, 5300.0 + minute) for minute in range(5)]
    gaps = []
    reconnected = threading.Event()

    def on_reconnect(gap_start, gap_end) -> None:
        gaps.append((gap_start.value, gap_end.value))
        reconnected.set()

    received = Received()
    with LiveGateway(KEY, instruments={"MES.c.0": MES}) as gateway:
        gateway.feed(fed)
        gateway.drop_after(2, resume=resume, skip=skip)
        with streaming(gateway, ["ohlcv-1m"], received, on_reconnect=on_reconnect, reconnect_policy="reconnect"):
            got = received.wait_for_data(len(fed) - skip)
            assert reconnected.wait(WAIT_S), "the reconnect callback was not called"
        first, second = gateway.sessions

    assert [fields(r) for r in got] == [fields(r) for r in fed[:2] + fed[2 + skip :]]
    assert first.dropped and first.sent == 2
    assert second.first_record == 2 + skip and second.subscriptions == first.subscriptions
    # From the last bar before the drop to the first after it: what the historical API must fill.
    assert gaps == [(fed[1].ts_event, fed[2 + skip].ts_event)]


def test_tbbo_is_served_beside_bars_when_subscribed():
    fed = [bar(0, 5300.25), trade(0, 5300.5, dbn.Side.BID), trade(0, 5300.25, dbn.Side.ASK), bar(1, 5300.75)]
    received = Received()
    with LiveGateway(KEY, instruments={"MES.c.0": MES}) as gateway:
        gateway.feed(fed)
        with streaming(gateway, ["ohlcv-1m", "tbbo"], received, start=T0):
            got = received.wait_for_data(len(fed))
        [session] = gateway.sessions

    assert [fields(r) for r in got] == [fields(r) for r in fed]
    assert session.schemas == ["ohlcv-1m", "tbbo"]
    assert [s.start for s in session.subscriptions] == [T0, T0]  # intraday replay asked for: recorded
