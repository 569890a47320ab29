"""Small key/value facts about the database (index generation, secrets)."""

from __future__ import annotations

from sqlite_utils import Database

__all__ = ["bump", "get", "put"]


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
