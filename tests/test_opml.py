from __future__ import annotations

import codecs
import xml.etree.ElementTree as ET

import pytest

from aggregator.opml import OpmlError, read, write


def test_read_nested_and_write_round_trip() -> None:
    doc = b"""<?xml version="1.0"?><opml version="2.0"><head><title>x</title></head><body>
      <outline text="A" title="A feed" type="rss" xmlUrl="https://a.example/feed"/>
      <outline text="Folder"><outline text="B" xmlUrl="https://b.example/rss"/></outline>
    </body></opml>"""
    entries = read(doc)
    assert [(e.url, e.title) for e in entries] == [
        ("https://a.example/feed", "A"),
        ("https://b.example/rss", "B"),
    ]
    again = read(write([(e.url, e.title, None) for e in entries], title="t").encode())
    assert [(e.url, e.title) for e in again] == [(e.url, e.title) for e in entries]


def test_write_escapes() -> None:
    out = write([("https://x.example/?a=1&b=2", 'Quotes " & <tags>', "https://x.example/")], title="t & t")
    assert read(out.encode())[0].url == "https://x.example/?a=1&b=2"
    assert read(out.encode())[0].title == 'Quotes " & <tags>'


@pytest.mark.parametrize("doc", [b"", b"garbage", b"<opml><body></body></opml>", b"<html>hi</html>"])
def test_no_feeds_is_a_clear_error(doc: bytes) -> None:
    with pytest.raises(OpmlError, match="no feeds found"):
        read(doc)


def test_refuses_strings() -> None:
    with pytest.raises(TypeError):
        read("https://example.org/list.opml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "doc",
    [
        '<?xml version="1.0" encoding="ISO-8859-1"?><opml version="2.0"><body>'
        '<outline text="Café" xmlUrl="https://a.example/f"/></body></opml>'.encode("latin-1"),
        '<?xml version="1.0" encoding="UTF-16"?><opml version="2.0"><body>'
        '<outline text="Café" xmlUrl="https://a.example/f"/></body></opml>'.encode("utf-16"),
        codecs.BOM_UTF8
        + '<opml version="2.0"><body><outline text="Café" xmlUrl="https://a.example/f"/>'
        "</body></opml>".encode(),
        '<opml version="2.0"><body><outline text="Café" xmlUrl="https://a.example/f"/></body></opml>'.encode(
            "cp1252"
        ),  # undeclared and not UTF-8
    ],
)
def test_lists_in_other_encodings_are_read(doc: bytes) -> None:
    """Exports from older readers come in Latin-1 or UTF-16 (a traceback and an HTTP 500)."""
    assert [(e.url, e.title) for e in read(doc)] == [("https://a.example/f", "Café")]


def test_written_lists_are_xml_whatever_the_titles_hold() -> None:
    out = write([("https://x.example/f", "Bad\x01title\ud800", None)], title="t\x0b")
    ET.fromstring(out)
    assert [(e.url, e.title) for e in read(out.encode())] == [("https://x.example/f", "Badtitle")]
