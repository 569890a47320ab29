"""The admin area through Flask's test client: access rules, settings and previews, apply and revert,
corrections, feeds."""

from __future__ import annotations

import html as htmllib
import io
import re
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from markupsafe import escape

from aggregator import Aggregator, accounts, core
from aggregator.accounts import set_password
from aggregator.models import UpdateReport
from aggregator.settings import definitions
from aggregator.storage import clusters as clusters_store
from aggregator.storage import jobs as jobs_store
from aggregator.storage import write_transaction
from tests.conftest import FeedServer, Route, rss
from tests.test_web import seed_story, text_of
from tests.test_web_security import audit, hostile_feed
from web import create_app
from web.admin import shown, took

PASSWORD = "correct horse battery staple"
LOWER = {"cluster.join_threshold_long": "0.02", "cluster.join_threshold_short": "0.01"}
MONTH = "720"  # the demo's items span a few weeks


def token_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def login(client: Any, name: str = "alice", password: str = PASSWORD, next: str | None = None) -> Any:
    page = client.get("/admin/login" + (f"?next={next}" if next else ""))
    data = {"csrf_token": token_of(page.get_data(as_text=True)), "name": name, "password": password}
    if next:
        data["next"] = next
    return client.post("/admin/login", data=data)


def logout(client: Any) -> None:
    token = token_of(client.get("/admin/").get_data(as_text=True))
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 303


class Admin:
    """A logged-in test client that posts forms with the session's CSRF token."""

    def __init__(self, client: Any) -> None:
        self.client = client
        r = login(client)
        assert r.status_code == 303, r.status_code
        self.token = token_of(client.get("/admin/").get_data(as_text=True))

    def get(self, url: str, status: int = 200) -> str:
        r = self.client.get(url)
        assert r.status_code == status, (url, r.status_code)
        return str(r.get_data(as_text=True))

    def post(self, url: str, data: dict[str, Any] | None = None, status: int = 303, **kw: Any) -> Any:
        r = self.client.post(url, data={"csrf_token": self.token, **(data or {})}, **kw)
        assert r.status_code == status, (url, r.status_code, r.get_data(as_text=True)[:2000])
        return r

    def follow(self, r: Any) -> str:
        return self.get(r.headers["Location"])


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: the tests log in often (the real parameters cost ~0.6 s a hash)."""
    monkeypatch.setattr(accounts, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def account(demo_agg: Aggregator) -> str:
    set_password(demo_agg.db, "alice", PASSWORD, time.time())
    return "alice"


@pytest.fixture
def admin(client: Any, account: str) -> Admin:
    return Admin(client)


def test_the_feeds_page_comes_in_pages_and_actions_return_to_the_feed(
    admin: Admin, demo_agg: Aggregator
) -> None:
    """20,000 feeds on one page took 11 s to render: a page lists 100, and an action on a
    feed returns to the page that lists it."""
    from web.admin import FEEDS_PER_PAGE

    total = FEEDS_PER_PAGE * 2 + 30
    for n in range(total - len(demo_agg.feeds())):
        demo_agg.add_feed(f"https://zz{n:03}.example/feed", f"zz outlet {n:03}")
    first, third = admin.get("/admin/feeds"), admin.get("/admin/feeds?page=3")
    assert first.count('<tr id="feed-') == FEEDS_PER_PAGE and 'rel="next"' in first
    assert third.count('<tr id="feed-') == 30 and 'rel="next"' not in third and f"{total} feeds" in third
    listed = [f.id for f in demo_agg.feeds()]
    assert listed[FEEDS_PER_PAGE * 2 :] == [int(x) for x in re.findall(r'<tr id="feed-(\d+)"', third)]
    last = listed[-1]
    r = admin.post(f"/admin/feeds/{last}/pause", {"paused": "1"})
    assert r.headers["Location"].endswith(f"/admin/feeds?page=3#feed-{last}")
    r = admin.post("/admin/feeds", {"url": "https://aaa.example/feed", "title": "AAA first"})
    added = demo_agg.feed("https://aaa.example/feed")
    assert added is not None and r.headers["Location"].endswith(f"/admin/feeds#feed-{added.id}")
    admin.get("/admin/feeds?page=0", status=400)
    assert "No feeds on this page" in admin.get("/admin/feeds?page=99")


def test_stored_settings_that_no_longer_fit_are_shown(demo_agg: Aggregator, account: str) -> None:
    """A version applied on one config.toml, read with another it no longer fits: the
    settings page says which stored settings are not in force (a log line was all)."""
    from web import create_app

    demo_agg.apply_settings({"cluster.lsh_rows": "8"}, "alice")  # 16 bands x 8 rows of 128
    smaller = demo_agg.base_settings.replace({"cluster.num_perm": 64})
    admin = Admin(create_app(smaller, db_path=demo_agg.db_path).test_client())
    page = text_of(admin.get("/admin/settings"))
    assert "Not in force" in page and "may not exceed num_perm (64)" in page
    assert "Not in force" not in text_of(
        Admin(create_app(demo_agg.base_settings, db_path=demo_agg.db_path).test_client()).get(
            "/admin/settings"
        )
    )
    # A change applied on the smaller config does not turn the one left out back on
    # (8 bands x 8 rows would fit 64, but rows 8 was never previewed with it).
    with Aggregator(smaller, db_path=demo_agg.db_path) as other:
        assert other.settings.cluster.lsh_rows == smaller.cluster.lsh_rows
        other.apply_settings({"cluster.lsh_bands": "8"}, "bob")
        assert other.settings.cluster.lsh_bands == 8
        assert other.settings.cluster.lsh_rows == smaller.cluster.lsh_rows
        assert "cluster.lsh_rows" not in other.admin_overrides()


def wait_job(agg: Aggregator, job_id: int, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = agg.job(job_id)
        assert job is not None
        if job.finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def job_id_of(r: Any) -> int:
    m = re.fullmatch(r"/admin/jobs/(\d+)", r.headers["Location"])
    assert m, r.headers["Location"]
    return int(m.group(1))


def groups(agg: Aggregator) -> set[frozenset[int]]:
    by: dict[int, set[int]] = defaultdict(set)
    for row in agg.export_rows():
        by[row["cluster_id"]].add(row["item_id"])
    return {frozenset(v) for v in by.values()}


def cluster_of(agg: Aggregator, item_id: int) -> int:
    return next(r["cluster_id"] for r in agg.export_rows() if r["item_id"] == item_id)


def admin_rules(app: Any) -> list[Any]:
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("admin.")]
    assert len(rules) >= 20, [r.rule for r in rules]
    return rules


def concrete(rule: Any) -> str:
    return re.sub(r"<(?:[a-z]+:)?\w+>", "1", rule.rule)


def state(agg: Aggregator) -> tuple[Any, ...]:
    """Everything an admin action could change."""
    return (
        agg.counts(),
        [(f.id, f.paused, f.status) for f in agg.feeds()],
        [r.id for r in agg.correction_rules()],
        [v.id for v in agg.settings_history()],
        [j.id for j in agg.jobs()],
        sorted(map(sorted, groups(agg))),
        [(s.id, s.canonical.id) for s in agg.clusters(limit=100)],
    )


# -- access rules --------------------------------------------------------------------------


def test_every_admin_route_refuses_without_a_session(
    web_app: Any, demo_agg: Aggregator, account: str
) -> None:
    before = state(demo_agg)
    client = web_app.test_client()
    for rule in admin_rules(web_app):
        url = concrete(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            r = client.open(url, method=method, data={"name": "alice", "password": PASSWORD})
            if rule.endpoint == "admin.login":
                # the login page answers, but its form needs the CSRF token too
                assert r.status_code == (200 if method == "GET" else 400), (url, method)
                continue
            assert r.status_code in (302, 303, 401, 403), (url, method, r.status_code)
            if r.status_code in (302, 303):
                assert r.headers["Location"].startswith("/admin/login"), (url, method)
            assert r.headers["Cache-Control"] == "no-store"
    # a forged or stale cookie is no session either
    client.set_cookie("aggregator_admin", "eyJhZG1pbiI6ImFsaWNlIn0.x.y", path="/admin")
    assert client.get("/admin/settings").status_code == 303
    assert state(demo_agg) == before


def test_every_admin_post_refuses_a_bad_or_missing_csrf_token(
    web_app: Any, demo_agg: Aggregator, admin: Admin, account: str
) -> None:
    other = web_app.test_client()
    assert login(other).status_code == 303
    foreign = token_of(other.get("/admin/").get_data(as_text=True))
    assert foreign != admin.token
    before = state(demo_agg)
    posts = [r for r in admin_rules(web_app) if "POST" in r.methods]
    assert {r.endpoint for r in posts} >= {"admin.preview", "admin.apply", "admin.revert", "admin.merge"}
    for rule in posts:
        url = concrete(rule)
        for token in (None, "", "x" * 43, foreign):
            data = {"name": "alice", "password": PASSWORD, "other": "2", "version": "0", "paused": "1"}
            if token is not None:
                data["csrf_token"] = token
            r = admin.client.post(url, data=data)
            assert r.status_code in (400, 403), (url, token, r.status_code)
    assert state(demo_agg) == before
    assert admin.get("/admin/").count("Log out")  # still logged in: logout needs the token too


def test_session_cookie_and_headers(client: Any, account: str) -> None:
    r = login(client)
    assert r.status_code == 303 and r.headers["Location"] == "/admin/"
    cookie = r.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/admin", "Expires="):
        assert flag in cookie, cookie
    assert "Secure" not in cookie  # plain http in tests; on with an https base_url
    page = client.get("/admin/settings")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "noindex" in page.headers["X-Robots-Tag"]
    assert "script-src" not in page.headers["Content-Security-Policy"]  # no script is allowed
    public = client.get("/")
    assert "Set-Cookie" not in public.headers and "no-store" not in public.headers["Cache-Control"]


def test_secure_cookies_with_an_https_base_url(demo_agg: Aggregator, account: str) -> None:
    settings = demo_agg.settings.replace({"web.base_url": "https://news.example.org"})
    app = create_app(settings, db_path=demo_agg.db_path)
    client = app.test_client()
    r = client.get("/admin/login", base_url="https://news.example.org")
    assert "Secure" in r.headers["Set-Cookie"]


def test_secure_cookies_behind_a_tls_proxy_without_a_base_url(demo_agg: Aggregator, account: str) -> None:
    """Behind an HTTPS proxy with no https base_url, the session and known-browser
    cookies went out without Secure (a network attacker could read them over http)."""
    settings = demo_agg.settings.replace({"web.trusted_proxies": 1})
    client = create_app(settings, db_path=demo_agg.db_path).test_client()
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    page = client.get("/admin/login", headers=proxied)
    assert "Secure" in page.headers["Set-Cookie"]
    data = {"csrf_token": token_of(page.get_data(as_text=True)), "name": "alice", "password": PASSWORD}
    r = client.post("/admin/login", data=data, headers=proxied)
    cookies = r.headers.getlist("Set-Cookie")
    assert r.status_code == 303 and len(cookies) == 2 and all("Secure" in c for c in cookies)
    plain = create_app(settings, db_path=demo_agg.db_path).test_client().get("/admin/login")
    assert "Secure" not in plain.headers["Set-Cookie"]  # plain http stays usable


@pytest.mark.parametrize("raw", ["١٢", "#١٢", "1_2", "+5", "1e3", "0x10"])
def test_story_numbers_are_ascii_digits(admin: Admin, demo_agg: Aggregator, raw: str) -> None:
    """int() read Arabic-Indic digits and underscores: "#١٢" merged story 12."""
    before = len(demo_agg.clusters(limit=100))
    story = demo_agg.clusters(limit=1)[0]
    r = admin.client.post(f"/admin/story/{story.id}/merge", data={"csrf_token": admin.token, "other": raw})
    assert r.status_code == 400
    assert len(demo_agg.clusters(limit=100)) == before


def test_the_secret_is_random_kept_in_the_database_and_shared(demo_agg: Aggregator, tmp_path: Path) -> None:
    a = create_app(demo_agg.settings, db_path=demo_agg.db_path)
    b = create_app(demo_agg.settings, db_path=demo_agg.db_path)
    c = create_app(demo_agg.settings, db_path=tmp_path / "other.db")
    assert a.secret_key == b.secret_key == demo_agg.secret_key()
    assert a.secret_key != c.secret_key and len(str(a.secret_key)) >= 64


def test_wrong_passwords_and_the_rate_limit(client: Any, account: str) -> None:
    r = login(client, password="wrong password!")
    assert r.status_code == 401
    assert "Wrong account name or password." in r.get_data(as_text=True)
    r = login(client, name="mallory", password=PASSWORD)
    assert r.status_code == 401
    for _ in range(4):
        login(client, password="still wrong")
    r = login(client)  # the right password, too late
    assert r.status_code == 429 and "Too many failed logins" in r.get_data(as_text=True)
    assert client.get("/admin/").status_code == 303


def test_guesses_sent_at_once_count_against_the_limit(demo_agg: Aggregator, account: str) -> None:
    """Each guess checked the limit before the others were recorded: 40 parallel guesses
    made 38 tries against a limit of 5 per account."""
    from concurrent.futures import ThreadPoolExecutor

    from aggregator.accounts import MAX_FAILURES_PER_NAME_AND_ADDRESS, check_login
    from aggregator.storage import open_database

    def guess(n: int) -> bool:
        db = open_database(demo_agg.db_path, migrate=False)
        try:
            return check_login(db, "alice", f"wrong guess {n}", "198.51.100.7", time.time()).limited
        finally:
            db.close()

    with ThreadPoolExecutor(8) as pool:
        limited = list(pool.map(guess, range(40)))
    assert limited.count(False) == MAX_FAILURES_PER_NAME_AND_ADDRESS


def test_guessers_elsewhere_cannot_lock_the_admins_out(
    demo_agg: Aggregator, account: str, client: Any
) -> None:
    """Five wrong guesses from anywhere locked the account for 15 minutes, its admins
    included.  Now a guesser is limited per address; guesses spread over many
    addresses lock the account only for browsers that never logged into it."""
    from aggregator.accounts import check_login

    now = time.time()
    for n in range(5):  # one guesser: its own address is limited, nobody else
        check_login(demo_agg.db, "alice", f"guess {n}", "198.51.100.7", now)
    assert check_login(demo_agg.db, "alice", PASSWORD, "198.51.100.7", now).limited
    assert login(client).status_code == 303  # the admin, from 127.0.0.1

    logout(client)
    failed_guesses_from_everywhere(demo_agg, "alice", now)
    stranger = create_app(demo_agg.settings, db_path=demo_agg.db_path).test_client()
    r = login(stranger)
    assert r.status_code == 429 and "Too many failed logins" in r.get_data(as_text=True)
    assert login(client).status_code == 303  # the browser that logged in before

    # the cookie names its account, is signed, and says nothing about another account
    cookie = client.get_cookie("aggregator_known_browser", path="/admin")
    assert cookie is not None and cookie.http_only
    stranger.set_cookie("aggregator_known_browser", cookie.value[:-2] + "xx", path="/admin")
    assert login(stranger).status_code == 429
    logout(client)
    set_password(demo_agg.db, "bob", PASSWORD, now)
    failed_guesses_from_everywhere(demo_agg, "bob", now)
    assert login(client, name="bob").status_code == 429


def failed_guesses_from_everywhere(agg: Aggregator, name: str, now: float) -> None:
    from aggregator.accounts import MAX_FAILURES_PER_NAME
    from aggregator.storage import admin as admin_store

    with write_transaction(agg.db):  # as check_login records them, without 100 argon2 hashes
        for n in range(MAX_FAILURES_PER_NAME):
            admin_store.record_attempt(agg.db, name, f"203.0.{n // 250}.{n % 250}", now, False)


def test_the_login_limit_counts_a_long_address(demo_agg: Aggregator, account: str) -> None:
    """Addresses were stored cut to 100 characters but counted uncut, so a longer one
    (a forwarded address is what the client says) was never limited."""
    from aggregator.accounts import MAX_FAILURES_PER_ADDRESS, check_login

    remote = "2001:db8::" + "f" * 120
    names = [f"user{n}" for n in range(MAX_FAILURES_PER_ADDRESS + 2)]  # one guess each
    results = [check_login(demo_agg.db, name, "wrong", remote, time.time()) for name in names]
    assert [r.limited for r in results] == [False] * MAX_FAILURES_PER_ADDRESS + [True] * 2


def test_login_makes_a_new_session_and_logout_ends_it(client: Any, account: str) -> None:
    before = token_of(client.get("/admin/login").get_data(as_text=True))
    assert login(client).status_code == 303
    page = client.get("/admin/").get_data(as_text=True)
    after = token_of(page)
    assert after != before
    assert "alice" in text_of(page)
    r = client.post("/admin/logout", data={"csrf_token": after})
    assert r.status_code == 303 and r.headers["Location"] == "/admin/login"
    assert "You are logged out." in client.get("/admin/login").get_data(as_text=True)
    assert client.get("/admin/").status_code == 303


def test_logging_out_ends_a_copied_session_too(client: Any, web_app: Any, account: str) -> None:
    """A session cookie copied before the logout (a shared computer, a stolen cookie)
    stayed valid for its 8 hours."""
    login(client)
    token = token_of(client.get("/admin/").get_data(as_text=True))
    copied = web_app.test_client()
    cookie = client.get_cookie("aggregator_admin", path="/admin")
    copied.set_cookie("aggregator_admin", cookie.value, path="/admin")
    assert copied.get("/admin/settings").status_code == 200
    client.post("/admin/logout", data={"csrf_token": token})
    assert copied.get("/admin/settings").status_code == 303
    assert login(client).status_code == 303 and client.get("/admin/settings").status_code == 200


def test_removing_an_account_ends_its_sessions(client: Any, demo_agg: Aggregator, account: str) -> None:
    from aggregator.accounts import remove_account

    login(client)
    assert client.get("/admin/settings").status_code == 200
    assert remove_account(demo_agg.db, "alice") and not remove_account(demo_agg.db, "alice")
    assert client.get("/admin/settings").status_code == 303


def test_login_returns_to_the_page_asked_for_but_only_inside_the_admin(client: Any, account: str) -> None:
    r = client.get("/admin/rules?x=1")
    assert r.headers["Location"] == "/admin/login?next=/admin/rules?x%3D1"
    assert login(client, next="/admin/rules?x=1").headers["Location"] == "/admin/rules?x=1"
    for evil in ("https://evil.example/", "//evil.example/admin", "/admin/../x", "/\\evil.example"):
        client.post(
            "/admin/logout", data={"csrf_token": token_of(client.get("/admin/").get_data(as_text=True))}
        )
        assert login(client, next=evil).headers["Location"] == "/admin/", evil


def test_sessions_end_after_their_lifetime_and_when_the_password_changes(
    client: Any, demo_agg: Aggregator, account: str
) -> None:
    login(client)
    assert client.get("/admin/").status_code == 200
    with client.session_transaction("/admin/") as s:
        s["login_at"] = time.time() - 9 * 3600
    r = client.get("/admin/")
    assert r.status_code == 303
    assert "Your session has ended" in client.get(r.headers["Location"]).get_data(as_text=True)
    login(client)
    assert client.get("/admin/").status_code == 200
    set_password(demo_agg.db, "alice", PASSWORD + "!", time.time())
    assert client.get("/admin/").status_code == 303


# -- settings, previews, apply, revert ------------------------------------------------------


def test_the_settings_form_shows_every_admin_setting_with_its_documentation(admin: Admin) -> None:
    page = admin.get("/admin/settings")
    admin_defs = [d for d in definitions() if d.admin]
    assert {d.section for d in admin_defs} == {"cluster"}
    assert "<legend>[cluster]</legend>" in page
    for d in admin_defs:
        assert f'name="{d.key}"' in page, d.key
        assert str(escape(d.doc)) in page, d.key
        assert f"default: {shown(d.default)}" in htmllib.unescape(page), d.key
    assert 'name="cluster.num_perm" type="text" inputmode="decimal" value="128"' in page
    assert "16 to 512" in page  # its range
    assert "one of earliest, most_complete, preferred" in page
    for d in definitions():
        if not d.admin:
            assert f'name="{d.key}"' not in page, d.key


def test_bad_settings_get_clear_errors_and_start_nothing(admin: Admin, demo_agg: Aggregator) -> None:
    r = admin.post(
        "/admin/preview",
        {
            "cluster.join_threshold_long": "lots",
            "cluster.num_perm": "9",
            "cluster.canonical_policy": "loudest",
            "hours": "0",
        },
        status=400,
    )
    page = r.get_data(as_text=True)
    text = text_of(page)
    assert "4 settings need fixing" in text
    assert "cluster.join_threshold_long: expected a number, got 'lots'" in htmllib.unescape(text)
    assert "9 is below the minimum 16" in text
    assert "is not one of earliest, most_complete, preferred" in text
    assert "the period must be between 1 and 8760 hours" in text
    assert 'value="lots" size="12" aria-describedby="s-cluster.join_threshold_long-doc' in page  # kept
    assert 'aria-invalid="true"' in page
    # settings that are fine one by one but not together
    r = admin.post(
        "/admin/preview", {"cluster.lsh_bands": "64", "cluster.lsh_rows": "4", "hours": "72"}, status=400
    )
    assert "may not exceed num_perm (128)" in text_of(r.get_data(as_text=True))
    # a setting admins may not change is not even read
    r = admin.post("/admin/preview", {"fetch.max_bytes": "5", "hours": "72"}, status=200)
    assert "Nothing to preview" in r.get_data(as_text=True)
    assert demo_agg.jobs() == []


def test_a_job_page_refreshes_itself_until_the_job_ends(admin: Admin, demo_agg: Aggregator) -> None:
    job_id = jobs_store.create(
        demo_agg.db, "preview", {"changes": LOWER, "hours": 72.0}, "alice", time.time()
    )
    jobs_store.update(demo_agg.db, job_id, time.time(), state="running", done=30, total=88)
    page = admin.get(f"/admin/jobs/{job_id}")
    assert '<meta http-equiv="refresh" content="2">' in page
    assert '<progress max="100" value="34"' in page and "30 of 88" in page
    assert "Preview of the last 3 days" in text_of(page)
    jobs_store.update(demo_agg.db, job_id, time.time(), state="failed", message="SettingsError: nope")
    page = admin.get(f"/admin/jobs/{job_id}")
    assert "http-equiv" not in page and "SettingsError: nope" in page
    # a job whose process died stops refreshing too
    stuck = jobs_store.create(demo_agg.db, "recluster", {}, "alice", time.time() - 3600)
    page = admin.get(f"/admin/jobs/{stuck}")
    assert "http-equiv" not in page and "stalled" in page
    assert admin.get("/admin/jobs/999", status=404)


def preview(admin: Admin, agg: Aggregator, changes: dict[str, str], hours: str = MONTH) -> tuple[int, str]:
    r = admin.post("/admin/preview", {**changes, "hours": hours})
    job_id = job_id_of(r)
    job = wait_job(agg, job_id)
    assert job.state == "done", job.message
    return job_id, admin.get(f"/admin/jobs/{job_id}")


def test_a_job_whose_process_is_gone_blocks_nothing(admin: Admin, demo_agg: Aggregator) -> None:
    """A restart left a re-clustering "running": corrections and settings changes were
    refused, and its page refreshed itself, for ten minutes."""
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is no process now
    job = jobs_store.create(
        demo_agg.db, "recluster", {}, "bob", time.time(), owner=f"{socket.gethostname()}:{gone.pid}"
    )
    elsewhere = jobs_store.create(demo_agg.db, "recluster", {}, "bob", time.time(), owner="other-host:1")
    assert demo_agg.job(job).state == "interrupted"  # type: ignore[union-attr]
    page = admin.get(f"/admin/jobs/{job}")
    assert "http-equiv" not in page and "the process running it stopped" in page
    assert demo_agg.job(elsewhere).state == "queued"  # type: ignore[union-attr]  # another host's: its own
    jobs_store.update(demo_agg.db, elsewhere, time.time(), state="done")
    seed = demo_agg.cluster(seed_story(demo_agg))
    assert seed is not None
    r = admin.post(f"/admin/items/{seed.members[-1].id}/pin")
    assert "is now the canonical item of its story" in admin.follow(r)


def test_previews_at_once_are_few_and_a_double_submit_is_the_same_one(
    admin: Admin, demo_agg: Aggregator
) -> None:
    """Each preview re-clusters its period in memory: twelve submits ran twelve at once."""
    for n in range(2):  # two running elsewhere
        jobs_store.create(demo_agg.db, "preview", {"changes": {"x": n}}, "bob", time.time())
    r = admin.post("/admin/preview", {**LOWER, "hours": MONTH}, status=409)
    assert "Not now: 2 previews are running: wait for one to end." in text_of(r.get_data(as_text=True))
    for job in demo_agg.jobs():
        jobs_store.update(demo_agg.db, job.id, time.time(), state="done")
    params = {"changes": {"cluster.join_threshold_long": "0.3"}, "hours": 24.0, "base_version": 0}
    first = demo_agg.start_job("preview", params, "alice")
    wait_job(demo_agg, first)
    queued = jobs_store.create(demo_agg.db, "preview", params, "alice", time.time())  # as if still running
    assert demo_agg.start_job("preview", params, "alice") == queued


def test_a_preview_compares_with_the_stories_stored_now(admin: Admin, demo_agg: Aggregator) -> None:
    """Applying re-clusters every item: where the stored stories differ from what a
    re-clustering makes, applying changes them whatever the settings.  The preview
    compared two re-clusterings, and said "no change" for a change that split a story."""
    seed = seed_story(demo_agg)
    detail = demo_agg.cluster(seed)
    assert detail is not None and len(detail.members) >= 2
    moved = detail.members[-1]
    with write_transaction(demo_agg.db) as db:  # as live clustering might have left it
        alone = clusters_store.create(db, time.time())
        clusters_store.add_member(db, moved.id, alone, 0.0, "new", None, time.time())
        demo_agg.pipeline.refresh_clusters({seed, alone}, time.time())
    _, page = preview(admin, demo_agg, {"cluster.join_threshold_long": "0.41"})
    text = text_of(page)
    m = re.search(r"Stories that would merge \((\d+)\)", text)
    assert m and int(m.group(1)) >= 1
    assert moved.title in text


def test_a_settings_form_from_before_another_change_does_not_undo_it(
    admin: Admin, demo_agg: Aggregator
) -> None:
    """The form posts every setting as it was shown: Alice's old form, submitted after
    Bob applied a change, proposed Bob's setting back to what it was."""
    form = admin.get("/admin/settings")
    assert 'name="form_version" value="0"' in form
    demo_agg.apply_settings({"cluster.join_threshold_long": "0.3"}, "bob")  # version 1, meanwhile
    values = {
        "cluster.join_threshold_long": "0.4",
        "cluster.join_threshold_short": "0.05",
    }  # as shown, one edit
    r = admin.post("/admin/preview", {**values, "hours": MONTH, "form_version": "0"}, status=409)
    page = r.get_data(as_text=True)
    assert "The settings changed while you edited them (version 1 is in force now)" in text_of(page)
    assert 'name="form_version" value="1"' in page and 'value="0.3"' in page
    assert 'value="0.05"' in page and "with your own changes kept" in text_of(page)  # hers, kept
    assert all(j.kind != "preview" for j in demo_agg.jobs(limit=10))  # nothing was started
    # both changed the same setting: hers is shown, and flagged
    r = admin.post(
        "/admin/preview",
        {**values, "cluster.join_threshold_long": "0.35", "hours": MONTH, "form_version": "0"},
        status=409,
    )
    both = r.get_data(as_text=True)
    assert 'value="0.35"' in both and "Another admin changed cluster.join_threshold_long too" in text_of(both)

    job_id, _ = preview(
        admin, demo_agg, {**values, "cluster.join_threshold_long": "0.3", "form_version": "1"}
    )
    assert demo_agg.job(job_id).params["changes"] == {"cluster.join_threshold_short": "0.05"}  # type: ignore[union-attr]


def test_an_untouched_list_setting_is_not_taken_for_an_edit(admin: Admin, demo_agg: Aggregator) -> None:
    """Browsers send a textarea's lines with CRLF: an untouched list of sources counted
    as the admin's edit, and the form put back what another admin had replaced."""
    demo_agg.apply_settings({"cluster.preferred_sources": ["Alpha", "Beta"]}, "carol")  # version 1
    assert 'name="form_version" value="1"' in admin.get("/admin/settings")
    demo_agg.apply_settings({"cluster.preferred_sources": ["Gamma"]}, "bob")  # version 2, meanwhile
    values = {"cluster.preferred_sources": "Alpha\r\nBeta", "cluster.join_threshold_short": "0.05"}
    r = admin.post("/admin/preview", {**values, "hours": MONTH, "form_version": "1"}, status=409)
    page = r.get_data(as_text=True)
    assert "Another admin changed" not in text_of(page) and 'value="0.05"' in page
    assert ">Gamma</textarea>" in page


def test_preview_shows_a_merge_when_the_threshold_is_lowered(admin: Admin, demo_agg: Aggregator) -> None:
    before = state(demo_agg)
    job_id, page = preview(admin, demo_agg, LOWER)
    text = text_of(page)
    assert "http-equiv" not in page
    assert "cluster.join_threshold_long 0.4 0.02" in text and "cluster.join_threshold_short 0.1 0.01" in text
    assert "Items replayed 44" in text
    m = re.search(r"Stories now \(as stored\) (\d+) Stories with the proposed settings (\d+)", text)
    assert m and int(m.group(2)) < int(m.group(1))
    m = re.search(r"Stories that would merge \((\d+)\)", text)
    assert m and int(m.group(1)) >= 1
    assert "would become one" in text
    # examples to click through: the public and the admin page of each story involved
    stories = set(re.findall(r'href="/story/(\d+)"', page))
    assert stories and all(demo_agg.cluster(int(s)) is not None for s in stories)
    assert {f"/admin/story/{s}" for s in stories} <= set(re.findall(r'href="(/admin/story/\d+)"', page))
    seed = demo_agg.cluster(seed_story(demo_agg))
    assert seed is not None and str(escape(seed.summary.canonical.title)) in page
    assert "No labeled pairs in this period" in text
    assert f'name="preview" value="{job_id}"' in page and "Apply these settings" in text
    after = state(demo_agg)
    assert after[:4] == before[:4] and after[5:] == before[5:]  # a preview changes no story


def test_apply_then_revert(admin: Admin, demo_agg: Aggregator) -> None:
    demo_agg.recluster()  # the baseline: the whole archive clustered again
    original = groups(demo_agg)
    preview_id, _ = preview(admin, demo_agg, LOWER)
    r = admin.post("/admin/apply", {"preview": preview_id, "note": "  try   lower  "})
    apply_id = job_id_of(r)
    assert apply_id != preview_id
    job = wait_job(demo_agg, apply_id)
    assert job.state == "done" and job.result == {"version": 1}, job.message
    page = text_of(admin.get(f"/admin/jobs/{apply_id}"))
    assert "Settings version 1 is now in force" in page and f"From preview #{preview_id}: “try lower”" in page
    assert len(groups(demo_agg)) < len(original)
    # the settings form shows what is in force
    form = admin.get("/admin/settings")
    assert 'name="cluster.join_threshold_long" type="text" inputmode="decimal" value="0.02"' in form
    assert "In force: settings version 1" in text_of(form)
    history = text_of(admin.get("/admin/history"))
    assert "Version 1 in force by alice" in history and "“try lower”" in history
    assert "cluster.join_threshold_long 0.4 0.02" in history
    assert "cluster.join_threshold_long = 0.02" in history
    # the same preview cannot be applied twice: the settings changed since
    r = admin.post("/admin/apply", {"preview": preview_id})
    assert "The settings changed since this preview" in admin.follow(r)
    assert len(demo_agg.jobs()) == 2
    # back to config.toml: the history links to a page that asks first, showing what changes
    # (one click re-grouped every story)
    assert 'href="/admin/revert?version=0"' in admin.get("/admin/history")
    ask = admin.get("/admin/revert?version=0")
    assert "cluster.join_threshold_long 0.02 0.4" in text_of(ask) and 'name="version" value="0"' in ask
    assert len(demo_agg.jobs()) == 2 and demo_agg.admin_overrides() != {}  # (asking changes nothing)
    admin.get("/admin/revert?version=99", status=404)
    admin.get("/admin/revert?version=x", status=400)
    revert_id = job_id_of(admin.post("/admin/revert", {"version": 0}))
    assert wait_job(demo_agg, revert_id).state == "done"
    assert "Back to config.toml alone" in text_of(admin.get(f"/admin/jobs/{revert_id}"))
    with Aggregator(demo_agg.base_settings, db_path=demo_agg.db_path) as fresh:
        assert fresh.settings.cluster.join_threshold_long == 0.40
        assert fresh.admin_overrides() == {}
    assert groups(demo_agg) == original
    history = text_of(admin.get("/admin/history"))
    assert "Version 2 in force by alice" in history and "revert to version 0" in history
    assert "cluster.join_threshold_long 0.02 0.4" in history
    # and to version 1 again
    ask = admin.get("/admin/revert?version=1")
    assert "Revert to version 1?" in ask and "cluster.join_threshold_long 0.4 0.02" in text_of(ask)
    again = job_id_of(admin.post("/admin/revert", {"version": 1}))
    assert wait_job(demo_agg, again).state == "done"
    latest = demo_agg.settings_history()[0]
    assert latest.id == 3 and latest.reverts == 1 and latest.overrides["cluster.join_threshold_long"] == 0.02
    assert 'aria-label="Revert to version 3…"' not in admin.get("/admin/history")  # the one in force
    assert 'aria-label="Revert to version 2…"' in admin.get("/admin/history")
    admin.post("/admin/revert", {"version": 99}, status=404)


def test_only_one_reclustering_job_at_a_time(admin: Admin, demo_agg: Aggregator) -> None:
    jobs_store.create(demo_agg.db, "recluster", {}, "bob", time.time())  # "running" elsewhere
    for _ in range(25):  # however many previews came after it
        job = jobs_store.create(demo_agg.db, "preview", {}, "bob", time.time())
        jobs_store.update(demo_agg.db, job, time.time(), state="done")
    r = admin.post("/admin/recluster")
    assert "another settings change or recluster is still running" in admin.follow(r)
    r = admin.post("/admin/revert", {"version": 0})
    assert "Not now" in admin.follow(r)
    assert len(demo_agg.jobs(limit=100)) == 26


# -- corrections -----------------------------------------------------------------------------


def test_corrections_survive_a_recluster(admin: Admin, demo_agg: Aggregator) -> None:
    seed_id = seed_story(demo_agg)
    detail = demo_agg.cluster(seed_id)
    assert detail is not None and len(detail.members) >= 2
    page = admin.get(f"/admin/story/{seed_id}")
    for m in detail.members:
        assert f'action="/admin/items/{m.id}/move-out"' in page
        assert str(escape(m.title)) in page
    moved, partner = detail.members[0], detail.members[1]
    rows = list(demo_agg.export_rows())
    lone = next(r for r in rows if "Tasmania" in r["title"] or "whale" in r["title"].lower())
    # 1. move an item out of its story
    r = admin.post(f"/admin/items/{moved.id}/move-out")
    assert r.headers["Location"] == f"/admin/story/{seed_id}"
    new = cluster_of(demo_agg, moved.id)
    assert new != cluster_of(demo_agg, partner.id)
    shown_title = str(escape(moved.title[:119] + "…" if len(moved.title) > 120 else moved.title))
    assert f'Moved “{shown_title}” out into <a href="/admin/story/{new}">story #{new}</a>' in admin.follow(r)
    # 2. merge another story into the partner's: the story page's form asks first
    target, source = cluster_of(demo_agg, partner.id), lone["cluster_id"]
    form = admin.get(f"/admin/story/{target}")
    assert f'<form class="row" method="get" action="/admin/story/{target}/merge">' in form
    confirm = admin.get(f"/admin/story/{target}/merge?other=%23{source}")
    assert "Merge these two stories?" in confirm and f'name="other" value="{source}"' in confirm
    assert escape(lone["title"]) in confirm and f"Story #{target}" in confirm
    assert cluster_of(demo_agg, lone["item_id"]) == source  # asking changes nothing
    for wrong, why in ((str(target), "it is this story"), ("999999", "there is no such story")):
        r = admin.client.get(f"/admin/story/{target}/merge?other={wrong}")
        assert r.status_code == 303 and f"Cannot merge story #{wrong}: {why}." in admin.follow(r)
    admin.get(f"/admin/story/{target}/merge?other=soon", status=400)
    r = admin.post(f"/admin/story/{target}/merge", {"other": f"#{source}"})
    assert f"Story #{source} is now part of this story" in admin.follow(r)
    assert cluster_of(demo_agg, lone["item_id"]) == target
    # 3. pin the canonical item
    admin.post(f"/admin/items/{lone['item_id']}/pin")
    detail = demo_agg.cluster(target)
    assert detail is not None and detail.summary.canonical.id == lone["item_id"]
    assert "pinned" in admin.get(f"/admin/story/{target}")
    rules = text_of(admin.get("/admin/rules"))
    for kind in ("same story", "different stories", "canonical item"):
        assert kind in rules
    # a re-clustering asks first, then keeps every correction
    assert 'href="/admin/recluster"' in admin.get("/admin/")
    ask = text_of(admin.get("/admin/recluster"))
    assert "Re-cluster everything?" in ask and "3 correction rules" in ask
    assert (
        f"Every stored item ({demo_agg.counts()['items']:,})" in ask and "The last re-clustering" not in ask
    )
    assert [r.id for r in demo_agg.correction_rules()] and cluster_of(demo_agg, lone["item_id"]) == target
    job_id = job_id_of(admin.post("/admin/recluster"))
    assert wait_job(demo_agg, job_id).state == "done"
    assert "reclustered 44 items" in admin.get(f"/admin/jobs/{job_id}")
    assert f"The last re-clustering, job #{job_id} " in text_of(admin.get("/admin/recluster"))
    assert cluster_of(demo_agg, moved.id) != cluster_of(demo_agg, partner.id)
    merged = cluster_of(demo_agg, lone["item_id"])
    assert merged == cluster_of(demo_agg, partner.id)
    detail = demo_agg.cluster(merged)
    assert detail is not None and detail.summary.canonical.id == lone["item_id"]
    # the corrections are labeled pairs for previews
    _, page = preview(admin, demo_agg, LOWER)
    text = text_of(page)
    assert "No labeled pairs" not in text
    assert re.search(r"Precision \d\.\d{3} \d\.\d{3} Recall \d\.\d{3} \d\.\d{3} F1", text)
    # bad corrections are clear errors
    r = admin.post(f"/admin/story/{merged}/merge", {"other": str(merged)})
    assert "Cannot merge: a story cannot be merged with itself." in admin.follow(r)
    r = admin.post(f"/admin/story/{merged}/merge", {"other": "999999"})
    assert "Cannot merge: no such story." in admin.follow(r)
    admin.post(f"/admin/story/{merged}/merge", {"other": "soon"}, status=400)
    admin.post("/admin/items/999999/move-out", status=404)
    r = admin.post(f"/admin/items/{moved.id}/move-out")
    assert "already alone in its story" in admin.follow(r)


def test_deleting_a_rule(admin: Admin, demo_agg: Aggregator) -> None:
    seed_id = seed_story(demo_agg)
    detail = demo_agg.cluster(seed_id)
    assert detail is not None
    admin.post(f"/admin/items/{detail.members[-1].id}/pin")
    (rule,) = demo_agg.correction_rules()
    page = admin.get("/admin/rules")
    # The list links to a page that asks first: one click deleted an admin's correction.
    assert f'href="/admin/rules/{rule.id}/delete"' in page and "action=" not in page.split("<table")[1]
    ask = admin.get(f"/admin/rules/{rule.id}/delete")
    assert (
        f"Delete rule #{rule.id}?" in ask
        and "Canonical item" in ask
        and f'action="/admin/rules/{rule.id}/delete"' in ask
    )
    assert "chooses its canonical item again" in ask and str(escape(detail.members[-1].title)) in ask
    assert demo_agg.correction_rules() == [rule]  # (asking deletes nothing)
    admin.get("/admin/rules/999999/delete", status=404)
    running = jobs_store.create(demo_agg.db, "recluster", {}, "bob", time.time())
    r = admin.post(f"/admin/rules/{rule.id}/delete")  # (was a 500)
    assert "Cannot delete it: a re-clustering is running" in admin.follow(r)
    jobs_store.update(demo_agg.db, running, time.time(), state="done")
    r = admin.post(f"/admin/rules/{rule.id}/delete")
    assert f"Rule #{rule.id} deleted" in admin.follow(r)
    assert demo_agg.correction_rules() == []
    admin.post(f"/admin/rules/{rule.id}/delete", status=404)


def test_finding_a_story_to_correct(admin: Admin, demo_agg: Aggregator) -> None:
    seed_id = seed_story(demo_agg)
    page = admin.get("/admin/stories?q=Starlink+Taiwan+Musk")
    assert f'href="/admin/story/{seed_id}"' in page
    r = admin.client.get(f"/admin/stories?id=%23{seed_id}")
    assert r.status_code == 303 and r.headers["Location"] == f"/admin/story/{seed_id}"
    admin.get("/admin/stories?id=x", status=400)
    admin.get("/admin/stories?id=%C2%B2", status=400)  # "²" passes str.isdigit, not int()
    admin.get("/admin/story/999999", status=404)
    huge = "99999999999999999999999"  # beyond SQLite's integers: a 404, not a 500
    for path in (f"/admin/story/{huge}", f"/admin/jobs/{huge}", f"/admin/feeds/{huge}/remove"):
        admin.get(path, status=404)
    for path in (f"/admin/items/{huge}/pin", f"/admin/items/{huge}/move-out", f"/admin/feeds/{huge}/pause"):
        admin.post(path, status=404)
    admin.post(f"/admin/story/{huge}/merge", {"other": "1"}, status=404)


# -- feeds ------------------------------------------------------------------------------------


def feed_row(admin: Admin, feed_id: int) -> str:
    """The feeds page's row of one feed."""
    page = admin.get("/admin/feeds")
    row = page[page.index(f'id="feed-{feed_id}"') :]
    return row[: row.index("</tr>")]


def test_feed_management(admin: Admin, demo_agg: Aggregator, feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.routes["/good.xml"] = Route(
        body=rss([{"title": "Harbour cranes stop in strike", "link": "https://t.example/1", "guid": "g1"}]),
        etag='"v1"',
    )
    feed_server.routes["/bad.xml"] = Route(status=500, body=b"oops")
    r = admin.post("/admin/feeds", {"url": feed_server.url("/good.xml"), "title": "Good Feed"})
    assert "Subscribed to Good Feed" in admin.follow(r)
    r = admin.post("/admin/feeds", {"url": feed_server.url("/good.xml")})
    assert "Already subscribed to Good Feed" in admin.follow(r)
    for bad in ("file:///etc/passwd", str(tmp_path / "x.xml"), "ftp://example.org/feed", "", "http://[::1"):
        r = admin.post("/admin/feeds", {"url": bad})
        assert "Cannot add that feed" in admin.follow(r), bad
    good = next(f for f in demo_agg.feeds() if f.title == "Good Feed")
    # poll now
    r = admin.post(f"/admin/feeds/{good.id}/poll")
    assert "Polled Good Feed: ok, 1 new, 0 updated." in admin.follow(r)
    r = admin.post(f"/admin/feeds/{good.id}/poll")
    own = demo_agg.feed(good.id).display_name  # type: ignore[union-attr]  # the feed's own title, once polled
    assert f"Polled {own}: unchanged since the last poll, 0 new, 0 updated." in admin.follow(r)
    # per-feed error state
    admin.post("/admin/feeds", {"url": feed_server.url("/bad.xml"), "title": "Bad Feed"})
    bad = next(f for f in demo_agg.feeds() if f.title == "Bad Feed")
    r = admin.post(f"/admin/feeds/{bad.id}/poll")
    assert "Polled Bad Feed: error" in admin.follow(r)
    row = feed_row(admin, bad.id)
    assert "Failing" in row and "500" in row and "1 failure in a row" in row
    # a feed read leniently: its warning is said, and shown in its row
    feed_server.routes["/lenient.xml"] = Route(
        body=b'<?xml version="1.0"?><rss version="2.0"><channel><title>Lenient</title>'
        b"<item><title>Fish & chips prices rise</title><guid>c1</guid></item></channel></rss>"
    )
    admin.post("/admin/feeds", {"url": feed_server.url("/lenient.xml"), "title": "Lenient"})
    lenient = next(f for f in demo_agg.feeds() if f.title == "Lenient")
    r = admin.post(f"/admin/feeds/{lenient.id}/poll")
    assert "Polled Lenient: ok, 1 new, 0 updated. Warning: malformed feed, read leniently" in admin.follow(r)
    assert "malformed feed, read leniently" in feed_row(admin, lenient.id)
    # its own polling interval: validated, shown, back to automatic
    r = admin.post(f"/admin/feeds/{good.id}/interval", {"minutes": "15"})
    title = demo_agg.feed(good.id).display_name  # type: ignore[union-attr]  # the feed's own, once polled
    assert f"{title} is polled every 15 minutes." in admin.follow(r)
    polled = demo_agg.feed(good.id)
    assert polled is not None and polled.poll_minutes == 15
    assert polled.next_poll_at is not None and polled.last_polled_at is not None
    assert polled.next_poll_at <= polled.last_polled_at + 15 * 60  # sooner from now on
    assert 'value="15"' in admin.get("/admin/feeds")
    for bad, says in (
        ("soon<script>", "“soon&lt;script&gt;” is not a number of minutes"),
        ("0", "the polling interval must be between 5 and 1440 minutes"),
        ("nan", "the polling interval must be between"),
        ("99999", "the polling interval must be between"),
    ):
        r = admin.post(f"/admin/feeds/{good.id}/interval", {"minutes": bad})
        assert says in admin.follow(r), bad
    assert demo_agg.feed(good.id).poll_minutes == 15  # type: ignore[union-attr]
    r = admin.post(f"/admin/feeds/{good.id}/interval", {"minutes": ""})
    assert f"{title} is polled automatically." in admin.follow(r)
    assert demo_agg.feed(good.id).poll_minutes is None  # type: ignore[union-attr]
    admin.post("/admin/feeds/999999/interval", {"minutes": "10"}, status=404)
    # pause and resume
    admin.post(f"/admin/feeds/{good.id}/pause", {"paused": "1"})
    assert demo_agg.feed(good.id).paused  # type: ignore[union-attr]
    assert "(paused)" in admin.get("/admin/feeds")
    admin.post(f"/admin/feeds/{good.id}/pause", {"paused": "0"})
    assert not demo_agg.feed(good.id).paused  # type: ignore[union-attr]
    # remove, after a confirmation page
    name = demo_agg.feed(good.id).display_name  # type: ignore[union-attr]
    confirm = admin.get(f"/admin/feeds/{good.id}/remove")
    assert f"Remove {name}?" in confirm and "1 item" in text_of(confirm)
    # not while a re-clustering runs: its swap would fail on the removed items' rules
    running = jobs_store.create(demo_agg.db, "recluster", {}, "bob", time.time())
    r = admin.post(f"/admin/feeds/{good.id}/remove")
    assert "Cannot remove it now: a re-clustering is running" in admin.follow(r)
    jobs_store.update(demo_agg.db, running, time.time(), state="done")
    r = admin.post(f"/admin/feeds/{good.id}/remove")
    assert f"Removed {name} and its items." in admin.follow(r)
    assert demo_agg.feed(good.id) is None
    admin.post(f"/admin/feeds/{good.id}/remove", status=404)
    admin.get(f"/admin/feeds/{good.id}/remove", status=404)


def test_poll_now_is_left_to_the_poller_when_one_runs(
    admin: Admin, demo_agg: Aggregator, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed_server.routes["/good.xml"] = Route(
        body=rss([{"title": "Harbour cranes stop in strike", "link": "https://t.example/1", "guid": "g1"}])
    )
    feed, _ = demo_agg.add_feed(feed_server.url("/good.xml"), "Good Feed")
    demo_agg.heartbeat()  # a poller runs, but is busy: nothing takes the request
    monkeypatch.setattr(core, "POLL_NOW_WAIT_SECONDS", 0.5)
    r = admin.post(f"/admin/feeds/{feed.id}/poll")
    assert "Good Feed will be polled when the poller ends its current round" in admin.follow(r)
    assert "asked to poll now" in feed_row(admin, feed.id)
    # the poller (here a thread with its own connection) takes it
    polled: list[UpdateReport] = []
    stop = threading.Event()

    def poller() -> None:
        with Aggregator(demo_agg.base_settings, db_path=demo_agg.db_path) as agg:
            while not stop.wait(0.05):
                agg.heartbeat()
                if agg.poll_requested():
                    polled.extend(agg.update())

    thread = threading.Thread(target=poller)
    thread.start()
    try:
        monkeypatch.setattr(core, "POLL_NOW_WAIT_SECONDS", 30.0)
        r = admin.post(f"/admin/feeds/{feed.id}/poll")  # asked again: still one request
        assert "Polled Good Feed: ok, 1 new, 0 updated." in admin.follow(r)
    finally:
        stop.set()
        thread.join(10)
    assert [p.feed_url for p in polled] == [feed.url]  # polled once, by the poller
    assert demo_agg.feed(feed.id).poll_requested_at is None  # type: ignore[union-attr]


def test_opml_export_and_import(admin: Admin, demo_agg: Aggregator, feed_server: FeedServer) -> None:
    r = admin.client.get("/admin/feeds/export.opml")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert (
        r.headers["Content-Type"].startswith("text/x-opml")
        and "attachment" in r.headers["Content-Disposition"]
    )
    exported = r.get_data(as_text=True)
    assert exported.count("<outline") >= len(demo_agg.feeds())
    opml = f"""<?xml version="1.0"?><opml version="2.0"><head><title>t</title></head><body>
      <outline type="rss" text="Served" xmlUrl="{feed_server.url("/served.xml")}"/>
      <outline type="rss" text="Local" xmlUrl="file:///etc/passwd"/>
    </body></opml>""".encode()
    r = admin.post(
        "/admin/feeds/import",
        {"opml": (io.BytesIO(opml), "feeds.opml")},
        content_type="multipart/form-data",
    )
    page = text_of(admin.follow(r))
    assert "Imported 1 new feed." in page and "Skipped: not an http(s) URL: file:///etc/passwd" in page
    assert not any(f.url.startswith("file:") and "passwd" in f.url for f in demo_agg.feeds())
    r = admin.post(
        "/admin/feeds/import",
        {"opml": (io.BytesIO(b"not xml"), "x.opml")},
        content_type="multipart/form-data",
    )
    assert "Cannot import that file" in admin.follow(r)
    r = admin.post("/admin/feeds/import", {}, content_type="multipart/form-data")
    assert "Choose an OPML file" in admin.follow(r)


# -- every admin page: no script, nothing from a feed gets through -----------------------------


def test_admin_pages_have_nothing_that_could_run(hostile: Aggregator) -> None:
    agg = hostile
    client = create_app(agg.settings).test_client()
    set_password(agg.db, "alice", PASSWORD, time.time())
    admin = Admin(client)
    (story,) = agg.clusters()
    (feed,) = agg.feeds()
    admin.post(f"/admin/items/{story.canonical.id}/pin")
    job_id, _ = preview(admin, agg, LOWER, hours="8760")
    pages = [
        "/admin/",
        "/admin/settings",
        "/admin/history",
        "/admin/jobs",
        f"/admin/jobs/{job_id}",
        "/admin/stories",
        f"/admin/story/{story.id}",
        "/admin/rules",
        "/admin/feeds",
        f"/admin/feeds/{feed.id}/remove",
    ]
    for url in pages:
        page = admin.get(url)
        assert audit(page) == [], url
        assert "<script" not in page.lower(), url
    client.post("/admin/logout", data={"csrf_token": admin.token})
    assert audit(client.get("/admin/login").get_data(as_text=True)) == []


@pytest.fixture
def hostile(agg: Aggregator, feed_server: FeedServer) -> Aggregator:
    """A database with one hostile feed's item (scripts, handlers, javascript: links)."""
    feed_server.routes["/hostile.xml"] = Route(body=hostile_feed())
    agg.add_feed(feed_server.url("/hostile.xml"))
    (report,) = agg.update()
    assert report.status == "ok"
    return agg


@pytest.mark.parametrize("proxies", [0, 1])
def test_the_login_rate_limit_counts_the_client_behind_a_trusted_proxy(
    demo_agg: Aggregator, account: str, proxies: int
) -> None:
    from aggregator.storage import admin as admin_store

    settings = demo_agg.settings.replace({"web.trusted_proxies": proxies})
    client = create_app(settings, db_path=demo_agg.db_path).test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    token = token_of(client.get("/admin/login", headers=forwarded).get_data(as_text=True))
    r = client.post(
        "/admin/login",
        data={"csrf_token": token, "name": "mallory", "password": "not the password"},
        headers=forwarded,
    )
    assert r.status_code == 401
    from_client = admin_store.failures_since(
        demo_agg.db, name="mallory", remote="203.0.113.9", since=0
    ).by_remote
    from_proxy = admin_store.failures_since(
        demo_agg.db, name="mallory", remote="127.0.0.1", since=0
    ).by_remote
    # Believed only when the configuration says a proxy is there; else anyone could pick an address.
    assert (from_client, from_proxy) == ((1, 0) if proxies else (0, 1))


def test_an_admin_form_error_leads_back_to_the_form(admin: Admin, demo_agg: Aggregator) -> None:
    """A bad number in an admin form showed the public error page, whose only link led
    to the front page."""
    story = demo_agg.clusters(limit=1)[0].id
    came_from = f"http://localhost/admin/story/{story}"
    r = admin.client.post(
        f"/admin/story/{story}/merge",
        data={"csrf_token": admin.token, "other": "soon"},
        headers={"Referer": came_from},
    )
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "“other” must be a whole number." in page
    assert f'<a href="/admin/story/{story}">Back to the page you came from</a>' in page
    elsewhere = admin.client.post(
        f"/admin/story/{story}/merge",
        data={"csrf_token": admin.token, "other": "soon"},
        headers={"Referer": "https://evil.example/admin/x"},
    )
    assert '<a href="/admin/">Back to the page you came from</a>' in elsewhere.get_data(as_text=True)
    public = admin.client.get("/?page=0").get_data(as_text=True)
    assert "Back to the latest stories" in public and "Back to the page you came from" not in public


def test_corrections_come_a_page_at_a_time(admin: Admin, demo_agg: Aggregator) -> None:
    """Every rule on one page: 30,000 rules made a 19 MB page that took 2.6 s, and each
    story's admin page read them all to find its own."""
    from aggregator.storage import rules as rules_store
    from web.admin import RULES_PER_PAGE

    items = [r["item_id"] for r in demo_agg.export_rows()]
    pairs = [(a, b) for a in items for b in items if a < b][: RULES_PER_PAGE + 30]
    with write_transaction(demo_agg.db):
        rules_store.add(demo_agg.db, "cannot", pairs, "alice", time.time())
    newest = demo_agg.correction_rules(limit=1)[0]
    first = admin.get("/admin/rules")
    assert first.count('<tr id="rule-') == RULES_PER_PAGE and f'id="rule-{newest.id}"' in first
    assert 'href="/admin/rules?page=2"' in first
    second = admin.get("/admin/rules?page=2")
    assert second.count('<tr id="rule-') == len(pairs) - RULES_PER_PAGE
    admin.get("/admin/rules?page=3", status=404)
    story = demo_agg.cluster(demo_agg.clusters(limit=1)[0].id)
    assert story is not None
    ids = {m.id for m in story.members}
    expected = {r.id for r in demo_agg.correction_rules() if r.item_a in ids or r.item_b in ids}
    assert {r.id for r in demo_agg.rules_for_items(ids)} == expected and expected


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.2, "1 second"),
        (40, "40 seconds"),
        (89.4, "89 seconds"),
        (95, "2 minutes"),
        (59 * 60, "59 minutes"),
        (3600, "1 hour"),
        (80 * 60, "1 hour 20 minutes"),
        (3 * 3600 + 60, "3 hours 1 minute"),
    ],
)
def test_how_long_a_job_took_in_words(seconds: float, said: str) -> None:
    assert took(seconds) == said


def test_checked_items_move_out_together_and_stay_so(admin: Admin, demo_agg: Aggregator) -> None:
    """A wrong merge undone from the story's page: the items checked leave together for a
    new story, which re-clustering keeps (together, and apart from the items left)."""
    target = seed_story(demo_agg)
    whale = next(r for r in demo_agg.export_rows() if "whale" in r["title"].lower())
    source = whale["cluster_id"]
    demo_agg.merge_clusters(target, source, "alice")
    merged = demo_agg.cluster(target)
    assert merged is not None and len(merged.members) >= 3
    page = admin.get(f"/admin/story/{target}")
    assert f'<form id="split-form" class="row" method="post" action="/admin/story/{target}/split">' in page
    for m in merged.members:
        assert f'name="item" value="{m.id}" form="split-form"' in page
    stay = [m.id for m in merged.members if m.id != whale["item_id"]]
    taken = [whale["item_id"], stay.pop()]  # the whale's item and one item of the story it joined
    # wrong choices change nothing
    for chosen, said in (
        ([], "Check the items to move out first."),
        ([m.id for m in merged.members], "Cannot move them out: every item of the story was chosen."),
        ([taken[0], 999999], "Cannot move them out: item 999999 is not in this story."),
    ):
        r = admin.post(f"/admin/story/{target}/split", {"item": [str(i) for i in chosen]})
        assert said in text_of(admin.follow(r))
    admin.post(f"/admin/story/{target}/split", {"item": ["two"]}, status=400)
    admin.post("/admin/story/999999/split", {"item": [str(taken[0])]}, status=404)
    assert cluster_of(demo_agg, taken[0]) == cluster_of(demo_agg, stay[0]) == target
    r = admin.post(f"/admin/story/{target}/split", {"item": [str(i) for i in taken]})
    new = cluster_of(demo_agg, taken[0])
    said = f"Moved 2 items out into story #{new}. Re-clustering will keep them together, and apart from"
    assert said in text_of(admin.follow(r))
    assert new != target and cluster_of(demo_agg, taken[1]) == new
    assert all(cluster_of(demo_agg, i) == target for i in stay)
    job_id = job_id_of(admin.post("/admin/recluster"))
    assert wait_job(demo_agg, job_id).state == "done"
    after = cluster_of(demo_agg, taken[0])
    assert cluster_of(demo_agg, taken[1]) == after
    assert all(cluster_of(demo_agg, i) != after for i in stay)
    assert len({cluster_of(demo_agg, i) for i in stay}) == 1
