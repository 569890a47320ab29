"""The merged feeds: one item per story, in RSS 2.0, Atom 1.0 and JSON Feed 1.1.

The builders are pure functions of :class:`Channel` and :class:`FeedEntry` records;
the views in :mod:`web.public` gather those from the facade.  Every piece of text
from a feed is escaped (XML by :func:`_el`, HTML by markupsafe's ``escape``), and
characters XML cannot carry are dropped.  The documents are built as strings: the
same XML ElementTree wrote, at a fraction of the cost.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from markupsafe import escape

__all__ = [
    "ATOM_TYPE",
    "JSON_TYPE",
    "RSS_TYPE",
    "Channel",
    "FeedEntry",
    "Renderer",
    "Variant",
    "entry_html",
    "render_atom",
    "render_json",
    "render_rss",
    "tag_uri",
    "xml_text",
]

RSS_TYPE = "application/rss+xml; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
JSON_TYPE = "application/feed+json; charset=utf-8"

ATOM_NS = "http://www.w3.org/2005/Atom"
DCTERMS_NS = "http://purl.org/dc/terms/"
DC_NS = "http://purl.org/dc/elements/1.1/"
GENERATOR = "the aggregator"
# Versions listed in a feed item: the oldest half and the latest half, oldest first (the
# oldest alone hid every outlet that joined later); the story page lists them all.  A
# story told 200 times made every item carry 200 links, and the feeds 5 MB.
MAX_VARIANTS = 20
# Authors a JSON Feed item names at most (the canonical outlet first).
MAX_AUTHORS = 20

_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold."""
    return _NOT_XML.sub("", text)


@dataclass(frozen=True)
class Variant:
    """One outlet's version of a story."""

    title: str
    outlet: str
    url: str | None  # http(s) only
    time: float


@dataclass(frozen=True)
class FeedEntry:
    """One story as a feed item."""

    id: str  # stays the same for the life of the story
    url: str  # the story page
    title: str
    summary: str  # plain text
    published: float  # first report
    updated: float  # last change of the story (an outlet joined, an item was edited)
    latest: float  # latest report
    outlets: tuple[str, ...]
    variants: Sequence[Variant] = field(default_factory=tuple)  # the first MAX_VARIANTS
    versions: int = 0  # how many versions the story has (0: as many as variants)
    external_url: str | None = None  # the canonical outlet's article
    canonical_outlet: str = ""  # whose headline and summary the item shows

    def authors(self) -> list[str]:
        """The canonical outlet, then the others in order of first report, at most
        :data:`MAX_AUTHORS` (a story told by 300 outlets had 300 authors per item)."""
        names = [self.canonical_outlet] if self.canonical_outlet else []
        names += [o for o in self.outlets if o != self.canonical_outlet]
        return names[:MAX_AUTHORS]


@dataclass(frozen=True)
class Channel:
    """The feed itself."""

    title: str
    description: str
    home_url: str  # the site page with the same filters
    self_url: str  # this feed, with its query
    updated: float


Renderer = Callable[[Channel, Sequence[FeedEntry]], bytes]


def tag_uri(authority: str, cluster_id: int, created_at: float | None) -> str:
    """A ``tag:`` URI (RFC 4151) naming one story for as long as its cluster lives."""
    host = (authority or "localhost").lower()
    if created_at is None:
        return f"tag:{host},2024:story/{cluster_id}"
    day = datetime.fromtimestamp(created_at, UTC).strftime("%Y-%m-%d")
    return f"tag:{host},{day}:story/{cluster_id}/{int(created_at)}"


@functools.lru_cache(maxsize=4096)
def _human(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y, %H:%M UTC")


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc822(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def _h(text: str) -> str:
    """HTML-escaped text (``& < > " '``), as markupsafe escapes it."""
    return str(escape(text))


def entry_html(entry: FeedEntry) -> str:
    """The HTML body of a feed item: the summary, the coverage and every outlet's variant.

    Every piece of feed text is HTML-escaped here; the only markup is our own
    ``p``, ``ul``, ``li`` and ``a href`` (http(s) links only, see ``Variant.url``).
    """
    n = len(entry.outlets)
    parts: list[str] = []
    if entry.summary:
        parts.append(f"<p>{_h(entry.summary)}</p>")
    parts.append(
        f"<p>Reported by {n} {'outlet' if n == 1 else 'outlets'}: "
        f"first {_human(entry.published)}, latest {_human(entry.latest)}.</p>"
    )
    items: list[str] = []
    more = entry.versions - len(entry.variants)
    gap = MAX_VARIANTS - MAX_VARIANTS // 2  # where the versions left out were
    for n, v in enumerate(entry.variants):
        if n == gap and more > 0:
            items.append(f"<li>… {more} more {'version' if more == 1 else 'versions'} …</li>")
        head = f'<a href="{_h(v.url)}">{_h(v.title)}</a>' if v.url else _h(v.title)
        items.append(f"<li>{head} — {_h(v.outlet)}, {_human(v.time)}</li>")
    if more > 0 and len(entry.variants) <= gap:
        items.append(f"<li>… {more} more {'version' if more == 1 else 'versions'} …</li>")
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    parts.append(f'<p><a href="{_h(entry.url)}">Compare every version</a></p>')
    return xml_text("\n".join(parts))


# XML escaping for text and attribute values; \r (and in attributes \t and \n) as
# character references, so a parser gives back exactly the text written.
def _t(text: str) -> str:
    text = xml_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\r", "&#13;") if "\r" in text else text


def _attr(value: str) -> str:
    value = _t(value).replace('"', "&quot;")
    if "\n" in value or "\t" in value:
        value = value.replace("\n", "&#10;").replace("\t", "&#9;")
    return value


def _el(tag: str, text: str | None = None, **attrib: str) -> str:
    """One XML element: escaped attributes (in the order given) and text; empty when no text."""
    attrs = "".join(f' {k}="{_attr(v)}"' for k, v in attrib.items())
    if text is None:
        return f"<{tag}{attrs} />"
    return f"<{tag}{attrs}>{_t(text)}</{tag}>"


_XML_DECLARATION = "<?xml version='1.0' encoding='utf-8'?>\n"


def render_rss(channel: Channel, entries: Sequence[FeedEntry]) -> bytes:
    """RSS 2.0, with ``atom:link rel=self`` and ``dcterms:modified`` for each item's last change."""
    out = [
        _XML_DECLARATION,
        f'<rss xmlns:atom="{ATOM_NS}" xmlns:dc="{DC_NS}" xmlns:dcterms="{DCTERMS_NS}" version="2.0">',
        "<channel>",
        _el("title", channel.title),
        _el("link", channel.home_url),
        _el("description", channel.description),
        _el("atom:link", href=channel.self_url, rel="self", type=RSS_TYPE.split(";")[0]),
        _el("lastBuildDate", _rfc822(channel.updated)),
        _el("generator", GENERATOR),
        _el("docs", "https://www.rssboard.org/rss-specification"),
    ]
    for e in entries:
        out.append("<item>")
        out.append(_el("title", e.title))
        out.append(_el("link", e.url))
        out.append(_el("guid", e.id, isPermaLink="false"))
        out.append(_el("pubDate", _rfc822(e.published)))
        out.append(_el("description", entry_html(e)))
        # One creator, the outlet whose headline this is: readers show one (feedparser the
        # last of several), and it changed as outlets joined.  The content lists them all.
        out.extend(_el("dc:creator", outlet) for outlet in e.authors()[:1])
        out.append(_el("dcterms:modified", _rfc3339(e.updated)))
        out.append("</item>")
    out.append("</channel></rss>")
    return "".join(out).encode("utf-8")


def render_atom(channel: Channel, entries: Sequence[FeedEntry]) -> bytes:
    """Atom 1.0 (RFC 4287): ``updated`` changes when an outlet joins a story."""
    out = [
        _XML_DECLARATION,
        f'<feed xmlns="{ATOM_NS}">',
        _el("id", channel.self_url),
        _el("title", channel.title, type="text"),
        _el("subtitle", channel.description, type="text"),
        _el("link", rel="self", type=ATOM_TYPE.split(";")[0], href=channel.self_url),
        _el("link", rel="alternate", type="text/html", href=channel.home_url),
        _el("updated", _rfc3339(channel.updated)),
        f"<author>{_el('name', GENERATOR)}</author>",
        _el("generator", GENERATOR),
    ]
    for e in entries:
        out.append("<entry>")
        out.append(_el("id", e.id))
        out.append(_el("title", e.title, type="text"))
        out.append(_el("link", rel="alternate", type="text/html", href=e.url))
        for v in e.variants:
            if v.url:
                out.append(
                    _el("link", rel="related", type="text/html", href=v.url, title=f"{v.outlet}: {v.title}")
                )
        out.append(_el("published", _rfc3339(e.published)))
        out.append(_el("updated", _rfc3339(e.updated)))
        out.extend(f"<author>{_el('name', outlet)}</author>" for outlet in e.authors()[:1])
        if e.summary:
            out.append(_el("summary", e.summary, type="text"))
        out.append(_el("content", entry_html(e), type="html"))
        out.append("</entry>")
    out.append("</feed>")
    return "".join(out).encode("utf-8")


def render_json(channel: Channel, entries: Sequence[FeedEntry]) -> bytes:
    """JSON Feed 1.1, with an ``_aggregator`` extension listing the variants."""
    items: list[dict[str, Any]] = []
    for e in entries:
        item: dict[str, Any] = {
            "id": e.id,
            "url": e.url,
            "title": e.title,
            "content_html": entry_html(e),
            "date_published": _rfc3339(e.published),
            "date_modified": _rfc3339(e.updated),
            "authors": [{"name": o} for o in e.authors()],
            "_aggregator": {
                "outlets": len(e.outlets),
                "versions": max(e.versions, len(e.variants)),
                "latest": _rfc3339(e.latest),
                "variants": [
                    {"title": v.title, "outlet": v.outlet, "url": v.url, "date": _rfc3339(v.time)}
                    for v in e.variants
                ],
            },
        }
        if e.summary:
            item["summary"] = e.summary
        if e.external_url:
            item["external_url"] = e.external_url
        items.append(item)
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": channel.title,
        "home_page_url": channel.home_url,
        "feed_url": channel.self_url,
        "description": channel.description,
        "authors": [{"name": GENERATOR}],
        "items": items,
    }
    return json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8", "replace")
