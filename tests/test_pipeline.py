from __future__ import annotations

import time

from aggregator import Aggregator
from tests.conftest import FeedServer, Route, rss

WIRE = (
    "Rescue teams in the mountain province searched collapsed buildings on Tuesday after a "
    "magnitude 6.1 earthquake struck before dawn, killing at least 14 people and injuring dozens, "
    "the regional governor said."
)


def story(n: int, **extra: str) -> dict[str, str]:
    return {
        "title": f"Story number {n} about topic {n}",
        "link": f"https://one.example/{n}",
        "guid": f"one-{n}",
        "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
        "description": f"Unique body {n} " + " ".join(f"word{n}x{k}" for k in range(30)),
        **extra,
    }


def test_repoll_unchanged_adds_nothing_and_304_is_handled(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(
        rss([story(1), story(2)]), etag='"v1"', last_modified="Fri, 25 Oct 2024 14:15:00 GMT"
    )
    feed, _ = agg.add_feed(feed_server.url("/a.xml"))
    (r1,) = agg.update([feed])
    assert (r1.status, r1.new_items) == ("ok", 2)
    (r2,) = agg.update([agg.feed(feed.id)])  # type: ignore[list-item]
    assert (r2.status, r2.new_items) == ("not_modified", 0)
    second = feed_server.hits("/a.xml")[1]
    assert second["if-none-match"] == '"v1"'
    assert second["if-modified-since"] == "Fri, 25 Oct 2024 14:15:00 GMT"
    # Same bytes served again without validators: still nothing new, nothing duplicated.
    feed_server.routes["/a.xml"] = Route(rss([story(1), story(2)]))
    (r3,) = agg.update([agg.feed(feed.id)])  # type: ignore[list-item]
    assert (r3.status, r3.new_items, r3.updated_items) == ("ok", 0, 0)
    assert agg.counts() == {"feeds": 1, "items": 2, "clusters": 2}
    f = agg.feed(feed.id)
    assert f is not None and f.status == "ok" and f.polls == 3 and f.not_modified == 1 and f.items_total == 2


def test_broken_feed_is_recorded_and_others_processed(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/good.xml"] = Route(rss([story(1)]))
    feed_server.routes["/html.xml"] = Route(
        b"<html><body>not a feed</body></html>", headers={"Content-Type": "text/html"}
    )
    feed_server.routes["/500.xml"] = Route(b"oops", status=500)
    for path in ("/html.xml", "/500.xml", "/good.xml", "/missing.xml"):
        agg.add_feed(feed_server.url(path))
    reports = {r.feed_url.rsplit("/", 1)[1]: r for r in agg.update()}
    assert reports["good.xml"].new_items == 1
    assert reports["html.xml"].status == "error" and "not a feed" in (reports["html.xml"].error or "")
    assert reports["500.xml"].error == "HTTP 500 Internal Server Error"
    assert reports["missing.xml"].error == "HTTP 404 Not Found"
    stored = {f.url.rsplit("/", 1)[1]: f for f in agg.feeds()}
    assert stored["500.xml"].status == "error" and stored["500.xml"].failures == 1
    assert stored["500.xml"].last_error == "HTTP 500 Internal Server Error"
    assert stored["good.xml"].status == "ok" and stored["good.xml"].last_error is None
    assert agg.counts()["items"] == 1


def test_edited_item_is_updated_not_duplicated(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(rss([story(1)]))
    feed, _ = agg.add_feed(feed_server.url("/a.xml"))
    agg.update([feed])
    feed_server.routes["/a.xml"] = Route(rss([story(1, title="Story number 1, corrected headline")]))
    (r,) = agg.update([agg.feed(feed.id)])  # type: ignore[list-item]
    assert (r.new_items, r.updated_items) == (0, 1)
    (c,) = agg.clusters()
    assert c.canonical.title == "Story number 1, corrected headline"
    assert agg.counts()["items"] == 1


def test_same_canonical_link_from_two_feeds_is_one_story(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(rss([story(1)]))
    other = story(1, guid="two-1", title="Completely different words", description="nothing shared at all")
    other["link"] = "https://ONE.example/1?utm_source=rss&utm_medium=feed"
    feed_server.routes["/b.xml"] = Route(rss([other], title="Other"))
    agg.add_feed(feed_server.url("/a.xml"))
    agg.add_feed(feed_server.url("/b.xml"))
    agg.update()
    (c,) = agg.clusters()
    detail = agg.cluster(c.id)
    assert detail is not None and len(detail.members) == 2
    assert sorted(m.signal or "" for m in detail.members) == ["new", "same-link"]


def test_exact_copies_are_one_story(agg: Aggregator, feed_server: FeedServer) -> None:
    wire = {
        "title": "Quake kills 14 in mountain province",
        "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
        "description": WIRE,
    }
    feed_server.routes["/a.xml"] = Route(rss([{**wire, "guid": "a1", "link": "https://a.example/q"}]))
    feed_server.routes["/b.xml"] = Route(rss([{**wire, "guid": "b1", "link": "https://b.example/q"}]))
    agg.add_feed(feed_server.url("/a.xml"))
    agg.add_feed(feed_server.url("/b.xml"))
    agg.update()
    (c,) = agg.clusters()
    assert c.size == 2 and len(c.outlets) == 2
    detail = agg.cluster(c.id)
    assert detail is not None
    assert sorted(m.signal or "" for m in detail.members) == ["exact-copy", "new"]


def test_duplicate_guids_in_one_feed_store_one_item(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(rss([story(1), story(1, title="Again"), story(2)]))
    feed, _ = agg.add_feed(feed_server.url("/a.xml"))
    (r,) = agg.update([feed])
    assert r.new_items == 2 and r.warning and "repeated" in r.warning


def test_future_dates_do_not_pin_a_story_to_the_top(agg: Aggregator, feed_server: FeedServer) -> None:
    future = story(1, pubDate="Fri, 25 Oct 2099 14:15:00 GMT")
    feed_server.routes["/a.xml"] = Route(
        rss([future, story(2, pubDate=time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))])
    )
    feed, _ = agg.add_feed(feed_server.url("/a.xml"))
    before = time.time()
    agg.update([feed])
    stories = agg.clusters()
    assert all(s.last_seen <= time.time() for s in stories)
    future_story = next(s for s in stories if s.canonical.title.startswith("Story number 1"))
    assert before - 5 <= future_story.last_seen <= time.time()


def test_rebuild_index_after_restart_keeps_clustering(settings, feed_server: FeedServer) -> None:  # type: ignore[no-untyped-def]
    wire = {
        "title": "Quake kills 14 in mountain province",
        "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
        "description": WIRE,
    }
    feed_server.routes["/a.xml"] = Route(rss([{**wire, "guid": "a1", "link": "https://a.example/q"}]))
    rewrite = {
        "title": "Earthquake in mountain province kills 14, governor says",
        "guid": "b1",
        "link": "https://b.example/q2",
        "pubDate": "Fri, 25 Oct 2024 16:15:00 GMT",
        "description": "A magnitude 6.1 earthquake struck the mountain province before dawn on Tuesday, "
        "killing at least 14 people; rescue teams searched collapsed buildings, the regional governor said.",
    }
    feed_server.routes["/b.xml"] = Route(rss([rewrite]))
    with Aggregator(settings) as first:
        first.add_feed(feed_server.url("/a.xml"))
        first.update()
    with Aggregator(settings) as second:
        assert second.rebuild_index() == 1
        second.add_feed(feed_server.url("/b.xml"))
        second.update()
        (c,) = second.clusters()
        assert c.size == 2
