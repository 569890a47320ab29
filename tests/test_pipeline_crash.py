"""Crash safety: SIGKILL the updater at random points, restart, and check nothing is lost or doubled."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregator import Aggregator
from aggregator.settings import load_settings
from tests.conftest import FeedServer, Route, rss

FEEDS = 12
ITEMS = 250


def corpus(seed: int) -> dict[str, list[dict[str, str]]]:
    rng = random.Random(seed)
    vocab = [
        f"{rng.choice('bcdfghklmnprstvz')}{rng.choice('aeiou')}{rng.choice('bcdfghklmnprstvz')}{n}"
        for n in range(20000)
    ]
    feeds = {}
    for f in range(FEEDS):
        feeds[f"/feed{f}.xml"] = [
            {
                "title": " ".join(rng.choices(vocab, k=8)),
                "guid": f"f{f}-i{i}",
                "link": f"https://outlet{f}.example/story/{i}",
                "pubDate": time.strftime(
                    "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - rng.randint(0, 40) * 3600)
                ),
                "description": " ".join(rng.choices(vocab, k=120)),
            }
            for i in range(ITEMS)
        ]
    return feeds


@pytest.mark.slow
def test_sigkill_during_updates_loses_and_doubles_nothing(tmp_path: Path, feed_server: FeedServer) -> None:
    feeds = corpus(7)
    for path, items in feeds.items():
        feed_server.routes[path] = Route(rss(items, title=path))
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[storage]\ndb_path = "crash.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n[fetch]\nmax_concurrency = 4\n'
    )
    with Aggregator(load_settings(cfg)) as agg:
        for path in feeds:
            agg.add_feed(feed_server.url(path))
    cmd = [sys.executable, "-m", "aggregator", "update", "--all", "--config", str(cfg)]
    rng = random.Random(11)
    kills = 0
    item_counts = []
    while kills < 20:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        with Aggregator(load_settings(cfg)) as agg:
            item_counts.append(agg.counts()["items"])
    # Finish: one uninterrupted update.
    subprocess.run(
        cmd, cwd=tmp_path, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300
    )
    assert item_counts == sorted(item_counts)  # committed work is never lost
    assert item_counts[0] < FEEDS * ITEMS  # the kills did land in the middle of the work
    with Aggregator(load_settings(cfg)) as agg:
        assert agg.integrity_check() == "ok"
        rows = list(agg.export_rows())
        served = {(f"{feed_server.url(p)}", it["guid"]) for p, its in feeds.items() for it in its}
        # feedparser resolves non-URL guids against the feed URL: compare their last part.
        stored = [(r["feed"], r["guid"].rsplit("/", 1)[1]) for r in rows]
        assert len(stored) == len(set(stored)) == len(served)  # every item exactly once
        assert set(stored) == served
        assert all(r["cluster_id"] is not None for r in rows)  # every item in exactly one cluster
        assert sum(r["canonical"] for r in rows) == agg.counts()["clusters"]
        db_clusters = {r["item_id"]: r["cluster_id"] for r in rows}
        agg.rebuild_index()
        index = agg.pipeline.engine().assignments()
        assert index and all(db_clusters[i] == c for i, c in index.items())  # index agrees with the database
