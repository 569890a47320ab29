"""Shared fixtures: settings on a temporary folder, a real feed server on 127.0.0.1, demo feeds."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aggregator import Aggregator
from aggregator.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def dev_rows(dataset: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` labeled dev records of ``dataset``, in publication order."""
    lines = (DATA / "eval" / "dev.jsonl").read_text().splitlines()
    recs = [r for r in map(json.loads, lines) if r["dataset"] == dataset]
    return sorted(recs, key=lambda r: r["published"])[:n]


EXAMPLES = ROOT / "examples"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings, with the database in a temporary folder and no demo subscription."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[storage]\ndb_path = "agg.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n',
        encoding="utf-8",
    )
    return load_settings(cfg)


@pytest.fixture
def agg(settings: Settings) -> Iterator[Aggregator]:
    a = Aggregator(settings)
    yield a
    a.close()


@pytest.fixture
def demo_feeds(tmp_path: Path) -> Path:
    """A copy of the bundled demo feeds (tests may edit it)."""
    dest = tmp_path / "examples"
    shutil.copytree(EXAMPLES, dest)
    return dest


# -- a real HTTP server on 127.0.0.1 ------------------------------------------------------


@dataclass
class Route:
    """What the server answers on one path.  ``handler`` may take over entirely."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass
class FeedServer:
    host: str
    port: int
    routes: dict[str, Route]
    requests: list[tuple[str, dict[str, str]]]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]


def _make_handler(server_state: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server_state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server_state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.handler is not None:
                route.handler(self)
                return
            inm = self.headers.get("If-None-Match")
            ims = self.headers.get("If-Modified-Since")
            if (route.etag and inm == route.etag) or (
                route.last_modified and ims == route.last_modified and not route.etag
            ):
                self.send_response(304)
                if route.etag:
                    self.send_header("ETag", route.etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(route.status)
            headers = {"Content-Type": "application/rss+xml; charset=utf-8", **route.headers}
            if route.etag:
                headers["ETag"] = route.etag
            if route.last_modified:
                headers["Last-Modified"] = route.last_modified
            headers.setdefault("Content-Length", str(len(route.body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(route.body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or get killed mid-request are part of the tests


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A threaded HTTP server on 127.0.0.1 whose answers the test sets per path."""
    state = FeedServer("127.0.0.1", 0, {}, [])
    httpd = _QuietServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def rss(items: list[dict[str, str]], title: str = "Test Feed", extra: str = "") -> bytes:
    """A small RSS 2.0 document."""
    from xml.sax.saxutils import escape

    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>https://test.example/</link>",
        "<description>test</description>",
        extra,
    ]
    for it in items:
        parts.append("<item>")
        for key in ("title", "link", "guid", "pubDate", "description"):
            if key in it:
                parts.append(f"<{key}>{escape(it[key])}</{key}>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")


# -- the site: the demo database, the app, a live server and headless Chromium ------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def load_demo(agg: Aggregator, demo: Path) -> None:
    """Subscribe to the demo feeds and poll them once."""
    added, problems = agg.import_opml(demo / "demo.opml")
    assert len(added) == 6 and not problems
    reports = agg.update()
    assert all(r.status == "ok" for r in reports), reports


@pytest.fixture(scope="session")
def demo_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with the demo feeds polled, made once per test process (copy it, don't use it)."""
    folder = tmp_path_factory.mktemp("demo-template")
    shutil.copytree(EXAMPLES, folder / "examples")
    cfg = folder / "config.toml"
    cfg.write_text('[storage]\ndb_path = "agg.db"\n[feeds]\nopml = ""\n', encoding="utf-8")
    with Aggregator(load_settings(cfg)) as a:
        load_demo(a, folder / "examples")
        a.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "agg.db"


@pytest.fixture
def demo_agg(settings: Settings, demo_db_template: Path) -> Iterator[Aggregator]:
    """An aggregator on a fresh copy of the demo database (do not combine with ``agg``)."""
    shutil.copyfile(demo_db_template, settings.db_path)
    a = Aggregator(settings)
    yield a
    a.close()


@pytest.fixture
def web_app(demo_agg: Aggregator) -> Any:
    """The site on the demo database (a Flask app)."""
    from web import create_app

    return create_app(demo_agg.settings, db_path=demo_agg.db_path)


@pytest.fixture
def client(web_app: Any) -> Any:
    return web_app.test_client()


@dataclass
class LiveServer:
    url: str
    app: Any


def serve(app: Any) -> Iterator[LiveServer]:
    """Serve a WSGI app on 127.0.0.1 (a free port) with waitress in a thread until the generator closes.

    Not werkzeug's development server: when a browser resets a connection, its request loop
    skips closing the response (a static file stays open until the garbage collector warns,
    and warnings are errors here). Waitress closes every response, as in production.
    """
    from waitress import wasyncore
    from waitress.channel import HTTPChannel
    from waitress.server import create_server

    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    stop = threading.Event()

    def run() -> None:  # waitress's own loop, in short turns so that it can be stopped
        try:
            while not stop.is_set():
                wasyncore.loop(timeout=0.05, map=server._map, count=1)
        finally:
            server.task_dispatcher.shutdown()
            # A channel's own close leaves its queued responses open (a static file the
            # browser had not finished reading: the garbage collector then warns);
            # handle_close closes them first, as when a client goes away.
            for channel in list(server._map.values()):
                if isinstance(channel, HTTPChannel):
                    channel.handle_close()
            wasyncore.close_all(server._map)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.effective_port}", app)
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture
def live_server(web_app: Any) -> Iterator[LiveServer]:
    """The demo site served on 127.0.0.1."""
    yield from serve(web_app)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (scripts/system-deps.sh)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
