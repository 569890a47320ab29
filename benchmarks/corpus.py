"""A deterministic corpus of realistic news items, and its feed documents.

Everything follows from ``(seed, size)`` through seeded :class:`random.Random`
instances (one per day of news, seeded by a string, so a day's items do not depend
on how many came before or on how the work is split).

What it looks like:

* a vocabulary of a few thousand English-like content words with a Zipf
  distribution, real English function words, numbers, and named entities
  (people, places, organisations) whose popularity is Zipf-distributed too, so
  look-alike stories about the same names occur;
* stories: a base event (key words, entities, about 300 words in 14-20 sentences)
  rewritten by 1-15 outlets: sentences shuffled, dropped or replaced, words
  swapped for synonyms, each with its own headline; about half the stories are
  covered by one outlet only (unrelated stories);
* exact syndicated copies (a wire item copied word for word by other outlets,
  with their own links), and headline-only items (some outlets publish only
  headlines, and a few items elsewhere lack a body);
* published times spread over days (``items_per_day``), so the clustering time
  window matters at large sizes.

Items are grouped into *feed documents*: one outlet's items of one time slice
(50-200 items, like a real feed), emitted in time order, and rendered as RSS 2.0
or Atom 1.0 (each outlet uses one of the two).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cached_property
from html import escape

import numpy as np

from aggregator.models import Entry

__all__ = ["Corpus", "CorpusItem", "FeedDoc", "Outlet", "render_atom", "render_rss"]

CORPUS_VERSION = 1  # bump when the generated items change (cached databases are keyed on it)
EPOCH = 1_704_067_200.0  # 2024-01-01T00:00:00Z: the first day of news
DAY = 86_400.0

FUNCTION_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "on",
    "was",
    "with",
    "he",
    "it",
    "as",
    "at",
    "by",
    "from",
    "his",
    "has",
    "have",
    "be",
    "are",
    "were",
    "which",
    "this",
    "an",
    "its",
    "after",
    "but",
    "not",
    "they",
    "who",
    "been",
    "had",
    "their",
    "will",
    "would",
    "also",
    "more",
    "than",
    "over",
    "into",
    "about",
    "when",
    "there",
    "up",
    "out",
    "one",
    "two",
    "three",
    "new",
    "last",
    "first",
    "year",
    "years",
    "some",
    "could",
    "other",
    "all",
    "she",
    "her",
    "if",
    "what",
    "we",
    "can",
    "so",
    "no",
    "only",
    "most",
    "time",
    "them",
    "said",
    "while",
    "under",
    "before",
    "since",
    "during",
    "against",
    "between",
    "because",
    "those",
    "these",
    "both",
    "where",
    "such",
    "many",
    "any",
    "just",
    "now",
    "then",
    "being",
    "our",
    "very",
    "may",
    "should",
    "still",
    "through",
    "down",
    "while",
    "each",
    "made",
    "well",
    "after",
    "where",
    "week",
    "people",
    "officials",
    "government",
    "told",
]

_ONSETS = [
    "b",
    "bl",
    "br",
    "c",
    "ch",
    "cl",
    "cr",
    "d",
    "dr",
    "f",
    "fl",
    "fr",
    "g",
    "gl",
    "gr",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pl",
    "pr",
    "qu",
    "r",
    "s",
    "sc",
    "sh",
    "sl",
    "sm",
    "sn",
    "sp",
    "st",
    "str",
    "t",
    "th",
    "tr",
    "v",
    "w",
    "wh",
    "z",
]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ea", "ai", "ou", "io", "ie"]
_CODAS = ["n", "r", "l", "s", "t", "nd", "nt", "rd", "st", "ck", "m", "ng", "x", "rn", "lt"]
_SUFFIXES = (
    "",
    "",
    "",
    "tion",
    "ment",
    "ing",
    "ed",
    "er",
    "ity",
    "al",
    "ous",
    "ive",
    "ance",
    "ist",
    "age",
    "ure",
    "ly",
    "s",
    "s",
)


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + (rng.choice(_CODAS) if rng.random() < 0.4 else "")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(_syllable(rng) for _ in range(syllables))


def _zipf_cum(n: int, s: float = 1.0, q: float = 2.7) -> np.ndarray:
    w = 1.0 / (np.arange(n, dtype=np.float64) + q) ** s
    cum: np.ndarray = np.cumsum(w)
    out: np.ndarray = cum / cum[-1]
    return out


# Background text (everything but a story's own key words and names): shares of
# function words, numbers and other content words.
_BACKGROUND_CUM = np.cumsum([0.50, 0.025, 0.475])
N_CONTENT = 8000
CONTENT_ZIPF_Q = 30.0  # flattens the head: common content words are common, not ubiquitous
N_ENTITIES = 3000
N_NUMBERS = 3000
POOL_TOKENS = 1 << 21
VARIANTS = 4  # the background text, and three rewordings of it with synonyms
KEYS_PER_STORY = 10
KEY_SHARE = 0.07  # of a story's words: its key words
ENTITY_SHARE = 0.035  # and its named entities
RETELL = 0.4  # share of an outlet's sentences told in its own words
RESERVE_SENTENCES = 8  # facts some outlets report and others leave out


@dataclass(frozen=True)
class Outlet:
    id: int
    name: str
    host: str
    kind: str  # "rss" or "atom"
    headline_only: bool
    weight: float


@dataclass(frozen=True)
class CorpusItem:
    """One outlet's item: what its feed carries."""

    guid: str
    link: str
    title: str
    paragraphs: tuple[str, ...]  # empty: headline only
    published: float
    outlet: int
    story: int  # the ground-truth story (the base event)
    kind: str  # "rewrite", "copy", "headline", "single"

    def html(self) -> str:
        return "".join(f"<p>{escape(p, quote=False)}</p>" for p in self.paragraphs)

    def entry(self) -> Entry:
        """The item as :func:`aggregator.parse.parse_feed` returns it from the rendered feed."""
        return Entry(
            guid=self.guid,
            link=self.link,
            title=self.title,
            summary_html="",
            content_html=self.html(),
            author=None,
            published=self.published,
            updated=self.published,
        )

    @property
    def words(self) -> int:
        return sum(p.count(" ") + 1 for p in self.paragraphs)


@dataclass(frozen=True)
class FeedDoc:
    """One feed document: an outlet's items of one time slice."""

    outlet: Outlet
    slice_start: float
    items: tuple[CorpusItem, ...]

    @property
    def path(self) -> str:
        ext = "rss" if self.outlet.kind == "rss" else "atom"
        return f"/feeds/{self.outlet.id}/{int(self.slice_start)}.{ext}"

    def entries(self) -> list[Entry]:
        return [i.entry() for i in self.items]

    def render(self) -> bytes:
        return render_rss(self) if self.outlet.kind == "rss" else render_atom(self)


@dataclass(frozen=True)
class _Story:
    id: int
    time: float
    keys: list[str]
    entities: list[str]
    offset: int  # where its sentences start in the background pool
    bounds: list[int]  # sentence boundaries, relative to offset
    inserts: list[list[tuple[int, str]]]  # per sentence: (position, key word or name)


class _Lexicon:
    """Words, names and numbers, and a pool of background text in a few rewordings.

    A story's sentence is a stretch of the pool with the story's key words and
    names put in; an outlet's rewrite takes each sentence from one of the
    rewordings (the same sentence with some words swapped for synonyms).
    """

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:lexicon")
        content: list[str] = []
        seen = set(FUNCTION_WORDS)
        while len(content) < N_CONTENT:
            w = _word(rng, rng.choice((1, 2, 2, 3))) + rng.choice(_SUFFIXES)
            if len(w) > 2 and w not in seen:
                seen.add(w)
                content.append(w)
        firsts = [_word(rng, 2).capitalize() for _ in range(300)]
        lasts = [_word(rng, rng.choice((2, 3))).capitalize() for _ in range(600)]
        orgs = ("Holdings", "Group", "Ministry", "Council", "Bank", "Agency", "Party", "United")
        entities: list[str] = []
        for n in range(N_ENTITIES):
            if n % 4 in (0, 1):
                entities.append(f"{rng.choice(firsts)} {rng.choice(lasts)}")
            elif n % 4 == 2:
                entities.append(_word(rng, rng.choice((2, 3))).capitalize())
            else:
                entities.append(f"{_word(rng, 2).capitalize()} {rng.choice(orgs)}")
        rng.shuffle(entities)
        numbers = [_number(rng) for _ in range(N_NUMBERS)]
        self.content = content
        self.entities = entities
        self.numbers = numbers
        self.content_cum = _zipf_cum(N_CONTENT, 1.0, CONTENT_ZIPF_Q).tolist()
        self.entity_cum = _zipf_cum(N_ENTITIES, 0.9, 5.0).tolist()
        # Synonyms: content words in groups of 2-3 of similar frequency.
        self.synonyms: dict[str, list[str]] = {}
        for start in range(0, N_CONTENT, 30):
            block = content[start : start + 30]
            rng.shuffle(block)
            i = 0
            while i + 1 < len(block):
                size = 3 if i + 2 < len(block) and rng.random() < 0.5 else 2
                group = block[i : i + size]
                for w in group:
                    self.synonyms[w] = [x for x in group if x != w]
                i += size
        self.pool = self._pool(seed, [*FUNCTION_WORDS, *content, *numbers])

    def _pool(self, seed: int, base: list[str]) -> list[list[str]]:
        g = np.random.default_rng([seed, 1])
        n_func, n_num = len(FUNCTION_WORDS), N_NUMBERS
        kinds = np.searchsorted(_BACKGROUND_CUM, g.random(POOL_TOKENS) * _BACKGROUND_CUM[-1])
        func = np.searchsorted(_zipf_cum(n_func, 1.0, 1.5), g.random(POOL_TOKENS))
        num = n_func + N_CONTENT + g.integers(0, n_num, POOL_TOKENS)
        content = n_func + np.searchsorted(_zipf_cum(N_CONTENT, 1.0, CONTENT_ZIPF_Q), g.random(POOL_TOKENS))
        ids = np.choose(kinds, [func, num, content])
        comma = g.random(POOL_TOKENS) < 0.04
        # Two synonym choices for every word (itself when it has none).
        syn = np.empty((2, len(base)), dtype=np.int64)
        index = {w: i for i, w in enumerate(base)}
        for i, w in enumerate(base):
            others = self.synonyms.get(w)
            syn[0, i] = index[others[0]] if others else i
            syn[1, i] = index[others[-1]] if others else i
        table = np.array(base + [w + "," for w in base], dtype=object)
        out = []
        for v in range(VARIANTS):
            vids = ids
            if v:
                swap = g.random(POOL_TOKENS) < 0.25
                vids = np.where(swap, syn[g.integers(0, 2, POOL_TOKENS), ids], ids)
            out.append(table[vids + comma * len(base)].tolist())
        return out

    def sentence(self, variant: int, start: int, end: int, inserts: list[tuple[int, str]]) -> str:
        words = self.pool[variant][start:end]
        for pos, word in inserts:
            words[pos] = word
        s = " ".join(words)
        return s[:1].upper() + s[1:].rstrip(",") + "."


class Corpus:
    """The generator: ``Corpus(seed, size).docs()`` yields feed documents in time order.

    ``size`` is the number of items; ``items_per_day`` spreads them over
    ``size / items_per_day`` days.
    """

    def __init__(
        self,
        seed: int = 7,
        size: int = 10_000,
        *,
        items_per_day: int = 10_000,
        outlets: int = 60,
        slice_hours: float = 12.0,
        max_doc_items: int = 200,
    ) -> None:
        self.seed = seed
        self.size = size
        self.items_per_day = items_per_day
        self.n_outlets = outlets
        self.slice_seconds = slice_hours * 3600.0
        self.max_doc_items = max_doc_items

    @cached_property
    def lexicon(self) -> _Lexicon:
        return _Lexicon(self.seed)

    @cached_property
    def outlets(self) -> list[Outlet]:
        rng = random.Random(f"{self.seed}:outlets")
        kinds = ("Times", "Post", "News", "Herald", "Wire", "Daily", "Report", "Courier")
        return [
            Outlet(
                id=n,
                name=f"The {_word(rng, 2).capitalize()} {rng.choice(kinds)}",
                host=f"outlet{n}.example",
                kind="rss" if n % 2 == 0 else "atom",
                headline_only=n % 7 == 3,
                weight=rng.uniform(0.4, 1.6),
            )
            for n in range(self.n_outlets)
        ]

    @cached_property
    def _outlet_cum(self) -> list[float]:
        return list(itertools.accumulate(o.weight for o in self.outlets))

    # -- text ----------------------------------------------------------------------------

    def _story(self, story_id: int, rng: random.Random, time: float) -> _Story:
        lx = self.lexicon
        # Key words: content words past the most common few hundred; 1-4 names.
        keys = [
            lx.content[300 + bisect.bisect(lx.content_cum, rng.random()) % (N_CONTENT - 300)]
            for _ in range(KEYS_PER_STORY)
        ]
        names = list(dict.fromkeys(rng.choices(lx.entities, cum_weights=lx.entity_cum, k=rng.randint(1, 4))))
        lengths = [rng.randint(12, 28) for _ in range(rng.randint(14, 20) + RESERVE_SENTENCES)]
        bounds = [0, *itertools.accumulate(lengths)]
        total = bounds[-1]
        offset = rng.randrange(POOL_TOKENS - total)
        inserts: list[list[tuple[int, str]]] = [[] for _ in lengths]
        n_keys = int(total * KEY_SHARE)
        n_names = int(total * ENTITY_SHARE)
        sentence = 0
        for n, pos in enumerate(sorted(rng.sample(range(total), n_keys + n_names))):
            while pos >= bounds[sentence + 1]:
                sentence += 1
            word = keys[n % len(keys)] if n % 3 else names[n % len(names)]
            inserts[sentence].append((pos - bounds[sentence], word))
        return _Story(story_id, time, keys, names, offset, bounds, inserts)

    def _headline(self, rng: random.Random, story: _Story) -> str:
        synonyms = self.lexicon.synonyms
        keys = [
            rng.choice(synonyms.get(k, [k])) if rng.random() < 0.2 else k
            for k in rng.sample(story.keys, k=rng.randint(3, 5))
        ]
        tail = keys + rng.choices(FUNCTION_WORDS[:30], k=rng.randint(2, 4))
        rng.shuffle(tail)
        words = [rng.choice(story.entities), *tail]
        if rng.random() < 0.3:
            words.append(rng.choice(self.lexicon.numbers))
        title = " ".join(words)
        return title[:1].upper() + title[1:]

    def _rewrite(self, rng: random.Random, story: _Story) -> list[str]:
        n_base = len(story.inserts) - RESERVE_SENTENCES
        chosen: list[int] = []
        for i in range(n_base):
            r = rng.random()
            if i > 1 and r < 0.10:
                continue  # dropped
            chosen.append(n_base + rng.randrange(RESERVE_SENTENCES) if r < 0.25 else i)
        # Shuffle a little: swap some neighbours, keep the lead in place.
        for _ in range(len(chosen) // 4):
            i = rng.randrange(0, len(chosen) - 1)
            chosen[i], chosen[i + 1] = chosen[i + 1], chosen[i]
        lx = self.lexicon
        o, b = story.offset, story.bounds
        sentences = []
        for i in chosen:
            start, end = o + b[i], o + b[i + 1]
            if rng.random() < RETELL:  # the same facts (key words, names) in other words
                start, end = (k := rng.randrange(POOL_TOKENS - 40)), k + end - start
            sentences.append(lx.sentence(rng.randrange(VARIANTS), start, end, story.inserts[i]))
        out: list[str] = []
        i = 0
        while i < len(sentences):
            k = rng.randint(2, 4)
            out.append(" ".join(sentences[i : i + k]))
            i += k
        return out

    # -- items and documents ---------------------------------------------------------------

    def _day(self, day: int) -> list[CorpusItem]:
        """Every item of the stories whose event happens on ``day`` (some published the next day)."""
        rng = random.Random(f"{self.seed}:day:{day}")
        items: list[CorpusItem] = []
        start = EPOCH + day * DAY
        cum = self._outlet_cum
        n = 0
        while len(items) < self.items_per_day:
            story = self._story(day * 1_000_000 + n, rng, start + rng.random() * DAY)
            n += 1
            k = 1 if rng.random() < 0.5 else min(15, 2 + int(rng.expovariate(0.3)))
            chosen: list[int] = []
            while len(chosen) < min(k, self.n_outlets):
                o = bisect.bisect(cum, rng.random() * cum[-1])
                if o not in chosen:
                    chosen.append(o)
            versions: list[tuple[str, list[str]]] = []
            for j, o in enumerate(chosen):
                outlet = self.outlets[o]
                delay = 0.0 if j == 0 else min(20 * 3600.0, rng.expovariate(1 / 7200.0))
                published = float(int(story.time + delay))
                if versions and rng.random() < 0.15:
                    title, paras = rng.choice(versions)  # syndicated: an exact copy
                    kind = "copy"
                elif outlet.headline_only or rng.random() < 0.04:
                    title, paras, kind = self._headline(rng, story), [], "headline"
                else:
                    title, paras = self._headline(rng, story), self._rewrite(rng, story)
                    versions.append((title, paras))
                    kind = "rewrite" if k > 1 else "single"
                if outlet.headline_only:
                    paras, kind = [], "headline"
                slug = "-".join(title.lower().split()[:5])
                items.append(
                    CorpusItem(
                        guid=f"urn:bench:{self.seed}:{outlet.id}:{story.id}:{j}",
                        link=f"https://{outlet.host}/{day}/{slug}-{story.id}-{j}?utm_source=rss",
                        title=title,
                        paragraphs=tuple(paras),
                        published=published,
                        outlet=o,
                        story=story.id,
                        kind=kind,
                    )
                )
        return items

    def items(self) -> Iterator[CorpusItem]:
        """Every item, in published order (ties by guid), ``size`` of them."""
        for doc in self.docs():
            yield from doc.items

    def docs(self) -> Iterator[FeedDoc]:
        """Feed documents in time order, until ``size`` items have been given out."""
        remaining = self.size
        pending: list[CorpusItem] = []
        day = 0
        while remaining > 0:
            pending.extend(self._day(day))
            day += 1
            ready_before = EPOCH + day * DAY  # later days' stories are never published before this
            ready = [i for i in pending if i.published < ready_before]
            pending = [i for i in pending if i.published >= ready_before]
            ready.sort(key=lambda i: (i.published, i.guid))
            for doc in self._slice(ready):
                if remaining <= 0:
                    return
                if len(doc.items) > remaining:
                    doc = FeedDoc(doc.outlet, doc.slice_start, doc.items[:remaining])
                remaining -= len(doc.items)
                yield doc

    def _slice(self, items: list[CorpusItem]) -> Iterator[FeedDoc]:
        by_slice: dict[float, dict[int, list[CorpusItem]]] = {}
        for it in items:
            s = EPOCH + math.floor((it.published - EPOCH) / self.slice_seconds) * self.slice_seconds
            by_slice.setdefault(s, {}).setdefault(it.outlet, []).append(it)
        for s in sorted(by_slice):
            for o in sorted(by_slice[s]):
                group = by_slice[s][o]
                for lo in range(0, len(group), self.max_doc_items):
                    yield FeedDoc(self.outlets[o], s, tuple(group[lo : lo + self.max_doc_items]))


def _number(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return str(rng.randint(2, 99))
    if r < 0.6:
        return f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"
    if r < 0.8:
        return f"{rng.randint(1, 999)},{rng.randint(0, 999):03d}"
    return str(rng.randint(1990, 2024))


# -- feed documents ---------------------------------------------------------------------------


def _rfc822(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_rss(doc: FeedDoc) -> bytes:
    o = doc.outlet
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(o.name)}</title><link>https://{o.host}/</link>",
        f"<description>News from {escape(o.name)}</description><ttl>15</ttl>",
    ]
    for it in doc.items:
        parts.append(
            f"<item><title>{escape(it.title)}</title><link>{escape(it.link)}</link>"
            f'<guid isPermaLink="false">{escape(it.guid)}</guid><pubDate>{_rfc822(it.published)}</pubDate>'
        )
        if it.paragraphs:
            parts.append(f"<description>{escape(it.html())}</description>")
        parts.append("</item>")
    parts.append("</channel></rss>\n")
    return "\n".join(parts).encode("utf-8")


def render_atom(doc: FeedDoc) -> bytes:
    o = doc.outlet
    updated = max((i.published for i in doc.items), default=doc.slice_start)
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">',
        f'<title>{escape(o.name)}</title><link href="https://{o.host}/"/>',
        f"<id>https://{o.host}/</id><updated>{_rfc3339(updated)}</updated>",
    ]
    for it in doc.items:
        parts.append(
            f'<entry><title>{escape(it.title)}</title><link href="{escape(it.link)}"/>'
            f"<id>{escape(it.guid)}</id><published>{_rfc3339(it.published)}</published>"
            f"<updated>{_rfc3339(it.published)}</updated>"
        )
        if it.paragraphs:
            parts.append(f'<content type="html">{escape(it.html())}</content>')
        parts.append("</entry>")
    parts.append("</feed>\n")
    return "\n".join(parts).encode("utf-8")
