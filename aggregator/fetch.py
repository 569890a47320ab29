"""Fetching feed documents: HTTP(S) through httpx, and local files for offline demos.

Every request has connect/read timeouts, an overall deadline and a cap on the
decompressed body size.  Redirects are followed here, one hop at a time, so that
permanent moves can be told from temporary ones and loops are caught.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from aggregator.models import FetchResult
from aggregator.settings import FetchSettings

__all__ = [
    "FetchLimits",
    "Fetcher",
    "address_problem",
    "address_problems",
    "feed_url_form",
    "is_local",
    "local_path",
]

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
_PERMANENT = {301, 308}
_REDIRECT = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_bytes: int
    max_redirects: int
    user_agent: str

    @classmethod
    def from_settings(cls, s: FetchSettings) -> FetchLimits:
        return cls(
            s.connect_timeout, s.read_timeout, s.total_timeout, s.max_bytes, s.max_redirects, s.user_agent
        )


def feed_url_form(url: str) -> str:
    """The one form an http(s) feed URL is stored in, so one feed is not subscribed
    twice: scheme and host in lower case, no default port, no ``#fragment``, an empty
    path as ``/``.  Other URLs, and ones that do not parse, are returned as given."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return url
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def is_local(url: str) -> bool:
    """A ``file:`` URL or a plain filesystem path (no scheme)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:  # "http://[::1": not a file, and not a URL either
        return False
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and os.name == "nt")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _non_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one (NAT64, 6to4, the old "compatible" form)
        # reaches that IPv4 host where such routing exists.
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and (ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1)):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and _non_public(inner):
            return True
    return not ip.is_global or ip.is_multicast


def peer_problem(resp: httpx.Response) -> str | None:
    """Why the server that answered must not be read from, or None.

    :func:`address_problem` resolves the name before the request; the HTTP client
    resolves it again to connect, and a DNS answer can change in between (DNS
    rebinding).  This checks the address the connection really reached, before
    any of the body is read.
    """
    stream = resp.extensions.get("network_stream")
    addr = stream.get_extra_info("server_addr") if stream is not None else None
    if not addr:
        return None
    ip = ipaddress.ip_address(str(addr[0]).split("%", 1)[0])
    if _non_public(ip):
        return f"{resp.url.host} connected to a non-public address ({ip}); not allowed by the configuration"
    return None


def address_problem(url: str) -> str | None:
    """Why ``url``'s host must not be fetched (loopback, private, link-local...), or None.

    Names that do not resolve are not a problem here: the fetch reports them.
    """
    host = urlsplit(url).hostname
    if not host:
        return "URL has no host"
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        return None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if _non_public(ip):
            return f"{host} resolves to a non-public address ({ip}); not allowed by the configuration"
    return None


# How many names address_problems resolves at once, and how long it waits for them all.
RESOLVERS = 16
RESOLVE_BUDGET_SECONDS = 10.0


def address_problems(
    urls: Iterable[str], *, workers: int = RESOLVERS, budget: float | None = None
) -> dict[str, str]:
    """:func:`address_problem` of many URLs, ``workers`` at a time: URL -> problem.

    Resolved one after another, an OPML list of 500 feeds took 500 DNS answers in a
    row, and minutes behind a slow resolver.  Names still unresolved after ``budget``
    seconds are let through, as names that do not resolve are: the fetch checks the
    address each connection really reaches (:func:`peer_problem`).
    """
    todo = list(dict.fromkeys(urls))
    problems: dict[str, str] = {}
    if not todo:
        return problems
    pool = ThreadPoolExecutor(max(1, min(workers, len(todo))), thread_name_prefix="resolve")
    try:
        pending = {pool.submit(address_problem, url): url for url in todo}
        deadline = time.monotonic() + (RESOLVE_BUDGET_SECONDS if budget is None else budget)
        while pending:
            done, _ = wait(
                pending, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            if not done:
                break
            for future in done:
                url = pending.pop(future)
                problem = future.result()
                if problem:
                    problems[url] = problem
    finally:
        # a resolver call cannot be interrupted: those under way end in their threads
        pool.shutdown(wait=False, cancel_futures=True)
    return problems


def local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        return Path(unquote(parts.path))
    return Path(url)


class Fetcher:
    """Fetches feeds.  One instance holds one connection pool; close it when done."""

    def __init__(
        self, limits: FetchLimits, *, allow_local_files: bool = True, allow_private: bool = True
    ) -> None:
        self.limits = limits
        self.allow_local_files = allow_local_files
        self.allow_private = allow_private
        self._client = httpx.Client(
            timeout=httpx.Timeout(
                connect=limits.connect_timeout,
                read=limits.read_timeout,
                write=limits.read_timeout,
                pool=limits.total_timeout,
            ),
            follow_redirects=False,
            # Only encodings decompressed here, in bounded steps (see _Decoder).
            headers={"User-Agent": limits.user_agent, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"},
            # No kept-alive connections: each request opens its own, which the deadline
            # watchdog of _fetch_http can then cut (feeds are mostly on different hosts).
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=0),
        )

        self._sockets: set[socket.socket] = set()  # connections of fetches under way
        self._sockets_lock = threading.Lock()
        self._aborted = False

    def close(self) -> None:
        self._client.close()

    def abort(self) -> None:
        """End every fetch under way now, and fail those that start later (from another
        thread: a poller stopping waited up to ``total_timeout`` for a slow host, and
        was killed first)."""
        self._aborted = True
        with self._sockets_lock:
            for sock in list(self._sockets):
                _cut(sock)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        """Fetch ``url``; never raises for network or server trouble."""
        started = time.monotonic()
        if self._aborted:
            return FetchResult(url, "error", error="not fetched: the update was stopped")
        try:
            if is_local(url):
                result = self._fetch_file(url, last_modified)
            else:
                result = self._fetch_http(url, etag, last_modified, started)
        except Exception as exc:
            if time.monotonic() - started >= self.limits.total_timeout:  # cut by the watchdog
                result = FetchResult(url, "error", error=self._too_slow())
            else:
                result = FetchResult(url, "error", error=f"{type(exc).__name__}: {exc}")
        elapsed = (time.monotonic() - started) * 1000
        return FetchResult(**{**result.__dict__, "elapsed_ms": elapsed})

    # -- local files -------------------------------------------------------------------

    def _fetch_file(self, url: str, last_modified: str | None) -> FetchResult:
        if not self.allow_local_files:
            return FetchResult(url, "error", error="local files are not allowed by the configuration")
        path = local_path(url)
        try:
            st = path.stat()
        except OSError as exc:
            return FetchResult(url, "error", error=f"cannot read file: {exc.strerror or exc}")
        if not path.is_file():
            return FetchResult(url, "error", error=f"not a file: {path}")
        stamp = email.utils.formatdate(st.st_mtime, usegmt=True) + f" ({st.st_size})"
        if last_modified == stamp:
            return FetchResult(url, "not_modified", last_modified=stamp)
        if st.st_size > self.limits.max_bytes:
            return FetchResult(url, "error", error=_too_big(self.limits.max_bytes))
        with path.open("rb") as fh:
            body = fh.read(self.limits.max_bytes + 1)
        if len(body) > self.limits.max_bytes:
            return FetchResult(url, "error", error=_too_big(self.limits.max_bytes))
        return FetchResult(url, "ok", body=body, last_modified=stamp, final_url=url)

    # -- HTTP --------------------------------------------------------------------------

    def _fetch_http(
        self, url: str, etag: str | None, last_modified: str | None, started: float
    ) -> FetchResult:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            return FetchResult(url, "error", error=f"unsupported URL scheme {scheme!r}")
        headers: dict[str, str] = {}
        if _validator(etag):
            headers["If-None-Match"] = str(etag)
        if _validator(last_modified):
            headers["If-Modified-Since"] = str(last_modified)
        # The overall deadline holds while headers trickle in too (the body loop below
        # checks it between reads): a watchdog shuts the connection's socket at the deadline.
        deadline = started + self.limits.total_timeout
        watchdogs: list[threading.Timer] = []

        def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.complete":
                sock = info["return_value"].get_extra_info("socket")
                if sock is not None:
                    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, [sock])
                    timer.daemon = True
                    timer.start()
                    watchdogs.append(timer)
                    with self._sockets_lock:
                        self._sockets.add(sock)
                        if self._aborted:  # stopped while this one connected
                            _cut(sock)
                    opened.append(sock)

        opened: list[socket.socket] = []
        try:
            return self._hops(url, headers, started, trace)
        finally:
            for timer in watchdogs:
                timer.cancel()
            with self._sockets_lock:
                self._sockets.difference_update(opened)

    def _too_slow(self) -> str:
        return f"too slow: no complete response within {self.limits.total_timeout:g} s"

    def _hops(
        self, url: str, headers: dict[str, str], started: float, trace: Callable[[str, dict[str, Any]], None]
    ) -> FetchResult:
        current = url
        seen, again = {url}, set()
        all_permanent = True
        for _hop in range(self.limits.max_redirects + 1):
            # Checked on every hop, so a redirect cannot lead into the private network.
            problem = None if self.allow_private else address_problem(current)
            if problem:
                return FetchResult(url, "error", error=problem)
            with self._client.stream("GET", current, headers=headers, extensions={"trace": trace}) as resp:
                problem = None if self.allow_private else peer_problem(resp)
                if problem:
                    return FetchResult(url, "error", error=problem)
                if resp.status_code in _REDIRECT and "location" in resp.headers:
                    target = urljoin(current, resp.headers["location"])
                    all_permanent = all_permanent and resp.status_code in _PERMANENT
                    # A redirect back with a cookie ("cookies on?" checks) is asked once more.
                    if target in seen and "set-cookie" in resp.headers and target not in again:
                        again.add(target)
                    elif target in seen:
                        return FetchResult(
                            url, "error", http_status=resp.status_code, error=f"redirect loop at {target}"
                        )
                    if urlsplit(target).scheme.lower() not in ("http", "https"):
                        return FetchResult(
                            url,
                            "error",
                            http_status=resp.status_code,
                            error=f"redirect to unsupported URL {target}",
                        )
                    seen.add(target)
                    current = target
                    continue
                return self._response(url, current, resp, all_permanent and current != url, started)
        return FetchResult(url, "error", error=f"too many redirects (more than {self.limits.max_redirects})")

    def _response(
        self, url: str, final: str, resp: httpx.Response, moved: bool, started: float
    ) -> FetchResult:
        hdrs = {k.lower(): v for k, v in resp.headers.items()}

        def out(status: str, **kw: Any) -> FetchResult:
            return FetchResult(
                url,
                status,
                http_status=resp.status_code,
                headers=hdrs,
                final_url=final,
                permanent_url=final if moved else None,
                retry_after=_retry_after(hdrs),
                max_age=_max_age(hdrs),
                **kw,
            )

        etag, last_modified = _validator(hdrs.get("etag")), _validator(hdrs.get("last-modified"))
        if resp.status_code == 304:
            return out("not_modified", etag=etag, last_modified=last_modified)
        if resp.status_code == 410:
            return out("gone", error="410 Gone: the publisher removed this feed")
        if resp.status_code >= 400:
            return out("error", error=f"HTTP {resp.status_code} {resp.reason_phrase or ''}".strip())
        limit = self.limits.max_bytes
        declared = hdrs.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            return out("error", error=_too_big(limit))  # (compressed, it is bigger still)
        try:
            decoder = _Decoder(hdrs.get("content-encoding", ""), limit)
        except ValueError as exc:
            return out("error", error=str(exc))
        chunks: list[bytes] = []
        size = 0
        for raw in resp.iter_raw():
            try:
                chunk = decoder.decode(raw)
            except ValueError as exc:
                return out("error", error=str(exc))
            size += len(chunk)
            if size > limit:
                return out("error", error=_too_big(limit))
            if time.monotonic() - started > self.limits.total_timeout:
                return out("error", error=self._too_slow())
            chunks.append(chunk)
        # A body that ends when the connection does (no Content-Length) also "ends" when
        # the deadline's watchdog cuts it: that is half a feed, not a feed.
        if time.monotonic() - started >= self.limits.total_timeout:
            return out("error", error=self._too_slow())
        try:
            decoder.finish()
        except ValueError as exc:
            return out("error", error=str(exc))
        return out("ok", body=b"".join(chunks), etag=etag, last_modified=last_modified)


def _cut(sock: socket.socket) -> None:
    """End a connection whose response missed the deadline (the blocked read returns)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _too_big(limit: int) -> str:
    return f"feed larger than the {limit:,} byte limit"


def _validator(value: str | None) -> str | None:
    """An ETag or Last-Modified worth keeping: one that can be sent back as a header
    (httpx takes ASCII only; a stored non-ASCII one failed every later poll)."""
    if value and value.isascii() and value.isprintable() and len(value) <= 1000:
        return value
    return None


def _seconds(value: str) -> float | None:
    """A count of seconds (ASCII digits only: ``float("²")`` raises)."""
    value = value.strip()
    return float(value) if value.isascii() and value.isdigit() else None


def _timestamp(date: str | None) -> float | None:
    """An HTTP date as a timestamp (a date without a zone, "-0000", is UTC)."""
    if not date:
        return None
    try:
        when = email.utils.parsedate_to_datetime(date)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def _seconds_until(date: str, headers: dict[str, str]) -> float | None:
    """Seconds until an HTTP date, on the server's clock when it sent its ``Date``: a
    server 3 hours ahead made a 10-minute Expires a 3-hour one."""
    when = _timestamp(date)
    if when is None:
        return None
    sent = _timestamp(headers.get("date"))
    return max(0.0, when - (sent if sent is not None else time.time()))


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    return seconds if seconds is not None else _seconds_until(value, headers)


def _max_age(headers: dict[str, str]) -> float | None:
    """How long the response stays fresh: max-age less the Age it already had in a cache
    (a CDN's day-old copy of a one-day max-age is fresh for seconds), else Expires."""
    cc = headers.get("cache-control", "")
    for part in cc.split(","):
        name, _, val = part.strip().partition("=")
        seconds = _seconds(val) if name.lower() in ("max-age", "s-maxage") else None
        if seconds is not None:
            age = _seconds(headers.get("age", "")) or 0.0
            return max(0.0, seconds - age)
    expires = headers.get("expires")
    return _seconds_until(expires, headers) if expires else None


_COMPRESSIONS_NOT_READ = frozenset(
    {
        "br",
        "zstd",
        "compress",
        "x-compress",
        "bzip2",
        "x-bzip2",
        "lzma",
        "xz",
        "aes128gcm",
        "exi",
        "pack200-gzip",
    }
)


class _Decoder:
    """Undoes a response's Content-Encoding (gzip or deflate, stacked too) in bounded
    steps: a few hundred compressed bytes can stand for gigabytes, and decompressing a
    whole network read at once (as httpx does) would hold them all in memory."""

    def __init__(self, header: str, limit: int) -> None:
        self.limit = limit
        names = [n.strip().lower() for n in header.split(",") if n.strip()]
        for n in names:
            if n in _COMPRESSIONS_NOT_READ:
                raise ValueError(f"unsupported Content-Encoding {n!r} (asked for gzip or deflate)")
        # Anything else but gzip and deflate is no compression: servers send "none",
        # "UTF-8", "text" or "binary" there, and every HTTP client reads them as such.
        names = [n for n in names if n in ("gzip", "x-gzip", "deflate")]
        # The last encoding applied is undone first.
        self.steps: list[tuple[str, Any]] = [(n, self._new(n)) for n in reversed(names)]
        self.started = [False] * len(self.steps)

    @staticmethod
    def _new(name: str) -> Any:
        return zlib.decompressobj(zlib.MAX_WBITS | 16 if name in ("gzip", "x-gzip") else zlib.MAX_WBITS)

    def decode(self, data: bytes) -> bytes:
        for k, (name, d) in enumerate(self.steps):
            if not data:
                return b""
            try:
                out = d.decompress(data, self.limit + 1)
            except zlib.error:
                if name != "deflate" or self.started[k]:
                    raise ValueError(f"broken {name} content") from None
                # "deflate" is often sent raw, without the zlib header
                d = zlib.decompressobj(-zlib.MAX_WBITS)
                self.steps[k] = (name, d)
                try:
                    out = d.decompress(data, self.limit + 1)
                except zlib.error:
                    raise ValueError(f"broken {name} content") from None
            self.started[k] = True
            # gzip may hold several members one after another (RFC 1952): each is read.
            pieces, size = [out], len(out)
            while name != "deflate" and d.eof and d.unused_data and size <= self.limit:
                rest = d.unused_data
                d = self._new(name)
                self.steps[k] = (name, d)
                try:
                    pieces.append(d.decompress(rest, self.limit + 1 - size))
                    size += len(pieces[-1])
                except zlib.error:  # padding or junk after the last member: what came is kept
                    d = zlib.decompressobj()
                    d.decompress(b"x\x9c\x03\x00\x00\x00\x00\x01")  # an empty zlib stream: at its end
                    self.steps[k] = (name, d)
                    break
            out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if d.unconsumed_tail or len(out) > self.limit:
                raise ValueError(_too_big(self.limit))
            data = out
        return data

    def finish(self) -> None:
        """ValueError if a compressed stream stopped before its end: a connection that
        closed early looks like the end of the body, and half a feed read as a whole
        one (its ETag kept) lost the rest of its items for good."""
        for (name, d), started in zip(self.steps, self.started, strict=True):
            if started and not d.eof:
                raise ValueError(f"truncated {name} content: the connection ended before the feed did")
