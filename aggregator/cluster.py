"""Online story clustering: MinHash-LSH finds candidates, a profile score decides.

The engine holds derived, in-memory state only (the LSH index, per-cluster term
profiles, document frequencies) and is rebuilt from the database at start-up.
It does no I/O: the pipeline asks it for a :class:`Proposal`, stores the
decision, then tells the engine with :meth:`ClusterEngine.add`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from datasketch import MinHashLSH

from aggregator.fingerprint import Features, lean_minhash
from aggregator.settings import ClusterSettings

__all__ = ["ClusterEngine", "Doc", "Proposal"]


@dataclass(frozen=True)
class Doc:
    item_id: int
    time: float
    features: Features
    signature: np.ndarray


@dataclass(frozen=True)
class Proposal:
    """The engine's choice: join ``cluster_id`` (None: start a new cluster)."""

    cluster_id: int | None
    score: float
    signal: str
    matched_item_id: int | None = None


@dataclass
class _Profile:
    weights: dict[str, float] = field(default_factory=dict)
    members: set[int] = field(default_factory=set)
    last_time: float = float("-inf")


class ClusterEngine:
    """Assigns items to story clusters, one at a time, in time order."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.lsh = MinHashLSH(threshold=settings.lsh_threshold, num_perm=settings.num_perm)
        self._docs: dict[int, Doc] = {}
        self._cluster_of: dict[int, int] = {}
        self._profiles: dict[int, _Profile] = {}
        self._df: dict[str, int] = {}
        self._n = 0
        self._by_time: list[tuple[float, int]] = []  # heap, may hold stale entries

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def window_seconds(self) -> float:
        return self.settings.time_window_hours * 3600.0

    def _idf(self, token: str) -> float:
        return math.log((self._n + 1) / (self._df.get(token, 0) + 1)) + 1.0

    def _cosine(self, weights: dict[str, float], profile: dict[str, float]) -> float:
        dot = 0.0
        na = 0.0
        for t, w in weights.items():
            idf = self._idf(t)
            x = w * idf
            na += x * x
            p = profile.get(t)
            if p:
                dot += x * p * idf
        if not dot:
            return 0.0
        nb = math.fsum((p * self._idf(t)) ** 2 for t, p in profile.items())
        return dot / math.sqrt(na * nb)

    def propose(self, doc: Doc) -> Proposal:
        """Best cluster for ``doc`` among those LSH suggests, or a new one."""
        if not doc.features.tokens:
            return Proposal(None, 0.0, "new")
        candidates = self.lsh.query(lean_minhash(doc.signature))
        clusters: dict[int, int] = {}
        for key in candidates:
            cid = self._cluster_of.get(key)
            if cid is None:
                continue
            if abs(self._docs[key].time - doc.time) > self.window_seconds:
                continue
            clusters.setdefault(cid, key)
        best: Proposal = Proposal(None, 0.0, "new")
        for cid, via in sorted(clusters.items()):
            score = self._cosine(doc.features.weights, self._profiles[cid].weights)
            if score > best.score:
                best = Proposal(cid, score, "similar", via)
        if best.cluster_id is None or best.score < self.settings.verify_threshold:
            return Proposal(None, best.score, "new", best.matched_item_id)
        return best

    def add(self, doc: Doc, cluster_id: int) -> None:
        """Record that ``doc`` is in ``cluster_id`` (index it for later items)."""
        if doc.item_id in self._docs:
            self.remove(doc.item_id)
        self._docs[doc.item_id] = doc
        self._cluster_of[doc.item_id] = cluster_id
        prof = self._profiles.setdefault(cluster_id, _Profile())
        prof.members.add(doc.item_id)
        prof.last_time = max(prof.last_time, doc.time)
        for t, w in doc.features.weights.items():
            prof.weights[t] = prof.weights.get(t, 0.0) + w
        for t in doc.features.tokens:
            self._df[t] = self._df.get(t, 0) + 1
        self._n += 1
        heapq.heappush(self._by_time, (doc.time, doc.item_id))
        if doc.features.tokens:
            self.lsh.insert(doc.item_id, lean_minhash(doc.signature), check_duplication=False)

    def remove(self, item_id: int) -> None:
        doc = self._docs.pop(item_id, None)
        if doc is None:
            return
        cid = self._cluster_of.pop(item_id)
        prof = self._profiles[cid]
        prof.members.discard(item_id)
        for t, w in doc.features.weights.items():
            left = prof.weights.get(t, 0.0) - w
            if left > 1e-9:
                prof.weights[t] = left
            else:
                prof.weights.pop(t, None)
        if not prof.members:
            del self._profiles[cid]
        for t in doc.features.tokens:
            self._df[t] -= 1
            if not self._df[t]:
                del self._df[t]
        self._n -= 1
        if item_id in self.lsh.keys:
            self.lsh.remove(item_id)

    def evict_before(self, cutoff: float) -> int:
        """Forget items older than ``cutoff`` so the index covers only the time window."""
        evicted = 0
        heap = self._by_time
        while heap and heap[0][0] < cutoff:
            t, item_id = heapq.heappop(heap)
            doc = self._docs.get(item_id)
            if doc is not None and doc.time == t:
                self.remove(item_id)
                evicted += 1
        return evicted

    def assignments(self) -> dict[int, int]:
        """Item id -> cluster id of everything indexed."""
        return dict(self._cluster_of)

    def doc(self, item_id: int) -> Doc | None:
        return self._docs.get(item_id)

    def clusters_of(self, item_ids: Iterable[int]) -> dict[int, int]:
        return {i: self._cluster_of[i] for i in item_ids if i in self._cluster_of}
