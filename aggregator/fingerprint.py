"""Pure fingerprinting: text to features, features to MinHash signatures.

Signatures are computed for many items at once with numpy and are bit-identical
to ``datasketch.MinHash(num_perm, seed=1, hashfunc=hash32)`` with its default
``affine32`` scheme, where ``hash32`` is ``xxh3_64(token) & 0xFFFFFFFF`` (tested).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import Stemmer
import xxhash
from datasketch import LeanMinHash

__all__ = [
    "SEED",
    "Features",
    "features",
    "hash32",
    "lean_minhash",
    "signature",
    "signatures",
    "tokenize",
]

SEED = 1  # datasketch's default seed: its permutations are the ones we reproduce
_MAX32 = np.uint32(0xFFFFFFFF)
_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")

# Function words and newsroom boilerplate: they say nothing about which story this is.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "almost",
        "also",
        "although",
        "am",
        "among",
        "an",
        "and",
        "another",
        "any",
        "are",
        "aren't",
        "around",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "couldn't",
        "did",
        "didn't",
        "do",
        "does",
        "doesn't",
        "doing",
        "don't",
        "down",
        "during",
        "each",
        "either",
        "else",
        "enough",
        "even",
        "ever",
        "every",
        "few",
        "for",
        "from",
        "further",
        "get",
        "gets",
        "got",
        "had",
        "hadn't",
        "has",
        "hasn't",
        "have",
        "haven't",
        "having",
        "he",
        "he'd",
        "he'll",
        "he's",
        "her",
        "here",
        "here's",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "how's",
        "however",
        "i",
        "i'd",
        "i'll",
        "i'm",
        "i've",
        "if",
        "in",
        "into",
        "is",
        "isn't",
        "it",
        "it's",
        "its",
        "itself",
        "just",
        "least",
        "less",
        "let's",
        "like",
        "likely",
        "made",
        "make",
        "many",
        "may",
        "me",
        "might",
        "more",
        "most",
        "much",
        "must",
        "mustn't",
        "my",
        "myself",
        "neither",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "often",
        "on",
        "once",
        "one",
        "only",
        "or",
        "other",
        "ought",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "per",
        "perhaps",
        "quite",
        "rather",
        "really",
        "said",
        "same",
        "say",
        "says",
        "she",
        "she'd",
        "she'll",
        "she's",
        "should",
        "shouldn't",
        "since",
        "so",
        "some",
        "such",
        "than",
        "that",
        "that's",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "there's",
        "these",
        "they",
        "they'd",
        "they'll",
        "they're",
        "they've",
        "this",
        "those",
        "though",
        "through",
        "thus",
        "to",
        "too",
        "toward",
        "towards",
        "under",
        "until",
        "up",
        "upon",
        "us",
        "very",
        "was",
        "wasn't",
        "we",
        "we'd",
        "we'll",
        "we're",
        "we've",
        "were",
        "weren't",
        "what",
        "what's",
        "when",
        "when's",
        "where",
        "where's",
        "whether",
        "which",
        "while",
        "who",
        "who's",
        "whom",
        "whose",
        "why",
        "why's",
        "will",
        "with",
        "within",
        "without",
        "won't",
        "would",
        "wouldn't",
        "yet",
        "you",
        "you'd",
        "you'll",
        "you're",
        "you've",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "mr",
        "mrs",
        "ms",
        "dr",
        "told",
        "according",
        "reported",
        "reports",
        "report",
        "reportedly",
        "new",
        "news",
        "advertisement",
        "read",
        "more",
        "click",
        "here",
        "subscribe",
        "newsletter",
        "image",
        "photo",
        "getty",
        "images",
        "copyright",
        "rights",
        "reserved",
        "share",
        "tweet",
        "email",
        "video",
        "watch",
        "updated",
        "published",
    ]
)


@dataclass(frozen=True)
class Features:
    """What fingerprinting extracts from an item.

    ``tokens`` is the set MinHash summarises; ``weights`` holds term frequencies
    (headline words weighted more) for the verification score.
    """

    tokens: frozenset[str]
    weights: dict[str, float]


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Content words of ``text``: lower-cased, stop words dropped, stemmed."""
    words = [w.replace("’", "'").replace(".", "") for w in _WORD.findall(text.lower())]
    words = [w for w in words if w and w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    stems: list[str] = _stemmer().stemWords(words)
    return stems


def features(title: str, text: str, *, body_words: int = 120, title_weight: float = 2.0) -> Features:
    """Features of one item: headline words plus the first ``body_words`` words of the body."""
    head = tokenize(title)
    body = tokenize(" ".join(text.split()[:body_words])) if body_words else []
    weights: dict[str, float] = {}
    for t in body:
        weights[t] = weights.get(t, 0.0) + 1.0
    for t in head:
        weights[t] = weights.get(t, 0.0) + title_weight
    return Features(tokens=frozenset(weights), weights=weights)


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
    return LeanMinHash(seed=SEED, hashvalues=sig, scheme="affine32")
