"""The clusters' centroids as open-addressing hash tables in one arena, for the scoring loop.

The cluster engine keeps each centroid as a ``term -> weight`` dict, the source of
truth for everything it does with a centroid.  Scoring an arriving item against
its ~30 candidate centroids, the largest single cost of the engine, reads the
item's ~60 terms in each of them: in a dict every read chases pointers to objects
scattered over the heap (about a microsecond each on the benchmark machine,
benchmarks/README.md "Memory latency").  Here every centroid is mirrored as a
table of (term hash, weight) pairs in two flat arrays, and one compiled call
(numba) scores the item against all candidates.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numba  # type: ignore[import-untyped]
import numpy as np

__all__ = ["CentroidTables", "term_hashes"]

_EMPTY = 0  # key of an empty slot; a term hashing to 0 is keyed 1 instead

# The kernels keep the GIL (no ``nogil``): each runs for microseconds, and a thread
# that lets the GIL go for that long may wait up to the switch interval (5 ms) to get
# it back from a busy thread, such as the one unpickling the worker processes'
# results during an update (figure 3 was 11 % slower with ``nogil=True``).
_MIN_CAPACITY = 64


def term_hashes(terms: Iterable[str], n: int) -> np.ndarray:
    """The table keys of ``n`` terms."""
    hs = np.fromiter(map(hash, terms), np.int64, n)
    hs[hs == _EMPTY] = 1
    return hs


def _jit(fn: Callable[..., Any]) -> Any:
    """``numba.njit`` with its on-disk cache where numba finds a place for it: a service
    user with neither a writable code folder nor a home made every command fail at
    import ("cannot cache function: no locator available"); then it compiles at start."""
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:
        return numba.njit(fn)


@_jit
def _slot(keys: np.ndarray, off: int, mask: int, h: int) -> int:
    """Where key ``h`` is in the table at ``off``, or the empty slot where it would go."""
    j = h & mask
    while True:
        k = keys[off + j]
        if k in (h, _EMPTY):
            return off + j
        j = (j + 1) & mask


@_jit
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


@_jit
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
        off = offs[t]
        mask = caps[t] - 1
        total = 0.0
        top = 0.0
        for i in range(hs.shape[0]):
            s = _slot(keys, off, mask, hs[i])
            if keys[s] != _EMPTY:
                p = ws[i] * vals[s]
                total += p
                if p > top:
                    top = p
        if share_cap < 1.0 and total > 0.0 and top > share_cap * total:
            total = (total - top) / (1.0 - share_cap)
        out[t] = total
    return out


class CentroidTables:
    """Hash tables of ``term hash -> weight``, one per cluster, addressed by an int handle."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._keys = np.zeros(capacity, np.int64)
        self._vals = np.zeros(capacity, np.float64)
        self._top = 0  # arena space used up to here
        self._free = 0  # space below _top no table uses
        self._tables: dict[int, list[int]] = {}  # handle -> [offset, capacity, keys held]

    def __len__(self) -> int:
        return len(self._tables)

    def __contains__(self, handle: int) -> bool:
        return handle in self._tables

    def add(self, handle: int, hs: np.ndarray, ws: np.ndarray) -> None:
        """Add weights ``ws`` for the term keys ``hs`` to table ``handle`` (made if new)."""
        t = self._tables.get(handle)
        if t is None:
            t = self._tables[handle] = [*self._alloc(_capacity_for(len(hs))), 0]
        elif 2 * (t[2] + len(hs)) > t[1]:
            self._grow(handle, t[2] + len(hs))
            t = self._tables[handle]
        t[2] += _add(self._keys, self._vals, t[0], t[1], hs, ws)

    def merge(self, handle: int, source: int) -> None:
        """Add table ``source`` into table ``handle`` and drop ``source``."""
        src = self._tables.get(source)
        if src is None:  # an empty centroid
            return
        t = self._tables.get(handle)
        if t is None:
            t = self._tables[handle] = [*self._alloc(_capacity_for(src[2])), 0]
        elif 2 * (t[2] + src[2]) > t[1]:
            self._grow(handle, t[2] + src[2])
            t = self._tables[handle]
            src = self._tables[source]  # the arena may have been compacted
        t[2] += _add(self._keys, self._vals, t[0], t[1], *self._entries(src))
        self.drop(source)

    def drop(self, handle: int) -> None:
        t = self._tables.pop(handle, None)
        if t is not None:
            self._free += t[1]

    def get(self, handle: int, h: int) -> float:
        """The weight of term key ``h`` in table ``handle`` (0.0 if absent); for tests."""
        return float(self.dots(np.array([h], np.int64), np.ones(1), [handle], 1.0)[0])

    def dots(self, hs: np.ndarray, ws: np.ndarray, handles: list[int], share_cap: float) -> np.ndarray:
        """For each table in ``handles``: the sum of ``ws[i] * table[hs[i]]``, added in the
        order of ``hs``, in which the largest product counts for at most ``share_cap`` of the
        result (``aggregator.cluster._dot_capped`` with the item as the smaller vector)."""
        tables = self._tables
        offs = np.fromiter((tables[h][0] for h in handles), np.int64, len(handles))
        caps = np.fromiter((tables[h][1] for h in handles), np.int64, len(handles))
        out: np.ndarray = _dots(self._keys, self._vals, offs, caps, hs, ws, share_cap)
        return out

    # -- arena ------------------------------------------------------------------------

    def _entries(self, t: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The keys and weights held by table ``t`` (copies)."""
        keys = self._keys[t[0] : t[0] + t[1]]
        held = keys != _EMPTY
        return keys[held], self._vals[t[0] : t[0] + t[1]][held]

    def _grow(self, handle: int, keys_held: int) -> None:
        off, cap = self._alloc(_capacity_for(keys_held))
        old = self._tables[handle]  # read after _alloc, which may have compacted the arena
        _add(self._keys, self._vals, off, cap, *self._entries(old))
        self._free += old[1]
        self._tables[handle] = [off, cap, old[2]]

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
        for t in sorted(self._tables.values()):
            off, cap = t[0], t[1]
            if off != top:  # off > top: numpy copies overlapping slices correctly
                keys[top : top + cap] = keys[off : off + cap]
                vals[top : top + cap] = vals[off : off + cap]
                t[0] = top
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
