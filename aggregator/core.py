"""The public facade: create an aggregator, add feeds, update, query clusters, change settings."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from aggregator import opml, tuning
from aggregator.cluster import horizon_seconds
from aggregator.fetch import (
    Fetcher,
    FetchLimits,
    address_problem,
    address_problems,
    feed_url_form,
    is_local,
    local_path,
)
from aggregator.models import (
    ClusterDetail,
    ClusterSummary,
    Feed,
    FetchResult,
    Freshness,
    SearchHit,
    StoredItem,
    StoryCursor,
    StoryFilter,
    StoryHits,
    UpdateReport,
)
from aggregator.normalize import clean_text
from aggregator.pipeline import Pipeline, RulesChanged
from aggregator.prepare import Prepared, prepare, worker_started
from aggregator.replay import Replayer
from aggregator.settings import ClusterSettings, Settings, SettingsError, load_settings
from aggregator.storage import admin as admin_store
from aggregator.storage import backup as storage_backup
from aggregator.storage import clusters as clusters_store
from aggregator.storage import feeds as feeds_store
from aggregator.storage import integrity_check as storage_integrity_check
from aggregator.storage import items as items_store
from aggregator.storage import jobs as jobs_store
from aggregator.storage import meta as meta_store
from aggregator.storage import open_database, write_transaction
from aggregator.storage import rules as rules_store
from aggregator.storage import search as search_store
from aggregator.storage import versions as versions_store
from aggregator.storage.jobs import Job
from aggregator.storage.rules import Rule
from aggregator.storage.versions import SettingsVersion

__all__ = ["Aggregator", "CorrectionError", "FeedError", "JobError", "RulesChanged"]

log = logging.getLogger("aggregator")

JOB_KINDS = ("preview", "apply", "revert", "recluster")
MAX_PREVIEWS = 2  # previews running at once
STALE_JOB_SECONDS = 600.0
_URL_BLANKS = str.maketrans({"\t": None, "\n": None, "\r": None, " ": "%20"})

Progress = Callable[[int, int], None]
SETTLE_SECONDS = 1.0
# How long an update holds the due feeds it took (they are given back when it ends; a
# process that dies holds them this long).
CLAIM_SECONDS = 15 * 60.0
PARSE_TIMEOUT_SECONDS = 300.0  # a document taking longer in a parse worker fails its feed
WORKER_START_SECONDS = 30.0  # what new parse workers may take to start, besides
WORKERS_FROM_FEEDS = 20  # an update of this many feeds starts the worker processes
# Feeds handed to the worker processes ahead of the one being stored.  One or two
# are not enough: feeds differ in size, and a big one behind a small one left this
# process waiting for its parse (figure 3 of the benchmarks: 12.1-12.5 s of 80-89 s
# waiting with 2 ahead, 3.2-3.4 s with 17).  Each holds its body and parsed items in
# memory.
PREPARE_AHEAD = 16
# The poller process says it is running every few seconds (meta key POLLER_KEY); an
# admin's "Poll now" is then left to it, whose cluster index is built, rather than
# done in a web process (which would rebuild one: 28-36 s and ~2 GiB at a million
# stored items, benchmarks/README.md, figure 4).
POLLER_KEY = "poller_seen"
POLLER_BEAT_SECONDS = 5.0
POLLER_GONE_SECONDS = 30.0  # a poller silent this long is taken for stopped
POLL_NOW_WAIT_SECONDS = 30.0


class FeedError(ValueError):
    """A feed URL cannot be added or found."""


class CorrectionError(ValueError):
    """A manual correction names something that does not exist or makes no sense."""


class JobError(RuntimeError):
    """A background job cannot start now."""


def _submit(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """``pool.submit``, with SIGINT blocked in this thread meanwhile.

    A submit may start a worker process, which inherits this thread's signal mask: a
    Ctrl-C while the worker is still importing (before ``prepare.worker_started`` makes
    it ignore SIGINT) then stays pending instead of killing it with a traceback.  This
    process gets the signal when the mask is restored, or at once in another thread.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(fn, *args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _page(limit: int, offset: int) -> tuple[int, int]:
    """A page's bounds as SQLite takes them: a negative limit means none to SQLite."""
    return max(0, limit), max(0, offset)


def _job_owner() -> str:
    """This process, as a job's owner: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def _run_job(base: Settings, db_path: Path, job_id: int) -> None:
    """Body of a background job: its own connection, progress stored as it goes."""
    with Aggregator(base, db_path=db_path) as agg:
        job = agg.job(job_id)
        if job is None:
            return
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.5 or done >= total:
                last[0] = now
                with write_transaction(agg.db):
                    jobs_store.update(agg.db, job_id, agg.clock(), done=done, total=total)

        def set_state(**fields: Any) -> None:
            with write_transaction(agg.db):
                jobs_store.update(agg.db, job_id, agg.clock(), **fields)

        p = job.params
        try:
            set_state(state="running", message="")
            if job.kind == "preview":
                report = agg.preview(p.get("changes", {}), float(p.get("hours", 72)), progress)
                set_state(state="done", result=report.as_dict(), message="preview ready")
            elif job.kind == "apply":
                version = agg.apply_settings(
                    p.get("changes", {}), job.author, p.get("note", ""), progress=progress
                )
                set_state(
                    state="done", result={"version": version}, message=f"settings version {version} applied"
                )
            elif job.kind == "revert":
                version = agg.revert_settings(int(p["version"]), job.author, progress)
                set_state(state="done", result={"version": version}, message=f"reverted as version {version}")
            else:
                n = agg.recluster(progress)
                set_state(state="done", result={"items": n}, message=f"reclustered {n} items")
        except Exception as exc:
            log.exception("job %d failed", job_id)
            # Even when the database was what failed (locked): a job left "queued" or
            # "running" blocks the next settings change until it is taken for dead.
            for attempt in range(3):
                try:
                    set_state(state="failed", message=f"{type(exc).__name__}: {exc}")
                    break
                except Exception:
                    log.exception("recording that job %d failed failed too", job_id)
                    time.sleep(1.0 + attempt)


class Aggregator:
    """A deduplicating feed aggregator on one SQLite database.

    >>> agg = Aggregator.open()                    # config.toml, its database
    >>> agg.add_feed("https://example.org/feed.xml")
    >>> agg.update()                               # poll every due feed once
    >>> agg.clusters(limit=10)                     # the latest stories
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        migrate: bool = True,
    ) -> None:
        self.base_settings = settings  # from config.toml; admins' changes apply on top
        self.db_path = Path(db_path) if db_path is not None else settings.db_path
        self.db = open_database(self.db_path, migrate=migrate)
        self.clock = clock
        self._version_id: int | None = None
        self.settings = self._effective_settings()
        self.pipeline = Pipeline(self.db, self.settings, clock)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._fetcher: Fetcher | None = None  # the fetches of the update under way (see stop)
        self._pool: ProcessPoolExecutor | None = None
        self._had_workers = False  # once started, worker processes are kept (and replaced if lost)

    @classmethod
    def open(
        cls, config: str | Path | None = None, db: str | Path | None = None, **overrides: Any
    ) -> Aggregator:
        """Open with settings from ``config`` (default ``config.toml``) and an optional database path."""
        return cls(load_settings(config, overrides or None), db_path=db)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction, one thread of this object at a time (they share one
        connection: a second thread's BEGIN inside the first's transaction failed)."""
        with self._lock, write_transaction(self.db):
            yield

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        self.db.close()

    def __enter__(self) -> Aggregator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings: config.toml plus the admins' latest settings version ----------------

    def _effective_settings(self) -> Settings:
        """config.toml with the latest settings version's overrides; those that no longer
        fit it (config.toml changed since) are left out and listed in ``settings_problems``."""
        version = versions_store.latest(self.db)
        self._version_id = version.id if version else None
        self.settings_problems: list[str] = []
        if version is None:
            return self.base_settings
        settings, problems = tuning.apply_overrides(self.base_settings, version.overrides)
        for problem in problems:
            log.warning("settings version %d: ignoring %s", version.id, problem)
        self.settings_problems = problems
        return settings

    def reload_settings(self) -> bool:
        """Pick up a settings version applied by another process; True if settings changed."""
        latest = versions_store.latest(self.db)
        if (latest.id if latest else None) == self._version_id:
            return False
        with self._lock:
            self.settings = self._effective_settings()
            self.pipeline.settings = self.settings
            self.pipeline.invalidate_local()
        return True

    def settings_version(self) -> SettingsVersion | None:
        return versions_store.latest(self.db)

    def get_settings_version(self, version_id: int) -> SettingsVersion | None:
        return versions_store.get(self.db, version_id)

    def settings_history(self, limit: int = 50) -> list[SettingsVersion]:
        return versions_store.history(self.db, limit)

    def admin_overrides(self) -> dict[str, Any]:
        """Settings admins changed from config.toml, in force now."""
        version = versions_store.latest(self.db)
        return dict(version.overrides) if version else {}

    def check_changes(
        self, changes: Mapping[str, Any], *, replace: bool = False
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Validate admins' proposed changes on top of the settings in force (``replace``:
        on top of config.toml alone, as a revert applies them).

        Returns (clean values, errors by key): each value against its definition,
        then the rules that tie settings together (LSH bands x rows <= permutations).
        """
        clean, errors = tuning.validate_changes(changes)
        if errors:
            return clean, errors
        try:
            (self.base_settings if replace else self.settings).replace(clean)
        except SettingsError as exc:
            message = str(exc)
            key = message.removeprefix("setting ").split(":", 1)[0]
            # Report it on a setting the admin changed, where possible.
            if key not in clean:
                key = next(
                    (
                        k
                        for k in (
                            "cluster.lsh_bands",
                            "cluster.lsh_rows",
                            "cluster.num_perm",
                            "cluster.short_terms",
                            "cluster.long_terms",
                        )
                        if k in clean
                    ),
                    key,
                )
            errors[key] = message.split(": ", 1)[-1]
        return clean, errors

    # -- admin: sessions -----------------------------------------------------------------

    def tag_authority(self) -> str | None:
        """The domain name kept for the ids of the merged feeds' items (RFC 4151 tag
        URIs), if one was: see :meth:`keep_tag_authority`."""
        return meta_store.get(self.db, "tag_authority")

    def keep_tag_authority(self, name: str) -> str:
        """Keep ``name`` (the host of ``web.base_url``) for the ids of the merged feeds'
        items, unless a name was kept already; returns the name kept.

        Kept once, the ids stay when ``base_url`` changes (the site moves, gets a
        "www."): readers took every item for a new one.  Only the operator's
        ``base_url`` is kept, never a request's Host header (anyone can send one).
        """
        kept = self.tag_authority()
        if kept:
            return kept
        with self._writing():
            kept = self.tag_authority()
            if not kept:
                kept = name
                meta_store.put(self.db, "tag_authority", kept)
        return kept

    def secret_key(self) -> str:
        """The site's secret for signing session cookies: made once, kept in the database.

        Every process serving the site reads the same secret, so a session made by
        one is valid in all.
        """
        key = meta_store.get(self.db, "secret_key")
        if key:
            return key
        with self._writing():
            key = meta_store.get(self.db, "secret_key")
            if not key:
                key = secrets.token_hex(32)
                meta_store.put(self.db, "secret_key", key)
        return key

    def account_stamp(self, name: str) -> str | None:
        """A keyed digest of an admin account's password hash and session count; None if
        there is no such account.

        Sessions keep it, so changing a password or logging out (:meth:`end_sessions`)
        ends every session of that account.
        """
        stored = admin_store.session_key(self.db, name)
        if stored is None:
            return None
        password_hash, ended = stored
        key = self.secret_key().encode("ascii")[:64]
        text = password_hash if not ended else f"{password_hash}\n{ended}"  # (stamps made before 0019 hold)
        return hashlib.blake2b(text.encode("utf-8"), key=key, digest_size=16).hexdigest()

    def end_sessions(self, name: str) -> None:
        """End every session of an admin account (logging out does)."""
        with self._writing():
            admin_store.end_sessions(self.db, name)

    # -- feeds -------------------------------------------------------------------------

    def add_feed(self, url: str, title: str | None = None, *, via_site: bool = False) -> tuple[Feed, bool]:
        """Subscribe to a feed URL (or a local file, when allowed); returns it and whether it is new.

        ``via_site``: the URL comes from a web form, so only http(s) URLs are accepted.
        """
        return self._subscribe(self._check_url(url, via_site=via_site), title)

    def _subscribe(self, url: str, title: str | None) -> tuple[Feed, bool]:
        title = clean_text(title or "")[:300] or None  # (control characters broke the OPML export)
        with self._lock:
            return feeds_store.add(self.db, url, self.clock(), title)

    def _check_url(self, url: str, *, via_site: bool = False, resolve: bool = True) -> str:
        """``url`` checked, in the one form that is stored for it (scheme and host in
        lower case, no default port, no fragment: the same feed is not subscribed twice).
        Errors show at most 200 characters of it (a flash message lives in a cookie)."""
        url = url.strip()
        if not url:
            raise FeedError("empty feed URL")
        shown = url if len(url) <= 200 else url[:200] + "…"
        if len(url) > 2000:
            raise FeedError("feed URL too long (2,000 characters at most)")
        if not is_local(url):  # a file's path keeps its spaces
            url = url.translate(_URL_BLANKS)  # as browsers do: tabs and newlines out, spaces encoded
        if any(ord(c) < 32 or ord(c) == 127 for c in url):
            raise FeedError(f"not a valid URL (control characters): {shown!r}")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError:  # "http://[::1", "https://[zz]/", "http://h:99999/"
            raise FeedError(f"not a valid URL: {shown}") from None
        if is_local(url) and not via_site:
            if not self.settings.feeds.allow_local_files:
                raise FeedError(f"local files are not allowed by the configuration: {url}")
            path = local_path(url)
            if not path.is_absolute():
                path = Path.cwd() / path
            if not path.is_file():
                raise FeedError(f"no such file: {path}")
            return path.resolve().as_uri()
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not host:
            what = "an http(s) URL" if via_site else "an http(s) URL or a file"
            raise FeedError(f"not {what}: {shown}")
        if "%" in host:
            raise FeedError(f"not a valid URL (a space or % in the host name): {shown}")
        url = feed_url_form(url)
        if resolve and not self.settings.feeds.allow_private_addresses:
            problem = address_problem(url)
            if problem:
                raise FeedError(problem)
        return url

    def remove_feed(self, url_or_id: str | int) -> bool:
        feed = self.feed(url_or_id)
        if feed is None:
            return False
        with self._writing():
            self._no_reclustering()  # its swap would put the feed's items back, or fail on them
            merges = rules_store.must_groups(self.db)
            self._keep_merges(
                merges, items_store.ids_of_feed(self.db, feed.id), "(kept when a feed was removed)"
            )
            touched = feeds_store.remove(self.db, feed.id)
            self.pipeline.shrink_clusters(set(touched), self.clock())
            self.pipeline.feed_removed(feed.id)
        return True

    def feed(self, url_or_id: str | int) -> Feed | None:
        if isinstance(url_or_id, int):
            return feeds_store.get(self.db, url_or_id)
        found = feeds_store.get_by_url(self.db, url_or_id)
        if found is None:  # as stored: HTTPS://Example.org:443/f is https://example.org/f
            try:
                found = feeds_store.get_by_url(self.db, self._check_url(url_or_id))
            except FeedError:
                return None
        return found

    def feeds(self, *, limit: int | None = None, offset: int = 0) -> list[Feed]:
        """Feeds by name: all of them, or ``limit`` from ``offset``."""
        if limit is None:
            return feeds_store.all_feeds(self.db)
        limit, offset = _page(limit, offset)
        return feeds_store.all_feeds(self.db, limit, offset)

    def feed_position(self, feed_id: int) -> int | None:
        """How many feeds :meth:`feeds` lists before this one (None: no such feed)."""
        return feeds_store.position(self.db, feed_id)

    def pause_feed(self, feed_id: int, paused: bool = True) -> None:
        with self._writing():
            feeds_store.set_paused(self.db, feed_id, paused)

    def set_poll_interval(self, url_or_id: str | int, minutes: float | None) -> Feed:
        """Poll a feed every ``minutes`` (None: automatically, by its own hints and
        ``schedule.default_interval_minutes``).  A hint from the feed (``<ttl>``,
        ``Cache-Control``) still lengthens the interval; a shorter one applies from
        now on: the next poll comes no later than ``minutes`` after the last."""
        feed = self.feed(url_or_id)
        if feed is None:
            raise FeedError(f"no such feed: {url_or_id}")
        s = self.settings.schedule
        lo, hi = s.min_interval_minutes, s.max_interval_minutes
        if minutes is not None and not (math.isfinite(minutes) and lo <= minutes <= hi):
            raise FeedError(f"the polling interval must be between {lo:g} and {hi:g} minutes")
        fields: dict[str, float | None] = {"poll_minutes": minutes}
        if minutes is not None and feed.status in ("new", "ok", "not_modified"):
            sooner = (feed.last_polled_at or self.clock()) + minutes * 60
            if feed.next_poll_at is None or sooner < feed.next_poll_at:
                fields["next_poll_at"] = sooner
        with self._writing():
            feeds_store.update_state(self.db, feed.id, fields)
        changed = self.feed(feed.id)
        assert changed is not None
        return changed

    def import_opml(
        self, source: str | Path | bytes, *, via_site: bool = False
    ) -> tuple[list[Feed], list[str]]:
        """Subscribe to every feed of an OPML file; returns (new feeds, problems).

        ``via_site``: the file was uploaded through the site, so only http(s) feeds are taken.
        """
        base = None
        if isinstance(source, (str, Path)):
            path = Path(source)
            data = path.read_bytes()
            base = path.resolve().parent
        else:
            data = source
        added: list[Feed] = []
        problems: list[str] = []
        checked: list[tuple[str, str | None]] = []
        for entry in opml.read(data):
            url = entry.url
            if base is not None and is_local(url) and not local_path(url).is_absolute():
                url = str(base / local_path(url))
            try:
                checked.append((self._check_url(url, via_site=via_site, resolve=False), entry.title))
            except FeedError as exc:
                problems.append(str(exc))
        unsafe: dict[str, str] = {}
        if not self.settings.feeds.allow_private_addresses:  # the names resolved at once
            unsafe = address_problems(url for url, _ in checked if not is_local(url))
        for url, title in checked:
            if url in unsafe:
                problems.append(unsafe[url])
                continue
            feed, new = self._subscribe(url, title)
            if new:
                added.append(feed)
        return added, problems

    def export_opml(self) -> str:
        return opml.write([(f.url, f.title, f.site_url) for f in self.feeds()], title="the aggregator")

    def subscribe_defaults(self) -> int:
        """Subscribe to the configured OPML (the demo feeds) if there are no feeds yet."""
        name = self.settings.feeds.opml
        if not name or feeds_store.count(self.db):
            return 0
        path = self.settings.path(name)
        if not path.is_file():
            log.warning("feeds.opml names %s, which is not a file: no feeds subscribed", path)
            return 0
        try:
            added, _ = self.import_opml(path)
        except opml.OpmlError as exc:  # the poller (and the site beside it) must still start
            log.error("feeds.opml (%s) was not read: %s; no feeds subscribed", path, exc)
            return 0
        return len(added)

    # -- updating ----------------------------------------------------------------------

    def update(
        self,
        feeds: Iterable[Feed] | None = None,
        *,
        progress: Callable[[UpdateReport], None] | None = None,
    ) -> list[UpdateReport]:
        """Poll feeds (default: every due feed, and those asked for by :meth:`request_poll`) once.

        Fetches run concurrently, within overall and per-host limits; each result
        is parsed, clustered and stored as soon as it arrives, one feed at a time.
        """
        self.reload_settings()
        now, p = self.clock(), self.settings.schedule
        furthest = max(p.max_interval_minutes, p.backoff_max_minutes, p.min_interval_minutes)
        # Taken in the transaction that finds them: another process updating meanwhile
        # (the poller, a cron'd `aggregator update`) leaves them to this one.  Feeds named
        # here are polled even when another update holds them (they were asked for), and
        # those it does not hold are claimed, so that the poller leaves them alone.
        until = now + CLAIM_SECONDS
        named = list(feeds) if feeds is not None else None

        def find() -> list[Feed]:
            if named is not None:
                return named
            found = feeds_store.due(self.db, now, now + furthest * (1 + p.jitter) * 60 + 60)
            taken = {f.id for f in found}
            return found + [f for f in feeds_store.requested(self.db, now) if f.id not in taken]

        claimed: set[int] = set()
        try:
            with self._writing():
                todo = find()
                claimed = feeds_store.claim(self.db, [f.id for f in todo], now, until) if todo else set()
        except sqlite3.OperationalError as exc:  # locked: polled unclaimed (each feed fails alone)
            log.warning("could not claim the feeds to poll (%s); polling them unclaimed", exc)
            todo = find()
        try:
            return self._update(todo, progress)
        finally:
            if claimed:
                try:
                    with self._writing():
                        feeds_store.release(self.db, sorted(claimed), until)
                except sqlite3.OperationalError as exc:  # the claims run out by themselves
                    log.warning("could not give back the claims on polled feeds: %s", exc)

    def _update(
        self, todo: list[Feed], progress: Callable[[UpdateReport], None] | None
    ) -> list[UpdateReport]:
        if not todo:
            return []
        fs = self.settings.fetch
        # One queue of feeds per host: a host's next feed is handed to the fetch threads
        # when one of its fetches ends (threads waiting for a slow host's turn held every
        # other host up: 16 feeds of a hung host delayed the rest by minutes).
        queues: dict[str, deque[Feed]] = {}
        for f in todo:
            queues.setdefault(urlsplit(f.url).hostname or "", deque()).append(f)
        host_of: dict[Future[FetchResult], str] = {}

        reports: list[UpdateReport] = []
        # Worker processes take seconds to start: worth it for a big update, or once started.
        workers = self._workers() if self._had_workers or len(todo) >= WORKERS_FROM_FEEDS else None
        pending: deque[tuple[Feed, FetchResult, Future[Prepared] | None]] = deque()
        ahead = fs.parse_workers + PREPARE_AHEAD if workers is not None else 1

        def lose_workers(exc: BaseException) -> None:
            """A worker died (out of memory, a crash in a C extension) and broke its pool:
            the feeds not yet handed over are parsed here; the next update starts new workers."""
            nonlocal workers
            if isinstance(exc, BrokenExecutor) and workers is not None:
                log.error("a parse worker process died (%s); parsing in this process for now", exc)
                if self._pool is workers:
                    self._pool = None
                workers.shutdown(wait=False, cancel_futures=True)
                workers = None

        stopped: list[Future[Prepared]] = []  # the futures of a pool this update stopped itself
        made_with: dict[Future[Prepared], ClusterSettings] = {}  # the settings each was prepared with

        def stop_workers() -> None:
            stopped.extend(f for _, _, f in pending if f is not None)
            for process in list(getattr(workers, "_processes", {}).values()):
                process.terminate()

        def submit(feed: Feed, result: FetchResult) -> Future[Prepared] | None:
            """Parse and fingerprint a document in a worker process while this one stores."""
            if workers is None:
                return None
            try:
                fut = _submit(
                    workers,
                    prepare,
                    result.body,
                    result.final_url or feed.url,
                    result.headers,
                    self.settings.cluster,
                    fs.max_items,
                )
            except BrokenExecutor as exc:
                lose_workers(exc)
                return None
            made_with[fut] = self.settings.cluster
            return fut

        def resubmit(feed: Feed, result: FetchResult) -> Future[Prepared] | None:
            """Hand a document again to the parse workers (new ones if they were lost)."""
            nonlocal workers
            if workers is None:
                workers = self._workers()
            fut = submit(feed, result)
            if fut is not None:
                resubmitted.add(fut)
            return fut

        resubmitted: set[Future[Prepared]] = set()

        def process_oldest() -> None:
            feed, result, prepared = pending.popleft()
            if self._stopping.is_set():  # dropped, still due (its fetch may have been cut)
                return
            done: Prepared | None = None
            # An admin may have applied new settings (in another process) during a long
            # round: each feed is clustered with the settings in force when it is stored.
            self.reload_settings()
            while prepared is not None:
                # A document that was with workers stopped for another feed's, or prepared
                # with settings no longer in force (permutations, shingles), goes to the
                # workers again once (parsed here, it had no time limit), then is parsed here.
                innocent = prepared in stopped
                again = prepared in resubmitted
                try:
                    limit = PARSE_TIMEOUT_SECONDS + (WORKER_START_SECONDS if again else 0.0)
                    done = prepared.result(timeout=30.0 if innocent else limit)
                except Exception as exc:
                    if innocent:
                        prepared = None if again else resubmit(feed, result)
                        continue
                    if isinstance(exc, TimeoutError):
                        # A document the parser does not finish with would hold the poller
                        # for good: its worker is stopped (the pool with it), the feed fails.
                        stop_workers()
                        lose_workers(BrokenProcessPool(str(exc)))
                        why = f"parsing took longer than {PARSE_TIMEOUT_SECONDS:g} s; the parse worker was stopped"
                        result = dataclasses.replace(result, status="error", error=why, body=b"")
                    else:
                        # Never parsed again here: the document may be what killed the
                        # worker.  The feed's error, with the usual back-off.
                        lose_workers(exc)
                        if isinstance(exc, BrokenExecutor):
                            why = "the parse worker process died while this feed was being read"
                        else:
                            why = f"internal error while parsing: {type(exc).__name__}: {exc}"
                        result = dataclasses.replace(result, status="error", error=why, body=b"")
                    break
                if made_with.pop(prepared, None) != self.settings.cluster:
                    done = None
                    prepared = None if again else resubmit(feed, result)
                    continue
                break
            with self._lock:
                report = self.pipeline.process(feed, result, done)
            reports.append(report)
            if progress:
                progress(report)

        with (
            Fetcher(
                FetchLimits.from_settings(fs),
                allow_local_files=self.settings.feeds.allow_local_files,
                allow_private=self.settings.feeds.allow_private_addresses,
            ) as fetcher,
            ThreadPoolExecutor(max_workers=min(fs.max_concurrency, len(todo))) as pool,
        ):
            self._fetcher = fetcher
            if self._stopping.is_set():
                fetcher.abort()
            futures: dict[Future[FetchResult], Feed] = {}

            def start(host: str) -> Future[FetchResult]:
                feed = queues[host].popleft()
                fut = pool.submit(fetcher.fetch, feed.url, feed.etag, feed.last_modified)
                futures[fut], host_of[fut] = feed, host
                return fut

            def refill(ended: Iterable[Future[FetchResult]]) -> None:
                for fut in ended:
                    if queues[host_of[fut]]:
                        remaining.add(start(host_of[fut]))

            remaining = {
                start(h) for h, q in queues.items() for _ in range(min(fs.per_host_concurrency, len(q)))
            }
            # Feeds that answer within the settle time are processed in a fixed order (by
            # feed id), so the same feeds give the same clusters; slower ones as they come.
            settled: set[Future[FetchResult]] = set()
            deadline = time.monotonic() + SETTLE_SECONDS
            while remaining and (left := deadline - time.monotonic()) > 0:
                done, _ = wait(set(remaining), timeout=left, return_when=FIRST_COMPLETED)
                remaining -= done
                refill(done)
                settled |= done
            arrived = sorted(settled, key=lambda f: futures[f].id)

            def enqueue(fut: Future[FetchResult]) -> None:
                feed, result = futures[fut], fut.result()
                prepared = submit(feed, result) if result.status == "ok" else None
                pending.append((feed, result, prepared))

            while arrived or remaining or pending:
                if self._stopping.is_set():
                    # Shutting down: no new fetch starts, and what was fetched but not
                    # stored is dropped (those feeds are still due: the next start polls
                    # them); fetches under way were cut by stop() (Fetcher.abort).
                    for q in queues.values():
                        q.clear()
                    for fut in remaining:
                        fut.cancel()
                    break
                moved = False
                newly = [f for f in remaining if f.done()]
                if newly:  # (a host's next feed starts as soon as one of its fetches ends)
                    remaining.difference_update(newly)
                    refill(newly)
                    arrived += sorted(newly, key=lambda f: futures[f].id)
                while arrived and len(pending) < ahead:
                    enqueue(arrived.pop(0))
                    moved = True
                while pending and (pending[0][2] is None or pending[0][2].done()):
                    process_oldest()
                    moved = True
                if not moved:  # wait for a fetch or the oldest preparation, whichever comes first
                    if len(pending) >= ahead or (not remaining and not arrived):
                        process_oldest()
                    else:
                        waitables: set[Future[Any]] = set(remaining)
                        if pending and pending[0][2] is not None:
                            waitables.add(pending[0][2])
                        wait(waitables, return_when=FIRST_COMPLETED)
        self._fetcher = None
        return reports

    def stop(self) -> None:
        """Make a running :meth:`update` end soon (from another thread: a signal handler,
        a shutdown): it starts no new fetch and stores nothing more.  For good."""
        self._stopping.set()
        fetcher = self._fetcher
        if fetcher is not None:  # fetches under way end now, not at their deadline
            fetcher.abort()

    def start_workers(self) -> bool:
        """Start the parse/fingerprint worker processes now (a long-running poller does)."""
        pool = self._workers()
        if pool is None:
            return False
        _submit(pool, int).result()  # wait until a worker is up
        return True

    def _workers(self) -> ProcessPoolExecutor | None:
        """The pool of parse/fingerprint worker processes, started on first use."""
        n = self.settings.fetch.parse_workers
        if n <= 0:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=n,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_started,
                initargs=(os.getpid(),),
            )
            self._had_workers = True
        return self._pool

    def update_feed(self, url_or_id: str | int) -> UpdateReport:
        """Poll one feed now, in this process."""
        feed = self.feed(url_or_id)
        if feed is None:
            raise FeedError(f"no such feed: {url_or_id}")
        return self.update([feed])[0]

    # -- the poller process, and polls asked of it -----------------------------------------

    def heartbeat(self, *, running: bool = True) -> None:
        """Record that a poller process is running (it calls this every few seconds), or
        that it stopped."""
        with self._writing():
            meta_store.put(self.db, POLLER_KEY, repr(self.clock()) if running else "stopped")

    def poller_seen(self) -> float | None:
        """When a poller process last said it was running (None: never)."""
        raw = meta_store.get(self.db, POLLER_KEY)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    def poller_running(self) -> bool:
        seen = self.poller_seen()
        return seen is not None and abs(self.clock() - seen) < POLLER_GONE_SECONDS

    def request_poll(self, url_or_id: str | int) -> Feed:
        """Ask the poller to poll a feed (even a paused one) within a second or so, or
        after the round it is in; :meth:`update` with no feeds given polls it."""
        feed = self.feed(url_or_id)
        if feed is None:
            raise FeedError(f"no such feed: {url_or_id}")
        if feed.poll_requested_at is None:
            with self._writing():
                feeds_store.update_state(self.db, feed.id, {"poll_requested_at": self.clock()})
        asked = self.feed(feed.id)
        assert asked is not None
        return asked

    def poll_requested(self) -> bool:
        return feeds_store.any_requested(self.db, self.clock())

    def poll_now(self, url_or_id: str | int, *, wait: float | None = None) -> UpdateReport | None:
        """Poll a feed now and report what it did.

        With a poller process running, the poll is asked of it (its cluster index is
        already built) and its outcome read back from the feed's state once done;
        None if it is not done within ``wait`` seconds (default
        ``POLL_NOW_WAIT_SECONDS``; it still happens, after the poller's current round).
        Without one, the feed is polled in this process.
        """
        feed = self.feed(url_or_id)
        if feed is None:
            raise FeedError(f"no such feed: {url_or_id}")
        if not self.poller_running():
            return self.update([feed])[0]
        self.request_poll(feed.id)
        deadline = time.monotonic() + (POLL_NOW_WAIT_SECONDS if wait is None else wait)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.feed(feed.id)
            if now is None:
                raise FeedError(f"no such feed: {url_or_id} (removed meanwhile)")
            if now.poll_requested_at is None:
                status = now.status if now.status in ("ok", "not_modified", "gone") else "error"
                return UpdateReport(
                    now.url,
                    status,
                    new_items=now.last_items_added,
                    updated_items=now.last_items_updated,
                    error=now.last_error,
                    warning=now.warning,
                )
        return None

    def recluster(self, progress: Progress | None = None) -> int:
        with self._lock:
            return self.pipeline.recluster(progress)

    def rebuild_index(self) -> int:
        with self._lock:
            return self.pipeline.rebuild_index()

    # -- admin: previews, applying settings, corrections --------------------------------

    def preview(
        self, changes: dict[str, Any], hours: float, progress: Progress | None = None
    ) -> tuning.PreviewReport:
        """What ``changes`` would do to the stories of the last ``hours``, without doing it.

        The items of the period are re-clustered in memory with the proposed settings, as
        applying them re-clusters every item (in the order they arrived, as polling
        placed them: with the settings unchanged, nothing changes), and the result is
        compared with the stories stored now (what the site shows: comparing with a
        re-clustering under the current settings hid what applying changes besides the
        settings).

        The replay starts two index horizons before the period, as applying sees the
        period's items with the items before them in the index: started at the period,
        a chain of merges through an older story was missed (the preview showed two
        merges of 4 stories where applying made one of 9).  The stories compared are
        those with an item in the period, all of their items.

        The admins' corrections serve as labeled pairs: each setting's precision and
        recall on them come from replays *without* the corrections (with them, every
        setting scored 1.000), and cost two more replays when there are any.
        """
        clean, errors = self.check_changes(changes)
        if errors:
            raise SettingsError("; ".join(f"{k}: {v}" for k, v in errors.items()))
        proposed = self.settings.replace(clean)
        rules = rules_store.load(self.db)
        latest = items_store.latest_time(self.db) or self.clock()
        since = latest - hours * 3600
        horizon = max(horizon_seconds(c) for c in (self.settings.cluster, proposed.cluster))
        start = since - 2 * horizon
        rows = list(items_store.index_rows(self.db, start, self.settings.cluster.num_perm))
        poll = items_store.arrival_batches(self.db, start)  # replayed as applying does: as they arrived
        rows.sort(key=lambda r: (poll.get(r.item_id, r.item_id), r.sort_time, r.item_id))
        if proposed.cluster.num_perm != self.settings.cluster.num_perm:
            rows = [dataclasses.replace(r, signature=None) for r in rows]
        must, cannot = rules.pairs("must"), rules.pairs("cannot")
        labeled_ids = {i for pair in must | cannot for i in pair}
        replays = 3 if labeled_ids & {r.item_id for r in rows} else 1
        base = [0]

        def step(done: int) -> None:
            if progress:
                progress(base[0] + done, replays * len(rows))

        def replay(settings: Settings, with_rules: rules_store.RuleSet) -> dict[int, int]:
            replayer = Replayer(settings, with_rules)
            replayer.feed(rows, step)
            base[0] += len(rows)
            return replayer.partition()

        replayed = replay(proposed, rules)
        stored = clusters_store.clusters_of(self.db, [r.item_id for r in rows])
        period = {r.item_id for r in rows if r.sort_time >= since}
        touched_now = {stored[i] for i in period if i in stored}
        touched_then = {replayed[i] for i in period if i in replayed}
        compared = {
            i
            for i, c in stored.items()
            if i in replayed and (c in touched_now or replayed[i] in touched_then)
        }
        current = {i: stored[i] for i in compared}
        then = {i: replayed[i] for i in compared}
        labeled: dict[str, Any] = {"current": None, "proposed": None}
        if replays > 1:
            no_rules = rules_store.RuleSet()
            for key, settings in (("current", self.settings), ("proposed", proposed)):
                alone = replay(settings, no_rules)
                labeled[key] = tuning.labeled_scores({i: alone[i] for i in compared}, must, cannot)
        titles = {r.item_id: r.title for r in rows}
        return tuning.compare(current, then, titles, labeled)

    def apply_settings(
        self,
        changes: dict[str, Any],
        author: str,
        note: str = "",
        *,
        reverts: int | None = None,
        replace: bool = False,
        progress: Progress | None = None,
    ) -> int:
        """Save a new settings version (kept in the history) and re-cluster with it.

        ``changes`` are added to the overrides in force (``replace``: they become the
        overrides).  Returns the new version's id.
        """
        clean, errors = self.check_changes(changes, replace=replace)
        if errors:
            raise SettingsError("; ".join(f"{k}: {v}" for k, v in errors.items()))
        # Added to the overrides in force: one left out since config.toml changed (listed in
        # settings_problems) is not turned back on by a change it was never previewed with.
        stored = {} if replace else self.admin_overrides()
        in_force = tuning.json_ready({k: self.settings.get(k) for k in stored})
        overrides = {k: v for k, v in stored.items() if in_force[k] == v}
        overrides.update(tuning.json_ready(clean))
        # An override equal to the config value is no override.
        overrides = {
            k: v for k, v in overrides.items() if tuning.json_ready({k: self.base_settings.get(k)})[k] != v
        }
        settings, _ = tuning.apply_overrides(self.base_settings, overrides)
        versions: list[int] = []

        def store_version() -> None:  # in the transaction that swaps the new clusters in
            versions.append(versions_store.add(self.db, overrides, author, self.clock(), note, reverts))

        with self._lock:
            self.pipeline.recluster(progress, settings=settings, before_swap=store_version)
            self.reload_settings()
        return versions[0]

    def revert_settings(self, version_id: int, author: str, progress: Progress | None = None) -> int:
        """Make the settings of ``version_id`` (0: config.toml alone) current again, as a new version."""
        if version_id == 0:
            target: dict[str, Any] = {}
        else:
            version = versions_store.get(self.db, version_id)
            if version is None:
                raise SettingsError(f"no settings version {version_id}")
            target = version.overrides
        return self.apply_settings(
            target,
            author,
            f"revert to version {version_id}",
            reverts=version_id or None,
            replace=True,
            progress=progress,
        )

    def start_job(self, kind: str, params: dict[str, Any], author: str) -> int:
        """Run a preview, an apply, a revert or a recluster in a background thread.

        Progress and the result are stored in the ``jobs`` table (see :meth:`job`), so
        any process can show them.  Only one job that re-clusters runs at a time.
        """
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        now = self.clock()
        with self._writing():
            self._interrupt_dead_jobs(now)
            if kind != "preview" and jobs_store.changing_running(self.db):
                raise JobError("another settings change or recluster is still running")
            if kind == "preview":
                # Each preview re-clusters its period in memory: the same one again (a
                # double submit) is the one running; more at once could exhaust memory.
                previews = jobs_store.running_previews(self.db)
                same = [j for j in previews if j.params == params]
                if same:
                    return same[0].id
                if len(previews) >= MAX_PREVIEWS:
                    raise JobError(f"{len(previews)} previews are running: wait for one to end")
            job_id = jobs_store.create(self.db, kind, params, author, now, _job_owner())
        thread = threading.Thread(
            target=_run_job,
            args=(self.base_settings, self.db_path, job_id),
            name=f"job-{job_id}",
            daemon=True,
        )
        thread.start()
        return job_id

    def job(self, job_id: int) -> Job | None:
        job = jobs_store.get(self.db, job_id)
        if job is not None and not job.finished and self._dead_jobs():
            with self._writing():
                self._interrupt_dead_jobs(self.clock())
            job = jobs_store.get(self.db, job_id)
        return job

    def _dead_jobs(self) -> list[int]:
        """Unfinished jobs whose process, on this host, is gone (a restart, a crash)."""
        host = socket.gethostname()
        dead = []
        for job_id, owner in jobs_store.unfinished_owners(self.db):
            where, _, pid = owner.rpartition(":")
            if where == host and pid.isdigit() and not _process_alive(int(pid)):
                dead.append(job_id)
        return dead

    def _interrupt_dead_jobs(self, now: float) -> None:
        """Mark interrupted the jobs whose process is gone, and those silent too long
        (another host's, or from before jobs knew their process)."""
        jobs_store.interrupt(self.db, self._dead_jobs(), now, "the process running it stopped")
        jobs_store.interrupt_stale(self.db, now - STALE_JOB_SECONDS, now)

    def jobs(self, limit: int = 20, kind: str | None = None) -> list[Job]:
        """The latest jobs, newest first (of one ``kind`` only, if given)."""
        return jobs_store.latest(self.db, kind, limit=limit)

    def _no_reclustering(self) -> None:
        """Corrections wait for a running settings change or recluster: its swap would
        undo them (it re-clusters with the rules it started with)."""
        now = self.clock()
        self._interrupt_dead_jobs(now)
        if jobs_store.changing_running(self.db):
            raise CorrectionError("a re-clustering is running: corrections can be made when it is done")

    def _by_time(self, item_ids: Iterable[int]) -> list[int]:
        items = items_store.get_many(self.db, list(item_ids))
        return [i.id for i in sorted(items, key=lambda i: (i.sort_time, i.id))]

    def _tie(self, item_ids: Iterable[int], author: str) -> None:
        """Make ``item_ids`` one story for good: must-links from the earliest to each other."""
        order = self._by_time(item_ids)
        rules_store.add(self.db, "must", [(order[0], i) for i in order[1:]], author, self.clock())

    def _keep_merges(self, groups: list[set[int]], leaving: set[int], author: str) -> None:
        """Merges that lose ``leaving`` keep the rest of their items together."""
        for group in groups:
            rest = group - leaving
            if rest != group and len(rest) >= 2:
                self._tie(rest, author)

    def merge_clusters(self, target: int, source: int, author: str) -> None:
        """Make two stories one; remembered as must-links that later re-clustering respects.

        Cannot-links between their items go (the admin says they are one story), and
        the merged story keeps the target's pinned item, else the source's.
        """
        if target == source:
            raise CorrectionError("a story cannot be merged with itself")
        with self._writing():
            self._no_reclustering()
            members = clusters_store.member_ids(self.db, [target, source])
            if not members.get(target) or not members.get(source):
                raise CorrectionError("no such story")
            union = members[target] + members[source]
            rules_store.drop_within(self.db, "cannot", union)
            self._tie(union, author)
            pins = rules_store.pins_for(self.db, union)
            keep = min(pins & set(members[target]) or pins, default=None)
            rules_store.unpin_cluster(self.db, pins - {keep})
            clusters_store.merge_into(self.db, target, [source])
            if keep is not None:
                clusters_store.pin(self.db, target, keep)
            clusters_store.mark_manual(self.db, members[source])
            self.pipeline.refresh_clusters({target}, self.clock())
            self.pipeline.clusters_merged(source, target)

    def move_item_out(self, item_id: int, author: str) -> int:
        """Take an item out of its story into a story of its own; remembered as cannot-links."""
        return self.split_out([item_id], author)

    def split_out(self, item_ids: Collection[int], author: str) -> int:
        """Take some items of one story out into a new story of their own (undoing a
        wrong merge, or a story that was two); returns the new story's id.

        Remembered as cannot-links between each item taken and each item left, and
        must-links among the items taken (they stay one story); merges that lose
        items keep the rest of their items together.  An item taken stops being the
        story's pinned canonical item.
        """
        moved = set(item_ids)
        if not moved:
            raise CorrectionError("no items were chosen")
        with self._writing():
            self._no_reclustering()
            where = clusters_store.clusters_of(self.db, sorted(moved))
            if len(where) < len(moved):
                raise CorrectionError("no such item")
            (current, *others_clusters) = set(where.values())
            if others_clusters:
                raise CorrectionError("the items are in different stories")
            others = [i for i in clusters_store.member_ids(self.db, [current])[current] if i not in moved]
            if not others:
                one = len(moved) == 1
                raise CorrectionError(
                    "the item is already alone in its story" if one else "every item of the story was chosen"
                )
            now = self.clock()
            merges = rules_store.must_groups(self.db)
            rules_store.add(self.db, "cannot", [(i, o) for i in sorted(moved) for o in others], author, now)
            self._keep_merges(merges, moved, author)
            if len(moved) > 1:
                self._tie(moved, author)
            rules_store.unpin_cluster(self.db, sorted(moved))  # no longer the story's canonical item
            new = clusters_store.create(self.db, now)
            clusters_store.add_members(self.db, [(i, new, 1.0, "manual", None) for i in sorted(moved)], now)
            self.pipeline.refresh_clusters({current, new}, now)
            for i in sorted(moved):
                self.pipeline.item_moved(i, current, new)
        return new

    def pin_canonical(self, item_id: int, author: str) -> None:
        """Make an item its story's canonical item, now and after any re-clustering."""
        with self._writing():
            self._no_reclustering()
            current = clusters_store.clusters_of(self.db, [item_id]).get(item_id)
            if current is None:
                raise CorrectionError("no such item")
            members = clusters_store.member_ids(self.db, [current])[current]
            rules_store.unpin_cluster(self.db, members)
            rules_store.add(self.db, "pin", [(item_id, None)], author, self.clock())
            clusters_store.pin(self.db, current, item_id)
            self.pipeline.refresh_clusters({current}, self.clock())

    def correction_rules(self, *, limit: int | None = None, offset: int = 0) -> list[Rule]:
        """The admins' correction rules, newest first."""
        return rules_store.all_rules(self.db, -1 if limit is None else max(0, limit), max(0, offset))

    def correction_rule(self, rule_id: int) -> Rule | None:
        return rules_store.get(self.db, rule_id)

    def rules_for_items(self, item_ids: Collection[int]) -> list[Rule]:
        """The rules naming any of these items (a story's), newest first."""
        return rules_store.for_items(self.db, item_ids)

    def delete_rule(self, rule_id: int) -> None:
        with self._writing():
            self._no_reclustering()
            rules_store.delete(self.db, rule_id)

    # -- queries -----------------------------------------------------------------------

    def clusters(
        self, *, sort: str = "latest", limit: int = 20, offset: int = 0, min_outlets: int = 1
    ) -> list[ClusterSummary]:
        limit, offset = _page(limit, offset)
        return clusters_store.listing(self.db, sort=sort, limit=limit, offset=offset, min_outlets=min_outlets)

    def cluster(self, cluster_id: int) -> ClusterDetail | None:
        return clusters_store.detail(self.db, cluster_id)

    def merged_into(self, cluster_id: int) -> int | None:
        """The story a story that no longer exists became part of (a merge, or a
        re-clustering that joined it to another), if that one exists."""
        return clusters_store.merged_into(self.db, cluster_id)

    def items_by_id(self, item_ids: Iterable[int]) -> dict[int, StoredItem]:
        """Stored items (with their current cluster) by id; missing ids are left out."""
        return {i.id: i for i in items_store.get_many(self.db, list(dict.fromkeys(item_ids)))}

    def backup(self, dest: str | Path) -> None:
        """A consistent copy of the database at ``dest``, taken while others write."""
        storage_backup(self.db, dest)

    def integrity_check(self) -> str:
        return storage_integrity_check(self.db)

    def counts(self) -> dict[str, int]:
        return {
            "feeds": feeds_store.count(self.db),
            "items": items_store.count(self.db),
            "clusters": clusters_store.count(self.db),
        }

    def export_rows(self) -> Iterator[dict[str, Any]]:
        return items_store.export_rows(self.db)

    def export_jsonl(self, out: IO[str]) -> int:
        n = 0
        for row in self.export_rows():
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n

    # -- the site and the merged feeds -------------------------------------------------

    def stories(
        self,
        story_filter: StoryFilter | None = None,
        *,
        sort: str = "latest",
        limit: int = 20,
        offset: int = 0,
        cursor: StoryCursor | None = None,
    ) -> list[ClusterSummary]:
        """Stories passing a filter (outlets, feed, category, search words), newest or most covered first.

        ``cursor`` (:meth:`StoryCursor.of` a story listed before): the stories past it,
        or the nearest before it, in its order; pages that do not move as stories arrive.
        """
        f = story_filter or StoryFilter()
        match = None
        if f.query:
            match = search_store.fts_query(f.query)
            if match is None:  # no word to look for: nothing matches
                return []
        limit, offset = _page(limit, offset)
        return clusters_store.stories(self.db, f, match, sort=sort, limit=limit, offset=offset, cursor=cursor)

    def story_members(
        self, cluster_ids: Sequence[int], per_story: int | None = None, latest: int = 0
    ) -> dict[int, list[StoredItem]]:
        """Every outlet's variant of each story (the first ``per_story``, and the
        ``latest`` last ones), oldest first."""
        return clusters_store.members_of(self.db, list(cluster_ids), per_story, latest)

    def search(
        self,
        text: str,
        *,
        limit: int = 20,
        offset: int = 0,
        hits_per_story: int = 5,
        before: int | None = None,
    ) -> list[StoryHits]:
        """Full-text search over items; results grouped by story, best story first.

        Ranks the newest ``web.search_window`` matching items (of those stored before
        item ``before``, if given: see :meth:`search_older`): headline matches
        first, then headline-or-summary, then the rest; newer stories first among
        equals (see :func:`aggregator.storage.search.story_hits`).
        """
        match = search_store.fts_query(text)
        if match is None:
            return []
        found = search_store.story_hits(
            self.db,
            match,
            limit,
            offset,
            hits_per_story=hits_per_story,
            window=self.settings.web.search_window,
            before=before,
        )
        ids = [cid for cid, _, _ in found]
        items = {
            i.id: i for i in items_store.get_many(self.db, [h.item_id for _, hs, _ in found for h in hs])
        }
        grouped = {
            cid: [SearchHit(items[h.item_id], h.snippet, h.rank) for h in hs if h.item_id in items]
            for cid, hs, _ in found
        }
        matched = {cid: n for cid, _, n in found}
        return [
            StoryHits(s, grouped[s.id], max(0, matched[s.id] - len(grouped[s.id])))
            for s in clusters_store.summaries(self.db, ids)
        ]

    def search_older(self, text: str, before: int | None = None) -> int | None:
        """The ``before`` that makes :meth:`search` rank the next older matching items,
        or None when the search with this ``before`` already reaches the oldest."""
        match = search_store.fts_query(text)
        if match is None:
            return None
        return search_store.older_than_window(self.db, match, self.settings.web.search_window, before)

    def feed_items(self, feed_id: int, *, limit: int = 20, offset: int = 0) -> list[StoredItem]:
        """A feed's items, newest first."""
        limit, offset = _page(limit, offset)
        return items_store.for_feed(self.db, feed_id, limit, offset)

    def freshness(self, *, feeds: bool = False) -> Freshness:
        """A cheap fingerprint of the stories (and, with ``feeds``, of every feed's polling state).

        The token changes whenever what the site or the merged feeds show may have
        changed; ``last_modified`` is the latest change time known.  For ETag and
        Last-Modified, computed before rendering anything.
        """
        version = clusters_store.version(self.db)
        parts: list[Any] = [version, feeds_store.names_version(self.db)]
        last = float(version[0] or 0.0)
        if feeds:
            state = feeds_store.state_version(self.db)
            parts.append(state)
            last = max(last, float(state[2] or 0.0))
        token = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=12).hexdigest()
        return Freshness(token=token, last_modified=last)

    def story_freshness(self, cluster_id: int) -> Freshness:
        """:meth:`freshness` for one story's page: changes when that story or the name of
        one of its outlets changes, not when another story or outlet does (falls back to
        :meth:`freshness` for a story that does not exist)."""
        version = clusters_store.story_version(self.db, cluster_id)
        if version is None:
            return self.freshness()
        feed_ids = [int(pair[0]) for pair in json.loads(version[8] or "[]")]
        parts = ["story", cluster_id, version, feeds_store.names_of(self.db, feed_ids)]
        token = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=12).hexdigest()
        return Freshness(token=token, last_modified=float(version[7] or 0.0))
