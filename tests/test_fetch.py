from __future__ import annotations

import gzip
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from aggregator.fetch import Fetcher, FetchLimits
from tests.conftest import FeedServer, Route, rss

LIMITS = FetchLimits(
    connect_timeout=2,
    read_timeout=1,
    total_timeout=3,
    max_bytes=50_000,
    max_redirects=3,
    user_agent="test-agent/1 (+https://x)",
)


@pytest.fixture
def fetcher() -> Fetcher:
    with Fetcher(LIMITS) as f:
        yield f  # type: ignore[misc]


def dribble(h: BaseHTTPRequestHandler, *pieces: bytes) -> None:
    """Write the first of ``pieces``, then the last one every half second, 100 times."""
    try:
        h.wfile.write(pieces[0])
        for _ in range(100):
            h.wfile.flush()
            time.sleep(0.5)
            h.wfile.write(pieces[-1])
    except OSError:
        pass


def redirect(to: str, code: int) -> Route:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return Route(handler=handle)


def test_ok_sends_user_agent_and_reads_validators(fetcher: Fetcher, feed_server: FeedServer) -> None:
    feed_server.routes["/f"] = Route(
        rss([]),
        etag='"e1"',
        last_modified="Fri, 25 Oct 2024 14:15:00 GMT",
        headers={"Cache-Control": "max-age=900"},
    )
    r = fetcher.fetch(feed_server.url("/f"))
    assert r.status == "ok" and r.body.startswith(b"<?xml") and r.http_status == 200
    assert (r.etag, r.last_modified, r.max_age) == ('"e1"', "Fri, 25 Oct 2024 14:15:00 GMT", 900.0)
    assert feed_server.hits("/f")[0]["user-agent"] == "test-agent/1 (+https://x)"
    again = fetcher.fetch(feed_server.url("/f"), etag='"e1"')
    assert again.status == "not_modified" and again.body == b""


def test_gzip_is_decoded(fetcher: Fetcher, feed_server: FeedServer) -> None:
    body = rss([{"title": "x", "guid": "1"}])
    feed_server.routes["/gz"] = Route(gzip.compress(body), headers={"Content-Encoding": "gzip"})
    r = fetcher.fetch(feed_server.url("/gz"))
    assert r.status == "ok" and r.body == body


def test_gzip_of_several_members_is_decoded_whole(fetcher: Fetcher, feed_server: FeedServer) -> None:
    """RFC 1952 allows members one after another (servers that compress in pieces send
    them): only the first was read, and half the feed was lost."""
    body = rss([{"title": f"x{n}", "guid": str(n)} for n in range(40)])
    pieces = [body[k : k + 500] for k in range(0, len(body), 500)]
    feed_server.routes["/gz"] = Route(
        b"".join(map(gzip.compress, pieces)), headers={"Content-Encoding": "gzip"}
    )
    feed_server.routes["/padded"] = Route(
        gzip.compress(body) + b"\x00" * 64, headers={"Content-Encoding": "gzip"}
    )
    for path in ("/gz", "/padded"):
        r = fetcher.fetch(feed_server.url(path))
        assert r.status == "ok" and r.body == body, path
    many = b"".join(gzip.compress(b" " * 20_000) for _ in range(5))  # 100,000 bytes in all
    feed_server.routes["/many"] = Route(many, headers={"Content-Encoding": "gzip"})
    r = fetcher.fetch(feed_server.url("/many"))
    assert r.status == "error" and "50,000 byte limit" in (r.error or "")


def test_size_cap_applies_after_decompression(fetcher: Fetcher, feed_server: FeedServer) -> None:
    bomb = gzip.compress(b"<rss>" + b" " * 5_000_000)
    assert len(bomb) < LIMITS.max_bytes
    feed_server.routes["/bomb"] = Route(bomb, headers={"Content-Encoding": "gzip"})
    feed_server.routes["/big"] = Route(b"x" * 60_000)
    for path in ("/bomb", "/big"):
        r = fetcher.fetch(feed_server.url(path))
        assert r.status == "error" and "50,000 byte limit" in (r.error or "")


def test_redirects_permanent_and_temporary(fetcher: Fetcher, feed_server: FeedServer) -> None:
    feed_server.routes["/final"] = Route(rss([]))
    feed_server.routes["/moved"] = redirect("/final", 301)
    feed_server.routes["/temp"] = redirect("/final", 302)
    feed_server.routes["/mixed"] = redirect("/temp", 308)
    moved = fetcher.fetch(feed_server.url("/moved"))
    assert moved.status == "ok" and moved.permanent_url == feed_server.url("/final")
    temp = fetcher.fetch(feed_server.url("/temp"))
    assert temp.status == "ok" and temp.permanent_url is None and temp.final_url == feed_server.url("/final")
    assert fetcher.fetch(feed_server.url("/mixed")).permanent_url is None


def test_redirect_loop_and_too_many(fetcher: Fetcher, feed_server: FeedServer) -> None:
    feed_server.routes["/a"] = redirect("/b", 302)
    feed_server.routes["/b"] = redirect("/a", 302)
    loop = fetcher.fetch(feed_server.url("/a"))
    assert loop.status == "error" and "redirect loop" in (loop.error or "")
    for n in range(6):
        feed_server.routes[f"/r{n}"] = redirect(f"/r{n + 1}", 302)
    far = fetcher.fetch(feed_server.url("/r0"))
    assert far.status == "error" and "too many redirects" in (far.error or "")


def test_redirect_to_other_scheme_refused(fetcher: Fetcher, feed_server: FeedServer) -> None:
    feed_server.routes["/file"] = redirect("file:///etc/passwd", 302)
    r = fetcher.fetch(feed_server.url("/file"))
    assert r.status == "error" and "unsupported" in (r.error or "")


def test_gone_and_retry_after(fetcher: Fetcher, feed_server: FeedServer) -> None:
    feed_server.routes["/gone"] = Route(b"", status=410)
    feed_server.routes["/busy"] = Route(b"", status=429, headers={"Retry-After": "120"})
    assert fetcher.fetch(feed_server.url("/gone")).status == "gone"
    busy = fetcher.fetch(feed_server.url("/busy"))
    assert busy.status == "error" and busy.retry_after == 120.0 and busy.http_status == 429


def test_hung_server_times_out(fetcher: Fetcher, feed_server: FeedServer) -> None:
    def hang(h: BaseHTTPRequestHandler) -> None:
        time.sleep(3)

    feed_server.routes["/hang"] = Route(handler=hang)
    started = time.monotonic()
    r = fetcher.fetch(feed_server.url("/hang"))
    assert r.status == "error" and "Timeout" in (r.error or "")
    assert time.monotonic() - started < 2.5


def test_trickling_server_hits_the_total_deadline(fetcher: Fetcher, feed_server: FeedServer) -> None:
    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        dribble(h, b"x")

    feed_server.routes["/slow"] = Route(handler=trickle)
    started = time.monotonic()
    r = fetcher.fetch(feed_server.url("/slow"))
    assert r.status == "error" and "too slow" in (r.error or "")
    assert time.monotonic() - started < LIMITS.total_timeout + 1.5


def test_connection_refused_is_an_error(fetcher: Fetcher) -> None:
    from tests.conftest import free_port

    r = fetcher.fetch(f"http://127.0.0.1:{free_port()}/feed")
    assert r.status == "error" and "Connect" in (r.error or "")


def test_local_file_and_conditional_mtime(fetcher: Fetcher, tmp_path: Path) -> None:
    p = tmp_path / "f.xml"
    p.write_bytes(rss([]))
    r = fetcher.fetch(p.as_uri())
    assert r.status == "ok" and r.body == p.read_bytes() and r.last_modified
    assert fetcher.fetch(p.as_uri(), last_modified=r.last_modified).status == "not_modified"
    assert fetcher.fetch(str(tmp_path / "missing.xml")).status == "error"
    with Fetcher(LIMITS, allow_local_files=False) as strict:
        refused = strict.fetch(p.as_uri())
        assert refused.status == "error" and "not allowed" in (refused.error or "")


def test_unsupported_scheme(fetcher: Fetcher) -> None:
    r = fetcher.fetch("ftp://example.org/feed")
    assert r.status == "error" and "unsupported URL scheme" in (r.error or "")


def test_a_dns_answer_that_changes_after_the_check_is_caught(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name looked public when checked, but the connection reached
    a private address; nothing of the body is read."""
    import aggregator.fetch as fetch_mod

    feed_server.routes["/a.xml"] = Route(b"<rss><channel><title>secret</title></channel></rss>")
    monkeypatch.setattr(fetch_mod, "address_problem", lambda url: None)  # the first answer: public
    with Fetcher(LIMITS, allow_private=False) as f:
        r = f.fetch(feed_server.url("/a.xml"))
    assert r.status == "error" and not r.body
    assert (
        r.error == "127.0.0.1 connected to a non-public address (127.0.0.1); not allowed by the configuration"
    )
    with Fetcher(LIMITS, allow_private=True) as f:  # allowed by the configuration: fetched
        assert f.fetch(feed_server.url("/a.xml")).status == "ok"


def test_stacked_and_raw_encodings_are_decoded(fetcher: Fetcher, feed_server: FeedServer) -> None:
    import zlib

    body = rss([{"title": "x", "guid": "1"}])
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    cases = {
        "/gz2": (gzip.compress(gzip.compress(body)), "gzip, gzip"),
        "/zlib": (zlib.compress(body), "deflate"),
        "/raw": (raw.compress(body) + raw.flush(), "deflate"),
        "/id": (body, "identity"),
    }
    for path, (data, encoding) in cases.items():
        feed_server.routes[path] = Route(data, headers={"Content-Encoding": encoding})
        r = fetcher.fetch(feed_server.url(path))
        assert r.status == "ok" and r.body == body, path
    assert feed_server.hits("/id")[0]["accept-encoding"] == "gzip, deflate"
    feed_server.routes["/br"] = Route(b"\x0b\x02\x80hello\x03", headers={"Content-Encoding": "br"})
    r = fetcher.fetch(feed_server.url("/br"))
    assert r.status == "error" and "unsupported Content-Encoding 'br'" in (r.error or "")
    feed_server.routes["/broken"] = Route(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert "broken gzip content" in (fetcher.fetch(feed_server.url("/broken")).error or "")


def test_a_decompression_bomb_never_sits_in_memory(fetcher: Fetcher, feed_server: FeedServer) -> None:
    """A few hundred bytes that stand for 500 MB (twice gzipped): decompressed in bounded
    steps, so no more than about the size limit is ever held."""
    import tracemalloc

    bomb = gzip.compress(gzip.compress(b"<rss>" + b" " * 500_000_000))
    assert len(bomb) < 2_000
    feed_server.routes["/bomb2"] = Route(bomb, headers={"Content-Encoding": "gzip, gzip"})
    tracemalloc.start()
    try:
        r = fetcher.fetch(feed_server.url("/bomb2"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status == "error" and "50,000 byte limit" in (r.error or "")
    assert peak < 5_000_000, peak


def test_odd_validators_and_cache_headers_do_not_break_a_feed(
    fetcher: Fetcher, feed_server: FeedServer
) -> None:
    """A non-ASCII ETag cannot be sent back (it failed every later poll): it is not kept.
    Digits that are not ASCII, and dates without a zone, are read or ignored, never fatal."""
    feed_server.routes["/odd"] = Route(
        rss([]),
        headers={"ETag": '"caf\xe9"', "Cache-Control": "max-age=\xb2", "Retry-After": "\xb9"},
        last_modified="Fri, 25 Oct 2024 14:15:00 \u00e9",
    )
    r = fetcher.fetch(feed_server.url("/odd"))
    assert r.status == "ok" and r.etag is None and r.last_modified is None
    assert r.max_age is None and r.retry_after is None
    again = fetcher.fetch(feed_server.url("/odd"), etag='"caf\xe9"', last_modified="\u200bFri")
    assert again.status == "ok"  # not sent, instead of a UnicodeEncodeError
    assert "if-none-match" not in feed_server.hits("/odd")[-1]
    feed_server.routes["/later"] = Route(
        b"", status=503, headers={"Retry-After": "Fri, 31 Dec 9999 23:59:59 -0000"}
    )
    busy = fetcher.fetch(feed_server.url("/later"))
    assert busy.status == "error" and busy.retry_after is not None and busy.retry_after > 1e9


def test_headers_trickling_in_hit_the_total_deadline(fetcher: Fetcher, feed_server: FeedServer) -> None:
    """A server that sends a header line just before each read would time out: the
    overall deadline holds before the body starts too (it was checked in the body only)."""

    def drip(h: BaseHTTPRequestHandler) -> None:
        dribble(h, b"HTTP/1.1 200 OK\r\n", b"X-Slow: yes\r\n")

    feed_server.routes["/drip"] = Route(handler=drip)
    started = time.monotonic()
    r = fetcher.fetch(feed_server.url("/drip"))
    assert r.status == "error" and "too slow" in (r.error or ""), r.error
    assert time.monotonic() - started < LIMITS.total_timeout + 1.5


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://[64:ff9b::a9fe:a9fe]/", True),  # NAT64 of the cloud metadata address
        ("http://[2002:a9fe:a9fe::]/", True),  # 6to4 of it
        ("http://[::127.0.0.1]/", True),  # IPv4-compatible loopback
        ("http://[::ffff:10.0.0.1]/", True),  # IPv4-mapped private
        ("http://[64:ff9b::808:808]/", False),  # NAT64 of a public address
        ("http://[2001:4860:4860::8888]/", False),
    ],
)
def test_ipv4_inside_ipv6_is_checked_too(url: str, refused: bool) -> None:
    from aggregator.fetch import address_problem

    assert (address_problem(url) is not None) == refused


def _close_delimited(
    body: bytes, *, encoding: str | None = None, pause: float = 0.0, etag: str | None = None
):  # type: ignore[no-untyped-def]
    """A handler that sends ``body`` without Content-Length (it ends when the connection
    does), in 500-byte pieces ``pause`` seconds apart; a 304 for the ``etag``."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        if etag and h.headers.get("If-None-Match") == etag:
            h.send_response(304)
            h.send_header("ETag", etag)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        if encoding:
            h.send_header("Content-Encoding", encoding)
        if etag:
            h.send_header("ETag", etag)
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for k in range(0, len(body), 500):
                h.wfile.write(body[k : k + 500])
                h.wfile.flush()
                time.sleep(pause)
        except OSError:
            pass
        h.close_connection = True

    return handler


def _many(n: int) -> bytes:
    return rss([{"title": f"Story {k} about topic {k * 7}", "guid": str(k)} for k in range(n)])


def test_a_body_cut_at_the_deadline_is_an_error_not_half_a_feed(
    fetcher: Fetcher, feed_server: FeedServer
) -> None:
    """Without Content-Length, the deadline's watchdog cutting the connection looked like
    the end of the body: 4,000 of 10,356 bytes were taken for the feed."""
    feed_server.routes["/slow"] = Route(handler=_close_delimited(_many(200), pause=0.4))
    r = fetcher.fetch(feed_server.url("/slow"))
    assert r.status == "error" and r.error is not None and r.error.startswith("too slow") and r.body == b""


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_that_stops_early_is_an_error(
    fetcher: Fetcher, feed_server: FeedServer, encoding: str
) -> None:
    """A connection closed in the middle of a compressed body gave half the feed as "ok"."""
    import zlib

    body = _many(200)
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    feed_server.routes["/whole"] = Route(handler=_close_delimited(packed, encoding=encoding))
    feed_server.routes["/cut"] = Route(
        handler=_close_delimited(packed[: len(packed) // 2], encoding=encoding)
    )
    whole = fetcher.fetch(feed_server.url("/whole"))
    assert whole.status == "ok" and whole.body == body
    r = fetcher.fetch(feed_server.url("/cut"))
    assert (
        r.status == "error"
        and r.error == f"truncated {encoding} content: the connection ended before the feed did"
    )


@pytest.mark.parametrize("encoding", ["none", "UTF-8", "text", "binary"])
def test_a_content_encoding_that_is_no_compression_is_read_as_none(
    fetcher: Fetcher, feed_server: FeedServer, encoding: str
) -> None:
    """Servers send "Content-Encoding: none" (or a charset) for plain bodies; every such
    feed failed on every poll."""
    body = _many(3)
    feed_server.routes["/e.xml"] = Route(body, headers={"Content-Encoding": encoding})
    r = fetcher.fetch(feed_server.url("/e.xml"))
    assert r.status == "ok" and r.body == body
    feed_server.routes["/br.xml"] = Route(body, headers={"Content-Encoding": "br"})
    assert (
        fetcher.fetch(feed_server.url("/br.xml")).error
        == "unsupported Content-Encoding 'br' (asked for gzip or deflate)"
    )


def test_freshness_is_read_on_the_servers_clock_and_net_of_a_caches_age(
    fetcher: Fetcher, feed_server: FeedServer
) -> None:
    """Expires was compared with our clock (a server 3 hours ahead turned 10 minutes into
    3 h 10 min), and a cached copy's Age was ignored (a day-old copy of a one-day
    max-age counted as fresh for a day)."""
    import email.utils

    ahead = time.time() + 3 * 3600

    def answer(status: int, body: bytes, **headers: str):  # type: ignore[no-untyped-def]
        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response_only(status)  # (send_response would add a Date of our clock)
            h.send_header("Date", email.utils.formatdate(ahead, usegmt=True))
            for name, value in headers.items():
                h.send_header(name.replace("_", "-"), value)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        return handler

    feed_server.routes["/exp.xml"] = Route(
        handler=answer(200, rss([]), Expires=email.utils.formatdate(ahead + 600, usegmt=True))
    )
    feed_server.routes["/age.xml"] = Route(
        rss([]), headers={"Cache-Control": "max-age=86400", "Age": "86000"}
    )
    feed_server.routes["/retry.xml"] = Route(
        handler=answer(503, b"", Retry_After=email.utils.formatdate(ahead + 1800, usegmt=True))
    )
    assert fetcher.fetch(feed_server.url("/exp.xml")).max_age == 600
    assert fetcher.fetch(feed_server.url("/age.xml")).max_age == 400
    assert fetcher.fetch(feed_server.url("/retry.xml")).retry_after == 1800


def test_a_redirect_back_with_a_cookie_is_followed_once(fetcher: Fetcher, feed_server: FeedServer) -> None:
    """Sites that check for cookies answer 302 to the same URL with a Set-Cookie: that
    was taken for a redirect loop.  Without the cookie coming back, it still is one."""
    body = rss([{"title": "a", "guid": "1"}])

    def cookie_check(h: BaseHTTPRequestHandler) -> None:
        if "seen=1" not in (h.headers.get("Cookie") or ""):
            h.send_response(302)
            h.send_header("Set-Cookie", "seen=1; Path=/")
            h.send_header("Location", "/cc.xml")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def stubborn(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Set-Cookie", "no=thanks; Path=/nowhere")
        h.send_header("Location", "/stubborn.xml")
        h.send_header("Content-Length", "0")
        h.end_headers()

    feed_server.routes["/cc.xml"] = Route(handler=cookie_check)
    feed_server.routes["/stubborn.xml"] = Route(handler=stubborn)
    r = fetcher.fetch(feed_server.url("/cc.xml"))
    assert r.status == "ok" and r.body == body
    r = fetcher.fetch(feed_server.url("/stubborn.xml"))
    assert r.status == "error" and r.error is not None and r.error.startswith("redirect loop")
