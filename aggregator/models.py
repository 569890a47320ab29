"""Typed records passed between the pipeline stages and returned by the facade."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit


def outlet_name(title: str | None, url: str) -> str:
    """What an outlet is called where people see it: its feed's title, else the host
    its feed comes from (never the whole address, whose user name, password or query
    may be a subscriber's key), else a local file's name."""
    if title:
        return title
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "(unnamed outlet)"
    if parts.scheme in ("http", "https") and host:
        if public_feed_url(url) is not None and parts.path not in ("", "/"):
            return f"{host}{parts.path}"  # two untitled feeds of one site stay apart
        return host
    return PurePosixPath(parts.path).name or "(unnamed outlet)"


def public_feed_url(url: str) -> str | None:
    """A feed's address if it may be shown to anyone: None when it carries a user name,
    a password or a query (where subscriptions keep their keys)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or parts.query:
        return None
    return url


@dataclass(frozen=True)
class Entry:
    """One feed entry as parsed, before normalisation. HTML fields are raw and unsafe."""

    guid: str | None
    link: str | None
    title: str
    summary_html: str
    content_html: str
    author: str | None = None
    published: float | None = None  # Unix seconds
    updated: float | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedFeed:
    """What the parser made of a feed document."""

    title: str | None
    link: str | None
    entries: list[Entry]
    ttl_minutes: int | None = None
    warning: str | None = None  # the document was broken but entries were recovered
    error: str | None = None  # nothing usable came out


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one fetch of one feed URL."""

    url: str
    status: str  # "ok", "not_modified", "gone", "error"
    http_status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    final_url: str | None = None
    permanent_url: str | None = None  # set when every redirect on the way was permanent
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    elapsed_ms: float = 0.0
    retry_after: float | None = None  # seconds, from a Retry-After header
    max_age: float | None = None  # seconds, from Cache-Control max-age or Expires


@dataclass(frozen=True)
class Item:
    """A normalised entry: plain text for matching, sanitised-later HTML for display."""

    identity: str  # unique per feed: guid, else canonical link, else title + date
    guid: str | None
    link: str | None
    canonical_link: str | None
    title: str
    summary: str  # plain text
    text: str  # plain text of the fullest body available
    content_html: str  # raw HTML, sanitised at display time
    author: str | None
    published: float | None
    updated: float | None
    categories: tuple[str, ...]
    content_hash: str  # hash of title + text, detects changed items and exact copies
    shown_hash: str = ""  # hash of what it shows (headline as written, link, HTML...): edits


@dataclass(frozen=True)
class Decision:
    """Where the clusterer put an item, and why."""

    cluster_id: int
    score: float
    signal: str  # "new", "same-link", "exact-copy", "similar", "manual", ...
    matched_item_id: int | None = None


@dataclass(frozen=True)
class Feed:
    """A subscription and its polling state."""

    id: int
    url: str
    title: str | None
    site_url: str | None
    added_at: float
    paused: bool
    status: str  # "new", "ok", "not_modified", "error", "broken", "gone"
    last_error: str | None
    last_polled_at: float | None
    next_poll_at: float | None
    failures: int
    items_total: int
    etag: str | None = None
    last_modified: str | None = None
    interval_minutes: float | None = None
    error_since: float | None = None
    polls: int = 0
    not_modified: int = 0
    fetch_ms_total: float = 0.0
    last_items_added: int = 0
    poll_minutes: float | None = None  # an admin's own interval; None: automatic
    poll_requested_at: float | None = None  # an admin's "Poll now" the poller has not done yet
    last_items_updated: int = 0
    warning: str | None = None
    ttl_minutes: int | None = None  # the interval the feed asked for at its last parse

    @property
    def display_name(self) -> str:
        """Its name for admins: its title, else its address."""
        return self.title or self.url

    @property
    def public_name(self) -> str:
        """Its name where anyone sees it (never a private feed's key): :func:`outlet_name`."""
        return outlet_name(self.title, self.url)

    @property
    def avg_fetch_ms(self) -> float | None:
        return self.fetch_ms_total / self.polls if self.polls else None

    @property
    def not_modified_ratio(self) -> float | None:
        return self.not_modified / self.polls if self.polls else None


@dataclass(frozen=True)
class StoredItem:
    """An item as stored, with its cluster membership."""

    id: int
    feed_id: int
    feed_title: str | None
    feed_url: str
    link: str | None
    title: str
    summary: str
    text: str
    content_html: str
    author: str | None
    published: float | None
    first_seen: float
    sort_time: float  # published, clamped to when we first saw it
    cluster_id: int | None
    score: float | None
    signal: str | None
    matched_item_id: int | None = None

    @property
    def outlet(self) -> str:
        return outlet_name(self.feed_title, self.feed_url)

    @property
    def content_base(self) -> str:
        """What relative links in the item's content are relative to: its own address,
        else its feed's (without a user name, password or query: a subscriber's key)."""
        if self.link:
            return self.link
        try:
            parts = urlsplit(self.feed_url)
            return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        except ValueError:
            return ""


@dataclass(frozen=True)
class ClusterSummary:
    """One story: its canonical item and coverage."""

    id: int
    canonical: StoredItem
    size: int
    outlets: tuple[str, ...]
    first_seen: float
    last_seen: float
    updated_at: float
    created_at: float | None = None  # when the cluster was made
    n_feeds: int = 0  # how many outlets told it (by name: feeds under one name are one outlet)


@dataclass(frozen=True)
class ClusterDetail:
    summary: ClusterSummary
    members: list[StoredItem]


@dataclass
class UpdateReport:
    """What one update of one feed did."""

    feed_url: str
    status: str
    new_items: int = 0
    updated_items: int = 0
    error: str | None = None
    warning: str | None = None
    elapsed_ms: float = 0.0


@dataclass(frozen=True)
class MemberInfo:
    """What a canonical policy may look at."""

    item_id: int
    feed_id: int
    feed_title: str | None
    feed_url: str
    sort_time: float
    text_length: int


@dataclass(frozen=True)
class StoryFilter:
    """Which stories to list: the filters of the front page and the merged feeds."""

    min_outlets: int = 1
    feed_id: int | None = None  # stories with an item from this feed
    category: str | None = None  # stories with an item in this category (case-insensitive)
    query: str | None = None  # stories with an item matching this full-text search

    @property
    def is_default(self) -> bool:
        return self == StoryFilter()


# The columns of a story each order of stories sorts by, last to first: the key of a
# story in that order (the same columns as storage's ORDER BY, all descending).
# "updated": the order the site changed stories in (new ones and those that grew on top),
# what a subscriber's reader needs: by report time, a story reported late (an outlet
# that publishes hours after the fact) sat below a full feed and was never delivered.
STORY_SORT_KEYS = {
    "latest": ("last_time", "id"),
    "coverage": ("n_feeds", "size", "last_time", "id"),
    "updated": ("updated_at", "id"),
}


@dataclass(frozen=True)
class StoryCursor:
    """Where a page of stories begins (keyset paging): next to the story of sort key
    ``key`` in order ``sort``, on its ``older`` side (further down the list) or the other.

    A page counted by its offset repeated stories as new ones arrived above it (and
    skipped stories when some left); a cursor's page starts where the reader left off.
    """

    sort: str
    key: tuple[float, ...]
    older: bool = True

    @classmethod
    def of(cls, story: ClusterSummary, sort: str, *, older: bool = True) -> StoryCursor:
        values = {"last_time": story.last_seen, "id": story.id, "n_feeds": story.n_feeds, "size": story.size}
        return cls(sort, tuple(values[k] for k in STORY_SORT_KEYS[sort]), older)

    def token(self) -> str:
        """The cursor as it goes in a URL (``sort`` and the side are the URL's to say)."""
        return "_".join(repr(float(v)) if k == "last_time" else str(int(v)) for k, v in self._named())

    @classmethod
    def parse(cls, token: str, sort: str, *, older: bool = True) -> StoryCursor:
        """The cursor of a :meth:`token`; ValueError if it is not one."""
        names = STORY_SORT_KEYS.get(sort)
        parts = token.split("_")
        if names is None or len(parts) != len(names) or len(token) > 200:
            raise ValueError("not a page of this list")
        key: list[float] = []
        for name, part in zip(names, parts, strict=True):
            value = float(part) if name == "last_time" else int(part)
            if not math.isfinite(value) or abs(value) > 2**62:
                raise ValueError("not a page of this list")
            key.append(value)
        return cls(sort, tuple(key), older)

    def _named(self) -> list[tuple[str, float]]:
        return list(zip(STORY_SORT_KEYS[self.sort], self.key, strict=True))


@dataclass(frozen=True)
class SearchHit:
    """An item that matched a search, with a snippet (highlights between \x02 and \x03)."""

    item: StoredItem
    snippet: str
    rank: float  # lower is better


@dataclass(frozen=True)
class StoryHits:
    """A story that matched a search and its matching items, best first."""

    story: ClusterSummary
    hits: list[SearchHit]
    more: int = 0  # its other matching items, not shown


@dataclass(frozen=True)
class Freshness:
    """A cheap fingerprint of what the site shows, for ETag and Last-Modified."""

    token: str  # changes whenever anything shown changes
    last_modified: float  # Unix seconds of the latest change known
