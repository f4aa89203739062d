"""Which executions a batch of events calls for (``projections.dispatch.plan``)."""

from __future__ import annotations

from chainloom.projections.dispatch import depth_of, plan
from chainloom.queries.functions import Listener


def event(nid: int, event_type: str = "t", source: str = "s", depth: int | None = None) -> dict:
    metadata = {} if depth is None else {"trigger_depth": depth}
    return {"nid": nid, "id": f"e{nid}", "event_type": event_type, "event_source": source, "metadata": metadata}


def listener(trigger: str, function: str, *, source: str = "", active_from: int = 0) -> Listener:
    return Listener(trigger=trigger, function=function, script="", source=source, active_from=active_from, created_at_ns=0)


def test_a_function_runs_once_per_event_for_its_newest_trigger():
    listeners = {"t": [listener("newest", "f"), listener("older", "f"), listener("other", "g")]}
    jobs, last = plan([event(1), event(2)], listeners, max_depth=16)
    assert [(j.event["nid"], j.listener.trigger) for j in jobs] == [(1, "newest"), (1, "other"), (2, "newest"), (2, "other")]
    assert last == 2


def test_triggers_see_only_later_events_of_their_source():
    listeners = {"t": [listener("late", "f", active_from=5), listener("shop", "g", source="shop")]}
    jobs, _ = plan([event(5, source="shop"), event(6, source="web"), event(7, source="shop")], listeners, max_depth=16)
    assert [(j.event["nid"], j.listener.trigger) for j in jobs] == [(5, "shop"), (6, "late"), (7, "late"), (7, "shop")]


def test_events_beyond_the_depth_limit_are_not_dispatched():
    listeners = {"t": [listener("a", "f")]}
    jobs, last = plan([event(1, depth=3), event(2, depth=4), event(3, depth=5)], listeners, max_depth=4)
    assert [(j.event["nid"], j.depth) for j in jobs] == [(1, 3), (2, 4)]  # at the limit: planned, then refused
    assert last == 3


def test_a_batch_ends_after_whole_events_once_it_has_enough_jobs():
    listeners = {"t": [listener("a", "f"), listener("b", "g")]}
    jobs, last = plan([event(n) for n in range(1, 6)], listeners, max_depth=16, max_jobs=3)
    assert [j.event["nid"] for j in jobs] == [1, 1, 2, 2] and last == 2
    assert plan([], listeners, max_depth=16) == ([], 0)


def test_the_depth_of_an_event_comes_from_its_metadata():
    assert [depth_of(e) for e in (event(1), event(2, depth=2), {"metadata": {"trigger_depth": "9"}}, {"metadata": None})] == [0, 2, 0, 0]
    assert depth_of({"metadata": {"trigger_depth": True}}) == 0
