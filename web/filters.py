"""Template filters: times, and sanitised HTML from feeds."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import nh3
from flask import Flask
from markupsafe import Markup, escape

from aggregator.storage.search import HIGHLIGHT_END, HIGHLIGHT_START
from web.diff import WordOp

ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "cite",
    "code",
    "dd",
    "del",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
}


def safe_html(html: str | None, base: str | None = None) -> Markup:
    """Feed HTML made safe: no scripts, handlers, styles or javascript:/data: URLs.

    Relative links and images are resolved against ``base`` (the item's own address,
    else its feed's): on this site they would point at its own pages.  Without a
    usable base they are left out.
    """
    if not html:
        return Markup("")
    absolute = safe_url(base)
    options: dict[str, Any] = {
        "tags": ALLOWED_TAGS,
        "attributes": ALLOWED_ATTRIBUTES,
        "url_schemes": {"http", "https", "mailto"},
        "link_rel": "noopener noreferrer nofollow",
        "strip_comments": True,
    }
    try:
        clean = nh3.clean(
            html, url_relative=("rewrite_with_base", absolute) if absolute else "deny", **options
        )
    except ValueError:  # a base nh3 takes for no URL ("https://xn--/story"): made a story page a 500
        clean = nh3.clean(html, url_relative="deny", **options)
    clean = _LINKED_IMAGE.sub(_name_linked_image, clean)
    clean = _HEADING.sub(_demote_heading, clean)
    return Markup(_NO_ALT.sub('<img alt=""', clean))


# An image a feed gave no text for is decoration to a screen reader (nh3's output
# escapes ">" inside attribute values, so a tag ends at the first ">")...
_NO_ALT = re.compile(r"<img(?![^>]*\salt=)")
# ... unless it is all there is in a link: then alt="" left the link without a name
# (a screen reader read out its address, or nothing).
_LINKED_IMAGE = re.compile(r"(<a\s[^>]*>\s*)<img(?![^>]*\salt=)([^>]*>\s*</a>)")
_HREF = re.compile(r'\shref="([^"]*)"')


# A feed's own headings sit under the page's: the story's <h1> and each version's <h3>
# (its <h2> came out beside "Every outlet's version" in a screen reader's list of headings).
_HEADING = re.compile(r"<(/?)h([2-6])(\s[^>]*)?>")


def _demote_heading(m: re.Match[str]) -> str:
    return f"<{m[1]}h{min(6, int(m[2]) + 2)}{m[3] or ''}>"


def _name_linked_image(m: re.Match[str]) -> str:
    href = _HREF.search(m[1])
    host = urlsplit(href[1]).hostname if href else None
    name = f"Image linking to {host}" if host else "Linked image"
    return f'{m[1]}<img alt="{escape(name)}"{m[2]}'


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y, %H:%M UTC")


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def safe_url(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL, else ``None`` (no javascript:, data:, ...)."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if any(c in url for c in "\x00\t\n\r"):
        return None
    # Spaces, quotes, non-ASCII... percent-encoded (RFC 3986; an Atom or JSON Feed
    # validator refuses a raw space); what is already encoded stays as it is.
    return quote(url, safe=_URL_SAFE)


_MARKED = re.compile(f"{HIGHLIGHT_START}([^{HIGHLIGHT_START}{HIGHLIGHT_END}]*){HIGHLIGHT_END}")
_MARKERS = re.compile(f"[{HIGHLIGHT_START}{HIGHLIGHT_END}]")


def highlight(snippet: str | None) -> Markup:
    """A search snippet, escaped, with its marked words in ``<mark>``; stray markers dropped."""
    if not snippet:
        return Markup("")
    out: list[str] = []
    pos = 0
    for m in _MARKED.finditer(snippet):
        out.append(str(escape(_MARKERS.sub("", snippet[pos : m.start()]))))
        out.append(f"<mark>{escape(m.group(1))}</mark>")
        pos = m.end()
    out.append(str(escape(_MARKERS.sub("", snippet[pos:]))))
    return Markup("".join(out))


# One side of a word diff: the words of both texts, and those of this side only marked.
_SIDE_MARKS = {
    "before": ("del", '<del><span class="vh">[changed:] </span>', "</del>"),
    "after": ("add", '<ins><span class="vh">[new:] </span>', "</ins>"),
}


def diff_side(ops: Iterable[WordOp], which: str) -> Markup:
    """One side of a word diff (:func:`web.diff.word_diff`), escaped: ``"before"`` gives
    the canonical words with the changed ones struck (``<del>``), ``"after"`` the
    variant's with the new ones marked (``<ins>``); each mark says so to screen readers.

    (A filter, not a template macro: a big story's page shows hundreds of these, and a
    macro call per word run was a fifth of its rendering time.)"""
    kind, start, end = _SIDE_MARKS[which]
    out: list[str] = []
    for op in ops:
        if op.kind == "same":
            out.append(str(escape(op.text)))
        elif op.kind == kind:
            out.append(f"{start}{escape(op.text)}{end}")
    return Markup(" ".join(out))


_EMAIL_NAME = re.compile(r"^\s*\S+@\S+\s*\((.+)\)\s*$")


def author_name(author: str | None) -> str:
    """``"desk@example.org (Jane Doe)"`` -> ``"Jane Doe"``; anything else as it is."""
    if not author:
        return ""
    m = _EMAIL_NAME.match(author)
    return m.group(1).strip() if m else author.strip()


def plural(n: int, one: str, many: str | None = None) -> str:
    """``"1 outlet"``, ``"3 outlets"``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def percent(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.0f}%"


# An address in free text (an error message): scheme, user name and password, the rest, query.
_ADDRESS = re.compile(
    r"\b([a-z][a-z0-9+.-]*://)(?:[^\s/]*@)?([^\s?#'\"<>]*)(?:\?[^\s#'\"<>]*)?", re.IGNORECASE
)


def without_keys(text: str | None) -> str:
    """``text`` with the user names, passwords and queries of the addresses in it left
    out: where a private feed keeps its subscriber's key (a feed's last error is shown
    on its public page, and may quote where it was redirected)."""
    return _ADDRESS.sub(lambda m: m.group(1) + m.group(2), text or "")


def register(app: Flask) -> None:
    app.jinja_env.filters.update(
        safe_html=safe_html,
        when=when,
        iso=iso,
        safe_url=safe_url,
        highlight=highlight,
        diff_side=diff_side,
        plural=plural,
        percent=percent,
        author_name=author_name,
        without_keys=without_keys,
    )

    @app.context_processor
    def site() -> dict[str, object]:
        return {"site_title": app.config.get("AGGREGATOR_SITE_TITLE") or "the aggregator"}
