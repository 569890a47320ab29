"""Long-running processes: the poller (APScheduler), the web server, and both together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from aggregator.core import POLLER_BEAT_SECONDS, Aggregator
from aggregator.settings import Settings, SettingsError

__all__ = ["run_all", "run_poller", "serve_web"]

log = logging.getLogger("aggregator.runner")


class _Stop(BaseException):
    """A stop signal, raised in the main thread.  Not an Exception: an ``except
    Exception`` around the code it interrupts (reading feeds.opml) swallowed it, and the
    signals it turns off left a poller nothing but SIGKILL stops."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    # Stop signals are ignored from the first on: Ctrl-C reaches the whole process group
    # and `aggregator run` sends SIGTERM as well, and a second _Stop raised inside the
    # shutdown (while it logged "poller stopping") printed a traceback.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise _Stop(signum)


def _ignore(handlers: dict[signal.Signals, Any]) -> None:
    """Once stopping: further stop signals change nothing (see :func:`_restore`)."""
    for s in handlers:
        signal.signal(s, signal.SIG_IGN)


def _restore(handlers: dict[signal.Signals, Any], stopped: bool) -> None:
    """The stop signals' old handlers back, unless a stop signal ended the run: the
    process is on its way out, and a second signal arriving after the clean-up (an
    impatient second SIGTERM, Ctrl-C reaching the whole process group) killed it
    with the default handler (exit -15) instead of the clean exit it was making."""
    if stopped:
        return
    for s, h in handlers.items():
        signal.signal(s, h)


class _SkippedTicks(logging.Filter):
    """The tick job runs every second and a round takes longer: APScheduler warned of
    each skipped tick (600 lines in a 10-minute round)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def run_poller(settings: Settings, db_path: Path) -> None:
    """Poll due feeds every ``schedule.tick_seconds``, and feeds an admin asked to poll
    now within a second, until SIGINT or SIGTERM.

    The schedule itself (each feed's next poll time, the polls asked for) lives in the
    database, so a restart loses nothing; APScheduler only drives the ticks, and a
    heartbeat that tells the site a poller is running (:meth:`Aggregator.poll_now`).
    """
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler_log = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _SkippedTicks) for f in scheduler_log.filters):
        scheduler_log.addFilter(_SkippedTicks())

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aggregator").setLevel(logging.INFO)
    # Stop signals are handled from the start: the index rebuild takes half a minute at a
    # million items, and a SIGTERM meanwhile killed the poller without its clean-up.
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    stopped = False
    agg: Aggregator | None = None
    beat: Aggregator | None = None
    scheduler = BackgroundScheduler(timezone="UTC")
    try:
        agg = Aggregator(settings, db_path=db_path)
        # Its own connection: the heartbeat runs in another thread while a tick writes.
        beat = Aggregator(settings, db_path=db_path, migrate=False)
        added = agg.subscribe_defaults()
        if added:
            log.info("subscribed to %d feed(s) from %s", added, settings.feeds.opml)
        if agg.start_workers():
            log.info("started %d parse worker process(es)", settings.fetch.parse_workers)
        poller, beating = agg, beat

        def heartbeat() -> None:
            try:
                beating.heartbeat()
            except Exception:
                log.exception("heartbeat failed")

        # From now on the site leaves "Poll now" to this process (done once the index is built).
        scheduler.add_job(
            heartbeat,
            "interval",
            seconds=POLLER_BEAT_SECONDS,
            id="heartbeat",
            max_instances=1,
            coalesce=True,
            next_run_time=_now_dt(),
        )
        scheduler.start()
        indexed = agg.rebuild_index()
        log.info("index rebuilt: %d item(s) in the time window", indexed)
        next_round = [0.0]  # time.monotonic() of the next look for due feeds

        def tick() -> None:
            try:
                if time.monotonic() < next_round[0] and not poller.poll_requested():
                    return
                next_round[0] = time.monotonic() + settings.schedule.tick_seconds
                reports = poller.update()
                if reports:
                    log.info(
                        "tick: polled %d feed(s), %d new item(s)",
                        len(reports),
                        sum(r.new_items for r in reports),
                    )
            except Exception:
                log.exception("tick failed")

        scheduler.add_job(
            tick, "interval", seconds=1, id="tick", max_instances=1, coalesce=True, next_run_time=_now_dt()
        )
        log.info(
            "poller started: due feeds every %d s, feeds asked for at once", settings.schedule.tick_seconds
        )
        while True:
            time.sleep(3600)
    except (_Stop, KeyboardInterrupt):
        stopped = True
        log.info("poller stopping")
    finally:
        _ignore(previous)  # a second Ctrl-C or SIGTERM must not cut the shutdown short
        if agg is not None:
            agg.stop()  # a round under way ends now: fetches under way are cut
        if scheduler.running:
            scheduler.shutdown(wait=True)
        if beat is not None:
            beat.heartbeat(running=False)  # the site polls by itself again
            beat.close()
        if agg is not None:
            agg.close()
        _restore(previous, stopped)


def _now_dt() -> datetime:
    return datetime.now(UTC)


WEB_THREADS = 4


def web_workers() -> int:
    """Web server processes: ``AGGREGATOR_WEB_WORKERS``, else one per core (at least 2, at most 8)."""
    return _env_count("AGGREGATOR_WEB_WORKERS") or min(8, max(2, os.cpu_count() or 1))


def _env_count(name: str) -> int | None:
    """A whole number from 1 to 256 in environment variable ``name``; None if unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise SettingsError(f"{name} must be a whole number from 1 to 256, not {raw!r}")
    return int(raw)


def serve_web(
    settings: Settings,
    db_path: Path,
    host: str,
    port: int,
    *,
    workers: int | None = None,
    threads: int | None = None,
) -> None:
    """Serve the site with gunicorn, a production WSGI server, until SIGINT or SIGTERM.

    ``workers`` processes (default :func:`web_workers`) of ``threads`` threads each
    (default ``AGGREGATOR_WEB_THREADS`` or 4), so every core serves pages; each
    thread keeps one SQLite connection (see :func:`web.get_reader`).  The app is
    made here, in the parent, before the workers fork: migrations run once and
    every worker shares its start time, hence the same ETags.
    """
    from web import create_app

    app = create_app(settings=settings, db_path=db_path)
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:  # not a Unix: waitress, one process
        import waitress

        print(f"serving on http://{host}:{port}", flush=True)
        waitress.serve(app, host=host, port=port, threads=8, ident="aggregator", _quiet=True)
        return
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers or web_workers(),
        "worker_class": "gthread",
        "threads": threads or _env_count("AGGREGATOR_WEB_THREADS") or WEB_THREADS,
        "keepalive": 5,
        "timeout": 120,  # a worker silent this long is restarted
        "graceful_timeout": 10,  # within run_all's 15 s
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "aggregator-web",
        "control_socket_disable": True,  # gunicorn >= 24: no shared socket in ~/.gunicorn
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    print(f"serving on http://{bind} ({options['workers']} x {options['threads']} threads)", flush=True)
    Server().run()


def run_all(config_path: Path | None, db_path: Path, host: str, port: int) -> int:
    """Start the poller and the web server as two processes; stop both on Ctrl-C/SIGTERM."""
    # Create and migrate the database once, before two processes would race to do it.
    from aggregator.settings import load_settings

    Aggregator(load_settings(config_path), db_path=db_path).close()
    base = [sys.executable, "-m", "aggregator"]
    opts = ["--db", str(db_path)]
    if config_path is not None:
        opts += ["--config", str(config_path)]
    poller = subprocess.Popen([*base, "poll", *opts])
    web = subprocess.Popen([*base, "serve", *opts, "--host", host, "--port", str(port)])
    children = [poller, web]
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    stopped = False
    code = 0
    try:
        while all(c.poll() is None for c in children):
            time.sleep(0.2)
        code = next(c.returncode for c in children if c.returncode is not None) or 1
        print("a process stopped unexpectedly; stopping the other", file=sys.stderr)
    except (_Stop, KeyboardInterrupt):
        code = 0
        stopped = True
    finally:
        _ignore(previous)
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for c in children:
            try:
                c.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        _restore(previous, stopped)
    return code
