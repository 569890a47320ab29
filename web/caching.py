"""Conditional GET and a page cache: ETag and Last-Modified from a cheap fingerprint, 304 before rendering.

Every public page and merged feed carries an ETag naming its content: the path
and query, the address it was asked on, the start of this app and
:meth:`Aggregator.freshness` (a constant-time fingerprint of everything the
site shows; for a story page, :meth:`Aggregator.story_freshness`, of that story
alone).  Two answers with one ETag have the same body, so each process keeps the
bodies it rendered by ETag (:class:`PageCache`, least recently used out first)
and answers from there until the fingerprint moves: a new story, an outlet
joining one, an edit, a re-clustering, a settings version, a renamed feed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec

from flask import Flask, Response, current_app, make_response, request
from flask.typing import ResponseReturnValue

from aggregator import Aggregator
from web import get_reader

__all__ = ["CachedPage", "PageCache", "SharedPages", "conditional", "page_cache"]

P = ParamSpec("P")

# How long a request waits for another thread rendering the same page before rendering it too.
WAIT_FOR_RENDER_SECONDS = 10.0
# Bodies larger than this are never kept.
MAX_PAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class CachedPage:
    body: bytes
    headers: tuple[tuple[str, str], ...]


class SharedPages:
    """Rendered pages shared by the processes serving one database: an SQLite file beside it.

    gunicorn runs one worker process per core; without this, each renders every
    page once per change.  A throw-away cache: WAL, no fsync, one connection per
    thread, entries over ``max_bytes`` (oldest first) or older than an hour
    dropped as it fills.  Any error reading or writing it is a cache miss.
    """

    MAX_AGE_SECONDS = 3600.0
    PRUNE_EVERY = 64  # puts

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._puts = 0

    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=2.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pages (key TEXT PRIMARY KEY, body BLOB NOT NULL, "
                "headers TEXT NOT NULL, stored REAL NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS pages_stored ON pages (stored)")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> CachedPage | None:
        try:
            row = self._db().execute("SELECT body, headers FROM pages WHERE key = ?", [key]).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        return CachedPage(bytes(row[0]), tuple((k, v) for k, v in json.loads(row[1])))

    def put(self, key: str, page: CachedPage) -> None:
        try:
            db = self._db()
            db.execute(
                "INSERT OR REPLACE INTO pages (key, body, headers, stored) VALUES (?, ?, ?, ?)",
                [key, page.body, json.dumps(page.headers), time.time()],
            )
            self._puts += 1
            if self._puts % self.PRUNE_EVERY == 0:
                self.prune(db)
        except sqlite3.Error:
            pass

    def prune(self, db: sqlite3.Connection) -> None:
        """Drop pages older than an hour, then the oldest beyond three quarters of ``max_bytes``."""
        db.execute("DELETE FROM pages WHERE stored < ?", [time.time() - self.MAX_AGE_SECONDS])
        db.execute(
            "DELETE FROM pages WHERE key IN (SELECT key FROM (SELECT key, "
            "sum(length(body)) OVER (ORDER BY stored DESC, key) AS running FROM pages) WHERE running > ?)",
            [self.max_bytes * 3 // 4],
        )


class PageCache:
    """Rendered 200 answers by ETag, at most ``max_bytes`` of bodies, least recently used out first.

    :meth:`claim` lets one thread render a missing page while the others asking
    for it wait for the result instead of rendering it too; with ``shared``, a
    page another process rendered is taken from there first.
    """

    def __init__(self, max_bytes: int, shared: SharedPages | None = None) -> None:
        self.shared = shared
        self.max_bytes = max_bytes
        self._pages: OrderedDict[str, CachedPage] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._rendering: dict[str, threading.Event] = {}
        self.hits = 0
        self.misses = 0  # not in this process (``shared_hits`` of them from another)
        self.shared_hits = 0

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def size(self) -> int:
        return self._size

    def get(self, key: str) -> CachedPage | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
                self.hits += 1
            return page

    def put(self, key: str, page: CachedPage, *, share: bool = True) -> None:
        n = len(page.body)
        if n > min(self.max_bytes, MAX_PAGE_BYTES):
            return
        if share and self.shared is not None:
            self.shared.put(key, page)
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._size -= len(old.body)
            self._pages[key] = page
            self._size += n
            while self._size > self.max_bytes:
                _, dropped = self._pages.popitem(last=False)
                self._size -= len(dropped.body)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._size = 0

    @contextmanager
    def claim(self, key: str) -> Iterator[CachedPage | None]:
        """The cached page, or ``None`` with the right (and duty) to render it.

        While one thread renders a key, others claiming it wait (at most
        :data:`WAIT_FOR_RENDER_SECONDS`) and get its page; if it kept none (an
        error, a page too large), the next waiting thread renders.
        """
        while True:
            with self._lock:
                page = self._pages.get(key)
                if page is not None:
                    self._pages.move_to_end(key)
                    self.hits += 1
                    yield page
                    return
                event = self._rendering.get(key)
                if event is None:
                    event = self._rendering[key] = threading.Event()
                    self.misses += 1
                    break
            if not event.wait(WAIT_FOR_RENDER_SECONDS):
                with self._lock:
                    self.misses += 1
                yield None  # the other thread is stuck: render without the claim
                return
        try:
            page = self.shared.get(key) if self.shared is not None else None
            if page is not None:
                self.shared_hits += 1
                self.put(key, page, share=False)
            yield page
        finally:
            with self._lock:
                del self._rendering[key]
            event.set()


def page_cache(app: Flask) -> PageCache | None:
    """The app's page cache (``None`` when ``AGGREGATOR_RESPONSE_CACHE`` is 0).

    Shared with the other processes through ``AGGREGATOR_SHARED_CACHE`` (a file
    path; empty: not shared).
    """
    cache: PageCache | None = app.extensions.get("aggregator.pages")
    size = int(app.config.get("AGGREGATOR_RESPONSE_CACHE") or 0)
    if cache is None and size > 0:
        path = app.config.get("AGGREGATOR_SHARED_CACHE")
        shared = SharedPages(Path(path), 4 * size) if path else None
        cache = app.extensions.setdefault("aggregator.pages", PageCache(size, shared))
    return cache


def _not_modified(etag: str) -> bool:
    """Whether the client's copy (its If-None-Match) is current.

    If-Modified-Since is not evaluated: the latest change time is known to the second
    only, a change can leave it where it was (a removal, a merge) and even move it back,
    so a 304 on a date could hide a changed page.  Readers send the ETag as well.
    """
    if request.method not in ("GET", "HEAD") or not request.if_none_match:
        return False
    # "*" (any version) is not taken: it answered 304 for pages that do not exist.
    return etag in request.if_none_match.as_set(include_weak=True)


def _cache_headers(resp: Response, etag: str, last_modified: datetime) -> Response:
    resp.set_etag(etag, weak=True)
    resp.last_modified = last_modified
    resp.cache_control.public = True
    resp.cache_control.no_cache = True  # may be stored, must be revalidated
    return resp


@contextmanager
def _snapshot(agg: Aggregator) -> Iterator[None]:
    """One read transaction: the fingerprint and the page rendered under it see the same data."""
    conn = agg.db.conn
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def conditional(
    *, feeds: bool = False, story: bool = False
) -> Callable[[Callable[P, ResponseReturnValue]], Callable[P, ResponseReturnValue]]:
    """Answer 304 when the client's copy is current, else from the page cache, else run the view.

    The ETag covers the address asked (scheme, host, path and query), the start
    of this app (so a new release never serves old pages) and
    :meth:`Aggregator.freshness` (with ``feeds``, also every feed's polling
    state; with ``story``, :meth:`Aggregator.story_freshness` of the view's
    ``cluster_id`` instead: a story page stays current while other stories
    change).  Only 200 answers get validators and are cached.
    """

    def decorate(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            agg = get_reader()
            with _snapshot(agg):
                cluster_id = kwargs.get("cluster_id") if story else None
                if isinstance(cluster_id, int):
                    fresh = agg.story_freshness(cluster_id)
                else:
                    fresh = agg.freshness(feeds=feeds)
                started: float = current_app.config["AGGREGATOR_STARTED"]
                # What the views read: the first value of each parameter (a repeated one
                # sorted would make "?sort=a&sort=b" and "?sort=b&sort=a" one page).
                args_key = sorted((k, request.args.get(k)) for k in request.args)
                raw = f"{started!r}|{request.host_url}|{request.path}|{args_key!r}|{fresh.token}"
                etag = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
                last_modified = datetime.fromtimestamp(int(max(fresh.last_modified, started)), UTC)
                if _not_modified(etag):
                    return _cache_headers(current_app.response_class(status=304), etag, last_modified)
                cache = page_cache(current_app)
                if cache is None:
                    return _render(lambda: view(*args, **kwargs), etag, last_modified, None)
                with cache.claim(etag) as page:
                    if page is not None:
                        resp = current_app.response_class(page.body, status=200, headers=list(page.headers))
                        return _cache_headers(resp, etag, last_modified)
                    return _render(lambda: view(*args, **kwargs), etag, last_modified, cache)

        return wrapper

    return decorate


def _render(
    view: Callable[[], ResponseReturnValue], etag: str, last_modified: datetime, cache: PageCache | None
) -> Response:
    resp = make_response(view())
    if resp.status_code != 200:
        return resp
    if cache is not None and not resp.is_streamed:
        cache.put(etag, CachedPage(resp.get_data(), tuple(resp.headers.items())))
    return _cache_headers(resp, etag, last_modified)
