from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.centroids import CentroidTables, TermCounts, stable_argsort, term_hashes, weigh
from aggregator.cluster import ClusterEngine, _dot_capped, _other_protagonist, _shared_terms
from aggregator.fingerprint import signature
from aggregator.settings import ClusterSettings
from tests.conftest import DATA, dev_rows


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
# Handles far apart move the dense per-handle arrays (down as well as up).
HANDLES = [0, 1, 2, 3, 5000, 5001, 12345]
HANDLE = st.sampled_from(HANDLES)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), HANDLE, VECTOR),
        st.tuples(st.just("merge"), HANDLE, HANDLE),
        st.tuples(st.just("drop"), HANDLE, st.just(None)),
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
    assert sorted(ref) == [h for h in HANDLES if h in tables] and len(tables) == len(ref)
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
    # Every live cluster with terms has its table, holding its centroid bit for bit,
    # and its profile as the scores read it.
    tables = engine._tables
    live = [c for c in engine._clusters.values() if c.centroid]
    assert len(tables) == len(live) and merges > 0 and len(engine) < len(rows)
    for c in live:
        for term, w in c.centroid.items():
            assert tables.get(c.order, hash(term)) == w
        i = c.order - tables._base
        assert tables._spans[i].tolist() == [c.norm2, c.first, c.last]
        assert tables._tops[i] == (hash(c.top_name) if c.top_name is not None else 0)
    # Scoring a fresh item: the compiled dot products agree with the dict ones.
    for r in rows[-50:]:
        f = engine.features(r["title"], r["text"])
        vec, _ = engine._vectorize(f)
        hs, ws = engine._arrays(vec)
        for cap in (engine.share_cap(len(vec)), 1.0):
            orders = [c for c in live if len(vec) <= len(c.centroid)]
            dots = tables.dots(hs, ws, [c.order for c in orders], cap).tolist()
            for c, dot in zip(orders, dots, strict=True):
                scored += 1
                assert math.isclose(dot, _dot_capped(vec, c.centroid, cap), rel_tol=1e-12, abs_tol=0)
    assert scored > 1000


def test_kernels_compile_where_numba_cannot_keep_its_cache() -> None:
    """A service user with no writable code folder and no home: numba's cache had no
    place, and importing the aggregator failed ("no locator available")."""
    from aggregator.centroids import jit

    ns: dict[str, Any] = {}
    exec(compile("def f(x):\n    return x + 1\n", "/nonexistent/generated.py", "exec"), ns)
    assert jit(ns["f"])(2) == 3


def reference_vector(
    weights: list[float], counts: list[int], log_n: float, power: float, top: int, cap: float
) -> list[tuple[int, float]]:
    """The engine's vector as it was written in Python before it was compiled: (term
    index, weight) in the vector's order."""
    vec = {
        i: w * (log_n - math.log(n + 1) + 1.0) ** power
        for i, (w, n) in enumerate(zip(weights, counts, strict=True))
    }
    norm2 = 0.0
    for x in vec.values():
        norm2 += x * x
    if norm2 <= 0.0:
        return []
    if len(vec) > top:
        vec = dict(sorted(vec.items(), key=lambda kv: kv[1], reverse=True)[:top])
        norm2 = 0.0
        for x in vec.values():
            norm2 += x * x
    if cap < 1.0 and max(vec.values()) ** 2 > cap * cap * norm2:
        ranked = sorted(vec.items(), key=lambda kv: -kv[1])
        rest = norm2
        for k in range(1, len(ranked) + 1):
            rest -= ranked[k - 1][1] ** 2
            if k * cap * cap >= 1.0 or k == len(ranked):
                break
            b = cap * math.sqrt(max(rest, 0.0) / (1.0 - k * cap * cap))
            if ranked[k][1] <= b:
                for term, _ in ranked[:k]:
                    vec[term] = b
                norm2 = rest + k * b * b
                break
        if norm2 <= 0.0:  # (the Python code failed here: it divided by 0)
            return []
    inv = 1.0 / math.sqrt(norm2)
    return [(i, x * inv) for i, x in vec.items()]


@settings(max_examples=300, deadline=None)
@given(
    terms=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0]) | st.floats(0.0, 5.0),  # ties happen
            st.integers(1, 5000),
        ),
        max_size=150,
    ),
    n_docs=st.integers(1, 100_000),
    power=st.sampled_from([1.0, 1.5, 2.0, 0.7]),
    top=st.sampled_from([3, 64, 1000]),
    cap=st.sampled_from([0.3, 0.6, 1.0]),
)
def test_compiled_vectors_are_the_python_formula_to_the_bit(
    terms: list[tuple[float, int]], n_docs: int, power: float, top: int, cap: float
) -> None:
    weights = [w for w, _ in terms]
    counts = [min(n, n_docs) for _, n in terms]
    log_n = math.log(n_docs + 1)
    idx, xs = weigh(np.array(counts, np.int64), np.array(weights, np.float64), log_n, power, top, cap, 2.0)
    assert list(zip(idx.tolist(), xs.tolist(), strict=True)) == reference_vector(
        weights, counts, log_n, power, top, cap
    )


COUNT_OPS = st.lists(
    st.tuples(st.lists(st.integers(-3, 3000).filter(bool), max_size=80), st.sampled_from([1, 1, -1])),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(ops=COUNT_OPS)
def test_term_counts_count_as_a_dict_would_through_rebuilds(ops: list[tuple[list[int], int]]) -> None:
    counts = TermCounts()
    ref: Counter[int] = Counter()
    for keys, delta in ops:
        keys = list(dict.fromkeys(keys))  # an item's terms are distinct
        if delta < 0:  # only what was counted is taken away (an item leaving)
            keys = [k for k in keys if ref[k] > 0]
        got = counts.add(np.array(keys, np.int64), delta)
        for k in keys:
            ref[k] += delta
        assert got.tolist() == [ref[k] for k in keys]
        assert counts.as_dict() == {k: n for k, n in ref.items() if n > 0}
    assert len(counts._keys) <= max(1024, 8 * (len(+ref) + 80))  # zeros are dropped at rebuilds


def test_term_counts_drop_keys_counted_down_to_zero_when_rebuilt() -> None:
    counts = TermCounts()
    for start in range(0, 100_000, 1000):  # a window sliding over a vocabulary never seen again
        keys = np.arange(start + 1, start + 1001, dtype=np.int64)
        counts.add(keys, 1)
        counts.add(keys, -1)
    assert counts.as_dict() == {} and len(counts._keys) <= 4096


def test_compiled_scores_are_the_python_formula_to_the_bit() -> None:
    """``CentroidTables.scores`` against the engine's score written in Python (as it was
    before it was compiled): the capped dot product, the recency decay and the
    name-mismatch rule, for every live cluster, cold and warm."""
    rows = dev_rows("uci", 600)  # headlines, and articles with names (given times)
    articles = [
        r
        for r in map(json.loads, (DATA / "eval" / "dev.jsonl").read_text().splitlines())
        if r["dataset"] == "ecbplus"
    ]
    start = float(rows[0]["published"])
    rows += [{**r, "published": start + 40.0 * i} for i, r in enumerate(articles[:600])]
    rows.sort(key=lambda r: float(r["published"]))
    s = dataclasses.replace(ClusterSettings(), time_window_hours=12, late_arrival_hours=0.0)
    engine = ClusterEngine(s)
    ids = iter(range(1, 10**6))
    checked = mismatched = joined = 0
    for n, r in enumerate(rows):
        f = engine.features(r["title"], r["text"])
        t = float(r["published"])
        if n % 20 == 19:
            vec, keys = engine._vectorize(f)  # (its counts taken back below: the engine is left as it was)
            engine._df.add(keys, -1)
            engine._n_docs -= 1
            live = sorted((c for c in engine._clusters.values() if c.norm2 > 0), key=lambda c: c.order)
            cap, threshold = engine.share_cap(len(vec)), engine.join_threshold(len(vec))
            half_life = engine.half_life(len(vec))
            name = engine._main_name(vec, f)
            cold = n < 40
            pre = np.array(
                [_dot_capped(vec, c.centroid, cap) if len(vec) > len(c.centroid) else math.nan for c in live]
            )
            rule = (cap, half_life, s.recency_grace_hours, s.name_mismatch_factor, 0.1, 0.05, threshold)
            hs, ws = engine._arrays(vec)
            key = hash(name) if name is not None else 0
            scores, passed, best = engine._tables.scores(
                hs, ws, [c.order for c in live], pre, t, rule, key, cold
            )
            want_best = 0.0
            for c, got, ok in zip(live, scores.tolist(), passed.tolist(), strict=True):
                norm = math.sqrt(c.norm2)
                score = (
                    _dot_capped(vec, c.centroid, cap) * engine._decay(c.first, c.last, t, t, half_life) / norm
                )
                if name is not None and _other_protagonist(name, vec, 1.0, c, norm):
                    score *= s.name_mismatch_factor
                    mismatched += 1
                want_ok = score >= threshold and not (cold and _shared_terms(vec, c.centroid, 2) < 2)
                assert got == pytest.approx(score, rel=1e-12, abs=0) and ok == want_ok
                if len(vec) <= len(c.centroid):
                    assert got == score  # the same additions in the same order
                if not want_ok:
                    want_best = max(want_best, got)
                checked += 1
                joined += ok
            assert best == want_best
        engine.add(n, t, f, signature(f.tokens), new_cluster=lambda: next(ids))
    assert checked > 2000 and mismatched > 0 and joined > 10


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.integers(-5, 5), max_size=300)
    | st.lists(st.sampled_from([-1.5, 0.0, 2.0, 0.25]), max_size=300)
)
def test_stable_argsort_is_numpys_stable_argsort(keys: list[float]) -> None:
    arr = np.array(keys, np.float64 if any(isinstance(k, float) for k in keys) else np.int64)
    assert stable_argsort(arr).tolist() == np.argsort(arr, kind="stable").tolist()
