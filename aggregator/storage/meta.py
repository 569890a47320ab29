"""Small key/value facts about the database (index generation, secrets), and the
log of changes to existing clusters that advances the index generation."""

from __future__ import annotations

from sqlite_utils import Database

__all__ = ["bump", "changes_between", "get", "log_change", "put"]

KEEP_CHANGES = 10_000  # a process further behind than this rebuilds its index


def get(db: Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def put(db: Database, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def bump(db: Database, key: str) -> int:
    """Increment an integer counter; returns the new value."""
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, '1') "
        "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [key],
    )
    return int(get(db, key) or 0)


def log_change(db: Database, key: str, kind: str, a: int, b: int, c: int | None = None) -> int:
    """Advance the counter ``key`` by one step and record what the step was; returns
    the new value.  Call inside the transaction that makes the change."""
    generation = bump(db, key)
    db.execute(
        "INSERT OR REPLACE INTO index_changes (generation, kind, a, b, c) VALUES (?, ?, ?, ?, ?)",
        [generation, kind, a, b, c],
    )
    db.execute("DELETE FROM index_changes WHERE generation <= ?", [generation - KEEP_CHANGES])
    return generation


def changes_between(db: Database, after: int, upto: int) -> list[tuple[str, int, int, int | None]] | None:
    """The changes of steps ``after + 1 .. upto`` in order, as (kind, a, b, c); None
    unless every step is recorded (some steps are not changes that can be replayed)."""
    if upto - after > KEEP_CHANGES:
        return None
    rows = db.execute(
        "SELECT kind, a, b, c FROM index_changes WHERE generation > ? AND generation <= ? ORDER BY generation",
        [after, upto],
    ).fetchall()
    if len(rows) != upto - after:
        return None
    return [(kind, a, b, c) for kind, a, b, c in rows]
