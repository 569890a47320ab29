"""Admin accounts and login attempts (for rate limiting)."""

from __future__ import annotations

from typing import NamedTuple

from sqlite_utils import Database

__all__ = [
    "Failures",
    "attempt_succeeded",
    "end_sessions",
    "failures_since",
    "get_hash",
    "names",
    "record_attempt",
    "session_key",
    "set_hash",
]


def set_hash(db: Database, name: str, password_hash: str, now: float) -> None:
    db.execute(
        "INSERT INTO admin_users (name, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at",
        [name, password_hash, now, now],
    )


def get_hash(db: Database, name: str) -> str | None:
    row = db.execute("SELECT password_hash FROM admin_users WHERE name = ?", [name]).fetchone()
    return row[0] if row else None


def session_key(db: Database, name: str) -> tuple[str, int] | None:
    """What an account's sessions are stamped with: its password hash and how many times
    its sessions were ended."""
    row = db.execute("SELECT password_hash, sessions FROM admin_users WHERE name = ?", [name]).fetchone()
    return (row[0], int(row[1])) if row else None


def remove(db: Database, name: str) -> bool:
    return db.execute("DELETE FROM admin_users WHERE name = ?", [name]).rowcount > 0


def end_sessions(db: Database, name: str) -> None:
    db.execute("UPDATE admin_users SET sessions = sessions + 1 WHERE name = ?", [name])


def names(db: Database) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM admin_users ORDER BY name")]


def record_attempt(db: Database, name: str, remote: str, now: float, ok: bool) -> int:
    """Record a login attempt; returns its id."""
    cur = db.execute(
        "INSERT INTO login_attempts (name, remote, at, ok) VALUES (?, ?, ?, ?)",
        [name[:200], remote[:100], now, int(ok)],
    )
    db.execute("DELETE FROM login_attempts WHERE at < ?", [now - 86400])
    return int(cur.lastrowid or 0)


def attempt_succeeded(db: Database, attempt_id: int) -> None:
    db.execute("UPDATE login_attempts SET ok = 1 WHERE id = ?", [attempt_id])


class Failures(NamedTuple):
    """Failed logins in a period: to an account, from an address, and both."""

    by_name: int
    by_remote: int
    by_name_and_remote: int


def failures_since(db: Database, *, name: str, remote: str, since: float) -> Failures:
    """Failed logins since ``since`` to this account name and from this address."""
    by_name, by_pair = db.execute(
        "SELECT count(*), coalesce(sum(remote = ?), 0) FROM login_attempts "
        "WHERE name = ? AND at >= ? AND ok = 0",
        [remote[:100], name[:200], since],
    ).fetchone()
    by_remote = db.execute(
        "SELECT count(*) FROM login_attempts WHERE remote = ? AND at >= ? AND ok = 0",
        [remote[:100], since],
    ).fetchone()[0]
    return Failures(int(by_name), int(by_remote), int(by_pair))
