"""Full-text search storage (FTS5): the query builder, the index kept in step, grouping by story."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import Aggregator
from aggregator.models import StoryFilter
from aggregator.settings import load_settings
from aggregator.storage import search as search_store
from tests.conftest import FeedServer, Route, rss
from web.filters import highlight


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(title, summary, text, tokenize='porter unicode61')")
    db.execute("INSERT INTO t VALUES ('Putin asked Musk', 'Starlink over Taiwan', 'a favour to China')")
    return db


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_any_input_is_a_valid_fts_query(fts: sqlite3.Connection, text: str) -> None:
    q = search_store.fts_query(text)
    if q is None:
        assert re.search(r"\w", text) is None  # nothing to look for
        return
    fts.execute("SELECT count(*) FROM t WHERE t MATCH ?", [q]).fetchone()  # never a syntax error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("putin musk", '"putin" "musk"'),
        ('"favour to China" taiwan', '"favour to China" "taiwan"'),
        ("title:putin OR NEAR(a b)", '"title putin" "OR" "NEAR a" "b"'),
        ("Putin's", '"Putin s"'),
        ("  ---  ", None),
        ('"unclosed phrase', '"unclosed phrase"'),
    ],
)
def test_fts_query_examples(text: str, expected: str | None) -> None:
    assert search_store.fts_query(text) == expected


def test_a_huge_query_is_cut_to_a_few_terms(agg: Aggregator) -> None:
    """The library has no search box to cap what callers pass: 50,000 words took 75 s."""
    words = " ".join(f"w{n}" for n in range(50_000))
    for text in (words, f'"{words}"'):
        q = search_store.fts_query(text)
        assert q is not None and len(q.split()) <= search_store.MAX_TERMS * search_store.MAX_PHRASE_WORDS
        assert agg.search(text) == []


def test_fts_query_matches_what_it_should(fts: sqlite3.Connection) -> None:
    def hits(text: str) -> int:
        q = search_store.fts_query(text)
        assert q is not None
        return int(fts.execute("SELECT count(*) FROM t WHERE t MATCH ?", [q]).fetchone()[0])

    assert hits("musk taiwan") == 1  # words from several columns
    assert hits("asking") == 1  # stemmed
    assert hits('"favour to China"') == 1
    assert hits('"China to favour"') == 0  # a phrase keeps its order
    assert hits("putin zebra") == 0  # every word must match


def index_matches(agg: Aggregator, text: str) -> set[int]:
    q = search_store.fts_query(text)
    assert q is not None
    return {r[0] for r in agg.db.execute("SELECT rowid FROM items_fts WHERE items_fts MATCH ?", [q])}


def test_index_follows_inserts_edits_and_deletes(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/f.xml"] = Route(
        body=rss([{"title": "Zebras escape from the zoo", "link": "https://z.test/1", "guid": "1"}])
    )
    feed, _ = agg.add_feed(feed_server.url("/f.xml"))
    agg.update()
    (item,) = agg.feed_items(feed.id)
    assert index_matches(agg, "zebras") == {item.id}
    # the outlet edits the item: the index follows
    feed_server.routes["/f.xml"] = Route(
        body=rss([{"title": "Giraffes escape from the zoo", "link": "https://z.test/1", "guid": "1"}])
    )
    agg.update_feed(feed.id)
    assert index_matches(agg, "zebras") == set()
    assert index_matches(agg, "giraffes") == {item.id}
    # removing the feed deletes its items (a cascade): the index follows
    agg.remove_feed(feed.id)
    assert index_matches(agg, "giraffes") == set()
    agg.db.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('integrity-check', 1)")


def test_search_groups_hits_by_story(demo_agg: Aggregator) -> None:
    results = demo_agg.search("Starlink")
    assert results
    ids = [r.story.id for r in results]
    assert len(ids) == len(set(ids))
    for r in results:
        assert r.hits and all(h.item.cluster_id == r.story.id for h in r.hits)
        assert [h.rank for h in r.hits] == sorted(h.rank for h in r.hits)
        assert any("\x02" in h.snippet for h in r.hits)
    best = [r.hits[0].rank for r in results]
    assert best == sorted(best)  # best story first
    # paging over stories
    assert [r.story.id for r in demo_agg.search("Starlink", limit=2, offset=1)] == ids[1:3]
    assert demo_agg.search("!!!") == []


def test_story_filters_combine(demo_agg: Aggregator) -> None:
    everything = demo_agg.stories(limit=100)
    assert [s.id for s in everything] == [s.id for s in demo_agg.clusters(limit=100)]
    assert all(s.created_at is not None for s in everything)
    starlink = demo_agg.stories(StoryFilter(query="starlink"), limit=100)
    wide = demo_agg.stories(StoryFilter(query="starlink", min_outlets=2), limit=100)
    assert {s.id for s in wide} == {s.id for s in starlink if len(s.outlets) >= 2}
    assert demo_agg.stories(StoryFilter(query="...")) == []
    by_coverage = demo_agg.stories(sort="coverage", limit=100)
    assert [len(s.outlets) for s in by_coverage] == sorted(
        (len(s.outlets) for s in by_coverage), reverse=True
    )


@given(st.text(alphabet=st.sampled_from(["a", "<", ">", "&", '"', "\x02", "\x03", " "]), max_size=40))
def test_highlight_escapes_and_marks(snippet: str) -> None:
    html = str(highlight(snippet))
    stripped = html.replace("<mark>", "").replace("</mark>", "")
    assert "<" not in stripped and ">" not in stripped
    assert "\x02" not in html and "\x03" not in html
    assert html.count("<mark>") == html.count("</mark>")


def _published(day: int) -> str:
    return f"Mon, {day:02d} Jun 2025 10:00:00 GMT"


def test_headline_matches_rank_first_and_the_window_keeps_the_newest(
    agg: Aggregator, feed_server: FeedServer
) -> None:
    body = "Keepers counted the animals twice on Tuesday morning before the gates opened."
    items = [
        {"title": "Zebra escapes from the city zoo", "link": "https://z.test/1", "guid": "1",
         "pubDate": _published(1), "description": body},
        {"title": "Council votes on the new tram line", "link": "https://z.test/2", "guid": "2",
         "pubDate": _published(2), "description": "A zebra crossing will be painted near the depot."},
        {"title": "Harbour cranes stand still in strike", "link": "https://z.test/3", "guid": "3",
         "pubDate": _published(3), "description": "Dock workers walked out; a zebra mural was unveiled."},
    ]  # fmt: skip
    feed_server.routes["/z.xml"] = Route(body=rss(items))
    feed, _ = agg.add_feed(feed_server.url("/z.xml"))
    agg.update()
    by_title = {i.title: i for i in agg.feed_items(feed.id)}
    assert len({i.cluster_id for i in by_title.values()}) == 3
    results = agg.search("zebra")
    titles = [r.hits[0].item.title for r in results]
    # the headline match first although it is the oldest; then the newer story first
    assert titles == [
        "Zebra escapes from the city zoo",
        "Harbour cranes stand still in strike",
        "Council votes on the new tram line",
    ]
    assert [r.hits[0].rank for r in results] == [
        search_store.RANK_TITLE,
        search_store.RANK_LEAD,
        search_store.RANK_LEAD,
    ]
    assert all("\x02" in r.hits[0].snippet for r in results)
    # only the `window` most recently stored matches are ranked
    match = search_store.fts_query("zebra")
    assert match is not None
    newest_two = search_store.story_hits(agg.db, match, 10, window=2)
    assert {hits[0].item_id for _, hits, _ in newest_two} == set(sorted(i.id for i in by_title.values())[1:])
    assert (
        search_store.story_hits(agg.db, match, 10, offset=2) == search_store.story_hits(agg.db, match, 10)[2:]
    )


def test_common_words_are_searched_in_bounded_work(demo_agg: Aggregator) -> None:
    match = search_store.fts_query("the")
    assert match is not None
    assert len(search_store.window_ranks(demo_agg.db, match, window=5)) == 5
    results = demo_agg.search("the said", limit=3)
    assert len(results) == 3 and all(r.hits for r in results)


def test_older_windows_reach_every_match_once(demo_agg: Aggregator) -> None:
    match = search_store.fts_query("the")
    assert match is not None
    every = index_matches(demo_agg, "the")
    assert len(every) > 25
    seen: list[set[int]] = []
    before = None
    while True:
        seen.append(set(search_store.window_ranks(demo_agg.db, match, 10, before)))
        assert all(before is None or i < before for i in seen[-1])
        before = search_store.older_than_window(demo_agg.db, match, 10, before)
        if before is None:
            break
    assert [len(s) for s in seen[:-1]] == [10] * (len(seen) - 1) and 0 < len(seen[-1]) <= 10
    assert set().union(*seen) == every and sum(map(len, seen)) == len(every)  # each once
    assert search_store.older_than_window(demo_agg.db, match, len(every)) is None


def test_search_page_goes_on_to_older_reports(demo_agg: Aggregator, tmp_path: Path) -> None:
    from web import create_app

    cfg = tmp_path / "small-window.toml"
    cfg.write_text(
        f"[storage]\ndb_path = {str(demo_agg.db_path)!r}\n[web]\nsearch_window = 10\npage_size = 3\n", "utf-8"
    )
    client = create_app(load_settings(cfg), db_path=demo_agg.db_path).test_client()
    n = len(index_matches(demo_agg, "the"))
    assert n > 20
    windows: list[int | None] = [None]  # each window's ``before``
    while True:
        before = windows[-1]
        for page in range(1, 20):
            url = f"/search?q=the&page={page}" + (f"&before={before}" if before else "")
            resp = client.get(url)
            assert resp.status_code == 200
            html = resp.get_data(as_text=True)
            assert ("Back to the newest" in html) == (before is not None)
            if "More results" not in html:  # the window's last page
                break
            assert "older reports" not in html and "oldest" not in html
            assert f"before={before}" in html if before else "before=" not in html  # pages keep the window
        m = re.search(r'href="/search\?q=the&amp;before=(\d+)">Search older reports', html)
        if m is None:
            assert "These are the oldest matching reports." in html
            break
        label = "next 10 older" if before else "10 most recently received"
        assert f"Ranked among the {label} matching reports." in html
        windows.append(int(m.group(1)))
    assert len(windows) == -(-n // 10)
    assert windows[1:] == sorted((w for w in windows if w is not None), reverse=True)
    for bad in ("0", "-3", "x", str(2**70)):
        assert client.get(f"/search?q=the&before={bad}").status_code == 400


def test_a_story_with_more_matches_than_shown_says_how_many_more(
    agg: Aggregator, feed_server: FeedServer
) -> None:
    """Five matching versions were shown and the rest silently left out."""
    from web import create_app

    item = {
        "title": "Zebra crossing rebuilt after storm",
        "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
        "description": "The zebra crossing on the high street was rebuilt after the storm, the council said.",
    }
    for n in range(7):
        feed_server.routes[f"/{n}.xml"] = Route(rss([{**item, "guid": f"z{n}"}], title=f"Outlet {n}"))
        agg.add_feed(feed_server.url(f"/{n}.xml"))
    agg.update()
    (result,) = agg.search("zebra")
    assert (len(result.hits), result.more) == (5, 2)
    html = (
        create_app(agg.settings, db_path=agg.db_path)
        .test_client()
        .get("/search?q=zebra")
        .get_data(as_text=True)
    )
    assert f'<a href="/story/{result.story.id}">and 2 more matching versions</a>' in html
