"""Nothing from a feed reaches a page as a script, an event handler or a javascript: link."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import Aggregator
from tests.conftest import FeedServer, Route
from web import create_app
from web.filters import safe_html, safe_url, without_keys

HOSTILE_TITLE = (
    '<script>window.__pwned="title"</script>Hostile harbour headline'
    "<img src=x onerror=\"window.__pwned='title-img'\">"
)
HOSTILE_HTML = (
    "<p>Ordinary words about the hostile harbour and its <b>bold</b> mayor.</p>"
    '<script>window.__pwned = "script"</script>'
    '<img src="http://127.0.0.1:9/x.png" onerror="window.__pwned = \'onerror\'">'
    '<a id="js-link" href="javascript:window.__pwned=\'link\'">click me</a>'
    "<a href=\"JaVaScRiPt&#58;window.__pwned='entity'\">entity link</a>"
    "<a href=\" javascript:window.__pwned='space'\">space link</a>"
    '<svg onload="window.__pwned = \'svg\'"><circle r="1"/></svg>'
    "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>"
    '<object data="javascript:window.__pwned=1"></object>'
    '<a href="data:text/html,<script>alert(1)</script>">data link</a>'
    '<div style="background:url(javascript:alert(1))">styled</div>'
    '<form action="javascript:alert(1)"><button formaction="javascript:alert(2)">go</button></form>'
    "<details open ontoggle=\"window.__pwned='toggle'\"><summary>x</summary></details>"
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>'
    "<body onload=\"window.__pwned='body'\">"
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">'
    "<style>body{display:none}</style>"
    "<p>The end of the hostile harbour story.</p>"
)


def hostile_feed() -> bytes:
    from xml.sax.saxutils import escape

    return f"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel>
<title>{escape("<script>window.__pwned='feed'</script>Hostile Outlet")}</title>
<link>javascript:window.__pwned='site'</link>
<description>hostile</description>
<item>
  <title>{escape(HOSTILE_TITLE)}</title>
  <link>javascript:window.__pwned='item-link'</link>
  <guid>hostile-1</guid>
  <author>{escape("x@example.org (<script>window.__pwned='author'</script>Eve)")}</author>
  <category>{escape("<script>window.__pwned='cat'</script>")}</category>
  <pubDate>Fri, 25 Oct 2024 10:00:00 GMT</pubDate>
  <description>{escape(HOSTILE_HTML)}</description>
</item>
</channel></rss>""".encode()


@pytest.fixture
def hostile_agg(agg: Aggregator, feed_server: FeedServer) -> Aggregator:
    feed_server.routes["/hostile.xml"] = Route(body=hostile_feed())
    agg.add_feed(feed_server.url("/hostile.xml"))
    (report,) = agg.update()
    assert report.status == "ok" and report.new_items == 1
    return agg


class Audit(HTMLParser):
    """Collects what could run: script-like elements, handler attributes, non-http(s) URLs."""

    RISKY_TAGS = frozenset(
        {"script", "iframe", "object", "embed", "svg", "math", "style", "base", "form", "meta"}
    )
    URL_ATTRS = frozenset({"href", "src", "action", "formaction", "data", "xlink:href", "srcdoc", "poster"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ours = (tag == "meta" and all(k in ("charset", "name", "content") for k, _ in attrs)) or (
            tag == "form" and (dict(attrs).get("action") or "").startswith("/")
        )
        if tag in self.RISKY_TAGS and not ours:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"{tag}[{name}]")
            if name == "style":
                self.problems.append(f"{tag}[style]")
            if name in self.URL_ATTRS and value is not None:
                scheme = urlsplit(value.strip()).scheme.lower()
                if scheme not in ("", "http", "https", "mailto"):
                    self.problems.append(f"{tag}[{name}={value!r}]")


def audit(html: str) -> list[str]:
    a = Audit()
    a.feed(html)
    a.close()
    return a.problems


def test_hostile_item_is_defanged_on_every_page(hostile_agg: Aggregator) -> None:
    (story,) = hostile_agg.clusters()
    (feed,) = hostile_agg.feeds()
    client = create_app(hostile_agg.settings).test_client()
    urls = ["/", f"/story/{story.id}", "/search?q=hostile+harbour", "/outlets", f"/outlets/{feed.id}"]
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, url
        html = r.get_data(as_text=True)
        assert audit(html) == [], url
        assert "<script" not in html.lower(), url  # as text, escaped, at most
        assert "javascript:" not in html.lower(), url
    story_html = client.get(f"/story/{story.id}").get_data(as_text=True)
    assert "Hostile harbour headline" in story_html
    assert "<b>bold</b>" in story_html  # harmless markup survives
    assert "The end of the hostile harbour story." in story_html


@pytest.mark.parametrize("url", ["/feed.rss", "/feed.atom"])
def test_hostile_item_in_the_merged_xml_feeds_is_escaped(hostile_agg: Aggregator, url: str) -> None:
    client = create_app(hostile_agg.settings).test_client()
    body = client.get(url).get_data(as_text=True)
    assert "<script" not in body.lower()  # text is XML-escaped, HTML content escaped twice
    assert "javascript:" not in body.lower()


def test_hostile_item_in_the_json_feed_is_escaped(hostile_agg: Aggregator) -> None:
    client = create_app(hostile_agg.settings).test_client()
    doc = client.get("/feed.json").get_json()
    (item,) = doc["items"]
    assert audit(item["content_html"]) == []
    assert "<script" not in item["content_html"].lower()
    assert "javascript:" not in json.dumps(doc).lower()
    assert item.get("external_url") is None  # the javascript: link was never stored


# -- the sanitiser itself ----------------------------------------------------------------------

FRAGMENTS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//x.test/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    "<img src=x onerror=alert(1)//",
    '<a href="javascript:alert(1)">a</a>',
    '<a href="jav&#x09;ascript:alert(1)">a</a>',
    '<a href="&#106;avascript:alert(1)">a</a>',
    '<a href="vbscript:msgbox(1)">a</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD4=">a</a>',
    '<svg/onload="alert(1)">',
    '<iframe src="javascript:alert(1)">',
    "<style>*{x:expression(alert(1))}</style>",
    '<p style="x:expression(alert(1))">p</p>',
    '<base href="javascript:/">',
    '<object data="x.swf">',
    "<embed src=x>",
    '<form><button formaction="javascript:alert(1)">b</button></form>',
    "<details open ontoggle=alert(1)>",
    '<math><a xlink:href="javascript:alert(1)">m</a></math>',
    "<!--<script>alert(1)</script>-->",
    "<<script>script>alert(1)<</script>/script>",
    '<a href="https://ok.test/a?b=1&c=2" onclick="alert(1)">ok</a>',
    "<p>plain <b>text</b></p>",
    "</p></div>",
    '"><script>alert(1)</script>',
    "&lt;script&gt;",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<template><script>alert(1)</script></template>",
    "<textarea><script>alert(1)</script></textarea>",
]


@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=10), max_size=8).map("".join))
def test_safe_html_never_lets_anything_run(html: str) -> None:
    assert audit(str(safe_html(html))) == []


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("href", "src") and v is not None]


def links(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.urls


@given(
    st.lists(
        st.sampled_from(FRAGMENTS)
        | st.sampled_from(['<a href="', '<img src="', '">'])
        | st.text(max_size=10),
        max_size=8,
    ).map("".join),
    st.sampled_from([None, "https://news.example/a/story.html?id=5", "javascript:alert(1)", "/relative"]),
)
def test_safe_html_leaves_no_relative_link(html: str, base: str | None) -> None:
    """A relative link would lead to this site's own pages: it is resolved against the
    item's address, or left out."""
    out = str(safe_html(html, base))
    assert audit(out) == []
    for url in links(out):
        assert urlsplit(url).scheme in ("http", "https", "mailto"), url


def test_safe_html_resolves_relative_links_against_the_items_address() -> None:
    html = '<a href="/2024/x.html">a</a><img src="img/b.jpg" alt="b"><a href="#n1">n</a><a href="//cdn.example/z">z</a>'
    assert links(str(safe_html(html, "https://news.example/a/story.html?id=5"))) == [
        "https://news.example/2024/x.html",
        "https://news.example/a/img/b.jpg",
        "https://news.example/a/story.html?id=5#n1",
        "https://cdn.example/z",
    ]
    assert links(str(safe_html(html))) == []  # without a base, no relative address is kept
    # A base nh3 does not take for an address (the item's link came from a feed): made
    # the story page a 500.
    for odd in ("https://xn--/story", "https://exa%mple.com/", "https://a%20b.example/x"):
        assert links(str(safe_html(html, odd))) == [], odd


def test_an_item_without_a_link_resolves_against_its_feed_without_its_key() -> None:
    from aggregator.models import StoredItem

    item = StoredItem(
        id=1,
        feed_id=1,
        feed_title=None,
        feed_url="https://a:b@p.example/f/rss.xml?key=S3CRET",
        link=None,
        title="t",
        summary="",
        text="",
        content_html="",
        author=None,
        published=None,
        first_seen=0.0,
        sort_time=0.0,
        cluster_id=None,
        score=None,
        signal=None,
    )
    assert item.content_base == "https://p.example/f/rss.xml"
    assert links(str(safe_html('<a href="#n">n</a>', item.content_base))) == ["https://p.example/f/rss.xml#n"]


def test_safe_html_keeps_ordinary_markup() -> None:
    out = str(safe_html('<p>A <a href="https://x.test/a">link</a> and <em>emphasis</em>.</p>'))
    assert (
        out
        == '<p>A <a href="https://x.test/a" rel="noopener noreferrer nofollow">link</a> and <em>emphasis</em>.</p>'
    )


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://x.test/a", True),
        ("http://x.test", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("JAVASCRIPT:alert(1)", False),
        ("data:text/html,x", False),
        ("//x.test/a", False),
        ("/relative", False),
        ("https://x.test/\nfoo", False),
        ("", False),
        (None, False),
    ],
)
def test_safe_url(url: Any, ok: bool) -> None:
    assert (safe_url(url) is not None) is ok


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://a.test/a b/é?q=ü x", "https://a.test/a%20b/%C3%A9?q=%C3%BC%20x"),
        ('https://a.test/"><x', "https://a.test/%22%3E%3Cx"),
        ("https://a.test/a%20b?x=1&y=%C3%A9#f", "https://a.test/a%20b?x=1&y=%C3%A9#f"),  # already encoded
        ("https://[::1]:8080/p;q=1", "https://[::1]:8080/p;q=1"),
    ],
)
def test_safe_url_percent_encodes_what_a_url_cannot_hold(url: str, shown: str) -> None:
    """A raw space or non-ASCII letter in a link made merged feeds fail validation."""
    assert safe_url(url) == shown


def test_feed_images_without_text_are_marked_decorative() -> None:
    html = str(safe_html('<img src="https://x.test/a.png"><img alt="A cat" src="https://x.test/b.png">'))
    assert html == '<img alt="" src="https://x.test/a.png"><img alt="A cat" src="https://x.test/b.png">'


def test_an_image_that_is_all_of_a_link_names_the_link() -> None:
    """alt="" on the only thing in a link left the link without a name for a screen reader."""
    html = str(
        safe_html(
            '<a href="https://news.example/full"><img src="https://x.test/a.png"></a>'
            '<a href="https://b.example/">Read <img src="https://x.test/b.png"></a>'
            '<a href="/relative"><img src="https://x.test/c.png"></a>'
        )
    )
    assert '<img alt="Image linking to news.example" src="https://x.test/a.png">' in html
    assert 'Read <img alt="" src="https://x.test/b.png">' in html  # the link has words
    assert '<img alt="Linked image" src="https://x.test/c.png">' in html  # no base: the href is dropped


def test_a_private_feeds_address_is_not_shown_in_public(agg: Aggregator, feed_server: FeedServer) -> None:
    """Paid and private feeds keep a subscriber's key in their address (a user name and
    password, or a query): no public page or merged feed shows it, and an outlet without
    a title is named after its host."""
    from tests.conftest import rss

    item = {
        "title": "Harbour strike ends",
        "guid": "p1",
        "link": "https://p.example/1",
        "description": "Dockers agreed.",
    }
    body = rss([item], title="")
    feed_server.routes["/priv.xml?key=S3CRET"] = Route(body=body)
    address = feed_server.url("/priv.xml?key=S3CRET").replace("http://", "http://alice:hunter2@")
    feed, _ = agg.add_feed(address)
    (report,) = agg.update()
    assert report.status == "ok" and report.new_items == 1
    (cluster,) = agg.clusters()
    # A failing one, whose error quotes the address it was sent to.
    moved = "gopher://bob:pw2@evil.example/f?key=S3CRET"
    feed_server.routes["/moved.xml"] = Route(status=301, headers={"Location": moved})
    failing, _ = agg.add_feed(feed_server.url("/moved.xml"))
    (report,) = agg.update()
    assert report.status == "error" and "S3CRET" in (agg.feed(failing.id).last_error or "")
    client = create_app(agg.settings).test_client()
    page = client.get(f"/outlets/{failing.id}").get_data(as_text=True)
    assert "gopher://evil.example/f" in page and "S3CRET" not in page and "pw2" not in page
    for url in [
        "/",
        "/outlets",
        f"/outlets/{feed.id}",
        f"/story/{cluster.id}",
        "/feed.rss",
        "/feed.atom",
        "/feed.json",
    ]:
        page = client.get(url).get_data(as_text=True)
        assert "S3CRET" not in page and "hunter2" not in page, url
        assert "127.0.0.1" in page, url  # the outlet's name: its host


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "redirect to gopher://bob:pw@evil.example/f?key=S3CRET now",
            "redirect to gopher://evil.example/f now",
        ),
        (
            "HTTPS://a:b@x.org:8080/p?x=1#top and http://plain.example/",
            "HTTPS://x.org:8080/p#top and http://plain.example/",
        ),
        ("HTTP 404 Not Found", "HTTP 404 Not Found"),
        ("at https://alice:p@ss@host.example/f?key=S3CRET", "at https://host.example/f"),
        (None, ""),
    ],
)
def test_without_keys_leaves_out_what_an_address_keeps_private(text: str | None, shown: str) -> None:
    assert without_keys(text) == shown


def test_outlet_names_in_public_and_for_admins() -> None:
    from aggregator.models import Feed, outlet_name

    assert outlet_name("Daily Ledger", "https://a:b@x.example/f?k=1") == "Daily Ledger"
    # Untitled: the address without its scheme, unless it holds a key (then the host).
    assert outlet_name(None, "https://news.example.com/world.xml") == "news.example.com/world.xml"
    assert outlet_name(None, "https://news.example.com/sport.xml") == "news.example.com/sport.xml"
    assert outlet_name("", "https://news.example.com/feed.xml?key=S3CRET") == "news.example.com"
    assert outlet_name(None, "https://bob:pw@news.example.com/feed.xml") == "news.example.com"
    assert outlet_name(None, "file:///srv/feeds/local.xml") == "local.xml"
    feed = Feed.__new__(Feed)
    object.__setattr__(feed, "title", None)
    object.__setattr__(feed, "url", "https://news.example.com/feed.xml?key=S3CRET")
    assert feed.display_name == feed.url and feed.public_name == "news.example.com"  # admins see it whole


def test_a_feeds_headings_sit_under_the_pages_own() -> None:
    """A feed's <h2> came out at the level of the page's sections (a screen reader lists them)."""
    html = str(safe_html('<h2>Background</h2><p>x</p><h3 title="t">Detail</h3><h6>Small</h6><h1>Top</h1>'))
    assert html == '<h4>Background</h4><p>x</p><h5 title="t">Detail</h5><h6>Small</h6>Top'
