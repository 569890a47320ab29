"""How an outlet's variant differs from the canonical story: pure functions on plain text.

Texts are compared sentence by sentence (difflib on normalised sentences), so a
reader sees what a variant added, what it left out and which sentences it only
reworded; headlines are compared word by word.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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


def _rewordings(
    ka: Sequence[tuple[str, ...]], i_range: range, kb: Sequence[tuple[str, ...]], j_range: range
) -> list[int | None]:
    """For each canonical sentence ``ka[i]`` of a changed block, in order, the variant
    sentence ``kb[j]`` (``j`` in ``j_range``, not taken by an earlier one) that rewords
    it: the most similar by difflib's ratio, at least :data:`REWORD_RATIO` (of equally
    similar ones the first), or None.

    The words two sentences share bound difflib's ratio from above (``2 * shared /
    (len_a + len_b)``), so only pairs whose bound can win are compared in full; the
    shared-word counts of every pair of the block come from one matrix product per
    repeat count (``min(a, b)`` is the number of ``k >= 1`` with ``a >= k`` and ``b >= k``).
    """
    js = list(j_range)
    if not js:
        return [None] * len(i_range)
    ids: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    word_id = ids.__getitem__
    cols_b = list(map(word_id, itertools.chain.from_iterable(kb[j] for j in js)))
    cols_a = list(map(word_id, itertools.chain.from_iterable(ka[i] for i in i_range)))
    n_words, nb, na = max(1, len(ids)), len(js), len(i_range)
    len_b = np.array([len(kb[j]) for j in js], dtype=np.int64)
    len_a = np.array([len(ka[i]) for i in i_range], dtype=np.int64)

    def counts(cols: list[int], lengths: np.ndarray) -> np.ndarray:
        rows = np.repeat(np.arange(len(lengths)) * n_words, lengths)
        flat = np.bincount(np.array(cols, dtype=np.int64) + rows, minlength=len(lengths) * n_words)
        return flat.reshape(len(lengths), n_words)

    a, b = counts(cols_a, len_a), counts(cols_b, len_b)
    shared = np.zeros((na, nb))
    for k in range(1, min(int(a.max(initial=0)), int(b.max(initial=0))) + 1):
        shared += (a >= k).astype(np.float64) @ (b >= k).astype(np.float64).T
    total = (len_a[:, None] + len_b[None, :]).astype(np.float64)
    bound = np.divide(2 * shared, total, out=np.zeros_like(shared), where=total > 0)
    rows_ok, cols_ok = np.nonzero(bound >= REWORD_RATIO)
    if not rows_ok.size:
        return [None] * na
    candidates: dict[int, list[tuple[float, int]]] = {}
    for r, c, upper in zip(rows_ok.tolist(), cols_ok.tolist(), bound[rows_ok, cols_ok].tolist(), strict=True):
        candidates.setdefault(r, []).append((-upper, c))
    free = [True] * nb
    # One matcher per variant sentence: difflib indexes its second sequence once.
    matchers: dict[int, difflib.SequenceMatcher[str]] = {}
    out: list[int | None] = []
    for r, i in enumerate(i_range):
        best, best_ratio = -1, REWORD_RATIO
        for neg_upper, c in sorted(candidates.get(r, ())):
            if -neg_upper < best_ratio:
                break  # no later candidate can be as similar
            if not free[c]:
                continue
            matcher = matchers.get(c)
            if matcher is None:
                matcher = matchers[c] = difflib.SequenceMatcher(None, b=kb[js[c]], autojunk=False)
            matcher.set_seq1(ka[i])
            ratio = matcher.ratio()
            if ratio > best_ratio or (ratio == best_ratio and (best < 0 or c < best)):
                best, best_ratio = c, ratio
        if best < 0:
            out.append(None)
        else:
            free[best] = False
            out.append(js[best])
    return out


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
        taken: set[int] = set()
        for i, j in zip(range(i1, i2), _rewordings(ka, range(i1, i2), kb, range(j1, j2)), strict=True):
            if j is None:
                removed.append(i)
            else:
                reworded.append((i, j))
                taken.add(j)
        added.extend(j for j in range(j1, j2) if j not in taken)
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
