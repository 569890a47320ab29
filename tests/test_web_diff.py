"""The variant comparison (web/diff.py): sentence splitting, word and sentence diffs."""

from __future__ import annotations

import difflib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment

from web.diff import (
    _ABBREVIATIONS,
    MAX_SENTENCE_WORDS,
    MAX_WORD_PAIRS,
    REWORD_RATIO,
    WordOp,
    _rewordings,
    diff_texts,
    sentences,
    word_diff,
)
from web.filters import diff_side

words = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8)
ascii_words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=2, max_size=8).filter(
    lambda w: w not in _ABBREVIATIONS
)
sentence = st.builds(
    lambda ws, end: (" ".join(ws)).capitalize() + end,
    st.lists(words, min_size=1, max_size=8),
    st.sampled_from([".", "!", "?", "…", '."']),
)
paragraph = st.lists(sentence, max_size=12).map(" ".join)
ascii_sentence = st.builds(
    lambda ws, end: (" ".join(ws)).capitalize() + end,
    st.lists(ascii_words, min_size=1, max_size=8),
    st.sampled_from([".", "!", "?", "…", '."']),
)


def side(ops: list, kinds: set[str]) -> list[str]:  # type: ignore[type-arg]
    return " ".join(op.text for op in ops if op.kind in kinds).split()


@given(st.text())
def test_sentences_give_the_text_back(text: str) -> None:
    assert " ".join(sentences(text)) == " ".join(text.split())
    assert all(s and s == s.strip() and len(s.split()) <= MAX_SENTENCE_WORDS for s in sentences(text))


def test_a_text_without_sentence_ends_is_compared_in_pieces() -> None:
    """Two 10,000-word texts without a full stop were one sentence each: comparing them
    word by word took 23 s (a run-on transcript, a list, or a hostile feed)."""
    words = [f"w{k % 997}" for k in range(10_000)]
    edited = list(words)
    edited[5000] = "changed"
    a, b = " ".join(words), " ".join(edited)
    assert len(sentences(a)) == 10_000 // MAX_SENTENCE_WORDS + 1
    d = diff_texts(a, b)
    assert len(d.reworded) == 1 and d.same == d.canonical_sentences - 1
    assert [op.kind for op in d.reworded[0].words] == ["same", "del", "add", "same"]


def test_word_diff_of_long_sequences_shows_them_replaced_whole() -> None:
    n = int(MAX_WORD_PAIRS**0.5) + 1
    a, b = " ".join(["x"] * n), " ".join(["x"] * (n - 1) + ["y"])
    assert word_diff(a, b) == [WordOp("del", a), WordOp("add", b)]
    assert [op.kind for op in word_diff(a, " ".join(["x"] * (n - 3)))] == ["same", "del"]


def test_sentences_split_where_a_reader_would() -> None:
    text = (
        'Mr. Putin asked Musk to act. "It was a favour," one official said! Did he agree? '
        "The U.S. response was muted… Officials in Taipei declined to comment."
    )
    assert sentences(text) == [
        "Mr. Putin asked Musk to act.",
        '"It was a favour," one official said!',
        "Did he agree?",
        "The U.S. response was muted…",
        "Officials in Taipei declined to comment.",
    ]
    assert sentences("Rates rose to 3.5 per cent, e.g. the highest since 2008. Prices fell.") == [
        "Rates rose to 3.5 per cent, e.g. the highest since 2008.",
        "Prices fell.",
    ]
    assert sentences("Written by J. R. Smith. Then 2024 came.") == [
        "Written by J. R. Smith.",
        "Then 2024 came.",
    ]


@given(st.text(max_size=200), st.text(max_size=200))
def test_word_diff_rebuilds_both_sides(a: str, b: str) -> None:
    ops = word_diff(a, b)
    assert side(ops, {"same", "del"}) == a.split()
    assert side(ops, {"same", "add"}) == b.split()
    assert all(x.kind != y.kind for x, y in itertools.pairwise(ops))  # runs are merged


@given(paragraph)
def test_a_text_has_no_difference_with_itself(text: str) -> None:
    d = diff_texts(text, text)
    assert d.identical and d.same == len(sentences(text))
    assert d.shared_ratio == 1.0


@given(paragraph, paragraph)
def test_every_sentence_is_accounted_for(a: str, b: str) -> None:
    d = diff_texts(a, b)
    sa, sb = sentences(a), sentences(b)
    assert d.canonical_sentences == len(sa) and d.variant_sentences == len(sb)
    assert d.same + len(d.reworded) + len(d.removed) == len(sa)
    assert d.same + len(d.reworded) + len(d.added) == len(sb)
    assert set(d.added) <= set(sb) and set(d.removed) <= set(sa)
    for r in d.reworded:
        assert r.before in sa and r.after in sb
        assert side(r.words, {"same", "del"}) == r.before.split()
        assert side(r.words, {"same", "add"}) == r.after.split()
    assert 0.0 <= d.shared_ratio <= 1.0


@given(st.lists(ascii_sentence, min_size=2, max_size=8, unique_by=lambda s: s.lower()), st.randoms())
def test_reordering_is_not_a_change(parts: list[str], rnd: object) -> None:
    shuffled = list(parts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    d = diff_texts(" ".join(parts), " ".join(shuffled))
    assert not d.added and not d.removed


def test_long_unrelated_texts_are_compared_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Word counts bound difflib's ratio, so few of the 160,000 sentence pairs are compared in full."""
    import difflib
    import random

    compared = []
    ratio = difflib.SequenceMatcher.ratio
    monkeypatch.setattr(difflib.SequenceMatcher, "ratio", lambda m: compared.append(1) or ratio(m))
    rnd = random.Random(7)
    vocab = [f"word{i}" for i in range(3000)] + ["the", "a", "of", "and", "to", "in"] * 200

    def text(n: int) -> str:
        return " ".join(" ".join(rnd.choice(vocab) for _ in range(18)).capitalize() + "." for _ in range(n))

    a, b = text(400), text(400)
    d = diff_texts(a, b)
    assert len(compared) < 2_000  # 254 here; comparing every pair took 6.5 s
    assert d.same + len(d.reworded) + len(d.added) == d.variant_sentences > 300


def test_what_a_variant_adds_leaves_out_and_rewords() -> None:
    canonical = (
        "Putin asked Musk not to switch on Starlink over Taiwan. "
        "The request was a favour to Xi Jinping, officials said. "
        "SpaceX did not respond to questions."
    )
    variant = (
        "Putin asked Musk not to switch on Starlink over Taiwan. "
        "The request was a favour to China's leader Xi Jinping, officials said. "
        "Musk has spoken to Putin regularly since 2022."
    )
    d = diff_texts(canonical, variant)
    assert d.same == 1
    assert d.added == ["Musk has spoken to Putin regularly since 2022."]
    assert d.removed == ["SpaceX did not respond to questions."]
    (r,) = d.reworded
    assert r.before.startswith("The request") and r.after.startswith("The request")
    assert [op.text for op in r.words if op.kind == "add"] == ["China's leader"]
    assert not d.identical


def brute_rewordings(ka: list[tuple[str, ...]], kb: list[tuple[str, ...]]) -> list[int | None]:
    """Every pair compared in full: each canonical sentence in turn takes the most similar
    free variant sentence (ratio at least REWORD_RATIO; of equal ones the first)."""
    free = set(range(len(kb)))
    out: list[int | None] = []
    for key in ka:
        ratios = [
            (difflib.SequenceMatcher(None, key, kb[j], autojunk=False).ratio() if key or kb[j] else 0.0, -j)
            for j in free
        ]
        best = max(ratios, default=(0.0, 0))
        if best[0] >= REWORD_RATIO:
            out.append(-best[1])
            free.discard(-best[1])
        else:
            out.append(None)
    return out


small_key = st.lists(
    st.sampled_from(["the", "a", "said", "mayor", "bridge", "harbour", "council", "vote", "on", "monday"]),
    max_size=9,
).map(tuple)


@given(st.lists(small_key, max_size=7), st.lists(small_key, max_size=7))
def test_rewordings_are_those_of_comparing_every_pair(ka: list, kb: list) -> None:  # type: ignore[type-arg]
    """The shared-word bound only skips pairs that cannot win: the result is that of
    comparing every pair with difflib."""
    assert _rewordings(ka, range(len(ka)), kb, range(len(kb))) == brute_rewordings(ka, kb)


# The template macro diff_side replaced (a macro call per word run was a fifth of a big
# story page's rendering time): the filter must render exactly what it rendered.
SIDE_MACRO = (
    "{% macro side(ops, which) %}{% for op in ops if op.kind == 'same' or (op.kind == 'del' and "
    "which == 'before') or (op.kind == 'add' and which == 'after') %}{% if op.kind == 'same' %}"
    "{{ op.text }}{% elif op.kind == 'del' %}<del><span class=\"vh\">[changed:] </span>{{ op.text }}"
    '</del>{% else %}<ins><span class="vh">[new:] </span>{{ op.text }}</ins>{% endif %}'
    "{% if not loop.last %} {% endif %}{% endfor %}{% endmacro %}{{ side(ops, which) }}"
)
macro_side = Environment(autoescape=True).from_string(SIDE_MACRO)
word_op = st.builds(WordOp, st.sampled_from(["same", "del", "add"]), st.text(min_size=1, max_size=12))


@given(st.lists(word_op, max_size=8), st.sampled_from(["before", "after"]))
def test_diff_side_renders_what_the_macro_rendered(ops: list[WordOp], which: str) -> None:
    assert str(diff_side(ops, which)) == macro_side.render(ops=ops, which=which)


def test_diff_side_escapes_and_marks() -> None:
    ops = [WordOp("same", "<b>Mayor</b>"), WordOp("del", "said & <i>"), WordOp("add", "told")]
    assert str(diff_side(ops, "before")) == (
        '&lt;b&gt;Mayor&lt;/b&gt; <del><span class="vh">[changed:] </span>said &amp; &lt;i&gt;</del>'
    )
    assert (
        str(diff_side(ops, "after"))
        == '&lt;b&gt;Mayor&lt;/b&gt; <ins><span class="vh">[new:] </span>told</ins>'
    )
