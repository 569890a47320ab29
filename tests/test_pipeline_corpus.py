"""feedparser's own 2,100-file test corpus through the real ingest path, from disk and over HTTP."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from aggregator import Aggregator
from aggregator.models import UpdateReport
from tests.conftest import DATA, FeedServer, Route

CORPUS = DATA / "feedparser-tests"
FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".xml", ".json"))
_HEADER = re.compile(r"^Header:\s*([\w-]+):\s*(.*?)\s*$", re.MULTILINE)


def declared_headers(path: Path) -> dict[str, str]:
    head = path.read_bytes()[:2000].decode("latin-1")
    headers = {k.title(): v for k, v in _HEADER.findall(head)}
    if "Content-Type" not in headers:
        headers["Content-Type"] = "application/json" if path.suffix == ".json" else "application/xml"
    return headers


def check(agg: Aggregator, reports: list[UpdateReport]) -> Counter[str]:
    assert len(reports) == len(FILES)
    counts: Counter[str] = Counter()
    for r in reports:
        # The safety nets in parse/pipeline turn exceptions into these messages: none may fire.
        assert "internal error" not in (r.error or "") and "parser failed" not in (r.error or ""), r
        counts["error" if r.status == "error" else "warning" if r.warning else "clean"] += 1
        counts["gave items"] += bool(r.new_items)
        counts["items"] += r.new_items
    stored = agg.feeds()
    assert len(stored) == len(FILES)
    for f in stored:
        assert f.status in ("ok", "error"), f
        assert (f.status == "error") == bool(f.last_error), f  # every failure has a clear stored error
    assert agg.counts()["items"] == counts["items"]
    return counts


def test_corpus_is_present() -> None:
    assert len(FILES) > 2000
    assert (CORPUS / "LICENSE").exists()


@pytest.mark.slow
def test_corpus_from_disk(agg: Aggregator) -> None:
    for path in FILES:
        agg.add_feed(str(path))
    counts = check(agg, agg.update())
    print(f"corpus from disk: {dict(counts)}")
    assert counts["gave items"] > 1000


@pytest.mark.slow
def test_corpus_over_http_with_declared_content_types(agg: Aggregator, feed_server: FeedServer) -> None:
    for n, path in enumerate(FILES):
        route = f"/{n}/{path.name}"
        feed_server.routes[route] = Route(path.read_bytes(), headers=declared_headers(path))
        agg.add_feed(feed_server.url(route))
    counts = check(agg, agg.update())
    print(f"corpus over HTTP: {dict(counts)}")
    assert counts["gave items"] > 1000
