"""Settings as data: one definition per setting, read from ``config.toml`` in one place.

Every setting is a field of a frozen section dataclass below.  The field's
metadata carries its documentation, its range or choices, and whether admins may
change it at run time.  The same definitions drive ``config.toml`` validation,
the admin settings form and ``docs/settings.md`` (``aggregator settings --markdown``).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "SettingDef",
    "Settings",
    "SettingsError",
    "default_config_path",
    "definitions",
    "load_settings",
]

PROJECT_URL = "https://github.com/the-aggregator/aggregator"
MAX_LIST_ENTRIES = 100
MAX_LIST_ENTRY_CHARS = 300
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class SettingsError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def setting(
    default: Any,
    doc: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    admin: bool = False,
    path: bool = False,
) -> Any:
    """Declare one setting: its default, documentation and constraints."""
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "admin": admin, "path": path}
    if isinstance(default, list):
        frozen = tuple(default)
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StorageSettings:
    db_path: str = setting(
        "data/aggregator.db",
        "SQLite database file. Relative paths are taken from the config file's folder.",
        path=True,
    )


@dataclass(frozen=True)
class FeedSettings:
    opml: str = setting(
        "examples/demo.opml",
        "OPML file whose feeds are subscribed when the database has no feeds yet "
        "(the bundled demo). Empty string: start with no feeds.",
        path=True,
    )
    allow_private_addresses: bool = setting(
        False,
        "Allow feeds (and the redirects they follow) to point at loopback, link-local or "
        "private network addresses. Leave off on a public server; turn on for intranet feeds.",
    )
    allow_local_files: bool = setting(
        True,
        "Allow feeds that are local files or file: URLs (the bundled demo uses them). "
        "Only the command line may add them, never the site.",
    )


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = setting(10.0, "Seconds to wait for a TCP/TLS connection.", min=0.1, max=120)
    read_timeout: float = setting(
        20.0, "Seconds to wait for each chunk of a response body.", min=0.1, max=300
    )
    total_timeout: float = setting(
        60.0,
        "Seconds one fetch may take in all, however slowly bytes trickle in.",
        min=1,
        max=600,
    )
    max_bytes: int = setting(
        10_000_000,
        "Largest feed body accepted, after decompression, in bytes.",
        min=1_000,
        max=500_000_000,
    )
    max_redirects: int = setting(5, "Redirects followed before giving up.", min=0, max=20)
    parse_workers: int = setting(
        1,
        "Worker processes that parse and fingerprint fetched feeds while the main process "
        "clusters and stores them (one per spare core). 0: everything in one process.",
        min=0,
        max=64,
    )
    max_items: int = setting(
        1000,
        "Entries read from one feed document; a feed listing more keeps its first (newest) "
        "ones and gets a warning.",
        min=1,
        max=1_000_000,
    )
    user_agent: str = setting(
        f"the-aggregator/0.1 (+{PROJECT_URL})",
        "User-Agent header sent with every request; names the project and its URL.",
    )
    max_concurrency: int = setting(8, "Feeds fetched at the same time, overall.", min=1, max=256)
    per_host_concurrency: int = setting(2, "Feeds fetched at the same time from one host.", min=1, max=64)


@dataclass(frozen=True)
class ScheduleSettings:
    tick_seconds: int = setting(30, "How often the poller looks for feeds that are due.", min=1, max=3600)
    default_interval_minutes: float = setting(
        30.0, "Polling interval for a feed that says nothing about its own.", min=1, max=10080
    )
    min_interval_minutes: float = setting(
        5.0,
        "Shortest interval, whatever a feed's ttl or Cache-Control asks for.",
        min=1,
        max=10080,
    )
    max_interval_minutes: float = setting(
        1440.0, "Longest interval between two polls of a working feed.", min=1, max=43200
    )
    jitter: float = setting(
        0.1,
        "Random spread added to each interval, as a fraction of it, so polls do not bunch.",
        min=0,
        max=1,
    )
    backoff_max_minutes: float = setting(
        720.0, "Cap of the exponential back-off after failures.", min=1, max=43200
    )
    broken_after_hours: float = setting(
        72.0,
        "A feed failing without a break for this long is marked broken and polled only at the back-off cap.",
        min=0.1,
        max=8760,
    )


@dataclass(frozen=True)
class ClusterSettings:
    num_perm: int = setting(
        128,
        "MinHash permutations per signature. More estimates similarity better and costs "
        "more; a change re-fingerprints every item on the next recluster.",
        min=16,
        max=512,
        admin=True,
    )
    lsh_bands: int = setting(
        16,
        "LSH bands b. Two items become candidates when all rows of any one band agree; "
        "with r rows, pairs above a Jaccard similarity of about (1/b)^(1/r) usually do. "
        "More bands: more candidates (recall), more verification work.",
        min=2,
        max=256,
        admin=True,
    )
    lsh_rows: int = setting(
        1,
        "LSH rows per band r (bands x rows may not exceed num_perm). More rows: fewer, "
        "closer candidates. Headlines of one story often share one word, which r = 2 misses.",
        min=1,
        max=32,
        admin=True,
    )
    lsh_max_bucket: int = setting(
        50,
        "LSH buckets holding more items than this are skipped when looking for candidates: "
        "a min-hash value shared by that many items says nothing about the story. "
        "Keeps the cost flat as the window fills.",
        min=10,
        max=10_000_000,
        admin=True,
    )
    max_candidate_clusters: int = setting(
        32,
        "At most this many candidate clusters are verified per item, those whose members share "
        "the most LSH bands with it. Bounds the cost per item however full the window is.",
        min=1,
        max=100000,
        admin=True,
    )
    title_weight: float = setting(
        2.0,
        "Weight of a headline word relative to the first word of the body.",
        min=0,
        max=10,
        admin=True,
    )
    lead_words: float = setting(
        100.0,
        "Body words weigh exp(-position / lead_words): the lead names the event, the tail "
        "is background that look-alike stories share.",
        min=1,
        max=10000,
        admin=True,
    )
    max_body_words: int = setting(
        300, "Body words read at all (bounds the cost of long articles).", min=0, max=100000, admin=True
    )
    entity_boost: float = setting(
        3.0,
        "Multiplier for names (words capitalised mid-sentence, short acronyms): who and "
        "where tell two look-alike events apart. 1 turns it off.",
        min=1,
        max=10,
        admin=True,
    )
    fingerprint_body_words: int = setting(
        60,
        "Body words whose terms join the headline's in the MinHash token set.",
        min=0,
        max=10000,
        admin=True,
    )
    max_terms: int = setting(
        64,
        "An item's vector keeps its this many heaviest terms (after IDF): the rest barely "
        "move a cosine, and dropping them bounds the cost of each comparison.",
        min=8,
        max=100000,
        admin=True,
    )
    idf_power: float = setting(
        2.0,
        "Exponent of the IDF factor. Higher lets rare, story-specific words (names, places, "
        "numbers) outweigh topic words that look-alike stories share.",
        min=0,
        max=5,
        admin=True,
    )
    max_term_weight: float = setting(
        0.6,
        "No single term may carry more than this share of an item's vector, so one shared "
        "rare name cannot make two stories one.",
        min=0.1,
        max=1.0,
        admin=True,
    )
    join_threshold_short: float = setting(
        0.10,
        "Verification threshold for a bare headline (short_terms terms or fewer): the "
        "cosine to a cluster's centroid needed to join it. Higher: fewer false merges, "
        "more missed ones.",
        min=0.0,
        max=1.0,
        admin=True,
    )
    join_threshold_long: float = setting(
        0.40,
        "Verification threshold for an article (long_terms terms or more); between short "
        "and long the threshold grows with log(terms).",
        min=0.0,
        max=1.0,
        admin=True,
    )
    short_terms: int = setting(
        10,
        "Items with at most this many distinct terms count as bare headlines.",
        min=1,
        max=1000,
        admin=True,
    )
    long_terms: int = setting(
        25, "Items with at least this many distinct terms count as articles.", min=2, max=10000, admin=True
    )
    name_mismatch_factor: float = setting(
        0.5,
        "An article's score against a cluster is multiplied by this when the article's main "
        "name (its most weighted capitalised term) is absent from the cluster and the "
        "cluster's main name is absent from the article: the same kind of event with another "
        "protagonist (two DUI arrests, two casting announcements). Articles only; 1 turns it off.",
        min=0.0,
        max=1.0,
        admin=True,
    )
    cold_start_items: int = setting(
        20,
        "While the time window holds fewer items than this, document frequencies cannot tell "
        "a common word from a name, so joining a cluster also takes at least two shared terms "
        "(two headlines sharing only 'story' are not one story). 0 turns it off.",
        min=0,
        max=100000,
        admin=True,
    )
    merge_ratio: float = setting(
        0.75,
        "Two clusters an item matches both merge when their centroids' cosine reaches "
        "merge_ratio x the geometric mean of their cohesion. Higher merges less; 10 never merges.",
        min=0.1,
        max=10,
        admin=True,
    )
    max_term_share: float = setting(
        0.7,
        "An article's score against a cluster counts its largest single term product for at "
        "most this share of the score (the rest must carry the remainder): one shared name, "
        "however heavy, is not a story. Bare headlines are exempt (their few words often meet "
        "in one name), log-linearly in between. 1 turns it off.",
        min=0.3,
        max=1.0,
        admin=True,
    )
    adopt_max_size: int = setting(
        1,
        "When an item joins a cluster, a candidate cluster of at most this many items joins "
        "the grown cluster too if its items, scored against it now, would pass the join "
        "threshold: a story's first report, which the second report scored just under the "
        "bar, is not left alone once the story grows. 0 turns it off.",
        min=0,
        max=1000,
        admin=True,
    )
    recency_half_life_hours: float = setting(
        6.0,
        "For a bare headline, a cluster's score halves for every this many hours between the "
        "item and the cluster's latest item: a story is a burst of coverage.",
        min=0.1,
        max=10000,
        admin=True,
    )
    recency_half_life_long_hours: float = setting(
        48.0,
        "The recency half-life for an article (long_terms terms or more); between a headline "
        "and an article it grows log-linearly. Words say more than time about a long item.",
        min=0.1,
        max=10000,
        admin=True,
    )
    recency_grace_hours: float = setting(
        0.0,
        "Gaps up to this many hours between an item and a cluster's latest item cost nothing; "
        "the recency half-life applies to the rest of the gap.",
        min=0,
        max=10000,
        admin=True,
    )
    near_copy_jaccard: float = setting(
        0.8,
        "Estimated Jaccard similarity of token sets above which an item joins the cluster "
        "of its near-copy outright. Above 1 turns it off.",
        min=0.5,
        max=1.01,
        admin=True,
    )
    near_copy_min_tokens: int = setting(
        8,
        "Token sets smaller than this never count as near-copies (two identical generic "
        "headlines are not one story).",
        min=1,
        max=1000,
        admin=True,
    )
    time_window_hours: float = setting(
        72.0,
        "A story spans at most this many hours: an item joins a cluster only if it is within "
        "this many hours of all its members (a subject that never goes away, such as a "
        "frequently named person, makes new stories rather than one that grows for weeks); "
        "older items leave the LSH index, so the cost stays flat as the archive grows.",
        min=1,
        max=8760,
        admin=True,
    )
    late_arrival_hours: float = setting(
        72.0,
        "Items may arrive this many hours after newer ones (a feed's backlog, a slow outlet) "
        "and still find their story: the index keeps items this much longer than the time window.",
        min=0,
        max=8760,
        admin=True,
    )
    canonical_policy: str = setting(
        "most_complete",
        "Which member represents a cluster: earliest (first published), most_complete "
        "(longest text), or preferred (first of preferred_sources, else most_complete).",
        choices=("earliest", "most_complete", "preferred"),
        admin=True,
    )
    preferred_sources: tuple[str, ...] = setting(
        [],
        "Feed titles or URLs in order of preference, for canonical_policy = preferred.",
        admin=True,
    )


@dataclass(frozen=True)
class WebSettings:
    host: str = setting(
        "127.0.0.1",
        'Address the site listens on (an IP address or a host name; "0.0.0.0" for every '
        "interface: the admin pages are then reachable from other machines too).",
    )
    port: int = setting(8000, "Port the site listens on.", min=1, max=65535)
    page_size: int = setting(20, "Stories per page on the site.", min=1, max=200)
    feed_size: int = setting(50, "Stories per merged feed (RSS, Atom, JSON Feed).", min=1, max=500)
    search_window: int = setting(
        1000,
        "Search ranks this many of the newest matching reports at a time (headline matches "
        "first); a link at the end of the results goes on to the next older ones. Larger: "
        "better ranking over a longer span, slower searches for common words.",
        min=10,
        max=100_000,
    )
    site_title: str = setting("the aggregator", "Name of the site, in page titles and merged feeds.")
    base_url: str = setting(
        "",
        "Public address of the site (e.g. https://news.example.org), used for links and ids in "
        "the merged feeds. Empty: taken from each request's Host header.",
    )
    trusted_proxies: int = setting(
        0,
        "Reverse proxies in front of the site whose X-Forwarded-For, -Proto and -Host headers "
        "are believed (the login rate limit counts per client address). 0: none; never more "
        "than there really are, or clients can forge their address.",
        min=0,
        max=5,
    )


SECTIONS: dict[str, type] = {
    "storage": StorageSettings,
    "feeds": FeedSettings,
    "fetch": FetchSettings,
    "schedule": ScheduleSettings,
    "cluster": ClusterSettings,
    "web": WebSettings,
}


@dataclass(frozen=True)
class Settings:
    """All settings, grouped by section. Build it with :func:`load_settings`."""

    storage: StorageSettings = field(default_factory=StorageSettings)
    feeds: FeedSettings = field(default_factory=FeedSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    web: WebSettings = field(default_factory=WebSettings)
    base_dir: Path = field(default_factory=Path.cwd)

    def path(self, value: str) -> Path:
        """Resolve a path-valued setting against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def db_path(self) -> Path:
        return self.path(self.storage.db_path)

    def get(self, key: str) -> Any:
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)

    def replace(self, changes: Mapping[str, Any]) -> Settings:
        """Return a copy with ``{"section.name": value}`` changes validated and applied."""
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            d = _lookup(key)
            grouped.setdefault(d.section, {})[d.name] = d.coerce(value)
        sections = {name: dataclasses.replace(getattr(self, name), **vals) for name, vals in grouped.items()}
        new = dataclasses.replace(self, **sections)
        for key, problem in new.problems().items():
            raise SettingsError(f"setting {key}: {problem}")
        return new

    def problems(self) -> dict[str, str]:
        """Rules that tie settings together, broken: setting key -> what is wrong."""
        c = self.cluster
        out: dict[str, str] = {}
        if c.lsh_bands * c.lsh_rows > c.num_perm:
            out["cluster.lsh_bands"] = (
                f"bands x rows ({c.lsh_bands} x {c.lsh_rows} = {c.lsh_bands * c.lsh_rows}) "
                f"may not exceed num_perm ({c.num_perm})"
            )
        if c.short_terms >= c.long_terms:
            out["cluster.long_terms"] = f"must be more than short_terms ({c.short_terms})"
        p = self.schedule
        if p.min_interval_minutes > p.max_interval_minutes:
            out["schedule.max_interval_minutes"] = (
                f"must be at least min_interval_minutes ({p.min_interval_minutes:g})"
            )
        elif not p.min_interval_minutes <= p.default_interval_minutes <= p.max_interval_minutes:
            out["schedule.default_interval_minutes"] = (
                f"must lie between min_interval_minutes ({p.min_interval_minutes:g}) "
                f"and max_interval_minutes ({p.max_interval_minutes:g})"
            )
        base = self.web.base_url
        if base:
            try:
                parts = urlsplit(base)
                ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query
            except ValueError:
                ok = False
            if not ok:
                out["web.base_url"] = (
                    f"must be empty or an http(s) address like https://news.example.org, not {base!r}"
                )
        host = self.web.host
        # Empty, gunicorn listened on every interface without a word; with spaces or a
        # scheme, it retried for seconds and gave up.
        if not host.strip() or any(c in host for c in " /\\@") or host != host.strip():
            out["web.host"] = (
                f'must be an IP address or a host name like 127.0.0.1 or "0.0.0.0", not {host!r}'
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {d.key: self.get(d.key) for d in definitions()}


@dataclass(frozen=True)
class SettingDef:
    """The definition of one setting, as read off its section dataclass."""

    section: str
    name: str
    type: Any
    default: Any
    doc: str
    min: float | None
    max: float | None
    choices: tuple[str, ...] | None
    admin: bool
    path: bool

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def type_name(self) -> str:
        return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
            self.type, "list of strings"
        )

    @property
    def _a_type(self) -> str:
        return ("an " if self.type_name[0] in "aeiou" else "a ") + self.type_name

    def coerce(self, value: Any) -> Any:
        """Check ``value`` against this definition; return it in the declared type."""
        t = self.type
        where = f"setting {self.key}"
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "on", "off", "1", "0"):
                return value.lower() in ("true", "on", "1")
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        if t in (int, float):
            if isinstance(value, bool):
                raise SettingsError(f"{where}: expected {self._a_type}, got {value!r}")
            try:
                number = t(value) if isinstance(value, (int, float)) else t(str(value).strip())
            except (TypeError, ValueError, OverflowError):  # int(inf) overflows
                raise SettingsError(f"{where}: expected {self._a_type}, got {value!r}") from None
            if t is int and isinstance(value, float) and not value.is_integer():
                raise SettingsError(f"{where}: expected a whole number, got {value!r}")
            if number != number or number in (float("inf"), float("-inf")):
                raise SettingsError(f"{where}: expected a finite number, got {value!r}")
            if self.min is not None and number < self.min:
                raise SettingsError(f"{where}: {number} is below the minimum {self.min:g}")
            if self.max is not None and number > self.max:
                raise SettingsError(f"{where}: {number} is above the maximum {self.max:g}")
            return number
        if t is str:
            if not isinstance(value, str):
                raise SettingsError(f"{where}: expected a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise SettingsError(f"{where}: {value!r} is not one of {', '.join(self.choices)}")
            if _CONTROL.search(value):  # a newline in user_agent broke every request
                raise SettingsError(f"{where}: control characters (newlines, tabs...) are not allowed")
            return value
        # list of strings: entries trimmed, empty ones dropped, from config.toml or a form alike
        if isinstance(value, str):
            value = value.splitlines()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where}: expected a list of strings, got {value!r}")
        entries = tuple(v.strip() for v in value if v.strip())
        if len(entries) > MAX_LIST_ENTRIES:
            raise SettingsError(f"{where}: at most {MAX_LIST_ENTRIES} entries, got {len(entries)}")
        for v in entries:
            if len(v) > MAX_LIST_ENTRY_CHARS or _CONTROL.search(v):
                raise SettingsError(
                    f"{where}: an entry may not hold control characters or more than "
                    f"{MAX_LIST_ENTRY_CHARS} characters: {v[:40]!r}"
                )
        return entries


def _section_defs(section: str, cls: type) -> Iterator[SettingDef]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        yield SettingDef(
            section=section,
            name=f.name,
            type=t if t in (bool, int, float, str) else list,
            default=default,
            doc=f.metadata["doc"],
            min=f.metadata["min"],
            max=f.metadata["max"],
            choices=f.metadata["choices"],
            admin=f.metadata["admin"],
            path=f.metadata["path"],
        )


def definitions() -> list[SettingDef]:
    """Every setting, in section order."""
    return [d for section, cls in SECTIONS.items() for d in _section_defs(section, cls)]


def _lookup(key: str) -> SettingDef:
    for d in definitions():
        if d.key == key:
            return d
    raise SettingsError(f"unknown setting {key!r}")


def default_config_path() -> Path:
    """``config.toml`` in the current folder, else the one shipped beside the package."""
    here = Path.cwd() / "config.toml"
    if here.exists():
        return here
    return Path(__file__).resolve().parent.parent / "config.toml"


def load_settings(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read and validate a config file into a frozen :class:`Settings`.

    A missing file given explicitly is an error; with no path, a missing default
    file means "all defaults".  Unknown sections or keys are errors, so typos
    never pass silently.
    """
    explicit = path is not None
    cfg_path = Path(path) if path is not None else default_config_path()
    data: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{cfg_path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{cfg_path}: cannot read: {exc}") from None
    elif explicit:
        raise SettingsError(f"{cfg_path}: config file not found")
    changes: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise SettingsError(f"{cfg_path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise SettingsError(f"{cfg_path}: [{section}] must be a table")
        for name, value in values.items():
            changes[f"{section}.{name}"] = value
    if overrides:
        changes.update(overrides)
    # Relative paths follow the config file; with no file at all, the current folder.
    base = Settings(base_dir=cfg_path.resolve().parent if cfg_path.exists() else Path.cwd())
    try:
        return base.replace(changes)
    except SettingsError as exc:
        raise SettingsError(f"{cfg_path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _constraint(d: SettingDef) -> str:
    if d.choices:
        return "one of " + ", ".join(f"`{c}`" for c in d.choices)
    if d.min is not None and d.max is not None:
        return f"{_num(d.min)} to {_num(d.max)}"
    return ""


def markdown_reference() -> str:
    """The settings reference, generated from the definitions (``docs/settings.md``)."""
    out = [
        "# Settings",
        "",
        "Generated by `aggregator settings --markdown` from `aggregator/settings.py`; "
        "`config.toml` sets them, admins may change those marked *admin* at run time.",
        "",
    ]
    for section in SECTIONS:
        out += [
            f"## [{section}]",
            "",
            "| setting | type | default | range | admin | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for d in definitions():
            if d.section == section:
                out.append(
                    f"| `{d.name}` | {d.type_name} | `{_toml_value(d.default)}` | {_constraint(d)} | "
                    f"{'yes' if d.admin else ''} | {d.doc} |"
                )
        out.append("")
    return "\n".join(out)


def toml_template() -> str:
    """A complete ``config.toml`` with every setting at its default and its documentation."""
    import textwrap

    out = [
        "# Settings of the aggregator. Every setting is listed with its default and meaning;",
        "# `aggregator settings --markdown` prints the same as a reference (docs/settings.md).",
        "# Relative paths are taken from this file's folder.",
    ]
    for section in SECTIONS:
        out += ["", f"[{section}]"]
        for d in definitions():
            if d.section != section:
                continue
            doc = d.doc + (f" ({_constraint(d)})" if _constraint(d) else "")
            out += [
                "#" + line[1:] if line.startswith("  ") else line
                for line in textwrap.wrap(doc, 86, initial_indent="# ", subsequent_indent="# ")
            ]
            out.append(f"{d.name} = {_toml_value(d.default)}")
    return "\n".join(out) + "\n"
