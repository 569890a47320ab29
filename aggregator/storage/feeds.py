"""Feeds: subscriptions and their polling state."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlite_utils import Database

from aggregator.models import Feed

__all__ = [
    "add",
    "all_feeds",
    "any_requested",
    "claim",
    "count",
    "due",
    "get",
    "get_by_url",
    "release",
    "remove",
    "requested",
    "set_paused",
    "update_state",
]

_COLUMNS = (
    "id, url, title, site_url, added_at, paused, status, last_error, last_polled_at, "
    "next_poll_at, failures, items_total, etag, last_modified, interval_minutes, "
    "error_since, polls, not_modified, fetch_ms_total, last_items_added, poll_minutes, "
    "poll_requested_at, last_items_updated, warning, ttl_minutes"
)


def _feed(row: tuple[Any, ...]) -> Feed:
    return Feed(
        id=row[0],
        url=row[1],
        title=row[2],
        site_url=row[3],
        added_at=row[4],
        paused=bool(row[5]),
        status=row[6],
        last_error=row[7],
        last_polled_at=row[8],
        next_poll_at=row[9],
        failures=row[10],
        items_total=row[11],
        etag=row[12],
        last_modified=row[13],
        interval_minutes=row[14],
        error_since=row[15],
        polls=row[16],
        not_modified=row[17],
        fetch_ms_total=row[18],
        last_items_added=row[19],
        poll_minutes=row[20],
        poll_requested_at=row[21],
        last_items_updated=row[22],
        warning=row[23],
        ttl_minutes=row[24],
    )


def add(db: Database, url: str, now: float, title: str | None = None) -> tuple[Feed, bool]:
    """Subscribe to ``url``; returns the feed and whether it was new."""
    existing = get_by_url(db, url)
    if existing is not None:
        return existing, False
    with db.atomic():  # another process may add the same URL meanwhile: then it is not new
        cur = db.execute(
            "INSERT INTO feeds (url, title, added_at, next_poll_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (url) DO NOTHING",
            [url, title, now, now],
        )
        new = cur.rowcount == 1
    feed = get_by_url(db, url)
    assert feed is not None
    return feed, new


def get(db: Database, feed_id: int) -> Feed | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM feeds WHERE id = ?", [feed_id]).fetchone()
    return _feed(row) if row else None


def get_by_url(db: Database, url: str) -> Feed | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM feeds WHERE url = ?", [url]).fetchone()
    return _feed(row) if row else None


_BY_NAME = "lower(coalesce(title, url)), id"


def all_feeds(db: Database, limit: int = -1, offset: int = 0) -> list[Feed]:
    """Feeds by name (``limit`` of them from ``offset``; -1: all)."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM feeds ORDER BY {_BY_NAME} LIMIT ? OFFSET ?", [limit, offset]
    ).fetchall()
    return [_feed(r) for r in rows]


def position(db: Database, feed_id: int) -> int | None:
    """How many feeds come before this one in :func:`all_feeds`' order (None: no such feed)."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM feeds f WHERE (lower(coalesce(f.title, f.url)), f.id) < "
        "(lower(coalesce(x.title, x.url)), x.id)) FROM feeds x WHERE x.id = ?",
        [feed_id],
    ).fetchone()
    return int(row[0]) if row else None


def count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM feeds").fetchone()[0])


def due(db: Database, now: float, latest: float = math.inf) -> list[Feed]:
    """Feeds whose next poll time has come, not paused and not gone, oldest first; and
    those planned after ``latest``, the furthest any plan can reach: planned by a
    clock that was ahead and has been set back since (they would wait that long).
    Feeds another update has claimed (:func:`claim`) are left to it."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM feeds WHERE paused = 0 AND status != 'gone' "
        "AND (next_poll_at IS NULL OR next_poll_at <= ? OR next_poll_at > ?) "
        "AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY next_poll_at",
        [now, latest, now],
    ).fetchall()
    return [_feed(r) for r in rows]


def requested(db: Database, now: float) -> list[Feed]:
    """Feeds an admin asked to poll now (paused or gone ones too), earliest request
    first; not those another update has claimed."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM feeds WHERE poll_requested_at IS NOT NULL "
        "AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY poll_requested_at, id",
        [now],
    ).fetchall()
    return [_feed(r) for r in rows]


def any_requested(db: Database, now: float) -> bool:
    """Whether a poll is asked for (one indexed look-up: the poller asks every second)."""
    return (
        db.execute(
            "SELECT 1 FROM feeds WHERE poll_requested_at IS NOT NULL "
            "AND (claimed_until IS NULL OR claimed_until <= ?) LIMIT 1",
            [now],
        ).fetchone()
        is not None
    )


def claim(db: Database, feed_ids: Sequence[int], now: float, until: float) -> set[int]:
    """Take these feeds to poll until ``until``; returns those taken (not those another
    update holds).  Call inside a write transaction."""
    rows = db.execute(
        "UPDATE feeds SET claimed_until = ? WHERE id IN (SELECT value FROM json_each(?)) "
        "AND (claimed_until IS NULL OR claimed_until <= ?) RETURNING id",
        [until, json.dumps(list(feed_ids)), now],
    ).fetchall()
    return {r[0] for r in rows}


def release(db: Database, feed_ids: Sequence[int], until: float) -> None:
    """Give back the claims :func:`claim` made until ``until`` (not a later update's)."""
    db.execute(
        "UPDATE feeds SET claimed_until = NULL WHERE id IN (SELECT value FROM json_each(?)) "
        "AND claimed_until = ?",
        [json.dumps(list(feed_ids)), until],
    )


def set_paused(db: Database, feed_id: int, paused: bool) -> None:
    with db.atomic():
        db.execute("UPDATE feeds SET paused = ? WHERE id = ?", [int(paused), feed_id])


def update_state(db: Database, feed_id: int, fields: Mapping[str, Any]) -> None:
    """Write polling state.  ``fields`` keys are column names; counters use ``+=`` names."""
    sets: list[str] = []
    params: list[Any] = []
    for key, value in fields.items():
        if key.endswith("+"):
            column = key[:-1]
            sets.append(f"{column} = {column} + ?")
        else:
            column = key
            sets.append(f"{column} = ?")
        if column not in _WRITABLE:
            raise ValueError(f"not a feed state column: {column}")
        params.append(value)
    if not sets:
        return
    params.append(feed_id)
    db.execute(f"UPDATE feeds SET {', '.join(sets)} WHERE id = ?", params)


_WRITABLE = frozenset(
    {
        "url",
        "title",
        "site_url",
        "status",
        "last_error",
        "warning",
        "etag",
        "last_modified",
        "last_polled_at",
        "last_ok_at",
        "next_poll_at",
        "interval_minutes",
        "poll_minutes",
        "failures",
        "error_since",
        "polls",
        "not_modified",
        "fetch_ms_total",
        "items_total",
        "last_items_added",
        "last_items_updated",
        "poll_requested_at",
        "paused",
        "ttl_minutes",
    }
)


def remove(db: Database, feed_id: int) -> list[int]:
    """Delete a feed and its items; returns the clusters that lost members."""
    rows = db.execute(
        "SELECT DISTINCT m.cluster_id FROM memberships m JOIN items i ON i.id = m.item_id "
        "WHERE i.feed_id = ?",
        [feed_id],
    ).fetchall()
    db.execute("DELETE FROM feeds WHERE id = ?", [feed_id])
    return [r[0] for r in rows]


def names_version(db: Database) -> str:
    """Every feed's id and display name: changes when an outlet is added, removed or renamed."""
    row = db.execute(
        "SELECT group_concat(id || ':' || coalesce(title, url), char(10)) FROM "
        "(SELECT id, title, url FROM feeds ORDER BY id)"
    ).fetchone()
    return str(row[0] or "")


def names_of(db: Database, feed_ids: Sequence[int]) -> str:
    """:func:`names_version` of some feeds only (a story's)."""
    ids = sorted(set(feed_ids))
    if not ids:
        return ""
    row = db.execute(
        "SELECT group_concat(id || ':' || coalesce(title, url), char(10)) FROM "
        f"(SELECT id, title, url FROM feeds WHERE id IN ({', '.join('?' * len(ids))}) ORDER BY id)",
        ids,
    ).fetchone()
    return str(row[0] or "")


def state_version(db: Database) -> tuple[Any, ...]:
    """A cheap fingerprint of every feed's polling state (changes at each poll, and when
    an admin sets a feed's interval, asks for a poll or changes its address)."""
    row = db.execute(
        "SELECT count(*), total(polls), max(last_polled_at), total(failures), total(paused), "
        "group_concat(status, ','), total(next_poll_at), total(poll_minutes), "
        "total(poll_requested_at), total(length(url)) FROM feeds"
    ).fetchone()
    return tuple(row)
