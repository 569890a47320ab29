"""Database schema, as sqlite-utils migrations applied in order at start-up.

Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("aggregator")

__all__ = ["NewerDatabaseError", "apply", "migrations"]


class NewerDatabaseError(RuntimeError):
    """The database has migrations this version does not know: a newer version wrote it."""


def apply(db: Database) -> list[str]:
    """Apply pending migrations; return the names applied.

    Refuses a database that a newer version of the aggregator migrated: this version
    would read and write its new tables and columns wrongly (stories listed without
    their outlets, counts left stale).
    """
    known = {m.name for m in migrations._migrations}
    unknown = sorted({m.name for m in migrations.applied(db)} - known)
    if unknown:
        raise NewerDatabaseError(
            f"the database was changed by a newer version of the aggregator (migration {unknown[-1]}); "
            "upgrade the aggregator to use it"
        )
    pending = [m.name for m in migrations.pending(db)]
    migrations.apply(db)
    return pending


@migrations(name="0001_wal", transactional=False)
def m0001_wal(db: Database) -> None:
    # WAL lets the site read while the poller writes; it cannot change inside a transaction.
    if not db.memory:
        db.enable_wal()


@migrations(name="0002_core")
def m0002_core(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE feeds (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL UNIQUE,
            title TEXT,
            site_url TEXT,
            added_at REAL NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'new',
            last_error TEXT,
            warning TEXT,
            etag TEXT,
            last_modified TEXT,
            last_polled_at REAL,
            last_ok_at REAL,
            next_poll_at REAL,
            interval_minutes REAL,
            failures INTEGER NOT NULL DEFAULT 0,
            error_since REAL,
            polls INTEGER NOT NULL DEFAULT 0,
            not_modified INTEGER NOT NULL DEFAULT 0,
            fetch_ms_total REAL NOT NULL DEFAULT 0,
            items_total INTEGER NOT NULL DEFAULT 0,
            last_items_added INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX feeds_next_poll ON feeds(next_poll_at);

        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            feed_id INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
            identity TEXT NOT NULL,
            guid TEXT,
            link TEXT,
            canonical_link TEXT,
            title TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL DEFAULT '',
            content_html TEXT NOT NULL DEFAULT '',
            author TEXT,
            categories TEXT NOT NULL DEFAULT '[]',
            published REAL,
            updated REAL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            sort_time REAL NOT NULL,
            content_hash TEXT NOT NULL,
            UNIQUE (feed_id, identity)
        );
        CREATE INDEX items_canonical_link ON items(canonical_link);
        CREATE INDEX items_content_hash ON items(content_hash);
        CREATE INDEX items_sort_time ON items(sort_time);

        CREATE TABLE signatures (
            item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
            num_perm INTEGER NOT NULL,
            sig BLOB NOT NULL
        );

        CREATE TABLE clusters (
            id INTEGER PRIMARY KEY,
            canonical_item_id INTEGER REFERENCES items(id) ON DELETE SET NULL,
            pinned_item_id INTEGER REFERENCES items(id) ON DELETE SET NULL,
            size INTEGER NOT NULL DEFAULT 0,
            n_feeds INTEGER NOT NULL DEFAULT 0,
            first_time REAL,
            last_time REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX clusters_last_time ON clusters(last_time);
        CREATE INDEX clusters_updated_at ON clusters(updated_at);

        CREATE TABLE memberships (
            item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
            cluster_id INTEGER NOT NULL REFERENCES clusters(id),
            score REAL NOT NULL,
            signal TEXT NOT NULL,
            matched_item_id INTEGER,
            joined_at REAL NOT NULL
        );
        CREATE INDEX memberships_cluster ON memberships(cluster_id);

        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        """
    )


@migrations(name="0003_fts")
def m0003_fts(db: Database) -> None:
    # Full-text search over items (SQLite FTS5), an external-content index kept in
    # step with ``items`` by triggers; filled from the items already stored.
    db.executescript(
        """
        CREATE VIRTUAL TABLE items_fts USING fts5(
            title, summary, text,
            content='items', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER items_fts_insert AFTER INSERT ON items BEGIN
            INSERT INTO items_fts (rowid, title, summary, text)
            VALUES (new.id, new.title, new.summary, new.text);
        END;
        CREATE TRIGGER items_fts_delete AFTER DELETE ON items BEGIN
            INSERT INTO items_fts (items_fts, rowid, title, summary, text)
            VALUES ('delete', old.id, old.title, old.summary, old.text);
        END;
        CREATE TRIGGER items_fts_update AFTER UPDATE OF title, summary, text ON items BEGIN
            INSERT INTO items_fts (items_fts, rowid, title, summary, text)
            VALUES ('delete', old.id, old.title, old.summary, old.text);
            INSERT INTO items_fts (rowid, title, summary, text)
            VALUES (new.id, new.title, new.summary, new.text);
        END;
        INSERT INTO items_fts (items_fts) VALUES ('rebuild');
        """
    )


@migrations(name="0004_admin")
def m0004_admin(db: Database) -> None:
    # Admin accounts, settings history, manual corrections and background jobs.
    db.executescript(
        """
        CREATE TABLE admin_users (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE login_attempts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            remote TEXT NOT NULL,
            at REAL NOT NULL,
            ok INTEGER NOT NULL
        );
        CREATE INDEX login_attempts_remote ON login_attempts(remote, at);
        CREATE INDEX login_attempts_name ON login_attempts(name, at);

        CREATE TABLE settings_versions (
            id INTEGER PRIMARY KEY,
            created_at REAL NOT NULL,
            author TEXT NOT NULL,
            overrides TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            reverts INTEGER REFERENCES settings_versions(id)
        );

        CREATE TABLE cluster_rules (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('must', 'cannot', 'pin')),
            item_a INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            item_b INTEGER REFERENCES items(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            author TEXT NOT NULL
        );
        CREATE UNIQUE INDEX cluster_rules_unique ON cluster_rules(kind, item_a, coalesce(item_b, 0));
        CREATE INDEX cluster_rules_b ON cluster_rules(item_b);

        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            result TEXT,
            author TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        """
    )


@migrations(name="0005_site_version")
def m0005_site_version(db: Database) -> None:
    # One row counting every change the public pages may show, bumped by triggers
    # whatever writes (pipeline, re-clustering, admin corrections, feed management),
    # so the site's freshness check (its ETag) reads one row instead of counting
    # every cluster.  Item inserts need no trigger: each refreshes its cluster, and
    # the site also reads max(items.id).
    bump = "UPDATE site_version SET changes = changes + 1 WHERE id = 1;"
    db.executescript(
        f"""
        CREATE TABLE site_version (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            changes INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO site_version (id, changes) VALUES (1, 0);
        CREATE TRIGGER site_version_clusters_insert AFTER INSERT ON clusters BEGIN {bump} END;
        CREATE TRIGGER site_version_clusters_update AFTER UPDATE ON clusters BEGIN {bump} END;
        CREATE TRIGGER site_version_clusters_delete AFTER DELETE ON clusters BEGIN {bump} END;
        CREATE TRIGGER site_version_memberships_update AFTER UPDATE ON memberships BEGIN {bump} END;
        CREATE TRIGGER site_version_items_update AFTER UPDATE OF
            guid, link, canonical_link, title, summary, text, content_html, author, categories,
            published, updated, sort_time ON items BEGIN {bump} END;
        CREATE TRIGGER site_version_feeds_insert AFTER INSERT ON feeds BEGIN {bump} END;
        CREATE TRIGGER site_version_feeds_delete AFTER DELETE ON feeds BEGIN {bump} END;
        CREATE TRIGGER site_version_feeds_rename AFTER UPDATE OF title, url, site_url ON feeds
            WHEN old.title IS NOT new.title OR old.url IS NOT new.url OR old.site_url IS NOT new.site_url
            BEGIN {bump} END;
        """
    )


@migrations(name="0006_frozen_vectors")
def m0006_frozen_vectors(db: Database) -> None:
    # Each item's vector as made when it arrived, so that start-up restores the
    # cluster index without re-tokenising the window (JSON, tagged with the settings).
    db.execute("ALTER TABLE signatures ADD COLUMN frozen TEXT")


@migrations(name="0007_site_indexes")
def m0007_site_indexes(db: Database) -> None:
    # What the site's filters and sorts need at a million items: "most covered"
    # in index order, an outlet's items newest first, and each item's categories
    # (lower-cased) as rows, kept by triggers, so a category filter looks them up
    # instead of reading the JSON of every item.
    categories = (
        "SELECT {item}.id, lower(j.value) FROM json_each(CASE WHEN json_valid({item}.categories) "
        "THEN {item}.categories ELSE '[]' END) j WHERE j.value IS NOT NULL"
    )
    db.executescript(
        f"""
        CREATE INDEX clusters_coverage ON clusters (n_feeds DESC, size DESC, last_time DESC, id DESC);
        CREATE INDEX items_feed_time ON items (feed_id, sort_time);
        CREATE TABLE item_categories (
            category TEXT NOT NULL,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            PRIMARY KEY (category, item_id)
        ) WITHOUT ROWID;
        CREATE INDEX item_categories_item ON item_categories (item_id);
        INSERT OR IGNORE INTO item_categories (item_id, category)
            SELECT i.id, lower(j.value) FROM items i, json_each(CASE WHEN json_valid(i.categories)
            THEN i.categories ELSE '[]' END) j WHERE j.value IS NOT NULL;
        CREATE TRIGGER item_categories_insert AFTER INSERT ON items BEGIN
            INSERT OR IGNORE INTO item_categories (item_id, category) {categories.format(item="new")};
        END;
        CREATE TRIGGER item_categories_update AFTER UPDATE OF categories ON items BEGIN
            DELETE FROM item_categories WHERE item_id = old.id;
            INSERT OR IGNORE INTO item_categories (item_id, category) {categories.format(item="new")};
        END;
        """
    )


@migrations(name="0008_feed_poll_minutes")
def m0008_feed_poll_minutes(db: Database) -> None:
    # An admin's own polling interval for a feed (NULL: the automatic one).
    db.execute("ALTER TABLE feeds ADD COLUMN poll_minutes REAL")


@migrations(name="0009_poll_requests")
def m0009_poll_requests(db: Database) -> None:
    # An admin's "Poll now", for the poller process to act on (NULL: none pending), and
    # what the last poll updated (to report the outcome of a poll made by another process).
    db.execute("ALTER TABLE feeds ADD COLUMN poll_requested_at REAL")
    db.execute("ALTER TABLE feeds ADD COLUMN last_items_updated INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "CREATE INDEX feeds_poll_requested ON feeds(poll_requested_at) WHERE poll_requested_at IS NOT NULL"
    )


@migrations(name="0010_link_identity")
def m0010_link_identity(db: Database) -> None:
    # Identities made from links as aggregator.normalize makes them from now on (the
    # query kept as written, the fragment included: live blogs give each update its own
    # "#..."); else the next poll of a feed without GUIDs would store its items again.
    # Only items without a GUID have such identities.  Stored canonical links keep their
    # old form: they only serve same-link evidence, which falls back to the text.
    from aggregator.normalize import item_identity, link_key

    identities = []
    for item_id, identity, link, title, published in db.execute(
        "SELECT id, identity, link, title, published FROM items WHERE identity LIKE 'link:%' AND link IS NOT NULL"
    ):
        key = item_identity(None, link_key(link), title, published)
        if key != identity:
            identities.append((key, item_id))
    db.conn.executemany("UPDATE OR IGNORE items SET identity = ? WHERE id = ?", identities)


@migrations(name="0011_index_changes")
def m0011_index_changes(db: Database) -> None:
    # Changes to existing clusters (an admin's merge or move, a merge made while
    # clustering), one per step of the index generation, so that a process holding a
    # cluster index applies them instead of rebuilding it.  merge: a into b; move:
    # item a from cluster b to cluster c.
    db.execute(
        """
        CREATE TABLE index_changes (
            generation INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            a INTEGER NOT NULL,
            b INTEGER NOT NULL,
            c INTEGER
        )
        """
    )


@migrations(name="0012_story_numbers_not_reused")
def m0012_story_numbers_not_reused(db: Database) -> None:
    # SQLite gives a new row the highest id + 1: after the story with the highest
    # number was merged away, the next new story took its number (and a reader's old
    # link showed it).  The highest number ever used is kept, and new stories go past it.
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) "
        "SELECT 'cluster_id_high', CAST(coalesce(max(id), 0) AS TEXT) FROM clusters"
    )
    db.execute(
        """
        CREATE TRIGGER clusters_retire AFTER DELETE ON clusters
        WHEN old.id > coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'cluster_id_high'), 0)
        BEGIN
            INSERT OR REPLACE INTO meta (key, value) VALUES ('cluster_id_high', CAST(old.id AS TEXT));
        END
        """
    )


@migrations(name="0013_foreign_key_indexes")
def m0013_foreign_key_indexes(db: Database) -> None:
    # Deleting an item (removing a feed deletes thousands) looks up every row that
    # refers to it: without these, two scans of all clusters per item (removing a feed
    # of 4,000 items from a database of 200,000 took 347 s, holding the write lock).
    db.executescript(
        """
        CREATE INDEX clusters_canonical_item ON clusters(canonical_item_id);
        CREATE INDEX clusters_pinned_item ON clusters(pinned_item_id);
        CREATE INDEX cluster_rules_a ON cluster_rules(item_a);
        """
    )


@migrations(name="0014_feed_url_form")
def m0014_feed_url_form(db: Database) -> None:
    # Feed URLs are stored in one form from now on (aggregator.fetch.feed_url_form): those
    # stored before are put in it, so subscribing to one again finds it.  Where two
    # feeds already share that form, they stay as they were.
    from aggregator.fetch import feed_url_form

    taken = {url for (url,) in db.execute("SELECT url FROM feeds")}
    for feed_id, url in db.execute("SELECT id, url FROM feeds ORDER BY id").fetchall():
        form = feed_url_form(url)
        if form != url and form not in taken:
            db.execute("UPDATE feeds SET url = ? WHERE id = ?", [form, feed_id])
            taken.add(form)


@migrations(name="0015_story_outlets")
def m0015_story_outlets(db: Database) -> None:
    # Each story keeps its outlets, [[feed id, first report time], ...] in order of first
    # report (ties by feed id), beside its counts: a page of stories read every member
    # of each (a story told 300 times read 300 items; 100 ms for the most covered page
    # at 1M items).  Filled here for the stories already stored.
    import json

    db.execute("ALTER TABLE clusters ADD COLUMN outlets TEXT")
    rows = db.execute(
        "SELECT m.cluster_id, i.feed_id, min(i.sort_time) FROM items i JOIN memberships m ON m.item_id = i.id "
        "GROUP BY m.cluster_id, i.feed_id ORDER BY m.cluster_id"
    )
    outlets: dict[int, list[list[object]]] = {}
    for cluster_id, feed_id, first in rows:
        outlets.setdefault(cluster_id, []).append([feed_id, first])
    db.conn.executemany(
        "UPDATE clusters SET outlets = ? WHERE id = ?",
        (
            (json.dumps(sorted(pairs, key=lambda p: (p[1], p[0])), separators=(",", ":")), cid)
            for cid, pairs in outlets.items()
        ),
    )


@migrations(name="0016_merged_stories")
def m0016_merged_stories(db: Database) -> None:
    # Where a story merged into another one went (followed to the story it is part of
    # now), so that links to it (readers' feed items, bookmarks) still lead to it.
    db.execute(
        """
        CREATE TABLE merged_stories (
            id INTEGER PRIMARY KEY,
            into_id INTEGER NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX merged_stories_into ON merged_stories(into_id)")


@migrations(name="0017_item_ids_not_reused")
def m0017_item_ids_not_reused(db: Database) -> None:
    # New items took the highest id + 1: after a feed's removal deleted the highest ids,
    # new items took them, and a process that had seen the deleted items (a cluster
    # index, a re-clustering under way) took a new item for the old one.  As for
    # stories (0012), the highest id ever used is kept and new items go past it.
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) SELECT 'item_id_high', CAST(coalesce(max(id), 0) AS TEXT) FROM items"
    )
    db.execute(
        """
        CREATE TRIGGER items_retire AFTER DELETE ON items
        WHEN old.id > coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'item_id_high'), 0)
        BEGIN
            INSERT OR REPLACE INTO meta (key, value) VALUES ('item_id_high', CAST(old.id AS TEXT));
        END
        """
    )


@migrations(name="0018_undated_identity")
def m0018_undated_identity(db: Database) -> None:
    # An item without GUID, link or date was known by its title alone: a feed that
    # repeats a title ("Daily briefing") replaced yesterday's text with today's.  Its
    # words are part of its identity now; stored ones get the identity they would get.
    from aggregator.normalize import item_identity

    db.conn.executemany(
        "UPDATE OR IGNORE items SET identity = ? WHERE id = ?",
        [
            (item_identity(None, None, title, None, content_hash), item_id)
            for item_id, title, content_hash in db.execute(
                "SELECT id, title, content_hash FROM items WHERE identity LIKE 'title:%' AND published IS NULL"
            ).fetchall()
        ],
    )


@migrations(name="0019_account_sessions")
def m0019_account_sessions(db: Database) -> None:
    # Logging out ends every session of the account (a copied cookie stayed valid for
    # its 8 hours): sessions carry a stamp made from the password hash and this count.
    db.execute("ALTER TABLE admin_users ADD COLUMN sessions INTEGER NOT NULL DEFAULT 0")


@migrations(name="0020_job_owner")
def m0020_job_owner(db: Database) -> None:
    # The process a job runs in (host:pid): a job whose process is gone is marked
    # interrupted at once, instead of blocking corrections and settings changes for
    # ten minutes after a restart.
    db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")


@migrations(name="0021_feed_ttl")
def m0021_feed_ttl(db: Database) -> None:
    # The polling interval a feed asks for (<ttl>, in minutes), kept for the 304s that
    # follow: a feed asking for 10 hours was polled every 30 minutes once unchanged.
    db.execute("ALTER TABLE feeds ADD COLUMN ttl_minutes INTEGER")


@migrations(name="0022_item_shown_hash")
def m0022_item_shown_hash(db: Database) -> None:
    # A hash of what an item shows (exact headline, link, HTML, author, categories): an
    # edit is told by it as well as by its words, so a corrected link or a headline's
    # capitals reach the site.  NULL for items stored before: set at their next poll.
    db.execute("ALTER TABLE items ADD COLUMN shown_hash TEXT")


@migrations(name="0023_feed_claims")
def m0023_feed_claims(db: Database) -> None:
    # A feed an update has taken to poll, until when: two processes updating at once
    # (the poller and a cron'd `aggregator update`) both fetched every due feed.
    db.execute("ALTER TABLE feeds ADD COLUMN claimed_until REAL")


@migrations(name="0024_story_changes")
def m0024_story_changes(db: Database) -> None:
    # Each story counts the changes to its members (a member joining, leaving or moving,
    # a member's shown fields edited), so a story page's ETag follows its own story: with
    # the site-wide count, every poll that brought any item made every story page stale
    # and rendered again.  (The story's own summary columns are read with it.)
    bump = "UPDATE clusters SET changes = changes + 1 WHERE id = {};"
    db.executescript(
        f"""
        ALTER TABLE clusters ADD COLUMN changes INTEGER NOT NULL DEFAULT 0;
        CREATE TRIGGER story_changes_member_insert AFTER INSERT ON memberships
            BEGIN {bump.format("new.cluster_id")} END;
        CREATE TRIGGER story_changes_member_update AFTER UPDATE ON memberships BEGIN
            {bump.format("old.cluster_id")}
            {bump.format("new.cluster_id")}
        END;
        CREATE TRIGGER story_changes_member_delete AFTER DELETE ON memberships
            BEGIN {bump.format("old.cluster_id")} END;
        CREATE TRIGGER story_changes_item_update AFTER UPDATE OF
            guid, link, canonical_link, title, summary, text, content_html, author, categories,
            published, updated, sort_time ON items
            BEGIN {bump.format("(SELECT cluster_id FROM memberships WHERE item_id = new.id)")} END;
        """
    )


@migrations(name="0025_outlets_by_name")
def m0025_outlets_by_name(db: Database) -> None:
    # A story's outlet count (clusters.n_feeds: the filters' "at least N outlets" and the
    # coverage order) counts outlet names, as the pages list them: two feeds of one
    # outlet under one name ("Reuters" for its world and its business news) are one.
    # Only the stories of feeds that share a name with another feed change.
    import json
    from collections import Counter

    from aggregator.models import outlet_name

    names = {
        fid: outlet_name(title, url) for fid, title, url in db.execute("SELECT id, title, url FROM feeds")
    }
    uses = Counter(names.values())
    shared = sorted(fid for fid, name in names.items() if uses[name] > 1)
    if not shared:
        return
    rows = db.execute(
        "SELECT id, outlets FROM clusters WHERE outlets IS NOT NULL AND id IN (SELECT DISTINCT m.cluster_id "
        "FROM items i JOIN memberships m ON m.item_id = i.id WHERE i.feed_id IN (SELECT value FROM json_each(?)))",
        [json.dumps(shared)],
    ).fetchall()
    db.conn.executemany(
        "UPDATE clusters SET n_feeds = ? WHERE id = ?",
        [(len({names.get(pair[0], pair[0]) for pair in json.loads(outlets)}), cid) for cid, outlets in rows],
    )
