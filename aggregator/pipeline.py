"""The one update routine: feed -> fetch -> parse -> normalize -> fingerprint -> cluster -> store.

The scheduler, the command line and the web app all go through :class:`Pipeline`.
Each feed's result is written in one transaction, so a crash loses nothing that
was already committed and never leaves half a feed behind.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlite_utils import Database

from aggregator import canonical
from aggregator.cluster import ClusterEngine, Doc
from aggregator.fetch import Fetcher
from aggregator.fingerprint import Features, features, signatures
from aggregator.models import Entry, Feed, FetchResult, Item, MemberInfo, ParsedFeed, UpdateReport
from aggregator.normalize import normalize_entry
from aggregator.parse import parse_feed
from aggregator.schedule import PollOutcome, next_poll
from aggregator.settings import Settings
from aggregator.storage import clusters as clusters_store
from aggregator.storage import feeds as feeds_store
from aggregator.storage import items as items_store
from aggregator.storage import meta as meta_store
from aggregator.storage import write_transaction

__all__ = ["IngestResult", "Pipeline"]

log = logging.getLogger("aggregator.poll")

GENERATION_KEY = "index_generation"
EARLIEST_PLAUSIBLE = 631152000.0  # 1990-01-01: older dates are treated as missing


@dataclass
class IngestResult:
    new_ids: list[int]
    updated_ids: list[int]
    duplicates_in_feed: int = 0


class Pipeline:
    """Runs feeds through the stages and keeps the in-memory cluster index in step."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self._engine: ClusterEngine | None = None
        self._generation: str | None = None
        self._last_id = 0

    # -- the cluster index: derived data, rebuilt from the database --------------------

    def invalidate(self) -> None:
        """Tell every process holding an index (this one too) to rebuild it."""
        meta_store.bump(self.db, GENERATION_KEY)
        self._engine = None

    def engine(self) -> ClusterEngine:
        """The index, rebuilt if another process changed clusters, caught up with new items."""
        generation = meta_store.get(self.db, GENERATION_KEY)
        if self._engine is None or generation != self._generation:
            self._engine = ClusterEngine(self.settings.cluster)
            self._generation = generation
            self._last_id = 0
        self._catch_up(self._engine)
        return self._engine

    def rebuild_index(self) -> int:
        """Rebuild the LSH index and cluster profiles from stored signatures; returns items indexed."""
        self._engine = None
        return len(self.engine())

    def _catch_up(self, engine: ClusterEngine) -> None:
        latest = items_store.latest_time(self.db)
        if latest is None:
            return
        since = latest - engine.window_seconds
        num_perm = self.settings.cluster.num_perm
        rows = list(items_store.index_rows(self.db, since, num_perm, after_id=self._last_id))
        if not rows:
            return
        feats = [self._features(r.title, r.text) for r in rows]
        missing = [n for n, r in enumerate(rows) if r.signature is None]
        fresh = signatures([feats[n].tokens for n in missing], num_perm) if missing else None
        for n, r in enumerate(rows):
            sig = r.signature
            if sig is None:
                assert fresh is not None
                sig = fresh[missing.index(n)]
            if r.cluster_id is not None:
                engine.add(Doc(r.item_id, r.sort_time, feats[n], sig), r.cluster_id)
        self._last_id = max(self._last_id, items_store.max_id(self.db))
        engine.evict_before(latest - engine.window_seconds)

    def _features(self, title: str, text: str) -> Features:
        c = self.settings.cluster
        return features(title, text, body_words=c.body_words, title_weight=c.title_weight)

    # -- one feed ----------------------------------------------------------------------

    def update_feed(self, feed: Feed, fetcher: Fetcher) -> UpdateReport:
        """Fetch one feed and process what came back."""
        return self.process(feed, fetcher.fetch(feed.url, feed.etag, feed.last_modified))

    def process(self, feed: Feed, result: FetchResult) -> UpdateReport:
        """Parse, ingest and record the outcome of one fetch.  Never raises for bad feeds."""
        now = self.clock()
        report = UpdateReport(feed.url, result.status, elapsed_ms=result.elapsed_ms)
        parsed: ParsedFeed | None = None
        if result.status == "ok":
            parsed = parse_feed(result.body, result.final_url or feed.url, result.headers)
            if parsed.error:
                report.status, report.error = "error", parsed.error
            report.warning = parsed.warning
        else:
            report.error = result.error
        try:
            with write_transaction(self.db):
                if parsed is not None and not parsed.error:
                    ingest = self.ingest(feed.id, parsed.entries, now)
                    report.new_items = len(ingest.new_ids)
                    report.updated_items = len(ingest.updated_ids)
                    if ingest.duplicates_in_feed and not report.warning:
                        report.warning = f"{ingest.duplicates_in_feed} entries repeated an earlier entry's id"
                self._record(feed, result, parsed, report, now)
        except Exception as exc:
            # The transaction rolled back: nothing of this feed was stored, and the
            # in-memory index may hold items that are not in the database.
            self._engine = None
            log.exception("update of %s failed", feed.url)
            report.status, report.error = (
                "error",
                f"internal error while storing: {type(exc).__name__}: {exc}",
            )
            report.new_items = report.updated_items = 0
            with write_transaction(self.db):
                self._record(feed, result, None, report, now)
        log.info(
            "poll feed=%s status=%s http=%s new=%d updated=%d ms=%.0f error=%s",
            feed.url,
            report.status,
            result.http_status,
            report.new_items,
            report.updated_items,
            result.elapsed_ms,
            report.error or "",
        )
        return report

    def _record(
        self, feed: Feed, result: FetchResult, parsed: ParsedFeed | None, report: UpdateReport, now: float
    ) -> None:
        plan = next_poll(
            PollOutcome(
                "error" if report.status == "error" else result.status,
                ttl_minutes=parsed.ttl_minutes if parsed else None,
                max_age=result.max_age,
                retry_after=result.retry_after,
            ),
            failures=feed.failures,
            error_since=feed.error_since,
            now=now,
            settings=self.settings.schedule,
            rng=self.rng,
        )
        fields: dict[str, object] = {
            "status": plan.status,
            "next_poll_at": plan.next_poll_at,
            "interval_minutes": plan.interval_minutes,
            "failures": plan.failures,
            "error_since": plan.error_since,
            "last_polled_at": now,
            "last_error": report.error,
            "warning": report.warning,
            "polls+": 1,
            "fetch_ms_total+": result.elapsed_ms,
            "not_modified+": int(result.status == "not_modified"),
            "items_total+": report.new_items,
            "last_items_added": report.new_items,
        }
        if plan.status in ("ok", "not_modified"):
            fields["last_ok_at"] = now
            if result.etag or result.last_modified or result.status == "ok":
                fields["etag"] = result.etag
                fields["last_modified"] = result.last_modified
        if parsed is not None and not parsed.error:
            if parsed.title:
                fields["title"] = parsed.title
            if parsed.link:
                fields["site_url"] = parsed.link
        moved = result.permanent_url
        if moved and moved != feed.url and feeds_store.get_by_url(self.db, moved) is None:
            fields["url"] = moved
        feeds_store.update_state(self.db, feed.id, fields)

    # -- entries to clusters -----------------------------------------------------------

    def ingest(self, feed_id: int, entries: Sequence[Entry], now: float) -> IngestResult:
        """Store entries of one feed and cluster the new ones.  Call inside a transaction."""
        engine = self.engine()
        items: list[Item] = []
        seen: set[str] = set()
        for entry in entries:
            item = normalize_entry(entry)
            if item.identity in seen:
                continue
            seen.add(item.identity)
            items.append(item)
        duplicates = len(entries) - len(items)
        known = items_store.existing(self.db, feed_id, [i.identity for i in items])
        new: list[tuple[int, Item, float]] = []
        changed: list[tuple[int, Item]] = []
        for item in items:
            if item.identity not in known:
                sort_time = self._sort_time(item.published, now)
                new.append((items_store.insert(self.db, feed_id, item, now, sort_time), item, sort_time))
            elif known[item.identity][1] != item.content_hash:
                item_id = known[item.identity][0]
                items_store.update(self.db, item_id, item, now)
                changed.append((item_id, item))
        todo = [(i, it) for i, it, _ in new] + changed
        feats = [self._features(it.title, it.text) for _, it in todo]
        sigs = signatures([f.tokens for f in feats], self.settings.cluster.num_perm)
        items_store.save_signatures(self.db, [(i, sigs[n]) for n, (i, _) in enumerate(todo)])
        touched: set[int] = set()
        docs = {item_id: Doc(item_id, 0.0, feats[n], sigs[n]) for n, (item_id, _) in enumerate(todo)}
        # New items join clusters in time order, as if they had arrived one by one.
        for item_id, item, sort_time in sorted(new, key=lambda x: (x[2], x[0])):
            doc = Doc(item_id, sort_time, docs[item_id].features, docs[item_id].signature)
            touched.add(self._assign(engine, feed_id, item.canonical_link, item.content_hash, doc, now))
        # Edited items keep their cluster; their profile in the index is refreshed.
        current = engine.clusters_of(i for i, _ in changed)
        for item_id, _item in changed:
            cid = current.get(item_id)
            if cid is not None:
                old = engine.doc(item_id)
                engine.add(
                    Doc(item_id, old.time if old else now, docs[item_id].features, docs[item_id].signature),
                    cid,
                )
                touched.add(cid)
        self.refresh_clusters(touched, now)
        self._last_id = max(self._last_id, max((i for i, _, _ in new), default=0))
        return IngestResult([i for i, _, _ in new], [i for i, _ in changed], duplicates)

    def _sort_time(self, published: float | None, now: float) -> float:
        """When the story happened, as far as ordering goes: a future date is clamped to now."""
        if published is None or published < EARLIEST_PLAUSIBLE:
            return now
        return min(published, now)

    def _assign(
        self,
        engine: ClusterEngine,
        feed_id: int,
        canonical_link: str | None,
        content_hash: str,
        doc: Doc,
        now: float,
    ) -> int:
        """Put one new item in a cluster: same link, else same words, else the engine decides."""
        window = engine.window_seconds
        hit = None
        signal = ""
        if canonical_link:
            hit = items_store.find_by_link(self.db, canonical_link, exclude_feed=feed_id)
            signal = "same-link"
        if hit is None:
            hit = items_store.find_by_content_hash(
                self.db, content_hash, doc.time - window, exclude_item=doc.item_id
            )
            signal = "exact-copy"
        matched: int | None
        if hit is not None:
            matched, cluster_id = hit
            score = 1.0
        else:
            proposal = engine.propose(doc)
            matched, score, signal = proposal.matched_item_id, proposal.score, proposal.signal
            cluster_id = (
                proposal.cluster_id
                if proposal.cluster_id is not None
                else clusters_store.create(self.db, now)
            )
        clusters_store.add_member(self.db, doc.item_id, cluster_id, score, signal, matched, now)
        engine.add(doc, cluster_id)
        return cluster_id

    def refresh_clusters(self, cluster_ids: set[int], now: float) -> None:
        c = self.settings.cluster

        def choose(members: Sequence[MemberInfo]) -> int:
            return canonical.choose(members, c.canonical_policy, c.preferred_sources)

        clusters_store.refresh(self.db, cluster_ids, choose, now)

    # -- whole archive -----------------------------------------------------------------

    def recluster(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Forget all clusters and assign every item again, in time order; returns items.

        Runs in one transaction: readers keep seeing the old clusters until it commits.
        """
        now = self.clock()
        num_perm = self.settings.cluster.num_perm
        with write_transaction(self.db):
            ids = items_store.all_item_ids(self.db)
            clusters_store.clear_all(self.db)
            engine = ClusterEngine(self.settings.cluster)
            touched: set[int] = set()
            for start in range(0, len(ids), 1000):
                rows = items_store.index_rows_for(self.db, ids[start : start + 1000], num_perm)
                feats = [self._features(r.title, r.text) for r in rows]
                missing = [n for n, r in enumerate(rows) if r.signature is None]
                if missing:
                    fresh = signatures([feats[n].tokens for n in missing], num_perm)
                    items_store.save_signatures(
                        self.db, [(rows[n].item_id, fresh[k]) for k, n in enumerate(missing)]
                    )
                    sigs = {n: fresh[k] for k, n in enumerate(missing)}
                for n, r in enumerate(rows):
                    sig = r.signature if r.signature is not None else sigs[n]
                    engine.evict_before(r.sort_time - engine.window_seconds)
                    doc = Doc(r.item_id, r.sort_time, feats[n], sig)
                    touched.add(self._assign(engine, r.feed_id, r.canonical_link, r.content_hash, doc, now))
                if progress:
                    progress(min(start + 1000, len(ids)), len(ids))
            self.refresh_clusters(touched, now)
            meta_store.bump(self.db, GENERATION_KEY)
        self._engine = None
        return len(ids)
