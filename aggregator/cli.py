"""The ``aggregator`` command line."""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from aggregator import settings as settings_mod
from aggregator.core import Aggregator, CorrectionError, FeedError, RulesChanged
from aggregator.opml import OpmlError
from aggregator.settings import Settings, SettingsError, load_settings

F = TypeVar("F", bound=Callable[..., Any])


# ``--config`` and ``--db``: before the command (``aggregator --config c.toml run``) or after it.
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Settings file (default: ./config.toml, else the one beside the code).",
)
db_option = click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite database (default: storage.db_path of the config).",
)


def common_options(func: F) -> F:
    """``--config`` and ``--db``, accepted by every command."""

    @config_option
    @db_option
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: Path | None, db_path: Path | None, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        obj = ctx.ensure_object(dict)
        config_path = config_path or obj.get("config_path")
        db_path = db_path or obj.get("db_path")
        try:
            settings = load_settings(config_path)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        obj["settings"] = settings
        obj["config_path"] = config_path
        obj["db_path"] = db_path if db_path is not None else settings.db_path
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _settings() -> Settings:
    s: Settings = click.get_current_context().obj["settings"]
    return s


def _db_path() -> Path:
    p: Path = click.get_current_context().obj["db_path"]
    return p


def _open(create: bool = False) -> Aggregator:
    """The aggregator on the chosen database.  Commands that only read or change what is
    there (``create`` False) do not make a missing database: a mistyped ``--db`` showed
    an empty aggregator, and left an empty database (and its folders) behind."""
    path = _db_path()
    if not create and str(path) != ":memory:" and not path.exists():
        raise click.ClickException(
            f"no database at {path} (yet): `aggregator add URL`, `import-opml` or `run` makes it"
        )
    try:
        return Aggregator(_settings(), db_path=_db_path())
    except Exception as exc:
        raise click.ClickException(f"cannot open database {_db_path()}: {exc}") from None


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


class _Commands(click.Group):
    """The command group: a database or file problem is an error message, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sqlite3.OperationalError as exc:
            hint = (
                " (another process holds it, or it is read-only)"
                if "locked" in str(exc) or "readonly" in str(exc)
                else ""
            )
            raise click.ClickException(f"database error: {exc}{hint}") from None
        except sqlite3.Error as exc:
            raise click.ClickException(f"database error: {exc}") from None
        except SettingsError as exc:  # (an environment variable read late, as by `serve`)
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `aggregator feeds | head`: the reader has what it wanted
            # (what is left in the buffer goes nowhere, instead of failing again at exit)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except OSError as exc:
            raise click.ClickException(
                f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
            ) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@db_option
@click.option("-v", "--verbose", is_flag=True, help="Log every poll.")
@click.version_option(package_name="aggregator")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, db_path: Path | None, verbose: bool) -> None:
    """A deduplicating news feed aggregator: one story per cluster, every outlet's variant."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["db_path"] = db_path
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@cli.command()
@click.argument("url")
@click.option("--title", default=None, help="Name to show until the feed gives its own.")
@common_options
def add(url: str, title: str | None) -> None:
    """Subscribe to a feed URL (or a local feed file)."""
    with _open(create=True) as agg:
        try:
            feed, new = agg.add_feed(url, title)
        except FeedError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{'added' if new else 'already subscribed'}: {feed.url}")


@cli.command()
@click.argument("url")
@common_options
def remove(url: str) -> None:
    """Unsubscribe from a feed and delete its items."""
    with _open() as agg:
        try:
            removed = agg.remove_feed(url)
        except CorrectionError as exc:
            raise click.ClickException(f"not now: {exc}") from None
        if not removed:
            raise click.ClickException(f"no such feed: {url}")
    click.echo(f"removed: {url}")


@cli.command(context_settings={"ignore_unknown_options": True})  # "-5" is a bad interval, not an option
@click.argument("url")
@click.argument("minutes")
@common_options
def interval(url: str, minutes: str) -> None:
    """Poll a feed every MINUTES minutes, or `auto` (its own hints and the default)."""
    if minutes.strip().lower() == "auto":
        value = None
    else:
        try:
            value = float(minutes)
        except ValueError:
            raise click.BadParameter(
                f"{minutes!r} is not a number of minutes or 'auto'", param_hint="MINUTES"
            ) from None
    with _open() as agg:
        try:
            feed = agg.set_poll_interval(url, value)
        except FeedError as exc:
            raise click.ClickException(str(exc)) from None
    every = "automatic" if feed.poll_minutes is None else f"every {feed.poll_minutes:g} minutes"
    click.echo(f"{feed.display_name}: polled {every}; next poll {_when(feed.next_poll_at)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@common_options
def feeds(as_json: bool) -> None:
    """List feeds with their status."""
    with _open() as agg:
        rows = agg.feeds()
    if as_json:
        for f in rows:
            click.echo(
                json.dumps(
                    {**f.__dict__, "avg_fetch_ms": f.avg_fetch_ms, "not_modified_ratio": f.not_modified_ratio}
                )
            )
        return
    if not rows:
        click.echo("no feeds: add one with `aggregator add URL`")
        return
    click.echo(
        f"{'STATUS':<13} {'ITEMS':>5} {'LAST POLL':<16} {'NEXT POLL':<16} {'EVERY':>7} {'AVG MS':>7} "
        f"{'304%':>5}  FEED"
    )
    for f in rows:
        status = "paused" if f.paused else f.status
        avg = f"{f.avg_fetch_ms:.0f}" if f.avg_fetch_ms is not None else "-"
        ratio = f"{100 * f.not_modified_ratio:.0f}" if f.not_modified_ratio is not None else "-"
        # The interval in use; "=" marks one an admin set (`aggregator interval`).
        minutes = f.poll_minutes if f.poll_minutes is not None else f.interval_minutes
        every = "-" if minutes is None else f"{minutes:g}m" + ("=" if f.poll_minutes is not None else "")
        click.echo(
            f"{status:<13} {f.items_total:>5} {_when(f.last_polled_at):<16} {_when(f.next_poll_at):<16} "
            f"{every:>7} {avg:>7} {ratio:>5}  {f.display_name}"
        )
        if f.last_error:
            click.echo(f"{'':<13} error: {f.last_error}")
        if f.warning:
            click.echo(f"{'':<13} warning: {f.warning}")


@cli.command("import-opml")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common_options
def import_opml(file: Path) -> None:
    """Subscribe to every feed listed in an OPML file."""
    with _open(create=True) as agg:
        try:
            added, problems = agg.import_opml(file)
        except OpmlError as exc:
            raise click.ClickException(str(exc)) from None
    for p in problems:
        click.echo(f"skipped: {p}", err=True)
    click.echo(f"added {len(added)} feed(s)")


@cli.command("export-opml")
@common_options
def export_opml() -> None:
    """Print the subscriptions as OPML."""
    with _open() as agg:
        click.echo(agg.export_opml(), nl=False)


@cli.command()
@click.option("--all", "everything", is_flag=True, help="Poll every feed, due or not.")
@common_options
def update(everything: bool) -> None:
    """Poll every due feed once."""
    with _open(create=True) as agg:
        todo = [f for f in agg.feeds() if not f.paused and f.status != "gone"] if everything else None
        count = len(todo) if todo is not None else None
        with click.progressbar(length=count or len(agg.feeds()), label="polling", file=sys.stderr) as bar:
            reports = agg.update(todo, progress=lambda _r: bar.update(1))
    new = sum(r.new_items for r in reports)
    failed = [r for r in reports if r.status == "error"]
    click.echo(f"polled {len(reports)} feed(s): {new} new item(s), {len(failed)} error(s)")
    for r in failed:
        click.echo(f"  {r.feed_url}: {r.error}", err=True)
    broken = [r for r in failed if (r.error or "").startswith("internal error while storing")]
    if broken:  # not the feeds' fault: the database's (locked, read-only, full), or ours
        raise click.ClickException(f"{len(broken)} feed(s) could not be stored")


@cli.command()
@common_options
def recluster() -> None:
    """Assign every stored item to clusters again, with the current settings."""
    with _open() as agg:
        total = agg.counts()["items"]
        with click.progressbar(length=total, label="reclustering", file=sys.stderr) as bar:
            state = {"done": 0}

            def step(done: int, _total: int) -> None:
                bar.update(done - state["done"])
                state["done"] = done

            try:
                n = agg.recluster(step)
            except RulesChanged as exc:
                raise click.ClickException(str(exc)) from None
        click.echo(f"reclustered {n} item(s) into {agg.counts()['clusters']} cluster(s)")


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--sort", type=click.Choice(["latest", "coverage"]), default="latest", show_default=True)
@click.option("--min-outlets", default=1, show_default=True, type=click.IntRange(1, 1000))
@common_options
def clusters(limit: int, sort: str, min_outlets: int) -> None:
    """List story clusters, newest first."""
    with _open() as agg:
        for c in agg.clusters(limit=limit, sort=sort, min_outlets=min_outlets):
            click.echo(
                f"#{c.id:<6} {len(c.outlets)} outlet(s), {c.size} item(s)  {_when(c.last_seen)}  {c.canonical.title}"
            )
            click.echo(f"{'':8}{', '.join(c.outlets)}")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="File to write (default: stdout).",
)
@common_options
def export(fmt: str, output: Any) -> None:
    """Write every stored item with its cluster, one JSON object per line."""
    with _open() as agg:
        n = agg.export_jsonl(output)
    click.echo(f"exported {n} item(s)", err=True)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@common_options
def backup(path: Path) -> None:
    """Copy the database to PATH with SQLite's online backup (safe while polling)."""
    with _open() as agg:
        try:
            agg.backup(path)
        except Exception as exc:
            raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"backed up to {path}")


@cli.group()
def admin() -> None:
    """Manage admin accounts (for /admin on the site)."""


@admin.command("set-password")
@click.argument("name")
@click.password_option("--password", prompt="Password", help="The new password (asked for when omitted).")
@common_options
def admin_set_password(name: str, password: str) -> None:
    """Create the admin account NAME or change its password."""
    import time

    from aggregator.accounts import AccountError, set_password

    with _open(create=True) as agg:
        try:
            set_password(agg.db, name, password, time.time())
        except AccountError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"password set for {name}")


@admin.command("list")
@common_options
def admin_list() -> None:
    """List admin accounts."""
    from aggregator.storage import admin as admin_store

    with _open() as agg:
        for name in admin_store.names(agg.db):
            click.echo(name)


@admin.command("remove")
@click.argument("name")
@common_options
def admin_remove(name: str) -> None:
    """Remove the admin account NAME (its sessions end with it)."""
    from aggregator.accounts import remove_account

    with _open() as agg:
        if not remove_account(agg.db, name):
            raise click.ClickException(f"no such account: {name}")
    click.echo(f"removed {name}")


@cli.command("eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--assignments",
    type=click.File("w", encoding="utf-8"),
    default=None,
    help="Write {id, cluster} lines here.",
)
@common_options
def eval_command(file: Path, as_json: bool, assignments: Any) -> None:
    """Score clustering on labeled JSONL data (BCubed and pairwise P/R/F1 per dataset)."""
    from aggregator.evaluate import EvalError, run_eval

    live = sys.stderr.isatty()  # a counter in place on a terminal; one line per dataset in a log

    def progress(name: str, n: int, total: int) -> None:
        if as_json:
            return
        if live:
            click.echo(f"\r{name}: {n}/{total}", nl=False, err=True)
            if n == total:
                click.echo("", err=True)
        elif n == total:
            click.echo(f"{name}: {total} items", err=True)

    try:
        results = run_eval(file, _settings(), progress)
    except EvalError as exc:
        raise click.ClickException(str(exc)) from None
    if assignments is not None:
        for r in results:
            for rid, cid in r.assignments.items():
                assignments.write(json.dumps({"id": rid, "cluster": f"{r.dataset}:{cid}"}) + "\n")
    total_items = sum(r.records for r in results)
    total_secs = sum(r.seconds for r in results)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "datasets": [r.as_dict() for r in results],
                    "items_per_second": total_items / total_secs if total_secs else 0.0,
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{'dataset':<11} {'items':>6} {'stories':>7} {'clusters':>8} | {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6} | {'pair P':>6} {'pair R':>6} {'pair F1':>7} | {'items/s':>8}"
    )
    for r in results:
        b, p = r.scores["bcubed"], r.scores["pairwise"]
        click.echo(
            f"{r.dataset:<11} {r.records:>6} {r.stories:>7} {r.clusters:>8} | {b.precision:6.3f} {b.recall:6.3f} {b.f1:6.3f} | "
            f"{p.precision:6.3f} {p.recall:6.3f} {p.f1:7.3f} | {r.items_per_second:8.0f}"
        )
    click.echo(
        f"{total_items} items in {total_secs:.1f} s: {total_items / total_secs if total_secs else 0:.0f} items/s through normalize + fingerprint + cluster + store"
    )


@cli.command("settings")
@click.option("--markdown", is_flag=True, help="Print the settings reference (docs/settings.md).")
@common_options
def settings_command(markdown: bool) -> None:
    """Show the effective settings, or their documentation."""
    if markdown:
        click.echo(settings_mod.markdown_reference(), nl=False)
        return
    for key, value in _settings().as_dict().items():
        click.echo(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}")


def listen_options(func: F) -> F:
    """``--host`` and ``--port`` of the site, passed on as one ``(host, port)`` argument."""

    @click.option("--host", default=None, help="Address to listen on (default: web.host).")
    @click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port (default: web.port).")
    @functools.wraps(func)
    def wrapper(*args: Any, host: str | None, port: int | None, **kwargs: Any) -> Any:
        s = _settings()
        return func(*args, listen=(host or s.web.host, port or s.web.port), **kwargs)

    return wrapper  # type: ignore[return-value]


@cli.command()
@common_options
@listen_options
def serve(listen: tuple[str, int]) -> None:
    """Serve the site (no polling: run `aggregator poll` or `aggregator run` for that)."""
    from aggregator.runner import serve_web

    serve_web(_settings(), _db_path(), *listen)


@cli.command()
@common_options
def poll() -> None:
    """Run the scheduler: poll due feeds every tick until stopped."""
    from aggregator.runner import run_poller

    run_poller(_settings(), _db_path())


@cli.command()
@common_options
@listen_options
def run(listen: tuple[str, int]) -> None:
    """Poll feeds and serve the site, as two processes, until Ctrl-C."""
    from aggregator.runner import run_all

    obj = click.get_current_context().obj
    sys.exit(run_all(obj.get("config_path"), _db_path(), *listen))


def main() -> None:
    cli(prog_name="aggregator")
