"""Full-text search over items (SQLite FTS5, table ``items_fts``), results grouped by story.

``items_fts`` indexes each item's title, summary and text; triggers (migration
``0003_fts``) keep it in step with ``items``.  User input never reaches FTS5's
query syntax directly: :func:`fts_query` turns it into a conjunction of quoted
phrases, so no input can raise a syntax error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlite_utils import Database

__all__ = [
    "HIGHLIGHT_END",
    "HIGHLIGHT_START",
    "Hit",
    "fts_query",
    "older_than_window",
    "rebuild",
    "story_hits",
    "window_ranks",
]

# Snippet highlight markers: control characters that normalised text never holds.
HIGHLIGHT_START = "\x02"
HIGHLIGHT_END = "\x03"

MAX_TERMS = 12  # words or phrases looked for; the rest of the input is ignored
MAX_PHRASE_WORDS = 16  # a longer quoted phrase keeps its first words
MAX_QUERY_CHARS = 1_000  # input read (the site's search box takes 200)
_CHUNK = re.compile(r'"([^"]*)"?|([^\s"]+)')
_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """An FTS5 query matching items that hold every word (or "quoted phrase") of ``text``.

    Each word or phrase becomes a quoted FTS5 phrase of its word characters, so
    operators, column filters and stray quotes in the input are plain words.
    Returns ``None`` when ``text`` holds no word at all.  Only the first
    ``MAX_QUERY_CHARS`` characters count, and at most ``MAX_TERMS`` words or
    phrases of at most ``MAX_PHRASE_WORDS`` words (a query of 50,000 words took FTS5
    over a minute).
    """
    phrases: list[str] = []
    for m in _CHUNK.finditer(text[:MAX_QUERY_CHARS]):
        chunk = m.group(1) if m.group(1) is not None else m.group(2)
        words = _WORD.findall(chunk)[:MAX_PHRASE_WORDS]
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


# Search ranks the WINDOW most recently stored matching items (the highest rowids),
# then the next WINDOW older ones on request: a popular name matches tens of
# thousands of reports, and looking at all of them costs tens of milliseconds per
# query however few are shown.
WINDOW = 1000
RANK_TITLE = 0.0  # every word (and phrase) of the query is in the headline
RANK_LEAD = 1.0  # ... in the headline or the summary
RANK_BODY = 2.0  # ... somewhere in the item


def _window(db: Database, match: str, window: int, before: int | None) -> tuple[int, bool]:
    """The lowest rowid of the window (the ``window`` newest matches below ``before``),
    and whether older matches lie beyond it."""
    below, args = ("AND rowid < ? ", [before]) if before is not None else ("", [])
    rows = db.execute(
        f"SELECT rowid FROM items_fts WHERE items_fts MATCH ? {below}ORDER BY rowid DESC LIMIT 2 OFFSET ?",
        [match, *args, window - 1],
    ).fetchall()
    return (int(rows[0][0]) if rows else 0), len(rows) > 1


def window_ranks(
    db: Database, match: str, window: int = WINDOW, before: int | None = None
) -> dict[int, float]:
    """The ``window`` most recently stored items matching ``match`` (of those stored
    before rowid ``before``, if given), each with its rank.

    Ranks are tiers: :data:`RANK_TITLE`, :data:`RANK_LEAD`, :data:`RANK_BODY`;
    ties go to the newer story.  Not bm25: FTS5's bm25 counts, on every query,
    every row holding each query word (its IDF), which for a common word ("said",
    "at") is a scan of most of the index whatever the LIMIT.  Each query here
    reads at most the window's rows: the window's oldest row first (a descending
    scan that stops after ``window`` rows), then three ascending scans from it.
    """
    low, _ = _window(db, match, window, before)
    top = before if before is not None else 1 << 62
    scan = "SELECT rowid FROM items_fts WHERE items_fts MATCH ? AND rowid >= ? AND rowid < ?"
    ranks = {int(r[0]): RANK_BODY for r in db.execute(scan, [match, low, top])}
    if not ranks:
        return ranks
    for rank, columns in ((RANK_LEAD, "{title summary}"), (RANK_TITLE, "{title}")):
        for (rowid,) in db.execute(scan, [f"{columns} : ({match})", low, top]):
            if rowid in ranks:
                ranks[rowid] = rank
    return ranks


def older_than_window(
    db: Database, match: str, window: int = WINDOW, before: int | None = None
) -> int | None:
    """Where the next window of older matches starts (the ``before`` to pass on), or
    None when the window below ``before`` holds the oldest match."""
    low, more = _window(db, match, window, before)
    return low if more else None


def story_hits(
    db: Database,
    match: str,
    limit: int,
    offset: int = 0,
    *,
    hits_per_story: int = 5,
    snippet_words: int = 24,
    window: int = WINDOW,
    before: int | None = None,
) -> list[tuple[int, list[Hit], int]]:
    """Stories with a matching item among the latest ``window`` stored (before rowid
    ``before``, if given), best first, with their best hits.

    A story ranks by its best item (see :func:`window_ranks`), then by its latest
    report; its hits are its matching items of the window, best first (older first
    among equals), at most ``hits_per_story``, each with a highlighted snippet; and how
    many of its items matched in all.  Snippets are made for the hits shown only.
    """
    limit, offset, hits_per_story = max(0, limit), max(0, offset), max(1, hits_per_story)
    ranks = window_ranks(db, match, window, before)
    if not ranks or not limit:
        return []
    rows = db.execute(
        "SELECT j.value, m.cluster_id, c.last_time FROM json_each(?) j "
        "JOIN memberships m ON m.item_id = j.value JOIN clusters c ON c.id = m.cluster_id",
        [json.dumps(list(ranks))],
    ).fetchall()
    members: dict[int, list[int]] = {}
    latest: dict[int, float] = {}
    for item_id, cluster_id, last_time in rows:
        members.setdefault(cluster_id, []).append(int(item_id))
        latest[cluster_id] = last_time or 0.0
    best = {cid: min(ranks[i] for i in ids) for cid, ids in members.items()}
    order = sorted(best, key=lambda cid: (best[cid], -latest[cid], -cid))[offset : offset + limit]
    shown = {cid: sorted(members[cid], key=lambda i: (ranks[i], i))[:hits_per_story] for cid in order}
    ids = sorted(i for hit_ids in shown.values() for i in hit_ids)
    snippets: dict[int, str] = {}
    if ids:
        marks = ",".join("?" * len(ids))
        snippets = dict(
            db.execute(
                "SELECT rowid, snippet(items_fts, -1, ?, ?, '…', ?) FROM items_fts "
                f"WHERE items_fts MATCH ? AND rowid BETWEEN ? AND ? AND +rowid IN ({marks})",
                [HIGHLIGHT_START, HIGHLIGHT_END, snippet_words, match, ids[0], ids[-1], *ids],
            ).fetchall()
        )
    return [
        (cid, [Hit(cid, i, ranks[i], snippets.get(i) or "") for i in shown[cid]], len(members[cid]))
        for cid in order
    ]


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
