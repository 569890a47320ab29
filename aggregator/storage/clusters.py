"""Clusters (stories) and memberships (which item is in which story, and why)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlite_utils import Database

from aggregator.models import ClusterDetail, ClusterSummary, MemberInfo, StoredItem, StoryFilter
from aggregator.storage import items as items_store

__all__ = [
    "add_member",
    "clear_all",
    "count",
    "create",
    "detail",
    "listing",
    "refresh",
]


def create(db: Database, now: float) -> int:
    cur = db.execute("INSERT INTO clusters (created_at, updated_at) VALUES (?, ?)", [now, now])
    return int(cur.lastrowid or 0)


def add_member(
    db: Database,
    item_id: int,
    cluster_id: int,
    score: float,
    signal: str,
    matched_item_id: int | None,
    now: float,
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO memberships (item_id, cluster_id, score, signal, matched_item_id, "
        "joined_at) VALUES (?, ?, ?, ?, ?, ?)",
        [item_id, cluster_id, score, signal, matched_item_id, now],
    )


CanonicalPolicy = Callable[[Sequence[MemberInfo]], int]


def refresh(db: Database, cluster_ids: Iterable[int], choose: CanonicalPolicy, now: float) -> None:
    """Recompute size, coverage, times and canonical item of clusters; drop empty ones."""
    for cid in sorted(set(cluster_ids)):
        rows = db.execute(
            "SELECT i.id, i.feed_id, f.title, f.url, i.sort_time, length(i.text) "
            "FROM memberships m JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id "
            "WHERE m.cluster_id = ? ORDER BY i.sort_time, i.id",
            [cid],
        ).fetchall()
        if not rows:
            db.execute("DELETE FROM clusters WHERE id = ?", [cid])
            continue
        members = [MemberInfo(*r) for r in rows]
        pinned = db.execute("SELECT pinned_item_id FROM clusters WHERE id = ?", [cid]).fetchone()
        ids = {m.item_id for m in members}
        canonical = pinned[0] if pinned and pinned[0] in ids else choose(members)
        db.execute(
            "UPDATE clusters SET canonical_item_id = ?, size = ?, n_feeds = ?, first_time = ?, "
            "last_time = ?, updated_at = ? WHERE id = ?",
            [
                canonical,
                len(members),
                len({m.feed_id for m in members}),
                members[0].sort_time,
                members[-1].sort_time,
                now,
                cid,
            ],
        )


def clear_all(db: Database) -> None:
    """Forget every cluster (before a full recluster)."""
    db.execute("DELETE FROM memberships")
    db.execute("UPDATE clusters SET canonical_item_id = NULL")
    db.execute("DELETE FROM clusters")


def count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM clusters").fetchone()[0])


_ORDER = {
    "latest": "c.last_time DESC, c.id DESC",
    "coverage": "c.n_feeds DESC, c.size DESC, c.last_time DESC, c.id DESC",
}


def listing(
    db: Database, *, sort: str = "latest", limit: int = 20, offset: int = 0, min_outlets: int = 1
) -> list[ClusterSummary]:
    """Stories, newest (or most covered) first."""
    order = _ORDER.get(sort, _ORDER["latest"])
    rows = db.execute(
        f"SELECT c.id, c.canonical_item_id, c.size, c.first_time, c.last_time, c.updated_at "
        f"FROM clusters c WHERE c.n_feeds >= ? ORDER BY {order} LIMIT ? OFFSET ?",
        [min_outlets, limit, offset],
    ).fetchall()
    return _summaries(db, rows)


def _summaries(db: Database, rows: Sequence[Sequence[Any]]) -> list[ClusterSummary]:
    canon = {s.id: s for s in items_store.get_many(db, [r[1] for r in rows if r[1] is not None])}
    outlets = _outlets(db, [r[0] for r in rows])
    out = []
    for cid, canonical_id, size, first, last, updated in rows:
        item = canon.get(canonical_id)
        if item is None:
            continue
        out.append(
            ClusterSummary(
                id=cid,
                canonical=item,
                size=size,
                outlets=tuple(outlets.get(cid, ())),
                first_seen=first,
                last_seen=last,
                updated_at=updated,
            )
        )
    return out


def _outlets(db: Database, cluster_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if not cluster_ids:
        return out
    marks = ",".join("?" * len(cluster_ids))
    rows = db.execute(
        "SELECT m.cluster_id, coalesce(f.title, f.url), min(i.sort_time) FROM memberships m "
        "JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id "
        f"WHERE m.cluster_id IN ({marks}) GROUP BY m.cluster_id, f.id ORDER BY 3",
        list(cluster_ids),
    ).fetchall()
    for cid, name, _ in rows:
        out.setdefault(cid, []).append(name)
    return out


def detail(db: Database, cluster_id: int) -> ClusterDetail | None:
    row = db.execute(
        "SELECT c.id, c.canonical_item_id, c.size, c.first_time, c.last_time, c.updated_at "
        "FROM clusters c WHERE c.id = ?",
        [cluster_id],
    ).fetchone()
    if row is None:
        return None
    summaries = _summaries(db, [row])
    if not summaries:
        return None
    ids = [
        r[0]
        for r in db.execute(
            "SELECT m.item_id FROM memberships m JOIN items i ON i.id = m.item_id "
            "WHERE m.cluster_id = ? ORDER BY i.sort_time, i.id",
            [cluster_id],
        )
    ]
    members: list[StoredItem] = items_store.get_many(db, ids)
    return ClusterDetail(summary=summaries[0], members=members)


# -- the site and the merged feeds --------------------------------------------------------


def stories(
    db: Database,
    story_filter: StoryFilter,
    match: str | None = None,
    *,
    sort: str = "latest",
    limit: int = 20,
    offset: int = 0,
) -> list[ClusterSummary]:
    """Stories passing ``story_filter``, newest (or most covered) first, with ``created_at``.

    ``match`` is an FTS5 query (see :func:`aggregator.storage.search.fts_query`) that
    one of a story's items must match; the filter's ``query`` text is not used here.
    """
    order = _ORDER.get(sort, _ORDER["latest"])
    where = ["c.n_feeds >= ?", "c.canonical_item_id IS NOT NULL"]
    params: list[Any] = [max(1, story_filter.min_outlets)]
    if story_filter.feed_id is not None:
        where.append(
            "EXISTS (SELECT 1 FROM memberships m JOIN items i ON i.id = m.item_id "
            "WHERE m.cluster_id = c.id AND i.feed_id = ?)"
        )
        params.append(story_filter.feed_id)
    if story_filter.category:
        where.append(
            "EXISTS (SELECT 1 FROM memberships m JOIN items i ON i.id = m.item_id, json_each(i.categories) j "
            "WHERE m.cluster_id = c.id AND lower(j.value) = lower(?))"
        )
        params.append(story_filter.category.strip())
    if match is not None:
        where.append(
            "c.id IN (SELECT m.cluster_id FROM items_fts JOIN memberships m ON m.item_id = items_fts.rowid "
            "WHERE items_fts MATCH ?)"
        )
        params.append(match)
    rows = db.execute(
        f"SELECT c.id, c.canonical_item_id, c.size, c.first_time, c.last_time, c.updated_at, c.created_at "
        f"FROM clusters c WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return _with_created(db, rows)


def summaries(db: Database, cluster_ids: Sequence[int]) -> list[ClusterSummary]:
    """Summaries (with ``created_at``) of the given clusters, in the order given; missing ones skipped."""
    if not cluster_ids:
        return []
    marks = ",".join("?" * len(cluster_ids))
    rows = db.execute(
        "SELECT c.id, c.canonical_item_id, c.size, c.first_time, c.last_time, c.updated_at, c.created_at "
        f"FROM clusters c WHERE c.id IN ({marks})",
        list(cluster_ids),
    ).fetchall()
    by_id = {s.id: s for s in _with_created(db, rows)}
    return [by_id[i] for i in cluster_ids if i in by_id]


def _with_created(db: Database, rows: Sequence[Sequence[Any]]) -> list[ClusterSummary]:
    created = {r[0]: r[6] for r in rows}
    return [dataclasses.replace(s, created_at=created[s.id]) for s in _summaries(db, [r[:6] for r in rows])]


def members_of(db: Database, cluster_ids: Sequence[int]) -> dict[int, list[StoredItem]]:
    """Every member item of each cluster, oldest first."""
    out: dict[int, list[StoredItem]] = {cid: [] for cid in cluster_ids}
    if not cluster_ids:
        return out
    marks = ",".join("?" * len(cluster_ids))
    ids = [
        r[0]
        for r in db.execute(
            "SELECT m.item_id FROM memberships m JOIN items i ON i.id = m.item_id "
            f"WHERE m.cluster_id IN ({marks}) ORDER BY i.sort_time, i.id",
            list(cluster_ids),
        )
    ]
    for item in items_store.get_many(db, ids):
        if item.cluster_id is not None:
            out.setdefault(item.cluster_id, []).append(item)
    return out


def version(db: Database) -> tuple[Any, ...]:
    """A cheap fingerprint of every story: latest change, how many stories, latest item.

    Any change of membership or of an item's text refreshes its cluster's
    ``updated_at``; a cluster that disappears changes the count.
    """
    row = db.execute(
        "SELECT (SELECT max(updated_at) FROM clusters), (SELECT count(*) FROM clusters), "
        "(SELECT max(id) FROM items)"
    ).fetchone()
    return tuple(row)
