from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import cli
from tests.conftest import ROOT


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.toml"
    cfg.write_text('[storage]\ndb_path = "cli.db"\n[feeds]\nopml = ""\n')

    def invoke(*args: str, ok: bool = True) -> str:
        result = CliRunner().invoke(cli, [*args, "--config", str(cfg)])
        if ok:
            assert result.exit_code == 0, result.output
        return result.output

    return invoke


def test_every_command_takes_config_and_db() -> None:
    import click

    def leaves(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
        out: list[tuple[str, click.Command]] = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                out += leaves(command, f"{prefix}{name} ")
            else:
                out.append((prefix + name, command))
        return out

    commands = leaves(cli)
    assert len(commands) >= 15
    for name, command in commands:
        opts = {o for p in command.params for o in p.opts}
        assert {"--config", "--db"} <= opts, name


def test_admin_accounts(run) -> None:  # type: ignore[no-untyped-def]
    assert "password set for alice" in run(
        "admin", "set-password", "alice", "--password", "a long enough password"
    )
    assert run("admin", "list").strip() == "alice"
    assert "no such account: bob" in run("admin", "remove", "bob", ok=False)
    assert "removed alice" in run("admin", "remove", "alice")
    assert run("admin", "list").strip() == ""
    assert "password set for alice" in run(
        "admin", "set-password", "alice", "--password", "a long enough password"
    )
    assert "at least 10 characters" in run("admin", "set-password", "bob", "--password", "short", ok=False)
    for bad in ("bad name!", "dave\n"):  # (a trailing newline passed, and could never log in)
        assert "account names" in run(
            "admin", "set-password", bad, "--password", "a long enough password", ok=False
        )


def test_feed_lifecycle(run, demo_feeds: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert "added 6 feed(s)" in run("import-opml", str(demo_feeds / "demo.opml"))
    assert "already subscribed" in run("add", str(demo_feeds / "feeds" / "northwire.rss.xml"))
    out = run("update")
    assert "polled 6 feed(s): 44 new item(s), 0 error(s)" in out
    listing = run("feeds")
    assert "Northwire" in listing and "ok" in listing
    stories = run("clusters", "--limit", "100")
    assert "Putin" in stories
    exported = [
        json.loads(line) for line in run("export", "--format", "jsonl").splitlines() if line.startswith("{")
    ]
    assert len(exported) == 44
    assert {"item_id", "feed", "link", "title", "published", "cluster_id", "canonical"} <= set(exported[0])
    assert sum(r["canonical"] for r in exported) == len({r["cluster_id"] for r in exported})
    northwire = str(demo_feeds / "feeds" / "northwire.rss.xml")
    assert "polled every 10 minutes; next poll" in run("interval", northwire, "10")
    row = next(line for line in run("feeds").splitlines() if "Northwire" in line)
    assert "10m=" in row
    assert "between 5 and 1440 minutes" in run("interval", northwire, "2", ok=False)
    assert "between 5 and 1440 minutes" in run("interval", northwire, "-5", ok=False)  # not an option
    assert "not a number of minutes or 'auto'" in run("interval", northwire, "often", ok=False)
    assert "no such feed" in run("interval", "https://nope.example/", "10", ok=False)
    assert "polled automatic" in run("interval", northwire, "auto")
    assert "10m=" not in run("feeds")
    assert "reclustered 44 item(s)" in run("recluster")
    opml = run("export-opml")
    assert opml.count("<outline") == 6
    assert "removed" in run("remove", str(demo_feeds / "feeds" / "northwire.rss.xml"))
    assert run("feeds").count("\n") == 6  # header + 5 feeds
    assert "not_modified" in run("feeds", "--json") or "ok" in run("feeds", "--json")


def test_clear_errors(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert "not an http(s) URL" in run("add", "gopher://x", ok=False)
    assert "no such file" in run("add", str(tmp_path / "nope.xml"), ok=False)
    assert "no such feed" in run("remove", "https://nope.example/", ok=False)
    bad = tmp_path / "bad.opml"
    bad.write_text("not opml")
    assert "no feeds found" in run("import-opml", str(bad), ok=False)
    broken_cfg = tmp_path / "broken.toml"
    broken_cfg.write_text("[cluster]\nnum_perm = 'x'\n")
    result = CliRunner().invoke(cli, ["feeds", "--config", str(broken_cfg)])
    assert result.exit_code == 1 and "cluster.num_perm" in result.output
    notdb = tmp_path / "x.db"
    notdb.write_bytes(b"garbage" * 1000)
    result = CliRunner().invoke(cli, ["feeds", "--db", str(notdb)])
    assert result.exit_code == 1 and "cannot open database" in result.output


def test_a_database_or_file_problem_is_a_message_not_a_traceback(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from aggregator.core import Aggregator

    # reading a database that is not there says so, and makes none (a mistyped --db)
    missing = tmp_path / "typo" / "cli.db"
    for args in (["feeds"], ["clusters"], ["export"], ["remove", "x"], ["admin", "list"]):
        result = CliRunner().invoke(
            cli, [*args, "--config", str(tmp_path / "config.toml"), "--db", str(missing)]
        )
        assert result.exit_code == 1 and f"no database at {missing}" in result.output, args
    assert not missing.parent.exists()
    run("update")  # creates cli.db
    # A backup onto the live database would swap the file under running processes.
    assert "is the database itself" in run("backup", str(tmp_path / "cli.db"), ok=False)
    assert "is the database itself" in run("backup", str(tmp_path / "cli.db-wal"), ok=False)

    def locked(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Aggregator, "add_feed", locked)
    result = CliRunner().invoke(
        cli, ["add", "https://a.example/feed", "--config", str(tmp_path / "config.toml")]
    )
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "database error: database is locked (another process holds it" in result.output

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", "/dev/full")

    monkeypatch.setattr(Aggregator, "export_jsonl", full)
    assert "No space left on device: /dev/full" in run("export", "-o", "/dev/full", ok=False)


def test_settings_command(run) -> None:  # type: ignore[no-untyped-def]
    assert "cluster.num_perm = 128" in run("settings")
    assert "# Settings" in run("settings", "--markdown")


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "aggregator", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    for command in (
        "add",
        "remove",
        "feeds",
        "import-opml",
        "export-opml",
        "update",
        "recluster",
        "clusters",
        "export",
        "eval",
        "serve",
        "run",
    ):
        assert command in out
    assert (ROOT / "aggregator" / "__main__.py").exists()


def test_package_data_covers_every_template_and_static_file() -> None:
    """An installed package (not only a checkout) carries web/ templates, static files and migrations."""
    import fnmatch
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"aggregator", "aggregator.storage", "web", "migrations"} <= set(conf["packages"])
    patterns = conf["package-data"]["web"]
    files = [
        p.relative_to(ROOT / "web").as_posix()
        for p in (ROOT / "web").rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert files
    missing = [
        f
        for f in files
        if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)
    ]
    assert not missing, f"not packaged: {missing}"


def test_feeds_show_a_feeds_warning(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.xml"  # an unescaped "&": not XML, but its entry can be read
    broken.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Chippy</title>'
        "<item><title>Fish & chips prices rise</title><guid>c1</guid>"
        "<description>Cod costs more this winter.</description></item></channel></rss>"
    )
    run("add", str(broken))
    assert "1 new item(s), 0 error(s)" in run("update")
    listing = run("feeds")
    assert "warning: malformed feed, read leniently" in listing, listing


def test_output_cut_short_by_the_reader_is_no_error(tmp_path: Path) -> None:
    """`aggregator feeds | head -1` printed "Error: Broken pipe" and exited 1."""
    from aggregator import Aggregator
    from aggregator.settings import load_settings

    cfg = tmp_path / "config.toml"
    cfg.write_text('[storage]\ndb_path = "many.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n')
    outlines = "".join(f'<outline type="rss" xmlUrl="http://127.0.0.1:9/{n}.xml"/>' for n in range(3000))
    with Aggregator(load_settings(cfg)) as agg:  # more lines than a pipe holds
        agg.import_opml(f"<opml version='2.0'><body>{outlines}</body></opml>".encode())
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "feeds", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert os.read(proc.stdout.fileno(), 10)
    proc.stdout.close()  # as `head -1` does
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert code == 0 and "Error" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", ["AGGREGATOR_WEB_WORKERS", "AGGREGATOR_WEB_THREADS"])
def test_a_bad_server_size_is_a_message_not_a_traceback(tmp_path: Path, name: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[storage]\ndb_path = "w.db"\n[feeds]\nopml = ""\n[web]\nport = 1\n')
    result = CliRunner().invoke(cli, ["serve", "--config", str(cfg)], env={name: "abc"})
    assert (
        result.exit_code == 1 and f"{name} must be a whole number from 1 to 256, not 'abc'" in result.output
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)
