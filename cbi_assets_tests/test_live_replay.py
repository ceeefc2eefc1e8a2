"""Replay's pace and stop: recorded records reach the service's callback no sooner than `pace` times the recorded
speed allows, and a set stop ends the replay between two records. Only lower bounds on time are asserted (a sleep
never ends early); how much later a loaded machine delivers is not judged."""

from __future__ import annotations

import threading
import time

import databento_dbn as dbn

from cbi_assets.live.replay import replay, sent_at
from cbi_assets_tests.test_live_gateway import MES, bar, trade


class Taker:
    """The service's side of replay: the symbols it is told, and when each record reached `on_record`."""

    def __init__(self, stop_after: int | None = None, stopping: threading.Event | None = None):
        self.symbols: dict[int, str] = {}
        self.taken: list[tuple[float, object]] = []
        self.stop_after, self.stopping = stop_after, stopping

    def on_record(self, record) -> None:
        self.taken.append((time.monotonic(), record))
        if self.stop_after is not None and len(self.taken) == self.stop_after:
            self.stopping.set()


def session() -> list:
    """Four minutes as a feed sends them: each minute's trade when received, its bar at the minute's close."""
    records = []
    for minute in range(4):
        records += [trade(minute, 5_300 + minute, dbn.Side.BID), bar(minute, 5_300 + minute)]
    return records


def test_at_a_pace_each_record_waits_for_its_recorded_time():
    records, pace = session(), 1_200.0  # four recorded minutes in 0.2 s
    taker, started = Taker(), time.monotonic()
    assert replay(taker, {MES.instrument_id: "MES.v.0"}, iter(records), pace=pace) == len(records)
    assert taker.symbols == {MES.instrument_id: "MES.v.0"}
    assert [r for _, r in taker.taken] == records
    recorded = sent_at(records[0])
    for at, record in taker.taken:
        due = (sent_at(record) - recorded) / 1e9 / pace
        assert at - started >= due - 1e-6, (record, at - started, due)  # float rounding only
    assert taker.taken[-1][0] - started >= 0.19


def test_a_set_stop_ends_the_replay_between_two_records():
    stopping = threading.Event()
    taker = Taker(stop_after=3, stopping=stopping)
    assert replay(taker, {}, iter(session()), stopping=stopping) == 3
    assert len(taker.taken) == 3
