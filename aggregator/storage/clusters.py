"""Clusters (stories) and memberships (which item is in which story, and why)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlite_utils import Database

from aggregator.models import (
    STORY_SORT_KEYS,
    ClusterDetail,
    ClusterSummary,
    MemberInfo,
    StoredItem,
    StoryCursor,
    StoryFilter,
    outlet_name,
)
from aggregator.storage import items as items_store
from aggregator.storage import meta as meta_store
from aggregator.storage import next_id_sql

__all__ = [
    "add_member",
    "clear_all",
    "count",
    "create",
    "detail",
    "grow",
    "listing",
]


# A story's number is never given to another story (a reader's old link or feed
# item would show an unrelated one): past the highest number ever used, which a
# trigger keeps in ``meta`` as clusters are deleted (migration 0012).
_NEXT_ID = next_id_sql("clusters", "cluster_id_high")


def create(db: Database, now: float) -> int:
    cur = db.execute(
        f"INSERT INTO clusters (id, created_at, updated_at) VALUES ({_NEXT_ID}, ?, ?)", [now, now]
    )
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

# meta key: how many re-clusterings have swapped every story (part of story_version).
STORIES_REPLACED = "stories_replaced"

# One cluster's stored summary: (canonical item, size, outlets, first, last, updated_at, id).
_SET_SUMMARY = (
    "UPDATE clusters SET canonical_item_id = ?, size = ?, n_feeds = ?, first_time = ?, last_time = ?, "
    "updated_at = ?, outlets = ? WHERE id = ?"
)


def _outlet_list(reports: Iterable[tuple[int, float]]) -> list[list[Any]]:
    """A story's outlets from its members' (feed id, time): [feed id, first report],
    first report first (ties by feed id)."""
    first: dict[int, float] = {}
    for feed_id, t in reports:
        if feed_id not in first or t < first[feed_id]:
            first[feed_id] = t
    return sorted(([f, t] for f, t in first.items()), key=lambda p: (p[1], p[0]))


def _outlets_json(outlets: list[list[Any]]) -> str:
    """``clusters.outlets`` (migration 0015): the list of :func:`_outlet_list` as JSON.
    Kept with the story's other counts, so that a page of stories reads a row per story
    rather than every member's item (a story told 300 times read 300 items)."""
    return json.dumps(outlets, separators=(",", ":"))


def _feed_names(db: Database, feed_ids: Iterable[int]) -> dict[int, str]:
    """Feed id -> the outlet name shown for it (:func:`outlet_name`)."""
    return {
        feed_id: outlet_name(title, url)
        for feed_id, title, url in _select_in(
            db, "SELECT id, title, url FROM feeds WHERE id IN ({marks})", sorted(set(feed_ids))
        )
    }


def _n_outlets(outlets: Iterable[Sequence[Any]], names: Mapping[int, str]) -> int:
    """How many outlets a story's outlet list names: feeds under one name are one outlet
    ("Reuters" for its world and its business news), as the pages list them.  This is
    ``clusters.n_feeds``, the count the filters and the coverage order use."""
    return len({names.get(pair[0], pair[0]) for pair in outlets})


def _members_outlets(members: Sequence[MemberInfo]) -> tuple[list[list[Any]], int]:
    """A story's outlet list (:func:`_outlet_list`) and outlet count from its members."""
    outlets = _outlet_list((m.feed_id, m.sort_time) for m in members)
    return outlets, _n_outlets(outlets, {m.feed_id: outlet_name(m.feed_title, m.feed_url) for m in members})


def recount_outlets(db: Database, feed_ids: Sequence[int]) -> int:
    """Count again the outlets of the stories ``feed_ids`` reported (after one of them
    changed its name: two feeds may now share a name, or no longer); returns how many
    stories changed.  Reads the stories' outlet lists, not their members."""
    if not feed_ids:
        return 0
    cids = [
        r[0]
        for r in _select_in(
            db,
            "SELECT DISTINCT m.cluster_id FROM items i JOIN memberships m ON m.item_id = i.id "
            "WHERE i.feed_id IN ({marks})",
            sorted(set(feed_ids)),
        )
    ]
    stored = {
        cid: (json.loads(outlets) if outlets else [], n)
        for cid, outlets, n in _select_in(
            db, "SELECT id, outlets, n_feeds FROM clusters WHERE id IN ({marks})", cids
        )
    }
    names = _feed_names(db, {pair[0] for pairs, _ in stored.values() for pair in pairs})
    updates = [(count, cid) for cid, (pairs, n) in stored.items() if (count := _n_outlets(pairs, names)) != n]
    db.conn.executemany("UPDATE clusters SET n_feeds = ? WHERE id = ?", updates)
    return len(updates)


def clear_all(db: Database) -> None:
    """Forget every cluster (before a full recluster)."""
    db.execute("DELETE FROM memberships")
    db.execute("UPDATE clusters SET canonical_item_id = NULL")
    db.execute("DELETE FROM clusters")


def count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM clusters").fetchone()[0])


_ORDER = {sort: ", ".join(f"c.{k} DESC" for k in keys) for sort, keys in STORY_SORT_KEYS.items()}


# Fewer stories than this told by at least N outlets are found through the coverage
# index and sorted; more are read newest first (see _clusters_for).
FEW_STORIES = 2000


def _clusters_for(db: Database, sort: str, min_outlets: int) -> str:
    """The ``clusters c`` of a listing of stories told by at least ``min_outlets``.

    Newest first, SQLite reads stories by time and skips those told by fewer: at 1M
    items, "at least 20 outlets" read all 355,779 stories for a page (135 ms), where
    the coverage index finds its 163 at once.  When few stories qualify (a bounded
    count on that index says so), they are read through it and sorted instead.
    """
    if sort == "coverage" or min_outlets <= 1:
        return "clusters c"
    few = db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM clusters WHERE n_feeds >= ? LIMIT ?)", [min_outlets, FEW_STORIES]
    ).fetchone()[0]
    return "clusters c INDEXED BY clusters_coverage" if few < FEW_STORIES else "clusters c"


def listing(
    db: Database, *, sort: str = "latest", limit: int = 20, offset: int = 0, min_outlets: int = 1
) -> list[ClusterSummary]:
    """Stories, newest (or most covered) first."""
    order = _ORDER.get(sort, _ORDER["latest"])
    rows = db.execute(
        f"SELECT {_SUMMARY} "
        f"FROM {_clusters_for(db, sort, min_outlets)} WHERE c.n_feeds >= ? ORDER BY {order} LIMIT ? OFFSET ?",
        [min_outlets, limit, offset],
    ).fetchall()
    return _summaries(db, rows)


# The columns _summaries reads.
_SUMMARY = (
    "c.id, c.canonical_item_id, c.size, c.first_time, c.last_time, c.updated_at, c.created_at, c.n_feeds"
)


def _summaries(db: Database, rows: Sequence[Sequence[Any]]) -> list[ClusterSummary]:
    """Summaries of rows of :data:`_SUMMARY` columns, in their order (no canonical item: skipped)."""
    canon = {s.id: s for s in items_store.get_many(db, [r[1] for r in rows if r[1] is not None])}
    outlets = _outlets(db, [r[0] for r in rows])
    out = []
    for cid, canonical_id, size, first, last, updated, created, n_feeds in rows:
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
                created_at=created,
                n_feeds=n_feeds,
            )
        )
    return out


def _outlets(db: Database, cluster_ids: Sequence[int]) -> dict[int, list[str]]:
    """Cluster id -> the names of its outlets (its feeds), first report first, each
    name once: two feeds of one outlet under one name ("Reuters" for its world and its
    business news) are one outlet to a reader, where "Reuters, Reuters" said nothing
    (``n_feeds`` counts them so too: :func:`_n_outlets`)."""
    stored = {
        cid: json.loads(outlets) if outlets else []
        for cid, outlets in _select_in(
            db, "SELECT id, outlets FROM clusters WHERE id IN ({marks})", cluster_ids
        )
    }
    names = _feed_names(db, {feed_id for pairs in stored.values() for feed_id, _ in pairs})
    return {
        cid: list(dict.fromkeys(names[f] for f, _ in pairs if f in names)) for cid, pairs in stored.items()
    }


def detail(db: Database, cluster_id: int) -> ClusterDetail | None:
    row = db.execute(f"SELECT {_SUMMARY} FROM clusters c WHERE c.id = ?", [cluster_id]).fetchone()
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
    cursor: StoryCursor | None = None,
) -> list[ClusterSummary]:
    """Stories passing ``story_filter``, newest (or most covered) first.

    With a ``cursor``, those on its side of its story in the order (``offset`` counts
    from there); on its newer side, the ``limit`` nearest it, still newest first.

    ``match`` is an FTS5 query (see :func:`aggregator.storage.search.fts_query`) that
    one of a story's items must match, among the latest :data:`FEW_MEMBERS` items
    matching it (a popular name matches tens of thousands: the stories of older
    ones are pages back anyway); the filter's ``query`` text is not used here.
    Every filter reads indexes only, in work bounded by a page, not by the archive.
    """
    order = _ORDER.get(sort, _ORDER["latest"])
    where = ["c.n_feeds >= ?", "c.canonical_item_id IS NOT NULL"]
    params: list[Any] = [max(1, story_filter.min_outlets)]
    if story_filter.feed_id is not None:
        where.append(_with_member(db, "items", "id", "feed_id", story_filter.feed_id))
        params.append(story_filter.feed_id)
    if story_filter.category and story_filter.category.strip():
        # item_categories holds lower(value) of each item's categories (migration 0007)
        category = db.execute("SELECT lower(?)", [story_filter.category.strip()]).fetchone()[0]
        where.append(_with_member(db, "item_categories", "item_id", "category", category))
        params.append(category)
    if match is not None:
        # the stories of the latest FEW_MEMBERS matching items (all of them when fewer)
        row = db.execute(
            "SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
            [match, FEW_MEMBERS - 1],
        ).fetchone()
        where.append(
            "c.id IN (SELECT m.cluster_id FROM memberships m WHERE m.item_id IN "
            "(SELECT rowid FROM items_fts WHERE items_fts MATCH ? AND rowid >= ?))"
        )
        params += [match, row[0] if row else 0]
    if cursor is not None and cursor.sort in STORY_SORT_KEYS:
        sort = cursor.sort
        order = _ORDER[sort]
        columns = ", ".join(f"c.{k}" for k in STORY_SORT_KEYS[sort])
        where.append(f"({columns}) {'<' if cursor.older else '>'} ({', '.join('?' * len(cursor.key))})")
        params += cursor.key
        if not cursor.older:  # the nearest newer ones: read upwards, shown downwards
            order = order.replace(" DESC", " ASC")
    source = _clusters_for(db, sort, params[0])
    rows = db.execute(
        f"SELECT {_SUMMARY} FROM {source} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    if cursor is not None and not cursor.older:
        rows.reverse()
    return _summaries(db, rows)


# Below this many matching items, a filter collects their stories first; above,
# stories are read newest first and each checked, which stops after a page.
FEW_MEMBERS = 2000


def _with_member(db: Database, table: str, item_column: str, key_column: str, value: Any) -> str:
    """A condition on ``c``: a member of the story is in ``table`` with ``key_column = ?``.

    Both plans read indexes only.  A rare key (an outlet with few items, a
    category few items carry) lists its items' stories (``c.id IN``); a common
    one checks stories newest first through their members (``EXISTS``), which
    stops after a page.  Neither scans every story of a million-item archive.
    """
    items = f"SELECT {item_column} FROM {table} WHERE {key_column} = ?"
    found = db.execute(f"SELECT count(*) FROM ({items} LIMIT {FEW_MEMBERS})", [value]).fetchone()[0]
    if found < FEW_MEMBERS:
        return f"c.id IN (SELECT m.cluster_id FROM memberships m WHERE m.item_id IN ({items}))"
    return (
        f"EXISTS (SELECT 1 FROM memberships m CROSS JOIN {table} x ON x.{item_column} = m.item_id "
        f"WHERE m.cluster_id = c.id AND x.{key_column} = ?)"
    )


def summaries(db: Database, cluster_ids: Sequence[int]) -> list[ClusterSummary]:
    """Summaries of the given clusters, in the order given; missing ones skipped."""
    if not cluster_ids:
        return []
    marks = ",".join("?" * len(cluster_ids))
    rows = db.execute(
        f"SELECT {_SUMMARY} FROM clusters c WHERE c.id IN ({marks})", list(cluster_ids)
    ).fetchall()
    by_id = {s.id: s for s in _summaries(db, rows)}
    return [by_id[i] for i in cluster_ids if i in by_id]


def members_of(
    db: Database, cluster_ids: Sequence[int], per_story: int | None = None, latest: int = 0
) -> dict[int, list[StoredItem]]:
    """Every member item of each cluster (the first ``per_story`` of each, and with
    ``latest`` its latest ones as well), oldest first."""
    out: dict[int, list[StoredItem]] = {cid: [] for cid in cluster_ids}
    if not cluster_ids:
        return out
    marks = ",".join("?" * len(cluster_ids))
    ids = [
        r[0]
        for r in db.execute(
            "SELECT item_id FROM (SELECT m.item_id, i.sort_time, "
            "row_number() OVER (PARTITION BY m.cluster_id ORDER BY i.sort_time, i.id) AS k, "
            "count(*) OVER (PARTITION BY m.cluster_id) AS n "
            f"FROM memberships m JOIN items i ON i.id = m.item_id WHERE m.cluster_id IN ({marks})) "
            "WHERE k <= ? OR k > n - ? ORDER BY sort_time, item_id",
            [*cluster_ids, 2**62 if per_story is None else per_story, max(0, latest)],
        )
    ]
    for item in items_store.get_many(db, ids):
        if item.cluster_id is not None:
            out.setdefault(item.cluster_id, []).append(item)
    return out


def version(db: Database) -> tuple[Any, ...]:
    """A constant-time fingerprint of what the site shows: latest change, change count, latest item, settings.

    ``max(updated_at)`` (an index lookup) is the latest change time; the change
    counter of migration ``0005_site_version`` moves with every insert, update and
    delete of a cluster, every move of a member, every edit of an item and every
    added, removed or renamed feed (triggers, whoever writes); ``max(items.id)``
    and the settings version in force close the rest.  No query here reads more
    than one row, so the ETag check costs the same at any archive size.
    """
    row = db.execute(
        "SELECT (SELECT max(updated_at) FROM clusters), (SELECT changes FROM site_version WHERE id = 1), "
        "(SELECT max(id) FROM items), (SELECT max(id) FROM settings_versions)"
    ).fetchone()
    return tuple(row)


def story_version(db: Database, cluster_id: int) -> tuple[Any, ...] | None:
    """A constant-time fingerprint of what one story's page shows (None: no such story).

    Its stored summary (canonical and pinned item, size, outlets, span, times) and its
    change counter (migration ``0024_story_changes``: members joining, leaving or
    moving, members' shown fields edited), with the settings version in force and the
    count of re-clusterings (which keep a story's id and times where its items stayed
    together, and do not count row by row).  Feed names are the caller's.
    """
    row = db.execute(
        "SELECT canonical_item_id, pinned_item_id, size, n_feeds, first_time, last_time, created_at, "
        "updated_at, outlets, changes, (SELECT max(id) FROM settings_versions), "
        "(SELECT value FROM meta WHERE key = ?) FROM clusters WHERE id = ?",
        [STORIES_REPLACED, cluster_id],
    ).fetchone()
    return tuple(row) if row is not None else None


def partition(db: Database) -> dict[int, int]:
    """Item id -> cluster id, for every clustered item."""
    return dict(db.execute("SELECT item_id, cluster_id FROM memberships").fetchall())


def merge_into(db: Database, target: int, others: Iterable[int]) -> None:
    """Move every member of ``others`` into ``target`` and delete the emptied clusters."""
    ids = [c for c in others if c != target]
    if not ids:
        return
    marks = ",".join("?" * len(ids))
    db.execute(f"UPDATE memberships SET cluster_id = ? WHERE cluster_id IN ({marks})", [target, *ids])
    db.execute(f"DELETE FROM clusters WHERE id IN ({marks})", ids)
    _record_merged(db, {c: target for c in ids})


def _record_merged(db: Database, moves: Mapping[int, int]) -> None:
    """Remember that stories ``moves`` went into others (old id -> new id), and send the
    stories merged into them before along (so a link is one look-up from its story)."""
    db.conn.executemany(
        "INSERT OR REPLACE INTO merged_stories (id, into_id) VALUES (?, ?)", list(moves.items())
    )
    db.conn.executemany(
        "UPDATE merged_stories SET into_id = ? WHERE into_id = ?", [(b, a) for a, b in moves.items()]
    )


def merged_into(db: Database, cluster_id: int) -> int | None:
    """The story a story that no longer exists was merged into, if it still exists."""
    row = db.execute(
        "SELECT m.into_id FROM merged_stories m JOIN clusters c ON c.id = m.into_id WHERE m.id = ?",
        [cluster_id],
    ).fetchone()
    return int(row[0]) if row else None


def replace_all(
    db: Database,
    groups: Sequence[Sequence[tuple[int, float, str, int | None]]],
    choose: CanonicalPolicy,
    pinned: Sequence[int],
    now: float,
) -> dict[int, int]:
    """Swap in a complete new clustering; returns item id -> new cluster id.

    ``groups`` lists clusters as (item id, score, signal, matched item) members.
    A new cluster keeps the id of the old cluster most of its items came from
    (when that id is still free; else that of the next most), so story pages and
    merged-feed ids survive a re-clustering wherever the story itself did.
    """
    old = partition(db)
    old_created = dict(db.execute("SELECT id, created_at FROM clusters").fetchall())
    old_updated = dict(db.execute("SELECT id, updated_at FROM clusters").fetchall())
    old_canonical = dict(db.execute("SELECT id, canonical_item_id FROM clusters").fetchall())
    old_members: dict[int, set[int]] = {}
    for item_id, c in old.items():
        old_members.setdefault(c, set()).add(item_id)
    next_id = int(db.execute(f"SELECT {_NEXT_ID}").fetchone()[0])
    taken: set[int] = set()
    order = sorted(range(len(groups)), key=lambda n: (-len(groups[n]), min(m[0] for m in groups[n])))
    ids: dict[int, int] = {}
    for n in order:
        votes: dict[int, int] = {}
        for item_id, *_ in groups[n]:
            was = old.get(item_id)
            if was is not None:
                votes[was] = votes.get(was, 0) + 1
        # the old id most of its items had, else the next one still free (the story of
        # its other items: a story whose id another group took kept none of its own)
        free = [c for c, _ in sorted(votes.items(), key=lambda kv: (-kv[1], kv[0])) if c not in taken]
        if free:
            ids[n] = free[0]
        else:
            ids[n] = next_id
            next_id += 1
        taken.add(ids[n])
    # Every story is made again: one count for the swap (in story_version), not one per
    # membership: the story counters' triggers (migration 0024) are left out of the
    # swap, which they made seven times longer (2.2 s against 0.3 s for 100,000
    # memberships, holding the write lock).
    counters = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'story_changes_member_%'"
    ).fetchall()
    for name, _ in counters:
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DELETE FROM memberships")
    db.execute("UPDATE clusters SET canonical_item_id = NULL, pinned_item_id = NULL")
    db.execute("DELETE FROM clusters")
    unchanged = {
        ids[n]: old_canonical[ids[n]]
        for n, members in enumerate(groups)
        if old_members.get(ids[n]) == {m[0] for m in members}
    }
    db.conn.executemany(
        "INSERT INTO clusters (id, created_at, updated_at) VALUES (?, ?, ?)",
        [(ids[n], old_created.get(ids[n], now), old_updated.get(ids[n], now)) for n in range(len(groups))],
    )
    out: dict[int, int] = {}
    rows = []
    for n, members in enumerate(groups):
        cid = ids[n]
        for item_id, score, signal, matched in members:
            rows.append((item_id, cid, score, signal, matched, now))
            out[item_id] = cid
    db.conn.executemany(
        "INSERT INTO memberships (item_id, cluster_id, score, signal, matched_item_id, joined_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    for _, sql in counters:
        db.execute(sql)
    meta_store.bump(db, STORIES_REPLACED)
    # In order, oldest first: of two pins that land in one cluster, the newer wins.
    pins = [(item_id, out[item_id]) for item_id in pinned if item_id in out]
    db.conn.executemany("UPDATE clusters SET pinned_item_id = ? WHERE id = ?", pins)
    refresh_all(db, choose, now, keep_updated=unchanged)
    # An old story that kept no id of its own went where most of its items went.
    gone: dict[int, int] = {}
    for cid, items in old_members.items():
        if cid not in taken:
            went = Counter(out[item_id] for item_id in items if item_id in out)
            if went:
                gone[cid] = max(went.items(), key=lambda kv: (kv[1], -kv[0]))[0]
    _record_merged(db, gone)
    return out


def refresh_all(
    db: Database, choose: CanonicalPolicy, now: float, keep_updated: Mapping[int, int | None] | None = None
) -> None:
    """:func:`refresh` for every cluster at once, in a few statements.

    A cluster in ``keep_updated`` (cluster -> its canonical item before) keeps its
    ``updated_at`` if its canonical item is still that one (its members did not
    change): readers take a new ``updated`` for a changed headline.
    """
    keep_updated = keep_updated or {}
    previous = dict(db.execute("SELECT id, updated_at FROM clusters").fetchall())
    cur = db.execute(
        "SELECT m.cluster_id, i.id, i.feed_id, f.title, f.url, i.sort_time, length(i.text) "
        "FROM memberships m JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id "
        "ORDER BY m.cluster_id, i.sort_time, i.id"
    )
    pinned = dict(db.execute("SELECT id, pinned_item_id FROM clusters WHERE pinned_item_id IS NOT NULL"))
    updates = []
    current: int | None = None
    members: list[MemberInfo] = []

    def flush() -> None:
        if current is None or not members:
            return
        ids = {m.item_id for m in members}
        pin = pinned.get(current)
        canonical = pin if pin in ids else choose(members)
        kept = current in keep_updated and keep_updated[current] == canonical
        stamp = previous.get(current, now) if kept else now
        outlets, n_outlets = _members_outlets(members)
        updates.append(
            (
                canonical,
                len(members),
                n_outlets,
                members[0].sort_time,
                members[-1].sort_time,
                stamp,
                _outlets_json(outlets),
                current,
            )
        )

    for row in cur:
        if row[0] != current:
            flush()
            current, members = row[0], []
        members.append(MemberInfo(*row[1:]))
    flush()
    db.conn.executemany(
        _SET_SUMMARY,
        updates,
    )
    db.execute("DELETE FROM clusters WHERE id NOT IN (SELECT DISTINCT cluster_id FROM memberships)")


def _select_in(db: Database, sql: str, ids: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql``, whose ``{marks}`` is an ``IN`` list, for ``ids``: 500 at a
    time, under SQLite's limit on bound variables."""
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        yield from db.execute(sql.format(marks=",".join("?" * len(chunk))), chunk)


def clusters_of(db: Database, item_ids: Sequence[int]) -> dict[int, int]:
    """Item id -> cluster id for the given items (those that are clustered)."""
    return dict(
        _select_in(db, "SELECT item_id, cluster_id FROM memberships WHERE item_id IN ({marks})", item_ids)
    )


def canonical_among(db: Database, item_ids: Sequence[int]) -> set[int]:
    """Those of ``item_ids`` that are their story's canonical item."""
    return {
        r[0]
        for r in _select_in(
            db, "SELECT canonical_item_id FROM clusters WHERE canonical_item_id IN ({marks})", item_ids
        )
    }


def member_counts(db: Database, cluster_ids: Collection[int], upto_item: int) -> dict[int, int]:
    """Cluster id -> how many of its members have an id up to ``upto_item`` (clusters
    without such members left out)."""
    rows = db.execute(
        "SELECT cluster_id, count(*) FROM memberships WHERE cluster_id IN (SELECT value FROM json_each(?)) "
        "AND item_id <= ? GROUP BY cluster_id",
        [json.dumps(sorted(cluster_ids)), upto_item],
    ).fetchall()
    return dict(rows)


def member_ids(db: Database, cluster_ids: Sequence[int]) -> dict[int, list[int]]:
    """Cluster id -> its item ids."""
    out: dict[int, list[int]] = {c: [] for c in cluster_ids}
    sql = "SELECT item_id, cluster_id FROM memberships WHERE cluster_id IN ({marks}) ORDER BY item_id"
    for item_id, cid in _select_in(db, sql, cluster_ids):
        out[cid].append(item_id)
    return out


def mark_manual(db: Database, item_ids: Sequence[int]) -> None:
    """Record that these items are where they are because an admin said so."""
    marks = ",".join("?" * len(item_ids))
    db.execute(
        f"UPDATE memberships SET signal = 'manual', score = 1.0 WHERE item_id IN ({marks})", list(item_ids)
    )


def pin(db: Database, cluster_id: int, item_id: int) -> None:
    db.execute("UPDATE clusters SET pinned_item_id = ? WHERE id = ?", [item_id, cluster_id])


def add_members(db: Database, rows: Sequence[tuple[int, int, float, str, int | None]], now: float) -> None:
    """:func:`add_member` for many (item, cluster, score, signal, matched item) rows at once."""
    db.conn.executemany(
        "INSERT OR REPLACE INTO memberships (item_id, cluster_id, score, signal, matched_item_id, "
        "joined_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(*r, now) for r in rows],
    )


def refresh_many(
    db: Database,
    cluster_ids: Iterable[int],
    choose: CanonicalPolicy,
    now: float,
    quiet: Collection[int] = (),
) -> None:
    """:func:`refresh` for many clusters with one query for all their members.

    A cluster in ``quiet`` (only an edit the merged feeds do not show: a version's text)
    keeps its ``updated_at`` when its summary comes out as it was: readers that mark an
    updated item unread brought the story back for nothing.
    """
    ids = sorted(set(cluster_ids))
    if not ids:
        return
    before: dict[int, tuple[Any, ...]] = {}
    if quiet:
        before = {
            r[0]: tuple(r[1:])
            for r in _select_in(
                db,
                "SELECT id, canonical_item_id, size, n_feeds, first_time, last_time, outlets, updated_at "
                "FROM clusters WHERE id IN ({marks})",
                sorted(set(quiet) & set(ids)),
            )
        }
    members: dict[int, list[MemberInfo]] = {c: [] for c in ids}
    for row in _select_in(
        db,
        "SELECT m.cluster_id, i.id, i.feed_id, f.title, f.url, i.sort_time, length(i.text) "
        "FROM memberships m JOIN items i ON i.id = m.item_id JOIN feeds f ON f.id = i.feed_id "
        "WHERE m.cluster_id IN ({marks}) ORDER BY m.cluster_id, i.sort_time, i.id",
        ids,
    ):
        members[row[0]].append(MemberInfo(*row[1:]))
    pinned: dict[int, int | None] = dict(
        _select_in(db, "SELECT id, pinned_item_id FROM clusters WHERE id IN ({marks})", ids)
    )
    empty = [c for c in ids if not members[c]]
    updates = []
    for cid, ms in members.items():
        if not ms:
            continue
        pin = pinned.get(cid)
        canonical = pin if pin in {m.item_id for m in ms} else choose(ms)
        outlets, n_outlets = _members_outlets(ms)
        row = (canonical, len(ms), n_outlets, ms[0].sort_time, ms[-1].sort_time, _outlets_json(outlets))
        old = before.get(cid)
        stamp = old[6] if old is not None and old[:6] == row else now
        updates.append((*row[:5], stamp, row[5], cid))
    db.conn.executemany(
        _SET_SUMMARY,
        updates,
    )
    if empty:
        db.conn.executemany("DELETE FROM clusters WHERE id = ?", [(c,) for c in empty])


def shrink(db: Database, cluster_ids: Iterable[int], choose: CanonicalPolicy, now: float) -> None:
    """:func:`refresh_many` for clusters that only lost members (a removed feed's items).

    Every policy picks the best member by an order of its own, so a canonical item
    that is still there is still the choice: only the counts and the span are read
    again (not the members' texts: at a million items the texts made removing a feed
    take a minute).  Clusters whose canonical item went are refreshed in full.
    """
    ids = sorted(set(cluster_ids))
    canonical = dict(_select_in(db, "SELECT id, canonical_item_id FROM clusters WHERE id IN ({marks})", ids))
    refresh_many(db, [c for c in ids if canonical.get(c) is None], choose, now)
    kept = [c for c in ids if canonical.get(c) is not None]
    by_feed: dict[int, list[tuple[int, int, float, float]]] = {}
    for cid, feed_id, n, first, last in _select_in(
        db,
        "SELECT m.cluster_id, i.feed_id, count(*), min(i.sort_time), max(i.sort_time) "
        "FROM memberships m JOIN items i ON i.id = m.item_id WHERE m.cluster_id IN ({marks}) "
        "GROUP BY m.cluster_id, i.feed_id",
        kept,
    ):
        by_feed.setdefault(cid, []).append((feed_id, n, first, last))
    updates = []
    names = _feed_names(db, {r[0] for rows in by_feed.values() for r in rows})
    for cid in kept:
        rows = by_feed.get(cid)
        if not rows:
            continue
        outlets = _outlet_list((feed_id, first) for feed_id, _, first, _ in rows)
        size = sum(n for _, n, _, _ in rows)
        first, last = min(r[2] for r in rows), max(r[3] for r in rows)
        n_outlets = _n_outlets(outlets, names)
        updates.append((canonical[cid], size, n_outlets, first, last, now, _outlets_json(outlets), cid))
    db.conn.executemany(_SET_SUMMARY, updates)


def _member_infos(db: Database, item_ids: Sequence[int]) -> dict[int, MemberInfo]:
    sql = (
        "SELECT i.id, i.feed_id, f.title, f.url, i.sort_time, length(i.text) "
        "FROM items i JOIN feeds f ON f.id = i.feed_id WHERE i.id IN ({marks})"
    )
    return {row[0]: MemberInfo(*row) for row in _select_in(db, sql, item_ids)}


def grow(db: Database, added: Mapping[int, Sequence[int]], choose: CanonicalPolicy, now: float) -> None:
    """:func:`refresh_many` for clusters that only gained members (cluster -> the new
    item ids, already stored as its members), without reading their other members:
    size, span, outlets and canonical item follow from the stored summary and the
    new members, so the cost does not grow with the cluster.

    ``choose`` picks the best member under a fixed order (every canonical policy
    does), so the best of the old canonical item and the new members is the best of
    all.  A cluster whose summary cannot be trusted (members but no canonical item)
    gets :func:`refresh_many`.
    """
    ids = sorted(c for c, new in added.items() if new)
    if not ids:
        return
    sql = (
        "SELECT id, size, outlets, first_time, last_time, canonical_item_id, pinned_item_id, n_feeds "
        "FROM clusters WHERE id IN ({marks})"
    )
    state = {row[0]: row[1:] for row in _select_in(db, sql, ids)}
    olds = {st[4] for st in state.values() if st[4] is not None}
    infos = _member_infos(db, sorted({i for c in ids for i in added[c]} | olds))
    stored_outlets = {
        cid: [(f, t) for f, t in json.loads(st[1])] if st[0] and st[1] else [] for cid, st in state.items()
    }
    names = _feed_names(
        db, {f for pairs in stored_outlets.values() for f, _ in pairs} | {m.feed_id for m in infos.values()}
    )
    updates = []
    full = []
    for cid in ids:
        if cid not in state:
            continue
        size, _, first, last, canonical, pinned, n_feeds = state[cid]
        new_ids = sorted(set(added[cid]))
        new = [infos[i] for i in new_ids if i in infos]
        if not new:
            continue
        before = stored_outlets[cid]
        # (an outlet list that disagrees with the count was kept by an older version)
        if size and (canonical is None or canonical not in infos or _n_outlets(before, names) != n_feeds):
            full.append(cid)
            continue
        outlets = _outlet_list([*before, *((m.feed_id, m.sort_time) for m in new)])
        candidates = [infos[canonical], *new] if size else new  # an empty cluster has no canonical
        if pinned is not None and (pinned == canonical or pinned in new_ids):
            best = pinned
        else:
            best = choose(candidates)
        times = [m.sort_time for m in new]
        updates.append(
            (
                best,
                size + len(new),
                _n_outlets(outlets, names),
                min(times) if first is None else min(first, *times),
                max(times) if last is None else max(last, *times),
                now,
                _outlets_json(outlets),
                cid,
            )
        )
    db.conn.executemany(
        _SET_SUMMARY,
        updates,
    )
    if full:
        refresh_many(db, full, choose, now)
