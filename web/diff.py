"""How an outlet's variant differs from the canonical story: pure functions on plain text.

Texts are compared sentence by sentence (difflib on normalised sentences), so a
reader sees what a variant added, what it left out and which sentences it only
reworded; headlines are compared word by word.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Reworded", "TextDiff", "WordOp", "diff_texts", "sentences", "word_diff"]

MAX_SENTENCES = 400  # per text: bounds the work on very long articles
# A "sentence" longer than this many words (a transcript, a list, text without
# punctuation) is cut into pieces of this size: comparing two one-sentence texts of
# 10,000 words took 23 s.
MAX_SENTENCE_WORDS = 60
# Two word sequences whose lengths multiply to more than this are shown as replaced
# whole rather than compared word by word (difflib's cost grows with the product).
MAX_WORD_PAIRS = 100_000
REWORD_RATIO = 0.5  # word similarity at which a changed sentence counts as reworded

# Sentence-ending punctuation (and closing quotes) before a space and what may start a sentence.
_BOUNDARY = re.compile(r"[.!?…]+[\"”’')\]]*(?=\s+[\"“‘(\[]?(\S))")
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "gen",
        "col",
        "lt",
        "sgt",
        "rep",
        "sen",
        "gov",
        "mt",
        "no",
        "vs",
        "inc",
        "ltd",
        "co",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
        "u.k",
        "e.g",
        "i.e",
    ]
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class WordOp:
    """A run of words: ``same`` in both texts, ``del`` only in the first, ``add`` only in the second."""

    kind: str
    text: str


@dataclass(frozen=True)
class Reworded:
    """A sentence of the canonical text that the variant says in other words."""

    before: str
    after: str
    words: list[WordOp]


@dataclass(frozen=True)
class TextDiff:
    """What a variant's text shares with the canonical text, adds, leaves out and rewords."""

    same: int  # sentences found in both (ignoring case, punctuation and order)
    added: list[str] = field(default_factory=list)  # only in the variant, in its order
    removed: list[str] = field(default_factory=list)  # only in the canonical text, in its order
    reworded: list[Reworded] = field(default_factory=list)
    canonical_sentences: int = 0
    variant_sentences: int = 0

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.reworded)

    @property
    def shared_ratio(self) -> float:
        """Share of the variant's sentences that are also in the canonical text, as is or reworded."""
        if not self.variant_sentences:
            return 1.0 if not self.canonical_sentences else 0.0
        return (self.same + len(self.reworded)) / self.variant_sentences


def sentences(text: str) -> list[str]:
    """Split plain text into sentences.  Joined with single spaces they give the text back."""
    text = " ".join(text.split())
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        following = m.group(1)
        if not (following.isupper() or following.isdigit()):
            continue  # "e.g. the", "3.5 per cent": a sentence starts with a capital or a number
        before = text[start : m.start()].rsplit(" ", 1)[-1].lower()
        if m.group().startswith(".") and (
            before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha())
        ):
            continue  # "Mr. Putin", "J. Smith": not the end of a sentence
        out.extend(_pieces(text[start : m.end()]))
        start = m.end()
    out.extend(_pieces(text[start:]))
    return out


def _pieces(sentence: str) -> list[str]:
    """``sentence`` (single-spaced), cut into runs of at most :data:`MAX_SENTENCE_WORDS` words."""
    words = sentence.split()
    n = MAX_SENTENCE_WORDS
    return [" ".join(words[k : k + n]) for k in range(0, len(words), n)]


def _key(sentence: str) -> tuple[str, ...]:
    return tuple(map(str.casefold, _WORD.findall(sentence)))


@functools.lru_cache(maxsize=256)
def _split(text: str) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Sentences of a text (at most :data:`MAX_SENTENCES`) and their keys; a story's
    canonical text is compared with every variant, so it is split once."""
    found = tuple(sentences(text)[:MAX_SENTENCES])
    return found, tuple(map(_key, found))


def word_diff(a: str, b: str) -> list[WordOp]:
    """Word-level differences from ``a`` to ``b``, adjacent runs of one kind merged.

    The ``same`` and ``del`` runs give ``a``'s words; ``same`` and ``add`` give ``b``'s.
    """
    wa, wb = a.split(), b.split()
    ops: list[WordOp] = []
    if len(wa) * len(wb) > MAX_WORD_PAIRS:  # too long to compare word by word: replaced whole
        return [WordOp(kind, " ".join(words)) for kind, words in (("del", wa), ("add", wb)) if words]

    def emit(kind: str, words: list[str]) -> None:
        if not words:
            return
        if ops and ops[-1].kind == kind:
            ops[-1] = WordOp(kind, ops[-1].text + " " + " ".join(words))
        else:
            ops.append(WordOp(kind, " ".join(words)))

    sm = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            emit("same", wb[j1:j2])
        else:
            emit("del", wa[i1:i2])
            emit("add", wb[j1:j2])
    return ops


class _Block:
    """The variant sentences of one changed block, indexed by word for finding rewordings."""

    def __init__(self, kb: Sequence[tuple[str, ...]], js: range) -> None:
        self.kb = kb
        self.free = set(js)
        self.counts = {j: Counter(kb[j]) for j in js}
        self.lengths = {j: len(kb[j]) for j in js}
        postings: dict[str, list[int]] = {}
        for j in js:
            for w in self.counts[j]:
                postings.setdefault(w, []).append(j)
        # Words in many sentences ("the", "said") are not indexed; each sentence's
        # count of them still bounds how much they can add to a match.
        limit = max(8, len(js) // 8)
        self.common = {w for w, js_ in postings.items() if len(js_) > limit}
        self.index = {w: js_ for w, js_ in postings.items() if w not in self.common}
        self.n_common = {j: sum(n for w, n in self.counts[j].items() if w in self.common) for j in js}
        # One matcher per variant sentence: difflib indexes its second sequence once.
        self.matchers: dict[int, difflib.SequenceMatcher[str]] = {}

    def best_match(self, key: tuple[str, ...]) -> int | None:
        """The free sentence most like ``key``, if similar enough to be a rewording; it is taken."""
        mine = Counter(key)
        common = self.common
        mine_common = sum(n for w, n in mine.items() if w in common)
        shared: dict[int, int] = {}
        free, counts, index = self.free, self.counts, self.index
        for w, n in mine.items():
            for j in index.get(w, ()):
                if j in free:
                    shared[j] = shared.get(j, 0) + min(n, counts[j][w])
        # Shared words bound difflib's ratio from above: only promising pairs are compared in full.
        bounds = []
        n_key, lengths, n_common = len(key), self.lengths, self.n_common
        for j in free:
            m = shared.get(j, 0) + min(mine_common, n_common[j])
            total = n_key + lengths[j]
            bound = 2 * m / total if total else 0.0
            if bound >= REWORD_RATIO:
                bounds.append((bound, j))
        bounds.sort(key=lambda x: (-x[0], x[1]))
        best, best_ratio = None, REWORD_RATIO
        for bound, j in bounds:
            if bound < best_ratio:
                break
            matcher = self.matchers.get(j)
            if matcher is None:
                matcher = self.matchers[j] = difflib.SequenceMatcher(None, b=self.kb[j], autojunk=False)
            matcher.set_seq1(key)
            r = matcher.ratio()
            if r >= best_ratio and (best is None or r > best_ratio):
                best, best_ratio = j, r
        if best is not None:
            self.free.discard(best)
        return best


def diff_texts(canonical: str, variant: str) -> TextDiff:
    """Compare a variant's plain text with the canonical text, sentence by sentence."""
    a, ka = _split(canonical)
    b, kb = _split(variant)
    same = 0
    removed: list[int] = []
    added: list[int] = []
    reworded: list[tuple[int, int]] = []
    sm = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            same += i2 - i1
            continue
        block = _Block(kb, range(j1, j2))
        for i in range(i1, i2):
            best = block.best_match(ka[i])
            if best is None:
                removed.append(i)
            else:
                reworded.append((i, best))
        added.extend(sorted(block.free))
    # A sentence that only moved is not news: count it as shared.
    added_keys: dict[tuple[str, ...], list[int]] = {}
    for j in sorted(added):
        added_keys.setdefault(kb[j], []).append(j)
    still_removed: list[int] = []
    for i in removed:
        js = added_keys.get(ka[i])
        if js:
            added.remove(js.pop(0))
            same += 1
        else:
            still_removed.append(i)
    return TextDiff(
        same=same,
        added=[b[j] for j in sorted(added)],
        removed=[a[i] for i in sorted(still_removed)],
        reworded=[Reworded(a[i], b[j], word_diff(a[i], b[j])) for i, j in sorted(reworded)],
        canonical_sentences=len(a),
        variant_sentences=len(b),
    )
