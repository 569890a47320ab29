"""The corpus as real feeds: RSS 2.0 and Atom 1.0 documents over HTTP on 127.0.0.1.

Run as its own process (``python -m benchmarks.feedserver --seed 7 --items 20000``)
so that serving never competes with the aggregator for the GIL.  It renders every
document first, then prints one JSON line (``{"port": ..., "docs": ...}``) and
serves until its standard input closes.  ``/index.txt`` lists the documents' paths,
one a line; documents carry an ETag and Last-Modified and honour conditional GETs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.corpus import Corpus

__all__ = ["main", "render_all"]


def render_all(seed: int, items: int, items_per_day: int) -> dict[str, tuple[bytes, str, str]]:
    """Every document of the corpus: path -> (body, content type, ETag)."""
    docs: dict[str, tuple[bytes, str, str]] = {}
    for doc in Corpus(seed, items, items_per_day=items_per_day).docs():
        body = doc.render()
        ctype = "application/rss+xml" if doc.outlet.kind == "rss" else "application/atom+xml"
        etag = '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
        docs[doc.path] = (body, ctype + "; charset=utf-8", etag)
    return docs


def _handler(docs: dict[str, tuple[bytes, str, str]], index: bytes) -> type[BaseHTTPRequestHandler]:
    last_modified = formatdate(usegmt=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # or 40 ms delayed-ACK stalls on small responses

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/index.txt":
                self._send(200, index, "text/plain; charset=utf-8", None)
                return
            doc = docs.get(self.path)
            if doc is None:
                self._send(404, b"not found\n", "text/plain", None)
                return
            body, ctype, etag = doc
            if self.headers.get("If-None-Match") == etag:
                self._send(304, b"", ctype, etag)
                return
            self._send(200, body, ctype, etag)

        def _send(self, status: int, body: bytes, ctype: str, etag: str | None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if etag:
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", last_modified)
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--items-per-day", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    docs = render_all(args.seed, args.items, args.items_per_day)
    index = "".join(p + "\n" for p in docs).encode()
    httpd = _Server(("127.0.0.1", args.port), _handler(docs, index))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    total = sum(len(b) for b, _, _ in docs.values())
    print(json.dumps({"port": httpd.server_address[1], "docs": len(docs), "bytes": total}), flush=True)
    sys.stdin.read()  # serve until the parent closes our standard input (or dies)
    httpd.shutdown()
    httpd.server_close()


if __name__ == "__main__":
    main()
