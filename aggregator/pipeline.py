"""The one update routine: feed -> fetch -> parse -> normalize -> fingerprint -> cluster -> store.

The scheduler, the command line and the web app all go through :class:`Pipeline`.
Each feed's result is written in one transaction, so a crash loses nothing that
was already committed and never leaves half a feed behind.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlite_utils import Database

from aggregator import canonical
from aggregator.cluster import ClusterEngine
from aggregator.fetch import Fetcher, feed_url_form
from aggregator.fingerprint import Features, signatures
from aggregator.models import (
    Entry,
    Feed,
    FetchResult,
    Item,
    MemberInfo,
    ParsedFeed,
    UpdateReport,
    outlet_name,
)
from aggregator.prepare import Prepared, normalize_entries, prepare
from aggregator.replay import Evidence, Replayer, article_link, decide, exact_copy_counts
from aggregator.schedule import PollOutcome, next_poll
from aggregator.settings import Settings
from aggregator.storage import clusters as clusters_store
from aggregator.storage import feeds as feeds_store
from aggregator.storage import items as items_store
from aggregator.storage import meta as meta_store
from aggregator.storage import read_snapshot, write_transaction
from aggregator.storage import rules as rules_store
from aggregator.storage import versions as versions_store

__all__ = ["IngestResult", "Pipeline", "RulesChanged"]

log = logging.getLogger("aggregator.poll")

GENERATION_KEY = "index_generation"
EARLIEST_PLAUSIBLE = 631152000.0  # 1990-01-01: older dates are treated as missing
_FROZEN_KEYS = frozenset({"v", "t", "e", "n"})  # what ClusterEngine.restore_frozen reads


class RulesChanged(RuntimeError):
    """An admin's corrections changed while a re-clustering ran."""


@dataclass
class IngestResult:
    new_ids: list[int]
    updated_ids: list[int]
    duplicates_in_feed: int = 0


def restart_rows(
    rows: list[items_store.IndexRow], latest: float, horizon: float, tag: str
) -> tuple[list[items_store.IndexRow], set[int]]:
    """Of the stored items of the last two horizons (in time order), those a restart
    must put back into an empty engine to reach the running engine's state; and
    the clusters still live in the index.

    An item older than one horizon before ``latest`` has left the index by the end.
    It still counts through its cluster's profile when a newer member keeps that
    cluster live (the caller adds such members older than ``rows`` too), and, for
    an item stored without a usable vector (``tag`` is
    :attr:`ClusterEngine.settings_tag`), through the document frequencies its
    vector is computed from: so the replay starts one horizon before the oldest
    such item, else one horizon before ``latest``, plus every member of a live
    cluster.  With every vector stored, that halves the work of a start-up.
    """
    recent = latest - horizon
    # How ClusterEngine.freeze's JSON begins (compact since orjson; spaced before).
    heads = tuple(json.dumps({"s": tag}, separators=sep)[:-1] + "," for sep in ((",", ":"), (", ", ": ")))
    slow = [r.sort_time for r in rows if r.frozen is None or not r.frozen.startswith(heads)]
    start = min(recent, slow[0] - horizon) if slow else recent
    live = {r.cluster_id for r in rows if r.sort_time >= recent and r.cluster_id is not None}
    return [r for r in rows if r.sort_time >= start or r.cluster_id in live], live


def _by_time(found: tuple[int, float, int]) -> tuple[float, int]:
    """(item id, sort time, cluster id): earliest first, as a replay meets them."""
    return found[1], found[0]


def _canonical_policy(settings: Settings) -> Callable[[Sequence[MemberInfo]], int]:
    """The configured choice of a cluster's canonical item, as the storage takes it."""
    c = settings.cluster

    def choose(members: Sequence[MemberInfo]) -> int:
        return canonical.choose(members, c.canonical_policy, c.preferred_sources)

    return choose


def _frozen_json(frozen: dict[str, Any]) -> str:
    """``ClusterEngine.freeze``'s record as stored: compact JSON, by orjson (a seventh of
    json.dumps's time, which was 4 % of an item's time in the pipeline); a term with a
    lone surrogate (orjson takes UTF-8 only) by json, which escapes it."""
    try:
        return orjson.dumps(frozen).decode()
    except TypeError:
        return json.dumps(frozen, separators=(",", ":"))


def _frozen(raw: str | None, tag: str) -> dict[str, Any] | None:
    """An item's stored arrival vector (``ClusterEngine.freeze``), if usable with the
    settings ``tag``; None if missing, made with other settings, or damaged."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # (a lone surrogate, escaped by json.dumps: orjson does not read it)
            data = json.loads(raw)
        except ValueError:
            return None
    if isinstance(data, dict) and data.get("s") == tag and data.keys() >= _FROZEN_KEYS:
        return data
    return None


# How many times an update leaves the write lock to bring its index up to date after
# another process changed the clusters, before it does so holding the lock.
_INDEX_RETRIES = 2


class _IndexChanged(Exception):
    """Raised inside the write transaction to leave it (nothing written) and update the index."""


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
        self.rebuilds = 0  # how many times this pipeline built its index from the database

    # -- the cluster index: derived data, rebuilt from the database --------------------

    def invalidate_local(self) -> None:
        """Rebuild this process's index on next use (settings changed)."""
        self._engine = None

    def invalidate(self) -> None:
        """Tell every process holding an index (this one too) to rebuild it."""
        meta_store.bump(self.db, GENERATION_KEY)
        self._engine = None

    def clusters_merged(self, source: int, target: int) -> None:
        """Cluster ``source`` became part of ``target`` (an admin's merge): every process
        holding an index (this one too) applies the merge to it on next use, no rebuild."""
        meta_store.log_change(self.db, GENERATION_KEY, "merge", source, target)

    def item_moved(self, item_id: int, source: int, target: int) -> None:
        """An admin moved an item from cluster ``source`` to ``target``: every process
        holding an index remakes both clusters' profiles on next use, no rebuild."""
        meta_store.log_change(self.db, GENERATION_KEY, "move", item_id, source, target)

    def feed_removed(self, feed_id: int) -> None:
        """A feed and its items are gone: every process holding an index (this one too)
        takes the items out and remakes the profiles of their clusters on next use, no
        rebuild."""
        meta_store.log_change(self.db, GENERATION_KEY, "remove", feed_id, 0)

    def _merged_here(self, source: int, target: int) -> None:
        """This process's index merged ``source`` into ``target``: others apply it, not us."""
        self._generation = str(meta_store.log_change(self.db, GENERATION_KEY, "merge", source, target))

    def engine(self) -> ClusterEngine:
        """The index, with changes other processes made to clusters applied (or rebuilt
        when they cannot be), caught up with new items."""
        # The generation, the changes and rows applied, and the items caught up with, all
        # as of one moment (a change committed in between was applied twice).
        with read_snapshot(self.db):
            generation = meta_store.get(self.db, GENERATION_KEY)
            held = self._engine
            if held is not None and generation != self._generation:
                try:
                    applied = self._apply_changes(held, self._generation, generation)
                except Exception:  # a bug here must not stop polling: the rebuild is always right
                    log.exception("applying changes to the cluster index failed; rebuilding it")
                    applied = False
                self._engine = held if applied else None
            if self._engine is None:
                self._engine = ClusterEngine(self.settings.cluster, keep_vectors=True)
                self.rebuilds += 1
                self._last_id = 0
            self._generation = generation
            self._catch_up(self._engine)
            return self._engine

    def _apply_changes(self, engine: ClusterEngine, have: str | None, now: str | None) -> bool:
        """Apply the logged changes between two generations; False if some cannot be
        (then the index must be rebuilt: it may be half changed).

        Merges are applied in order.  The clusters an item moved out of or into, and
        those that lost items with a removed feed, have their profiles remade at the
        end from their members in the database (the items this index has seen), as a
        restart would make them; later merges of such a cluster are followed to the
        cluster it became part of.
        """
        changes = meta_store.changes_between(self.db, int(have or 0), int(now or 0))
        if changes is None:
            return False
        moved: set[int] = set()
        for kind, a, b, c in changes:
            if kind == "merge":
                engine.merge(a, b)
                moved = {b if x == a else x for x in moved}
            elif kind == "move" and c is not None:
                moved |= {b, c}
            elif kind == "remove":
                moved |= engine.drop(items_store.missing(self.db, engine.item_ids()))
                # A story's members that left the window are in its profile, not in the
                # index: a story that lost such members holds more than it stores.
                sizes = engine.cluster_sizes()
                stored = clusters_store.member_counts(self.db, sizes, self._last_id)
                moved |= {cid for cid, n in sizes.items() if stored.get(cid, 0) != n}
            else:
                return False
        if not moved:
            return True
        rows = items_store.index_rows_of_members(self.db, moved, self.settings.cluster.num_perm)
        tag = engine.settings_tag
        members: dict[int, list[tuple[int, float, dict[str, float], frozenset[str]]]] = {c: [] for c in moved}
        for r in rows:
            if r.item_id > self._last_id or r.cluster_id is None:
                continue  # not seen yet: the catch-up that follows puts it in
            data = _frozen(r.frozen, tag)
            if data is None:  # no vector of its arrival stored: only a rebuild remakes it
                return False
            members[r.cluster_id].append((r.item_id, r.sort_time, data["v"], frozenset(data["e"])))
        for cid, found in members.items():
            engine.reprofile(cid, found)
        return True

    def _index_current(self) -> bool:
        """Whether the index held is as of the latest generation (new items aside)."""
        return self._engine is not None and meta_store.get(self.db, GENERATION_KEY) == self._generation

    def rebuild_index(self) -> int:
        """Rebuild the LSH index and cluster profiles from stored signatures; returns items indexed."""
        self._engine = None
        return len(self.engine())

    def _catch_up(self, engine: ClusterEngine) -> None:
        """Put back stored items the engine has not seen (all of them after a restart).

        Stored items are replayed in time order.  After a restart that is the last
        horizon, every member of a cluster still live in it (its profile holds them
        all) and, for items without a stored vector, the horizon before them (their
        vectors depend on its document frequencies): see :func:`restart_rows`.
        """
        newest = items_store.max_id(self.db)
        if newest <= self._last_id:
            return
        latest = items_store.latest_time(self.db)
        if latest is None:
            return
        since = latest - 2 * engine.horizon_seconds
        num_perm = self.settings.cluster.num_perm
        rows = list(items_store.index_rows(self.db, since, num_perm, after_id=self._last_id))
        tag = engine.settings_tag
        if self._last_id == 0:
            rows, live = restart_rows(rows, latest, engine.horizon_seconds, tag)
            # A live cluster's profile holds every member it ever had, however old.
            rows = items_store.index_rows_of_clusters(self.db, live, since, num_perm) + rows
        frozen: dict[int, dict[str, Any]] = {}
        for r in rows:
            data = _frozen(r.frozen, tag)
            if data is not None:
                frozen[r.item_id] = data
        # Items without a usable stored vector are tokenised again.
        slow = [r for r in rows if r.item_id not in frozen]
        feats = {r.item_id: engine.features(r.title, r.text) for r in slow}
        missing = [r for r in slow if r.signature is None]
        fresh = signatures([feats[r.item_id].tokens for r in missing], num_perm)
        fresh_of = {r.item_id: fresh[k] for k, r in enumerate(missing)}
        for r in rows:
            if r.cluster_id is None:
                continue
            sig = r.signature if r.signature is not None else fresh_of[r.item_id]
            if r.item_id in frozen:
                engine.restore_frozen(r.item_id, r.sort_time, frozen[r.item_id], sig, r.cluster_id)
            else:
                engine.restore(r.item_id, r.sort_time, feats[r.item_id], sig, r.cluster_id)
        self._last_id = max(self._last_id, newest)

    # -- one feed ----------------------------------------------------------------------

    def update_feed(self, feed: Feed, fetcher: Fetcher) -> UpdateReport:
        """Fetch one feed and process what came back."""
        return self.process(feed, fetcher.fetch(feed.url, feed.etag, feed.last_modified))

    def process(self, feed: Feed, result: FetchResult, prepared: Prepared | None = None) -> UpdateReport:
        """Parse, ingest and record the outcome of one fetch.  Never raises for bad feeds.

        ``prepared``: the document already parsed and fingerprinted (by a worker process).
        """
        now = self.clock()
        report = UpdateReport(feed.url, result.status, elapsed_ms=result.elapsed_ms)
        parsed: ParsedFeed | None = None
        if result.status == "ok" and prepared is None:
            try:
                prepared = prepare(
                    result.body,
                    result.final_url or feed.url,
                    result.headers,
                    self.settings.cluster,
                    self.settings.fetch.max_items,
                )
            except Exception as exc:  # a bug met on this document: its feed's error, not the update's
                log.exception("preparing %s failed", feed.url)
                report.status = "error"
                report.error = f"internal error while parsing: {type(exc).__name__}: {exc}"
        if prepared is not None:
            parsed = prepared.parsed
            if parsed.error:
                report.status, report.error = "error", parsed.error
            report.warning = parsed.warning
            if prepared.skipped:
                # Feeds list their newest entries first: those were kept.
                limit = self.settings.fetch.max_items
                report.warning = (
                    f"the feed has {limit + prepared.skipped:,} entries; only the first {limit:,} were read"
                )
        elif report.error is None:
            report.error = result.error
        needs_index = (
            prepared is not None and parsed is not None and not parsed.error and bool(prepared.items)
        )
        if needs_index:
            # Build (or catch up) the index before taking the write lock: a rebuild takes
            # half a minute at a million stored items, and the site and the heartbeat write too.
            self.engine()
        try:
            for attempt in range(_INDEX_RETRIES + 1):
                try:
                    with write_transaction(self.db):
                        # Another process may have changed the clusters (a recluster, new
                        # settings) since: the index is brought up to date outside the lock.
                        if needs_index and attempt < _INDEX_RETRIES and not self._index_current():
                            raise _IndexChanged
                        if feeds_store.get(self.db, feed.id) is None:  # removed while it was fetched
                            report.status, report.error = "error", "the feed was removed during its update"
                            report.new_items = report.updated_items = 0
                            return report
                        if prepared is not None and parsed is not None and not parsed.error:
                            ingest = self.ingest_items(
                                feed.id, prepared.items, now, prepared.features, prepared.signatures
                            )
                            report.new_items = len(ingest.new_ids)
                            report.updated_items = len(ingest.updated_ids)
                            if prepared.duplicates and not report.warning:
                                report.warning = (
                                    f"{prepared.duplicates} entries repeated an earlier entry's id"
                                )
                        self._record(feed, result, parsed, report, now)
                    break
                except _IndexChanged:
                    self.engine()
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
            try:
                with write_transaction(self.db):
                    self._record(feed, result, None, report, now)
            except Exception:  # (the database is locked or failing): the next poll tries again
                log.exception("recording the failed update of %s failed too", feed.url)
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
        self, fetched: Feed, result: FetchResult, parsed: ParsedFeed | None, report: UpdateReport, now: float
    ) -> None:
        """Store the outcome of a poll and plan the next one.  Call inside a transaction.

        ``fetched`` is the feed as it was when its fetch was planned: the plan starts from
        the row as it is now (an admin may have set its interval, another update may have
        polled it meanwhile)."""
        feed = feeds_store.get(self.db, fetched.id) or fetched
        plan = next_poll(
            PollOutcome(
                "error" if report.status == "error" else result.status,
                # (a 304 has no document: the feed's interval is the one it asked for last)
                ttl_minutes=parsed.ttl_minutes
                if parsed is not None
                else feed.ttl_minutes
                if result.status == "not_modified"
                else None,
                max_age=result.max_age,
                retry_after=result.retry_after,
            ),
            failures=feed.failures,
            error_since=feed.error_since,
            now=now,
            settings=self.settings.schedule,
            rng=self.rng,
            own_minutes=feed.poll_minutes,
            last_minutes=feed.interval_minutes,
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
            "last_items_updated": report.updated_items,
        }
        # Whoever asked for this poll has it; a "Poll now" made after the round read the
        # feed is kept (the document may predate it): the feed is polled again.
        if feed.poll_requested_at is not None and feed.poll_requested_at == fetched.poll_requested_at:
            fields["poll_requested_at"] = None
        if plan.status in ("ok", "not_modified"):
            fields["last_ok_at"] = now
            if result.status == "ok":
                fields["etag"] = result.etag
                fields["last_modified"] = result.last_modified
            else:  # a 304 may repeat one validator: the other stays (it is still the feed's)
                if result.etag:
                    fields["etag"] = result.etag
                if result.last_modified:
                    fields["last_modified"] = result.last_modified
        if parsed is not None and not parsed.error:
            fields["ttl_minutes"] = parsed.ttl_minutes
            if parsed.title:
                fields["title"] = parsed.title
            if parsed.link:
                fields["site_url"] = parsed.link
        # A permanent redirect is followed for good once it leads to a working feed (a
        # botched migration that sends the feed to a home page must not lose it).
        moved = feed_url_form(result.permanent_url) if result.permanent_url else None
        working = plan.status in ("ok", "not_modified") and (parsed is None or not parsed.error)
        if working and moved and moved != feed.url and feeds_store.get_by_url(self.db, moved) is None:
            fields["url"] = moved
        feeds_store.update_state(self.db, feed.id, fields)
        title, url = fields.get("title", feed.title), fields.get("url", feed.url)
        if outlet_name(str(title) if title else None, str(url)) != feed.public_name:
            # Its stories' outlet counts go by name: two feeds may now share one, or no longer.
            clusters_store.recount_outlets(self.db, [feed.id])

    # -- entries to clusters -----------------------------------------------------------

    def ingest(self, feed_id: int, entries: Sequence[Entry], now: float) -> IngestResult:
        """Store entries of one feed and cluster the new ones.  Call inside a transaction."""
        items, duplicates = normalize_entries(entries)
        result = self.ingest_items(feed_id, items, now)
        result.duplicates_in_feed = duplicates
        return result

    def ingest_items(
        self,
        feed_id: int,
        items: Sequence[Item],
        now: float,
        feats: Sequence[Features] | None = None,
        sigs: np.ndarray | None = None,
    ) -> IngestResult:
        """Store normalised items (one per identity) and cluster the new ones.

        ``feats`` and ``sigs``, when given, are the items' features and signatures,
        computed ahead (by :func:`~aggregator.prepare.prepare`); else they are computed
        here for the new and edited items.  Call inside a transaction.
        """
        if not items:  # (no index needed: building one here would hold the write lock)
            return IngestResult([], [])
        engine = self.engine()
        known = items_store.existing(self.db, feed_id, [i.identity for i in items])
        fresh = [n for n, item in enumerate(items) if item.identity not in known]
        edited: list[int] = []
        unhashed: list[tuple[str, int]] = []
        for n, item in enumerate(items):
            if item.identity not in known:
                continue
            item_id, words, shown = known[item.identity]
            if words != item.content_hash or (shown is not None and shown != item.shown_hash):
                edited.append(n)
            elif shown is None and item.shown_hash:  # stored before migration 0022
                unhashed.append((item.shown_hash, item_id))
        # Edits the merged feeds do not show (a version's text; its summary unless it is the
        # story's canonical version) leave the story's "updated" time (see refresh_many).
        edited_ids = [known[items[n].identity][0] for n in edited]
        was = {s.id: s for s in items_store.get_many(self.db, edited_ids)}
        heads = clusters_store.canonical_among(self.db, edited_ids)
        loud: set[int] = set()
        for n in edited:
            item, item_id = items[n], known[items[n].identity][0]
            old = was.get(item_id)
            if (
                old is None
                or (old.title, old.link) != (item.title, item.link)
                or (item_id in heads and old.summary != item.summary)
            ):
                loud.add(item_id)
            # An outlet edited an item: it keeps its identity and its cluster.
            items_store.update(self.db, item_id, item, now)
        items_store.set_shown_hashes(self.db, unhashed)
        times = [self._sort_time(items[n].published, now) for n in fresh]
        ids = items_store.insert_many(self.db, feed_id, [items[n] for n in fresh], now, times)
        changed = [(known[items[n].identity][0], items[n]) for n in edited]
        new = [(i, items[n], t) for i, n, t in zip(ids, fresh, times, strict=True)]
        # An edited item keeps the fingerprint and vector of its arrival (in the index and
        # stored alike): what the site shows changes, not how it was clustered, so a
        # restart rebuilds exactly the index of the process that never stopped.
        if feats is None or sigs is None:
            feats = [engine.features(items[n].title, items[n].text) for n in fresh]
            sigs = signatures([f.tokens for f in feats], self.settings.cluster.num_perm)
        else:
            feats = [feats[n] for n in fresh]
            sigs = sigs[fresh] if fresh else sigs[:0]
        items_store.save_signatures(self.db, [(i, sigs[k]) for k, i in enumerate(ids)])
        of_changed = clusters_store.clusters_of(self.db, [i for i, _ in changed])
        touched: set[int] = set(of_changed.values())
        quiet = touched - {of_changed[i] for i in loud if i in of_changed}
        grown: dict[int, list[int]] = {}
        merged_into: set[int] = set()
        if new:
            grown, merged = self._assign_all(engine, feed_id, new, feats, sigs, now)
            touched |= merged
            merged_into = set(merged)
            vectors = engine.pop_vectors()
            items_store.save_frozen(
                self.db,
                [
                    (i, _frozen_json(engine.freeze(feats[k], vectors[i])))
                    for k, (i, _, _) in enumerate(new)
                    if i in vectors
                ],
            )
        quiet -= set(grown) | merged_into
        self.refresh_clusters(touched, now, {c: i for c, i in grown.items() if c not in touched}, quiet)
        self._last_id = max(self._last_id, max(ids, default=0))
        return IngestResult(ids, [i for i, _ in changed])

    def _sort_time(self, published: float | None, now: float) -> float:
        """When the story happened, as far as ordering goes: a future date is clamped to now."""
        if published is None or published < EARLIEST_PLAUSIBLE:
            return now
        return min(published, now)

    def _assign_all(
        self,
        engine: ClusterEngine,
        feed_id: int,
        new: list[tuple[int, Item, float]],
        feats: Sequence[Features],
        sigs: np.ndarray,
        now: float,
    ) -> tuple[dict[int, list[int]], set[int]]:
        """Put a feed's new items in clusters, in time order, and store why.

        Same-link and same-words evidence is looked up for the whole batch at once;
        memberships are written together at the end.  Returns the clusters that only
        gained members (cluster -> new item ids) and the clusters that merges changed.
        """
        in_batch = Counter(it.canonical_link for _, it, _ in new if it.canonical_link)
        carriers = items_store.clustered_by_link(self.db, sorted(in_batch))
        links_of = {
            link: [(item_id, t, cluster) for item_id, t, cluster, _ in found]
            for link, found in carriers.items()
            if in_batch[link] == 1 and article_link(link, [f for *_, f in found], feed_id)
        }
        copies = items_store.clustered_by_hash(self.db, sorted({it.content_hash for _, it, _ in new}))
        alias: dict[int, int] = {}  # cluster merged away in this batch -> where it went

        def final(c: int) -> int:
            while c in alias:
                c = alias[c]
            return c

        may_merge = None
        if rules_store.has_cannot(self.db):

            def may_merge(group: Collection[int], b: int) -> bool:
                # (the database holds the clusters of ``group`` as they were before this item)
                return not rules_store.conflict(self.db, group, b)

        rows: list[tuple[int, int, float, str, int | None]] = []
        merged_into: set[int] = set()
        order = sorted(range(len(new)), key=lambda n: (new[n][2], new[n][0]))
        for n in order:
            item_id, item, time = new[n]
            # every item with the link or the words, earliest first: decide takes the
            # first whose story the item may join (within the time window)
            links = [
                (other, final(cluster), "same-link")
                for other, _, cluster in sorted(links_of.get(item.canonical_link or "", ()), key=_by_time)
            ]
            if exact_copy_counts(self.settings.cluster, feats[n]):
                links += [
                    (other, final(cluster), "exact-copy")
                    for other, when, cluster in sorted(copies.get(item.content_hash, ()), key=_by_time)
                    if other != item_id
                ]
            a = decide(
                engine,
                item_id,
                time,
                feats[n],
                sigs[n],
                Evidence(links=tuple(links)),
                lambda: clusters_store.create(self.db, now),
                may_merge,
            )
            rows.append((item_id, a.cluster, a.score, a.signal, a.matched_item_id))
            copies.setdefault(item.content_hash, []).append((item_id, time, a.cluster))
            if a.merged:
                merged_into.add(a.cluster)
                clusters_store.merge_into(self.db, a.cluster, a.merged)
                for gone in a.merged:
                    alias[gone] = a.cluster
                    self._merged_here(gone, a.cluster)
        rows = [(i, final(c), score, signal, matched) for i, c, score, signal, matched in rows]
        clusters_store.add_members(self.db, rows, now)
        merged = {final(c) for c in merged_into}
        grown: dict[int, list[int]] = {}
        for i, c, *_ in rows:
            if c not in merged:
                grown.setdefault(c, []).append(i)
        return grown, merged

    def refresh_clusters(
        self,
        cluster_ids: set[int],
        now: float,
        grown: Mapping[int, Sequence[int]] | None = None,
        quiet: Collection[int] = (),
    ) -> None:
        """Recompute the stored summary (canonical item, size, outlets, span) of
        ``cluster_ids`` from all their members, and of the ``grown`` clusters
        (cluster -> new item ids) from their summary and the new members; ``quiet``
        ones keep their updated time if their summary did not change."""
        choose = _canonical_policy(self.settings)
        clusters_store.refresh_many(self.db, cluster_ids, choose, now, quiet)
        if grown:
            clusters_store.grow(self.db, grown, choose, now)

    def shrink_clusters(self, cluster_ids: set[int], now: float) -> None:
        """:meth:`refresh_clusters` for clusters that only lost members."""
        clusters_store.shrink(self.db, cluster_ids, _canonical_policy(self.settings), now)

    # -- whole archive -----------------------------------------------------------------

    def recluster(
        self,
        progress: Callable[[int, int], None] | None = None,
        *,
        settings: Settings | None = None,
        before_swap: Callable[[], None] | None = None,
    ) -> int:
        """Assign every item again, in the order items arrived (so that the settings in
        force remake the stories polling made), with the current settings (or
        ``settings``, then current) and rules.

        The work is done in memory first, while the site and the poller carry on;
        then one short transaction swaps the new clusters in (with items that
        arrived meanwhile), so readers see the old clusters or the new ones, never
        a mix.  ``before_swap`` runs in that transaction (it stores the settings
        version the clusters are made with: both or neither).  Returns the number
        of items.
        """
        settings = settings or self.settings
        rules = rules_store.load(self.db)
        in_force = versions_store.latest(self.db)
        replayer = Replayer(settings, rules)
        num_perm = settings.cluster.num_perm
        ids = items_store.all_item_ids(self.db)
        snapshot = max(ids, default=0)
        total = len(ids)
        for start in range(0, len(ids), 2000):
            replayer.feed(items_store.index_rows_for(self.db, ids[start : start + 2000], num_perm))
            if progress:
                progress(min(start + 2000, total), total + 1)
        with write_transaction(self.db):
            if rules_store.load(self.db) != rules:
                # The swap would undo corrections made meanwhile (the replay followed the
                # rules it started with): change nothing rather than lose them.
                raise RulesChanged(
                    "corrections were made while re-clustering: nothing was changed, run it again"
                )
            if versions_store.latest(self.db) != in_force:
                # Another settings change was applied meanwhile: its stories stay.
                raise RulesChanged("the settings changed while re-clustering: nothing was changed")
            if before_swap is not None:
                before_swap()
            # Items stored while the replay ran, then the swap.
            late = [i for i in items_store.all_item_ids(self.db) if i > snapshot]
            for start in range(0, len(late), 2000):
                replayer.feed(items_store.index_rows_for(self.db, late[start : start + 2000], num_perm))
            existing = set(items_store.all_item_ids(self.db))
            groups = [
                [(a.item_id, a.score, a.signal, a.matched_item_id) for a in g if a.item_id in existing]
                for g in replayer.groups()
            ]
            groups = [g for g in groups if g]
            items_store.save_signatures(
                self.db, [(i, s) for i, s in replayer.new_signatures.items() if i in existing]
            )
            items_store.forget_frozen(self.db)
            clusters_store.replace_all(
                self.db,
                groups,
                _canonical_policy(settings),
                rules_store.pins_by_age(self.db),
                self.clock(),
            )
            meta_store.bump(self.db, GENERATION_KEY)
        self.settings = settings
        self._engine = None
        if progress:
            progress(total + 1, total + 1)
        return len(existing)
