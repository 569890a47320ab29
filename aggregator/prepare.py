"""The CPU-bound stages that need no database: parse, normalize, fingerprint.

:func:`prepare` turns a fetched document into items with their features and
signatures.  It is pure (no I/O, no shared state), so the update routine can run
it in a worker process for one feed while the main process clusters and stores
the previous one: both cores work.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from aggregator.fingerprint import Features, features_for, signatures
from aggregator.models import Entry, Item, ParsedFeed
from aggregator.normalize import normalize_entry, shared_sentences, summary_of, without_sentences
from aggregator.parse import parse_feed
from aggregator.settings import ClusterSettings

__all__ = ["Prepared", "normalize_entries", "prepare", "worker_started"]

PARENT_CHECK_SECONDS = 1.0


def worker_started(parent_pid: int) -> None:
    """Set up a worker process of the poller: Ctrl-C is the poller's to handle (the
    whole process group gets it: the worker died with a traceback mid-document), and
    the worker exits when the poller is gone (killed, it left its workers running)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(frozen=True)
class Prepared:
    """A parsed feed document, its items normalised, fingerprinted and ready to store."""

    parsed: ParsedFeed  # entries dropped: ``items`` replaces them
    items: list[Item]
    features: list[Features]
    signatures: np.ndarray
    duplicates: int  # entries that repeated an earlier entry's identity
    skipped: int  # entries beyond the per-document limit


def normalize_entries(entries: Sequence[Entry]) -> tuple[list[Item], int]:
    """Normalised items, the first of each identity; and how many entries repeated one."""
    items: list[Item] = []
    seen: set[str] = set()
    for entry in entries:
        item = normalize_entry(entry)
        if item.identity not in seen:
            seen.add(item.identity)
            items.append(item)
    # The document's boilerplate leaves the text that is matched, searched and summed
    # up (the HTML shown keeps it; the content hash, which tells edits, is of the text
    # as sent, so a banner seen in one poll and not the next is no edit).
    boilerplate = shared_sentences([(it.title, it.text) for it in items])
    if boilerplate:
        items = [_without(it, boilerplate) for it in items]
    return items, len(entries) - len(items)


def _without(item: Item, boilerplate: frozenset[str]) -> Item:
    text = without_sentences(item.text, boilerplate)
    if text == item.text:
        return item
    summary = without_sentences(item.summary, boilerplate)
    return dataclasses.replace(item, text=text, summary=summary_of(summary or text))


def prepare(
    body: bytes, url: str, headers: Mapping[str, str], settings: ClusterSettings, max_items: int
) -> Prepared:
    """Parse a document and prepare its entries (at most ``max_items``, the first ones)."""
    parsed = parse_feed(body, url, headers)
    entries = parsed.entries[:max_items]
    items, duplicates = normalize_entries(entries)
    feats = [features_for(settings, it.title, it.text) for it in items]
    return Prepared(
        parsed=dataclasses.replace(parsed, entries=[]),
        items=items,
        features=feats,
        signatures=signatures([f.tokens for f in feats], settings.num_perm),
        duplicates=duplicates,
        skipped=max(0, len(parsed.entries) - max_items),
    )
