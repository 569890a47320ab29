from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.parse import parse_feed
from tests.conftest import EXAMPLES, rss

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom Test</title><link href="https://atom.example/"/><id>urn:x</id><updated>2024-10-25T10:00:00Z</updated>
  <entry><id>urn:e1</id><title type="html">&lt;b&gt;Bold&lt;/b&gt; title</title>
    <link rel="alternate" href="/posts/1"/><published>2024-10-25T09:00:00+02:00</published>
    <updated>2024-10-25T10:00:00Z</updated><author><name>Ann</name></author>
    <category term="world"/>
    <summary>Short</summary><content type="html">&lt;p&gt;Long body&lt;/p&gt;</content></entry>
</feed>"""


def test_rss() -> None:
    body = rss(
        [
            {
                "title": "One",
                "link": "https://x.example/1",
                "guid": "g1",
                "pubDate": "Fri, 25 Oct 2024 14:15:00 GMT",
                "description": "<p>Hi</p>",
            }
        ],
        extra="<ttl>90</ttl>",
    )
    p = parse_feed(body, "https://x.example/feed")
    assert p.error is None and p.warning is None
    assert p.title == "Test Feed" and p.ttl_minutes == 90
    (e,) = p.entries
    assert (e.link, e.title) == ("https://x.example/1", "One")
    assert e.guid is not None and e.guid.endswith("g1")  # feedparser resolves permalink guids
    assert e.published == 1729865700.0
    assert "Hi" in e.summary_html


def test_atom_with_relative_link() -> None:
    p = parse_feed(ATOM, "https://atom.example/feed.xml")
    (e,) = p.entries
    assert e.link == "https://atom.example/posts/1"
    assert e.published == 1729839600.0  # 07:00Z
    assert e.author == "Ann" and e.categories == ("world",)
    assert "Long body" in e.content_html and e.summary_html == "Short"
    assert "<b>Bold</b>" in e.title


def test_json_feed() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "JF",
        "home_page_url": "https://jf.example/",
        "items": [
            {
                "id": "1",
                "url": "https://jf.example/1",
                "title": "First",
                "content_html": "<p>x</p>",
                "date_published": "2024-10-25T10:00:00Z",
                "authors": [{"name": "Bo"}],
                "tags": ["a"],
            },
            {"id": 2, "content_text": "plain\n\ntext", "date_published": "not a date"},
            "junk",
        ],
    }
    p = parse_feed(
        json.dumps(doc).encode(), "https://jf.example/feed.json", {"Content-Type": "application/feed+json"}
    )
    assert p.title == "JF" and len(p.entries) == 2
    assert p.entries[0].published == 1729850400.0 and p.entries[0].author == "Bo"
    assert p.entries[1].guid == "2" and "<p>plain</p>" in p.entries[1].content_html
    assert p.entries[1].published is None
    assert p.warning and "skipped" in p.warning


def test_broken_xml_still_gives_entries_with_a_warning() -> None:
    body = rss([{"title": "One", "guid": "g1", "description": "x"}]).replace(
        b"</channel></rss>", b"<oops></channel>"
    )
    p = parse_feed(body, "https://x.example/feed")
    assert p.error is None
    assert p.warning and "malformed" in p.warning
    assert len(p.entries) == 1


def test_not_a_feed_is_an_error() -> None:
    for body in (b"<html><body>Hello</body></html>", b"", b"\x00\x01garbage", b"{not json", b"[1,2]"):
        p = parse_feed(body, "https://x.example/")
        assert p.error, body
        assert p.entries == []


def test_demo_feeds_parse_cleanly() -> None:
    for path in sorted((EXAMPLES / "feeds").glob("*.xml")):
        p = parse_feed(path.read_bytes(), path.as_uri())
        assert p.error is None and p.warning is None, path
        assert p.entries and all(e.title and e.link and e.published for e in p.entries)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_never_raises_on_any_bytes(body: bytes) -> None:
    p = parse_feed(body, "https://x.example/feed")
    assert p.error is not None or isinstance(p.entries, list)


LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title>
<item><title>Laughs &lol9;</title><guid>1</guid><description>&lol9;</description></item></channel></rss>"""


def test_billion_laughs_is_not_expanded() -> None:
    import time

    started = time.monotonic()
    p = parse_feed(LAUGHS, "https://x.example/feed")
    assert time.monotonic() - started < 2
    assert p.error is None and p.warning  # read leniently, entities left unexpanded
    assert all(len(e.title) < 100 and len(e.summary_html) < 100 for e in p.entries)


def test_external_entities_are_not_resolved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
        '<rss version="2.0"><channel><title>t</title><item><title>&xxe;</title>'
        "<description>&xxe;</description><guid>1</guid></item></channel></rss>"
    ).encode()
    p = parse_feed(body, "https://x.example/feed")
    assert "TOP-SECRET" not in repr(p)


def test_invalid_utf8_and_wrong_declared_encoding() -> None:
    good = rss([{"title": "Café crème", "guid": "1", "description": "naïve"}])
    broken = good.replace("crème".encode(), b"cr\xe8me\xff\xfe")  # latin-1 bytes in a UTF-8 document
    p = parse_feed(broken, "https://x.example/feed")
    assert p.error is None and len(p.entries) == 1 and p.entries[0].title.startswith("Caf")
    declared = good.decode().replace('encoding="utf-8"', 'encoding="iso-8859-1"').encode("utf-8")
    q = parse_feed(
        declared, "https://x.example/feed", {"Content-Type": "application/rss+xml; charset=windows-1251"}
    )
    assert q.error is None and len(q.entries) == 1


def _has_surrogate(text: str | None) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text or "")


def _raw_rss(titles: list[str]) -> bytes:
    """RSS whose titles are written as given (character references kept)."""
    items = "".join(f"<item><title>{t}</title><guid>g{n}</guid></item>" for n, t in enumerate(titles))
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>{items}</channel></rss>'.encode()
    )


def test_character_references_to_surrogates_do_not_lose_the_feed() -> None:
    """CMSes write an emoji as two references to its UTF-16 halves; feedparser's lenient
    parser raised on them, and the whole feed was lost."""
    body = _raw_rss(
        [
            "Smile &#55357;&#56832; now",
            "Hex &#xD83D;&#xDE00;, lone &#55357; and &#xdc00;",
            "Plain &#233;t&#xE9; &#128512;",
        ]
    )
    parsed = parse_feed(body, "https://x.example/")
    assert parsed.error is None
    assert [e.title for e in parsed.entries] == [
        "Smile \U0001f600 now",
        "Hex \U0001f600, lone \ufffd and \ufffd",
        "Plain été \U0001f600",
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0xD700, 0xE100) | st.integers(0x20, 0x7E), min_size=1, max_size=12))
def test_any_character_references_give_text_without_surrogates(codes: list[int]) -> None:
    refs = "".join(f"&#{c};" if c % 2 else f"&#x{c:X};" for c in codes)
    parsed = parse_feed(_raw_rss([f"T {refs}"]), "https://x.example/")
    assert parsed.error is None and len(parsed.entries) == 1
    assert not _has_surrogate(parsed.entries[0].title)


def test_lone_surrogates_in_a_json_feed_are_replaced() -> None:
    """A JSON string cut in half can hold a lone ``\\ud800``: it cannot be stored (SQLite
    refuses it), which lost every item of the feed."""
    body = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "J\\ud800",'
        b' "items": [{"id": "bad\\uD800", "url": "https://x.example/\\udc00",'
        b' "content_html": "<p>ok \\ud83d\\ude00</p>", "tags": ["t\\udfff"]}]}'
    )
    parsed = parse_feed(body, "https://x.example/")
    (e,) = parsed.entries
    assert parsed.title == "J\ufffd" and e.guid == "bad\ufffd" and e.content_html == "<p>ok \U0001f600</p>"
    assert not any(_has_surrogate(v) for v in (e.link, *e.categories))


def test_an_absurd_ttl_is_taken_as_a_long_one() -> None:
    body = rss([{"title": "T", "guid": "1"}], extra="<ttl>1" + "0" * 400 + "</ttl>")
    assert parse_feed(body, "https://x.example/").ttl_minutes == 10**7


def test_a_json_feed_title_is_plain_text() -> None:
    body = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "J",
            "items": [{"id": "1", "title": "Why <b>bold</b> & more"}],
        }
    ).encode()
    (e,) = parse_feed(body, "https://x.example/").entries
    from aggregator.normalize import normalize_entry

    assert normalize_entry(e).title == "Why <b>bold</b> & more"


def test_a_giant_attribute_list_is_dropped_before_parsing() -> None:
    """feedparser took 232 s over one <item> with 100,000 attributes: a tag over 64 KB
    keeps its name (and its closing slash), and what it holds is read."""
    from aggregator.parse import _drop_giant_attribute_lists

    attrs = " ".join(f'a{i}="x"' for i in range(10_000))
    body = (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item {attrs}><title>hi</title>'
        f"<guid {attrs}/></item><item><title>two</title></item></channel></rss>"
    ).encode()
    assert _drop_giant_attribute_lists(body) == (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><item><title>hi</title>'
        b"<guid/></item><item><title>two</title></item></channel></rss>"
    )
    assert [e.title for e in parse_feed(body, "http://x.example/", {}).entries] == ["hi", "two"]


def test_one_bad_value_does_not_lose_a_json_feed() -> None:
    """A malformed address in one item, a stray Latin-1 byte or a 5,000-digit id failed
    the whole feed (RSS and Atom are read leniently in each case)."""
    import json

    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "home_page_url": "https://[news.example]/",
        "items": [
            {"id": "1", "url": "https://[news.example]/20", "title": "Bad address", "content_text": "a"},
            {"id": "2", "url": "https://news.example/21", "title": "Caf\u00e9 opens", "content_text": "b"},
        ],
    }
    body = json.dumps(doc, ensure_ascii=False).replace('"id": "1"', '"id": ' + "7" * 5000).encode()
    body = body.replace("Caf\u00e9".encode(), b"Caf\xe9")  # Latin-1, not UTF-8
    parsed = parse_feed(body, "https://news.example/feed.json", {"content-type": "application/feed+json"})
    assert parsed.error is None and "not valid UTF-8" in (parsed.warning or "")
    assert [(e.guid, e.link, e.title) for e in parsed.entries] == [
        ("7" * 5000, None, "Bad address"),
        ("2", "https://news.example/21", "Caf\ufffd opens"),
    ]
    deep = (
        b'{"version": "https://jsonfeed.org/version/1.1", "items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    )
    assert "nested too deeply" in (
        parse_feed(deep, "https://x.example/f.json", {"content-type": "application/feed+json"}).error or ""
    )


def test_text_xml_without_a_charset_reads_the_document_declaration() -> None:
    """nginx serves .xml files as text/xml without a charset: every UTF-8 feed so served
    carried a false "declared encoding was wrong" warning (RFC 3023's us-ascii)."""
    body = '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Café</title><item><title>Zürich</title><guid>1</guid></item></channel></rss>'.encode()
    parsed = parse_feed(body, "https://x.example/f.xml", {"content-type": "text/xml"})
    assert parsed.warning is None and parsed.error is None and parsed.entries[0].title == "Zürich"
    latin = parse_feed(
        body.replace(b"utf-8", b"iso-8859-1"),
        "https://x.example/f.xml",
        {"content-type": "text/xml; charset=utf-8"},
    )
    assert latin.entries[0].title == "Zürich"  # a charset given is still the charset
