"""Deciding an item's cluster from all the evidence, live or in a replay.

:func:`decide` is the one rule, used both by the live pipeline and by
:class:`Replayer`, which re-clusters stored items in memory (for ``recluster``
and for the admins' previews) without touching the database:

1. an admin's must-link to an item already placed: join its cluster (``manual``);
2. the same canonical link as another feed's item: join it (``same-link``);
3. exactly the same words as another item: join it (``exact-copy``);
4. otherwise the engine decides (``similar``, ``near-copy`` or ``new``),
   never into a cluster an admin's cannot-link forbids.

Links and copies are evidence only for a story the item can join within the time
window (:meth:`ClusterEngine.accepts`): a front-page link every item of a feed
carries, or a daily headline repeated word for word, joined stories days and a
year apart, beyond the span a story may have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from aggregator.cluster import ClusterEngine
from aggregator.fingerprint import Features, signatures
from aggregator.settings import ClusterSettings, Settings
from aggregator.storage.items import IndexRow
from aggregator.storage.rules import RuleSet

__all__ = ["Assignment", "Evidence", "Replayer", "article_link", "decide", "exact_copy_counts"]


@dataclass(frozen=True)
class Assignment:
    item_id: int
    cluster: int
    score: float
    signal: str
    matched_item_id: int | None
    merged: tuple[int, ...] = ()


@dataclass(frozen=True)
class Evidence:
    """What the caller knows beyond the text: links, copies, corrections."""

    must: tuple[tuple[int, int], ...] = ()  # (partner item, its cluster) of must-links
    # (item, its cluster, "same-link" | "exact-copy"), strongest and earliest first
    links: tuple[tuple[int, int, str], ...] = ()
    forbid: frozenset[int] = frozenset()  # clusters an admin's cannot-link rules out


def article_link(link: str, carriers: Collection[int], feed_id: int) -> bool:
    """Whether ``link`` names one article, so that the same link from another feed is the
    same story: not a site's front page (an empty path), and not a link that one feed
    gives more than one item (``carriers``: the feed of every other item with it),
    this item's own feed included.  Feeds that give every item the site's address
    joined all their stories through it."""
    path = urlsplit(link).path
    if path in ("", "/"):
        return False
    seen = Counter(carriers)
    return feed_id not in seen and all(n == 1 for n in seen.values())


def exact_copy_counts(settings: ClusterSettings, feats: Features) -> bool:
    """Whether the same words are evidence of the same story: not for an empty item or
    a short generic headline ("Live updates", "Letters"), as for near-copies."""
    return len(feats.tokens) >= settings.near_copy_min_tokens


def decide(
    engine: ClusterEngine,
    item_id: int,
    time: float,
    feats: Features,
    signature: np.ndarray,
    evidence: Evidence,
    new_cluster: Callable[[], int],
    may_merge: Callable[[Collection[int], int], bool] | None = None,
) -> Assignment:
    """Put one item in a cluster, strongest evidence first (see the module docstring)."""
    force = matched = None
    signal = ""
    if evidence.must:
        matched, force = evidence.must[0]
        signal = "manual"
    else:
        for other, cluster, kind in evidence.links:
            if cluster not in evidence.forbid and engine.accepts(cluster, time):
                matched, force, signal = other, cluster, kind
                break
    d = engine.add(
        item_id,
        time,
        feats,
        signature,
        new_cluster=new_cluster,
        force=force,
        forbid=evidence.forbid,
        may_merge=may_merge,
    )
    if force is not None:
        return Assignment(item_id, d.cluster_id, 1.0, signal, matched, d.merged)
    return Assignment(item_id, d.cluster_id, d.score, d.signal, d.matched_item_id, d.merged)


@dataclass
class Replayer:
    """Re-clusters stored items in memory, in the order given (the order they arrived
    in, for a re-clustering: see ``items.all_item_ids``), honouring the rules."""

    settings: Settings
    rules: RuleSet = field(default_factory=RuleSet)

    def __post_init__(self) -> None:
        self.engine = ClusterEngine(self.settings.cluster)
        self.assignments: dict[int, Assignment] = {}
        self.aliases: dict[int, int] = {}  # merged cluster -> the cluster that absorbed it
        self.members: dict[int, set[int]] = {}  # live cluster -> items
        self.new_signatures: dict[int, np.ndarray] = {}  # computed here, not yet stored
        self._by_link: dict[str, list[tuple[int, int]]] = {}  # link -> [(item, feed)]
        self._by_hash: dict[str, list[tuple[int, float]]] = {}  # content hash -> [(item, time)], window
        self._next = 1
        self._groups: dict[int, frozenset[int]] = {}  # item -> its must-linked group (see _must_group)
        self._blocks: dict[int, frozenset[int]] = {}  # item -> the items it may never be with
        self._newest = float("-inf")  # the latest item time placed

    def _new_cluster(self) -> int:
        n = self._next
        self._next += 1
        return n

    def cluster_of(self, item_id: int) -> int:
        c = self.assignments[item_id].cluster
        while c in self.aliases:
            c = self.aliases[c]
        return c

    def partition(self) -> dict[int, int]:
        """Item id -> final cluster number."""
        return {i: self.cluster_of(i) for i in self.assignments}

    def groups(self) -> list[list[Assignment]]:
        out: dict[int, list[Assignment]] = {}
        for item_id, a in self.assignments.items():
            out.setdefault(self.cluster_of(item_id), []).append(a)
        return list(out.values())

    def feed(self, rows: Iterable[IndexRow], progress: Callable[[int], None] | None = None) -> None:
        """Assign ``rows``, in their order."""
        done = 0
        for chunk in _chunks(rows, 500):
            feats = [self.engine.features(r.title, r.text) for r in chunk]
            missing = [n for n, r in enumerate(chunk) if r.signature is None]
            fresh = signatures([feats[n].tokens for n in missing], self.settings.cluster.num_perm)
            fresh_of = {n: fresh[k] for k, n in enumerate(missing)}
            for n, row in enumerate(chunk):
                sig = row.signature if row.signature is not None else fresh_of[n]
                if row.signature is None:
                    self.new_signatures[row.item_id] = sig
                self._one(row, feats[n], sig)
            done += len(chunk)
            if progress:
                progress(done)

    def _must_group(self, item_id: int) -> frozenset[int]:
        """The items an item must share a story with, through any chain of must-links (itself included)."""
        group = self._groups.get(item_id)
        if group is None:
            seen, todo = {item_id}, [item_id]
            while todo:
                for other in self.rules.must.get(todo.pop(), ()):
                    if other not in seen:
                        seen.add(other)
                        todo.append(other)
            group = frozenset(seen)
            for member in group:
                self._groups[member] = group
        return group

    def _blocked(self, item_id: int) -> frozenset[int]:
        """The items ``item_id`` may never share a story with: a cannot-link runs between
        an item it must be with and an item that must be with them (its own and its
        partners' must-linked groups included, placed yet or not)."""
        blocked = self._blocks.get(item_id)
        if blocked is None:
            cannot = self.rules.cannot
            found: set[int] = set()
            for m in self._must_group(item_id):
                for o in cannot.get(m, ()):
                    found |= self._must_group(o)
            blocked = frozenset(found)
            for member in self._must_group(item_id):
                self._blocks[member] = blocked
        return blocked

    def _evidence(self, row: IndexRow, feats: Features) -> Evidence:
        placed = self.assignments
        # Not the stories of items it may never be with, through must-links on either
        # side: item 14, tied to 42 which an admin moved away from item 4, joined 4's
        # story before 42 came, and the tie was lost.
        forbid = frozenset(self.cluster_of(o) for o in self._blocked(row.item_id) if o in placed)
        # Every placed item it must be with, through any chain of must-links: a merge ties
        # its items to the earliest by time, which is not the first placed in the order
        # items arrived (the others went their own ways, then could not all follow).
        must = tuple(
            (o, self.cluster_of(o))
            for o in sorted(self._must_group(row.item_id) - {row.item_id})
            if o in placed and self.cluster_of(o) not in forbid
        )
        carriers = self._by_link.get(row.canonical_link or "", [])
        links = []
        if row.canonical_link and article_link(row.canonical_link, [f for _, f in carriers], row.feed_id):
            links = [(other, self.cluster_of(other), "same-link") for other, _ in carriers]
        if exact_copy_counts(self.settings.cluster, feats):
            links += [
                (o, self.cluster_of(o), "exact-copy") for o, _ in self._by_hash.get(row.content_hash, ())
            ]
        return Evidence(must, tuple(links), forbid)

    def _one(self, row: IndexRow, feats: Features, sig: np.ndarray) -> None:
        evidence = self._evidence(row, feats)
        a = decide(
            self.engine,
            row.item_id,
            row.sort_time,
            feats,
            sig,
            evidence,
            self._new_cluster,
            (lambda group, other: not self._conflict(group, other, row.item_id))
            if self.rules.cannot
            else None,
        )
        self.assignments[row.item_id] = a
        self.members.setdefault(a.cluster, set()).add(row.item_id)
        for gone in a.merged:
            self.aliases[gone] = a.cluster
            self.members[a.cluster] |= self.members.pop(gone, set())
        # A must-link to items in several clusters joins them, unless a cannot-link forbids it.
        for _other, oc in evidence.must[1:]:
            oc = self._final(oc)
            if oc != a.cluster and not self._conflict((oc,), a.cluster):
                self.engine.merge(oc, a.cluster)
                self.aliases[oc] = a.cluster
                self.members[a.cluster] |= self.members.pop(oc, set())
        if row.canonical_link:
            self._by_link.setdefault(row.canonical_link, []).append((row.item_id, row.feed_id))
        # A copy can no longer be evidence once it is a window older than anything the
        # index still holds (its horizon behind the newest item): items come in the order
        # they arrived, so a late one may be older than the item before it.
        self._newest = max(self._newest, row.sort_time)
        oldest = self._newest - self.engine.horizon_seconds - self.engine.window_seconds
        copies = [c for c in self._by_hash.get(row.content_hash, ()) if c[1] >= oldest]
        self._by_hash[row.content_hash] = [*copies, (row.item_id, row.sort_time)]

    def _final(self, c: int) -> int:
        while c in self.aliases:
            c = self.aliases[c]
        return c

    def _conflict(self, group: Iterable[int], b: int, item: int | None = None) -> bool:
        """Whether a cannot-link runs between cluster ``b`` and the clusters of ``group``
        (with ``item``, the one being placed, not yet among their members)."""
        other = self.members.get(b, set())
        if item is not None and self._blocked(item) & other:
            return True
        return any(self._blocked(x) & other for c in group for x in self.members.get(c, ()))


def _chunks(rows: Iterable[IndexRow], size: int) -> Iterator[list[IndexRow]]:
    chunk: list[IndexRow] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
