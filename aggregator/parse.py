"""Feed documents to typed records.

This is the only module that imports feedparser.  It is given bytes, never a
string feedparser could take for a URL or a path, and its loosely typed result
becomes :class:`~aggregator.models.ParsedFeed` here.  JSON Feed (which feedparser
6 does not read) goes through a small adapter.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urljoin

import feedparser

from aggregator.models import Entry, ParsedFeed
from aggregator.normalize import title_text

__all__ = ["parse_feed"]

JSON_FEED_PREFIX = "https://jsonfeed.org/version/"


def parse_feed(body: bytes, url: str, headers: Mapping[str, str] | None = None) -> ParsedFeed:
    """Parse a fetched feed body.  Never raises: problems come back as ``error``/``warning``."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    try:
        if _looks_like_json(body, headers.get("content-type", "")):
            return _parse_json_feed(body, url)
        return _parse_xml_feed(body, url, headers)
    except Exception as exc:
        return ParsedFeed(None, None, [], error=f"parser failed: {type(exc).__name__}: {exc}")


def _looks_like_json(body: bytes, content_type: str) -> bool:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") or ("json" in content_type.lower() and not head.startswith(b"<"))


# --- RSS / Atom through feedparser ---------------------------------------------------


# A character reference to a UTF-16 surrogate (CMSes write an emoji as two of them)
# makes feedparser's lenient parser raise, which would lose the whole feed.
_SURROGATE_REF = re.compile(
    rb"&#(?:[xX]0*([dD][89a-fA-F][0-9a-fA-F]{2})|0*(5[56]\d{3}|57[0-2]\d{2}|573[0-4]\d));"
)


def _fix_surrogate_refs(body: bytes) -> bytes:
    """Character references to surrogates: a high one followed by a low one become the
    character they encode; a lone one becomes U+FFFD."""
    if b"&#" not in body:
        return body
    matches = list(_SURROGATE_REF.finditer(body))
    if not matches:
        return body

    def code(m: re.Match[bytes]) -> int:
        return int(m[1], 16) if m[1] else int(m[2])

    out: list[bytes] = []
    pos = 0
    k = 0
    while k < len(matches):
        m = matches[k]
        out.append(body[pos : m.start()])
        c = code(m)
        nxt = matches[k + 1] if k + 1 < len(matches) else None
        if (
            0xD800 <= c <= 0xDBFF
            and nxt is not None
            and nxt.start() == m.end()
            and 0xDC00 <= code(nxt) <= 0xDFFF
        ):
            joined = 0x10000 + ((c - 0xD800) << 10) + (code(nxt) - 0xDC00)
            out.append(b"&#%d;" % joined)
            pos = nxt.end()
            k += 2
        else:
            out.append(b"&#xFFFD;")
            pos = m.end()
            k += 1
    out.append(body[pos:])
    return b"".join(out)


# A tag this long is a hostile document's: feedparser took 232 s over one <item> with
# 100,000 attributes.  Its attributes are dropped (the tag and what it holds stay).
_GIANT_TAG = re.compile(rb"<([A-Za-z_][\w:.-]*+)([^<>]{65536,}+)>")


def _drop_giant_attribute_lists(body: bytes) -> bytes:
    if len(body) < 65536:
        return body
    return _GIANT_TAG.sub(lambda m: b"<" + m[1] + (b"/" if m[2].endswith(b"/") else b"") + b">", body)


def _parse_xml_feed(body: bytes, url: str, headers: Mapping[str, str]) -> ParsedFeed:
    # Local files come without a content type; feedparser would flag that as an error.
    response_headers = {"content-location": url, "content-type": "application/xml", **headers}
    # A text/* type without a charset: feedparser takes it for us-ascii (RFC 3023) and
    # warns that UTF-8 feeds (nginx serves .xml so) declare the wrong encoding.  RFC 7303
    # reads the document's own declaration then, as for application/xml.
    mime, _, params = response_headers["content-type"].partition(";")
    if mime.strip().lower().startswith("text/") and "charset" not in params.lower():
        response_headers["content-type"] = "application/xml"
    d = feedparser.parse(
        _fix_surrogate_refs(_drop_giant_attribute_lists(body)),
        response_headers=response_headers,
        sanitize_html=False,  # sanitised with nh3 at display time, once
        resolve_relative_uris=False,  # links are resolved below; content HTML at display
    )
    feed = d.get("feed", {}) or {}
    base = feed.get("link") if isinstance(feed.get("link"), str) else None
    base = (_join(url, base) or url) if base else url
    entries = [_entry_from_feedparser(e, url) for e in d.get("entries", [])]
    version = d.get("version", "")
    problem = None
    if d.get("bozo"):
        exc = d.get("bozo_exception")
        problem = _describe_bozo(exc)
    if not version and not entries and not feed.get("title"):
        detail = f" ({problem})" if problem else ""
        return ParsedFeed(
            None, None, [], error=f"not a feed: no RSS, Atom or JSON Feed content found{detail}"
        )
    ttl = _int_or_none(feed.get("ttl"))
    return ParsedFeed(
        title=title_text(_text(feed.get("title")))[:300] or None,
        link=base if feed.get("link") else None,
        entries=entries,
        ttl_minutes=ttl,
        warning=problem,
    )


def _describe_bozo(exc: object) -> str:
    name = type(exc).__name__
    if name == "CharacterEncodingOverride":
        return f"declared encoding was wrong; decoded another way ({exc})"
    if name == "NonXMLContentType":
        return f"served with a non-XML content type ({exc})"
    return f"malformed feed, read leniently: {exc}"


def _entry_from_feedparser(e: dict[str, Any], url: str) -> Entry:
    link = e.get("link")
    link = _join(url, link.strip()) if isinstance(link, str) and link.strip() else None
    contents = [c.get("value", "") for c in e.get("content", []) or [] if isinstance(c, Mapping)]
    content_html = max(contents, key=len) if contents else ""
    summary = _text(e.get("summary"))
    if summary == content_html:
        summary = ""
    tags = tuple(
        t.get("term") or t.get("label") or ""
        for t in e.get("tags", []) or []
        if isinstance(t, Mapping) and (t.get("term") or t.get("label"))
    )
    guid = e.get("id")
    return Entry(
        guid=guid.strip() if isinstance(guid, str) and guid.strip() else None,
        link=link,
        title=_text(e.get("title")),
        summary_html=summary,
        content_html=content_html,
        author=_text(e.get("author")) or None,
        published=_struct_to_ts(dict.get(e, "published_parsed") or dict.get(e, "created_parsed"))
        or _struct_to_ts(dict.get(e, "updated_parsed")),
        # dict.get: feedparser's own get() maps a missing "updated" to "published" with a warning
        updated=_struct_to_ts(dict.get(e, "updated_parsed")),
        categories=tuple(t.strip() for t in tags if isinstance(t, str))[:20],
    )


def _struct_to_ts(value: object) -> float | None:
    if not isinstance(value, time.struct_time):
        return None
    try:
        return float(calendar.timegm(value))
    except (OverflowError, ValueError):
        return None


# --- JSON Feed 1.0 / 1.1 ----------------------------------------------------------------


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _without_surrogates(value: Any) -> Any:
    """``value`` (decoded JSON) with every lone surrogate (a ``\\ud800`` escape, from a
    string cut in half) replaced by U+FFFD: they cannot be stored or shown."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _join(base: str, link: str) -> str | None:
    """``link`` resolved against ``base``; None when it is no address (``https://[x]/``
    made ``urljoin`` raise, and one such item lost its whole feed)."""
    try:
        return urljoin(base, link)
    except ValueError:
        return None


def _int_or_text(digits: str) -> int | str:
    """A JSON integer, kept as text when too long for ``int`` (Python refuses over 4,300 digits)."""
    return int(digits) if len(digits) <= 1000 else digits


def _parse_json_feed(body: bytes, url: str) -> ParsedFeed:
    bad_bytes = None
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # one bad byte does not lose the feed
        text = body.decode("utf-8-sig", errors="replace")
        bad_bytes = (
            f"the JSON Feed is not valid UTF-8 ({exc.reason} at byte {exc.start}); read with replacements"
        )
    try:
        data = json.loads(text, parse_int=_int_or_text)
    except json.JSONDecodeError as exc:
        return ParsedFeed(None, None, [], error=f"JSON Feed is not valid JSON: {exc}")
    except RecursionError:
        return ParsedFeed(None, None, [], error="JSON Feed is nested too deeply to read")
    if _SURROGATE_ESCAPE.search(text):
        data = _without_surrogates(data)
    if not isinstance(data, dict):
        return ParsedFeed(None, None, [], error="JSON Feed must be a JSON object")
    version = data.get("version")
    warning = None
    if not (isinstance(version, str) and version.startswith(JSON_FEED_PREFIX)):
        warning = f"JSON document without a JSON Feed version ({version!r}); read as JSON Feed"
    items = data.get("items")
    if not isinstance(items, list):
        return ParsedFeed(_text(data.get("title")) or None, None, [], error="JSON Feed has no items list")
    entries: list[Entry] = []
    skipped = 0
    for raw in items:
        if not isinstance(raw, dict):
            skipped += 1
            continue
        entries.append(_entry_from_json(raw, url))
    if skipped:
        warning = f"{skipped} JSON Feed item(s) were not objects and were skipped"
    warning = bad_bytes or warning
    home = data.get("home_page_url")
    return ParsedFeed(
        title=title_text(_text(data.get("title")))[:300] or None,
        link=_join(url, home) if isinstance(home, str) else None,
        entries=entries,
        warning=warning,
    )


def _entry_from_json(raw: Mapping[str, Any], url: str) -> Entry:
    link = raw.get("url") or raw.get("external_url")
    link = _join(url, link) if isinstance(link, str) and link.strip() else None
    content = raw.get("content_html")
    if not isinstance(content, str) or not content:
        text = raw.get("content_text")
        content = _escape_text(text) if isinstance(text, str) else ""
    authors = raw.get("authors")
    author = None
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        author = _text(authors[0].get("name")) or None
    elif isinstance(raw.get("author"), dict):
        author = _text(raw["author"].get("name")) or None
    tags = raw.get("tags")
    guid = raw.get("id")
    return Entry(
        guid=str(guid).strip() if isinstance(guid, (str, int)) and str(guid).strip() else None,
        link=link,
        title=escape(_text(raw.get("title"))),  # plain text in JSON Feed: kept as written
        summary_html=_text(raw.get("summary")),
        content_html=content,
        author=author,
        published=_iso_to_ts(raw.get("date_published")) or _iso_to_ts(raw.get("date_modified")),
        updated=_iso_to_ts(raw.get("date_modified")),
        categories=tuple(t for t in tags if isinstance(t, str))[:20] if isinstance(tags, list) else (),
    )


def _escape_text(text: str) -> str:
    return "".join(f"<p>{escape(p)}</p>" for p in text.split("\n\n") if p.strip())


def _iso_to_ts(value: object) -> float | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


MAX_TTL_MINUTES = 10**7  # ~19 years: more says "rarely", and the schedule's bounds apply


def _int_or_none(value: object) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return min(n, MAX_TTL_MINUTES) if n > 0 else None
