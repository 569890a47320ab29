"""The merged feeds: one item per story, in RSS 2.0, Atom 1.0 and JSON Feed 1.1.

The builders are pure functions of :class:`Channel` and :class:`FeedEntry` records;
the views in :mod:`web.public` gather those from the facade.  Every piece of text
from a feed is escaped (XML via ElementTree, HTML via markupsafe), and characters
XML cannot carry are dropped.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from markupsafe import Markup, escape

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

ET.register_namespace("atom", ATOM_NS)
ET.register_namespace("dcterms", DCTERMS_NS)
ET.register_namespace("dc", DC_NS)

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
    variants: Sequence[Variant] = field(default_factory=tuple)
    external_url: str | None = None  # the canonical outlet's article


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


def _human(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y, %H:%M UTC")


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc822(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def entry_html(entry: FeedEntry) -> str:
    """The HTML body of a feed item: the summary, the coverage and every outlet's variant."""
    n = len(entry.outlets)
    parts: list[Markup] = []
    if entry.summary:
        parts.append(Markup("<p>{}</p>").format(entry.summary))
    parts.append(
        Markup("<p>Reported by {} {}: first {}, latest {}.</p>").format(
            n, "outlet" if n == 1 else "outlets", _human(entry.published), _human(entry.latest)
        )
    )
    items: list[Markup] = []
    for v in entry.variants:
        head = Markup('<a href="{}">{}</a>').format(v.url, v.title) if v.url else escape(v.title)
        items.append(Markup("<li>{} — {}, {}</li>").format(head, v.outlet, _human(v.time)))
    if items:
        parts.append(Markup("<ul>") + Markup("").join(items) + Markup("</ul>"))
    parts.append(Markup('<p><a href="{}">Compare every version</a></p>').format(entry.url))
    return xml_text(str(Markup("\n").join(parts)))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrib.items()})
    if text is not None:
        el.text = xml_text(text)
    return el


def render_rss(channel: Channel, entries: Sequence[FeedEntry]) -> bytes:
    """RSS 2.0, with ``atom:link rel=self`` and ``dcterms:modified`` for each item's last change."""
    rss = ET.Element("rss", {"version": "2.0"})
    ch = _sub(rss, "channel")
    _sub(ch, "title", channel.title)
    _sub(ch, "link", channel.home_url)
    _sub(ch, "description", channel.description)
    _sub(ch, f"{{{ATOM_NS}}}link", href=channel.self_url, rel="self", type=RSS_TYPE.split(";")[0])
    _sub(ch, "lastBuildDate", _rfc822(channel.updated))
    _sub(ch, "generator", GENERATOR)
    _sub(ch, "docs", "https://www.rssboard.org/rss-specification")
    for e in entries:
        it = _sub(ch, "item")
        _sub(it, "title", e.title)
        _sub(it, "link", e.url)
        _sub(it, "guid", e.id, isPermaLink="false")
        _sub(it, "pubDate", _rfc822(e.published))
        _sub(it, "description", entry_html(e))
        for outlet in e.outlets:
            _sub(it, f"{{{DC_NS}}}creator", outlet)
        _sub(it, f"{{{DCTERMS_NS}}}modified", _rfc3339(e.updated))
    out: bytes = ET.tostring(rss, encoding="utf-8", xml_declaration=True)
    return out


def render_atom(channel: Channel, entries: Sequence[FeedEntry]) -> bytes:
    """Atom 1.0 (RFC 4287): ``updated`` changes when an outlet joins a story."""

    def a(tag: str) -> str:
        return tag  # unqualified names in the default namespace declared on <feed>

    feed = ET.Element("feed", {"xmlns": ATOM_NS})
    _sub(feed, a("id"), channel.self_url)
    _sub(feed, a("title"), channel.title, type="text")
    _sub(feed, a("subtitle"), channel.description, type="text")
    _sub(feed, a("link"), rel="self", type=ATOM_TYPE.split(";")[0], href=channel.self_url)
    _sub(feed, a("link"), rel="alternate", type="text/html", href=channel.home_url)
    _sub(feed, a("updated"), _rfc3339(channel.updated))
    author = _sub(feed, a("author"))
    _sub(author, a("name"), GENERATOR)
    _sub(feed, a("generator"), GENERATOR)
    for e in entries:
        en = _sub(feed, a("entry"))
        _sub(en, a("id"), e.id)
        _sub(en, a("title"), e.title, type="text")
        _sub(en, a("link"), rel="alternate", type="text/html", href=e.url)
        for v in e.variants:
            if v.url:
                _sub(
                    en, a("link"), rel="related", type="text/html", href=v.url, title=f"{v.outlet}: {v.title}"
                )
        _sub(en, a("published"), _rfc3339(e.published))
        _sub(en, a("updated"), _rfc3339(e.updated))
        for outlet in e.outlets:
            au = _sub(en, a("author"))
            _sub(au, a("name"), outlet)
        if e.summary:
            _sub(en, a("summary"), e.summary, type="text")
        _sub(en, a("content"), entry_html(e), type="html")
    out: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return out


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
            "authors": [{"name": o} for o in e.outlets],
            "_aggregator": {
                "outlets": len(e.outlets),
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
