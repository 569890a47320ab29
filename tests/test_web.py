"""The site through Flask's test client: pages, search, outlets, errors, headers, conditional GET."""

from __future__ import annotations

import re
from email.utils import format_datetime, parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from aggregator import Aggregator
from aggregator.models import StoryFilter
from aggregator.storage import clusters as clusters_store
from aggregator.storage import write_transaction
from tests.conftest import FeedServer, Route, load_demo, rss
from web import create_app
from web.public import _first_started

SEED_QUERY = 'Putin Musk Starlink Taiwan "favour to China"'


def seed_story(agg: Aggregator) -> int:
    """The id of the seed story (Harbour Post + Daily Ledger: Putin asked Musk about Starlink)."""
    found = agg.stories(StoryFilter(query=SEED_QUERY), limit=5)
    assert found, "the seed story is missing"
    return found[0].id


def text_of(html: str) -> str:
    """Visible text of a page, whitespace collapsed, entities decoded."""

    class P(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    p = P()
    p.feed(html)
    return re.sub(r"\s+([,.;:)])", r"\1", " ".join(" ".join(p.parts).split()))


def page(client: Any, url: str, status: int = 200) -> str:
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code)
    return str(r.get_data(as_text=True))


# -- front page --------------------------------------------------------------------------


def test_front_page_lists_one_story_per_cluster(client: Any, demo_agg: Aggregator) -> None:
    html = page(client, "/")
    assert "<title>Latest stories · the aggregator</title>" in html
    stories = demo_agg.clusters(limit=20)
    for s in stories:
        assert f'href="/story/{s.id}"' in html
    # one link per story, not one per item
    assert len(re.findall(r'<h2 id="s\d+" dir="auto"><a href="/story/\d+">', html)) == len(stories)
    seed = demo_agg.cluster(seed_story(demo_agg))
    assert seed is not None
    text = text_of(html)
    assert seed.summary.canonical.title in text
    assert "The Harbour Post - News" in text and "The Daily Ledger" in text
    assert f"{len(seed.summary.outlets)} outlets" in text
    assert "First reported" in text and "Latest" in text


def test_front_page_sorts_by_most_covered(client: Any, demo_agg: Aggregator) -> None:
    html = page(client, "/?sort=coverage")
    ids = [int(i) for i in re.findall(r'<h2 id="s(\d+)"', html)]
    counts = {s.id: len(s.outlets) for s in demo_agg.clusters(limit=100)}
    shown = [counts[i] for i in ids]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] > shown[-1]
    assert 'aria-current="page">Most covered<' in html


def test_front_page_paginates(settings: Any, demo_feeds: Path) -> None:
    small = settings.replace({"web.page_size": 4})
    with Aggregator(small) as agg:
        load_demo(agg, demo_feeds)
        total = agg.counts()["clusters"]
    client = create_app(small).test_client()
    seen: list[str] = []
    n = 1
    while True:
        html = page(client, f"/?page={n}")
        ids = re.findall(r'<h2 id="s(\d+)"', html)
        assert 0 < len(ids) <= 4
        seen += ids
        if 'rel="next"' not in html:
            break
        assert f'href="/?page={n + 1}' in html or f"page={n + 1}" in html
        n += 1
    assert len(seen) == len(set(seen)) == total
    page(client, f"/?page={n + 1}", 404)
    page(client, "/?page=zero", 400)


def _pager_link(html: str, rel: str) -> str | None:
    m = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
    return m.group(1).replace("&amp;", "&") if m else None


def test_front_page_pages_go_on_where_the_last_one_ended(
    settings: Any, demo_db_template: Path, tmp_path: Path
) -> None:
    """Pages were counted by offset: when stories arrived while a reader read page 1,
    page 2 began with stories already shown (and stories that left were skipped)."""
    import shutil

    small = settings.replace({"web.page_size": 4})
    shutil.copyfile(demo_db_template, small.db_path)
    client = create_app(small).test_client()
    with Aggregator(small) as agg:
        before = [s.id for s in agg.stories(limit=12)]
        first = page(client, "/")
        assert [int(i) for i in re.findall(r'<h2 id="s(\d+)"', first)] == before[:4]
        assert 'rel="prev"' not in first
        # three new stories arrive, newer than any
        news = tmp_path / "news.xml"
        titles = ["Volcano erupts on remote island", "Orchestra names chief conductor", "Bakery opens shop"]
        news.write_bytes(rss([{"title": t, "guid": f"n{k}", "description": t} for k, t in enumerate(titles)]))
        feed, _ = agg.add_feed(str(news))
        (report,) = agg.update([feed])
        assert report.new_items == 3 and len(set(s.id for s in agg.stories(limit=3)) - set(before)) == 3

    second_url = _pager_link(first, "next")
    assert second_url is not None and "after=" in second_url
    second = page(client, second_url)
    assert [int(i) for i in re.findall(r'<h2 id="s(\d+)"', second)] == before[4:8]
    assert "Page 2" in text_of(second)
    page(client, "/?page=2")  # an offset still works (it shows stories of page 1 again now)

    back_url = _pager_link(second, "prev")
    assert back_url is not None and "before=" in back_url
    back = page(client, back_url)  # the page read before, not the new stories above it
    assert [int(i) for i in re.findall(r'<h2 id="s(\d+)"', back)] == before[:4]
    assert _pager_link(back, "prev") is not None  # ...which are one more step back
    top = page(client, _pager_link(back, "prev") or "")
    assert 'rel="prev"' not in top and "Page 1" in text_of(top)

    # the most covered, to the end: every story once
    seen: list[str] = []
    url: str | None = "/?sort=coverage"
    while url:
        html = page(client, url)
        seen += re.findall(r'<h2 id="s(\d+)"', html)
        url = _pager_link(html, "next")
    with Aggregator(small) as agg:
        assert len(seen) == len(set(seen)) == agg.counts()["clusters"]
        assert [int(i) for i in seen] == [s.id for s in agg.stories(sort="coverage", limit=10_000)]
    for bad in ("after=x", "after=1_2_3", "before=nan_5", "after=1e400_3", "after="):
        page(client, f"/?{bad}", 400)


def test_front_page_filters(client: Any, demo_agg: Aggregator) -> None:
    html = page(client, "/?min_outlets=2")
    ids = [int(i) for i in re.findall(r'<h2 id="s(\d+)"', html)]
    assert ids
    for cid in ids:
        detail = demo_agg.cluster(cid)
        assert detail is not None and len(detail.summary.outlets) >= 2
    assert "Stories covered by at least 2 outlets" in text_of(html)
    # the subscription links carry the filter
    assert 'href="/feed.rss?min_outlets=2"' in html


# -- story page --------------------------------------------------------------------------


def test_story_page_shows_canonical_then_every_variant(client: Any, demo_agg: Aggregator) -> None:
    cid = seed_story(demo_agg)
    detail = demo_agg.cluster(cid)
    assert detail is not None
    html = page(client, f"/story/{cid}")
    canon = detail.summary.canonical
    assert f"<title>{escape_title(canon.title)} · the aggregator</title>" in html
    text = text_of(html)
    # the canonical story comes first, then every outlet's variant
    lead = text.index(canon.title)
    variants_at = text.index("Every outlet’s version")
    assert lead < variants_at
    for m in detail.members:
        assert f'id="item-{m.id}"' in html
        assert text.index(m.title, variants_at) > variants_at
        assert m.link and f'href="{escape_attr(m.link)}"' in html
        assert m.outlet in text
        if m.summary:
            assert m.summary[:60] in text
    outlets = {m.outlet for m in detail.members}
    assert {"The Harbour Post - News", "The Daily Ledger"} <= outlets


def escape_title(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")


def escape_attr(s: str) -> str:
    return escape_title(s).replace('"', "&#34;")


def test_story_page_explains_why_and_how_variants_differ(client: Any, demo_agg: Aggregator) -> None:
    cid = seed_story(demo_agg)
    detail = demo_agg.cluster(cid)
    assert detail is not None
    text = text_of(page(client, f"/story/{cid}"))
    assert text.count("Why it is here:") == len(detail.members)
    joined = [m for m in detail.members if m.signal not in ("new", None)]
    assert joined
    for m in joined:
        assert f"signal {m.signal}, score {m.score:.2f}" in text
    # the seed pair are rewrites: different headlines and sentences
    assert "Its headline differs from the canonical one" in text
    assert "How its text differs" in text
    assert "Only in The Daily Ledger" in text or "Only in The Harbour Post - News" in text
    assert "Left out (only in the canonical text)" in text


def test_a_report_whose_own_story_was_merged_in_says_so(client: Any, demo_agg: Aggregator) -> None:
    """An item that started a story of its own, later merged into this one (the
    clusterer's merge or adoption leaves it with its ``new`` signal), is not also
    said to have started this story: only the earliest such item is."""
    cid = seed_story(demo_agg)
    detail = demo_agg.cluster(cid)
    assert detail is not None and len(detail.members) >= 2
    first, later = sorted(detail.members, key=lambda m: (m.sort_time, m.id))[:2]
    with write_transaction(demo_agg.db) as db:  # as an adoption leaves them: both started a story
        clusters_store.add_members(
            db, [(m.id, cid, 0.3, "new", None) for m in (first, later)], demo_agg.clock()
        )
    text = text_of(page(client, f"/story/{cid}"))
    assert text.count("It started this story") == 1
    assert text.count("It started a story of its own") == 1
    after = demo_agg.cluster(cid)
    assert after is not None and _first_started(after.members) == first.id


def test_exact_copies_show_as_the_same_text(agg: Aggregator, feed_server: FeedServer) -> None:
    body = (
        "The council approved the new harbour bridge on Monday. Work starts in May. It will cost 40 million."
    )
    item = {"title": "Council approves harbour bridge", "pubDate": "Mon, 21 Oct 2024 10:00:00 GMT"}
    for n in (1, 2):
        feed_server.routes[f"/{n}.xml"] = Route(
            body=rss(
                [{**item, "link": f"https://o{n}.test/bridge", "guid": f"b{n}", "description": body}],
                title=f"Outlet {n}",
            )
        )
        agg.add_feed(feed_server.url(f"/{n}.xml"))
    agg.update()
    (story,) = agg.clusters()
    client = create_app(agg.settings).test_client()
    text = text_of(page(client, f"/story/{story.id}"))
    assert "Same text as the canonical version." in text
    assert "Its headline differs" not in text
    assert "exactly those of" in text  # the exact-copy signal, in words


def test_a_story_of_many_outlets_shows_its_versions_a_page_at_a_time(
    client: Any, demo_agg: Aggregator, feed_server: FeedServer
) -> None:
    """A wire story copied by a hundred outlets: 40 versions (and their differences) a page."""
    from web.public import VARIANTS_PER_PAGE

    wire = "Dockers at the harbour walked out at dawn, halting cranes and cancelling ferries."
    for n in range(VARIANTS_PER_PAGE + 5):
        item = {"title": "Harbour cranes stop as dockers strike", "guid": f"w{n}", "description": wire}
        if n % 10 == 9:  # some reword it a little, and are matched to an earlier version
            item["description"] = wire.replace("at dawn", "early on Monday")
        feed_server.routes[f"/o{n}.xml"] = Route(rss([item], title=f"Outlet {n:02d}"))
        demo_agg.add_feed(feed_server.url(f"/o{n}.xml"))
    demo_agg.update()
    (story,) = [c for c in demo_agg.clusters(limit=50) if c.size > VARIANTS_PER_PAGE]
    assert story.size == VARIANTS_PER_PAGE + 5
    first = page(client, f"/story/{story.id}")
    assert first.count('<li id="item-') == VARIANTS_PER_PAGE
    assert f'Every outlet’s version <span class="muted">({story.size})</span>' in first
    assert f"versions 1 to {VARIANTS_PER_PAGE}" in text_of(first)
    assert f'href="/story/{story.id}?page=2"' in first and 'rel="prev"' not in first
    second = page(client, f"/story/{story.id}?page=2")
    assert second.count('<li id="item-') == 5 and f'<ol start="{VARIANTS_PER_PAGE + 1}">' in second
    assert f'href="/story/{story.id}?page=1"' in second  # back to the first page
    # a version matched with one on another page links there
    on_first = set(re.findall(r'<li id="item-(\d+)">', first))
    links = re.findall(r'matched <a href="([^"]*)#item-(\d+)"', second)
    assert links and all((href == f"/story/{story.id}") == (i in on_first) for href, i in links)
    page(client, f"/story/{story.id}?page=3", 404)


def test_links_to_a_version_open_the_page_that_holds_it(
    client: Any, demo_agg: Aggregator, feed_server: FeedServer
) -> None:
    """Search hits and outlet pages link to one version of a story of many: the link
    opens the page of versions it is on (it opened page 1, where the anchor is not)."""
    from web.public import VARIANTS_PER_PAGE

    wire = "Dockers at the harbour walked out at dawn, halting cranes and cancelling ferries."
    outlets = []
    for n in range(VARIANTS_PER_PAGE + 5):
        item = {"title": "Harbour cranes stop as dockers strike", "guid": f"w{n}", "description": wire}
        feed_server.routes[f"/o{n}.xml"] = Route(rss([item], title=f"Outlet {n:02d}"))
        outlets.append(demo_agg.add_feed(feed_server.url(f"/o{n}.xml"))[0])
    demo_agg.update()
    pages = [page(client, "/search?q=dockers")] + [page(client, f"/outlets/{f.id}") for f in outlets[-3:]]
    links = {
        (href, item)
        for html in pages
        for href, item in re.findall(r'href="(/story/\d+\?item=\d+)#item-(\d+)"', html)
    }
    assert len(links) >= 3
    for href, item in links:
        assert f'<li id="item-{item}">' in page(client, href.replace("&amp;", "&")), href
    assert any(f'<li id="item-{i}">' not in page(client, href.split("?")[0]) for href, i in links)


def test_front_page_filter_keeps_a_large_minimum_and_caps_outlet_chips(
    client: Any, demo_agg: Aggregator, feed_server: FeedServer
) -> None:
    html = page(client, "/?min_outlets=7")
    assert re.search(r'<option value="7"[^>]*selected', html)  # (Apply dropped it: no such option)
    wire = "Dockers at the harbour walked out at dawn, halting cranes and cancelling ferries."
    for n in range(12):
        item = {"title": "Harbour cranes stop as dockers strike", "guid": f"w{n}", "description": wire}
        feed_server.routes[f"/o{n}.xml"] = Route(rss([item], title=f"Outlet {n:02d}"))
        demo_agg.add_feed(feed_server.url(f"/o{n}.xml"))
    demo_agg.update()
    html = page(client, "/?min_outlets=12")
    chips = re.search(r'<ul class="chips"[^>]*>(.*?)</ul>', html, re.S)
    assert chips is not None and chips.group(1).count("<li") == 9 and "+4 more" in chips.group(1)


def test_a_search_page_past_the_last_is_not_found(client: Any) -> None:
    assert "Storm" in page(client, "/search?q=storm")
    page(client, "/search?q=storm&page=9", 404)


def test_missing_story_is_a_404_page(client: Any) -> None:
    html = page(client, "/story/999999", 404)
    assert "<title>404 Not Found · the aggregator</title>" in html
    assert "Page not found" in html and 'href="/"' in html
    for huge in ("/story/99999999999999999999999", "/outlets/99999999999999999999999", f"/story/{2**63}"):
        assert "Page not found" in page(client, huge, 404)  # not an OverflowError in SQLite
    future = {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
    assert client.get("/story/999999", headers=future).status_code == 404  # never a 304


def test_a_merged_storys_address_leads_to_the_story_it_became_part_of(
    client: Any, demo_agg: Aggregator
) -> None:
    """Readers' feed items and bookmarks link to a story's page: after a merge (and a
    merge of the merged story), the old address redirects to the story, ``?item=`` kept."""
    a, b, c = (s.id for s in demo_agg.clusters(limit=3))
    item = demo_agg.story_members([a])[a][0].id
    demo_agg.merge_clusters(b, a, "admin")
    demo_agg.merge_clusters(c, b, "admin")
    for gone in (a, b):
        r = client.get(f"/story/{gone}?item={item}")
        assert r.status_code == 301 and r.headers["Location"] == f"/story/{c}?item={item}"
    # The query goes along as sent: url_for took "_anchor" or "_method" for its own (a 500).
    r = client.get(f"/story/{a}?_method=POST&_anchor=x&item={item}")
    assert r.status_code == 301 and r.headers["Location"] == f"/story/{c}?_method=POST&_anchor=x&item={item}"
    assert client.get(f"/story/{c}?item={item}").status_code == 200
    # A story that went with its feed is gone: no redirect to what no longer exists.
    for feed in demo_agg.feeds():
        demo_agg.remove_feed(feed.id)
    page(client, f"/story/{a}", 404)


def test_a_repeated_parameter_is_read_as_the_view_reads_it(client: Any) -> None:
    """Views read a parameter's first value: so must the page cache's key."""
    coverage = client.get("/?sort=coverage&sort=latest")
    latest = client.get("/?sort=latest&sort=coverage")
    assert "Most covered stories" in coverage.text and "Most covered stories" not in latest.text
    assert coverage.headers["ETag"] != latest.headers["ETag"]
    assert client.get("/?sort=latest", headers={"If-None-Match": latest.headers["ETag"]}).status_code == 304


# -- search --------------------------------------------------------------------------------


def test_search_groups_matches_by_story(client: Any, demo_agg: Aggregator) -> None:
    cid = seed_story(demo_agg)
    html = page(client, "/search?q=Starlink+Taiwan+Putin")
    ids = [int(i) for i in re.findall(r'<h2 id="r(\d+)"', html)]
    assert cid in ids
    assert len(ids) == len(set(ids))  # each story once
    # both seed variants are listed under the one story, with highlighted snippets
    block = html[html.index(f'<h2 id="r{cid}"') :]
    block = block[: block.index("</article>")]
    assert "The Harbour Post - News" in block and "The Daily Ledger" in block
    assert "<mark>" in block
    assert "<title>Search: Starlink Taiwan Putin · the aggregator</title>" in html


@pytest.mark.parametrize(
    "q", ['"', "NEAR(", "title:putin", "a AND", "*", "-", "(((", "\x00", "'; DROP TABLE items; --", "ünïcödé"]
)
def test_search_survives_any_input(client: Any, q: str) -> None:
    r = client.get("/search", query_string={"q": q})
    assert r.status_code == 200


def test_search_without_matches(client: Any) -> None:
    assert "No story matches" in page(client, "/search?q=zzzyxxq")
    assert "Search stories" in page(client, "/search")


# -- outlets -------------------------------------------------------------------------------


def test_outlets_and_outlet_page(client: Any, demo_agg: Aggregator) -> None:
    html = page(client, "/outlets")
    feeds = demo_agg.feeds()
    for f in feeds:
        assert f'href="/outlets/{f.id}"' in html
    assert text_of(html).count("Healthy") == len(feeds)
    harbour = next(f for f in feeds if f.title and "Harbour" in f.title)
    html = page(client, f"/outlets/{harbour.id}")
    text = text_of(html)
    assert "Last poll" in text and "Last result" in text and "ok" in text
    assert f"{harbour.items_total} new items" in text or f"{harbour.items_total} new item" in text
    items = demo_agg.feed_items(harbour.id, limit=100)
    assert len(items) == harbour.items_total
    for it in items:
        assert f'/story/{it.cluster_id}?item={it.id}#item-{it.id}"' in html
    assert "a local file" in text  # the demo feeds are files: no file: link is shown
    page(client, "/outlets/999999", 404)


def test_failing_outlet_shows_its_error(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/broken.xml"] = Route(status=500, body=b"oops")
    feed, _ = agg.add_feed(feed_server.url("/broken.xml"))
    agg.update()
    client = create_app(agg.settings).test_client()
    text = text_of(page(client, f"/outlets/{feed.id}"))
    assert "Failing" in text and "Last error" in text and "500" in text


# -- health, errors, headers -------------------------------------------------------------


def test_healthz(client: Any, demo_agg: Aggregator) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.is_json
    assert r.json == {"status": "ok", **demo_agg.counts()}
    assert r.headers["Cache-Control"] == "no-store"


def test_server_error_page(web_app: Any) -> None:
    def boom() -> str:
        raise RuntimeError("kaput")

    web_app.add_url_rule("/boom", "boom", boom)
    r = web_app.test_client().get("/boom")
    assert r.status_code == 500
    html = r.get_data(as_text=True)
    assert "<title>500 Server error · the aggregator</title>" in html
    assert "kaput" not in html  # no internals leak


def test_bad_parameters_are_400(client: Any) -> None:
    for url in ("/?min_outlets=many", "/?min_outlets=0", "/?outlet=x", "/feed.rss?min_outlets=-1"):
        assert client.get(url).status_code == 400, url
    assert client.get("/feed.rss?outlet=424242").status_code == 404


@pytest.mark.parametrize("url", ["/", "/story/1", "/search?q=x", "/outlets", "/nope", "/feed.rss"])
def test_security_headers(client: Any, url: str) -> None:
    r = client.get(url)
    csp = r.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and "script-src" not in directives
    assert "unsafe-inline" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_have_landmarks_and_labels(client: Any, demo_agg: Aggregator) -> None:
    for url in ("/", f"/story/{seed_story(demo_agg)}", "/search?q=storm", "/outlets"):
        html = page(client, url)
        assert '<html lang="en">' in html
        assert "<main" in html and "<header" in html and "<footer" in html and "<nav" in html
        assert html.count("<h1") == 1
        # every form control has a label
        for control_id in re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', html):
            assert f'<label for="{control_id}"' in html, (url, control_id)
        assert '<meta name="viewport"' in html


# -- conditional GET -----------------------------------------------------------------------

CONDITIONAL = ["/", "/?sort=coverage", "/search?q=storm", "/outlets", "/feed.rss", "/feed.atom", "/feed.json"]


@pytest.mark.parametrize("url", [*CONDITIONAL, "STORY", "OUTLET"])
def test_conditional_get(client: Any, demo_agg: Aggregator, url: str) -> None:
    if url == "STORY":
        url = f"/story/{seed_story(demo_agg)}"
    elif url == "OUTLET":
        url = f"/outlets/{demo_agg.feeds()[0].id}"
    r = client.get(url)
    assert r.status_code == 200
    etag, last_modified = r.headers["ETag"], r.headers["Last-Modified"]
    assert etag.startswith('W/"') and "no-cache" in r.headers["Cache-Control"]
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert client.get(url, headers={"If-None-Match": 'W/"other"'}).status_code == 200
    # a date alone never answers 304 (a change within the same second, or one that does not
    # move the latest change time, would be hidden): only the ETag does
    later = format_datetime(parsedate_to_datetime(last_modified).replace(year=2100), usegmt=True)
    assert client.get(url, headers={"If-Modified-Since": later}).status_code == 200
    both = {"If-None-Match": etag, "If-Modified-Since": later}
    assert client.get(url, headers=both).status_code == 304


def test_etag_changes_when_stories_change(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(
        body=rss([{"title": "First story about bridges", "link": "https://a.test/1", "guid": "1"}])
    )
    agg.add_feed(feed_server.url("/a.xml"))
    agg.update()
    client = create_app(agg.settings).test_client()
    before = {u: client.get(u).headers["ETag"] for u in ("/", "/feed.rss", "/search?q=bridges")}
    feed_server.routes["/b.xml"] = Route(
        body=rss(
            [
                {
                    "title": "Tunnel boring machines arrive in the valley",
                    "link": "https://b.test/2",
                    "guid": "2",
                }
            ]
        )
    )
    agg.add_feed(feed_server.url("/b.xml"))
    agg.update()
    for url, etag in before.items():
        r = client.get(url, headers={"If-None-Match": etag})
        assert r.status_code == 200, url
        assert r.headers["ETag"] != etag
    assert "Tunnel boring machines arrive in the valley" in text_of(page(client, "/"))


def test_feed_pages_change_with_polls_but_merged_feeds_do_not(
    agg: Aggregator, feed_server: FeedServer
) -> None:
    feed_server.routes["/a.xml"] = Route(
        body=rss([{"title": "Only story", "link": "https://a.test/1", "guid": "1"}]), etag='"v1"'
    )
    feed, _ = agg.add_feed(feed_server.url("/a.xml"))
    agg.update()
    client = create_app(agg.settings).test_client()
    rss_etag = client.get("/feed.rss").headers["ETag"]
    outlet_etag = client.get(f"/outlets/{feed.id}").headers["ETag"]
    agg.update_feed(feed.id)  # answered 304: nothing new, but the poll is recorded
    assert client.get("/feed.rss", headers={"If-None-Match": rss_etag}).status_code == 304
    assert client.get(f"/outlets/{feed.id}", headers={"If-None-Match": outlet_etag}).status_code == 200


def test_static_files_are_served_and_cached(client: Any) -> None:
    with client.get("/static/style.css") as r:
        assert r.status_code == 200 and r.mimetype == "text/css"
        assert "prefers-color-scheme: dark" in r.get_data(as_text=True)
        etag = r.headers["ETag"]
    with client.get("/static/style.css", headers={"If-None-Match": etag}) as again:
        assert again.status_code == 304


# -- readability: colour contrast of the stylesheet -------------------------------------------


def css_palettes() -> dict[str, dict[str, str]]:
    css = (Path(__file__).resolve().parent.parent / "web" / "static" / "style.css").read_text()
    light = css[css.index(":root {") : css.index("}", css.index(":root {"))]
    dark_start = css.index(":root {", css.index("prefers-color-scheme: dark"))
    dark = css[dark_start : css.index("}", dark_start)]

    def colours(block: str) -> dict[str, str]:
        return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", block))

    return {"light": colours(light), "dark": {**colours(light), **colours(dark)}}


def contrast(a: str, b: str) -> float:
    def luminance(hex_colour: str) -> float:
        channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# (text colour, background colour) pairs the stylesheet uses for text
TEXT_PAIRS = [
    ("text", "bg"),
    ("text", "surface"),
    ("muted", "bg"),
    ("muted", "surface"),
    ("accent", "bg"),
    ("accent", "surface"),
    ("surface", "accent"),  # buttons, badges
    ("text", "accent-soft"),  # outlet chips
    ("ins-text", "ins-bg"),
    ("del-text", "del-bg"),
    ("text", "mark"),
    ("good", "surface"),
    ("warn", "surface"),
    ("bad", "surface"),
    ("muted", "del-bg"),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_meets_wcag_aa(scheme: str) -> None:
    palette = css_palettes()[scheme]
    for fg, bg in TEXT_PAIRS:
        ratio = contrast(palette[fg], palette[bg])
        assert ratio >= 4.5, f"{scheme}: --{fg} on --{bg} is {ratio:.2f}:1"


def test_search_highlights_use_the_text_colour_their_contrast_is_checked_with() -> None:
    """``mark`` inherited the muted colour of snippets: 3.5:1 on the dark highlight."""
    css = (Path(__file__).resolve().parent.parent / "web" / "static" / "style.css").read_text()
    rule = re.search(r"^mark \{([^}]*)\}", css, re.M)
    assert rule is not None and "color: var(--text)" in rule.group(1)


def test_an_empty_site_says_why_it_has_no_stories(agg: Aggregator, feed_server: FeedServer) -> None:
    """With no feeds, the front page said the first poll had not finished: it never would."""

    client = create_app(agg.settings, db_path=agg.db_path).test_client()
    assert "this site reads no feeds" in text_of(page(client, "/"))
    agg.add_feed(feed_server.url("/none.xml"))
    text = text_of(page(client, "/"))
    assert "the first poll of the feeds has not finished" in text and "reads no feeds" not in text


def test_the_menu_marks_the_current_page_and_the_current_section(client: Any, demo_agg: Aggregator) -> None:
    """A story page is not the Stories page: its menu link is the current section, not page."""
    assert '<a href="/" aria-current="page">Stories</a>' in page(client, "/")
    story = page(client, f"/story/{seed_story(demo_agg)}")
    assert '<a href="/" aria-current="true">Stories</a>' in story and 'aria-current="page"' not in story
    assert '<a href="/outlets" aria-current="page">Outlets</a>' in page(client, "/outlets")


def test_the_outlet_filter_tells_apart_feeds_of_one_name(agg: Aggregator, feed_server: FeedServer) -> None:
    """An outlet's section feeds under one name: the outlet filter listed "Reuters" twice."""
    item = {
        "title": "Quake kills 14 in mountain province",
        "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
        "description": "A magnitude 6.1 earthquake struck before dawn, killing 14 people, officials said.",
    }
    for section in ("world", "asia"):
        feed_server.routes[f"/{section}/rss"] = Route(rss([{**item, "guid": section}], title="Reuters"))
        agg.add_feed(feed_server.url(f"/{section}/rss"))
    feed_server.routes["/other.xml"] = Route(rss([{**item, "guid": "o"}], title="Northwire"))
    agg.add_feed(feed_server.url("/other.xml"))
    agg.update()
    (story,) = agg.clusters()
    # One outlet under two feeds: shown and counted once (it said "3 outlets: Reuters,
    # Reuters, Northwire"), by the pages and by the filters alike.
    assert story.size == 3 and story.n_feeds == 2 and story.outlets == ("Reuters", "Northwire")
    client = create_app(agg.settings, db_path=agg.db_path).test_client()
    html = page(client, "/")
    assert "Reuters (world/rss)</option>" in html and "Reuters (asia/rss)</option>" in html
    assert "Northwire</option>" in html
    assert "2 outlets" in text_of(html) and "2 outlets" in text_of(page(client, f"/story/{story.id}"))
    assert f'id="s{story.id}"' in page(client, "/?min_outlets=2")
    assert f'id="s{story.id}"' not in page(client, "/?min_outlets=3")
    # The asia feed takes a name of its own at its next poll: three outlets now.
    feed_server.routes["/asia/rss"] = Route(rss([{**item, "guid": "asia"}], title="Reuters Asia"))
    agg.update([f for f in agg.feeds() if f.url.endswith("/asia/rss")])
    (story,) = agg.clusters()
    assert story.n_feeds == 3 and story.outlets == ("Reuters", "Reuters Asia", "Northwire")
    assert f'id="s{story.id}"' in page(client, "/?min_outlets=3")
