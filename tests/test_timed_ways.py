"""The per-shape timing of the convolutions' ways: in turns, each way's best call."""

import itertools
from types import SimpleNamespace

from sft.models import timed_ways


def test_the_ways_are_timed_in_turns_and_keep_their_best_call(monkeypatch):
    """A slow spell of a shared machine falls on every way alike (the ways used to be timed one
    after the other)."""
    monkeypatch.setattr(timed_ways, "TIMED_CALLS", 3)
    # the timed calls' durations in the order they run: a 3, b 2, a 1, b 4, a 5, b 6
    clock = itertools.accumulate([0, 3, 0, 2, 0, 1, 0, 4, 0, 5, 0, 6])
    monkeypatch.setattr(timed_ways, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    calls = []
    ways = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    assert timed_ways.time_ways(ways) == {"a": 1, "b": 2}
    assert calls == ["a", "b"] * 4  # one untimed call each, then 3 rounds
