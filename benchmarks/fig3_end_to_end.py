"""Figure 3: end to end from an HTTP server, against feedparser parsing alone.

A feed server process serves the corpus as RSS and Atom documents on 127.0.0.1.
The aggregator subscribes to every document and runs ``Aggregator.update`` (fetch,
parse, normalize, fingerprint, cluster, store) over them, a few feeds per call so
that a time budget can stop it between calls.  Then the very documents it
processed are fetched once more and parsed by feedparser alone (with the options
``aggregator.parse`` uses), and by ``aggregator.parse.parse_feed``, in the same run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import feedparser
import httpx

from aggregator import Aggregator
from aggregator.parse import parse_feed
from benchmarks.common import ROOT, log, pipeline_stage_timer, scratch_settings

FEEDS_PER_CALL = 16


def start_feed_server(
    seed: int, items: int, items_per_day: int
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    import json

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.feedserver",
            "--seed",
            str(seed),
            "--items",
            str(items),
            "--items-per-day",
            str(items_per_day),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the feed server did not start")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers_cpu(agg: Aggregator) -> dict[int, float]:
    """CPU seconds of each live parse worker process, by pid."""
    processes = getattr(agg._pool, "_processes", None) or {}
    return {pid: _cpu_seconds(pid) for pid in list(processes)}


def run(seed: int, n_items: int, items_per_day: int, budget: float, workdir: Path) -> dict[str, Any]:
    log(f"fig 3: starting the feed server with {n_items:,} items")
    server, info = start_feed_server(seed, n_items, items_per_day)
    try:
        base = f"http://127.0.0.1:{info['port']}"
        paths = httpx.get(base + "/index.txt").text.split()
        settings = scratch_settings(workdir / "e2e", **{"fetch.per_host_concurrency": 8})
        settings.db_path.unlink(missing_ok=True)
        with Aggregator(settings) as agg:
            feeds = [agg.add_feed(base + p)[0] for p in paths]
            timer = pipeline_stage_timer()
            done_feeds = 0
            items = 0
            errors = 0
            # As the poller does: parse, normalize and fingerprint run in worker
            # processes while this one clusters and stores (WORKERS_FROM_FEEDS).
            workers = agg.start_workers()
            log(f"fig 3: updating {len(feeds)} feeds (budget {budget:.0f} s, worker processes: {workers})")
            cpu0 = os.times()
            server_cpu0 = _cpu_seconds(server.pid)
            workers_cpu0 = _workers_cpu(agg)  # (their start-up, imports included, is before)
            t0 = time.perf_counter()
            with timer:
                for lo in range(0, len(feeds), FEEDS_PER_CALL):
                    reports = agg.update(feeds[lo : lo + FEEDS_PER_CALL])
                    done_feeds += len(reports)
                    items += sum(r.new_items for r in reports)
                    errors += sum(1 for r in reports if r.status != "ok")
                    if time.perf_counter() - t0 > budget:
                        break
            wall = time.perf_counter() - t0
            cpu1 = os.times()
            server_cpu = _cpu_seconds(server.pid) - server_cpu0
            workers_cpu1 = _workers_cpu(agg)
            own_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            stored = agg.counts()
        # The worker processes' CPU during the run, from /proc; if one ended during the
        # run (none does unless it fails), its whole life from the children's times.
        cpu2 = os.times()
        lifetime = (cpu2.children_user - cpu0.children_user) + (cpu2.children_system - cpu0.children_system)
        if set(workers_cpu0) == set(workers_cpu1):
            worker_cpu = sum(workers_cpu1[p] - workers_cpu0[p] for p in workers_cpu1)
        else:
            worker_cpu = lifetime
        done_paths = paths[:done_feeds]
        log(f"fig 3: {items:,} items in {wall:.1f} s; parsing the same {len(done_paths)} documents alone")
        with httpx.Client() as client:
            bodies = [client.get(base + p) for p in done_paths]
        n_bytes = sum(len(r.content) for r in bodies)
        t1 = time.perf_counter()
        fp_entries = 0
        for r in bodies:
            d = feedparser.parse(
                r.content,
                response_headers={"content-location": str(r.url), "content-type": r.headers["content-type"]},
                sanitize_html=False,
                resolve_relative_uris=False,
            )
            fp_entries += len(d.entries)
        feedparser_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        for r in bodies:
            parse_feed(r.content, str(r.url), dict(r.headers))
        parse_feed_s = time.perf_counter() - t2
    finally:
        stop(server)
    stages = {k: round(v, 3) for k, v in sorted(timer.seconds.items())}
    stages["other (fetch wait, pipeline, commit)"] = round(wall - sum(timer.seconds.values()), 3)
    rate = items / wall if wall else 0.0
    ratio = wall / feedparser_s if feedparser_s else None
    return {
        "items_requested": n_items,
        "items": items,
        "feeds": done_feeds,
        "feeds_total": len(paths),
        "errors": errors,
        "bytes": n_bytes,
        "stored": stored,
        "seconds": wall,
        "items_per_s": rate,
        "cores_used": round((own_cpu + worker_cpu + server_cpu) / wall, 2) if wall else None,
        "cpu_seconds": {"main": own_cpu, "workers": worker_cpu, "feed server": server_cpu},
        "worker_processes": workers,
        "aggregator_cpu_s": round(own_cpu, 2),
        "feed_server_cpu_s": round(server_cpu, 2),
        "feedparser_alone_s": feedparser_s,
        "feedparser_items_per_s": fp_entries / feedparser_s if feedparser_s else None,
        "parse_feed_s": parse_feed_s,
        "ratio_to_feedparser": ratio,  # end-to-end time / feedparser time on the same bytes
        "beyond_parsing_to_parsing": (wall - feedparser_s) / feedparser_s if feedparser_s else None,
        "stages_s": stages,
        "top_functions_s": [(k, round(v, 3)) for k, v in timer.top_functions(10)],
        "complete": done_feeds == len(paths),
        "goal_items_per_s": 1000.0,
        "ok": rate >= 1000.0 and ratio is not None and ratio <= 2.0,
    }
