"""The page cache and the constant-time freshness check: every change the site shows moves the ETag.

Pages are kept by ETag (web.caching), so a change that failed to move the
fingerprint would keep serving the old page: each test changes the database one
way, with a clock that never moves ``updated_at`` forward where it can, and checks
that the cached page is not served again.
"""

from __future__ import annotations

import contextlib
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator import Aggregator
from aggregator.storage import feeds as feeds_store
from aggregator.storage import versions as versions_store
from aggregator.storage import write_transaction
from tests.conftest import FeedServer, Route, rss, serve
from web import create_app
from web.caching import CachedPage, PageCache, SharedPages, page_cache

PAGES = ["/", "/?sort=coverage", "/feed.rss", "/feed.atom", "/feed.json", "/search?q=storm", "/outlets"]


def snapshot(client: Any, urls: list[str]) -> dict[str, tuple[str, bytes]]:
    out = {}
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, url
        out[url] = (r.headers["ETag"], r.data)
    return out


def story_ids(client: Any) -> list[int]:
    return [int(i) for i in re.findall(r'<h2 id="s(\d+)"', client.get("/").get_data(as_text=True))]


@pytest.fixture
def old_clock(demo_agg: Aggregator) -> Iterator[Aggregator]:
    """A second writer whose clock is before every stored change (``max(updated_at)`` cannot move)."""
    with Aggregator(demo_agg.base_settings, db_path=demo_agg.db_path, clock=lambda: 1.0) as agg:
        yield agg


def test_cached_pages_are_served_until_something_changes(client: Any, web_app: Any) -> None:
    first = snapshot(client, PAGES)
    cache = page_cache(web_app)
    assert cache is not None and len(cache) == len(PAGES)
    hits = cache.hits
    again = snapshot(client, PAGES)
    assert again == first
    assert cache.hits == hits + len(PAGES)
    # a cached answer still validates and carries every header of a rendered one
    etag = first["/feed.rss"][0]
    assert client.get("/feed.rss", headers={"If-None-Match": etag}).status_code == 304
    r = client.get("/feed.rss")
    assert r.mimetype == "application/rss+xml" and "Content-Security-Policy" in r.headers


def test_merge_with_an_old_clock_drops_the_cached_story(
    client: Any, demo_agg: Aggregator, old_clock: Aggregator
) -> None:
    ids = story_ids(client)
    target, source = ids[-1], ids[-2]
    before = snapshot(client, [*PAGES, f"/story/{target}", f"/story/{source}"])
    version = demo_agg.db.execute("SELECT max(updated_at), max(id) FROM clusters").fetchone()
    old_clock.merge_clusters(target, source, "alice")
    # the latest change time did not move: only the change counter tells
    assert demo_agg.db.execute("SELECT max(updated_at), max(id) FROM clusters").fetchone() == version
    gone = client.get(f"/story/{source}")  # not the cached page: the story it is part of now
    assert gone.status_code == 301 and gone.headers["Location"] == f"/story/{target}"
    after = snapshot(client, [*PAGES, f"/story/{target}"])
    for url in ["/", f"/story/{target}", "/feed.rss"]:
        assert after[url][0] != before[url][0] and after[url][1] != before[url][1], url
    assert all(after[u][0] != before[u][0] for u in after)


def test_an_edited_item_is_not_served_from_the_cache(client: Any, demo_agg: Aggregator) -> None:
    ids = story_ids(client)
    story = demo_agg.cluster(ids[-1])
    assert story is not None
    before = snapshot(client, ["/", f"/story/{story.summary.id}", "/feed.rss"])
    with write_transaction(demo_agg.db):  # an edit that refreshes nothing (no clock involved)
        demo_agg.db.execute(
            "UPDATE items SET title = 'A headline edited in place' WHERE id = ?", [story.summary.canonical.id]
        )
    after = snapshot(client, ["/", f"/story/{story.summary.id}", "/feed.rss"])
    for url, (etag, body) in after.items():
        assert etag != before[url][0] and b"A headline edited in place" in body, url


def test_a_members_change_moves_its_story_page_whoever_writes(client: Any, demo_agg: Aggregator) -> None:
    """Memberships changed without refreshing the stories' summaries (triggers count
    them, whoever writes): the story pages concerned move, the others stay."""
    ids = story_ids(client)
    a, b, other = (demo_agg.cluster(i) for i in ids[-3:])
    assert a is not None and b is not None and other is not None
    pages = [f"/story/{c.summary.id}" for c in (a, b, other)]
    item = a.members[0].id
    steps = [
        ("UPDATE memberships SET signal = 'manual' WHERE item_id = ?", [item], {0}),
        ("UPDATE memberships SET cluster_id = ? WHERE item_id = ?", [b.summary.id, item], {0, 1}),
        ("DELETE FROM memberships WHERE item_id = ?", [item], {1}),
        (
            "INSERT INTO memberships (item_id, cluster_id, score, signal, joined_at) VALUES (?, ?, 1.0, 'manual', 1.0)",
            [item, a.summary.id],
            {0},
        ),
    ]
    before = snapshot(client, pages)
    for sql, params, moved in steps:
        with write_transaction(demo_agg.db):
            demo_agg.db.execute(sql, params)
        after = snapshot(client, pages)
        assert {k for k, url in enumerate(pages) if after[url][0] != before[url][0]} == moved, sql
        before = after
    # A re-clustering swaps every membership, counted once rather than row by row: every
    # story page moves (a story may keep its id, times and summary, and its members'
    # signals change), and the counting goes on afterwards.
    demo_agg.recluster()
    swapped = snapshot(client, pages)  # (the same stories: a re-clustering keeps their ids)
    assert all(swapped[u][0] != before[u][0] for u in pages)
    member = (demo_agg.cluster(int(pages[0].rsplit("/", 1)[1])) or pytest.fail("no story")).members[0].id
    with write_transaction(demo_agg.db):
        demo_agg.db.execute("UPDATE memberships SET signal = 'manual' WHERE item_id = ?", [member])
    after = snapshot(client, pages)
    assert [after[u][0] != swapped[u][0] for u in pages] == [True, False, False]


def test_renamed_added_and_removed_outlets_move_the_etag(client: Any, demo_agg: Aggregator) -> None:
    feed = demo_agg.feeds()[0]
    before = snapshot(client, PAGES)
    with write_transaction(demo_agg.db):
        feeds_store.update_state(demo_agg.db, feed.id, {"title": "The Renamed Courier"})
    renamed = snapshot(client, PAGES)
    for url in PAGES:
        assert renamed[url][0] != before[url][0], url
    assert b"The Renamed Courier" in renamed["/"][1] and b"The Renamed Courier" in renamed["/feed.rss"][1]
    # the same title written again (as each poll does) changes nothing
    with write_transaction(demo_agg.db):
        feeds_store.update_state(demo_agg.db, feed.id, {"title": "The Renamed Courier"})
    assert snapshot(client, ["/", "/feed.rss"]) == {u: renamed[u] for u in ["/", "/feed.rss"]}
    demo_agg.add_feed("https://new.example.org/feed.xml", "A New Outlet")
    added = snapshot(client, PAGES)
    assert all(added[u][0] != renamed[u][0] for u in PAGES)
    assert b"A New Outlet" in added["/outlets"][1]


def test_an_outlets_new_interval_moves_its_pages_etag(client: Any, demo_agg: Aggregator) -> None:
    """An admin's polling interval (and the next poll it brings forward) changed the outlet
    page, but not its ETag: a browser kept showing the old next poll time."""
    feed = demo_agg.feeds()[0]
    pages = [f"/outlets/{feed.id}", "/outlets"]
    before = snapshot(client, pages)
    demo_agg.set_poll_interval(feed.id, 10)
    after = snapshot(client, pages)
    assert after[pages[0]][0] != before[pages[0]][0] and after[pages[0]][1] != before[pages[0]][1]
    assert after[pages[1]][0] != before[pages[1]][0]


def test_a_settings_version_moves_the_etag(client: Any, demo_agg: Aggregator) -> None:
    before = snapshot(client, ["/", "/feed.rss"])
    # a version saved without re-clustering (what a process applying it writes first)
    with write_transaction(demo_agg.db):
        versions_store.add(demo_agg.db, {"cluster.canonical_policy": "preferred"}, "alice", 1.0)
    saved = snapshot(client, ["/", "/feed.rss"])
    assert all(saved[u][0] != before[u][0] for u in saved)
    demo_agg.apply_settings({"cluster.canonical_policy": "earliest"}, "alice")
    applied = snapshot(client, ["/", "/feed.rss"])
    assert all(applied[u][0] != saved[u][0] for u in applied)


def test_a_story_page_stays_cached_while_other_stories_change(
    agg: Aggregator, feed_server: FeedServer
) -> None:
    """A story page's ETag follows its own story: with the site-wide one, every poll that
    brought any item made every story page stale (rendered again, its diffs computed
    again).  Whatever changes the story itself still moves it."""
    quake = "A magnitude 6.1 earthquake struck the mountain province before dawn, killing 14 people."
    budget = "The city council approved a budget with new money for buses and libraries on Tuesday."
    stories = {
        "quake": ("Quake kills 14 in mountain province", quake),
        "budget": ("Council passes budget", budget),
    }

    def entry(outlet: int, key: str, extra: str = "") -> dict[str, str]:
        title, text = stories[key]
        return {
            "title": title,
            "guid": f"{key}-{outlet}",
            "link": f"https://o{outlet}.test/{key}",
            "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
            "description": text + extra,
        }

    for n in (1, 2):
        feed_server.routes[f"/{n}.xml"] = Route(
            rss([entry(n, "quake"), entry(n, "budget")], title=f"Outlet {n}")
        )
        agg.add_feed(feed_server.url(f"/{n}.xml"))
    agg.update()
    by_title = {c.canonical.title: c.id for c in agg.clusters()}
    quake_id, budget_id = by_title[stories["quake"][0]], by_title[stories["budget"][0]]
    app = create_app(agg.settings, db_path=agg.db_path)
    client = app.test_client()
    pages = [f"/story/{quake_id}", f"/story/{budget_id}", "/"]
    before = snapshot(client, pages)
    cache = page_cache(app)
    assert cache is not None
    # a third outlet reports the quake: the budget's page is served from the cache
    feed_server.routes["/3.xml"] = Route(rss([entry(3, "quake")], title="Outlet 3"))
    agg.add_feed(feed_server.url("/3.xml"))
    agg.update()
    assert {c.id: c.size for c in agg.clusters()} == {quake_id: 3, budget_id: 2}
    hits = cache.hits
    grown = snapshot(client, pages)
    assert grown[pages[1]] == before[pages[1]] and cache.hits == hits + 1
    for url in (pages[0], "/"):
        assert grown[url][0] != before[url][0], url
    assert b"Outlet 3" in grown[pages[0]][1]
    # an outlet edits its version's text (the story's summary stays): that page moves
    feed_server.routes["/2.xml"] = Route(
        rss([entry(2, "quake"), entry(2, "budget", " The mayor welcomed the vote.")], title="Outlet 2")
    )
    agg.update(agg.feeds()[1:2])
    edited = snapshot(client, pages)
    assert edited[pages[0]] == grown[pages[0]]
    assert (
        edited[pages[1]][0] != grown[pages[1]][0] and b"The mayor welcomed the vote." in edited[pages[1]][1]
    )
    # an item moved out of a story moves that story's page
    detail = agg.cluster(quake_id)
    assert detail is not None
    agg.move_item_out(next(m.id for m in detail.members if m.outlet == "Outlet 2"), "alice")
    moved = snapshot(client, pages[:2])
    assert moved[pages[0]][0] != edited[pages[0]][0] and moved[pages[1]] == edited[pages[1]]
    # a renamed outlet moves the pages of its stories only; an outlet added moves none
    with write_transaction(agg.db):
        feeds_store.update_state(agg.db, agg.feeds()[2].id, {"title": "Outlet Three"})
    renamed = snapshot(client, pages[:2])
    assert renamed[pages[0]][0] != moved[pages[0]][0] and b"Outlet Three" in renamed[pages[0]][1]
    assert renamed[pages[1]] == moved[pages[1]]
    agg.add_feed("https://new.example.org/feed.xml", "A New Outlet")
    assert snapshot(client, pages[:2]) == renamed


def test_host_is_part_of_the_etag(client: Any) -> None:
    a = client.get("/feed.rss", base_url="http://one.example")
    b = client.get("/feed.rss", base_url="http://two.example")
    assert a.headers["ETag"] != b.headers["ETag"]
    assert b"http://one.example/story/" in a.data and b"http://two.example/story/" in b.data
    assert b"http://one.example" not in b.data  # (the ids keep the first name: see test_web_feeds)


def test_errors_are_not_cached(client: Any, web_app: Any) -> None:
    assert client.get("/story/999999").status_code == 404
    assert client.get("/?page=0").status_code == 400
    cache = page_cache(web_app)
    assert cache is not None and len(cache) == 0


def test_cache_can_be_turned_off(demo_agg: Aggregator) -> None:
    app = create_app(demo_agg.settings, db_path=demo_agg.db_path, AGGREGATOR_RESPONSE_CACHE=0)
    client = app.test_client()
    first = client.get("/")
    assert first.status_code == 200 and page_cache(app) is None
    assert client.get("/", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_page_cache_evicts_least_recently_used_by_size() -> None:
    cache = PageCache(max_bytes=100)
    for key in "abc":
        cache.put(key, CachedPage(b"x" * 40, ()))
    assert cache.get("a") is None and len(cache) == 2 and cache.size == 80
    assert cache.get("b") is not None  # now the most recently used
    cache.put("d", CachedPage(b"x" * 40, ()))
    assert cache.get("c") is None and cache.get("b") is not None
    cache.put("big", CachedPage(b"x" * 101, ()))  # larger than the whole cache: not kept
    assert cache.get("big") is None and cache.size == 80


def test_one_thread_renders_while_the_others_wait() -> None:
    cache = PageCache(max_bytes=1000)
    renders = []
    started = threading.Barrier(6)
    results: list[bytes] = []

    def ask() -> None:
        started.wait()
        with cache.claim("k") as page:
            if page is None:
                renders.append(1)
                threading.Event().wait(0.2)
                page = CachedPage(b"body", ())
                cache.put("k", page)
            results.append(page.body)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"body"] * 6 and len(renders) == 1


def test_threads_keep_their_own_connection_and_see_new_stories(web_app: Any, demo_agg: Aggregator) -> None:
    """A threaded server: one connection per thread, kept; every thread sees a commit at once."""
    errors: list[str] = []

    def read(urls: list[str], n: int) -> None:
        for k in range(10):
            url = urls[(n + k) % len(urls)]
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    r.read()
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    errors.append(f"{url}: {exc}")
            except OSError as exc:
                errors.append(f"{url}: {exc}")

    with contextlib.contextmanager(serve)(web_app) as server:
        urls = [server.url + u for u in ["/", "/feed.rss", "/story/1", "/outlets", "/search?q=storm"]]
        threads = [threading.Thread(target=read, args=(urls, n)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        with urllib.request.urlopen(server.url + "/", timeout=10) as r:
            etag = r.headers["ETag"]
        demo_agg.add_feed("https://late.example.org/feed.xml", "A Late Outlet")
        with urllib.request.urlopen(server.url + "/outlets", timeout=10) as r:
            assert b"A Late Outlet" in r.read()
        with urllib.request.urlopen(server.url + "/", timeout=10) as r:
            assert r.headers["ETag"] != etag


def test_processes_share_the_pages_they_render(demo_agg: Aggregator, tmp_path: Path) -> None:
    """Two apps as two gunicorn workers: same start, same shared file; one renders, the other reads."""
    shared = str(tmp_path / "pages.db")
    one, two = (
        create_app(
            demo_agg.settings,
            db_path=demo_agg.db_path,
            AGGREGATOR_STARTED=1.0e9,
            AGGREGATOR_SHARED_CACHE=shared,
        )
        for _ in range(2)
    )
    first = snapshot(one.test_client(), PAGES)
    second = snapshot(two.test_client(), PAGES)
    assert second == first
    cache_two = page_cache(two)
    assert cache_two is not None and cache_two.shared_hits == len(PAGES)
    r = two.test_client().get("/feed.rss")
    assert r.mimetype == "application/rss+xml" and "Content-Security-Policy" in r.headers
    # a change: new ETags, so both render again
    demo_agg.add_feed("https://shared.example.org/feed.xml", "A Shared Outlet")
    assert b"A Shared Outlet" in two.test_client().get("/outlets").data
    assert cache_two.shared_hits == len(PAGES)


def test_an_unusable_shared_file_is_only_a_miss(demo_agg: Aggregator, tmp_path: Path) -> None:
    app = create_app(
        demo_agg.settings,
        db_path=demo_agg.db_path,
        AGGREGATOR_SHARED_CACHE=str(tmp_path / "no" / "such" / "dir"),
    )
    assert snapshot(app.test_client(), PAGES) == snapshot(app.test_client(), PAGES)
    garbage = tmp_path / "garbage.pages"
    garbage.write_bytes(b"not a database at all" * 100)
    app = create_app(demo_agg.settings, db_path=demo_agg.db_path, AGGREGATOR_SHARED_CACHE=str(garbage))
    assert snapshot(app.test_client(), PAGES) == snapshot(app.test_client(), PAGES)


def test_shared_pages_stay_within_their_size() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        shared = SharedPages(Path(d) / "p.db", max_bytes=10_000)
        for n in range(SharedPages.PRUNE_EVERY * 2):
            shared.put(f"k{n}", CachedPage(b"x" * 1000, (("Content-Type", "text/html"),)))
        kept = [n for n in range(SharedPages.PRUNE_EVERY * 2) if shared.get(f"k{n}") is not None]
        assert kept == list(
            range(SharedPages.PRUNE_EVERY * 2 - 7, SharedPages.PRUNE_EVERY * 2)
        )  # 7,000 bytes
        page = shared.get(f"k{kept[-1]}")
        assert page is not None and page.headers == (("Content-Type", "text/html"),)


def test_if_none_match_any_is_not_a_304_for_what_does_not_exist(client: Any) -> None:
    """``If-None-Match: *`` was taken as a match before the view ran: pages that do not
    exist (404) and bad requests answered 304."""
    star = {"If-None-Match": "*"}
    assert client.get("/story/999999", headers=star).status_code == 404
    assert client.get("/outlets/4242", headers=star).status_code == 404
    assert client.get("/", headers=star).status_code == 200
    etag = client.get("/").headers["ETag"]
    assert client.get("/", headers={"If-None-Match": f'"x", {etag}'}).status_code == 304


def test_a_method_not_allowed_says_which_are(client: Any) -> None:
    r = client.post("/feed.rss")
    assert r.status_code == 405 and {"GET", "HEAD"} <= set(r.headers["Allow"].split(", "))
    assert r.mimetype == "text/html"
