"""Settings history: every change admins apply is a version; the latest is in force."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

__all__ = ["SettingsVersion", "add", "get", "history", "latest"]


@dataclass(frozen=True)
class SettingsVersion:
    id: int
    created_at: float
    author: str
    overrides: dict[str, Any]  # every admin override in force from this version on
    note: str
    reverts: int | None


def _version(row: Any) -> SettingsVersion:
    return SettingsVersion(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])


_COLUMNS = "id, created_at, author, overrides, note, reverts"


def add(
    db: Database,
    overrides: dict[str, Any],
    author: str,
    now: float,
    note: str = "",
    reverts: int | None = None,
) -> int:
    cur = db.execute(
        "INSERT INTO settings_versions (created_at, author, overrides, note, reverts) VALUES (?, ?, ?, ?, ?)",
        [now, author, json.dumps(overrides, sort_keys=True), note, reverts],
    )
    return int(cur.lastrowid or 0)


def latest(db: Database) -> SettingsVersion | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM settings_versions ORDER BY id DESC LIMIT 1").fetchone()
    return _version(row) if row else None


def get(db: Database, version_id: int) -> SettingsVersion | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM settings_versions WHERE id = ?", [version_id]).fetchone()
    return _version(row) if row else None


def history(db: Database, limit: int = 50) -> list[SettingsVersion]:
    rows = db.execute(f"SELECT {_COLUMNS} FROM settings_versions ORDER BY id DESC LIMIT ?", [limit])
    return [_version(r) for r in rows]
