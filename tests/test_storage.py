from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

import migrations
from aggregator.storage import feeds as feeds_store
from aggregator.storage import meta as meta_store
from aggregator.storage import open_database, write_transaction


def test_migrations_on_an_empty_database(tmp_path: Path) -> None:
    db = open_database(tmp_path / "new.db")
    names = [m.name for m in migrations.migrations.applied(db)]
    assert names == [m.name for m in migrations.migrations._migrations]
    assert {"feeds", "items", "signatures", "clusters", "memberships", "meta"} <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert migrations.apply(db) == []  # nothing left to do


def test_migrations_on_an_existing_database_keep_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.isolation_level = None
    db = Database(conn)
    names = [m.name for m in migrations.migrations._migrations]
    later = names[names.index("0002_core") + 1 :]
    # The database of the first release: the core schema, with data in it.
    migrations.migrations.apply(db, stop_before=later[0] if later else None)
    db.execute("INSERT INTO feeds (url, added_at) VALUES ('https://old.example/feed', 1.0)")
    db.execute(
        "INSERT INTO items (feed_id, identity, title, first_seen, last_seen, sort_time, content_hash) "
        "VALUES (1, 'guid:1', 'Old story', 1.0, 1.0, 1.0, 'h')"
    )
    db.close()
    reopened = open_database(path)
    assert [m.name for m in migrations.migrations.applied(reopened)] == names
    assert [f.url for f in feeds_store.all_feeds(reopened)] == ["https://old.example/feed"]
    assert reopened.execute("SELECT title FROM items").fetchall() == [("Old story",)]


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        open_database(bad)


def test_write_transaction_rolls_back_everything(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    with pytest.raises(RuntimeError), write_transaction(db):
        feeds_store.add(db, "https://a.example/", 1.0)
        meta_store.put(db, "k", "v")
        raise RuntimeError("crash")
    assert feeds_store.count(db) == 0 and meta_store.get(db, "k") is None
    with write_transaction(db):
        feeds_store.add(db, "https://a.example/", 1.0)
    assert feeds_store.count(db) == 1


def test_feed_state_columns_are_checked(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    feed, new = feeds_store.add(db, "https://a.example/", 1.0)
    assert new and feeds_store.add(db, "https://a.example/", 2.0) == (feed, False)
    with pytest.raises(ValueError, match="not a feed state column"):
        feeds_store.update_state(db, feed.id, {"id; DROP TABLE feeds": 1})
    feeds_store.update_state(db, feed.id, {"polls+": 2, "status": "ok"})
    stored = feeds_store.get(db, feed.id)
    assert stored is not None and stored.polls == 2 and stored.status == "ok"


def test_meta_counter(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    assert meta_store.bump(db, "gen") == 1
    assert meta_store.bump(db, "gen") == 2
