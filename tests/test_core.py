from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aggregator import Aggregator, FeedError, UpdateReport
from aggregator.settings import load_settings
from tests.conftest import FeedServer, Route, rss

WIRE = {
    "title": "Quake kills 14 in mountain province",
    "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
    "description": "A magnitude 6.1 earthquake struck before dawn, killing 14 people, officials said on Tuesday.",
}


def test_add_feed_validates(agg: Aggregator, tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="empty"):
        agg.add_feed("  ")
    with pytest.raises(FeedError, match="not an http"):
        agg.add_feed("javascript:alert(1)")
    for bad in ("http://[::1", "https://[zz]/", "http://127.0.0.1:99999/", "http://exa mple.com/"):
        with pytest.raises(FeedError, match="not a valid URL"):  # not a ValueError
            agg.add_feed(bad, via_site=True)
    with pytest.raises(FeedError, match="control characters"):
        agg.add_feed("https://a.example/\x01", via_site=True)
    with pytest.raises(FeedError) as err:  # the message is flashed, in a cookie of 4 KB at most
        agg.add_feed("ftp://" + "\u4e2d" * 1990, via_site=True)
    assert len(str(err.value).encode()) < 1000
    spaced = tmp_path / "my feeds" / "a.xml"  # a path keeps its spaces (a URL's are encoded)
    spaced.parent.mkdir()
    spaced.write_bytes(rss([]))
    assert agg.add_feed(str(spaced))[0].url == spaced.resolve().as_uri()
    assert agg.feed(str(spaced)) is not None
    f = tmp_path / "f.xml"
    f.write_bytes(rss([]))
    feed, new = agg.add_feed(str(f))
    assert new and feed.url == f.resolve().as_uri()
    assert agg.feed(str(f)) == feed


def test_one_feed_is_subscribed_once_however_its_url_is_written(agg: Aggregator) -> None:
    first, new = agg.add_feed("https://a.example/f", "A\x01 feed")
    assert new and first.title == "A feed"  # (a control character broke the OPML export)
    for same in (
        "HTTPS://A.EXAMPLE/f",
        "https://a.example:443/f",
        "https://a.example/f#top",
        " https://a.example/f\n",
    ):
        assert agg.add_feed(same) == (first, False), same
        assert agg.feed(same) == first
    assert agg.add_feed("https://a.example:8443/f")[1] and agg.add_feed("https://a.example/F")[1]
    assert agg.add_feed("https://b.example")[0].url == "https://b.example/"
    assert agg.add_feed("https://b.example/my feed.xml")[0].url == "https://b.example/my%20feed.xml"


def test_local_files_can_be_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\ndb_path = "x.db"\n[feeds]\nallow_local_files = false\n')
    with Aggregator(load_settings(cfg)) as agg, pytest.raises(FeedError, match="not allowed"):
        agg.add_feed(str(cfg))


def test_subscribe_defaults_only_when_empty(tmp_path: Path, demo_feeds: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[storage]\ndb_path = "x.db"\n[feeds]\nopml = "{demo_feeds / "demo.opml"}"\n')
    with Aggregator(load_settings(cfg)) as agg:
        assert agg.subscribe_defaults() == 6
        agg.remove_feed(agg.feeds()[0].id)
        assert agg.subscribe_defaults() == 0
        assert len(agg.feeds()) == 5


def test_remove_feed_updates_clusters(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(
        rss([{**WIRE, "guid": "a1", "link": "https://a.example/q"}], title="A")
    )
    feed_server.routes["/b.xml"] = Route(
        rss([{**WIRE, "guid": "b1", "link": "https://b.example/q"}], title="B")
    )
    a, _ = agg.add_feed(feed_server.url("/a.xml"))
    agg.add_feed(feed_server.url("/b.xml"))
    agg.update()
    (c,) = agg.clusters()
    assert c.outlets == ("A", "B") or set(c.outlets) == {"A", "B"}
    assert agg.remove_feed(a.id)
    (c,) = agg.clusters()
    assert c.outlets == ("B",) and c.size == 1 and c.canonical.outlet == "B"
    assert agg.counts() == {"feeds": 1, "items": 1, "clusters": 1}
    assert not agg.remove_feed(a.id)


def test_recluster_is_stable(agg: Aggregator, demo_feeds: Path) -> None:
    agg.import_opml(demo_feeds / "demo.opml")
    agg.update()

    def groups() -> set[frozenset[int]]:
        by: dict[int, set[int]] = {}
        for row in agg.export_rows():
            by.setdefault(row["cluster_id"], set()).add(row["item_id"])
        return {frozenset(v) for v in by.values()}

    assert agg.recluster() == 44
    again = groups()
    assert sum(len(g) for g in again) == 44
    agg.recluster()
    assert groups() == again  # time-ordered reclustering is deterministic


def test_parse_workers_give_the_same_result(tmp_path: Path, demo_feeds: Path) -> None:
    """Parsing and fingerprinting in a worker process changes nothing but speed."""
    results = []
    for workers in (0, 1):
        cfg = tmp_path / f"w{workers}.toml"
        cfg.write_text(
            f'[storage]\ndb_path = "w{workers}.db"\n[feeds]\nopml = ""\n[fetch]\nparse_workers = {workers}\n'
        )
        with Aggregator(load_settings(cfg)) as agg:
            assert agg.start_workers() == bool(workers)
            agg.import_opml(demo_feeds / "demo.opml")
            reports = agg.update()
            assert sum(r.new_items for r in reports) == 44
            results.append(
                [(r["guid"], r["cluster_id"], r["signal"], round(r["score"], 9)) for r in agg.export_rows()]
            )
    assert results[0] == results[1]


@pytest.mark.parametrize("workers", [0, 1])
def test_settings_applied_during_an_update_apply_to_the_rest_of_it(
    tmp_path: Path, demo_feeds: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin applied new settings (in the site's process) while the poller was half way
    through a round: the poller clustered the rest of the round with the old ones, and
    stored signatures of the old length (documents its workers had prepared ahead)."""
    cfg = tmp_path / "during.toml"
    cfg.write_text(
        f'[storage]\ndb_path = "during.db"\n[feeds]\nopml = ""\n[fetch]\nparse_workers = {workers}\n'
    )
    with Aggregator(load_settings(cfg)) as agg:
        agg.start_workers()
        agg.import_opml(demo_feeds / "demo.opml")
        used: list[int] = []
        if workers:  # documents prepared again go to the workers, with their time limit
            import aggregator.pipeline

            def not_here(*args: Any, **kwargs: Any) -> Any:
                raise AssertionError("prepared again in the poller's process, without a time limit")

            monkeypatch.setattr(aggregator.pipeline, "prepare", not_here)

        def meanwhile(report: UpdateReport) -> None:
            used.append(agg.pipeline.settings.cluster.num_perm)
            if len(used) == 1:
                with Aggregator(agg.base_settings, db_path=agg.db_path) as site:
                    site.apply_settings(
                        {"cluster.num_perm": "64", "cluster.lsh_bands": "16", "cluster.lsh_rows": "4"},
                        "admin",
                    )

        reports = agg.update(progress=meanwhile)
        assert len(reports) > 2 and sum(r.new_items for r in reports) == 44
        assert used == [128] + [64] * (len(reports) - 1)
        lengths = agg.db.execute("SELECT num_perm, count(*) FROM signatures GROUP BY num_perm").fetchall()
        assert lengths == [(64, 44)]


def test_feeds_are_parsed_ahead_of_the_one_being_stored(tmp_path: Path, demo_feeds: Path) -> None:
    """While one feed is clustered and stored, the next ones are already being parsed
    (up to ``PREPARE_AHEAD``): a big feed behind a small one does not stall the update."""
    from aggregator.core import PREPARE_AHEAD

    cfg = tmp_path / "ahead.toml"
    cfg.write_text('[storage]\ndb_path = "a.db"\n[feeds]\nopml = ""\n[fetch]\nparse_workers = 1\n')
    with Aggregator(load_settings(cfg)) as agg:
        assert agg.start_workers()
        agg.import_opml(demo_feeds / "demo.opml")
        pool, pipeline = agg._pool, agg.pipeline
        assert pool is not None
        events: list[str] = []
        submit, process = pool.submit, pipeline.process

        def counting_submit(*args: Any, **kwargs: Any) -> Any:
            events.append("parse")
            return submit(*args, **kwargs)

        def counting_process(*args: Any, **kwargs: Any) -> Any:
            events.append("store")
            return process(*args, **kwargs)

        pool.submit = counting_submit
        pipeline.process = counting_process
        reports = agg.update()
    assert len(reports) == 6 and all(r.status == "ok" for r in reports)
    assert PREPARE_AHEAD >= 6
    # every feed answered within the settle time (local files), so all six went to the worker first
    assert events == ["parse"] * 6 + ["store"] * 6


def test_private_addresses_are_refused_at_fetch_time(tmp_path: Path, feed_server: FeedServer) -> None:
    """A feed that reaches a private address (directly or by a redirect) is not fetched."""
    from aggregator.storage import feeds as feeds_store
    from aggregator.storage import write_transaction

    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\ndb_path = "p.db"\n[feeds]\nopml = ""\n')
    feed_server.routes["/a.xml"] = Route(rss([{**WIRE, "guid": "a1"}]))
    with Aggregator(load_settings(cfg)) as agg:
        with write_transaction(agg.db):  # as if it had been added when the address was public
            feeds_store.add(agg.db, feed_server.url("/a.xml"), agg.clock())
        (r,) = agg.update()
        assert r.status == "error" and "non-public address" in (r.error or "")
    assert feed_server.hits("/a.xml") == []


def test_a_poll_asked_for_is_made_by_the_next_update(agg: Aggregator, feed_server: FeedServer) -> None:
    feed_server.routes["/a.xml"] = Route(rss([{**WIRE, "guid": "a1"}], title="A"))
    feed_server.routes["/b.xml"] = Route(rss([], title="B"))
    a, _ = agg.add_feed(feed_server.url("/a.xml"))
    b, _ = agg.add_feed(feed_server.url("/b.xml"))
    assert {r.feed_url for r in agg.update()} == {a.url, b.url}
    assert agg.update() == [] and not agg.poll_requested()  # neither is due
    agg.pause_feed(a.id, True)
    feed_server.routes["/a.xml"] = Route(rss([{**WIRE, "guid": "a1"}, {**WIRE, "guid": "a2"}], title="A"))
    asked = agg.request_poll(a.id)
    assert asked.poll_requested_at is not None and agg.poll_requested()
    assert agg.request_poll(a.id).poll_requested_at == asked.poll_requested_at  # asked once
    (report,) = agg.update()  # paused, not due: polled because it was asked for
    assert report.feed_url == a.url and report.new_items == 1
    polled = agg.feed(a.id)
    assert polled is not None and polled.poll_requested_at is None and polled.last_items_added == 1
    assert not agg.poll_requested() and agg.update() == []
    with pytest.raises(FeedError):
        agg.request_poll(9999)


def test_what_an_admin_does_while_a_feed_is_fetched_is_kept(agg: Aggregator, feed_server: FeedServer) -> None:
    """A "Poll now" and an interval set while the feed was being fetched: the poll's
    outcome cleared the request (the document could predate it) and planned the next
    poll from the feed as the round had read it (the admin's interval ignored)."""
    body = rss([{**WIRE, "guid": "a1"}], title="A")
    a, _ = agg.add_feed(feed_server.url("/a.xml"))

    def meanwhile(handler: Any) -> None:  # the admin, in the site's process, mid-fetch
        with Aggregator(agg.settings, db_path=agg.db_path) as site:
            site.request_poll(a.id)
            site.set_poll_interval(a.id, 7)
        _empty_feed(handler, body=body)

    feed_server.routes["/a.xml"] = Route(handler=meanwhile)
    (report,) = agg.update()
    assert report.new_items == 1
    polled = agg.feed(a.id)
    assert polled is not None and polled.poll_requested_at is not None  # polled again
    assert polled.last_polled_at is not None and polled.next_poll_at is not None
    assert polled.next_poll_at <= polled.last_polled_at + 7 * 60 * (1 + agg.settings.schedule.jitter) + 1
    feed_server.routes["/a.xml"] = Route(body)
    (again,) = agg.update()  # the request is answered, and then cleared
    assert again.feed_url == a.url and agg.feed(a.id).poll_requested_at is None  # type: ignore[union-attr]


def test_poll_now_without_a_poller_polls_here(agg: Aggregator, feed_server: FeedServer) -> None:
    clock = [1_000_000.0]
    agg.clock = lambda: clock[0]
    feed_server.routes["/a.xml"] = Route(rss([{**WIRE, "guid": "a1"}], title="A"))
    a, _ = agg.add_feed(feed_server.url("/a.xml"))
    assert agg.poller_seen() is None and not agg.poller_running()
    agg.heartbeat()
    assert agg.poller_seen() == clock[0] and agg.poller_running()
    clock[0] += 31  # silent for longer than POLLER_GONE_SECONDS: taken for stopped
    assert not agg.poller_running()
    report = agg.poll_now(a.id, wait=5)
    assert report is not None and report.status == "ok" and report.new_items == 1
    assert agg.feed(a.id).poll_requested_at is None  # type: ignore[union-attr]
    agg.heartbeat()
    agg.heartbeat(running=False)  # a poller that stops says so
    assert not agg.poller_running()
    with pytest.raises(FeedError):
        agg.poll_now(9999)


def poison_prepare(body: bytes, url: str, *args: Any) -> Any:
    """``prepare``, except that a document whose address says "poison" kills the worker
    process outright, as a crash in a C extension would."""
    import os

    from aggregator.prepare import prepare

    if "poison" in url:
        os._exit(139)
    if "buggy" in url:
        raise RecursionError("maximum recursion depth exceeded")
    return prepare(body, url, *args)


def test_a_parse_worker_killed_by_a_feed_does_not_stop_polling(
    tmp_path: Path, demo_feeds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document that kills its worker process (a crash in a C extension, memory) breaks the
    pool: it is not parsed again in this process (which it would kill too), its feed gets an
    error and the usual back-off, the update goes on and the next one has new workers."""
    from aggregator import core

    cfg = tmp_path / "dead.toml"
    cfg.write_text('[storage]\ndb_path = "d.db"\n[feeds]\nopml = ""\n[fetch]\nparse_workers = 1\n')
    poison = tmp_path / "poison.xml"
    poison.write_bytes(rss([{**WIRE, "guid": "p1"}], title="Poison"))
    monkeypatch.setattr(core, "prepare", poison_prepare)
    with Aggregator(load_settings(cfg)) as agg:
        assert agg.start_workers()
        pool = agg._pool
        buggy = tmp_path / "buggy.xml"
        buggy.write_bytes(rss([{**WIRE, "guid": "b1"}], title="Buggy"))
        flawed, _ = agg.add_feed(str(buggy))  # a Python exception in the worker: the pool lives on
        (report,) = agg.update([flawed])
        assert (
            report.error == "internal error while parsing: RecursionError: maximum recursion depth exceeded"
        )
        assert agg._pool is pool
        bad, _ = agg.add_feed(str(poison))
        agg.import_opml(demo_feeds / "demo.opml")
        reports = {r.feed_url: r for r in agg.update([f for f in agg.feeds() if f.id != flawed.id])}
        assert len(reports) == 7
        assert reports[bad.url].status == "error"
        assert reports[bad.url].error == "the parse worker process died while this feed was being read"
        stored = agg.feed(bad.id)
        assert stored is not None and stored.failures == 1 and stored.next_poll_at is not None
        # the others: read before the crash, lost with the pool (errors, polled again), or parsed here
        others = [r for url, r in reports.items() if url != bad.url]
        assert all(r.status == "ok" or "parse worker process died" in (r.error or "") for r in others)
        again = agg.update([f for f in agg.feeds() if f.id not in (bad.id, flawed.id)])
        assert all(r.status in ("ok", "not_modified") for r in again)
        assert agg.counts()["items"] == 44
        assert agg._pool is not None and agg._pool is not pool  # new workers
        assert agg.feed(bad.id).items_total == 0  # type: ignore[union-attr]


def test_a_feed_that_breaks_preparing_is_an_error_of_that_feed_only(
    agg: Aggregator, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug met while parsing one feed is stored as that feed's error; the others go on."""
    from aggregator import pipeline

    feed_server.routes["/a.xml"] = Route(rss([{**WIRE, "guid": "a1"}], title="A"))
    feed_server.routes["/b.xml"] = Route(rss([{**WIRE, "guid": "b1"}], title="B"))
    a, _ = agg.add_feed(feed_server.url("/a.xml"))
    b, _ = agg.add_feed(feed_server.url("/b.xml"))
    real = pipeline.prepare

    def flaky(body: bytes, url: str, *args: Any) -> Any:
        if url.endswith("/a.xml"):
            raise RecursionError("maximum recursion depth exceeded")
        return real(body, url, *args)

    monkeypatch.setattr(pipeline, "prepare", flaky)
    reports = {r.feed_url: r for r in agg.update()}
    assert reports[a.url].status == "error"
    assert (
        reports[a.url].error
        == "internal error while parsing: RecursionError: maximum recursion depth exceeded"
    )
    assert reports[b.url].status == "ok" and reports[b.url].new_items == 1
    stored = agg.feed(a.id)
    assert stored is not None and stored.failures == 1 and "RecursionError" in (stored.last_error or "")


def test_an_opml_file_with_a_malformed_url_imports_the_others(agg: Aggregator) -> None:
    opml = (
        b'<?xml version="1.0"?><opml version="2.0"><head/><body>'
        b'<outline type="rss" text="Bad" xmlUrl="http://[::1"/>'
        b'<outline type="rss" text="Good" xmlUrl="https://good.example/feed.xml"/>'
        b"</body></opml>"
    )
    added, problems = agg.import_opml(opml, via_site=True)
    assert [f.url for f in added] == ["https://good.example/feed.xml"]
    assert problems == ["not a valid URL: http://[::1"]


def test_one_aggregator_can_be_shared_by_threads(agg: Aggregator, tmp_path: Path) -> None:
    """Its threads share one connection: a write from one inside another's transaction
    failed ("cannot start a transaction within a transaction", "no such savepoint")."""

    f = tmp_path / "f.xml"
    f.write_bytes(rss([]))
    feed, _ = agg.add_feed(str(f))
    errors: list[str] = []
    stop = time.monotonic() + 2.0

    def poll() -> None:
        n = 0
        while time.monotonic() < stop:
            n += 1
            f.write_bytes(
                rss([{"title": f"Item {n} {k} about things", "guid": f"g{n}-{k}"} for k in range(10)])
            )
            (report,) = agg.update([feed])
            if report.status == "error":
                errors.append(f"update: {report.error}")

    def admin() -> None:
        while time.monotonic() < stop:
            try:
                agg.heartbeat()
                agg.set_poll_interval(feed.id, 30)
                agg.pause_feed(feed.id, False)
            except Exception as exc:  # any failure is the finding
                errors.append(f"admin: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=poll), threading.Thread(target=admin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert agg.integrity_check() == "ok" and not agg.db.conn.in_transaction


def test_ids_and_bounds_out_of_range_find_nothing(agg: Aggregator, feed_server: FeedServer) -> None:
    """The site bounds its numbers; a library caller's 2**70 was an OverflowError, and a
    negative limit listed everything."""
    from aggregator.core import CorrectionError
    from aggregator.models import StoryFilter

    feed_server.routes["/a.xml"] = Route(rss([WIRE]))
    agg.add_feed(feed_server.url("/a.xml"))
    agg.update()
    huge = 2**70
    assert agg.cluster(huge) is None and agg.feed(huge) is None and agg.job(huge) is None
    assert agg.items_by_id([huge, -huge]) == {} and agg.story_members([huge]) == {huge: []}
    assert agg.get_settings_version(huge) is None and agg.feed_items(huge) == []
    assert agg.stories(StoryFilter(feed_id=huge)) == [] and agg.search("earthquake", before=huge)
    assert len(agg.clusters(limit=huge)) == 1 and agg.clusters(offset=huge) == []
    assert (
        agg.clusters(limit=-1) == []
        and agg.stories(limit=-1) == []
        and agg.search("earthquake", limit=-1) == []
    )
    for correction in (lambda: agg.merge_clusters(huge, 1, "a"), lambda: agg.move_item_out(huge, "a")):
        with pytest.raises(CorrectionError):
            correction()
    assert agg.remove_feed(huge) is False
    agg.delete_rule(huge)
    assert [h.item.id for h in agg.search("earthquake", hits_per_story=-1)[0].hits] != []


def _empty_feed(h: Any, after: float = 0.0, body: bytes | None = None) -> None:
    """Answer a request with an empty feed (or ``body``), ``after`` seconds."""
    time.sleep(after)
    body = rss([]) if body is None else body
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def test_a_slow_host_does_not_hold_up_the_others(agg: Aggregator, feed_server: FeedServer) -> None:
    """Fetch threads waiting for a slow host's turn held every other host up (16 feeds
    of a hung host delayed the rest by minutes): each host has a queue of its own."""
    started = time.monotonic()
    fast_at: list[float] = []

    def slow(h: Any) -> None:
        _empty_feed(h, after=1.2)

    def fast(h: Any) -> None:
        fast_at.append(time.monotonic() - started)
        _empty_feed(h)

    for n in range(8):  # due first: added first
        feed_server.routes[f"/slow{n}.xml"] = Route(handler=slow)
        agg.add_feed(feed_server.url(f"/slow{n}.xml"))
    feed_server.routes["/fast.xml"] = Route(handler=fast)
    agg.add_feed(f"http://localhost:{feed_server.port}/fast.xml")  # another host name, same server
    started = time.monotonic()
    reports = agg.update()
    assert len(reports) == 9 and all(r.status == "ok" for r in reports)
    assert fast_at and fast_at[0] < 0.8, fast_at  # not after the first two slow fetches (1.2 s)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended (its new parent reaps it)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_worker_processes_ignore_ctrl_c_and_end_with_the_poller(settings: Any, tmp_path: Path) -> None:
    assert (tmp_path / "config.toml").is_file()  # the settings fixture's
    """Killed, the poller left its parse workers running for good; Ctrl-C (sent to the
    whole process group) killed them mid-document with a traceback."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = tmp_path / "poller.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from aggregator import Aggregator\n"
        "from aggregator.settings import load_settings\n"
        "if __name__ == '__main__':\n"
        f"    agg = Aggregator(load_settings({str(tmp_path / 'config.toml')!r}))\n"
        "    assert agg.start_workers()\n"
        "    list(agg._pool.map(abs, range(8)))\n"
        "    print(' '.join(str(p) for p in agg._pool._processes), flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and all(_alive(p) for p in workers)
        for p in workers:
            os.kill(p, signal.SIGINT)
        time.sleep(0.5)
        assert all(_alive(p) for p in workers)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)]


def test_stop_ends_a_round_after_the_fetches_under_way(agg: Aggregator, feed_server: FeedServer) -> None:
    """A SIGTERM during a round of slow feeds took as long as the round (112 s)."""

    def slow(h: Any) -> None:
        _empty_feed(h, after=1.0)

    for n in range(10):  # one host, two at a time: a round of five seconds
        feed_server.routes[f"/s{n}.xml"] = Route(handler=slow)
        agg.add_feed(feed_server.url(f"/s{n}.xml"))
    threading.Timer(0.3, agg.stop).start()
    began = time.monotonic()
    reports = agg.update()
    assert time.monotonic() - began < 2.5
    assert len(reports) < 10 and len({f.id for f in agg.feeds() if f.polls == 0}) >= 8  # still due


def test_a_document_the_parser_does_not_finish_fails_its_feed_not_the_poller(
    agg: Aggregator, feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There was no limit on waiting for a parse worker: a document it never finished
    with would have held the poller for good."""
    import aggregator.core
    import aggregator.pipeline

    items = [
        {"title": f"Item {n} about things", "guid": f"g{n}", "description": "words " * 200}
        for n in range(800)
    ]
    feed_server.routes["/big.xml"] = Route(rss(items))
    feed, _ = agg.add_feed(feed_server.url("/big.xml"))
    others = []  # feeds whose documents were with the stopped workers: given to new ones
    for n in range(3):
        feed_server.routes[f"/small{n}.xml"] = Route(rss([{"title": f"Small {n}", "guid": f"s{n}"}]))
        others.append(agg.add_feed(feed_server.url(f"/small{n}.xml"))[0])
    assert agg.start_workers()
    monkeypatch.setattr(aggregator.core, "PARSE_TIMEOUT_SECONDS", 0.01)

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed in the poller's process, without a time limit")

    monkeypatch.setattr(aggregator.pipeline, "prepare", not_here)
    report, *rest = agg.update([feed, *others])
    assert report.status == "error" and "parsing took longer than 0.01 s" in (report.error or "")
    assert [(r.status, r.new_items) for r in rest] == [("ok", 1)] * 3, [r.error for r in rest]
    assert agg._pool is not None  # new workers took them
    monkeypatch.undo()
    monkeypatch.setattr(aggregator.core, "PARSE_TIMEOUT_SECONDS", 300.0)
    (report,) = agg.update([agg.feed(feed.id)])  # type: ignore[list-item]
    assert report.new_items == 800 and agg._pool is not None  # new workers


class SlowResolver:
    """``socket.getaddrinfo`` of a slow DNS: every answer takes ``delay`` seconds,
    ``stuck.example`` never answers until released, ``*.private.example`` is 10.0.0.1."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = 0

    def __call__(self, host: str, *args: Any, **kwargs: Any) -> list[Any]:
        import socket

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if host == "stuck.example":
                self.release.wait(60)
            time.sleep(self.delay)
            ip = "10.0.0.1" if host.endswith(".private.example") else "93.184.216.34"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))]
        finally:
            with self.lock:
                self.running -= 1


def test_an_opml_import_resolves_its_hosts_at_once_and_does_not_wait_for_a_stuck_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each feed's host was resolved in turn, inside the request: 500 feeds behind a
    slow resolver took minutes, and one name that never answered held the import."""
    import socket

    from aggregator import fetch

    resolver = SlowResolver(delay=0.05)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(fetch, "RESOLVE_BUDGET_SECONDS", 1.0)
    hosts = [f"news{n}.example" for n in range(60)] + ["stuck.example", "intranet.private.example"]
    outlines = "".join(f'<outline text="{h}" xmlUrl="https://{h}/feed.xml"/>' for h in hosts)
    opml = f'<opml version="2.0"><body>{outlines}</body></opml>'.encode()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\ndb_path = "o.db"\n[feeds]\nopml = ""\n')
    result: list[Any] = []
    with Aggregator(load_settings(cfg)) as agg:
        importing = threading.Thread(target=lambda: result.append(agg.import_opml(opml, via_site=True)))
        importing.start()
        importing.join(30)  # one after another, it would wait for the stuck name
        try:
            assert not importing.is_alive()
        finally:
            resolver.release.set()
            importing.join()
        added, problems = result[0]
        assert problems == [
            "intranet.private.example resolves to a non-public address (10.0.0.1); not allowed by the configuration"
        ]
        # the stuck name is let through: every fetch checks the address it reaches
        assert {f.url for f in added} == {f"https://{h}/feed.xml" for h in hosts[:-1]}
        assert resolver.most > 1


def test_two_updates_at_once_poll_each_due_feed_once(settings: Any, feed_server: FeedServer) -> None:
    """The poller and a cron'd `aggregator update` on one database both fetched every
    due feed (and each stored its state from a copy read before the other's poll)."""
    body = rss([{"title": "Slow news", "guid": "1"}])
    feed_server.routes["/slow.xml"] = Route(handler=lambda h: _empty_feed(h, after=1.0, body=body))
    a, b = Aggregator(settings), Aggregator(settings)
    try:
        a.add_feed(feed_server.url("/slow.xml"))
        out: dict[str, Any] = {}
        first = threading.Thread(target=lambda: out.setdefault("a", a.update()))
        first.start()
        time.sleep(0.3)
        out["b"] = b.update()  # while the first still waits for the feed
        first.join()
        assert len(feed_server.hits("/slow.xml")) == 1
        assert [(r.status, r.new_items) for r in out["a"]] == [("ok", 1)] and out["b"] == []
        (feed,) = a.feeds()
        assert feed.polls == 1 and not b.update()  # given back, and not due
    finally:
        a.close()
        b.close()


def test_a_named_update_holds_its_feeds_against_the_poller(settings: Any, feed_server: FeedServer) -> None:
    """`aggregator update URL` (or --all) took no claim: the poller's round, starting
    meanwhile, fetched the same feeds again; a feed named is polled even when held."""
    body = rss([{"title": "Slow news", "guid": "1"}])
    feed_server.routes["/slow.xml"] = Route(handler=lambda h: _empty_feed(h, after=1.0, body=body))
    cli, poller = Aggregator(settings), Aggregator(settings)
    try:
        feed, _ = cli.add_feed(feed_server.url("/slow.xml"))
        out: dict[str, Any] = {}
        first = threading.Thread(target=lambda: out.setdefault("cli", cli.update([feed])))
        first.start()
        time.sleep(0.3)
        out["poller"] = poller.update()  # the feed is due (never polled), but held
        first.join()
        assert len(feed_server.hits("/slow.xml")) == 1
        assert [r.new_items for r in out["cli"]] == [1] and out["poller"] == []
        assert not poller.update()  # given back, and not due
        held = threading.Thread(target=lambda: out.setdefault("again", cli.update([feed])))
        held.start()
        time.sleep(0.3)
        (named,) = poller.update([feed])  # named: polled although the other update holds it
        held.join()
        assert named.status == "ok" and len(feed_server.hits("/slow.xml")) == 3
    finally:
        cli.close()
        poller.close()


def test_stopping_ends_the_fetches_under_way(agg: Aggregator, feed_server: FeedServer) -> None:
    """A poller told to stop waited for a slow host's fetch until its deadline (60 s by
    default); `aggregator run` killed it after 15 s, before it could say it stopped."""
    release = threading.Event()

    def stalled(h: Any) -> None:  # a host that accepts and then says nothing
        release.wait(30)

    feed_server.routes["/slow.xml"] = Route(handler=stalled)
    agg.add_feed(feed_server.url("/slow.xml"))
    out: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: out.setdefault("reports", agg.update()))
    runner.start()
    time.sleep(1.0)  # the fetch is under way
    stopped = time.monotonic()
    agg.stop()
    runner.join(20)
    took = time.monotonic() - stopped
    release.set()
    assert not runner.is_alive() and took < 5, took
    assert out["reports"] == []  # nothing stored: the feed stays due
    (feed,) = agg.feeds()
    assert feed.polls == 0


def test_a_ctrl_c_while_a_worker_boots_does_not_kill_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C reaches the whole process group, the parse workers too. One still importing
    (before it set SIGINT aside) died of it with a traceback, and the poller lost its
    pool. A worker is now started with SIGINT blocked."""
    import signal
    from concurrent.futures import ProcessPoolExecutor

    spawn = ProcessPoolExecutor._spawn_process  # type: ignore[attr-defined]

    def spawn_then_interrupt(self: ProcessPoolExecutor) -> None:
        known = set(self._processes)  # type: ignore[attr-defined]
        spawn(self)
        for pid in set(self._processes) - known:  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGINT)  # (it is still starting Python)

    monkeypatch.setattr(ProcessPoolExecutor, "_spawn_process", spawn_then_interrupt)
    cfg = tmp_path / "int.toml"
    cfg.write_text('[storage]\ndb_path = "i.db"\n[feeds]\nopml = ""\n[fetch]\nparse_workers = 1\n')
    with Aggregator(load_settings(cfg)) as agg:
        assert agg.start_workers()  # (BrokenProcessPool before)
        assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == set()  # this thread's mask is back


def test_a_parse_worker_starts_without_the_engine() -> None:
    """A worker process imports ``aggregator.prepare``; with the facade, numba and
    datasketch (scipy) behind it, it started in 1.2 s, and a worker stopped for a slow
    feed is started again mid-update."""
    import subprocess
    import sys

    heavy = ("aggregator.core", "aggregator.cluster", "numba", "datasketch", "scipy")
    code = f"import sys, aggregator.prepare; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
