from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from aggregator.settings import (
    Settings,
    SettingsError,
    definitions,
    load_settings,
    markdown_reference,
    toml_template,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""))
    assert s.cluster.num_perm == 128
    assert s.db_path == tmp_path / "data" / "aggregator.db"
    s = load_settings(write(tmp_path, '[storage]\ndb_path = "/abs/x.db"\n'))
    assert s.db_path == Path("/abs/x.db")


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""))
    with pytest.raises(AttributeError):
        s.cluster.num_perm = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cluster]\nnum_perm = 4\n", "below the minimum"),
        ("[cluster]\njoin_threshold_long = 7\n", "above the maximum"),
        ("[cluster]\nnum_perm = 'many'\n", "expected an integer"),
        ("[cluster]\nnum_perm = 12.5\n", "whole number"),
        ("[cluster]\ncanonical_policy = 'random'\n", "not one of"),
        ("[cluster]\nno_such = 1\n", "unknown setting 'cluster.no_such'"),
        ("[nosection]\nx = 1\n", "unknown section [nosection]"),
        ("[cluster\n", "not valid TOML"),
        ("[feeds]\nallow_local_files = 'maybe'\n", "expected true or false"),
        ("[cluster]\npreferred_sources = 'x'\n", None),
        ("[cluster]\npreferred_sources = [1, 2]\n", "list of strings"),
        ("[fetch]\nconnect_timeout = nan\n", "finite"),
        ("[cluster]\nnum_perm = inf\n", "expected an integer"),  # was an OverflowError
        ('[fetch]\nuser_agent = "bot\\r\\nX-Evil: 1"\n', "control characters"),
        ('[cluster]\npreferred_sources = ["a\\u0000b"]\n', "control characters"),
        (f'[cluster]\npreferred_sources = ["{"x" * 301}"]\n', "more than 300"),
        (f"[cluster]\npreferred_sources = {[str(n) for n in range(101)]}\n", "at most 100"),
        ('[web]\nbase_url = "news.example.org"\n', "http(s) address"),
        ('[web]\nbase_url = "ftp://news.example.org"\n', "http(s) address"),
        ('[web]\nhost = ""\n', "must be an IP address or a host name"),
        ('[web]\nhost = "not a host!"\n', "must be an IP address or a host name"),
        ('[web]\nhost = "http://example.org"\n', "must be an IP address or a host name"),
        ("[schedule]\nmin_interval_minutes = 600\nmax_interval_minutes = 10\n", "at least min_interval"),
        ("[schedule]\ndefault_interval_minutes = 2\n", "must lie between"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, text: str, message: str | None) -> None:
    path = write(tmp_path, text)
    if message is None:
        assert load_settings(path).cluster.preferred_sources == ("x",)
        return
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_replace_validates() -> None:
    s = Settings()
    assert s.replace({"cluster.join_threshold_long": "0.3"}).cluster.join_threshold_long == 0.3
    with pytest.raises(SettingsError):
        s.replace({"cluster.join_threshold_long": "lots"})


def test_every_setting_is_documented_in_config_toml() -> None:
    """config.toml sets every setting, each with a comment right above it."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    lines = text.splitlines()
    for d in definitions():
        assert d.doc.strip(), f"{d.key} has no documentation"
        assert d.name in data[d.section], f"{d.key} missing from config.toml"
        n = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(d.name)}\s*=", line))
        assert lines[n - 1].startswith("#"), f"{d.key} has no comment in config.toml"


def test_config_toml_is_valid_and_matches_defaults() -> None:
    s = load_settings(ROOT / "config.toml")
    for d in definitions():
        if not d.path:
            assert s.get(d.key) == d.default, d.key
    assert toml_template() == (ROOT / "config.toml").read_text(encoding="utf-8")


def test_docs_reference_is_current() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert doc == markdown_reference(), "run `make docs` to regenerate docs/settings.md"
    for d in definitions():
        assert f"`{d.name}`" in doc


def test_cross_setting_rules(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="may not exceed num_perm"):
        Settings().replace({"cluster.lsh_bands": 64, "cluster.lsh_rows": 4})
    with pytest.raises(SettingsError, match="must be more than short_terms"):
        load_settings(write(tmp_path, "[cluster]\nshort_terms = 30\nlong_terms = 20\n"))
    assert Settings().problems() == {}


def test_list_entries_are_trimmed_alike_from_the_file_and_a_form(tmp_path: Path) -> None:
    """An unchanged settings form must not count as a change (it did, and split entries)."""
    from_file = load_settings(
        write(tmp_path, '[cluster]\npreferred_sources = [" The Harbour Post ", " ", "b"]\n')
    )
    assert from_file.cluster.preferred_sources == ("The Harbour Post", "b")
    assert Settings().replace(
        {"cluster.preferred_sources": " The Harbour Post \n\nb"}
    ).cluster.preferred_sources == (
        "The Harbour Post",
        "b",
    )


def test_no_config_file_means_defaults_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aggregator.settings as mod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mod, "default_config_path", lambda: tmp_path / "nowhere" / "config.toml")
    s = load_settings()
    assert s.db_path == tmp_path / "data" / "aggregator.db"
