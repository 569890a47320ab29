"""Clustering quality on labeled data: BCubed and pairwise precision, recall, F1.

``run_eval`` feeds each dataset of a JSONL file through the real normalize,
fingerprint, cluster and store stages, on a throw-away database, in
``published`` order (records without a time first, then by time, ties in file
order), and scores the resulting clusters against the gold ``story`` labels.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from aggregator.models import Entry
from aggregator.pipeline import Pipeline
from aggregator.settings import Settings
from aggregator.storage import feeds as feeds_store
from aggregator.storage import items as items_store
from aggregator.storage import open_database, write_transaction

__all__ = ["DatasetResult", "EvalError", "Scores", "bcubed", "pairwise", "read_records", "run_eval", "score"]


class EvalError(ValueError):
    """The evaluation file is malformed."""


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1}


def bcubed(predicted: Mapping[str, Hashable], gold: Mapping[str, Hashable]) -> Scores:
    """BCubed precision and recall (Bagga and Baldwin), averaged over items."""
    keys = list(gold)
    if not keys:
        return Scores(1.0, 1.0)
    pred_size = Counter(predicted[k] for k in keys)
    gold_size = Counter(gold[k] for k in keys)
    both = Counter((predicted[k], gold[k]) for k in keys)
    p = sum(both[(predicted[k], gold[k])] / pred_size[predicted[k]] for k in keys) / len(keys)
    r = sum(both[(predicted[k], gold[k])] / gold_size[gold[k]] for k in keys) / len(keys)
    return Scores(p, r)


def pairwise(predicted: Mapping[str, Hashable], gold: Mapping[str, Hashable]) -> Scores:
    """Precision and recall over item pairs.  With no pairs predicted (or none true), 1.0."""
    keys = list(gold)

    def pairs(counts: Iterable[int]) -> int:
        return sum(n * (n - 1) // 2 for n in counts)

    pred_pairs = pairs(Counter(predicted[k] for k in keys).values())
    gold_pairs = pairs(Counter(gold[k] for k in keys).values())
    true_pairs = pairs(Counter((predicted[k], gold[k]) for k in keys).values())
    return Scores(
        true_pairs / pred_pairs if pred_pairs else 1.0,
        true_pairs / gold_pairs if gold_pairs else 1.0,
    )


def score(predicted: Mapping[str, Hashable], gold: Mapping[str, Hashable]) -> dict[str, Scores]:
    return {"bcubed": bcubed(predicted, gold), "pairwise": pairwise(predicted, gold)}


@dataclass
class DatasetResult:
    dataset: str
    records: int
    stories: int
    clusters: int
    scores: dict[str, Scores]
    seconds: float
    assignments: dict[str, int] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "records": self.records,
            "stories": self.stories,
            "clusters": self.clusters,
            "bcubed": self.scores["bcubed"].as_dict(),
            "pairwise": self.scores["pairwise"].as_dict(),
            "seconds": self.seconds,
            "items_per_second": self.items_per_second,
        }


_REQUIRED = {"dataset": str, "id": str, "title": str, "story": str}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a JSONL file of labeled records."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot read: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{path}:{n}: not JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise EvalError(f"{path}:{n}: expected a JSON object")
        for key, typ in _REQUIRED.items():
            if not isinstance(rec.get(key), typ):
                raise EvalError(f"{path}:{n}: field {key!r} must be a {typ.__name__}")
        pub = rec.get("published")
        if pub is not None and (isinstance(pub, bool) or not isinstance(pub, (int, float))):
            raise EvalError(f"{path}:{n}: field 'published' must be a number or null")
        if rec["id"] in seen:
            raise EvalError(f"{path}:{n}: duplicate id {rec['id']!r}")
        seen.add(rec["id"])
        records.append(rec)
    if not records:
        raise EvalError(f"{path}: no records")
    return records


def _entry(rec: Mapping[str, Any]) -> Entry:
    text = rec.get("text") or ""
    html = "".join(f"<p>{escape(p)}</p>" for p in str(text).split("\n") if p.strip())
    link = rec.get("link")
    return Entry(
        guid=rec["id"],
        link=link if isinstance(link, str) else None,
        title=escape(rec["title"]),
        summary_html="",
        content_html=html,
        published=float(rec["published"]) if rec.get("published") is not None else None,
    )


def evaluate_dataset(
    name: str,
    records: list[dict[str, Any]],
    settings: Settings,
    workdir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetResult:
    """Cluster one dataset's records on a fresh database and score the result."""
    order = sorted(
        range(len(records)),
        key=lambda i: (records[i].get("published") is not None, records[i].get("published") or 0, i),
    )
    db = open_database(workdir / f"{name}.db", fast_unsafe=True)
    try:
        clock_now = time.time()
        pipeline = Pipeline(db, settings, clock=lambda: clock_now)
        feed_ids: dict[str, int] = {}
        with write_transaction(db):
            for rec in records:
                outlet = str(rec.get("outlet") or "unknown")
                if outlet not in feed_ids:
                    feed, _ = feeds_store.add(db, f"eval:{name}/{outlet}", clock_now, outlet)
                    feed_ids[outlet] = feed.id
        started = time.perf_counter()
        for n, i in enumerate(order, 1):
            rec = records[i]
            with write_transaction(db):
                pipeline.ingest(feed_ids[str(rec.get("outlet") or "unknown")], [_entry(rec)], clock_now)
            if progress and (n % 100 == 0 or n == len(order)):
                progress(n, len(order))
        seconds = time.perf_counter() - started
        assignments = {row["guid"]: row["cluster_id"] for row in items_store.export_rows(db) if row["guid"]}
    finally:
        db.close()
    gold = {r["id"]: r["story"] for r in records}
    predicted = {k: assignments[k] for k in gold}
    return DatasetResult(
        dataset=name,
        records=len(records),
        stories=len(set(gold.values())),
        clusters=len(set(predicted.values())),
        scores=score(predicted, gold),
        seconds=seconds,
        assignments=predicted,
    )


def run_eval(
    path: str | Path,
    settings: Settings,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[DatasetResult]:
    """Evaluate every dataset of a labeled JSONL file."""
    records = read_records(path)
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_dataset[rec["dataset"]].append(rec)
    results = []
    with tempfile.TemporaryDirectory(prefix="aggregator-eval-") as tmp:
        for name, recs in by_dataset.items():
            cb = (lambda n, total, name=name: progress(name, n, total)) if progress else None
            results.append(evaluate_dataset(name, recs, settings, Path(tmp), cb))
    return results
