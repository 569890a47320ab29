"""The admin area in headless Chromium, without JavaScript: log in, preview a lower threshold, apply it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from aggregator import Aggregator
from aggregator.accounts import set_password
from tests.conftest import LiveServer
from tests.test_web import seed_story
from tests.test_web_browser import Session

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

PASSWORD = "correct horse battery staple"
JOB_TIMEOUT = 90_000  # ms: the job pages reload themselves every 2 seconds until the job ends


@pytest.fixture
def session(chromium: Browser) -> Iterator[Session]:
    s = Session(chromium, java_script_enabled=False)  # the admin area needs no JavaScript either
    yield s
    s.close()


@pytest.fixture
def account(demo_agg: Aggregator) -> str:
    set_password(demo_agg.db, "alice", PASSWORD, time.time())
    return "alice"


def log_in(session: Session, live_server: LiveServer, path: str) -> None:
    page = session.page
    page.goto(live_server.url + path)
    page.wait_for_url(re.compile(r".*/admin/login\?next=.*"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Admin: log in")
    page.get_by_label("Account name").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{path}")


def test_log_in_preview_a_lower_threshold_and_apply_it(
    session: Session, live_server: LiveServer, demo_agg: Aggregator, account: str
) -> None:
    page = session.page
    log_in(session, live_server, "/admin/settings")
    expect(page.get_by_role("heading", level=1)).to_have_text("Clustering settings")
    expect(
        page.get_by_role("navigation", name="Admin").get_by_role("link", name="Settings")
    ).to_have_attribute("aria-current", "page")

    # lower the verification thresholds and preview them on the last 30 days
    long = page.get_by_label("join_threshold_long", exact=True)
    expect(long).to_have_value("0.4")
    long.fill("0.02")
    page.get_by_label("join_threshold_short", exact=True).fill("0.01")
    page.get_by_label("Replay the stored items of").select_option(label="the last 30 days")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url(re.compile(r".*/admin/jobs/\d+$"))
    preview_url = page.url
    expect(page.get_by_role("heading", level=1)).to_have_text("Preview of the last 30 days")

    # the page reloads itself (a meta refresh, no script) until the preview is ready
    merges = page.get_by_role("heading", name=re.compile(r"^Stories that would merge \(\d+\)$"))
    expect(merges).to_be_visible(timeout=JOB_TIMEOUT)
    count = int(re.findall(r"\d+", merges.inner_text())[0])
    assert count >= 1
    expect(page.get_by_text("Status: done")).to_be_visible()
    expect(
        page.get_by_role("row", name=re.compile(r"cluster\.join_threshold_long\s+0\.4\s+0\.02"))
    ).to_be_visible()
    examples = page.locator("ol.changes-list").first.locator("li li")
    assert examples.count() >= 2  # at least two stories merging into one

    # click through to one of the stories that would merge, and back
    seed = seed_story(demo_agg)
    detail = demo_agg.cluster(seed)
    assert detail is not None
    link = page.get_by_role("link", name=f"story #{seed}", exact=True).first
    link.click()
    page.wait_for_url(f"**/story/{seed}")
    expect(page.get_by_role("heading", level=1)).to_have_text(detail.summary.canonical.title)
    page.goto(preview_url)

    # apply: a new settings version, re-clustering in the background with visible progress
    before = len(demo_agg.clusters(limit=1000))
    page.get_by_label("Note for the history (optional)").fill("Merge more eagerly")
    page.get_by_role("button", name="Apply these settings").click()
    page.wait_for_url(re.compile(r".*/admin/jobs/\d+$"))
    assert page.url != preview_url
    expect(page.get_by_role("heading", level=1)).to_have_text("Apply settings")
    expect(page.get_by_text("Settings version 1 is now in force")).to_be_visible(timeout=JOB_TIMEOUT)
    expect(page.get_by_text("Status: done")).to_be_visible()
    assert len(demo_agg.clusters(limit=1000)) < before

    # the history shows the new version, who made it and what it changed
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="History").click()
    page.wait_for_url("**/admin/history")
    version = page.locator("article.version").first
    expect(version.get_by_role("heading", level=2)).to_have_text("Version 1 in force")
    expect(version).to_contain_text("by alice")
    expect(version).to_contain_text("“Merge more eagerly”")
    expect(
        version.get_by_role("row", name=re.compile(r"cluster\.join_threshold_long\s+0\.4\s+0\.02"))
    ).to_be_visible()
    # going back to config.toml asks first, showing what would change
    page.get_by_role("link", name="Back to config.toml…").click()
    page.wait_for_url("**/admin/revert?version=0")
    expect(page.get_by_role("heading", level=1)).to_have_text("Back to config.toml?")
    expect(
        page.get_by_role("row", name=re.compile(r"cluster\.join_threshold_long\s+0\.02\s+0\.4"))
    ).to_be_visible()
    expect(page.get_by_role("button", name="Back to config.toml")).to_be_visible()
    page.get_by_role("link", name="Keep the settings in force").click()
    page.wait_for_url("**/admin/history")

    # and the settings form shows what is in force now
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Settings").click()
    expect(page.get_by_label("join_threshold_long changed", exact=True)).to_have_value("0.02")
    assert session.errors == [] and session.dialogs == []  # no CSP violation, nothing missing


def test_bad_input_is_explained_next_to_the_field(
    session: Session, live_server: LiveServer, account: str
) -> None:
    page = session.page
    log_in(session, live_server, "/admin/settings")
    field = page.get_by_label("lsh_bands", exact=True)
    field.fill("many")
    page.get_by_role("button", name="Preview").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("1 setting needs fixing")
    expect(alert).to_contain_text("cluster.lsh_bands: expected an integer, got 'many'")
    expect(field).to_have_value("many")
    expect(field).to_have_attribute("aria-invalid", "true")
    alert.get_by_role("link", name="cluster.lsh_bands").click()
    page.wait_for_url("**#s-cluster.lsh_bands")


def test_correct_a_story_by_hand(
    session: Session, live_server: LiveServer, demo_agg: Aggregator, account: str
) -> None:
    page = session.page
    seed = seed_story(demo_agg)
    detail = demo_agg.cluster(seed)
    assert detail is not None and len(detail.members) >= 2
    log_in(session, live_server, f"/admin/story/{seed}")
    moved = detail.members[0]
    page.get_by_role("button", name=f"Move item {moved.id} out of this story").click()
    page.wait_for_url(f"**/admin/story/{seed}")
    notice = page.get_by_role("status")
    expect(notice).to_contain_text("Moved “")
    notice.get_by_role("link").click()
    page.wait_for_url(re.compile(r".*/admin/story/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(moved.title)
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Corrections").click()
    expect(page.locator("table.rules tbody tr")).to_have_count(len(detail.members) - 1)
    assert session.errors == []


@pytest.mark.parametrize("path", ["/admin/", "/admin/settings", "/admin/feeds", "/admin/rules", "STORY"])
def test_no_sideways_scrolling_on_a_phone(
    chromium: Browser, live_server: LiveServer, demo_agg: Aggregator, account: str, path: str
) -> None:
    if path == "STORY":
        path = f"/admin/story/{seed_story(demo_agg)}"
    s = Session(chromium, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        log_in(s, live_server, path)
        width = s.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, (path, width)
    finally:
        s.close()
