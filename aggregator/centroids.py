"""The cluster engine's compiled (numba) parts: centroid tables, term counts, the item vector.

The cluster engine keeps each centroid as a ``term -> weight`` dict, the source of
truth for everything it does with a centroid.  Scoring an arriving item against
its ~30 candidate centroids, the largest single cost of the engine, reads the
item's ~60 terms in each of them: in a dict every read chases pointers to objects
scattered over the heap (about a microsecond each on the benchmark machine,
benchmarks/README.md "Memory latency").  Here every centroid is mirrored as a
table of (term hash, weight) pairs in two flat arrays, beside the rest of what a
score reads of a cluster (its squared norm, first and last time and main name:
``set_profile``), and one compiled call scores the item against all candidates
(:meth:`CentroidTables.scores`: dot product, share cap, recency decay, name rule).

Each term is keyed by ``hash(term)`` (64 bits, cached on the interned string).
The tables receive exactly the additions the dicts receive, in the same order,
so the weights are bit-for-bit equal; :meth:`CentroidTables.dots` adds the
products in the item's term order, as :func:`aggregator.cluster._dot_capped`
does, and gives the same results (tested).  Two distinct terms of one centroid
with equal 64-bit hashes would be summed as one: with tens of thousands of
terms per centroid the odds are below 1 in 10**10.

Tables live in one arena: a table that must grow moves to the end of the arena,
and the space it leaves (or a dropped table's) is reclaimed by compacting the
arena when it is full and a third of it is such space.  Tables are at most half
full.

:class:`TermCounts` holds the window's document frequencies by the same keys, and
:func:`weigh` makes an item's vector from them.  Every compiled formula gives the
numbers its Python original gave, to the bit (tested against that original):
numba's ``exp``, ``log`` and ``pow`` with a variable exponent are the C library's,
as Python's are; only ``0.5 ** x`` with its constant base differed, so the decay is
computed through ``exp`` on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numba  # type: ignore[import-untyped]
import numpy as np

__all__ = ["CentroidTables", "TermCounts", "jit", "stable_argsort", "term_hashes", "weigh"]

_EMPTY = 0  # key of an empty slot; a term hashing to 0 is keyed 1 instead

# The kernels keep the GIL (no ``nogil``): each runs for microseconds, and a thread
# that lets the GIL go for that long may wait up to the switch interval (5 ms) to get
# it back from a busy thread, such as the one unpickling the worker processes'
# results during an update (figure 3 was 11 % slower with ``nogil=True``).
_MIN_CAPACITY = 64
_LN2 = math.log(2.0)


def term_hashes(terms: Iterable[str], n: int) -> np.ndarray:
    """The table keys of ``n`` terms."""
    hs = np.fromiter(map(hash, terms), np.int64, n)
    hs[hs == _EMPTY] = 1
    return hs


def jit(fn: Callable[..., Any]) -> Any:
    """``numba.njit`` with its on-disk cache where numba finds a place for it: a service
    user with neither a writable code folder nor a home made every command fail at
    import ("cannot cache function: no locator available"); then it compiles at start."""
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:
        return numba.njit(fn)


@jit
def _slot(keys: np.ndarray, off: int, mask: int, h: int) -> int:
    """Where key ``h`` is in the table at ``off``, or the empty slot where it would go."""
    j = h & mask
    while True:
        k = keys[off + j]
        if k in (h, _EMPTY):
            return off + j
        j = (j + 1) & mask


@jit
def _add(keys: np.ndarray, vals: np.ndarray, off: int, cap: int, hs: np.ndarray, ws: np.ndarray) -> int:
    """Add weights ``ws`` of terms ``hs`` into the table at ``off``; returns how many keys were new."""
    new = 0
    for i in range(hs.shape[0]):
        s = _slot(keys, off, cap - 1, hs[i])
        if keys[s] == _EMPTY:
            keys[s] = hs[i]
            vals[s] = ws[i]
            new += 1
        else:
            vals[s] += ws[i]
    return new


@jit
def _dots(
    keys: np.ndarray,
    vals: np.ndarray,
    offs: np.ndarray,
    caps: np.ndarray,
    hs: np.ndarray,
    ws: np.ndarray,
    share_cap: float,
) -> np.ndarray:
    out = np.empty(offs.shape[0])
    for t in range(offs.shape[0]):
        out[t] = _dot_in(keys, vals, offs[t], caps[t] - 1, hs, ws, share_cap)[0]
    return out


@jit
def _dot_in(
    keys: np.ndarray, vals: np.ndarray, off: int, mask: int, hs: np.ndarray, ws: np.ndarray, share_cap: float
) -> tuple[float, int]:
    """The sum of ``ws[i] * table[hs[i]]`` over the table at ``off`` (``mask``: its
    capacity - 1), added in the order of ``hs``, in which the largest product counts for
    at most ``share_cap`` of the result; and how many keys of ``hs`` the table holds."""
    total = 0.0
    top = 0.0
    shared = 0
    for i in range(hs.shape[0]):
        s = _slot(keys, off, mask, hs[i])
        if keys[s] != _EMPTY:
            shared += 1
            p = ws[i] * vals[s]
            total += p
            if p > top:
                top = p
    if share_cap < 1.0 and total > 0.0 and top > share_cap * total:
        total = (total - top) / (1.0 - share_cap)
    return total, shared


@jit
def _scores(
    keys: np.ndarray,
    vals: np.ndarray,
    offs: np.ndarray,
    caps: np.ndarray,
    spans: np.ndarray,
    tops: np.ndarray,
    idx: np.ndarray,
    pre: np.ndarray,
    hs: np.ndarray,
    ws: np.ndarray,
    t: float,
    rule: tuple[float, float, float, float, float, float, float],
    name: int,
    cold: bool,
) -> tuple[np.ndarray, np.ndarray, float]:
    """:meth:`CentroidTables.scores` on the arrays (``spans`` rows: squared norm, first
    time, last time; ``tops``: main name keys; ``idx``: the handles' indexes)."""
    share_cap, half_life, grace, mismatch, absent_item, absent_cluster, threshold = rule
    scores = np.zeros(idx.shape[0])
    passed = np.zeros(idx.shape[0], np.bool_)
    best_below = 0.0
    for j in range(idx.shape[0]):
        i = idx[j]
        if i < 0 or i >= caps.shape[0] or caps[i] == 0 or spans[i, 0] <= 0:  # no terms
            continue
        norm = math.sqrt(spans[i, 0])
        off = offs[i]
        mask = caps[i] - 1
        total, shared = _dot_in(keys, vals, off, mask, hs, ws, share_cap)
        dot = total if math.isnan(pre[j]) else pre[j]
        gap = max(max(0.0, t - spans[i, 2]), spans[i, 1] - t) - grace * 3600.0
        decay = math.exp(-(gap / (half_life * 3600.0)) * _LN2) if gap > 0 else 1.0  # as cluster._decay
        score = dot * decay / norm
        if name != _EMPTY and tops[i] != _EMPTY:
            in_item = 0.0
            for m in range(hs.shape[0]):
                if hs[m] == tops[i]:
                    in_item = ws[m]
                    break
            s = _slot(keys, off, mask, name)
            in_cluster = vals[s] if keys[s] != _EMPTY else 0.0
            if in_item < absent_item * 1.0 and in_cluster < absent_cluster * norm:
                score *= mismatch
        scores[j] = score
        if score >= threshold and not (cold and shared < 2):
            passed[j] = True
        elif score > best_below:
            best_below = score
    return scores, passed, best_below


class CentroidTables:
    """Hash tables of ``term hash -> weight``, one per cluster, addressed by an int handle.

    A table's place in the arena (offset, capacity, keys held) is kept in dense arrays
    indexed by handle (the engine's handles are cluster creation orders, which only
    grow), so that compiled code finds any table without a Python look-up.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._keys = np.zeros(capacity, np.int64)
        self._vals = np.zeros(capacity, np.float64)
        self._top = 0  # arena space used up to here
        self._free = 0  # space below _top no table uses
        # handle - _base -> offset, capacity (0: no table) and keys held
        self._base = 0
        self._off = np.zeros(1024, np.int64)
        self._cap = np.zeros(1024, np.int64)
        self._held = np.zeros(1024, np.int64)
        # handle - _base -> the cluster's squared norm, first and last time, main name's key
        self._spans = np.zeros((1024, 3), np.float64)
        self._tops = np.zeros(1024, np.int64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __contains__(self, handle: int) -> bool:
        i = handle - self._base
        return 0 <= i < len(self._cap) and bool(self._cap[i])

    def add(self, handle: int, hs: np.ndarray, ws: np.ndarray) -> None:
        """Add weights ``ws`` for the term keys ``hs`` to table ``handle`` (made if new)."""
        i = self._slot_of(handle)
        if not self._cap[i]:
            self._off[i], self._cap[i] = self._alloc(_capacity_for(len(hs)))
            self._held[i] = 0
            self._n += 1
        elif 2 * (self._held[i] + len(hs)) > self._cap[i]:
            self._grow(i, int(self._held[i]) + len(hs))
        self._held[i] += _add(self._keys, self._vals, self._off[i], self._cap[i], hs, ws)

    def merge(self, handle: int, source: int) -> None:
        """Add table ``source`` into table ``handle`` and drop ``source``."""
        if source not in self:  # an empty centroid
            return
        i = self._slot_of(handle)
        j = source - self._base  # (after _slot_of, which may move the base)
        if not self._cap[i]:
            self._off[i], self._cap[i] = self._alloc(_capacity_for(int(self._held[j])))
            self._held[i] = 0
            self._n += 1
        elif 2 * (self._held[i] + self._held[j]) > self._cap[i]:
            self._grow(i, int(self._held[i] + self._held[j]))
        self._held[i] += _add(self._keys, self._vals, self._off[i], self._cap[i], *self._entries(j))
        self.drop(source)

    def drop(self, handle: int) -> None:
        if handle in self:
            i = handle - self._base
            self._free += int(self._cap[i])
            self._cap[i] = 0
            self._n -= 1

    def get(self, handle: int, h: int) -> float:
        """The weight of term key ``h`` in table ``handle`` (0.0 if absent); for tests."""
        return float(self.dots(np.array([h], np.int64), np.ones(1), [handle], 1.0)[0])

    def dots(self, hs: np.ndarray, ws: np.ndarray, handles: list[int], share_cap: float) -> np.ndarray:
        """For each table in ``handles``: the sum of ``ws[i] * table[hs[i]]``, added in the
        order of ``hs``, in which the largest product counts for at most ``share_cap`` of the
        result (``aggregator.cluster._dot_capped`` with the item as the smaller vector)."""
        idx = np.asarray(handles, np.int64) - self._base
        out: np.ndarray = _dots(self._keys, self._vals, self._off[idx], self._cap[idx], hs, ws, share_cap)
        return out

    def set_profile(self, handle: int, norm2: float, first: float, last: float, top: int) -> None:
        """What :meth:`scores` needs of cluster ``handle`` besides its centroid: the
        centroid's squared length, the cluster's first and last time, and the table key
        of its main name (0: none).  Kept for handles with a table."""
        i = self._slot_of(handle)
        row = self._spans[i]
        row[0], row[1], row[2] = norm2, first, last
        self._tops[i] = top

    def spans(self) -> tuple[np.ndarray, int]:
        """The profiles' (squared norm, first time, last time) rows, and the handle of the
        first row: valid for the handles with a table (read only, until the next change)."""
        return self._spans, self._base

    def scores(
        self,
        hs: np.ndarray,
        ws: np.ndarray,
        handles: list[int],
        pre: np.ndarray,
        t: float,
        rule: tuple[float, float, float, float, float, float, float],
        name: int,
        cold: bool,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """The engine's score of an item (term keys ``hs``, weights ``ws``, time ``t``)
        against each cluster in ``handles``, all in one compiled call: the capped dot
        product (or ``pre[j]`` where not NaN), the recency decay and the name-mismatch rule;
        ``rule`` is (share cap, half-life hours, grace hours, mismatch factor, the two
        name-absence bounds, join threshold), ``name`` the key of the item's main name
        (0: none), ``cold``: a join needs two shared terms.  Returns the scores (0 for a
        cluster without terms), whether each joins (reaches the threshold, and the cold
        rule), and the best score of the others (at least 0)."""
        idx = np.asarray(handles, np.int64) - self._base
        scores, passed, best = _scores(
            self._keys,
            self._vals,
            self._off,
            self._cap,
            self._spans,
            self._tops,
            idx,
            pre,
            hs,
            ws,
            t,
            rule,
            name,
            cold,
        )
        return scores, passed, float(best)

    # -- arena ------------------------------------------------------------------------

    def _slot_of(self, handle: int) -> int:
        """``handle``'s index in the dense arrays, which are moved or grown to hold it."""
        i = handle - self._base
        if 0 <= i < len(self._cap):
            return i
        held = np.flatnonzero(self._cap)
        lo = min(handle, int(held[0]) + self._base) if len(held) else handle
        hi = max(handle, int(held[-1]) + self._base) if len(held) else handle
        size = max(1024, 2 * (hi - lo + 1))
        arrays = []
        for old in (self._off, self._cap, self._held, self._spans, self._tops):
            new = np.zeros((size, *old.shape[1:]), old.dtype)
            if len(held):
                new[held + self._base - lo] = old[held]
            arrays.append(new)
        self._off, self._cap, self._held, self._spans, self._tops = arrays
        self._base = lo
        return handle - lo

    def _entries(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The keys and weights held by the table at index ``i`` (copies)."""
        off, cap = self._off[i], self._cap[i]
        keys = self._keys[off : off + cap]
        held = keys != _EMPTY
        return keys[held], self._vals[off : off + cap][held]

    def _grow(self, i: int, keys_held: int) -> None:
        off, cap = self._alloc(_capacity_for(keys_held))
        # (read after _alloc, which may have compacted the arena)
        _add(self._keys, self._vals, off, cap, *self._entries(i))
        self._free += int(self._cap[i])
        self._off[i], self._cap[i] = off, cap

    def _alloc(self, cap: int) -> tuple[int, int]:
        """A zeroed region of ``cap`` slots at the end of the arena."""
        if self._top + cap > len(self._keys):
            if 2 * self._free >= self._top - self._free:  # a third of the space is dropped tables'
                self._compact()
            if self._top + cap > len(self._keys):
                size = len(self._keys)
                while self._top + cap > size:
                    size *= 2
                keys = np.zeros(size, np.int64)
                vals = np.zeros(size, np.float64)
                keys[: self._top] = self._keys[: self._top]
                vals[: self._top] = self._vals[: self._top]
                self._keys, self._vals = keys, vals
        off = self._top
        self._top += cap
        return off, cap

    def _compact(self) -> None:
        """Move every table down over the space dropped tables left, in place."""
        keys, vals = self._keys, self._vals
        top = 0
        held = np.flatnonzero(self._cap)
        for i in held[np.argsort(self._off[held], kind="stable")].tolist():
            off, cap = int(self._off[i]), int(self._cap[i])
            if off != top:  # off > top: numpy copies overlapping slices correctly
                keys[top : top + cap] = keys[off : off + cap]
                vals[top : top + cap] = vals[off : off + cap]
                self._off[i] = top
            top += cap
        keys[top : self._top] = _EMPTY
        vals[top : self._top] = 0.0
        self._top, self._free = top, 0


def _capacity_for(n: int) -> int:
    """A power of two at least twice ``n`` (tables stay at most half full)."""
    cap = _MIN_CAPACITY
    while cap < 2 * n:
        cap *= 2
    return cap


@jit
def _count(keys: np.ndarray, counts: np.ndarray, hs: np.ndarray, delta: int, out: np.ndarray) -> int:
    """Add ``delta`` to the count of each key of ``hs`` (in order), writing each count as
    it stands after its addition to ``out``; returns how many keys were new."""
    mask = keys.shape[0] - 1
    new = 0
    for i in range(hs.shape[0]):
        s = _slot(keys, 0, mask, hs[i])
        if keys[s] == _EMPTY:
            keys[s] = hs[i]
            counts[s] = delta
            new += 1
        else:
            counts[s] += delta
        out[i] = counts[s]
    return new


class TermCounts:
    """A ``term key -> count`` table (the engine's document frequencies), open addressing.

    A key whose count falls to 0 keeps its slot until the table is rebuilt, which
    happens when it would be more than half full and drops those keys.
    """

    def __init__(self) -> None:
        self._keys = np.zeros(1024, np.int64)
        self._counts = np.zeros(1024, np.int64)
        self._used = 0

    def add(self, hs: np.ndarray, delta: int) -> np.ndarray:
        """Add ``delta`` to the counts of keys ``hs``; returns each count after its addition."""
        if delta > 0 and 2 * (self._used + len(hs)) > len(self._keys):  # (only an addition adds keys)
            self._rebuild(len(hs))
        out = np.empty(len(hs), np.int64)
        self._used += _count(self._keys, self._counts, hs, delta, out)
        return out

    def as_dict(self) -> dict[int, int]:
        """Key -> count, for the keys counted more than 0 times."""
        held = self._counts > 0
        return dict(zip(self._keys[held].tolist(), self._counts[held].tolist(), strict=True))

    def _rebuild(self, more: int) -> None:
        held = self._counts > 0
        keys, counts = self._keys[held], self._counts[held]
        self._keys = np.zeros(_capacity_for(2 * (len(keys) + more)), np.int64)
        self._counts = np.zeros(len(self._keys), np.int64)
        self._used = _refill(self._keys, self._counts, keys, counts)


@jit
def _refill(keys: np.ndarray, counts: np.ndarray, old_keys: np.ndarray, old_counts: np.ndarray) -> int:
    mask = keys.shape[0] - 1
    for i in range(old_keys.shape[0]):
        s = _slot(keys, 0, mask, old_keys[i])
        keys[s] = old_keys[i]
        counts[s] = old_counts[i]
    return int(old_keys.shape[0])


@jit
def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """The indexes that sort ``keys`` ascending, equal keys in index order (a bottom-up
    merge sort: ``np.argsort(kind="stable")``, which numba takes seconds to compile)."""
    n = keys.shape[0]
    idx = np.arange(n)
    tmp = np.empty(n, np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if keys[idx[j]] < keys[idx[i]]:
                    tmp[k] = idx[j]
                    j += 1
                else:
                    tmp[k] = idx[i]
                    i += 1
                k += 1
            while i < mid:
                tmp[k] = idx[i]
                i += 1
                k += 1
            while j < hi:
                tmp[k] = idx[j]
                j += 1
                k += 1
        idx, tmp = tmp, idx
        width *= 2
    return idx


@jit
def weigh(
    counts: np.ndarray, ws: np.ndarray, log_n: float, power: float, top: int, cap: float, two: float
) -> tuple[np.ndarray, np.ndarray]:
    """An item's vector (``aggregator.cluster.ClusterEngine._vectorize``): each term's weight
    ``ws[i]`` times its IDF ``(log_n - ln(counts[i] + 1) + 1) ** power``; the ``top``
    heaviest kept (ties to the earlier term) when there are more; the largest lowered so
    that none holds more than ``cap`` of the length (``_cap_top_terms``); L2-normalised.
    Returns the indexes of the terms kept, in the vector's order, and their weights (none
    when the length is 0, before or after the cap).  ``two`` is 2.0, passed in so that
    ``x ** two`` stays the libm ``pow`` Python computes rather than becoming ``x * x``,
    which rounds differently."""
    n = ws.shape[0]
    xs = np.empty(n)
    norm2 = 0.0
    for i in range(n):
        xs[i] = ws[i] * (log_n - math.log(counts[i] + 1) + 1.0) ** power
        norm2 += xs[i] * xs[i]
    if norm2 <= 0.0:
        return np.zeros(0, np.int64), np.zeros(0)
    # (Explicit loops: numba compiles them in a fraction of the time array expressions take.)
    idx = np.arange(n)
    if n > top:  # the lightest terms barely move a cosine
        neg = np.empty(n)
        for i in range(n):
            neg[i] = -xs[i]
        idx = stable_argsort(neg)[:top]
        kept = np.empty(top)
        norm2 = 0.0
        for i in range(top):
            kept[i] = xs[idx[i]]
            norm2 += kept[i] * kept[i]
        xs = kept
    if cap < 1.0:
        norm2 = _cap_top(xs, norm2, cap, two)
        if norm2 <= 0.0:  # all weight was in the capped terms, the rest is 0 (or rounding below)
            return np.zeros(0, np.int64), np.zeros(0)
    inv = 1.0 / math.sqrt(norm2)
    for i in range(xs.shape[0]):
        xs[i] *= inv
    return idx, xs


@jit
def _cap_top(xs: np.ndarray, norm2: float, cap: float, two: float) -> float:
    """``aggregator.cluster._cap_top_terms`` on an array, in place."""
    n = xs.shape[0]
    top = xs[0]
    neg = np.empty(n)
    for i in range(n):
        top = max(top, xs[i])
        neg[i] = -xs[i]
    if top**two <= cap * cap * norm2:
        return norm2
    ranked = stable_argsort(neg)
    rest = norm2
    for k in range(1, n + 1):
        rest -= xs[ranked[k - 1]] ** two
        if k * cap * cap >= 1.0 or k == n:
            return norm2
        b = cap * math.sqrt(max(rest, 0.0) / (1.0 - k * cap * cap))
        if xs[ranked[k]] <= b:
            for j in range(k):
                xs[ranked[j]] = b
            return float(rest + k * b * b)
    return norm2
