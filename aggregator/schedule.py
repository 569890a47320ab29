"""Pure polling policy: when to poll a feed next, given how its last poll went."""

from __future__ import annotations

import random
from dataclasses import dataclass

from aggregator.settings import ScheduleSettings

__all__ = ["PollOutcome", "next_poll"]


@dataclass(frozen=True)
class PollOutcome:
    status: str  # "ok", "not_modified", "error", "gone"
    ttl_minutes: int | None = None  # RSS <ttl>
    max_age: float | None = None  # seconds, Cache-Control / Expires
    retry_after: float | None = None  # seconds, Retry-After (429, 503)


@dataclass(frozen=True)
class PollPlan:
    status: str  # stored feed status: ok, not_modified, error, broken, gone
    next_poll_at: float | None
    interval_minutes: float
    failures: int
    error_since: float | None


def next_poll(
    outcome: PollOutcome,
    *,
    failures: int,
    error_since: float | None,
    now: float,
    settings: ScheduleSettings,
    rng: random.Random | None = None,
    own_minutes: float | None = None,
    last_minutes: float | None = None,
) -> PollPlan:
    """Plan the next poll.

    Success: the feed's ``ttl`` or the default interval, lengthened by its HTTP
    freshness (``Cache-Control: max-age``, ``Expires``: a short or zero one is a
    server's default, not a request to be polled more often), clamped to [min,
    max]; an admin's interval for the feed (``own_minutes``) replaces the default,
    and a hint from the feed can only lengthen it (no setting makes us poll a
    publisher more often than it asks).  Failure: exponential back-off from that
    interval, never shorter than the interval of the last poll (``last_minutes``:
    a feed polled daily is not polled more often because it fails), capped (or at
    that interval if longer); ``Retry-After`` is honoured within the cap; failing
    for longer than ``broken_after_hours`` marks the feed broken (polled only at
    the cap).  410 Gone stops polling.
    """
    rng = rng or random.Random()
    lo, hi = settings.min_interval_minutes, settings.max_interval_minutes
    base = own_minutes if own_minutes is not None else settings.default_interval_minutes
    if outcome.status == "gone":
        return PollPlan("gone", None, 0.0, failures + 1, error_since or now)
    if outcome.status in ("ok", "not_modified"):
        interval = float(outcome.ttl_minutes) if outcome.ttl_minutes else base
        if own_minutes is not None:
            interval = max(interval, own_minutes)
        if outcome.max_age is not None:
            interval = max(interval, outcome.max_age / 60.0)
        interval = min(max(interval, lo), hi)
        jittered = interval * (1 + rng.uniform(0, settings.jitter))
        return PollPlan(outcome.status, now + jittered * 60, interval, 0, None)
    failures += 1
    since = error_since if error_since is not None else now
    # (never beyond what a plan can reach now: the limits may have been lowered since)
    floor = min(last_minutes or 0.0, max(hi, settings.backoff_max_minutes, lo))
    cap = max(settings.backoff_max_minutes, floor)
    backoff = min(max(base * (2 ** min(failures - 1, 30)), floor), cap)
    if outcome.retry_after is not None:
        backoff = min(max(backoff, outcome.retry_after / 60.0), max(cap, lo))
    broken = now - since >= settings.broken_after_hours * 3600
    if broken:
        backoff = cap
    interval = max(backoff, lo)
    jittered = interval * (1 + rng.uniform(0, settings.jitter))
    return PollPlan("broken" if broken else "error", now + jittered * 60, interval, failures, since)
