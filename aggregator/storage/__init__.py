"""SQLite storage: one module per domain (feeds, items, clusters, meta).

All SQL of the project lives in this package.
"""

from __future__ import annotations

import contextlib
import sqlite3

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

import migrations

__all__ = ["Database", "open_database", "read_snapshot", "write_transaction"]

BUSY_TIMEOUT_MS = 30_000


def next_id_sql(table: str, high_key: str) -> str:
    """An SQL expression for ``table``'s next id that never gives an id used before:
    past both the highest id there and the highest ever deleted, which a trigger keeps
    in ``meta`` under ``high_key`` (migrations 0012 for stories, 0017 for items)."""
    return (
        f"max(coalesce((SELECT max(id) FROM {table}), 0), "
        f"coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{high_key}'), 0)) + 1"
    )


_INT64 = (-(2**63), 2**63 - 1)


class _Database(Database):
    """sqlite-utils' Database whose ``execute`` binds integers beyond SQLite's 64 bits
    as the nearest 64-bit value instead of raising OverflowError: every stored id and
    count fits, so ``id = 2**70`` finds nothing, ``LIMIT 2**70`` is no limit and
    ``id > 2**70`` nothing, as they should (a library caller's huge id was a traceback)."""

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        if isinstance(parameters, (list, tuple)):
            lo, hi = _INT64
            if any(type(p) is int and not lo <= p <= hi for p in parameters):
                parameters = [min(max(p, lo), hi) if type(p) is int else p for p in parameters]
        return super().execute(sql, parameters)


def open_database(path: str | Path, *, migrate: bool = True, fast_unsafe: bool = False) -> Database:
    """Open (creating if needed) the database at ``path`` and apply pending migrations.

    ``fast_unsafe`` turns off fsync for throw-away databases (evaluation, previews).
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    # Autocommit outside explicit transactions: every multi-statement write goes
    # through ``db.atomic()``, so nothing is left pending in an implicit transaction.
    conn.isolation_level = None
    try:
        db = _Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = OFF" if fast_unsafe else "PRAGMA synchronous = NORMAL")
        if migrate:
            _migrate_locked(db, path)
    except BaseException:  # not a database, locked, a failed migration: nothing left open
        conn.close()
        raise
    return db


def _migrate_locked(db: Database, path: str | Path) -> None:
    """Apply migrations while holding a lock file, so processes starting together do not race."""
    if str(path) == ":memory:" or fcntl is None:
        migrations.apply(db)
        return
    with open(f"{path}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            migrations.apply(db)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def read_snapshot(db: Database) -> Iterator[Database]:
    """Reads that see the database as of one moment (a deferred transaction: in WAL
    mode its snapshot is taken at its first read; writers go on meanwhile).  Inside
    a transaction already, that one's view is used."""
    if db.conn.in_transaction:
        yield db
        return
    db.execute("BEGIN")
    try:
        yield db
    finally:
        if db.conn.in_transaction:
            db.execute("COMMIT")


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """A transaction that takes the write lock at once (``BEGIN IMMEDIATE``).

    Reads made inside it cannot go stale before its writes, which matters for the
    pipeline: it reads the latest items, then writes new ones after them.  Nested
    use falls back to a savepoint.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself fails (disk full, I/O error): a transaction left open
        # would keep the write lock and swallow every later write as a savepoint.
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise


def backup(db: Database, dest: str | Path) -> None:
    """Copy the database to ``dest`` with SQLite's online backup.

    The copy is one consistent snapshot, taken while other connections keep
    writing (WAL readers do not block writers).  ``dest`` is replaced atomically.
    """
    dest = Path(dest)
    live = db.execute("PRAGMA database_list").fetchone()[2]  # the main database's file ("" in memory)
    if live:
        here = Path(live).resolve()
        if dest.resolve() in {
            here,
            *(here.with_name(here.name + end) for end in ("-wal", "-shm", "-journal")),
        }:
            raise ValueError(f"{dest} is the database itself: a backup must go to another file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    target = sqlite3.connect(str(tmp))
    try:
        db.conn.backup(target)
        ok = target.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise sqlite3.DatabaseError(f"backup failed its integrity check: {ok}")
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()
    tmp.replace(dest)


def integrity_check(db: Database) -> str:
    """SQLite's ``PRAGMA integrity_check``: "ok", or the problems found."""
    rows = db.execute("PRAGMA integrity_check").fetchall()
    return "\n".join(str(r[0]) for r in rows)
