"""Full-text search over items (SQLite FTS5, table ``items_fts``), results grouped by story.

``items_fts`` indexes each item's title, summary and text; triggers (migration
``0003_fts``) keep it in step with ``items``.  User input never reaches FTS5's
query syntax directly: :func:`fts_query` turns it into a conjunction of quoted
phrases, so no input can raise a syntax error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlite_utils import Database

__all__ = [
    "HIGHLIGHT_END",
    "HIGHLIGHT_START",
    "Hit",
    "cluster_ranks",
    "fts_query",
    "hits",
    "rebuild",
]

# Snippet highlight markers: control characters that normalised text never holds.
HIGHLIGHT_START = "\x02"
HIGHLIGHT_END = "\x03"

MAX_TERMS = 12
_CHUNK = re.compile(r'"([^"]*)"?|([^\s"]+)')
_WORD = re.compile(r"\w+", re.UNICODE)
# bm25 weights of the columns title, summary, text: a headline match counts most.
_RANK = "bm25(items_fts, 8.0, 3.0, 1.0)"


def fts_query(text: str) -> str | None:
    """An FTS5 query matching items that hold every word (or "quoted phrase") of ``text``.

    Each word or phrase becomes a quoted FTS5 phrase of its word characters, so
    operators, column filters and stray quotes in the input are plain words.
    Returns ``None`` when ``text`` holds no word at all.
    """
    phrases: list[str] = []
    for m in _CHUNK.finditer(text):
        chunk = m.group(1) if m.group(1) is not None else m.group(2)
        words = _WORD.findall(chunk)
        if words:
            phrases.append('"' + " ".join(words) + '"')
        if len(phrases) >= MAX_TERMS:
            break
    return " ".join(phrases) if phrases else None


@dataclass(frozen=True)
class Hit:
    """One matching item: its story, rank (lower is better) and a snippet with markers."""

    cluster_id: int
    item_id: int
    rank: float
    snippet: str


def cluster_ranks(db: Database, match: str, limit: int, offset: int = 0) -> list[tuple[int, float]]:
    """Stories with a matching item, best match first: ``(cluster id, best rank)``."""
    rows = db.execute(
        f"WITH h AS MATERIALIZED (SELECT rowid AS item_id, {_RANK} AS r FROM items_fts "
        "WHERE items_fts MATCH ?) "
        "SELECT m.cluster_id, min(h.r) AS best FROM h JOIN memberships m ON m.item_id = h.item_id "
        "JOIN clusters c ON c.id = m.cluster_id "
        "GROUP BY m.cluster_id ORDER BY best, c.last_time DESC, m.cluster_id DESC LIMIT ? OFFSET ?",
        [match, limit, offset],
    ).fetchall()
    return [(int(r[0]), float(r[1])) for r in rows]


def hits(db: Database, match: str, cluster_ids: Sequence[int], snippet_words: int = 24) -> list[Hit]:
    """The matching items of the given stories, best first, each with a highlighted snippet."""
    if not cluster_ids:
        return []
    marks = ",".join("?" * len(cluster_ids))
    rows = db.execute(
        f"SELECT m.cluster_id, items_fts.rowid, {_RANK}, "
        "snippet(items_fts, -1, ?, ?, '…', ?) FROM items_fts "
        "JOIN memberships m ON m.item_id = items_fts.rowid "
        f"WHERE items_fts MATCH ? AND m.cluster_id IN ({marks}) ORDER BY 3, 2",
        [HIGHLIGHT_START, HIGHLIGHT_END, snippet_words, match, *cluster_ids],
    ).fetchall()
    return [Hit(int(r[0]), int(r[1]), float(r[2]), r[3] or "") for r in rows]


def rebuild(db: Database) -> None:
    """Rebuild the whole index from ``items`` (after a bulk change made without triggers)."""
    db.execute("INSERT INTO items_fts (items_fts) VALUES ('rebuild')")


def integrity_ok(db: Database) -> bool:
    """Whether the index matches ``items`` exactly."""
    try:
        db.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)")
    except Exception:
        return False
    return True
