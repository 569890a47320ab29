from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from aggregator.schedule import PollOutcome, next_poll
from aggregator.settings import ScheduleSettings

S = ScheduleSettings(jitter=0.0)
NOW = 1_000_000.0


def plan(outcome: PollOutcome, failures: int = 0, error_since: float | None = None, now: float = NOW):  # type: ignore[no-untyped-def]
    return next_poll(
        outcome, failures=failures, error_since=error_since, now=now, settings=S, rng=random.Random(1)
    )


def test_success_uses_default_interval() -> None:
    p = plan(PollOutcome("ok"))
    assert p.status == "ok" and p.failures == 0 and p.error_since is None
    assert p.next_poll_at == NOW + S.default_interval_minutes * 60


def test_feed_hints_are_respected_within_bounds() -> None:
    assert plan(PollOutcome("ok", ttl_minutes=120)).interval_minutes == 120
    assert plan(PollOutcome("ok", max_age=3600 * 3)).interval_minutes == 180
    assert plan(PollOutcome("ok", ttl_minutes=1)).interval_minutes == S.min_interval_minutes
    assert plan(PollOutcome("ok", ttl_minutes=10**6)).interval_minutes == S.max_interval_minutes


def test_http_freshness_only_lengthens_the_interval() -> None:
    """``max-age=0``, a past ``Expires`` or ``max-age=60`` (servers' defaults) made us poll
    at the minimum interval, six times as often as the default."""
    for seconds in (0.0, 60.0, 600.0):
        assert plan(PollOutcome("ok", max_age=seconds)).interval_minutes == S.default_interval_minutes
    assert plan(PollOutcome("ok", ttl_minutes=10, max_age=0.0)).interval_minutes == 10  # the feed's own ttl


def test_failures_never_poll_more_often_than_the_feed_was_polled() -> None:
    """A feed polled daily (its ttl) that starts answering 429 was polled after 30, 60,
    120... minutes: more often than while it worked."""

    def fail(failures: int, last: float, retry_after: float | None = None) -> float:
        outcome = PollOutcome("error", retry_after=retry_after)
        return next_poll(
            outcome, failures=failures, error_since=NOW, now=NOW, settings=S, last_minutes=last
        ).interval_minutes

    assert [fail(f, 1440) for f in range(4)] == [1440] * 4
    assert fail(0, 1440, retry_after=60) == 1440
    assert [fail(f, 30) for f in range(3)] == [30, 60, 120]
    # An interval from before the limits were lowered is no floor beyond them (the feed
    # then counted as planned by a wrong clock, and was polled at every tick).
    assert fail(3, 10**6) == max(S.max_interval_minutes, S.backoff_max_minutes)


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    intervals = []
    failures, since = 0, None
    for _ in range(12):
        p = plan(PollOutcome("error"), failures, since)
        failures, since = p.failures, p.error_since
        intervals.append(p.interval_minutes)
    assert intervals[:3] == [30, 60, 120]
    assert max(intervals) == S.backoff_max_minutes
    assert intervals == sorted(intervals)


def test_an_admins_interval_replaces_the_default_but_not_a_longer_hint() -> None:
    def own(outcome: PollOutcome, minutes: float, failures: int = 0):  # type: ignore[no-untyped-def]
        return next_poll(
            outcome, failures=failures, error_since=None, now=NOW, settings=S, own_minutes=minutes
        )

    assert own(PollOutcome("ok"), 10).interval_minutes == 10
    assert own(PollOutcome("not_modified"), 240).interval_minutes == 240
    assert own(PollOutcome("ok", ttl_minutes=60), 10).interval_minutes == 60  # the feed asks for less
    assert own(PollOutcome("ok", ttl_minutes=60), 120).interval_minutes == 120
    assert own(PollOutcome("ok"), 0.5).interval_minutes == S.min_interval_minutes
    # Failures back off from the feed's own interval.
    assert [own(PollOutcome("error"), 10, f).interval_minutes for f in range(3)] == [10, 20, 40]


def test_retry_after_is_honoured() -> None:
    assert plan(PollOutcome("error", retry_after=7200)).interval_minutes == 120


def test_broken_after_configured_time_and_gone_stops() -> None:
    p = plan(PollOutcome("error"), failures=3, error_since=NOW - S.broken_after_hours * 3600)
    assert p.status == "broken" and p.interval_minutes == S.backoff_max_minutes
    gone = plan(PollOutcome("gone"))
    assert gone.status == "gone" and gone.next_poll_at is None


@given(
    st.sampled_from(["ok", "not_modified", "error", "gone"]),
    st.one_of(st.none(), st.integers(-5, 10**7)),
    st.one_of(st.none(), st.floats(0, 10**9)),
    st.one_of(st.none(), st.floats(0, 10**9)),
    st.integers(0, 100),
    st.one_of(st.none(), st.floats(1, 43200)),
)
def test_next_poll_is_always_in_the_future_and_bounded(
    status: str, ttl: int | None, max_age: float | None, retry: float | None, failures: int, own: float | None
) -> None:
    s = ScheduleSettings()
    p = next_poll(
        PollOutcome(status, ttl, max_age, retry),
        failures=failures,
        error_since=None,
        now=NOW,
        settings=s,
        own_minutes=own,
    )
    if status == "gone":
        assert p.next_poll_at is None
        return
    assert p.next_poll_at is not None
    lo = s.min_interval_minutes * 60
    hi = max(s.max_interval_minutes, s.backoff_max_minutes) * 60 * (1 + s.jitter)
    assert NOW + lo <= p.next_poll_at <= NOW + hi
