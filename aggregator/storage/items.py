"""Items: normalised entries, their signatures, lookups by link and content."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlite_utils import Database

from aggregator.models import Item, StoredItem
from aggregator.storage import next_id_sql

__all__ = [
    "IndexRow",
    "count",
    "existing",
    "export_rows",
    "get_many",
    "ids_of_feed",
    "index_rows",
    "insert",
    "save_signatures",
    "update",
]


def existing(db: Database, feed_id: int, identities: Sequence[str]) -> dict[str, tuple[int, str, str | None]]:
    """``identity -> (item id, content hash, shown hash)`` for the identities this feed already has."""
    found: dict[str, tuple[int, str, str | None]] = {}
    for chunk in _chunks(list(identities), 500):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT identity, id, content_hash, shown_hash FROM items WHERE feed_id = ? AND identity IN ({marks})",
            [feed_id, *chunk],
        ).fetchall()
        found.update({r[0]: (r[1], r[2], r[3]) for r in rows})
    return found


def set_shown_hashes(db: Database, rows: Sequence[tuple[str, int]]) -> None:
    """(shown hash, item id): for items stored before shown hashes were (migration 0022)."""
    db.conn.executemany("UPDATE items SET shown_hash = ? WHERE id = ?", rows)


def insert(db: Database, feed_id: int, item: Item, now: float, sort_time: float) -> int:
    """Insert one new item; returns its id.  Call inside a write transaction."""
    return insert_many(db, feed_id, [item], now, [sort_time])[0]


# An item's id is never given to another item (a process that saw the first would take
# the second for it): past the highest id ever used, which a trigger keeps in ``meta``
# as items are deleted (migration 0017).
_NEXT_ID = next_id_sql("items", "item_id_high")


def insert_many(
    db: Database, feed_id: int, items: Sequence[Item], now: float, sort_times: Sequence[float]
) -> list[int]:
    """Insert new items in one statement; returns their ids.  Call inside a write transaction."""
    if not items:
        return []
    first = int(db.execute(f"SELECT {_NEXT_ID}").fetchone()[0])
    ids = list(range(first, first + len(items)))
    db.conn.executemany(
        "INSERT INTO items (id, feed_id, identity, guid, link, canonical_link, title, summary, text, "
        "content_html, author, categories, published, updated, first_seen, last_seen, sort_time, "
        "content_hash, shown_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                item_id,
                feed_id,
                item.identity,
                item.guid,
                item.link,
                item.canonical_link,
                item.title,
                item.summary,
                item.text,
                item.content_html,
                item.author,
                json.dumps(list(item.categories)),
                item.published,
                item.updated,
                now,
                now,
                t,
                item.content_hash,
                item.shown_hash or None,
            )
            for item_id, item, t in zip(ids, items, sort_times, strict=True)
        ],
    )
    return ids


def clustered_by_link(db: Database, links: Sequence[str]) -> dict[str, list[tuple[int, float, int, int]]]:
    """For each canonical link, the clustered items with it:
    [(item id, sort time, cluster id, feed id)] by id."""
    out: dict[str, list[tuple[int, float, int, int]]] = {}
    for chunk in _chunks(list(links), 500):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT i.canonical_link, i.id, i.sort_time, m.cluster_id, i.feed_id FROM items i "
            f"JOIN memberships m ON m.item_id = i.id WHERE i.canonical_link IN ({marks}) ORDER BY i.id",
            chunk,
        ).fetchall()
        for link, item_id, t, cluster_id, feed_id in rows:
            out.setdefault(link, []).append((item_id, t, cluster_id, feed_id))
    return out


def clustered_by_hash(db: Database, hashes: Sequence[str]) -> dict[str, list[tuple[int, float, int]]]:
    """For each content hash, the clustered items with it: [(item id, sort time, cluster id)] by id."""
    out: dict[str, list[tuple[int, float, int]]] = {}
    for chunk in _chunks(list(hashes), 500):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            "SELECT i.content_hash, i.id, i.sort_time, m.cluster_id FROM items i "
            f"JOIN memberships m ON m.item_id = i.id WHERE i.content_hash IN ({marks}) ORDER BY i.id",
            chunk,
        ).fetchall()
        for h, item_id, t, cluster_id in rows:
            out.setdefault(h, []).append((item_id, t, cluster_id))
    return out


def update(db: Database, item_id: int, item: Item, now: float) -> None:
    """An outlet edited an item: keep its identity, first-seen time and cluster."""
    db.execute(
        "UPDATE items SET guid = ?, link = ?, canonical_link = ?, title = ?, summary = ?, text = ?, "
        "content_html = ?, author = ?, categories = ?, published = coalesce(?, published), "
        "updated = ?, last_seen = ?, content_hash = ?, shown_hash = ? WHERE id = ?",
        [
            item.guid,
            item.link,
            item.canonical_link,
            item.title,
            item.summary,
            item.text,
            item.content_html,
            item.author,
            json.dumps(list(item.categories)),
            item.published,
            item.updated,
            now,
            item.content_hash,
            item.shown_hash or None,
            item_id,
        ],
    )


def save_signatures(db: Database, rows: Iterable[tuple[int, np.ndarray]]) -> None:
    db.conn.executemany(
        "INSERT OR REPLACE INTO signatures (item_id, num_perm, sig) VALUES (?, ?, ?)",
        [(item_id, int(sig.shape[0]), sig.astype("<u4").tobytes()) for item_id, sig in rows],
    )


def save_frozen(db: Database, rows: Iterable[tuple[int, str]]) -> None:
    """Store items' arrival vectors: (item id, JSON) rows."""
    db.conn.executemany("UPDATE signatures SET frozen = ? WHERE item_id = ?", [(f, i) for i, f in rows])


def forget_frozen(db: Database) -> None:
    """Arrival vectors no longer describe the clusters (after a re-clustering)."""
    db.execute("UPDATE signatures SET frozen = NULL WHERE frozen IS NOT NULL")


@dataclass(frozen=True)
class IndexRow:
    """What the clusterer needs of a stored item to put it back in its index."""

    item_id: int
    cluster_id: int | None
    title: str
    text: str
    sort_time: float
    signature: np.ndarray | None  # None when missing or made with another num_perm
    signal: str | None
    feed_id: int
    canonical_link: str | None
    content_hash: str
    frozen: str | None = None  # JSON of the vector made at arrival (see ClusterEngine.freeze)


def index_rows(db: Database, since: float, num_perm: int, after_id: int = 0) -> Iterator[IndexRow]:
    """Items with ``sort_time >= since`` (and ``id > after_id``) in time order."""
    cur = db.execute(
        f"SELECT {_INDEX_COLUMNS} {_INDEX_FROM} WHERE i.sort_time >= ? AND i.id > ? "
        "ORDER BY i.sort_time, i.id",
        [since, after_id],
    )
    for r in cur.fetchall():
        yield _index_row(r, num_perm)


def index_rows_of_clusters(
    db: Database, cluster_ids: Collection[int], before: float, num_perm: int
) -> list[IndexRow]:
    """:class:`IndexRow` of the members of these clusters with ``sort_time < before``, in time order."""
    if not cluster_ids:
        return []
    rows = db.execute(
        f"SELECT {_INDEX_COLUMNS} {_INDEX_FROM} "
        "WHERE m.cluster_id IN (SELECT value FROM json_each(?)) AND i.sort_time < ? "
        "ORDER BY i.sort_time, i.id",
        [json.dumps(sorted(cluster_ids)), before],
    ).fetchall()
    return [_index_row(r, num_perm) for r in rows]


def index_rows_of_members(db: Database, cluster_ids: Collection[int], num_perm: int) -> list[IndexRow]:
    """:class:`IndexRow` of every member of a few clusters, in time order (read through
    the clusters' memberships: :func:`index_rows_of_clusters` walks items by time)."""
    rows = db.execute(
        f"SELECT {_INDEX_COLUMNS} FROM memberships m JOIN items i ON i.id = m.item_id "
        "LEFT JOIN signatures s ON s.item_id = i.id "
        "WHERE m.cluster_id IN (SELECT value FROM json_each(?)) ORDER BY i.sort_time, i.id",
        [json.dumps(sorted(cluster_ids))],
    ).fetchall()
    return [_index_row(r, num_perm) for r in rows]


def index_rows_for(db: Database, ids: Sequence[int], num_perm: int) -> list[IndexRow]:
    """:class:`IndexRow` of the given items, in the order of ``ids``."""
    marks = ",".join("?" * len(ids))
    rows = db.execute(f"SELECT {_INDEX_COLUMNS} {_INDEX_FROM} WHERE i.id IN ({marks})", list(ids)).fetchall()
    by_id = {r[0]: _index_row(r, num_perm) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


_INDEX_COLUMNS = (
    "i.id, m.cluster_id, i.title, i.text, i.sort_time, s.num_perm, s.sig, m.signal, i.feed_id, "
    "i.canonical_link, i.content_hash, s.frozen"
)
_INDEX_FROM = (
    "FROM items i LEFT JOIN memberships m ON m.item_id = i.id LEFT JOIN signatures s ON s.item_id = i.id"
)


def _index_row(r: Sequence[Any], num_perm: int) -> IndexRow:
    sig = None
    if r[6] is not None and r[5] == num_perm and len(r[6]) == 4 * num_perm:  # else computed again
        sig = np.frombuffer(r[6], dtype="<u4").astype(np.uint32)
    return IndexRow(
        r[0], r[1], r[2], r[3], r[4], sig, r[7], r[8], r[9], r[10], r[11] if sig is not None else None
    )


# The order items arrived in: poll by poll (a poll stores a feed's new items at one
# time, ``first_seen``, under consecutive ids), each poll's items in time order, as the
# pipeline placed them.  A re-clustering replayed in this order remakes the stories
# polling made.  A poll is known by its first id (its ids are consecutive, so the
# first id among any of its items orders the polls the same way).
_BATCH = "min(id) OVER (PARTITION BY feed_id, first_seen)"


def all_item_ids(db: Database) -> list[int]:
    """Every item, in the order it arrived (poll by poll, each poll's items by time)."""
    sql = f"SELECT id FROM (SELECT id, sort_time, {_BATCH} AS batch FROM items) ORDER BY batch, sort_time, id"
    return [r[0] for r in db.execute(sql)]


def arrival_batches(db: Database, since: float) -> dict[int, int]:
    """Item id -> the poll it arrived with (its first item id), for the items with
    ``sort_time >= since``: sort by (poll, sort time, id) for the order they arrived."""
    return dict(db.execute(f"SELECT id, {_BATCH} FROM items WHERE sort_time >= ?", [since]).fetchall())


def count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM items").fetchone()[0])


_STORED_COLUMNS = (
    "i.id, i.feed_id, f.title, f.url, i.link, i.title, i.summary, i.text, i.content_html, "
    "i.author, i.published, i.first_seen, i.sort_time, m.cluster_id, m.score, m.signal, "
    "m.matched_item_id"
)
_STORED_FROM = "FROM items i JOIN feeds f ON f.id = i.feed_id LEFT JOIN memberships m ON m.item_id = i.id"


def stored_item(row: Sequence[Any]) -> StoredItem:
    return StoredItem(*row)


def get_many(db: Database, ids: Sequence[int]) -> list[StoredItem]:
    out: list[StoredItem] = []
    for chunk in _chunks(list(ids), 500):
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT {_STORED_COLUMNS} {_STORED_FROM} WHERE i.id IN ({marks})", chunk
        ).fetchall()
        out.extend(stored_item(r) for r in rows)
    order = {item_id: n for n, item_id in enumerate(ids)}
    out.sort(key=lambda s: order[s.id])
    return out


def missing(db: Database, ids: Collection[int]) -> list[int]:
    """Those of ``ids`` that are not stored (any more), ascending."""
    rows = db.execute(
        "SELECT value FROM json_each(?) WHERE NOT EXISTS (SELECT 1 FROM items WHERE id = value) ORDER BY value",
        [json.dumps(sorted(ids))],
    ).fetchall()
    return [r[0] for r in rows]


def ids_of_feed(db: Database, feed_id: int) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM items WHERE feed_id = ?", [feed_id])}


def for_feed(db: Database, feed_id: int, limit: int, offset: int = 0) -> list[StoredItem]:
    rows = db.execute(
        f"SELECT {_STORED_COLUMNS} {_STORED_FROM} WHERE i.feed_id = ? "
        "ORDER BY i.sort_time DESC, i.id DESC LIMIT ? OFFSET ?",
        [feed_id, limit, offset],
    ).fetchall()
    return [stored_item(r) for r in rows]


def export_rows(db: Database) -> Iterator[dict[str, Any]]:
    """Every stored item with its cluster, for ``aggregator export``."""
    cur = db.execute(
        "SELECT i.id, f.url, f.title, i.link, i.title, i.published, i.sort_time, m.cluster_id, "
        "coalesce(c.canonical_item_id = i.id, 0), m.score, m.signal, i.guid "
        "FROM items i JOIN feeds f ON f.id = i.feed_id "
        "LEFT JOIN memberships m ON m.item_id = i.id LEFT JOIN clusters c ON c.id = m.cluster_id "
        "ORDER BY i.sort_time, i.id"
    )
    for r in cur:
        yield {
            "item_id": r[0],
            "feed": r[1],
            "feed_title": r[2],
            "link": r[3],
            "title": r[4],
            "published": r[5],
            "sort_time": r[6],
            "cluster_id": r[7],
            "canonical": bool(r[8]),
            "score": r[9],
            "signal": r[10],
            "guid": r[11],
        }


def _chunks(seq: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def latest_time(db: Database) -> float | None:
    row = db.execute("SELECT max(sort_time) FROM items").fetchone()
    return row[0] if row else None


def max_id(db: Database) -> int:
    return int(db.execute("SELECT coalesce(max(id), 0) FROM items").fetchone()[0])
