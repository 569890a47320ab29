from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from aggregator import Aggregator
from aggregator.settings import load_settings
from tests.conftest import FeedServer, Route, free_port, rss, wait_for_port


def healthz(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        data: dict[str, object] = json.loads(r.read())
        return data


def write_config(tmp_path: Path, demo: Path, port: int) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\ndb_path = "run.db"\n[feeds]\nopml = "{demo / "demo.opml"}"\n'
        f"[schedule]\ntick_seconds = 1\n[web]\nport = {port}\n"
    )
    return cfg


@pytest.mark.slow
def test_run_polls_serves_and_stops_cleanly(tmp_path: Path, demo_feeds: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, demo_feeds, port)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(cfg)], cwd=tmp_path)
    try:
        wait_for_port(port, timeout=90)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            h = healthz(port)
            if h["items"] == 44:
                break
            time.sleep(0.3)
        assert h["status"] == "ok" and h["feeds"] == 6 and h["items"] == 44
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert "Putin" in r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    with pytest.raises(OSError):
        healthz(port)


@pytest.mark.slow
def test_serve_alone_does_not_poll(tmp_path: Path, demo_feeds: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, demo_feeds, port)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "serve", "--config", str(cfg)], cwd=tmp_path)
    try:
        wait_for_port(port, timeout=90)
        time.sleep(2.5)
        assert healthz(port)["feeds"] == 0 and healthz(port)["items"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_poll_now_is_left_to_a_running_poller(tmp_path: Path, feed_server: FeedServer) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[storage]\ndb_path = "poll.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n'
        "[schedule]\ntick_seconds = 3600\n"  # due feeds only at start: later polls are asked for
    )
    story = {"title": "Harbour cranes stop in strike", "description": "Dockers walked out at dawn."}
    feed_server.routes["/a.xml"] = Route(rss([{**story, "guid": "a1"}], title="A"))
    with Aggregator(load_settings(cfg)) as agg:
        feed, _ = agg.add_feed(feed_server.url("/a.xml"))
        log = (tmp_path / "poll.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "poll", "--config", str(cfg)], cwd=tmp_path, stderr=log
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (agg.feed(feed.id) or feed).last_polled_at:
                time.sleep(0.2)
            assert agg.poller_running() and agg.counts()["items"] == 1  # its first round
            feed_server.routes["/a.xml"] = Route(
                rss([{**story, "guid": "a1"}, {**story, "guid": "a2", "title": "Cranes idle"}], title="A")
            )
            report = agg.poll_now(feed.id, wait=30)  # the next round is an hour away
            assert report is not None and report.status == "ok"
            assert (report.new_items, report.updated_items) == (1, 0)
            assert agg.pipeline._engine is None, "the poller polled, not this process"
        finally:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # an impatient second one does not cut the shutdown short
            code = proc.wait(timeout=30)
            log.close()
        assert code == 0 and "Traceback" not in (tmp_path / "poll.log").read_text()
        assert not agg.poller_running()  # it said it stopped: the site polls by itself again
        feed_server.routes["/a.xml"] = Route(rss([{**story, "guid": "a3"}], title="A"))
        report = agg.poll_now(feed.id, wait=5)
        assert report is not None and report.new_items == 1 and agg.pipeline._engine is not None


def test_skipped_ticks_are_not_logged_other_warnings_are() -> None:
    import logging

    from aggregator.runner import _SkippedTicks

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("apscheduler.scheduler", logging.WARNING, __file__, 1, message, None, None)

    skipped = 'Execution of job "tick" skipped: maximum number of running instances reached (1)'
    assert not _SkippedTicks().filter(record(skipped))
    assert _SkippedTicks().filter(record('Run time of job "tick" was missed by 0:00:03'))


def test_the_first_stop_signal_turns_the_others_off() -> None:
    """Ctrl-C reaches the poller and `aggregator run` sends SIGTERM too: the second one,
    raised while the first was being handled, printed a traceback."""
    from aggregator.runner import _raise_stop, _Stop

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(_Stop):
            _raise_stop(signal.SIGINT, None)
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in previous)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@pytest.mark.slow
def test_a_poller_whose_opml_lists_no_feed_starts_and_says_why(tmp_path: Path) -> None:
    """feeds.opml naming a file without feeds stopped the poller (and `run` took the
    site down with it) with a traceback."""
    not_opml = tmp_path / "feeds.opml"
    not_opml.write_text("[storage]\nthis is no OPML\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[storage]\ndb_path = "p.db"\n[feeds]\nopml = "{not_opml}"\n[fetch]\nparse_workers = 0\n')
    log_path = tmp_path / "poll.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "poll", "--config", str(cfg)], cwd=tmp_path, stderr=log
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "poller started" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    text = log_path.read_text()
    assert code == 0 and "poller started" in text and "Traceback" not in text
    assert f"feeds.opml ({not_opml}) was not read" in text and "no feeds subscribed" in text


@pytest.mark.slow
def test_a_stopped_poller_leaves_further_stop_signals_ignored(tmp_path: Path) -> None:
    """Stopped by a signal, the poller does not give SIGTERM its default handler back:
    a second SIGTERM arriving after its clean-up (the one ``aggregator run`` or an
    impatient operator sends) killed the exiting process (exit -15, not 0)."""
    import os
    import threading

    from aggregator.runner import run_poller

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[storage]\ndb_path = "p.db"\n[feeds]\nopml = ""\n[fetch]\nparse_workers = 0\n'
        "[schedule]\ntick_seconds = 3600\n"
    )
    settings = load_settings(cfg)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def stop_when_up() -> None:
        deadline = time.monotonic() + 60
        with Aggregator(settings) as agg:
            while time.monotonic() < deadline and not agg.poller_running():
                time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_up)
    stopper.start()
    try:
        run_poller(settings, settings.db_path)
        stopper.join(10)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # late: changes nothing
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    with Aggregator(settings) as agg:
        assert not agg.poller_running()  # it cleaned up
