"""The merged feeds: valid RSS 2.0 / Atom 1.0 / JSON Feed 1.1, stable ids, filters, a real reader."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import Aggregator
from aggregator.models import StoryFilter
from aggregator.parse import parse_feed
from aggregator.settings import Settings
from tests.conftest import FeedServer, LiveServer, Route, rss, serve
from tests.test_web import SEED_QUERY, seed_story
from web import create_app, syndication

FORMATS = [
    ("/feed.rss", "rss20", "application/rss+xml"),
    ("/feed.atom", "atom10", "application/atom+xml"),
    ("/feed.json", "json11", "application/feed+json"),
]


def parse(client: Any, url: str) -> Any:
    """Fetch a merged feed and parse it back: feedparser for XML, JSON checks for JSON Feed.

    Returns feedparser's result, or for JSON Feed an equivalent built from the document.
    """
    r = client.get(url)
    assert r.status_code == 200, (url, r.status_code)
    assert r.headers["Content-Type"].endswith("charset=utf-8")
    if r.mimetype == "application/feed+json":
        return json_feed(r.data)
    d = feedparser.parse(r.data, response_headers={"content-type": r.headers["Content-Type"]})
    assert not d.bozo, d.get("bozo_exception")
    return d


def json_feed(data: bytes) -> Any:
    """Check a JSON Feed 1.1 document against the spec's required fields; shape it like feedparser's."""
    doc = json.loads(data)
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["items"], list)
    # the project's own JSON Feed reader accepts it without a warning
    parsed = parse_feed(data, doc["feed_url"], {"content-type": "application/feed+json"})
    assert parsed.error is None and parsed.warning is None
    assert len(parsed.entries) == len(doc["items"])
    entries = []
    for item in doc["items"]:
        assert isinstance(item["id"], str) and item["id"]
        assert "content_html" in item or "content_text" in item
        for key in ("date_published", "date_modified"):
            datetime.fromisoformat(item[key].replace("Z", "+00:00"))
        entries.append(
            feedparser.FeedParserDict(
                id=item["id"],
                title=item["title"],
                link=item["url"],
                content=[{"value": item["content_html"]}],
                updated=item["date_modified"],
                updated_parsed=datetime.fromisoformat(
                    item["date_modified"].replace("Z", "+00:00")
                ).timetuple(),
                authors=item["authors"],
            )
        )
    return feedparser.FeedParserDict(
        version="json11",
        feed=feedparser.FeedParserDict(
            title=doc["title"], links=[{"rel": "self", "href": doc["feed_url"]}], link=doc["home_page_url"]
        ),
        entries=entries,
    )


def content(entry: Any) -> str:
    if "content" in entry:
        return str(entry.content[0]["value"])
    return str(entry.summary)


def self_link(d: Any) -> str:
    return next(str(link["href"]) for link in d.feed.links if link["rel"] == "self")


@pytest.mark.parametrize(("path", "version", "mimetype"), FORMATS)
def test_merged_feed_is_valid_with_one_item_per_story(
    client: Any, demo_agg: Aggregator, path: str, version: str, mimetype: str
) -> None:
    r = client.get(path)
    assert r.mimetype == mimetype
    d = parse(client, path)
    assert d.version == version
    stories = demo_agg.stories(StoryFilter(), sort="updated", limit=100)
    assert [e.title for e in d.entries] == [s.canonical.title for s in stories]  # latest change first
    assert {s.id for s in stories} == {s.id for s in demo_agg.clusters(limit=100)}
    assert len({e.id for e in d.entries}) == len(stories)
    for e, s in zip(d.entries, stories, strict=True):
        assert e.link == f"http://localhost/story/{s.id}"
        assert e.id.startswith("tag:localhost,") and f":story/{s.id}/" in e.id
        # the outlet whose headline it is first (RSS and Atom: only it; readers show one)
        names = [a["name"] for a in e.authors]
        others = [o for o in s.outlets if o != s.canonical.outlet]
        if path == "/feed.json":  # all of them, the canonical outlet first, at most 20
            assert names == [s.canonical.outlet, *others][: syndication.MAX_AUTHORS]
        else:
            assert names == [s.canonical.outlet]
        if path != "/feed.json":
            assert e.get("author") == s.canonical.outlet  # what feedparser shows
    # the seed story lists every outlet's variant with its link
    cid = seed_story(demo_agg)
    detail = demo_agg.cluster(cid)
    assert detail is not None
    entry = next(e for e in d.entries if e.link.endswith(f"/story/{cid}"))
    html = content(entry)
    for m in detail.members:
        assert m.link is not None
        assert f'href="{m.link.replace("&", "&amp;")}"' in html
        assert m.outlet in html
    assert f"Reported by {len(detail.summary.outlets)} outlets" in html
    assert self_link(d) == f"http://localhost{path}"


@pytest.mark.parametrize(("path", "version", "mimetype"), FORMATS)
def test_an_item_lists_the_first_and_latest_versions_and_counts_the_rest(
    client: Any, demo_agg: Aggregator, monkeypatch: pytest.MonkeyPatch, path: str, version: str, mimetype: str
) -> None:
    """A story told 200 times made each item carry 200 versions (a 5 MB feed): an item
    lists the oldest and the latest ``MAX_VARIANTS / 2`` (the oldest alone hid every
    outlet that joined later) and says how many more the story page has."""
    monkeypatch.setattr(syndication, "MAX_VARIANTS", 2)
    cid = max(demo_agg.clusters(limit=100), key=lambda s: s.size).id
    detail = demo_agg.cluster(cid)
    assert detail is not None and len(detail.members) >= 3
    first, *middle, last = detail.members  # oldest first
    entry = next(e for e in parse(client, path).entries if e.link.endswith(f"/story/{cid}"))
    html = content(entry)

    def linked(m: Any) -> str:
        return f'href="{(m.link or "").replace("&", "&amp;")}"'

    assert linked(first) in html and linked(last) in html
    assert html.index(linked(first)) < html.index(f"{len(middle)} more version") < html.index(linked(last))
    assert all(linked(m) not in html for m in middle)
    if path == "/feed.json":
        doc = client.get(path).get_json()
        item = next(i for i in doc["items"] if i["url"].endswith(f"/story/{cid}"))
        assert item["_aggregator"]["versions"] == len(detail.members)
        assert len(item["_aggregator"]["variants"]) == 2


def test_merged_feeds_use_the_configured_base_url(demo_agg: Aggregator) -> None:
    app = create_app(demo_agg.settings, AGGREGATOR_BASE_URL="https://news.example.org/")
    d = parse(app.test_client(), "/feed.atom?min_outlets=2")
    assert self_link(d) == "https://news.example.org/feed.atom?min_outlets=2"
    assert all(e.link.startswith("https://news.example.org/story/") for e in d.entries)
    assert all(e.id.startswith("tag:news.example.org,") for e in d.entries)


@pytest.mark.parametrize(
    ("host", "authority"),
    [("[::1]:8000", "localhost"), ("10.0.0.7", "localhost"), ("News.Example.org", "news.example.org")],
)
def test_item_ids_are_tag_uris_of_a_domain_name(demo_agg: Aggregator, host: str, authority: str) -> None:
    """RFC 4151: a tag's authority is a domain name ("tag:::1,2026:..." is no URI)."""
    app = create_app(demo_agg.settings)
    d = feedparser.parse(app.test_client().get("/feed.atom", headers={"Host": host}).data)
    assert d.entries and all(e.id.startswith(f"tag:{authority},") for e in d.entries)


def test_item_ids_keep_the_first_base_url_and_no_requests_host(demo_agg: Aggregator) -> None:
    """Ids were made from each request's host: a "www." alias, a trailing dot or a
    base_url set later gave every item a new id, and readers showed them all again.
    The host of the first base_url is kept; a request's Host header is never kept
    (anyone can send one), and serving a feed writes nothing."""

    def ids(app: Any, host: str = "localhost") -> list[str]:
        d = feedparser.parse(app.test_client().get("/feed.atom", headers={"Host": host}).data)
        return [e.id for e in d.entries]

    plain = create_app(demo_agg.settings)
    assert all(i.startswith("tag:evil.example,") for i in ids(plain, "evil.example"))
    assert demo_agg.tag_authority() is None  # nothing kept from a request
    first = ids(create_app(demo_agg.settings, AGGREGATOR_BASE_URL="https://News.Example.org./"))
    assert first and all(i.startswith("tag:news.example.org,") for i in first)
    moved = create_app(demo_agg.settings, AGGREGATOR_BASE_URL="https://www.news.example.org/")
    assert ids(moved) == first
    for host in ("evil.example", "127.0.0.1:8000"):
        assert ids(create_app(demo_agg.settings), host) == first, host


@pytest.mark.parametrize("mounted", ["/news", ""])
def test_a_base_url_with_a_path_is_not_doubled(demo_agg: Aggregator, mounted: str) -> None:
    """A site served under /news (with or without the proxy passing that prefix on)
    links to https://news.example.org/news/..., not .../news/news/..."""
    app = create_app(demo_agg.settings, AGGREGATOR_BASE_URL="https://news.example.org/news")
    d = feedparser.parse(app.test_client().get("/feed.atom", base_url=f"http://localhost{mounted}/").data)
    assert self_link(d) == "https://news.example.org/news/feed.atom"
    assert d.entries and all(e.link.startswith("https://news.example.org/news/story/") for e in d.entries)


@pytest.mark.parametrize(("path", "version", "mimetype"), FORMATS)
def test_filters_and_self_link(
    client: Any, demo_agg: Aggregator, path: str, version: str, mimetype: str
) -> None:
    all_stories = {s.id: s for s in demo_agg.clusters(limit=100)}

    def ids(d: Any) -> list[int]:
        return [int(e.link.rsplit("/", 1)[1]) for e in d.entries]

    d = parse(client, f"{path}?min_outlets=2")
    assert ids(d) and all(len(all_stories[i].outlets) >= 2 for i in ids(d))
    assert len(ids(d)) == sum(len(s.outlets) >= 2 for s in all_stories.values())
    assert parse_qs(urlsplit(self_link(d)).query) == {"min_outlets": ["2"]}
    assert "at least 2 outlets" in d.feed.title

    ledger = next(f for f in demo_agg.feeds() if f.title == "The Daily Ledger")
    d = parse(client, f"{path}?outlet={ledger.id}")
    assert ids(d) and all("The Daily Ledger" in all_stories[i].outlets for i in ids(d))
    assert len(ids(d)) == sum("The Daily Ledger" in s.outlets for s in all_stories.values())

    d = parse(client, f"{path}?category=football")  # the demo's Sport/Football category, any case
    assert d.entries and all("Castlebridge" in e.title or "Varley" in e.title for e in d.entries)

    d = parse(client, f"{path}?q=starlink&min_outlets=2")
    assert d.entries
    for e in d.entries:
        detail = demo_agg.cluster(int(e.link.rsplit("/", 1)[1]))
        assert detail is not None and len(detail.summary.outlets) >= 2
        assert any("starlink" in (m.title + m.text).lower() for m in detail.members)
    assert parse_qs(urlsplit(self_link(d)).query) == {"min_outlets": ["2"], "q": ["starlink"]}

    d = parse(client, f"{path}?q=zzzyxxq")
    assert d.entries == []


def test_seed_story_is_found_by_its_words(client: Any, demo_agg: Aggregator) -> None:
    d = parse(client, "/feed.rss?" + "q=" + SEED_QUERY.replace(" ", "+").replace('"', "%22"))
    assert [e.link for e in d.entries][:1] == [f"http://localhost/story/{seed_story(demo_agg)}"]


def test_story_item_is_updated_not_added_when_an_outlet_joins(
    settings: Settings, feed_server: FeedServer
) -> None:
    now = [1_730_000_000.0]
    agg = Aggregator(settings, clock=lambda: now[0])
    body = (
        "The regional council approved the harbour bridge on Monday after a long debate. Work starts in May."
    )
    item = {"title": "Council approves harbour bridge", "pubDate": "Mon, 21 Oct 2024 10:00:00 GMT"}
    other = {
        "title": "Museum opens a new wing for maritime history",
        "pubDate": "Sun, 20 Oct 2024 09:00:00 GMT",
    }

    def publish(n: int, items: list[dict[str, str]]) -> None:
        feed_server.routes[f"/{n}.xml"] = Route(body=rss(items, title=f"Outlet {n}"))
        agg.add_feed(feed_server.url(f"/{n}.xml"))

    publish(
        1,
        [
            {**item, "link": "https://one.test/bridge", "guid": "1", "description": body},
            {**other, "link": "https://one.test/museum", "guid": "2", "description": "A wing opens."},
        ],
    )
    agg.update()
    client = create_app(settings).test_client()
    before = {path: parse(client, path) for path, _, _ in FORMATS}
    now[0] += 3600
    publish(2, [{**item, "link": "https://two.test/bridge", "guid": "x", "description": body}])
    agg.update()
    for path, _, _ in FORMATS:
        after = parse(client, path)
        old = {e.id: e for e in before[path].entries}
        new = {e.id: e for e in after.entries}
        assert set(new) == set(old) and len(new) == 2, path  # updated, not added
        bridge = next(i for i, e in new.items() if e.title == item["title"])
        assert new[bridge].updated_parsed > old[bridge].updated_parsed, path
        assert "https://two.test/bridge" in content(new[bridge]) and "Outlet 2" in content(new[bridge])
        assert "https://two.test/bridge" not in content(old[bridge])
        museum = next(i for i, e in new.items() if e.title == other["title"])
        assert new[museum].updated == old[museum].updated
        assert after.entries[0].title == item["title"]  # the updated story is the newest
    agg.close()


def test_a_story_reported_late_still_reaches_subscribers(settings: Settings, feed_server: FeedServer) -> None:
    """The merged feeds held the stories of the latest reports: one that an outlet
    reported hours late (or a new outlet's backlog) sat below a full feed, never delivered."""
    settings = settings.replace({"web.feed_size": 3})
    now = [1_730_000_000.0]
    agg = Aggregator(settings, clock=lambda: now[0])
    topics = [
        "Storm floods coastal town as river bursts banks overnight",
        "Central bank raises interest rates by half a point to fight inflation",
        "Football club sacks manager after seventh straight league defeat",
    ]
    stamp = "Sat, 26 Oct 2024 {:02d}:00:00 GMT"
    items = [
        {"title": t, "guid": str(n), "pubDate": stamp.format(10 + n), "description": f"{t}. More to follow."}
        for n, t in enumerate(topics)
    ]
    feed_server.routes["/1.xml"] = Route(rss(items, title="Outlet 1"))
    agg.add_feed(feed_server.url("/1.xml"))
    agg.update()
    client = create_app(settings, db_path=agg.db_path).test_client()
    seen = {e.id for e in parse(client, "/feed.atom").entries}
    now[0] += 1800
    late = "Volcano eruption forces evacuation of villages on the island"
    feed_server.routes["/2.xml"] = Route(
        rss(
            [
                {
                    "title": late,
                    "guid": "v",
                    "pubDate": stamp.format(9),
                    "description": f"{late}. Shelters open.",
                }
            ]
        )
    )
    agg.add_feed(feed_server.url("/2.xml"))
    agg.update()
    for path, _, _ in FORMATS:
        entries = parse(client, path).entries
        assert late in [e.title for e in entries], path
        assert [e.title for e in entries].index(late) == 0, path
    assert len(seen) == 3
    agg.close()


def test_an_edit_readers_cannot_see_leaves_the_story_not_updated(
    settings: Settings, feed_server: FeedServer
) -> None:
    """An outlet rewording a version's text (not shown in the merged feeds) moved the
    story's updated time: readers that mark updated items unread brought it back."""
    now = [1_730_000_000.0]
    agg = Aggregator(settings, clock=lambda: now[0])
    body = (
        "The regional council approved the harbour bridge on Monday after a long debate. Work starts in May."
    )
    item = {"title": "Council approves harbour bridge", "pubDate": "Mon, 21 Oct 2024 10:00:00 GMT"}

    def publish(n: int, **changes: str) -> None:
        entry = {**item, "link": f"https://{n}.test/bridge", "guid": str(n), "description": body, **changes}
        feed_server.routes[f"/{n}.xml"] = Route(body=rss([entry], title=f"Outlet {n}"))

    for n in (1, 2):
        publish(n)
        agg.add_feed(feed_server.url(f"/{n}.xml"))
    agg.update()
    client = create_app(settings, db_path=agg.db_path).test_client()
    (story,) = agg.clusters()
    canonical = story.canonical.feed_url
    other = 2 if canonical.endswith("/1.xml") else 1
    story_page = client.get(f"/story/{story.id}")
    assert story_page.status_code == 200 and "ETag" in story_page.headers

    def updated() -> str:
        return str(parse(client, "/feed.atom").entries[0].updated)

    before = updated()
    now[0] += 600
    publish(other, description=body.replace("after a long debate", "after a debate"))
    (report,) = agg.update([f for f in agg.feeds() if f.url.endswith(f"/{other}.xml")])
    assert report.updated_items == 1
    assert updated() == before  # the feed shows nothing new
    page = client.get(f"/story/{story.id}", headers={"If-None-Match": story_page.headers["ETag"]})
    assert page.status_code == 200 and "after a debate" in page.get_data(as_text=True)  # the site does
    assert page.headers["ETag"] != story_page.headers["ETag"]
    now[0] += 600
    publish(
        other, description=body.replace("after a long debate", "after a debate"), title="Council backs bridge"
    )
    agg.update([f for f in agg.feeds() if f.url.endswith(f"/{other}.xml")])
    assert updated() != before  # a headline the feed lists changed
    later = updated()
    now[0] += 600
    mine = 1 if other == 2 else 2
    publish(mine, description="The council approved the bridge. " + body)
    agg.update([f for f in agg.feeds() if f.url.endswith(f"/{mine}.xml")])
    assert updated() != later  # the summary the item shows changed
    agg.close()


# -- a real feed reader -----------------------------------------------------------------------


def newsboat(tmp: Path, url: str) -> tuple[list[tuple[str, str, str]], str]:
    """Run newsboat non-interactively on one feed URL: ``(title, guid, url)`` of its articles, and its count."""
    exe = shutil.which("newsboat")
    if exe is None:
        pytest.fail("newsboat is missing: run `make system-deps` (scripts/system-deps.sh)")
    (tmp / "urls").write_text(url + "\n", encoding="utf-8")
    (tmp / "config").write_text("", encoding="utf-8")
    env = {**os.environ, "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp), "XDG_DATA_HOME": str(tmp)}
    args = [exe, "-u", str(tmp / "urls"), "-c", str(tmp / "cache.db"), "-C", str(tmp / "config")]
    run = subprocess.run([*args, "-x", "reload"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    unread = subprocess.run(
        [*args, "-x", "print-unread"], env=env, capture_output=True, text=True, timeout=120
    )
    assert unread.returncode == 0, unread.stderr
    with sqlite3.connect(tmp / "cache.db") as db:
        rows = db.execute("SELECT title, guid, url FROM rss_item ORDER BY id").fetchall()
    db.close()
    return [(str(a), str(b), str(c)) for a, b, c in rows], unread.stdout.strip()


def test_newsboat_reads_the_merged_rss(live_server: LiveServer, demo_agg: Aggregator, tmp_path: Path) -> None:
    articles, unread = newsboat(tmp_path, live_server.url + "/feed.rss")
    stories = demo_agg.clusters(limit=100)
    assert {t for t, _, _ in articles} == {s.canonical.title for s in stories}
    assert unread == f"{len(stories)} unread articles"
    seed = seed_story(demo_agg)
    assert any(u == f"{live_server.url}/story/{seed}" for _, _, u in articles)
    assert all(g.startswith("tag:localhost,") for _, g, _ in articles)  # an IP address is no tag authority


def test_newsboat_sees_a_joined_outlet_as_the_same_article(
    settings: Settings, feed_server: FeedServer, tmp_path: Path
) -> None:
    body = "Firefighters contained the warehouse blaze near the docks overnight. No one was hurt, officials said."
    item = {"title": "Warehouse fire near the docks contained", "pubDate": "Tue, 22 Oct 2024 06:00:00 GMT"}
    with Aggregator(settings) as agg:
        feed_server.routes["/1.xml"] = Route(
            body=rss([{**item, "link": "https://one.test/fire", "guid": "1", "description": body}])
        )
        agg.add_feed(feed_server.url("/1.xml"))
        agg.update()
        reader = tmp_path / "reader"
        reader.mkdir()
        for server in serve(create_app(settings)):
            first, _ = newsboat(reader, server.url + "/feed.rss")
            time.sleep(1.1)  # updated_at is shown to the second
            feed_server.routes["/2.xml"] = Route(
                body=rss([{**item, "link": "https://two.test/fire", "guid": "2", "description": body}])
            )
            agg.add_feed(feed_server.url("/2.xml"))
            agg.update()
            second, unread = newsboat(reader, server.url + "/feed.rss")
    assert len(first) == len(second) == 1
    assert first[0][1] == second[0][1]  # same guid: one article, not two
    assert unread == "1 unread articles"


# -- the builders, on any text -----------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=60)


def _entry(n: int, title: str, summary: str, outlet: str) -> syndication.FeedEntry:
    t = 1_700_000_000.0 + n
    return syndication.FeedEntry(
        id=f"tag:example.org,2024:story/{n}",
        url=f"https://example.org/story/{n}",
        title=title or "untitled",
        summary=summary,
        published=t,
        updated=t + 60,
        latest=t + 30,
        outlets=(outlet or "Outlet",),
        variants=[
            syndication.Variant(title or "untitled", outlet or "Outlet", "https://o.example/a?b=1&c=2", t)
        ],
    )


RENDERERS: list[tuple[Callable[..., bytes], str]] = [
    (syndication.render_rss, "application/rss+xml"),
    (syndication.render_atom, "application/atom+xml"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=text, summary=text, outlet=text, channel_title=text)
def test_any_text_makes_a_valid_feed(title: str, summary: str, outlet: str, channel_title: str) -> None:
    channel = syndication.Channel(
        title=channel_title or "t",
        description="d",
        home_url="https://example.org/?q=a&b=c",
        self_url="https://example.org/feed?q=a&b=c",
        updated=1_700_000_000.0,
    )
    entries = [_entry(1, title, summary, outlet), _entry(2, "second", "", "Other")]
    for render, ctype in RENDERERS:
        d = feedparser.parse(render(channel, entries), response_headers={"content-type": ctype})
        assert not d.bozo, (render.__name__, d.get("bozo_exception"))
        assert [e.id for e in d.entries] == [e.id for e in entries]
        assert [e.link for e in d.entries] == [e.url for e in entries]
    doc = json.loads(syndication.render_json(channel, entries))
    assert [i["id"] for i in doc["items"]] == [e.id for e in entries]
    assert doc["items"][0]["title"] == (title or "untitled")


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


@given(st.text(max_size=80))
def test_entry_html_has_only_our_markup(s: str) -> None:
    entry = _entry(1, s, s, s)
    parser = Tags()
    parser.feed(syndication.entry_html(entry))
    assert {t for t, _ in parser.tags} <= {"p", "ul", "li", "a"}
    for tag, attrs in parser.tags:
        if tag == "a":
            assert len(attrs) == 1 and attrs[0][0] == "href"
            assert attrs[0][1] in {entry.url, "https://o.example/a?b=1&c=2"}


@settings(max_examples=200, deadline=None)
@given(title=text, summary=text, outlet=text, url_tail=text)
def test_xml_feeds_give_back_exactly_the_text_written(
    title: str, summary: str, outlet: str, url_tail: str
) -> None:
    """The string-built XML parses back to the very text (less what XML cannot hold), attributes too."""
    import xml.etree.ElementTree as ET

    entry = _entry(1, title, summary, outlet)
    channel = syndication.Channel(
        title=title or "t",
        description=summary,
        home_url="https://example.org/?q=" + url_tail,
        self_url="https://example.org/feed?q=" + url_tail,
        updated=1_700_000_000.0,
    )
    x = syndication.xml_text
    dc = "{http://purl.org/dc/elements/1.1/}"
    rss_doc = ET.fromstring(syndication.render_rss(channel, [entry]))
    ch = rss_doc.find("channel")
    assert ch is not None
    assert ch.findtext("title") == x(channel.title) and ch.findtext("description", "") == x(summary)
    self_link = ch.find("{http://www.w3.org/2005/Atom}link")
    assert self_link is not None and self_link.get("href") == x(channel.self_url)
    item = ch.find("item")
    assert item is not None
    assert item.findtext("title") == x(entry.title)
    assert item.findtext("description") == syndication.entry_html(entry)
    assert [c.text or "" for c in item.findall(dc + "creator")] == [x(o) for o in entry.outlets]
    a = "{http://www.w3.org/2005/Atom}"
    atom_doc = ET.fromstring(syndication.render_atom(channel, [entry]))
    assert atom_doc.findtext(a + "title") == x(channel.title)
    en = atom_doc.find(a + "entry")
    assert en is not None and en.findtext(a + "content") == syndication.entry_html(entry)
    related = [link.get("title") for link in en.findall(a + "link") if link.get("rel") == "related"]
    assert related == [x(f"{v.outlet}: {v.title}") for v in entry.variants]


def test_merged_feeds_of_an_empty_site_are_dated_now(settings: Settings) -> None:
    client = create_app(settings).test_client()
    year = datetime.now().year
    rss_doc = client.get("/feed.rss").text
    assert "<lastBuildDate>" in rss_doc and " 1970 " not in rss_doc and f" {year} " in rss_doc
    atom = feedparser.parse(client.get("/feed.atom").data)
    assert atom.feed.updated_parsed.tm_year == year and not atom.entries


def test_control_characters_in_a_filter_do_not_reach_the_feeds(client: Any) -> None:
    """``?q=%00`` gave a JSON Feed titled "stories matching “\\u0000”" (the XML feeds
    dropped it): filters are cleaned as stored text is."""
    r = client.get("/feed.json?q=quake%00%1b&category=Sp%07ort")
    assert r.status_code == 200
    doc = json.loads(r.get_data(as_text=True))
    assert not any(ord(c) < 32 for c in doc["title"]) and "quake" in doc["title"]
    assert "%00" not in doc["feed_url"] and "%07" not in doc["feed_url"]
