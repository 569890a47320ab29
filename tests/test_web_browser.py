"""The site in headless Chromium (Debian's, driven by Playwright) against the app served on 127.0.0.1."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from aggregator import Aggregator
from tests.conftest import ROOT, FeedServer, LiveServer, Route, rss, serve
from tests.test_web import seed_story
from tests.test_web_security import hostile_feed
from web import create_app

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


class Session:
    """A browser context and page that record console errors, page errors and dialogs."""

    def __init__(self, browser: Browser, **options: Any) -> None:
        self.context: BrowserContext = browser.new_context(**options)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", dialog)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def session(chromium: Browser) -> Iterator[Session]:
    s = Session(chromium, java_script_enabled=False)  # the site needs no JavaScript
    yield s
    s.close()


def test_front_page_to_a_story_with_both_seed_variants(
    session: Session, live_server: LiveServer, demo_agg: Aggregator
) -> None:
    page = session.page
    cid = seed_story(demo_agg)
    detail = demo_agg.cluster(cid)
    assert detail is not None
    title = detail.summary.canonical.title
    page.goto(live_server.url + "/")
    assert page.title() == "Latest stories · the aggregator"
    expect(page.get_by_role("heading", level=1)).to_have_text("Latest stories")
    # find the seed story, following "More stories" if it is not on the first page
    for _ in range(5):
        link = page.get_by_role("link", name=title, exact=True)
        if link.count():
            break
        page.get_by_role("link", name="More stories →").click()
    link.click()
    page.wait_for_url(f"**/story/{cid}")
    assert page.title() == f"{title} · the aggregator"
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    variants = page.locator("section.variants article.variant")
    expect(variants).to_have_count(len(detail.members))
    outlets = variants.locator("p.outlet").all_inner_texts()
    assert any("HARBOUR POST" in o.upper() for o in outlets)
    assert any("DAILY LEDGER" in o.upper() for o in outlets)
    for m in detail.members:
        card = page.locator(f"#item-{m.id}")
        expect(card.get_by_role("heading", level=3)).to_have_text(m.title)
        assert m.link is not None
        assert card.get_by_role("link", name=m.title).get_attribute("href") == m.link
        expect(card.get_by_text("Why it is here:")).to_be_visible()
    # the comparison opens without JavaScript (a <details> element)
    other = next(m for m in detail.members if m.id != detail.summary.canonical.id)
    diff = page.locator(f"#item-{other.id} details.diff")
    expect(diff.get_by_role("heading", name=f"Only in {other.outlet}")).to_be_hidden()
    diff.locator("summary").click()
    expect(diff.get_by_role("heading", name=f"Only in {other.outlet}")).to_be_visible()
    assert session.errors == [] and session.dialogs == []


def test_search_from_the_header(session: Session, live_server: LiveServer, demo_agg: Aggregator) -> None:
    page = session.page
    cid = seed_story(demo_agg)
    page.goto(live_server.url + "/outlets")
    box = page.get_by_label("Search stories")
    box.fill("Putin Starlink Taiwan")
    box.press("Enter")
    page.wait_for_url("**/search?q=Putin+Starlink+Taiwan")
    expect(page.get_by_role("heading", level=1)).to_have_text("Stories matching “Putin Starlink Taiwan”")
    result = page.locator(f"#r{cid}")
    expect(result).to_be_visible()
    expect(page.locator(f"#r{cid} ~ ul.hits mark").first).to_be_visible()
    result.get_by_role("link").click()
    page.wait_for_url(f"**/story/{cid}")
    assert session.errors == []


def test_filters_and_sorting_work_without_javascript(session: Session, live_server: LiveServer) -> None:
    page = session.page
    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Most covered").click()
    page.wait_for_url("**/?sort=coverage")
    page.locator("details.filters > summary").click()
    page.get_by_label("Covered by at least").select_option("3")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**min_outlets=3**")
    counts = page.locator("article.story .count").all_inner_texts()
    assert counts and all(int(c.split()[0]) >= 3 for c in counts)
    expect(page.locator("link[rel=alternate][type='application/rss+xml']")).to_have_attribute(
        "href", "/feed.rss?min_outlets=3"
    )


@pytest.fixture
def hostile_server(agg: Aggregator, feed_server: FeedServer) -> Iterator[LiveServer]:
    feed_server.routes["/hostile.xml"] = Route(body=hostile_feed())
    agg.add_feed(feed_server.url("/hostile.xml"))
    agg.update()
    yield from serve(create_app(agg.settings))


@pytest.mark.parametrize("bypass_csp", [True, False], ids=["sanitiser-alone", "with-csp"])
def test_a_hostile_feed_items_script_never_runs(
    chromium: Browser, hostile_server: LiveServer, agg: Aggregator, bypass_csp: bool
) -> None:
    """With the CSP bypassed, the sanitiser alone must stop every script; with it, both do."""
    (story,) = agg.clusters()
    (feed,) = agg.feeds()
    s = Session(chromium, bypass_csp=bypass_csp)
    try:
        page = s.page
        for path in ["/", f"/story/{story.id}", "/search?q=hostile", "/outlets", f"/outlets/{feed.id}"]:
            page.goto(hostile_server.url + path)
            page.wait_for_load_state("load")
            assert page.evaluate("() => window.__pwned") is None, path
            for summary in page.locator("details > summary").all():
                summary.click(timeout=5000)  # open every full text and comparison
            for link in page.get_by_text("click me").all():
                link.click(timeout=5000)
            page.wait_for_timeout(100)
            assert page.evaluate("() => window.__pwned") is None, path
            assert page.evaluate("() => document.scripts.length") == 0, path
            handlers = page.evaluate(
                "() => [...document.querySelectorAll('*')].flatMap("
                "e => [...e.attributes].filter(a => a.name.startsWith('on')).map(a => a.name))"
            )
            assert handlers == [], path
            hrefs = page.evaluate("() => [...document.querySelectorAll('[href]')].map(e => e.href)")
            assert not [h for h in hrefs if not h.startswith(("http://", "https://"))], path
        page.goto(f"{hostile_server.url}/story/{story.id}")
        expect(page.get_by_role("heading", level=1)).to_have_text("Hostile harbour headline")
        assert s.dialogs == []
    finally:
        s.close()


def test_stylesheet_loads_under_the_csp_and_dark_mode(chromium: Browser, live_server: LiveServer) -> None:
    for scheme, background in (("light", "rgb(251, 250, 247)"), ("dark", "rgb(19, 19, 18)")):
        s = Session(chromium, color_scheme=scheme)
        try:
            s.page.goto(live_server.url + "/")
            assert s.page.evaluate("() => getComputedStyle(document.body).backgroundColor") == background
            assert s.errors == []  # no CSP violation, no missing file
        finally:
            s.close()


@pytest.mark.parametrize("path", ["/", "STORY", "/search?q=starlink", "/outlets", "/outlets/1"])
def test_no_sideways_scrolling_on_a_phone(
    chromium: Browser, live_server: LiveServer, demo_agg: Aggregator, path: str
) -> None:
    if path == "STORY":
        path = f"/story/{seed_story(demo_agg)}"
    s = Session(chromium, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        s.page.goto(live_server.url + path)
        for summary in s.page.locator("details > summary").all():
            summary.click()
        width = s.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
    finally:
        s.close()


def test_a_long_unbroken_word_or_a_wide_table_stays_in_the_column(
    chromium: Browser, live_server: LiveServer, demo_agg: Aggregator, feed_server: FeedServer
) -> None:
    """One 160-character "word" in a headline made the front page 2,272 px wide on a phone."""
    word = "Supercalifragilistic" * 8
    table = "<table><tr>" + "".join(f"<td>column{n}column{n}</td>" for n in range(30)) + "</tr></table>"
    item = {"title": f"{word} headline", "guid": "long-1", "description": f"<p>{word} text</p>{table}"}
    feed_server.routes["/long.xml"] = Route(rss([item], title="Long words"))
    demo_agg.add_feed(feed_server.url("/long.xml"))
    demo_agg.update()
    (story,) = [s for s in demo_agg.clusters(limit=100) if s.canonical.title.startswith(word)]
    s = Session(chromium, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        for path in ("/", f"/story/{story.id}", f"/search?q={word}"):
            s.page.goto(live_server.url + path)
            assert s.page.evaluate("() => document.documentElement.scrollWidth") <= 360, path
    finally:
        s.close()


def test_outlet_table_cells_break_between_words_on_a_phone(
    chromium: Browser, live_server: LiveServer, demo_agg: Aggregator
) -> None:
    """`overflow-wrap: anywhere` on table cells let the table squeeze the Outlets column to a letter wide."""
    s = Session(chromium, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        s.page.goto(live_server.url + "/outlets")
        cells = s.page.evaluate(
            """() => [...document.querySelectorAll('table.outlets tbody th, table.outlets tbody td')].map(c => {
                const r = document.createRange(); r.selectNodeContents(c);
                const lines = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
                return [c.innerText.trim(), lines.size, c.innerText.trim().split(/\\s+/).length];
            })"""
        )
        assert cells
        broken = [(text, lines, words) for text, lines, words in cells if lines > words]
        assert not broken, broken
    finally:
        s.close()


def test_right_to_left_headlines_and_outlet_names_read_right_to_left(
    session: Session, live_server: LiveServer, demo_agg: Aggregator, feed_server: FeedServer
) -> None:
    """An Arabic headline laid out left to right put its full stop and numbers at the wrong end."""
    title = "الحكومة تعلن خطة جديدة للنقل العام بقيمة 3 مليارات."
    item = {
        "title": title,
        "guid": "ar-1",
        "description": "<p>أعلنت الحكومة اليوم خطة جديدة للنقل العام.</p>",
    }
    feed_server.routes["/ar.xml"] = Route(rss([item], title="صحيفة الأخبار"))
    demo_agg.add_feed(feed_server.url("/ar.xml"))
    demo_agg.update()
    (story,) = [s for s in demo_agg.clusters(limit=100) if s.canonical.title == title]
    page = session.page
    direction = "(e) => getComputedStyle(e).direction"
    page.goto(live_server.url + "/")
    assert page.locator(f"#s{story.id}").evaluate(direction) == "rtl"
    assert page.locator(f"#s{story.id} ~ .summary").evaluate(direction) == "rtl"
    english = next(s for s in demo_agg.clusters(limit=5) if s.id != story.id)
    assert page.locator(f"#s{english.id}").evaluate(direction) == "ltr"
    page.goto(live_server.url + f"/story/{story.id}")
    assert page.locator("#story-title").evaluate(direction) == "rtl"
    # the outlet's name is isolated in the English sentence around it
    name = page.locator(".byline strong bdi")
    expect(name).to_have_text("صحيفة الأخبار")
    assert name.evaluate(direction) == "rtl"
    page.goto(live_server.url + "/outlets")
    cell = page.locator("table.outlets th[scope=row]", has_text="صحيفة الأخبار")
    assert cell.evaluate(direction) == "rtl"


def test_keyboard_users_can_skip_to_the_content(session: Session, live_server: LiveServer) -> None:
    page = session.page
    page.goto(live_server.url + "/")
    page.keyboard.press("Tab")
    focused = page.locator(":focus")
    expect(focused).to_have_text("Skip to content")
    expect(focused).to_be_visible()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
def test_screenshot_script_makes_the_docs_pictures(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "screenshots.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert png_size(tmp_path / "front.png") == (1280, 1000)
    assert png_size(tmp_path / "story.png")[0] == 1280
    assert png_size(tmp_path / "front-mobile.png") == (780, 1688)
    for name in ("front.png", "story.png"):  # the committed pictures exist too
        assert png_size(ROOT / "docs" / "screenshots" / name)[0] == 1280
