"""Pure fingerprinting: text to features, features to MinHash signatures.

Features (after the research in docs/clustering.md):

1. Unicode NFKC, typographic punctuation unified, accents stripped; dotted
   acronyms joined ("U.S." -> "us"), digit groups joined ("37,000"), possessive
   "'s" dropped, hyphens split.
2. English stop words and page furniture ("advertisement", "reuters",
   "said"...) and one-character words dropped; Snowball stemming (PyStemmer).
3. Weights (before IDF, which the clusterer applies): a headline occurrence
   counts ``title_weight``; a body word at position k counts
   ``exp(-k / lead_words)`` (the lead names the event, the tail is background);
   sub-linear term frequency ``1 + ln(c)``; words Capitalised mid-sentence (or
   short ALL-CAPS acronyms) are entities and count ``entity_boost`` times.
4. The MinHash token set is the headline's terms plus those of the first
   ``fingerprint_body_words`` body words.

Signatures are computed for many items at once with numpy and are bit-identical
to ``datasketch.MinHash(num_perm, seed=1, hashfunc=hash32)`` with its default
``affine32`` scheme, where ``hash32`` is ``xxh3_64(token) & 0xFFFFFFFF`` (tested).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import Stemmer
import xxhash

from aggregator.settings import ClusterSettings

if TYPE_CHECKING:
    from datasketch import LeanMinHash

__all__ = [
    "SEED",
    "STOPWORDS",
    "Features",
    "features",
    "features_for",
    "hash32",
    "lean_minhash",
    "normalize",
    "signature",
    "signatures",
    "tokenize",
]

SEED = 1  # datasketch's default seed: its permutations are the ones we reproduce
_MAX32 = np.uint32(0xFFFFFFFF)


@dataclass(frozen=True)
class Features:
    """What fingerprinting extracts from an item.

    ``tokens`` is the set MinHash summarises; ``weights`` holds term weights
    (headline, lead position, entities; no IDF) for the verification score;
    ``entities`` are the terms taken for names.
    """

    tokens: frozenset[str]
    weights: dict[str, float]
    entities: frozenset[str] = frozenset()


# English function words (Snowball list plus common contractions/fillers) and
# news page furniture. Lowercase, unstemmed, accent-free.
_STOPWORDS_TEXT = """
a about above across after afterwards again against all almost alone along
already also although always am among amongst an and another any anybody anyhow
anyone anything anyway anyways anywhere are aren around as at away back be
became because become becomes becoming been before beforehand behind being
below beside besides between beyond both but by can cannot cant could couldn
did didn do does doesn doing don done down during each eg either else elsewhere
enough etc even ever every everybody everyone everything everywhere except few
for former formerly from further get gets getting give given gives go goes going
gone got had hadn has hasn have haven having he hence her here hereafter hereby
herein hers herself him himself his how however i ie if in indeed instead into
is isn it its itself just least less let lets like ll made make makes many may
maybe me meanwhile might mine more moreover most mostly much must mustn my
myself namely neither never nevertheless next no nobody none noone nor not
nothing now nowhere of off often on once one only onto or other others otherwise
ought our ours ourselves out over own per perhaps please put quite rather re
really s said same say says see seem seemed seeming seems several shall shan she
should shouldn since so some somebody somehow someone something sometime
sometimes somewhere still such t than that the their theirs them themselves then
thence there thereafter thereby therefore therein thereupon these they thing
things this those though through throughout thru thus to together too toward
towards under until up upon us ve very via was wasn we well were weren what
whatever when whence whenever where whereafter whereas whereby wherein whereupon
wherever whether which while whither who whoever whole whom whose why will with
within without won would wouldn yet you your yours yourself yourselves
mr mrs ms dr st
im ive id youre youve theyre theyve weve dont doesnt didnt cant wont isnt arent
wasnt werent hasnt havent hadnt shouldnt wouldnt couldnt thats whats theres
heres hes shes itll youll theyll

advertisement advertising ad ads sponsored related read click watch video
videos photo photos image images pictured picture pictures gallery galleries
update updates updated updating breaking news latest live reuters ap afp copyright
reserved rights subscribe newsletter share shares comment comments follow untitled
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORDS_TEXT.split())

_stemmer = Stemmer.Stemmer("english")

# Capitalised but never a story-specific entity (stored as stems): weekdays, months,
# and the political titles that precede names ("President Vladimir Putin"), which
# would otherwise make any two stories about heads of state look alike.
_NOT_ENTITIES: frozenset[str] = frozenset(
    _stemmer.stemWords(
        [
            "president",
            "minister",
            "prime",
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
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
        ]
    )
)


def _mark_class() -> str:
    """The combining marks (Unicode category M) of the first two planes, as the body of
    a character class.  They are parts of words (Devanagari and Thai vowel signs, Arabic
    vowels) but not ``\\w``: without them "भारत" was cut into "भ" and "रत", and the
    fragments linked unrelated Hindi headlines.  (18 ms, once.)"""
    cat = unicodedata.category
    ranges: list[tuple[int, int]] = []
    for cp in range(0x20000):
        if cat(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if b < 0x10000 else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


# A word: a dotted acronym ("U.S.", "C.I.A."), digits with . or , groups
# ("37,000", "6.1"), or a run of letters and digits ("6th", "mp3") with the combining
# marks within it ("भारत") and inner apostrophes ("mcdonald's").  ASCII text has no
# marks and is read by the same pattern without them (_words), 1.4 times faster.
_ACRONYM_OR_NUMBER = r"(?:[^\W\d_]\.){2,}|\d+(?:[.,]\d+)+|"
_RUN = r"[^\W_]+(?:[" + _mark_class() + r"]+[^\W_]*)*"
_WORD_RE = re.compile(_ACRONYM_OR_NUMBER + _RUN + "(?:'" + _RUN + ")*")
_ASCII_WORD_RE = re.compile(_ACRONYM_OR_NUMBER + r"[^\W_]+(?:'[^\W_]+)*")
# Combining marks (accents) left by NFKD decomposition.
_COMBINING_RE = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
# A word preceded (group 1) by the end of a sentence, if it starts one.
_SENTENCE_GAP = r"([.!?\n][\s\"'()\[\]\u201c\u201d\u00ab\u00bb*\-\u2013\u2014]*)?("
_BODY_RE = re.compile(_SENTENCE_GAP + _WORD_RE.pattern + ")")
_ASCII_BODY_RE = re.compile(_SENTENCE_GAP + _ASCII_WORD_RE.pattern + ")")


def _words(text: str) -> re.Pattern[str]:
    return _ASCII_WORD_RE if text.isascii() else _WORD_RE


# Typographic punctuation -> ASCII, so most English text stays ASCII and skips
# the (slower) accent-stripping path.
_APOSTROPHES = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2012": "-",
        "\u2212": "-",
        "\u2026": ".",
        "\u00a0": " ",
        "\u2022": " ",
        "\u00b7": " ",
    }
)
_SENTENCE_END = frozenset(".!?\n")
_SKIP_BACK = frozenset(" \t\r\"'()[]\u201c\u201d\u00ab\u00bb-\u2013\u2014*")


def normalize(text: str) -> str:
    """NFKC-normalise ``text``, unify apostrophes and strip accents (case kept)."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    if not text.isascii():
        text = _COMBINING_RE.sub("", unicodedata.normalize("NFKD", text))
        text = unicodedata.normalize("NFC", text)
    return text


@lru_cache(maxsize=262_144)
def _term(word: str) -> str | None:
    """Case-folded, stemmed term of one raw word, or None if it is dropped."""
    if word[0].isdigit():
        tok = word.replace(",", "")
        return tok if len(tok) > 1 else None
    if word.endswith(".") or word == "US":  # acronym: "U.S." / "US" -> "us"
        return word.replace(".", "").casefold()
    w = word.casefold()
    w = w.removesuffix("'s")
    w = w.replace("'", "")
    if len(w) < 2 or w in STOPWORDS:
        return None
    stem: str = _stemmer.stemWord(w)
    return stem


def _is_sentence_start(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in _SKIP_BACK:
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


def _looks_like_entity(word: str) -> bool:
    if not word[0].isupper():
        return False
    if word.isupper():  # acronym such as CIA, IBF, NFL; not a shouted headline
        return len(word) <= 4
    return True


def _scan(text: str) -> list[tuple[str, bool]]:
    """(term, capitalised-mid-sentence) pairs of ``text`` in order."""
    out: list[tuple[str, bool]] = []
    for m in _words(text).finditer(text):
        term = _term(m.group())
        if term is None:
            continue
        word = m.group()
        cap = _looks_like_entity(word) and not _is_sentence_start(text, m.start())
        out.append((term, cap))
    return out


def _cased_title(words: list[str]) -> bool:
    """True when capitalisation in a title is informative (sentence case)."""
    letters = [w for w in words if w[0].isalpha() and w.casefold() not in STOPWORDS]
    if len(letters) < 3:
        return True
    capital = sum(1 for w in letters if w[0].isupper())
    return capital <= 0.6 * len(letters)


def tokenize(text: str) -> list[str]:
    """Content terms of ``text`` in order (normalised, stopwords dropped, stemmed)."""
    out: list[str] = []
    text = normalize(text)
    for m in _words(text).finditer(text):
        term = _term(m.group())
        if term is not None:
            out.append(term)
    return out


@lru_cache(maxsize=16)
def _decay_table(lead_words: float, max_words: int) -> tuple[float, ...]:
    """exp(-k / lead_words) for word positions k (regex words can exceed max_words)."""
    n = 2 * max_words + 16
    if lead_words <= 0:
        return (1.0,) + (0.0,) * (n - 1)
    return tuple(math.exp(-k / lead_words) for k in range(n))


def _head(text: str, n: int) -> str:
    if n <= 0 or not text:
        return ""
    parts = text.split(maxsplit=n)
    return " ".join(parts[:n])


def features(
    title: str,
    text: str,
    *,
    title_weight: float = 2.0,
    lead_words: float = 100.0,
    max_body_words: int = 300,
    entity_boost: float = 3.0,
    fingerprint_body_words: int = 60,
) -> Features:
    """Features of one item from its ``title`` and ``text`` (either may be empty)."""
    title_n = normalize(title)
    body_n = normalize(_head(text, max_body_words))

    counts: dict[str, float] = {}
    entities: set[str] = set()
    fp: set[str] = set()

    title_scan = _scan(title_n)
    title_cased = _cased_title(_words(title_n).findall(title_n))
    tw = title_weight
    for term, cap in title_scan:
        counts[term] = counts.get(term, 0.0) + tw
        fp.add(term)
        if cap and title_cased:
            entities.add(term)

    # Body positions are counted in raw words (before filtering) so that the
    # decay does not depend on the stopword list. The first body word and
    # words right after a sentence end are sentence starts (not entities).
    decay = _decay_table(lead_words, max_body_words)
    fp_words = fingerprint_body_words
    n_decay = len(decay)
    body_re = _ASCII_BODY_RE if body_n.isascii() else _BODY_RE
    for pos, (sentence_end, word) in enumerate(body_re.findall(body_n)):
        body_term = _term(word)
        if body_term is None:
            continue
        counts[body_term] = counts.get(body_term, 0.0) + (decay[pos] if pos < n_decay else 0.0)
        if pos < fp_words:
            fp.add(body_term)
        if pos and not sentence_end and _looks_like_entity(word):
            entities.add(body_term)

    entities -= _NOT_ENTITIES
    boost = entity_boost
    weights: dict[str, float] = {}
    for term, c in counts.items():
        w = 1.0 + math.log(c) if c > 1.0 else c
        if term in entities:
            w *= boost
        weights[term] = w
    return Features(tokens=frozenset(fp), weights=weights, entities=frozenset(entities))


def hash32(token: bytes) -> int:
    """The 32-bit token hash fed to MinHash."""
    return xxhash.xxh3_64_intdigest(token) & 0xFFFFFFFF


@lru_cache(maxsize=8)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    # Exactly datasketch.MinHash._init_permutations for scheme "affine32".
    gen = np.random.RandomState(SEED)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    out: np.ndarray = h ^ (h >> np.uint32(16))
    return out


def signatures(token_sets: Sequence[Iterable[str]], num_perm: int = 128) -> np.ndarray:
    """MinHash signatures of many token sets at once: a ``(len, num_perm)`` uint32 array."""
    n = len(token_sets)
    out = np.full((n, num_perm), _MAX32, dtype=np.uint32)
    lengths = np.zeros(n, dtype=np.int64)
    hashes: list[int] = []
    for i, tokens in enumerate(token_sets):
        before = len(hashes)
        hashes.extend(
            xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) & 0xFFFFFFFF for t in tokens
        )
        lengths[i] = len(hashes) - before
    if not hashes:
        return out
    hv = _fmix32(np.array(hashes, dtype=np.uint32))
    nonempty = np.flatnonzero(lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
    a, b = _permutations(num_perm)
    # Permutations in blocks of rows keep the temporary (block x tokens) array in cache.
    block = max(1, min(num_perm, (1 << 20) // max(1, hv.size)))
    for lo in range(0, num_perm, block):
        hi = min(num_perm, lo + block)
        phv = a[lo:hi, None] * hv[None, :] + b[lo:hi, None]
        out[nonempty, lo:hi] = np.minimum.reduceat(phv, starts, axis=1).T
    return out


def signature(tokens: Iterable[str], num_perm: int = 128) -> np.ndarray:
    """The MinHash signature of one token set."""
    row: np.ndarray = signatures([list(tokens)], num_perm)[0]
    return row


def lean_minhash(sig: np.ndarray) -> LeanMinHash:
    """A datasketch sketch around a stored signature, for the LSH index."""
    from datasketch import LeanMinHash  # (imported here: the package takes 0.5 s to import)

    return LeanMinHash(seed=SEED, hashvalues=sig, scheme="affine32")


def features_for(settings: ClusterSettings, title: str, text: str) -> Features:
    """:func:`features` with the parameters of the clustering settings."""
    return features(
        title,
        text,
        title_weight=settings.title_weight,
        lead_words=settings.lead_words,
        max_body_words=settings.max_body_words,
        entity_boost=settings.entity_boost,
        fingerprint_body_words=settings.fingerprint_body_words,
    )
