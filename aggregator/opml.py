"""OPML subscription lists: read with listparser, write with the standard library."""

from __future__ import annotations

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


def read(data: bytes) -> list[OpmlEntry]:
    """Feeds listed in an OPML document (nested folders included), in document order."""
    if not isinstance(data, bytes):  # listparser would take a str for a URL to fetch
        raise TypeError("OPML must be given as bytes")
    result = listparser.parse(data)
    feeds = [
        OpmlEntry(str(f["url"]).strip(), (f.get("title") or None))
        for f in result.get("feeds", [])
        if str(f.get("url", "")).strip()
    ]
    if not feeds:
        problem = result.get("bozo_exception")
        raise OpmlError(f"no feeds found in the OPML file{': ' + str(problem) if problem else ''}")
    return feeds


def write(feeds: Iterable[tuple[str, str | None, str | None]], title: str) -> str:
    """An OPML 2.0 document listing ``(url, title, site url)`` feeds."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
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
