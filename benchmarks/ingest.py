"""Figures 2 and 4: the pipeline without fetch and parse, from 10 thousand to 1 million items.

Runs as its own process (``python -m benchmarks.ingest ...``) so that its peak
resident memory is its own.  A producer process generates the corpus (on the
other core); this one feeds each feed document's entries to
``Pipeline.ingest`` in one write transaction, as a poll of that feed would,
timing each stage with :class:`benchmarks.common.StageTimer`.

When the time budget runs out before ``--items`` items, the rest of the corpus
is *loaded* instead (``--fill``): stored with the storage functions, grouped by
the generator's own story labels, so that the database the site is measured on
(figure 5) holds every item.  Loaded rows are counted apart and never enter a
throughput figure.  They get real signatures inside the final time window (what
an index rebuild reads) and zero-filled ones before it, which keeps the database
size true.

``python -m benchmarks.ingest rebuild --dir D`` opens that database in a fresh
process and times ``Aggregator.rebuild_index`` (the start-up rebuild), with the
memory it takes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aggregator import Aggregator
from aggregator.cluster import ClusterEngine
from aggregator.fingerprint import signatures
from aggregator.models import Item
from aggregator.normalize import canonical_link, content_hash, item_identity, summarize
from aggregator.storage import clusters as clusters_store
from aggregator.storage import items as items_store
from aggregator.storage import write_transaction
from benchmarks.common import (
    item_features,
    peak_rss_bytes,
    pipeline_stage_timer,
    reset_peak_rss,
    rss_bytes,
    scratch_settings,
    write_json,
)
from benchmarks.corpus import DAY, EPOCH, Corpus, CorpusItem

_Doc = tuple[int, float, list[CorpusItem]]


def _produce(q: Any, seed: int, items: int, items_per_day: int) -> None:
    # Plain tuples: pickling dataclass instances would make this side the bottleneck.
    for doc in Corpus(seed, items, items_per_day=items_per_day).docs():
        q.put((doc.outlet.id, doc.slice_start, [astuple(i) for i in doc.items]))
    q.put(None)


def astuple(c: CorpusItem) -> tuple[Any, ...]:
    return (c.guid, c.link, c.title, c.paragraphs, c.published, c.outlet, c.story, c.kind)


def _item(c: CorpusItem) -> Item:
    """What ``normalize_entry`` makes of the item (its text is plain already)."""
    text = " ".join(c.paragraphs)
    link = canonical_link(c.link)
    return Item(
        identity=item_identity(c.guid, link, c.title, c.published),
        guid=c.guid,
        link=c.link,
        canonical_link=link,
        title=c.title,
        summary=summarize(text),
        text=text,
        content_html=c.html(),
        author=None,
        published=c.published,
        updated=c.published,
        categories=(),
        content_hash=content_hash(c.title, text),
    )


class _Filler:
    """Stores items with their generator's story as the cluster (the databases of figures 4 and 5).

    Items published in one of the ``signed`` time ranges (what a start-up rebuild
    at the end or at a checkpoint reads) get real signatures and the frozen vectors
    the pipeline would have stored for them, made by a :class:`ClusterEngine` fed
    the same items in the same order (:meth:`ClusterEngine.restore`): the start-up
    rebuild then reads what it would read after a real run.
    """

    def __init__(self, agg: Aggregator, feed_ids: dict[int, int], signed: list[tuple[float, float]]) -> None:
        self.agg = agg
        self.feed_ids = feed_ids
        self.signed = signed
        self.cluster_of: dict[int, tuple[int, int]] = {}  # story -> (cluster, first item)
        self.num_perm = agg.settings.cluster.num_perm
        self.zero = np.zeros(self.num_perm, dtype=np.uint32)
        self.engine = ClusterEngine(agg.settings.cluster)
        self.items = 0

    def load(self, docs: list[_Doc], slice_seconds: float) -> None:
        db = self.agg.db
        with write_transaction(db):
            for outlet, slice_start, citems in docs:
                now = slice_start + slice_seconds
                touched: set[int] = set()
                sigs: list[tuple[int, np.ndarray]] = []
                fresh: list[tuple[int, Item, float, int]] = []
                for ci in citems:
                    item = _item(ci)
                    sort_time = min(ci.published, now)
                    item_id = items_store.insert(db, self.feed_ids[outlet], item, now, sort_time)
                    known = self.cluster_of.get(ci.story)
                    if known is None:
                        cid = clusters_store.create(db, now)
                        self.cluster_of[ci.story] = (cid, item_id)
                        score, signal, matched = 0.0, "new", None
                    else:
                        cid, first = known
                        score, signal, matched = (
                            (1.0, "exact-copy", first) if ci.kind == "copy" else (0.5, "similar", first)
                        )
                    clusters_store.add_member(db, item_id, cid, score, signal, matched, now)
                    touched.add(cid)
                    if any(lo <= ci.published < hi for lo, hi in self.signed):
                        fresh.append((item_id, item, sort_time, cid))
                    else:
                        sigs.append((item_id, self.zero))
                if fresh:
                    engine = self.engine
                    feats = [item_features(self.agg.settings, i.title, i.text) for _, i, _, _ in fresh]
                    new = signatures([f.tokens for f in feats], self.num_perm)
                    frozen: list[tuple[int, str]] = []
                    for n, (item_id, _, sort_time, cid) in enumerate(fresh):
                        sigs.append((item_id, new[n]))
                        vec = engine.restore(item_id, sort_time, feats[n], new[n], cid)
                        if vec is not None:
                            frozen.append((item_id, json.dumps(engine.freeze(feats[n], vec))))
                items_store.save_signatures(db, sigs)
                if fresh:
                    items_store.save_frozen(db, frozen)  # updates the signature rows
                self.agg.pipeline.refresh_clusters(touched, now)
                self.items += len(citems)
        if len(self.cluster_of) > 400_000:  # stories older than a few days never come back
            for story in list(self.cluster_of)[: len(self.cluster_of) // 2]:
                del self.cluster_of[story]


class _Run:
    """One ingest run: the pipeline from an empty database until the time budget is
    spent (figure 2), then, with ``--fill``, the rest loaded (:class:`_Filler`),
    except for a *tail* of ``--tail`` items before each checkpoint (figure 4): there
    the index is rebuilt from the database, as at a restart, and the pipeline
    ingests the tail, so its throughput is measured with that many items stored."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        folder = Path(args.dir)
        self.settings = settings = scratch_settings(folder)
        for suffix in ("", "-wal", "-shm"):
            Path(str(settings.db_path) + suffix).unlink(missing_ok=True)
        corpus = Corpus(args.seed, args.items, items_per_day=args.items_per_day)
        self.slice_seconds = corpus.slice_seconds
        # What a start-up rebuild reads: twice the index horizon before the newest item,
        # at the end and at each checkpoint (a day to spare on both sides).
        horizon = (settings.cluster.time_window_hours + settings.cluster.late_arrival_hours) * 3600.0
        self.signed = [
            (
                EPOCH + n / args.items_per_day * DAY - 2 * horizon - DAY,
                EPOCH + n / args.items_per_day * DAY + DAY,
            )
            for n in [*args.checkpoints, args.items]
        ]
        self.agg = agg = Aggregator(settings)
        self.feed_ids = {
            o.id: agg.add_feed(f"http://{o.host}/feed.xml", o.name)[0].id for o in corpus.outlets
        }
        self.pipeline = agg.pipeline
        self.db = agg.db
        self.timer = pipeline_stage_timer()
        self.checkpoints = (
            sorted({c for c in args.checkpoints if args.tail <= c <= args.items}) if args.fill else []
        )
        self.tails: list[dict[str, Any]] = []
        self.stored = 0  # items stored so far, however

    def ingest_doc(self, doc: _Doc) -> float:
        """One feed document through the pipeline in one write transaction; returns its seconds."""
        outlet, slice_start, citems = doc
        entries = [c.entry() for c in citems]
        now = slice_start + self.slice_seconds
        timer = self.timer
        t0 = time.perf_counter()
        with write_transaction(self.db):
            t1 = time.perf_counter()
            self.pipeline.ingest(self.feed_ids[outlet], entries, now)
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        timer.seconds["commit"] = timer.seconds.get("commit", 0.0) + (t1 - t0) + (t3 - t2)
        self.stored += len(entries)
        return t3 - t0

    def tail(self, docs: Iterator[_Doc], first: _Doc, checkpoint: int, triggers: list[str]) -> None:
        """Restart at ``stored`` items, then the pipeline until ``checkpoint`` items are stored."""
        t0 = time.perf_counter()
        _resume_fts_triggers(self.db, triggers)
        fts_s = time.perf_counter() - t0
        stored_before = self.stored
        t0 = time.perf_counter()
        indexed = self.pipeline.rebuild_index()
        rebuild_s = time.perf_counter() - t0
        self.timer.resume()
        before = dict(self.timer.seconds)
        n, spent = 0, 0.0
        doc: _Doc | None = first
        while doc is not None:
            spent += self.ingest_doc(doc)
            n += len(doc[2])
            doc = next(docs, None) if self.stored < checkpoint else None
        self.timer.pause()
        stages = {k: v - before.get(k, 0.0) for k, v in self.timer.seconds.items()}
        self.tails.append(
            {
                "checkpoint": checkpoint,
                "stored_before": stored_before,
                "items": n,
                "seconds": spent,
                "items_per_s": n / spent if spent else None,
                "stages_s": {k: v for k, v in stages.items() if v > 0},
                "rebuild_seconds": rebuild_s,
                "indexed_items": indexed,
                "fts_rebuild_seconds": fts_s,
                "peak_rss": peak_rss_bytes(),
            }
        )
        log_line = f"  tail at {checkpoint:,}: {n:,} items in {spent:.1f} s after a {rebuild_s:.1f} s rebuild"
        print(log_line, file=sys.stderr, flush=True)


def run_ingest(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    q: Any = ctx.Queue(maxsize=32)
    producer = ctx.Process(target=_produce, args=(q, args.seed, args.items, args.items_per_day), daemon=True)
    producer.start()

    def docs() -> Iterator[_Doc]:
        for outlet, slice_start, rows in iter(q.get, None):
            yield outlet, slice_start, [CorpusItem(*r) for r in rows]

    run = _Run(args)
    agg, pipeline, db, timer = run.agg, run.pipeline, run.db, run.timer
    settings = run.settings
    reset_peak_rss()
    rss0 = rss_bytes()
    marks: list[tuple[int, float]] = [(0, 0.0)]  # (items ingested, ingest seconds) after each document
    stage_snapshot: dict[str, float] | None = None
    stage_functions: list[tuple[str, float]] = []
    n = 0
    spent = 0.0
    filler: _Filler | None = None
    triggers: list[str] = []
    pending: list[_Doc] = []
    wall0 = time.perf_counter()
    stream = docs()
    with timer:
        for doc in stream:
            if filler is None:
                spent += run.ingest_doc(doc)
                n += len(doc[2])
                marks.append((n, spent))
                if args.progress and len(marks) % 200 == 0:  # a long run leaves its figures as it goes
                    write_json(
                        Path(args.progress),
                        {
                            "items": n,
                            "ingest_seconds": spent,
                            "wall_seconds": time.perf_counter() - wall0,
                            "peak_rss": peak_rss_bytes(),
                            "marks": _thin(marks, 400),
                        },
                    )
                if stage_snapshot is None and n >= args.stage_items:
                    stage_snapshot = dict(timer.seconds)
                    stage_functions = timer.top_functions(14)
                if spent > args.budget and n < args.items:
                    if not args.fill:
                        break
                    pipeline_peak = peak_rss_bytes()
                    pipeline_rss = rss_bytes()
                    indexed = len(pipeline.engine())
                    if stage_snapshot is None:
                        stage_snapshot = dict(timer.seconds)
                        stage_functions = timer.top_functions(14)
                    fill0 = time.perf_counter()
                    timer.pause()
                    filler = _Filler(agg, run.feed_ids, run.signed)
                    triggers = _suspend_fts_triggers(db)
                    run.checkpoints = [c for c in run.checkpoints if c > n + args.tail]
                continue
            size = len(doc[2])
            queued = sum(len(d[2]) for d in pending)
            if run.checkpoints and run.stored + queued + size > run.checkpoints[0] - args.tail:
                if pending:
                    filler.load(pending, run.slice_seconds)
                    run.stored += queued
                    pending = []
                run.tail(stream, doc, run.checkpoints.pop(0), triggers)
                filler.cluster_of.clear()  # the pipeline may have merged those clusters away
                triggers = _suspend_fts_triggers(db) if run.stored < args.items else []
                continue
            pending.append(doc)
            if len(pending) >= 20:
                filler.load(pending, run.slice_seconds)
                run.stored += queued + size
                pending = []
        if filler is not None:
            if pending:
                filler.load(pending, run.slice_seconds)
                run.stored += sum(len(d[2]) for d in pending)
            fts0 = time.perf_counter()
            if triggers:
                _resume_fts_triggers(db, triggers)
            fts_rebuild_s = time.perf_counter() - fts0
    if filler is None:
        pipeline_peak = peak_rss_bytes()
        pipeline_rss = rss_bytes()
        indexed = len(pipeline.engine())
        fill_s = fts_rebuild_s = 0.0
    else:
        fill_s = time.perf_counter() - fill0
    if stage_snapshot is None:
        stage_snapshot = dict(timer.seconds)
        stage_functions = timer.top_functions(14)
    producer.terminate()
    producer.join()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = agg.counts()
    agg.close()
    db_bytes = sum(
        Path(str(settings.db_path) + s).stat().st_size
        for s in ("", "-wal", "-shm")
        if Path(str(settings.db_path) + s).exists()
    )
    stage_n = min(n, args.stage_items)
    stage_s = next((t for k, t in marks if k >= stage_n), spent)
    return {
        "items_requested": args.items,
        "items_ingested": n,
        "items_filled": filler.items if filler else 0,
        "ingest_seconds": spent,
        "fill_seconds": fill_s,
        "fill_fts_rebuild_seconds": fts_rebuild_s,
        "wall_seconds": time.perf_counter() - wall0,
        "marks": _thin(marks, 200),
        "stage_items": stage_n,
        "stage_seconds": stage_s,
        "stages_s": stage_snapshot,
        "top_functions_s": stage_functions,
        "peak_rss": pipeline_peak,
        "rss_after_pipeline": pipeline_rss,
        "rss_before": rss0,
        "indexed_items": indexed,
        "tails": run.tails,
        "tail_items": args.tail,
        "db_bytes": db_bytes,
        "counts": counts,
        "complete": n >= args.items,
    }


def _suspend_fts_triggers(db: Any) -> list[str]:
    """Drop the triggers that keep search in step with items, for a bulk load; returns their SQL."""
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'items' "
        "AND sql LIKE '%INSERT%' AND sql LIKE '%_fts%'"
    ).fetchall()
    for name, _ in rows:
        db.execute(f'DROP TRIGGER "{name}"')
    db.execute("PRAGMA cache_size = -262144")
    return [sql for _, sql in rows]


def _resume_fts_triggers(db: Any, triggers: list[str]) -> None:
    """Put the triggers back and index every item for search at once."""
    from aggregator.storage import search

    with write_transaction(db):
        for sql in triggers:
            db.execute(sql)
        search.rebuild(db)


def _thin(marks: list[tuple[int, float]], keep: int) -> list[tuple[int, float]]:
    if len(marks) <= keep:
        return marks
    step = len(marks) / keep
    out = [marks[int(i * step)] for i in range(keep)]
    return [*out, marks[-1]]


def run_rebuild(args: argparse.Namespace) -> dict[str, Any]:
    settings = scratch_settings(Path(args.dir))
    reset_peak_rss()
    agg = Aggregator(settings)
    agg.counts()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    indexed = agg.rebuild_index()
    seconds = time.perf_counter() - t0
    rss1 = rss_bytes()
    agg.close()
    return {
        "rebuild_seconds": seconds,
        "indexed_items": indexed,
        "rss_before": rss0,
        "rss_after": rss1,
        "peak_rss": peak_rss_bytes(),
        "bytes_per_indexed_item": (rss1 - rss0) / indexed if indexed else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("command", choices=("ingest", "rebuild"))
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--stage-items", type=int, default=100_000)
    ap.add_argument("--items-per-day", type=int, default=10_000)
    ap.add_argument("--budget", type=float, default=240.0)
    ap.add_argument("--fill", action="store_true", help="load the rest once the budget is spent")
    ap.add_argument(
        "--checkpoints",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="with --fill: item counts before which a tail is ingested by the pipeline after a rebuild",
    )
    ap.add_argument("--tail", type=int, default=10_000, help="items in each checkpoint's tail")
    ap.add_argument("--progress", help="a JSON file rewritten every 200 documents with the figures so far")
    args = ap.parse_args(argv)
    result = run_ingest(args) if args.command == "ingest" else run_rebuild(args)
    write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
