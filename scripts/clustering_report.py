"""The numbers behind docs/clustering.md: sweeps, split halves, topic orders, short text,
and the benchmark corpus.

    .venv/bin/python scripts/clustering_report.py [--only dev,sweeps,split,orders,stress,synthetic]

Each run clusters a dataset of ``tests/data/eval/dev.jsonl`` with
:class:`aggregator.replay.Replayer`, which calls the same ``decide()`` as the live
pipeline (same-link, exact-copy, then the engine) on items normalised by the same
``normalize_entry``, but keeps everything in memory: about 4x faster than
``aggregator eval`` and, with the same settings, the same clusters (the ``dev``
section prints both so that this can be checked).  ``synthetic`` clusters 20k items
of the benchmark corpus (``benchmarks/corpus.py``, about 4 minutes).  Output is Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.evaluate import Scores, _entry, read_records, run_eval, score  # noqa: E402
from aggregator.normalize import normalize_entry  # noqa: E402
from aggregator.replay import Replayer  # noqa: E402
from aggregator.settings import ClusterSettings, Settings  # noqa: E402
from aggregator.storage.items import IndexRow  # noqa: E402

DEV = ROOT / "tests" / "data" / "eval" / "dev.jsonl"
NOW = 1_750_000_000.0  # the time given to undated records, as ``aggregator eval`` does
GOALS = {"newswcl50": 0.95, "ecbplus": 0.88, "uci": 0.75}

Record = dict[str, Any]


def load(path: Path = DEV) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for rec in read_records(path):
        out[rec["dataset"]].append(rec)
    return dict(out)


def cluster(records: list[Record], cs: ClusterSettings) -> dict[str, Scores]:
    """BCubed and pairwise scores of one dataset clustered under ``cs``."""
    order = sorted(
        range(len(records)),
        key=lambda i: (records[i].get("published") is not None, records[i].get("published") or 0, i),
    )
    outlets: dict[str, int] = {}
    rows = []
    for n, i in enumerate(order, 1):
        rec = records[i]
        item = normalize_entry(_entry(rec))
        feed = outlets.setdefault(str(rec.get("outlet") or "unknown"), len(outlets) + 1)
        t = item.published if item.published is not None else NOW
        rows.append(
            (
                rec,
                IndexRow(
                    n,
                    None,
                    item.title,
                    item.text,
                    t,
                    None,
                    None,
                    feed,
                    item.canonical_link,
                    item.content_hash,
                ),
            )
        )
    rep = Replayer(replace(Settings(), cluster=cs))
    rep.feed([r for _, r in rows])
    part = rep.partition()
    predicted = {rec["id"]: part[row.item_id] for rec, row in rows}
    gold = {rec["id"]: rec["story"] for rec, _ in rows}
    return score(predicted, gold)


def prf(s: Scores) -> str:
    return f"{s.precision:.3f}/{s.recall:.3f}/{s.f1:.3f}"


def run_all(data: dict[str, list[Record]], cs: ClusterSettings) -> dict[str, dict[str, Scores]]:
    return {name: cluster(recs, cs) for name, recs in data.items()}


# -- sections ------------------------------------------------------------------------------


def dev(data: dict[str, list[Record]]) -> None:
    print("## Dev set, default settings\n")
    started = time.perf_counter()
    results = run_eval(DEV, Settings())
    print(f"`aggregator eval` path (database, pipeline): {time.perf_counter() - started:.1f} s\n")
    print(
        "| dataset | items | stories | clusters | B3 P | B3 R | B3 F1 | pair P | pair R | pair F1 | items/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        b, p = r.scores["bcubed"], r.scores["pairwise"]
        print(
            f"| {r.dataset} | {r.records} | {r.stories} | {r.clusters} | {b.precision:.3f} | {b.recall:.3f} "
            f"| {b.f1:.3f} | {p.precision:.3f} | {p.recall:.3f} | {p.f1:.3f} | {r.items_per_second:.0f} |"
        )
    fast = run_all(data, ClusterSettings())
    print("\nIn-memory replay (this script's path), BCubed P/R/F1: ", end="")
    print(", ".join(f"{n} {prf(s['bcubed'])}" for n, s in fast.items()))
    print()


SWEEPS: list[tuple[str, list[Any]]] = [
    ("join_threshold_short", [0.06, 0.08, 0.10, 0.12, 0.15]),
    ("join_threshold_long", [0.30, 0.35, 0.40, 0.45, 0.50]),
    ("idf_power", [1.0, 1.5, 2.0, 2.5]),
    ("merge_ratio", [0.6, 0.7, 0.75, 0.8, 0.9, 10.0]),
    ("adopt_max_size", [0, 1, 2, 3, 5]),
    ("name_mismatch_factor", [0.0, 0.5, 1.0]),
    ("recency_half_life_hours", [3.0, 6.0, 12.0, 24.0, 10000.0]),
    ("recency_half_life_long_hours", [12.0, 48.0, 168.0]),
    ("lsh_bands", [8, 16, 32]),
    ("lsh_rows", [1, 2]),
    ("entity_boost", [1.0, 2.0, 3.0, 4.0]),
    ("max_term_weight", [0.5, 0.6, 0.8, 1.0]),
    ("max_term_share", [0.45, 0.5, 0.6, 0.7, 1.0]),
    ("cold_start_items", [0, 20, 50]),
]


def sweeps(data: dict[str, list[Record]], names: Iterable[str] | None = None) -> None:
    print("## One-parameter sweeps (BCubed P/R/F1; every other setting at its default)\n")
    default = ClusterSettings()
    for key, values in SWEEPS:
        if names and key not in names:
            continue
        print(f"### `{key}` (default {getattr(default, key)!r})\n")
        print("| value | " + " | ".join(data) + " |")
        print("|---|" + "---|" * len(data))
        for v in values:
            cs = replace(default, **{key: v})
            if key == "lsh_rows" and v * cs.lsh_bands > cs.num_perm:
                continue
            res = run_all(data, cs)
            mark = "**" if v == getattr(default, key) else ""
            cells = " | ".join(f"{mark}{prf(res[n]['bcubed'])}{mark}" for n in data)
            print(f"| {mark}{v}{mark} | {cells} |")
        print()


def story_groups(name: str, rec: Record) -> str:
    """The unit a split keeps whole: an ECB+ topic (both look-alike events), else a story."""
    if name == "ecbplus":
        return "-".join(rec["story"].split("-")[:2])
    return str(rec["story"])


def split(records: list[Record], name: str, seed: int) -> tuple[list[Record], list[Record]]:
    groups = sorted({story_groups(name, r) for r in records})
    random.Random(seed).shuffle(groups)
    half = set(groups[: len(groups) // 2])
    return [r for r in records if story_groups(name, r) in half], [
        r for r in records if story_groups(name, r) not in half
    ]


GRID: dict[str, list[float]] = {
    "join_threshold_short": [0.08, 0.10, 0.12],
    "join_threshold_long": [0.35, 0.40, 0.45],
    "idf_power": [1.5, 2.0, 2.5],
}


def objective(res: dict[str, Scores]) -> float:
    """Mean BCubed F1, minus 5x any precision shortfall below 0.9 (a false merge costs more)."""
    return statistics.mean(
        s["bcubed"].f1 - 5 * max(0.0, 0.9 - s["bcubed"].precision)
        for s in res.values()  # type: ignore[index]
    )


def split_half(data: dict[str, list[Record]], seeds: Iterable[int] = (1, 2)) -> None:
    print("## Split halves: settings tuned on one half, scored on the other\n")
    print(
        "Story groups (ECB+: whole topics, so both look-alike events stay together) are split at"
        " random; a grid over " + ", ".join(f"`{k}` {v}" for k, v in GRID.items()) + " is tuned on one"
        " half (mean BCubed F1 minus 5x any precision shortfall below 0.9) and scored on the other,"
        " next to the defaults.\n"
    )
    print(
        "| seed | tested half | tuned on the other half | "
        + " | ".join(f"{n} tuned | {n} default" for n in data)
        + " |"
    )
    print("|---|---|---|" + "---|---|" * len(data))
    keys = list(GRID)
    points = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(GRID[k] for k in keys))]
    default = ClusterSettings()
    for seed in seeds:
        halves = {name: split(recs, name, seed) for name, recs in data.items()}
        for test in (0, 1):
            train = 1 - test
            best, best_obj = None, -1e9
            for p in points:
                cs = replace(default, **p)
                res = {n: {"bcubed": cluster(h[train], cs)["bcubed"]} for n, h in halves.items()}
                o = objective(res)  # type: ignore[arg-type]
                if o > best_obj:
                    best, best_obj = p, o
            assert best is not None
            tuned = replace(default, **best)
            cells = []
            for h in halves.values():
                cells.append(prf(cluster(h[test], tuned)["bcubed"]))
                cells.append(prf(cluster(h[test], default)["bcubed"]))
            desc = ", ".join(f"{k}={v}" for k, v in best.items())
            print(f"| {seed} | {test} | {desc} | " + " | ".join(cells) + " |")
    print()


def topic_orders(data: dict[str, list[Record]], seeds: Iterable[int] = range(8)) -> None:
    print("## ECB+ in random topic orders\n")
    print(
        "ECB+ records have no time, so they are fed in file order; these runs shuffle the order"
        " of the topics (each topic's records keep their order) to see how much the numbers owe"
        " to the one order of the file.\n"
    )
    recs = data["ecbplus"]
    topics: dict[str, list[Record]] = defaultdict(list)
    for r in recs:
        topics[story_groups("ecbplus", r)].append(r)
    print("| order seed | B3 P | B3 R | B3 F1 |")
    print("|---|---|---|---|")
    rows = []
    for seed in seeds:
        keys = sorted(topics)
        random.Random(seed).shuffle(keys)
        shuffled = [r for k in keys for r in topics[k]]
        b = cluster(shuffled, ClusterSettings())["bcubed"]
        rows.append((b.precision, b.recall, b.f1))
        print(f"| {seed} | {b.precision:.3f} | {b.recall:.3f} | {b.f1:.3f} |")
    mean = [statistics.mean(r[i] for r in rows) for i in range(3)]
    low = [min(r[i] for r in rows) for i in range(3)]
    print(f"| mean | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |")
    print(f"| min | {low[0]:.3f} | {low[1]:.3f} | {low[2]:.3f} |\n")


def stress(data: dict[str, list[Record]], words: Iterable[int] = (0, 15, 30, 60)) -> None:
    print("## Short text: bodies cut to N words (feeds often give a title and a summary)\n")
    print("| body words | newswcl50 | ecbplus |")
    print("|---|---|---|")
    for n in words:
        cells = []
        for name in ("newswcl50", "ecbplus"):
            cut = [dict(r, text=" ".join(str(r.get("text") or "").split()[:n])) for r in data[name]]
            cells.append(prf(cluster(cut, ClusterSettings())["bcubed"]))
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()


def synthetic(data: dict[str, list[Record]], size: int = 20_000) -> None:
    """The benchmark corpus (``benchmarks.corpus``), whose labels are its stories: it
    has many unrelated stories naming the same popular people (known weakness 7)."""
    from benchmarks.corpus import Corpus

    print(f"## Benchmark corpus ({size:,} items, seed 7), BCubed P/R/F1\n")
    items = sorted(itertools.islice(Corpus(seed=7, size=size).items(), size), key=lambda it: it.published)
    rows, gold = [], {}
    for n, it in enumerate(items, 1):
        x = normalize_entry(it.entry())
        t = x.published if x.published is not None else NOW
        rows.append(
            IndexRow(n, None, x.title, x.text, t, None, None, it.outlet, x.canonical_link, x.content_hash)
        )
        gold[str(n)] = it.story
    print("| settings | BCubed P/R/F1 |\n|---|---|")
    default = ClusterSettings()
    variants = [("defaults", default), ("max_term_share 1 (off)", replace(default, max_term_share=1.0))]
    variants.append(("no adoption, no share cap", replace(default, max_term_share=1.0, adopt_max_size=0)))
    for label, cs in variants:
        rep = Replayer(replace(Settings(), cluster=cs))
        rep.feed(rows)
        b = score({str(k): v for k, v in rep.partition().items()}, gold)["bcubed"]
        print(f"| {label} | {prf(b)} |")
    print()


SECTIONS: dict[str, Callable[[dict[str, list[Record]]], None]] = {
    "dev": dev,
    "sweeps": sweeps,
    "split": split_half,
    "orders": topic_orders,
    "stress": stress,
    "synthetic": synthetic,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS)
    )
    args = ap.parse_args()
    data = load()
    for name in args.only.split(","):
        started = time.perf_counter()
        SECTIONS[name](data)
        print(f"<!-- {name}: {time.perf_counter() - started:.0f} s -->\n", flush=True)


if __name__ == "__main__":
    main()
