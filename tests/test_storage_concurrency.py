"""Reads during writes: the site keeps answering while the poller ingests; backups while writing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aggregator import Aggregator
from aggregator.settings import load_settings
from tests.conftest import FeedServer, Route, free_port, rss, wait_for_port
from tests.test_pipeline_crash import corpus


@pytest.mark.slow
def test_site_answers_during_heavy_ingest_and_backup_works(tmp_path: Path, feed_server: FeedServer) -> None:
    feeds = corpus(3)
    for path, items in feeds.items():
        feed_server.routes[path] = Route(rss(items, title=path))
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\ndb_path = "busy.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n[web]\nport = {port}\n'
    )
    with Aggregator(load_settings(cfg)) as agg:
        for path in feeds:
            agg.add_feed(feed_server.url(path))
    base = [sys.executable, "-m", "aggregator"]
    web = subprocess.Popen(
        [*base, "serve", "--config", str(cfg)], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    failures: list[str] = []
    ok = 0
    stop = threading.Event()
    lock = threading.Lock()

    def reader(n: int) -> None:
        nonlocal ok
        paths = ["/", "/healthz", "/?sort=coverage", "/feed.rss"]
        k = n
        while not stop.is_set():
            url = f"http://127.0.0.1:{port}{paths[k % len(paths)]}"
            k += 1
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    r.read()
                    with lock:
                        ok += 1
            except (urllib.error.URLError, OSError) as exc:
                with lock:
                    failures.append(f"{url}: {exc}")

    try:
        wait_for_port(port)
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        writer = subprocess.Popen(
            [*base, "update", "--all", "--config", str(cfg)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        backup = tmp_path / "backup.db"
        mid = subprocess.run(
            [*base, "backup", str(backup), "--config", str(cfg)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        writer_still_running = writer.poll() is None
        _, writer_err = writer.communicate(timeout=300)
        stop.set()
        for t in threads:
            t.join()
    finally:
        stop.set()
        web.terminate()
        _, web_err = web.communicate(timeout=30)
    assert writer.returncode == 0, writer_err
    assert not failures, failures[:5]
    assert ok > 50
    assert "locked" not in web_err and "locked" not in writer_err
    assert mid.returncode == 0, mid.stderr
    assert writer_still_running  # the backup really ran during the ingest
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    partial = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    conn.close()
    with Aggregator(load_settings(cfg)) as agg:
        assert 0 <= partial <= agg.counts()["items"] == len(feeds) * len(next(iter(feeds.values())))
