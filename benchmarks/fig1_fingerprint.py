"""Figure 1: MinHash signatures per second, ours against plain datasketch, same features.

Both sides get the same token sets (the aggregator's features of corpus items)
and the same ``num_perm``.  datasketch is run two ways: as shipped
(``MinHash(num_perm).update_batch``, its default SHA-1 based hash) and with the
aggregator's token hash (``hashfunc=hash32``), which is the one whose signatures
must be bit-identical to ours; that is checked item by item.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from datasketch import MinHash

from aggregator.fingerprint import hash32, signatures
from aggregator.normalize import normalize_entry
from aggregator.settings import Settings
from benchmarks.common import item_features, log
from benchmarks.corpus import Corpus


def _best_of(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(seed: int, n_items: int, settings: Settings, baseline_items: int = 3_000) -> dict[str, Any]:
    num_perm = settings.cluster.num_perm
    log(f"fig 1: generating {n_items:,} items")
    items = [normalize_entry(i.entry()) for i in Corpus(seed, n_items).items()]
    t0 = time.perf_counter()
    feats = [item_features(settings, i.title, i.text) for i in items]
    features_s = time.perf_counter() - t0
    token_sets = [f.tokens for f in feats]
    tokens_per_item = sum(map(len, token_sets)) / len(token_sets)

    log("fig 1: ours (aggregator.fingerprint.signatures)")
    ours_s = _best_of(lambda: signatures(token_sets, num_perm), 3)
    ours = signatures(token_sets, num_perm)
    per_item_s = _best_of(lambda: [signatures([t], num_perm) for t in token_sets[:baseline_items]], 1)
    per_doc_s = _best_of(
        lambda: [signatures(token_sets[i : i + 80], num_perm) for i in range(0, len(token_sets), 80)], 2
    )

    # datasketch is ~100x slower: a subset of the same items keeps the run short.
    subset = token_sets[:baseline_items]
    encoded = [[t.encode("utf-8", "surrogatepass") for t in ts] for ts in subset]

    def plain() -> list[np.ndarray]:
        out = []
        for toks in encoded:
            m = MinHash(num_perm=num_perm)
            m.update_batch(toks)
            out.append(m.hashvalues)
        return out

    def same_hash() -> list[np.ndarray]:
        out = []
        for toks in encoded:
            m = MinHash(num_perm=num_perm, hashfunc=hash32)
            m.update_batch(toks)
            out.append(m.hashvalues)
        return out

    log(f"fig 1: datasketch update_batch on {len(subset):,} of the items")
    plain_s = _best_of(plain, 1)
    same_s = _best_of(same_hash, 1)
    ref = same_hash()
    identical = sum(1 for n, h in enumerate(ref) if np.array_equal(np.asarray(h, dtype=np.uint32), ours[n]))
    n_sub = len(subset)
    ours_rate = len(token_sets) / ours_s
    return {
        "items": len(token_sets),
        "baseline_items": n_sub,
        "num_perm": num_perm,
        "tokens_per_item": round(tokens_per_item, 1),
        "ours_per_s": ours_rate,
        "ours_per_feed_of_80_per_s": len(token_sets) / per_doc_s,
        "ours_one_at_a_time_per_s": min(n_sub, len(token_sets)) / per_item_s,
        "datasketch_per_s": n_sub / plain_s,
        "datasketch_xxh3_per_s": n_sub / same_s,
        "ratio_vs_datasketch": ours_rate / (n_sub / plain_s),
        "ratio_vs_datasketch_xxh3": ours_rate / (n_sub / same_s),
        "identical": identical,
        "compared": n_sub,
        "features_per_s": len(items) / features_s,
        "goal_ratio": 10.0,
        "ok": identical == n_sub and ours_rate / (n_sub / plain_s) >= 10.0,
    }
