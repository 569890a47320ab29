"""The cluster engine alone, with its window full: the baseline for figures 2 and 3.

``python -m benchmarks.engine --items 40000 --timed 10000`` makes the features and
signatures of ``items`` corpus items first (untimed), passes them through a pickle
round trip (the engine then gets fresh strings, as it does from the worker
processes), clusters them with ``ClusterEngine.add`` in time order, and reports the
time per item over the last ``timed`` items, when the window holds about as many
items as in a long run (10,000 items a day, 72 hours and the late-arrival margin).
It also prints the machine's memory probe (``common.memory_latency``): the engine's
time is mostly reads of objects scattered over its heap, so the two move together
across machines.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import time

from aggregator.cluster import ClusterEngine
from aggregator.fingerprint import signatures
from aggregator.normalize import normalize_entry
from aggregator.settings import Settings
from benchmarks.common import item_features, machine_info
from benchmarks.corpus import Corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=40_000, help="corpus items clustered (default 40,000)")
    ap.add_argument("--timed", type=int, default=10_000, help="the last N of them are timed (default 10,000)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if not 0 < args.timed <= args.items:
        ap.error("--timed must be between 1 and --items")
    settings = Settings()
    corpus = list(itertools.islice(Corpus(args.seed, args.items).items(), args.items))
    times = [c.published for c in corpus]
    feats = []
    for c in corpus:
        item = normalize_entry(c.entry())
        feats.append(item_features(settings, item.title, item.text))
    sigs = signatures([f.tokens for f in feats], settings.cluster.num_perm)
    feats = pickle.loads(pickle.dumps(feats))
    del corpus

    engine = ClusterEngine(settings.cluster)
    ids = itertools.count(1)
    start = args.items - args.timed
    for i in range(start):
        engine.add(i, times[i], feats[i], sigs[i], new_cluster=lambda: next(ids))
    t0 = time.perf_counter()
    for i in range(start, args.items):
        engine.add(i, times[i], feats[i], sigs[i], new_cluster=lambda: next(ids))
    per_item = (time.perf_counter() - t0) / args.timed
    m = machine_info()
    print(
        f"engine alone: {per_item * 1e3:.3f} ms per item ({1 / per_item:,.0f} items/s) over the last "
        f"{args.timed:,} of {args.items:,} items, {len(engine):,} in the window; "
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}; memory probe "
        f"{m['sequential_ns']:.0f} ns in order / {m['random_ns']:.0f} ns random"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
