"""OPML subscription lists: read with listparser, write with the standard library."""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate

import listparser

__all__ = ["OpmlEntry", "OpmlError", "read", "write"]


class OpmlError(ValueError):
    """The file is not an OPML subscription list."""


@dataclass(frozen=True)
class OpmlEntry:
    url: str
    title: str | None


_BOMS = (  # UTF-32 before UTF-16: the UTF-32 LE mark begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_DECLARED = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")
_DECLARATION = re.compile(r"\s*<\?xml[^>]*\?>")


def _as_utf8(data: bytes) -> bytes:
    """The document in UTF-8 without its XML declaration: listparser (without lxml)
    decodes every file as UTF-8, and a Latin-1 or UTF-16 export failed to import."""
    codec = next((c for bom, c in _BOMS if data.startswith(bom)), None)
    if codec is None and (m := _DECLARED.match(data)):
        try:
            codec = codecs.lookup(m.group(1).decode("ascii")).name
        except LookupError:
            codec = None
    if codec is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", errors="replace")
    else:
        text = data.decode(codec, errors="replace")
    text = text.lstrip("\ufeff")
    if declaration := _DECLARATION.match(text):
        text = text[declaration.end() :]
    return text.encode("utf-8", errors="replace")


def read(data: bytes) -> list[OpmlEntry]:
    """Feeds listed in an OPML document (nested folders included), in document order."""
    if not isinstance(data, bytes):  # listparser would take a str for a URL to fetch
        raise TypeError("OPML must be given as bytes")
    try:
        result = listparser.parse(_as_utf8(data))
    except Exception as exc:  # listparser's fallback parser raises what it meets
        raise OpmlError(f"cannot read the OPML file: {type(exc).__name__}") from exc
    feeds = [
        OpmlEntry(str(f["url"]).strip(), (f.get("title") or None))
        for f in result.get("feeds", [])
        if str(f.get("url", "")).strip()
    ]
    if not feeds:
        problem = result.get("bozo_exception")
        raise OpmlError(f"no feeds found in the OPML file{': ' + str(problem) if problem else ''}")
    return feeds


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def write(feeds: Iterable[tuple[str, str | None, str | None]], title: str) -> str:
    """An OPML 2.0 document listing ``(url, title, site url)`` feeds; characters that
    XML cannot hold (control characters in a stored title) are left out."""

    def x(text: str) -> str:
        return _NOT_XML.sub("", text)

    feeds = [(x(url), name and x(name), site and x(site)) for url, name, site in feeds]
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = x(title)
    ET.SubElement(head, "dateCreated").text = formatdate(usegmt=True)
    body = ET.SubElement(root, "body")
    for url, name, site in feeds:
        attrs = {"type": "rss", "text": name or url, "xmlUrl": url}
        if name:
            attrs["title"] = name
        if site:
            attrs["htmlUrl"] = site
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
