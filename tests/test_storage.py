from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlite_utils import Database

import migrations
from aggregator import canonical
from aggregator.models import Feed, Item, MemberInfo, StoryFilter
from aggregator.storage import clusters as clusters_store
from aggregator.storage import feeds as feeds_store
from aggregator.storage import items as items_store
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


def test_migration_0018_gives_undated_items_the_identity_normalize_gives(tmp_path: Path) -> None:
    from aggregator.normalize import item_identity

    path = tmp_path / "t.db"
    db = open_database(path)
    feed = feeds_store.add(db, "https://f.example/", 1.0, title="f")[0].id
    item = dataclasses.replace(_item(1, 10), identity=item_identity(None, None, "item 1", None))  # as before
    (item_id,) = items_store.insert_many(db, feed, [item], 1.0, [1.0])
    db.execute("DELETE FROM _sqlite_migrations WHERE name = '0018_undated_identity'")
    db.close()
    db = open_database(path)
    (identity,) = db.execute("SELECT identity FROM items WHERE id = ?", [item_id]).fetchone()
    assert (
        identity == item_identity(None, None, "item 1", None, "h1") != item.identity
    )  # h1: its content hash


def test_a_database_a_newer_version_migrated_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = open_database(path)
    db.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('aggregator', '9999_future', 'x')"
    )
    db.close()
    with pytest.raises(migrations.NewerDatabaseError, match=r"newer version.*9999_future"):
        open_database(path)


def test_identities_made_from_links_are_made_again(tmp_path: Path) -> None:
    """Items stored under identities of the links as they were normalised before keep
    matching their feed's entries (else a feed without GUIDs would be stored twice)."""
    from aggregator.models import Entry
    from aggregator.normalize import normalize_entry

    path = tmp_path / "links.db"
    conn = sqlite3.connect(path)
    conn.isolation_level = None
    db = Database(conn)
    migrations.migrations.apply(db, stop_before="0010_link_identity")
    db.execute("INSERT INTO feeds (url, added_at) VALUES ('https://old.example/feed', 1.0)")
    old = [  # (link, identity, canonical link) as the old normalisation made them
        ("https://ex.com/live#u1", "link:https://ex.com/live", "https://ex.com/live"),
        ("https://ex.com/a?q=a%20b&utm_source=x", "link:https://ex.com/a?q=a+b", "https://ex.com/a?q=a+b"),
        ("https://ex.com/g", "guid:g1", "https://ex.com/g"),
    ]
    for n, (link, identity, canon) in enumerate(old):
        db.execute(
            "INSERT INTO items (feed_id, identity, link, canonical_link, title, first_seen, last_seen, "
            "sort_time, content_hash) VALUES (1, ?, ?, ?, ?, 1.0, 1.0, 1.0, 'h')",
            [identity, link, canon, f"Story {n}"],
        )
    db.close()
    reopened = open_database(path)
    rows = reopened.execute("SELECT link, identity, canonical_link FROM items ORDER BY id").fetchall()
    for (link, identity, _), (guid, made) in zip(rows, [(None, 0), (None, 1), ("g1", 2)], strict=True):
        assert identity == normalize_entry(Entry(guid, link, f"Story {made}", "", "")).identity
    assert rows[0][1] == "link:https://ex.com/live#u1" and rows[1][1] == "link:https://ex.com/a?q=a%20b"
    assert rows[2][1] == "guid:g1"
    assert [r[2] for r in rows] == [c for _, _, c in old]  # canonical links as they were


@pytest.mark.parametrize(
    "lookup",
    [
        "SELECT id FROM clusters WHERE canonical_item_id = 1",
        "SELECT id FROM clusters WHERE pinned_item_id = 1",
        "SELECT id FROM cluster_rules WHERE item_a = 1",
        "SELECT id FROM cluster_rules WHERE item_b = 1",
        "SELECT item_id FROM memberships WHERE cluster_id = 1",
        "SELECT id FROM items WHERE feed_id = 1",
    ],
)
def test_what_a_delete_looks_up_is_indexed(tmp_path: Path, lookup: str) -> None:
    """Foreign keys: deleting an item or cluster finds the rows that refer to it by index
    (removing a feed of 4,000 items scanned all clusters twice per item: 347 s at 200k)."""
    db = open_database(tmp_path / "t.db")
    plan = " ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + lookup))
    assert "USING" in plan and "INDEX" in plan, plan


def test_an_items_id_is_never_given_to_another_item(tmp_path: Path) -> None:
    """A feed's removal deleted the highest ids and new items took them: a cluster index
    or a re-clustering that had seen the old items took the new ones for them."""
    db = open_database(tmp_path / "t.db")
    feed = feeds_store.add(db, "https://f.example/", 1.0, title="f")[0].id
    first = items_store.insert_many(db, feed, [_item(n, 10) for n in range(3)], 1.0, [1.0, 2.0, 3.0])
    db.execute("DELETE FROM items WHERE id >= ?", [first[1]])
    (again,) = items_store.insert_many(db, feed, [_item(9, 10)], 1.0, [4.0])
    assert again == first[2] + 1
    db.execute("DELETE FROM items")
    assert items_store.insert_many(db, feed, [_item(10, 10)], 1.0, [5.0]) == [again + 1]


def test_missing_names_the_ids_not_stored(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    feed = feeds_store.add(db, "https://f.example/", 1.0, title="f")[0].id
    stored = items_store.insert_many(db, feed, [_item(n, 10) for n in range(3)], 1.0, [1.0, 2.0, 3.0])
    db.execute("DELETE FROM items WHERE id = ?", [stored[1]])
    assert items_store.missing(db, [10**6, *stored]) == [stored[1], 10**6]
    assert items_store.missing(db, []) == []


def test_adding_a_feed_another_process_just_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes subscribing to one URL at once: the second gets the first's feed,
    not an IntegrityError."""
    db, other = open_database(tmp_path / "t.db"), open_database(tmp_path / "t.db")
    real = feeds_store.get_by_url
    raced: list[bool] = []

    def late(conn: Database, url: str) -> Feed | None:
        if not raced:  # the other process adds it just after this one looked
            raced.append(True)
            feeds_store.add(other, url, 1.0)
            return None
        return real(conn, url)

    monkeypatch.setattr(feeds_store, "get_by_url", late)
    feed, new = feeds_store.add(db, "https://a.example/f", 2.0)
    assert raced and not new and feed.added_at == 1.0


def test_feed_urls_stored_before_are_put_in_the_one_form(tmp_path: Path) -> None:
    """Else subscribing again to http://Example.com:80/feed made a second feed."""
    path = tmp_path / "urls.db"
    conn = sqlite3.connect(path)
    conn.isolation_level = None
    db = Database(conn)
    migrations.migrations.apply(db, stop_before="0014_feed_url_form")
    for url in (
        "http://Example.com:80/feed",
        "HTTPS://b.example/f#x",
        "https://b.example/f",
        "file:///tmp/A%20b.xml",
    ):
        db.execute("INSERT INTO feeds (url, added_at) VALUES (?, 1.0)", [url])
    db.close()
    reopened = open_database(path)
    urls = [u for (u,) in reopened.execute("SELECT url FROM feeds ORDER BY id")]
    assert urls == [
        "http://example.com/feed",
        "HTTPS://b.example/f#x",
        "https://b.example/f",
        "file:///tmp/A%20b.xml",
    ]


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    for _ in range(3):
        with pytest.raises(sqlite3.DatabaseError):
            open_database(bad)
    fds = Path("/proc/self/fd")
    if fds.is_dir():  # the failed opens left no connection open on it
        assert not [fd for fd in fds.iterdir() if fd.resolve() == bad.resolve()]


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


def test_a_commit_that_fails_is_rolled_back(tmp_path: Path) -> None:
    """A failing COMMIT leaves SQLite's transaction open: it must not hold the write lock
    and swallow every later write."""
    db = open_database(tmp_path / "t.db")
    db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError), write_transaction(db):
        meta_store.put(db, "k", "v")
        db.execute("INSERT INTO child VALUES (42)")  # checked only at COMMIT
    assert not db.conn.in_transaction and meta_store.get(db, "k") is None
    with write_transaction(db):
        meta_store.put(db, "k", "w")
    other = open_database(tmp_path / "t.db")  # committed: another connection sees it
    assert meta_store.get(other, "k") == "w"
    other.close()


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


def test_logged_changes_replay_only_when_every_step_is_logged(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    assert meta_store.log_change(db, "gen", "merge", 5, 3) == 1
    assert meta_store.log_change(db, "gen", "merge", 3, 7) == 2
    assert meta_store.changes_between(db, 0, 2) == [("merge", 5, 3, None), ("merge", 3, 7, None)]
    assert meta_store.changes_between(db, 1, 2) == [("merge", 3, 7, None)]
    assert meta_store.changes_between(db, 2, 2) == []
    meta_store.bump(db, "gen")  # a change that cannot be replayed (a re-clustering)
    meta_store.log_change(db, "gen", "move", 1, 2, 9)
    assert meta_store.changes_between(db, 2, 4) is None
    assert meta_store.changes_between(db, 3, 4) == [("move", 1, 2, 9)]
    assert meta_store.changes_between(db, 4 - meta_store.KEEP_CHANGES - 1, 4) is None


# -- cluster summaries: growing a cluster equals recomputing it ---------------------------------


def _item(n: int, length: int) -> Item:
    return Item(
        identity=f"i{n}",
        guid=f"i{n}",
        link=None,
        canonical_link=None,
        title=f"item {n}",
        summary="",
        text="x" * length,
        content_html="",
        author=None,
        published=None,
        updated=None,
        categories=(),
        content_hash=f"h{n}",
    )


class _Summaries:
    """Feeds 0..3 (feed 3 under feed 0's name: one outlet, two feeds) and stories of
    (feed, time, text length) members, for the tests that compare a cluster summary's
    shortcuts with a full refresh."""

    QUERY = "SELECT id, canonical_item_id, size, n_feeds, first_time, last_time, outlets FROM clusters ORDER BY id"

    def __init__(self, db: Database, policy: str) -> None:
        self.db = db
        self.policy = policy
        self.counter = iter(range(1, 10**6))
        self.feed_ids = [
            feeds_store.add(db, f"https://f{k}.example/", 1.0, title=f"feed {k % 3}")[0].id for k in range(4)
        ]

    def check_outlet_counts(self) -> None:
        """Every story's n_feeds is the number of outlet names among its members' feeds."""
        rows = self.db.execute(
            "SELECT c.n_feeds, (SELECT count(DISTINCT f.title) FROM memberships m JOIN items i ON i.id = m.item_id "
            "JOIN feeds f ON f.id = i.feed_id WHERE m.cluster_id = c.id) FROM clusters c WHERE c.size > 0"
        ).fetchall()
        assert all(stored == names for stored, names in rows), rows

    def choose(self, members: Sequence[MemberInfo]) -> int:
        return canonical.choose(members, self.policy, ["feed 2", "https://f1.example/"])

    def store(self, cluster: int, members: list[tuple[int, int, int]]) -> list[int]:
        ids = []
        for f, t, length in members:
            item = _item(next(self.counter), length)
            ids += items_store.insert_many(self.db, self.feed_ids[f], [item], 1.0, [float(t)])
        clusters_store.add_members(self.db, [(i, cluster, 1.0, "similar", None) for i in ids], 1.0)
        return ids

    def stories(self, stories: list[list[tuple[int, int, int]]], pin: bool) -> list[int]:
        """The stories stored and refreshed; their cluster ids (pinned: their last member)."""
        clusters = []
        for members in stories:
            c = clusters_store.create(self.db, 1.0)
            clusters.append(c)
            ids = self.store(c, members)
            if pin:
                clusters_store.pin(self.db, c, ids[-1])
        clusters_store.refresh_many(self.db, clusters, self.choose, 1.0)
        return clusters


_member = st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 40))  # feed, time, text length


@settings(max_examples=40, deadline=None)
@given(
    stories=st.lists(st.lists(_member, min_size=1, max_size=6), min_size=1, max_size=8),
    min_outlets=st.integers(1, 5),
    offset=st.integers(0, 4),
    few=st.integers(0, 10),
)
def test_stories_by_coverage_read_either_way_are_the_same(
    tmp_path_factory: pytest.TempPathFactory,
    stories: list[list[tuple[int, int, int]]],
    min_outlets: int,
    offset: int,
    few: int,
) -> None:
    """Stories told by at least N outlets, newest first, whether found through the
    coverage index (few of them) or by reading stories by time: the same page."""
    db = open_database(tmp_path_factory.mktemp("cover") / "agg.db")
    with write_transaction(db):
        _Summaries(db, "earliest").stories(stories, pin=False)
    rows = db.execute("SELECT id, n_feeds, last_time FROM clusters").fetchall()
    expected = [c for c, n, _ in sorted(rows, key=lambda r: (-r[2], -r[0])) if n >= min_outlets][
        offset : offset + 3
    ]
    old = clusters_store.FEW_STORIES
    try:
        clusters_store.FEW_STORIES = few
        found = clusters_store.stories(db, StoryFilter(min_outlets=min_outlets), limit=3, offset=offset)
        listed = clusters_store.listing(db, limit=3, offset=offset, min_outlets=min_outlets)
    finally:
        clusters_store.FEW_STORIES = old
    assert [s.id for s in found] == expected == [s.id for s in listed]


def test_migration_0015_gives_stored_stories_the_outlets_a_refresh_gives(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = open_database(path)
    with write_transaction(db):
        _Summaries(db, "earliest").stories(
            [[(0, 5, 1), (1, 3, 1), (0, 1, 1)], [(2, 4, 1)], [(3, 2, 1), (1, 2, 1), (2, 2, 1)]], pin=False
        )
    refreshed = db.execute(_Summaries.QUERY).fetchall()
    assert json.loads(refreshed[0][-1]) == [[1, 1.0], [2, 3.0]]  # feed ids 1 and 2 are "feed 0" and "feed 1"
    db.execute("ALTER TABLE clusters DROP COLUMN outlets")
    db.execute("DELETE FROM _sqlite_migrations WHERE name = '0015_story_outlets'")
    db.close()
    assert open_database(path).execute(_Summaries.QUERY).fetchall() == refreshed


def test_migration_0025_counts_outlets_by_name(tmp_path: Path) -> None:
    """Stories stored before counted feeds: two of one name were two outlets."""
    path = tmp_path / "t.db"
    db = open_database(path)
    with write_transaction(db):
        built = _Summaries(db, "earliest")
        both, _ = built.stories([[(0, 1, 1), (3, 2, 1), (1, 3, 1)], [(1, 1, 1), (2, 2, 1)]], pin=False)
    refreshed = db.execute(_Summaries.QUERY).fetchall()
    assert [r[3] for r in refreshed] == [2, 2]  # "feed 0" (feeds 0 and 3) and "feed 1"; "feed 1" and "feed 2"
    db.execute("UPDATE clusters SET n_feeds = 3 WHERE id = ?", [both])  # as counted before
    db.execute("DELETE FROM _sqlite_migrations WHERE name = '0025_outlets_by_name'")
    db.close()
    assert open_database(path).execute(_Summaries.QUERY).fetchall() == refreshed


def test_a_reclustering_remembers_where_the_stories_without_an_id_went(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    with write_transaction(db):
        built = _Summaries(db, "earliest")
        one, two, three = built.stories([[(0, 1, 1), (1, 1, 1)], [(3, 2, 1)], [(2, 3, 1)]], pin=False)
        a, b, c, d = sorted(clusters_store.partition(db))
        # Stories one and two become one (it keeps the id of one); three stays as it was.
        out = clusters_store.replace_all(
            db,
            [
                [(a, 1.0, "new", None), (b, 1.0, "similar", None), (c, 1.0, "similar", None)],
                [(d, 1.0, "new", None)],
            ],
            lambda ms: ms[0].item_id,
            [],
            1.0,
        )
    assert out == {a: one, b: one, c: one, d: three}
    built.check_outlet_counts()  # (a re-clustering's summaries count outlets by name too)
    assert clusters_store.merged_into(db, two) == one
    assert clusters_store.merged_into(db, one) is None and clusters_store.merged_into(db, three) is None
    with write_transaction(db):
        clusters_store.merge_into(db, three, [one])
    assert clusters_store.merged_into(db, two) == three == clusters_store.merged_into(db, one)


def test_stories_told_by_few_outlets_enough_are_read_through_the_coverage_index(tmp_path: Path) -> None:
    db = open_database(tmp_path / "t.db")
    source = clusters_store._clusters_for(db, "latest", 20)
    plan = db.execute(
        f"EXPLAIN QUERY PLAN SELECT c.id FROM {source} WHERE c.n_feeds >= 20 ORDER BY c.last_time DESC LIMIT 5"
    ).fetchall()
    assert "clusters_coverage" in str(plan)
    assert clusters_store._clusters_for(db, "latest", 1) == "clusters c"


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(st.lists(_member, min_size=1, max_size=6), max_size=5),
    added=st.lists(st.tuples(st.integers(0, 6), _member), min_size=1, max_size=12),
    policy=st.sampled_from(["earliest", "most_complete", "preferred"]),
    pin=st.booleans(),
)
def test_grow_matches_a_full_refresh(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[list[tuple[int, int, int]]],
    added: list[tuple[int, tuple[int, int, int]]],
    policy: str,
    pin: bool,
) -> None:
    """``clusters.grow`` (the summary from the old summary and the new members) leaves
    every cluster as ``refresh_many`` (all members read again) would: canonical item,
    size, outlets, span; with pinned items and every canonical policy."""
    db = open_database(tmp_path_factory.mktemp("grow") / "agg.db")
    with write_transaction(db):
        built = _Summaries(db, policy)
        clusters = built.stories(before, pin)
        grown: dict[int, list[int]] = {}
        fresh: dict[int, int] = {}
        for target, member in added:
            if target < len(clusters):
                c = clusters[target]
            else:
                c = fresh.get(target) or fresh.setdefault(target, clusters_store.create(db, 1.0))
            grown.setdefault(c, []).extend(built.store(c, [member]))
        clusters_store.grow(db, grown, built.choose, 2.0)
        built.check_outlet_counts()
        after_grow = db.execute(_Summaries.QUERY).fetchall()
        clusters_store.refresh_many(db, [*clusters, *fresh.values()], built.choose, 3.0)
        assert after_grow == db.execute(_Summaries.QUERY).fetchall()


def test_grow_refreshes_a_story_whose_outlet_list_an_older_version_left_behind(tmp_path: Path) -> None:
    """A process of the version before 0015, still running, kept the count and not the
    list: growing from the stale list undercounted the outlets for good."""
    db = open_database(tmp_path / "t.db")
    with write_transaction(db):
        built = _Summaries(db, "earliest")
        (story,) = built.stories([[(0, 1, 1), (1, 2, 1), (2, 3, 1)]], pin=False)
        db.execute("UPDATE clusters SET outlets = '[[1,1.0]]' WHERE id = ?", [story])  # 3 outlets counted
        clusters_store.grow(db, {story: built.store(story, [(3, 4, 1)])}, built.choose, 2.0)
    grown = db.execute(_Summaries.QUERY).fetchall()
    with write_transaction(db):
        clusters_store.refresh_many(db, [story], built.choose, 2.0)
    assert grown == db.execute(_Summaries.QUERY).fetchall() and grown[0][3] == 3  # (feeds 0 and 3: one name)


def _stories(db: Database, sizes: list[int]) -> tuple[list[int], list[list[int]]]:
    """Stories of ``sizes`` items of one outlet each (items 1 ms apart), refreshed at t=1."""
    feed = feeds_store.add(db, "https://f.example/", 1.0, title="f")[0].id
    clusters, members, n = [], [], 0
    for size in sizes:
        c = clusters_store.create(db, 1.0)
        items = [_item(n + k, 10 + k) for k in range(size)]
        n += size
        ids = items_store.insert_many(db, feed, items, 1.0, [1.0 + k / 1000 for k in range(size)])
        clusters_store.add_members(db, [(i, c, 1.0, "similar", None) for i in ids], 1.0)
        clusters.append(c)
        members.append(ids)
    clusters_store.refresh_many(db, clusters, lambda ms: ms[0].item_id, 1.0)
    return clusters, members


def test_a_story_number_is_never_given_to_another_story(tmp_path: Path) -> None:
    """After the story with the highest number is merged away (or a re-clustering
    drops it), new stories get new numbers: a reader's old link must not show another."""
    db = open_database(tmp_path / "t.db")
    with write_transaction(db):
        (a, _, c), members = _stories(db, [1, 1, 1])
        clusters_store.merge_into(db, a, [c])
        assert clusters_store.create(db, 2.0) == c + 1
        groups = [[(i, 1.0, "similar", None) for i in members[0] + members[1] + members[2]]]
        db.execute("DELETE FROM clusters WHERE id = ?", [c + 1])
        out = clusters_store.replace_all(db, groups, lambda ms: ms[0].item_id, [], 3.0)
        assert set(out.values()) == {a}  # the story keeps its number
        assert clusters_store.create(db, 4.0) == c + 2


def test_a_reclustered_story_keeps_a_number_its_items_had(tmp_path: Path) -> None:
    """A group whose most-voted old number another group took got a brand-new number,
    though the number of its other items was free: readers saw that story twice."""
    db = open_database(tmp_path / "t.db")
    with write_transaction(db):
        (big, small), (three, (lone,)) = _stories(db, [3, 1])
        # {a, b} stays `big`; {c, lone} votes big (taken) and small (free)
        groups = [[(i, 1.0, "similar", None) for i in g] for g in ([three[0], three[1]], [three[2], lone])]
        out = clusters_store.replace_all(db, groups, lambda ms: ms[0].item_id, [], 3.0)
    assert out == {three[0]: big, three[1]: big, three[2]: small, lone: small}


@pytest.mark.parametrize("first", [True, False])
def test_a_reclustering_dates_a_story_whose_headline_changed(tmp_path: Path, first: bool) -> None:
    """Readers go by ``updated`` to show a changed headline again: a story whose members
    stay but whose canonical item changes (a new canonical policy) is updated now."""
    db = open_database(tmp_path / "t.db")
    with write_transaction(db):
        (c,), (ids,) = _stories(db, [3])
        groups = [[(i, 1.0, "similar", None) for i in ids]]
        choose = (lambda ms: ms[0].item_id) if first else (lambda ms: ms[-1].item_id)
        clusters_store.replace_all(db, groups, choose, [], 5.0)
        row = db.execute("SELECT canonical_item_id, updated_at FROM clusters WHERE id = ?", [c]).fetchone()
    assert row == ((ids[0], 1.0) if first else (ids[-1], 5.0))


@settings(max_examples=40, deadline=None)
@given(
    stories=st.lists(st.lists(_member, min_size=1, max_size=6), min_size=1, max_size=5),
    removed=st.integers(0, 3),
    policy=st.sampled_from(["earliest", "most_complete", "preferred"]),
    pin=st.booleans(),
)
def test_shrink_matches_a_full_refresh(
    tmp_path_factory: pytest.TempPathFactory,
    stories: list[list[tuple[int, int, int]]],
    removed: int,
    policy: str,
    pin: bool,
) -> None:
    """After a feed's items go, ``clusters.shrink`` (counts and span read again, the
    canonical item kept if it stayed) leaves every cluster as ``refresh_many`` would."""
    folder = tmp_path_factory.mktemp("shrink")
    results = []
    for how in ("shrink", "refresh"):
        db = open_database(folder / f"{how}.db")
        with write_transaction(db):
            built = _Summaries(db, policy)
            built.stories(stories, pin)
            touched = feeds_store.remove(db, built.feed_ids[removed])
            refresh = clusters_store.shrink if how == "shrink" else clusters_store.refresh_many
            refresh(db, touched, built.choose, 2.0)
            built.check_outlet_counts()
        results.append(db.execute(_Summaries.QUERY).fetchall())
        db.close()
    assert results[0] == results[1]
