"""The public facade: create an aggregator, add feeds, update, query clusters, change settings."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from aggregator import opml
from aggregator.fetch import Fetcher, FetchLimits, address_problem, is_local, local_path
from aggregator.models import (
    ClusterDetail,
    ClusterSummary,
    Feed,
    FetchResult,
    Freshness,
    SearchHit,
    StoredItem,
    StoryFilter,
    StoryHits,
    UpdateReport,
)
from aggregator.pipeline import Pipeline
from aggregator.settings import Settings, load_settings
from aggregator.storage import backup as storage_backup
from aggregator.storage import clusters as clusters_store
from aggregator.storage import feeds as feeds_store
from aggregator.storage import integrity_check as storage_integrity_check
from aggregator.storage import items as items_store
from aggregator.storage import open_database, write_transaction
from aggregator.storage import search as search_store

__all__ = ["Aggregator", "FeedError"]

Progress = Callable[[int, int], None]
SETTLE_SECONDS = 1.0


class FeedError(ValueError):
    """A feed URL cannot be added or found."""


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
        self.settings = settings
        self.db_path = Path(db_path) if db_path is not None else settings.db_path
        self.db = open_database(self.db_path, migrate=migrate)
        self.clock = clock
        self.pipeline = Pipeline(self.db, settings, clock)
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls, config: str | Path | None = None, db: str | Path | None = None, **overrides: Any
    ) -> Aggregator:
        """Open with settings from ``config`` (default ``config.toml``) and an optional database path."""
        return cls(load_settings(config, overrides or None), db_path=db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Aggregator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- feeds -------------------------------------------------------------------------

    def add_feed(self, url: str, title: str | None = None, *, via_site: bool = False) -> tuple[Feed, bool]:
        """Subscribe to a feed URL (or a local file, when allowed); returns it and whether it is new.

        ``via_site``: the URL comes from a web form, so only http(s) URLs are accepted.
        """
        url = self._check_url(url, via_site=via_site)
        with self._lock:
            return feeds_store.add(self.db, url, self.clock(), title)

    def _check_url(self, url: str, *, via_site: bool = False) -> str:
        url = url.strip()
        if not url:
            raise FeedError("empty feed URL")
        if len(url) > 2000:
            raise FeedError("feed URL too long (2,000 characters at most)")
        if is_local(url) and not via_site:
            if not self.settings.feeds.allow_local_files:
                raise FeedError(f"local files are not allowed by the configuration: {url}")
            path = local_path(url)
            if not path.is_absolute():
                path = Path.cwd() / path
            if not path.is_file():
                raise FeedError(f"no such file: {path}")
            return path.resolve().as_uri()
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise FeedError(f"not a valid URL: {url}") from None
        if parts.scheme.lower() not in ("http", "https") or not host:
            what = "an http(s) URL" if via_site else "an http(s) URL or a file"
            raise FeedError(f"not {what}: {url}")
        if not self.settings.feeds.allow_private_addresses:
            problem = address_problem(url)
            if problem:
                raise FeedError(problem)
        return url

    def remove_feed(self, url_or_id: str | int) -> bool:
        feed = self.feed(url_or_id)
        if feed is None:
            return False
        with self._lock, write_transaction(self.db):
            touched = feeds_store.remove(self.db, feed.id)
            self.pipeline.refresh_clusters(set(touched), self.clock())
            self.pipeline.invalidate()
        return True

    def feed(self, url_or_id: str | int) -> Feed | None:
        if isinstance(url_or_id, int):
            return feeds_store.get(self.db, url_or_id)
        found = feeds_store.get_by_url(self.db, url_or_id)
        if found is None and is_local(url_or_id):
            try:
                found = feeds_store.get_by_url(self.db, self._check_url(url_or_id))
            except FeedError:
                return None
        return found

    def feeds(self) -> list[Feed]:
        return feeds_store.all_feeds(self.db)

    def pause_feed(self, feed_id: int, paused: bool = True) -> None:
        feeds_store.set_paused(self.db, feed_id, paused)

    def import_opml(self, source: str | Path | bytes) -> tuple[list[Feed], list[str]]:
        """Subscribe to every feed of an OPML file; returns (new feeds, problems)."""
        base = None
        if isinstance(source, (str, Path)):
            path = Path(source)
            data = path.read_bytes()
            base = path.resolve().parent
        else:
            data = source
        added: list[Feed] = []
        problems: list[str] = []
        for entry in opml.read(data):
            url = entry.url
            if base is not None and is_local(url) and not local_path(url).is_absolute():
                url = str(base / local_path(url))
            try:
                feed, new = self.add_feed(url, entry.title)
            except FeedError as exc:
                problems.append(str(exc))
                continue
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
            return 0
        added, _ = self.import_opml(path)
        return len(added)

    # -- updating ----------------------------------------------------------------------

    def update(
        self,
        feeds: Iterable[Feed] | None = None,
        *,
        progress: Callable[[UpdateReport], None] | None = None,
    ) -> list[UpdateReport]:
        """Poll feeds (default: every due feed) once.

        Fetches run concurrently, within overall and per-host limits; each result
        is parsed, clustered and stored as soon as it arrives, one feed at a time.
        """
        todo = list(feeds) if feeds is not None else feeds_store.due(self.db, self.clock())
        if not todo:
            return []
        fs = self.settings.fetch
        hosts: dict[str, threading.Semaphore] = {}

        def fetch(feed: Feed, fetcher: Fetcher) -> FetchResult:
            host = urlsplit(feed.url).hostname or ""
            with hosts.setdefault(host, threading.Semaphore(fs.per_host_concurrency)):
                return fetcher.fetch(feed.url, feed.etag, feed.last_modified)

        reports: list[UpdateReport] = []
        with (
            Fetcher(
                FetchLimits.from_settings(fs), allow_local_files=self.settings.feeds.allow_local_files
            ) as fetcher,
            ThreadPoolExecutor(max_workers=min(fs.max_concurrency, len(todo))) as pool,
        ):
            futures: dict[Future[FetchResult], Feed] = {pool.submit(fetch, f, fetcher): f for f in todo}
            # Feeds that answer within the settle time are processed in a fixed order (by
            # feed id), so the same feeds give the same clusters; slower ones as they come.
            done, _ = wait(futures, timeout=SETTLE_SECONDS)
            ready = sorted(done, key=lambda f: futures[f].id)
            rest = [f for f in futures if f not in done]
            for fut in itertools.chain(ready, as_completed(rest)):
                with self._lock:
                    report = self.pipeline.process(futures[fut], fut.result())
                reports.append(report)
                if progress:
                    progress(report)
        return reports

    def update_feed(self, url_or_id: str | int) -> UpdateReport:
        feed = self.feed(url_or_id)
        if feed is None:
            raise FeedError(f"no such feed: {url_or_id}")
        return self.update([feed])[0]

    def recluster(self, progress: Progress | None = None) -> int:
        with self._lock:
            return self.pipeline.recluster(progress)

    def rebuild_index(self) -> int:
        with self._lock:
            return self.pipeline.rebuild_index()

    # -- queries -----------------------------------------------------------------------

    def clusters(
        self, *, sort: str = "latest", limit: int = 20, offset: int = 0, min_outlets: int = 1
    ) -> list[ClusterSummary]:
        return clusters_store.listing(self.db, sort=sort, limit=limit, offset=offset, min_outlets=min_outlets)

    def cluster(self, cluster_id: int) -> ClusterDetail | None:
        return clusters_store.detail(self.db, cluster_id)

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
    ) -> list[ClusterSummary]:
        """Stories passing a filter (outlets, feed, category, search words), newest or most covered first."""
        f = story_filter or StoryFilter()
        match = None
        if f.query:
            match = search_store.fts_query(f.query)
            if match is None:  # no word to look for: nothing matches
                return []
        return clusters_store.stories(self.db, f, match, sort=sort, limit=limit, offset=offset)

    def story_members(self, cluster_ids: Sequence[int]) -> dict[int, list[StoredItem]]:
        """Every outlet's variant of each story, oldest first."""
        return clusters_store.members_of(self.db, list(cluster_ids))

    def search(
        self, text: str, *, limit: int = 20, offset: int = 0, hits_per_story: int = 5
    ) -> list[StoryHits]:
        """Full-text search over items; results grouped by story, best story first."""
        match = search_store.fts_query(text)
        if match is None:
            return []
        ranks = search_store.cluster_ranks(self.db, match, limit, offset)
        ids = [cid for cid, _ in ranks]
        found = search_store.hits(self.db, match, ids)
        items = {i.id: i for i in items_store.get_many(self.db, [h.item_id for h in found])}
        grouped: dict[int, list[SearchHit]] = {cid: [] for cid in ids}
        for h in found:
            item = items.get(h.item_id)
            if item is not None and len(grouped[h.cluster_id]) < hits_per_story:
                grouped[h.cluster_id].append(SearchHit(item, h.snippet, h.rank))
        return [StoryHits(s, grouped[s.id]) for s in clusters_store.summaries(self.db, ids)]

    def feed_items(self, feed_id: int, *, limit: int = 20, offset: int = 0) -> list[StoredItem]:
        """A feed's items, newest first."""
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
