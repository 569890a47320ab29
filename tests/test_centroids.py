from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.centroids import CentroidTables, term_hashes
from aggregator.cluster import ClusterEngine, _dot_capped
from aggregator.fingerprint import signature
from aggregator.settings import ClusterSettings
from tests.conftest import dev_rows


def reference_dot(item: list[tuple[int, float]], table: dict[int, float], cap: float) -> float:
    """The capped dot product, products added left to right in the item's order."""
    prods = [w * table.get(h, 0.0) for h, w in item]
    total = 0.0
    for p in prods:
        total += p
    top = max(prods, default=0.0)
    if cap < 1.0 and total > 0.0 and top > cap * total:
        return (total - top) / (1.0 - cap)
    return total


KEYS = st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(lambda h: h != 0)
VECTOR = st.dictionaries(
    st.one_of(st.integers(min_value=1, max_value=40), KEYS),  # small keys collide in small tables
    st.floats(min_value=1e-6, max_value=10.0),
    max_size=60,
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 5), VECTOR),
        st.tuples(st.just("merge"), st.integers(0, 5), st.integers(0, 5)),
        st.tuples(st.just("drop"), st.integers(0, 5), st.just(None)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, probe=VECTOR, cap=st.sampled_from([0.5, 0.7, 1.0]))
def test_tables_hold_exactly_what_dicts_would(ops: list, probe: dict[int, float], cap: float) -> None:
    tables = CentroidTables(capacity=128)  # tiny arena: growth, moves and compaction all happen
    ref: dict[int, dict[int, float]] = {}
    for op, a, b in ops:
        if op == "add":
            if not b:
                continue
            tables.add(a, np.array(list(b), np.int64), np.array(list(b.values())))
            cen = ref.setdefault(a, {})
            for h, w in b.items():
                cen[h] = cen.get(h, 0.0) + w
        elif op == "merge" and a != b and b in ref:
            tables.merge(a, b)
            cen = ref.setdefault(a, {})
            for h, w in ref.pop(b).items():
                cen[h] = cen.get(h, 0.0) + w
        elif op == "drop":
            tables.drop(a)
            ref.pop(a, None)
    assert sorted(ref) == sorted(h for h in range(6) if h in tables)
    for handle, cen in ref.items():
        for h, w in cen.items():
            assert tables.get(handle, h) == w  # bit for bit
    if ref and probe:
        handles = sorted(ref)
        got = tables.dots(np.array(list(probe), np.int64), np.array(list(probe.values())), handles, cap)
        want = [reference_dot(list(probe.items()), ref[h], cap) for h in handles]
        assert got.tolist() == want


def test_term_hashes_are_the_strings_hashes_with_zero_moved() -> None:
    class Zero:
        def __hash__(self) -> int:
            return 0

    assert term_hashes(["story", "putin"], 2).tolist() == [hash("story"), hash("putin")]
    assert term_hashes([Zero(), "x"], 2).tolist() == [1, hash("x")]  # type: ignore[list-item]


def test_engine_tables_mirror_its_centroids_through_merges_and_expiry() -> None:
    rows = dev_rows("uci", 1500)
    s = dataclasses.replace(ClusterSettings(), time_window_hours=6, late_arrival_hours=0.0)
    engine = ClusterEngine(s)
    ids = iter(range(1, 10**6))
    merges = scored = 0
    for n, r in enumerate(rows):
        f = engine.features(r["title"], r["text"])
        sig = signature(f.tokens)
        merges += bool(engine.add(n, float(r["published"]), f, sig, new_cluster=lambda: next(ids)).merged)
    # Every live cluster with terms has its table, holding its centroid bit for bit.
    tables = engine._tables
    live = [c for c in engine._clusters.values() if c.centroid]
    assert len(tables) == len(live) and merges > 0 and len(engine) < len(rows)
    for c in live:
        for term, w in c.centroid.items():
            assert tables.get(c.order, hash(term)) == w
    # Scoring a fresh item: the compiled dot products agree with the dict ones.
    for r in rows[-50:]:
        f = engine.features(r["title"], r["text"])
        vec = engine._vectorize(f)
        for cap in (engine.share_cap(len(vec)), 1.0):
            dots = engine._dots(vec, live, cap)
            for c in live:
                if c.order in dots:
                    scored += 1
                    assert math.isclose(
                        dots[c.order], _dot_capped(vec, c.centroid, cap), rel_tol=1e-12, abs_tol=0
                    )
    assert scored > 1000


def test_kernels_compile_where_numba_cannot_keep_its_cache() -> None:
    """A service user with no writable code folder and no home: numba's cache had no
    place, and importing the aggregator failed ("no locator available")."""
    from aggregator.centroids import _jit

    ns: dict[str, Any] = {}
    exec(compile("def f(x):\n    return x + 1\n", "/nonexistent/generated.py", "exec"), ns)
    assert _jit(ns["f"])(2) == 3
