"""Online story clustering: MinHash-LSH finds candidates, an IDF-cosine score decides.

For each arriving item, in time order (docs/clustering.md has the full method
and the numbers behind each choice):

1. **Vector.** The item's term weights (``fingerprint.features``) times
   ``idf(t) ** idf_power``, ``idf(t) = ln((N + 1) / (df(t) + 1)) + 1`` with N and
   df counted over the items of the time window, L2-normalised, and no term
   may hold more than ``max_term_weight`` of it (one shared rare name is not a
   story).  The vector is frozen at arrival, so replaying the same items in the
   same order rebuilds the same state.
2. **Candidates.** The item's MinHash signature queries a datasketch
   ``MinHashLSH`` (``lsh_bands`` x ``lsh_rows``) holding the items of the
   window.  Candidate items map to their clusters.
3. **Verification.**  A candidate that is a near-copy (MinHash Jaccard >=
   ``near_copy_jaccard``) is joined outright (``near-copy``).  Otherwise each
   candidate cluster scores ``cos(item, centroid) * 0.5 ** (gap / half_life)``
   where the gap is the time since the cluster's latest item; the best cluster
   is joined if it reaches the *length-aware* threshold (``join_threshold_short``
   for a bare headline, ``join_threshold_long`` for an article, log-linear in
   between) (``similar``); else the item starts a new cluster (``new``).
   Three guards: in an article's score the largest single term product counts
   for at most ``max_term_share`` of it (one shared name is not a story); an
   article whose main name is absent from a cluster whose own main name is
   absent from the article scores ``name_mismatch_factor`` times less (another
   protagonist, same kind of event); and while the window holds
   fewer than ``cold_start_items`` items a join needs two shared terms (IDF
   cannot tell a common word from a name yet).
4. **Merge.**  Other clusters the item also matched merge into the joined one
   when their centroids are as close to each other as their members are to
   them: ``cos(A, B) >= merge_ratio * sqrt(coh(A) * coh(B))``.
5. **Adoption.**  A candidate cluster of at most ``adopt_max_size`` items (a
   story's first report, left alone because the second report scored just under
   the bar against it) joins the grown cluster when its items, scored now with
   their stored vectors, would join it: the mean of their scores (recency, the
   share cap and the name-mismatch rule included) reaches the join threshold for
   their length.

There is no union of candidate pairs: an item joins through a cluster's
centroid only, so unrelated stories cannot chain together.

The engine does no I/O.  New cluster ids come from the caller's
``new_cluster`` function; merges are reported in :class:`Decision.merged` for the
caller to apply to stored memberships.  ``force`` and ``forbid`` carry the
pipeline's own evidence (same link, same words) and the admins' corrections.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import mul
from typing import Any

import numpy as np
from datasketch import MinHashLSH

from aggregator.centroids import CentroidTables, TermCounts, jit, stable_argsort, term_hashes, weigh
from aggregator.fingerprint import Features, features_for
from aggregator.settings import ClusterSettings

__all__ = ["NAME_ABSENT_IN_CLUSTER", "NAME_ABSENT_IN_ITEM", "ClusterEngine", "Decision", "horizon_seconds"]


def horizon_seconds(settings: ClusterSettings) -> float:
    """How far behind the newest item an index under ``settings`` reaches: the time
    window, and the late-arrival margin (an item arriving late, from a feed's backlog
    or a slow outlet, still finds its story)."""
    return settings.time_window_hours * 3600.0 + settings.late_arrival_hours * 3600.0


# The name-mismatch rule (``name_mismatch_factor``): a cluster's main name is "absent"
# from an article whose vector gives it less than this weight (a passing mention)...
NAME_ABSENT_IN_ITEM = 0.1
# ...and the article's main name is absent from a cluster whose centroid gives it
# less than this share of its norm.
NAME_ABSENT_IN_CLUSTER = 0.05

_LN2 = math.log(2.0)
_NO_SEQS = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Decision:
    """Where the engine put an item, and why.

    ``score``: cosine for ``similar``, MinHash Jaccard estimate for ``near-copy``,
    the best score below the threshold for ``new``, 1.0 for ``forced``.
    ``merged``: clusters absorbed into ``cluster_id`` by this decision.
    """

    cluster_id: int
    score: float
    signal: str  # "new", "similar", "near-copy", "forced", "empty"
    matched_item_id: int | None = None
    merged: tuple[int, ...] = ()


class _BandedLSH(MinHashLSH):  # type: ignore[misc]
    """``MinHashLSH`` (dict storage) that cuts all band keys of a signature at once.

    ``MinHashLSH`` byte-swaps each band separately; swapping the whole signature
    once and slicing gives the same keys, so the index content is identical to
    ``MinHashLSH.insert``'s (tested); ``remove`` and the rest are inherited.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._band_dicts: list[dict[bytes, set[int]]] = [t._dict for t in self.hashtables]

    def band_keys(self, hashvalues: np.ndarray) -> list[bytes]:
        raw = hashvalues[: self.b * self.r].byteswap().tobytes()
        step = len(raw) // self.b
        return [raw[i : i + step] for i in range(0, len(raw), step)]

    def insert_signature(self, key: int, hashvalues: np.ndarray) -> None:
        # MinHashLSH.insert on its dict storages (defaultdicts of lists and sets), without
        # a method call per band.
        hs = self.band_keys(hashvalues)
        self.keys._dict[key].extend(hs)
        for h, table in zip(hs, self._band_dicts, strict=True):
            table[h].add(key)

    def band_hits(self, hashvalues: np.ndarray, max_bucket: int) -> np.ndarray:
        """The keys sharing a band with ``hashvalues``, once per band shared (buckets
        over ``max_bucket`` skipped)."""
        flat: list[int] = []
        for h, table in zip(self.band_keys(hashvalues), self._band_dicts, strict=True):
            bucket = table.get(h)
            if bucket is not None and len(bucket) <= max_bucket:
                flat.extend(bucket)
        return np.array(flat, np.int64)

    def query_signature(self, hashvalues: np.ndarray, max_bucket: int) -> set[int]:
        """Keys sharing a band with ``hashvalues``; buckets larger than ``max_bucket``
        are skipped (a min-hash value shared by that many items says nothing)."""
        return set(self.band_hits(hashvalues, max_bucket).tolist())


@jit
def _rank(
    flat: np.ndarray,
    seq_order: np.ndarray,
    base: int,
    limit: int,
    spans: np.ndarray,
    sbase: int,
    t: float,
    window: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates from band hits ``flat`` (see ClusterEngine._candidates): the items
    of the ``limit`` clusters whose best item shares most bands (ties to the older
    cluster), then only the clusters whose span with ``t`` stays within ``window``
    (``spans``: the centroid tables' rows by cluster order - ``sbase``); as item seqs
    and their cluster orders, sorted by order, then seq, and where each cluster starts."""
    flat = flat[stable_argsort(flat)]
    n = flat.shape[0]
    seqs = np.empty(n, np.int64)
    counts = np.empty(n, np.int64)
    orders = np.empty(n, np.int64)
    m = 0
    i = 0
    while i < n:
        q = flat[i]
        j = i
        while j < n and flat[j] == q:
            j += 1
        k = q - base
        o = seq_order[k] if 0 <= k < seq_order.shape[0] else -1
        if o >= 0:  # (-1: expired)
            seqs[m], counts[m], orders[m] = q, j - i, o
            m += 1
        i = j
    by = stable_argsort(orders[:m])  # seqs stay ascending
    seqs, counts, orders = seqs[:m][by], counts[:m][by], orders[:m][by]
    # One group per cluster: its first index and its best count.
    starts = np.empty(m + 1, np.int64)
    best = np.zeros(m, np.int64)
    g = 0
    for i in range(m):
        if i == 0 or orders[i] != orders[i - 1]:
            starts[g] = i
            g += 1
        best[g - 1] = max(best[g - 1], counts[i])
    starts[g] = m
    keep = np.ones(g, np.bool_)
    if g > limit:
        rank = stable_argsort(-best[:g])  # groups are in order: ties to the older
        keep[:] = False
        keep[rank[:limit]] = True
    for x in range(g):
        if keep[x]:
            row = orders[starts[x]] - sbase
            if 0 <= row < spans.shape[0]:  # (a cluster with members in the index has its row)
                first, last = spans[row, 1], spans[row, 2]
                keep[x] = max(t, last) - min(t, first) <= window
            else:
                keep[x] = False
    out = np.zeros(m, np.bool_)
    firsts = np.empty(g, np.int64)  # where each cluster kept starts in the output
    n_kept = 0
    n_out = 0
    for x in range(g):
        if keep[x]:
            out[starts[x] : starts[x + 1]] = True
            firsts[n_kept] = n_out
            n_kept += 1
            n_out += starts[x + 1] - starts[x]
    return seqs[out], orders[out], firsts[:n_kept]


@jit
def _most_agreeing(sigs: np.ndarray, rows: np.ndarray, signature: np.ndarray) -> tuple[int, int]:
    """Which of ``sigs[rows]`` agrees with ``signature`` in most positions (the first
    of equals), and in how many."""
    best, at = -1, -1
    for j in range(rows.shape[0]):
        row = sigs[rows[j]]
        n = 0
        for p in range(signature.shape[0]):
            n += row[p] == signature[p]
        if n > best:
            best, at = n, j
    return at, best


@dataclass(slots=True)
class _Cluster:
    cid: int
    order: int  # creation order: deterministic iteration, older wins ties and merges
    centroid: dict[str, float]
    norm2: float = 0.0
    size: int = 0
    live: int = 0  # members still in the window
    first: float = math.inf
    last: float = -math.inf
    members: list[int] = field(default_factory=list)  # seqs (may include expired)
    names: set[str] = field(default_factory=set)  # terms some member took for a name
    top_name: str | None = None  # the name with the largest centroid weight
    # The centroid's term keys and weights in its order, while it is one item's vector.
    arrays: tuple[np.ndarray, np.ndarray] | None = None

    def add_time(self, t: float) -> None:
        self.first = min(self.first, t)
        self.last = max(self.last, t)

    def cohesion(self) -> float:
        return math.sqrt(max(self.norm2, 0.0)) / self.size if self.size else 0.0

    def find_top_name(self, terms: Iterable[str]) -> None:
        """Update ``top_name`` from ``terms`` (whose weights grew), ties to the smaller term."""
        cen, names = self.centroid, self.names
        best = self.top_name
        w = cen[best] if best is not None else -1.0
        for term in terms:
            if term in names:
                x = cen.get(term, 0.0)
                if x > w or (x == w and best is not None and term < best):
                    best, w = term, x
        self.top_name = best


@dataclass(frozen=True, slots=True)
class _Frozen:
    """An item's stored terms (as keys), names and token count (see ClusterEngine.restore_frozen)."""

    keys: np.ndarray
    entities: frozenset[str]
    n_tokens: int


@dataclass(slots=True)
class _Item:
    seq: int
    item_id: int
    cluster: int
    time: float
    indexed: bool
    keys: np.ndarray  # of its terms, for the windowed document frequencies


def _shared_terms(a: dict[str, float], b: dict[str, float], enough: int) -> int:
    """How many terms ``a`` and ``b`` share, counting up to ``enough``."""
    if len(a) > len(b):
        a, b = b, a
    n = 0
    for term in a:
        if term in b:
            n += 1
            if n >= enough:
                break
    return n


def _other_protagonist(name: str, vec: dict[str, float], norm: float, c: _Cluster, c_norm: float) -> bool:
    """The name-mismatch rule: ``vec`` (of length ``norm``), whose main name is
    ``name``, barely mentions cluster ``c``'s main name, and ``c`` (centroid length
    ``c_norm``) barely mentions ``name``."""
    return (
        c.top_name is not None
        and vec.get(c.top_name, 0.0) < NAME_ABSENT_IN_ITEM * norm
        and c.centroid.get(name, 0.0) < NAME_ABSENT_IN_CLUSTER * c_norm
    )


def _shared(feats: Features) -> Features:
    """``feats`` with its terms swapped for their interned copies (``sys.intern``).

    Every vector, centroid and document-frequency table of the engine then holds one
    string object per distinct term (features from worker processes or the database
    arrive as fresh copies), and a dictionary look-up finds its key by identity
    instead of comparing characters in another corner of memory.
    """
    intern = sys.intern
    return Features(
        feats.tokens,
        {intern(t): w for t, w in feats.weights.items()},
        frozenset(map(intern, feats.entities)),
    )


def _dot_capped(a: dict[str, float], b: dict[str, float], cap: float) -> float:
    """:func:`_dot` in which the largest single term product counts for at most
    ``cap`` of the result (one shared term, however heavy, is not a story)."""
    if cap >= 1.0:
        return _dot(a, b)
    if len(a) > len(b):
        a, b = b, a
    prods = list(map(mul, a.values(), map(b.get, a.keys(), repeat(0.0))))
    total: float = sum(prods)
    if total <= 0.0:
        return total
    top: float = max(prods)
    if top > cap * total:
        return (total - top) / (1.0 - cap)
    return total


def _term_key(term: str | None) -> int:
    """``term``'s key in the centroid tables (``centroids.term_hashes``); 0 for None."""
    if term is None:
        return 0
    return hash(term) or 1


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    """Sparse dot product (loops over the smaller dict, in C via map)."""
    if len(a) > len(b):
        a, b = b, a
    total: float = sum(map(mul, a.values(), map(b.get, a.keys(), repeat(0.0))))
    return total


class ClusterEngine:
    """Assigns items to story clusters, one at a time, in time order."""

    def __init__(self, settings: ClusterSettings, *, keep_vectors: bool = False) -> None:
        """``keep_vectors``: remember the vectors :meth:`add` makes, for :meth:`pop_vectors`."""
        self.settings = settings
        self._keep_vectors = keep_vectors
        s = settings
        if s.lsh_bands * s.lsh_rows > s.num_perm:
            raise ValueError("cluster.lsh_bands * cluster.lsh_rows must not exceed cluster.num_perm")
        self._lsh = _BandedLSH(num_perm=s.num_perm, params=(s.lsh_bands, s.lsh_rows))
        self._window = s.time_window_hours * 3600.0
        self._keep = horizon_seconds(s)  # items stay indexed this long after the newest one
        self._df = TermCounts()  # document frequencies by term key, over the window
        self._n_docs = 0
        self._seq = 0
        self._clock = -math.inf
        self._items: dict[int, _Item] = {}  # seq -> item
        # seq - _seq_base -> order of the item's cluster, -1 once expired (see _candidates)
        self._seq_order = np.full(1024, -1, np.int64)
        self._seq_sigs = np.zeros((1024, s.num_perm), np.uint32)  # the items' signatures
        self._seq_tokens = np.zeros(1024, np.int64)  # and token counts
        self._seq_base = 0
        self._by_id: dict[int, int] = {}  # item id -> seq
        self._clusters: dict[int, _Cluster] = {}
        self._tables = CentroidTables()  # the centroids again, keyed by cluster order, for scoring
        self._item_arrays: tuple[dict[str, float], np.ndarray, np.ndarray] | None = None
        self._n_clusters_created = 0
        self._expiry: list[tuple[float, int]] = []  # (time, seq) heap
        self._fresh: dict[int, dict[str, float]] = {}  # vectors made by add(), for pop_vectors()

    # -- API ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @property
    def window_seconds(self) -> float:
        return self._window

    @property
    def horizon_seconds(self) -> float:
        """How far behind the newest item the index reaches."""
        return self._keep

    def features(self, title: str, text: str) -> Features:
        """Features of an item under these settings."""
        return features_for(self.settings, title, text)

    def add(
        self,
        item_id: int,
        time: float,
        feats: Features,
        signature: np.ndarray,
        *,
        new_cluster: Callable[[], int],
        force: int | None = None,
        forbid: Collection[int] = (),
        may_merge: Callable[[Collection[int], int], bool] | None = None,
    ) -> Decision:
        """Cluster one item.

        ``force``: join this cluster whatever the score (the caller knows better:
        same link, same words, an admin's must-link).  ``forbid``: never join these
        clusters (an admin's cannot-link).  ``may_merge(group, b)``: whether cluster b
        may join the clusters of ``group`` (the one the item joined and those merged
        into it so far, all as they were before this item; False where a cannot-link
        runs between them).
        """
        if item_id in self._by_id:
            raise ValueError(f"item {item_id} was already added")
        t = self._advance_clock(time)
        feats = _shared(feats)
        vec, keys = self._vectorize(feats)
        if self._keep_vectors:
            self._fresh[item_id] = vec
        index = bool(vec) and bool(feats.tokens)
        if force is not None:
            cluster = self._clusters.get(force) or self._new_cluster(force)
            self._attach(item_id, cluster, vec, t, signature, feats, keys, index=index)
            return Decision(cluster.cid, 1.0, "forced")
        if not vec:
            cluster = self._new_cluster(new_cluster())
            self._attach(item_id, cluster, vec, t, signature, feats, keys, index=False)
            return Decision(cluster.cid, 0.0, "empty")

        s = self.settings
        seqs, orders, firsts = self._candidates(signature, t) if feats.tokens else (_NO_SEQS, _NO_SEQS, [])
        if forbid and len(seqs):
            banned = [c.order for cid in forbid if (c := self._clusters.get(cid)) is not None]
            if banned:
                allowed = ~np.isin(orders, banned)
                seqs, orders = seqs[allowed], orders[allowed]
                firsts = np.flatnonzero(np.diff(orders, prepend=-1)).tolist()
        # The candidate clusters, in order (one member each leads to it).
        items, by_id = self._items, self._clusters
        clusters = [by_id[items[q].cluster] for q in seqs[firsts].tolist()]

        # A near-copy of a candidate item: join its cluster outright (the most
        # similar copy wins; ties keep the earliest item).
        if len(feats.tokens) >= s.near_copy_min_tokens and len(seqs):
            rows = seqs - self._seq_base
            rows = rows[self._seq_tokens[rows] >= s.near_copy_min_tokens]
            if len(rows):
                k, agree = _most_agreeing(self._seq_sigs, rows, signature)
                j = float(agree) / s.num_perm
                if j >= s.near_copy_jaccard:
                    dup = items[int(rows[k]) + self._seq_base]
                    c = by_id[dup.cluster]
                    self._attach(item_id, c, vec, t, signature, feats, keys, index=True)
                    return Decision(c.cid, j, "near-copy", dup.item_id)

        threshold = self.join_threshold(len(vec))
        share_cap = self.share_cap(len(vec))
        name = self._main_name(vec, feats)
        n = len(vec)
        # Centroids with fewer terms than the item add its products in their own order.
        pre = np.array(
            [_dot_capped(vec, c.centroid, share_cap) if n > len(c.centroid) else math.nan for c in clusters]
        )
        hs, ws = self._arrays(vec)
        self._item_arrays = (vec, hs, ws)  # for the attach that follows
        rule = (
            share_cap,
            self.half_life(n),
            s.recency_grace_hours,
            s.name_mismatch_factor,
            NAME_ABSENT_IN_ITEM,
            NAME_ABSENT_IN_CLUSTER,
            threshold,
        )
        cold = self._n_docs < s.cold_start_items  # IDF knows no common words yet
        # Before IDF knows which words are common, one shared word proves nothing.
        scores, passed, best_below = self._tables.scores(
            hs, ws, [c.order for c in clusters], pre, t, rule, _term_key(name), cold
        )
        scored = [(float(scores[j]), clusters[j]) for j in np.flatnonzero(passed).tolist()]
        if not scored:
            cluster = self._new_cluster(new_cluster())
            self._attach(item_id, cluster, vec, t, signature, feats, keys, index=True)
            return Decision(cluster.cid, best_below, "new")

        scored.sort(key=lambda sc: -sc[0])  # stable: ties keep the older cluster
        score, target = scored[0]
        matched = self._closest(seqs[orders == target.order], signature)
        self._attach(item_id, target, vec, t, signature, feats, keys, index=True)
        merged: list[int] = []
        group = {target.cid}  # what the item's cluster is made of by now
        for _, other in scored[1:]:
            if other.cid not in self._clusters or other is target:
                continue
            if self._should_merge(target, other) and (may_merge is None or may_merge(group, other.cid)):
                group.add(other.cid)
                target, gone = self._merge(target, other)
                merged.append(gone.cid)
        if s.adopt_max_size > 0 and not cold:
            for other in clusters:
                if other.cid not in self._clusters or other is target or other.size > s.adopt_max_size:
                    continue
                if self._adopts(target, other) and (may_merge is None or may_merge(group, other.cid)):
                    group.add(other.cid)
                    target, gone = self._merge(target, other)
                    merged.append(gone.cid)
        return Decision(target.cid, score, "similar", matched, tuple(merged))

    def restore(
        self, item_id: int, time: float, feats: Features, signature: np.ndarray, cluster_id: int
    ) -> dict[str, float] | None:
        """Put back a stored item as it was decided (no decision is made); returns
        its vector (what :meth:`freeze` stores), or None if the item was there already.

        Feed stored items in their original time order: the vector of an item is
        made from the document frequencies of the horizon before it, and a cluster's
        profile from all its members (``pipeline.restart_rows`` says which items a
        restart needs).
        """
        if item_id in self._by_id:
            return None
        t = self._advance_clock(time)
        feats = _shared(feats)
        vec, keys = self._vectorize(feats)
        cluster = self._clusters.get(cluster_id) or self._new_cluster(cluster_id)
        self._attach(item_id, cluster, vec, t, signature, feats, keys, index=bool(vec) and bool(feats.tokens))
        return vec

    def pop_vectors(self) -> dict[int, dict[str, float]]:
        """The vectors :meth:`add` made since the last call (to store with the items)."""
        fresh, self._fresh = self._fresh, {}
        return fresh

    def restore_frozen(
        self,
        item_id: int,
        time: float,
        frozen: dict[str, Any],
        signature: np.ndarray,
        cluster_id: int,
    ) -> None:
        """:meth:`restore` from the vector stored at arrival (see :meth:`freeze`):
        nothing is re-tokenised or re-weighted, which makes start-up fast."""
        if item_id in self._by_id:
            return
        t = self._advance_clock(time)
        intern = sys.intern
        terms = frozen["t"]
        f = _Frozen(term_hashes(terms, len(terms)), frozenset(map(intern, frozen["e"])), int(frozen["n"]))
        self._n_docs += 1
        self._df.add(f.keys, 1)
        vec: dict[str, float] = {intern(t): x for t, x in frozen["v"].items()}
        cluster = self._clusters.get(cluster_id) or self._new_cluster(cluster_id)
        self._attach(item_id, cluster, vec, t, signature, f, f.keys, index=bool(vec) and f.n_tokens > 0)

    def freeze(self, feats: Features, vector: dict[str, float]) -> dict[str, Any]:
        """What :meth:`restore_frozen` needs of an item, JSON-ready, tagged with the settings."""
        return {
            "s": self.settings_tag,
            "v": vector,
            "t": list(feats.weights),
            "e": sorted(feats.entities),
            "n": len(feats.tokens),
        }

    @property
    def settings_tag(self) -> str:
        """Changes whenever a setting that shapes item vectors changes."""
        s = self.settings
        key = (
            s.title_weight,
            s.lead_words,
            s.max_body_words,
            s.entity_boost,
            s.fingerprint_body_words,
            s.idf_power,
            s.max_terms,
            s.max_term_weight,
            s.time_window_hours,
            s.late_arrival_hours,
        )
        return hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()

    def merge(self, source: int, target: int) -> None:
        """Merge cluster ``source`` into ``target`` (an admin's correction)."""
        a, b = self._clusters.get(target), self._clusters.get(source)
        if a is None or b is None or a is b:
            if b is not None and a is None:  # target out of the window: relabel only
                self._clusters[target] = b
                del self._clusters[source]
                b.cid = target
                for seq in b.members:
                    it = self._items.get(seq)
                    if it is not None:
                        it.cluster = target
            return
        keep, gone = (a, b) if a.order <= b.order else (b, a)
        survivor, _ = self._merge(keep, gone)
        if survivor.cid != target:  # keep the id the caller asked for
            del self._clusters[survivor.cid]
            survivor.cid = target
            self._clusters[target] = survivor
            for seq in survivor.members:
                it = self._items.get(seq)
                if it is not None:
                    it.cluster = target

    def reprofile(
        self, cid: int, members: Sequence[tuple[int, float, dict[str, float], frozenset[str]]]
    ) -> None:
        """Make cluster ``cid`` exactly ``members`` (item id, time, the vector made at its
        arrival, its names; in time order), its profile built as a restart builds it:
        after an admin moved an item out of it or into it.  Members that left the window
        count in the profile only; without a member in the window the cluster leaves
        the index.  Every member in the window must be given to the cluster it is in."""
        old = self._clusters.pop(cid, None)
        if old is not None:
            self._tables.drop(old.order)
        seqs = [self._by_id.get(item_id) for item_id, *_ in members]
        if all(seq is None for seq in seqs):
            return
        if old is None:
            c = self._new_cluster(cid)
        else:  # it keeps its age (the older cluster wins ties)
            c = self._clusters[cid] = _Cluster(cid=cid, order=old.order, centroid={})
        cen = c.centroid
        for (_, t, vec, entities), seq in zip(members, seqs, strict=True):
            if vec:
                c.norm2 += 2.0 * self._dot_with(vec, c, 1.0) + sum(x * x for x in vec.values())
                for term, x in vec.items():
                    cen[term] = cen.get(term, 0.0) + x
                self._tables.add(c.order, *self._arrays(vec))
            if entities and vec:
                c.names |= entities
                c.find_top_name(vec)
            c.size += 1
            c.add_time(t)
            if seq is not None:
                self._items[seq].cluster = cid
                c.live += 1
                c.members.append(seq)
                self._set_order(seq, c.order)
        self._mirror(c)

    def drop(self, item_ids: Iterable[int]) -> set[int]:
        """Take items out of the index as if they had never arrived (their feed was
        removed); returns the clusters they were in, whose profiles still hold them:
        remake each with :meth:`reprofile` from the members left."""
        touched: set[int] = set()
        for item_id in item_ids:
            seq = self._by_id.get(item_id)
            if seq is None:
                continue
            it = self._items.pop(seq)
            self._forget(it)
            touched.add(it.cluster)
        return touched

    def cluster_sizes(self) -> dict[int, int]:
        """Cluster id -> how many items its profile holds (those that left the window too)."""
        return {cid: c.size for cid, c in self._clusters.items()}

    def item_ids(self) -> list[int]:
        """The ids of the items in the window."""
        return list(self._by_id)

    def assignments(self) -> dict[int, int]:
        """Item id -> cluster id of every item in the window."""
        return {it.item_id: it.cluster for it in self._items.values()}

    def _length_share(self, n_terms: int) -> float:
        """0 for a bare headline, 1 for an article, log-linear in between."""
        s = self.settings
        if n_terms <= s.short_terms:
            return 0.0
        if n_terms >= s.long_terms:
            return 1.0
        return math.log(n_terms / s.short_terms) / math.log(s.long_terms / s.short_terms)

    def _main_name(self, vec: dict[str, float], feats: Features) -> str | None:
        """The article's most weighted name, if the name-mismatch rule applies to it."""
        if self.settings.name_mismatch_factor >= 1.0 or not feats.entities:
            return None
        if self._length_share(len(vec)) < 1.0:  # headlines: case is no reliable guide to names
            return None
        best, w = None, 0.0
        for term in feats.entities:
            x = vec.get(term, 0.0)
            if x > w or (x == w and best is not None and term < best):
                best, w = term, x
        return best

    def share_cap(self, n_terms: int) -> float:
        """The largest share of a score one term may give (``max_term_share`` for an
        article, 1 for a bare headline, whose few words often meet in one name)."""
        s = self.settings
        return s.max_term_share + (1.0 - self._length_share(n_terms)) * (1.0 - s.max_term_share)

    def join_threshold(self, n_terms: int) -> float:
        """Length-aware join threshold for an item with ``n_terms`` distinct terms."""
        s = self.settings
        x = self._length_share(n_terms)
        return s.join_threshold_short + x * (s.join_threshold_long - s.join_threshold_short)

    def half_life(self, n_terms: int) -> float:
        """Length-aware recency half-life in hours: a headline leans on time, an article on words."""
        s = self.settings
        x = self._length_share(n_terms)
        a, b = math.log(s.recency_half_life_hours), math.log(s.recency_half_life_long_hours)
        return math.exp(a + x * (b - a))

    # -- internals ----------------------------------------------------------------------

    def _advance_clock(self, t: float) -> float:
        if t > self._clock:
            self._clock = t
            self._expire()
        return t

    def _expire(self) -> None:
        horizon = self._clock - self._keep
        while self._expiry and self._expiry[0][0] < horizon:
            _, seq = heapq.heappop(self._expiry)
            it = self._items.pop(seq, None)
            if it is None:
                continue
            self._forget(it)
            c = self._clusters.get(it.cluster)
            if c is not None:
                c.live -= 1
                if c.live <= 0:
                    del self._clusters[c.cid]
                    self._tables.drop(c.order)

    def _forget(self, it: _Item) -> None:
        """Take ``it`` (already out of ``_items``) out of the band tables, the id map,
        the dense ranking array and the document frequencies."""
        self._seq_order[it.seq - self._seq_base] = -1
        del self._by_id[it.item_id]
        if it.indexed:
            self._lsh.remove(it.seq)
        self._df.add(it.keys, -1)
        self._n_docs -= 1

    def _vectorize(self, feats: Features) -> tuple[dict[str, float], np.ndarray]:
        """The item's vector (compiled: ``centroids.weigh``), counting its terms in the
        document frequencies; and the keys of its terms, to count them out later."""
        self._n_docs += 1
        weights = feats.weights
        n = len(weights)
        keys = term_hashes(weights, n)
        s = self.settings
        idx, xs = weigh(
            self._df.add(keys, 1),
            np.fromiter(weights.values(), np.float64, n),
            math.log(self._n_docs + 1),
            s.idf_power,
            s.max_terms,
            s.max_term_weight,
            2.0,
        )
        if not len(idx):
            return {}, keys
        terms = list(weights)
        vec = dict(zip([terms[i] for i in idx.tolist()], xs.tolist(), strict=True))
        self._item_arrays = (vec, keys[idx], xs)
        return vec, keys

    def _candidates(self, signature: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Items sharing a band with ``signature``, from its most promising clusters only,
        as arrays of item seqs and their clusters' orders (sorted by order, then seq), and
        the index of each cluster's first item.

        Clusters are ranked by their best member's number of shared bands (more
        shared bands, higher Jaccard similarity; ties to the older cluster); only the
        top ``max_candidate_clusters`` are verified, so the cost per item stays bounded
        however full the window is; of those, the clusters an item of time ``t`` may
        join (``_time_ok``).  The ranking runs compiled over the dense ``seq -> cluster
        order`` array rather than each hit's item record: on this kind of machine a
        read from a scattered object costs several hundred ns (benchmarks/README.md,
        "Memory latency").
        """
        flat = self._lsh.band_hits(signature, self.settings.lsh_max_bucket)
        if not len(flat):
            return flat, flat, []
        spans, base = self._tables.spans()
        seqs, orders, firsts = _rank(
            flat,
            self._seq_order,
            self._seq_base,
            self.settings.max_candidate_clusters,
            spans,
            base,
            t,
            self._window,
        )
        return seqs, orders, firsts.tolist()

    def _dot_with(self, vec: dict[str, float], c: _Cluster, share_cap: float) -> float:
        """``_dot_capped(vec, c.centroid, share_cap)``, through ``c``'s table when ``vec``
        is the smaller of the two (then both add the products in ``vec``'s order)."""
        if not vec or len(vec) > len(c.centroid):  # (a centroid with terms has its table)
            return _dot_capped(vec, c.centroid, share_cap)
        hs, ws = self._arrays(vec)
        return float(self._tables.dots(hs, ws, [c.order], share_cap)[0])

    def _arrays(self, vec: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """``vec``'s term keys and weights as arrays."""
        kept = self._item_arrays
        if kept is not None and kept[0] is vec:  # the item being added (never changed)
            return kept[1], kept[2]
        n = len(vec)
        return term_hashes(vec, n), np.fromiter(vec.values(), np.float64, n)

    def _set_order(self, seq: int, order: int) -> None:
        """Record that item ``seq`` is in the cluster created ``order``-th (-1: expired)."""
        i = seq - self._seq_base
        if i >= len(self._seq_order):
            # Grow, first dropping the expired prefix (seqs only grow).
            lo = min(self._items, default=seq) - self._seq_base
            size = max(2 * (len(self._seq_order) - lo + 1), 1024)
            orders = np.full(size, -1, np.int64)
            sigs = np.zeros((size, self._seq_sigs.shape[1]), np.uint32)
            tokens = np.zeros(size, np.int64)
            kept = len(self._seq_order) - lo
            orders[:kept] = self._seq_order[lo:]
            sigs[:kept] = self._seq_sigs[lo:]
            tokens[:kept] = self._seq_tokens[lo:]
            self._seq_order, self._seq_sigs, self._seq_tokens = orders, sigs, tokens
            self._seq_base += lo
            i = seq - self._seq_base
        self._seq_order[i] = order

    def _closest(self, seqs: np.ndarray, signature: np.ndarray) -> int | None:
        """The id of the candidate item (of ``seqs``) whose signature agrees most with
        ``signature``."""
        if not len(seqs):
            return None
        k, _ = _most_agreeing(self._seq_sigs, seqs - self._seq_base, signature)
        return self._items[int(seqs[k])].item_id

    def _decay(self, first_a: float, last_a: float, first_b: float, last_b: float, half_life: float) -> float:
        """Recency factor for the time gap between two spans."""
        gap = max(0.0, first_b - last_a, first_a - last_b) - self.settings.recency_grace_hours * 3600.0
        # 0.5 ** (gap / half-life), through exp (which numba computes as Python does, to the
        # bit, unlike **: the compiled scores are the same numbers)
        return math.exp(-(gap / (half_life * 3600.0)) * _LN2) if gap > 0 else 1.0

    def accepts(self, cluster_id: int, t: float) -> bool:
        """Whether an item of time ``t`` may be put in the cluster without a score (same
        link, same words): it is in the index and its span with ``t`` stays within the
        time window.  (An admin's must-link is forced all the same.)"""
        c = self._clusters.get(cluster_id)
        return c is not None and self._time_ok(c, t)

    def _time_ok(self, c: _Cluster, t: float) -> bool:
        """Whether ``t`` is within the time window of every member: a story spans at
        most ``time_window_hours``, so a frequent name cannot grow one cluster for weeks."""
        return max(t, c.last) - min(t, c.first) <= self._window

    def _mirror(self, c: _Cluster) -> None:
        """Copy what scoring reads of ``c`` besides its centroid into the tables."""
        self._tables.set_profile(c.order, c.norm2, c.first, c.last, _term_key(c.top_name))

    def _new_cluster(self, cid: int) -> _Cluster:
        c = _Cluster(cid=cid, order=self._n_clusters_created, centroid={})
        self._n_clusters_created += 1
        self._clusters[cid] = c
        return c

    def _attach(
        self,
        item_id: int,
        c: _Cluster,
        vec: dict[str, float],
        t: float,
        signature: np.ndarray,
        feats: Features | _Frozen,
        keys: np.ndarray,
        *,
        index: bool,
    ) -> None:
        """Put the item in cluster ``c``; ``keys``: of all its terms (the document
        frequencies count them out when it leaves the window)."""
        seq = self._seq
        self._seq += 1
        cen = c.centroid
        if vec:
            c.norm2 += 2.0 * self._dot_with(vec, c, 1.0) + sum(x * x for x in vec.values())
            for term, x in vec.items():
                cen[term] = cen.get(term, 0.0) + x
            arrays = self._arrays(vec)
            self._tables.add(c.order, *arrays)
            self._item_arrays = None
            c.arrays = arrays if c.size == 0 else None  # (0.0 + x == x: the centroid is vec)
        if feats.entities and vec:
            c.names |= feats.entities
            c.find_top_name(vec)
        c.size += 1
        c.live += 1
        c.add_time(t)
        c.members.append(seq)
        n_tokens = feats.n_tokens if isinstance(feats, _Frozen) else len(feats.tokens)
        self._items[seq] = _Item(seq, item_id, c.cid, t, index, keys)
        self._set_order(seq, c.order)
        i = seq - self._seq_base
        self._seq_sigs[i] = signature
        self._seq_tokens[i] = n_tokens
        self._by_id[item_id] = seq
        if index:
            self._lsh.insert_signature(seq, signature)
        heapq.heappush(self._expiry, (t, seq))
        self._mirror(c)

    def _adopts(self, big: _Cluster, small: _Cluster) -> bool:
        """Whether ``small``'s items would join ``big`` if they arrived now (with the
        vectors made at their arrival): their mean score against it, recency, the share
        cap and the name-mismatch rule included, reaches the join threshold for their
        length."""
        if big.norm2 <= 0 or small.norm2 <= 0:
            return False
        if max(big.last, small.last) - min(big.first, small.first) > self._window:
            return False
        n_terms = len(small.centroid)
        # The mean of its members' scores (each member's vector has unit length).
        cap = self.share_cap(n_terms)
        if small.arrays is not None and n_terms <= len(big.centroid):  # as _dot_with, without remaking them
            dot = float(self._tables.dots(*small.arrays, [big.order], cap)[0])
        else:
            dot = self._dot_with(small.centroid, big, cap)
        score = dot / (small.size * math.sqrt(big.norm2))
        score *= self._decay(big.first, big.last, small.first, small.last, self.half_life(n_terms))
        mismatch = self.settings.name_mismatch_factor
        name = small.top_name
        if (
            mismatch < 1.0
            and name is not None
            and self._length_share(n_terms) >= 1.0
            and _other_protagonist(name, small.centroid, math.sqrt(small.norm2), big, math.sqrt(big.norm2))
        ):
            score *= mismatch
        return score >= self.join_threshold(n_terms)

    def _should_merge(self, a: _Cluster, b: _Cluster) -> bool:
        ratio = self.settings.merge_ratio
        if ratio <= 0 or a.norm2 <= 0 or b.norm2 <= 0:
            return False
        if max(a.last, b.last) - min(a.first, b.first) > self._window:
            return False
        cos = _dot(a.centroid, b.centroid) / math.sqrt(a.norm2 * b.norm2)
        cos *= self._decay(a.first, a.last, b.first, b.last, self.settings.recency_half_life_hours)
        return cos >= ratio * math.sqrt(a.cohesion() * b.cohesion())

    def _merge(self, a: _Cluster, b: _Cluster) -> tuple[_Cluster, _Cluster]:
        """Merge the younger of a, b into the older; return (survivor, absorbed)."""
        keep, gone = (a, b) if a.order <= b.order else (b, a)
        keep.norm2 += 2.0 * _dot(keep.centroid, gone.centroid) + gone.norm2
        cen = keep.centroid
        for term, x in gone.centroid.items():
            cen[term] = cen.get(term, 0.0) + x
        self._tables.merge(keep.order, gone.order)
        keep.arrays = None
        if gone.names:
            keep.names |= gone.names
            keep.top_name = None
            keep.find_top_name(sorted(keep.names))
        keep.size += gone.size
        keep.live += gone.live
        keep.add_time(gone.first)
        keep.add_time(gone.last)
        items = self._items
        for seq in gone.members:
            it = items.get(seq)
            if it is not None:
                it.cluster = keep.cid
                keep.members.append(seq)
                self._seq_order[seq - self._seq_base] = keep.order
        del self._clusters[gone.cid]
        self._mirror(keep)
        return keep, gone


def compile_kernels() -> None:
    """Compile every compiled kernel of the engine (or load it from numba's cache) by
    clustering a few made-up items: ``make`` runs this at install, so that the first
    update of a fresh install does not wait seconds for the compiler."""
    from aggregator.fingerprint import signature

    words = " ".join(f"word{i} Name{i % 7}" for i in range(120))  # more terms than max_terms
    texts = [
        ("Harbour council approves new ferry terminal", f"The council approved the terminal. {words}"),
        ("Harbour council approves new ferry terminal", f"The council approved the terminal. {words}"),
        ("Council backs ferry terminal plan", f"Councillors backed the plan for a terminal. {words} extra"),
    ]
    engine = ClusterEngine(ClusterSettings())
    ids = iter(range(1, 100))
    for n, (title, text) in enumerate(texts):
        feats = engine.features(title, text)
        engine.add(n, 1000.0 + n, feats, signature(feats.tokens), new_cluster=lambda: next(ids))
    counts = TermCounts()
    counts.add(np.arange(1, 2000, dtype=np.int64), 1)  # (its rebuild)
