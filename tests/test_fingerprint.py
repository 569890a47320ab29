from __future__ import annotations

import numpy as np
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.fingerprint import features, hash32, lean_minhash, signature, signatures, tokenize


def datasketch_signature(tokens: list[str], num_perm: int) -> np.ndarray:
    m = MinHash(num_perm=num_perm, hashfunc=hash32)
    m.update_batch([t.encode("utf-8", "surrogatepass") for t in tokens])
    return m.hashvalues


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.text(min_size=1, max_size=12), max_size=40), min_size=1, max_size=8),
    st.sampled_from([16, 64, 128, 200]),
)
def test_signatures_are_bit_identical_to_datasketch(token_sets: list[list[str]], num_perm: int) -> None:
    ours = signatures(token_sets, num_perm)
    assert ours.dtype == np.uint32 and ours.shape == (len(token_sets), num_perm)
    for row, tokens in zip(ours, token_sets, strict=True):
        assert np.array_equal(row, datasketch_signature(tokens, num_perm))


def test_empty_set_gives_the_empty_sketch() -> None:
    assert np.array_equal(signature([], 64), MinHash(num_perm=64, hashfunc=hash32).hashvalues)


def test_lean_minhash_estimates_jaccard() -> None:
    a = lean_minhash(signature([f"w{i}" for i in range(100)]))
    b = lean_minhash(signature([f"w{i}" for i in range(50, 150)]))
    assert abs(a.jaccard(b) - 1 / 3) < 0.12


def test_tokenize_normalises_drops_stopwords_and_stems() -> None:
    assert tokenize("The officials were reporting on the elections") == ["offici", "report", "elect"]
    assert tokenize("") == []
    assert tokenize("Pokémon POKEMON pokemon") == ["pokemon"] * 3
    assert tokenize("McDonald's 37,000 cars, 6.1-magnitude U.S. hit-and-run") == [
        "mcdonald",
        "37000",
        "car",
        "6.1",
        "magnitud",
        "us",
        "hit",
        "run",
    ]


def test_features_entities_and_weights() -> None:
    f = features(
        "Lindsay Lohan checks into rehab at Betty Ford",
        "The actress Lindsay Lohan entered the Betty Ford Center on Monday.",
    )
    assert {"lohan", "lindsay", "ford", "betti", "center"} <= f.entities
    assert "monday" not in f.entities
    assert f.tokens <= set(f.weights)
    assert f.weights["enter"] < f.weights["check"]  # headline words outweigh body words
    # Title-Cased headlines carry no case information: no entities from them.
    assert features("Sbarro Files For Second Bankruptcy Protection", "").entities == frozenset()


def test_features_lead_decay_and_limits() -> None:
    f = features("", "rocket " + "filler " * 50 + "satellite", lead_words=10.0, entity_boost=1.0)
    assert f.weights["rocket"] > 0.99 and f.weights["satellit"] < 0.01
    cut = features("", "alpha beta gamma delta", max_body_words=2)
    assert set(cut.weights) == {"alpha", "beta"}
    fp = features("Headline words", "alpha beta gamma delta", fingerprint_body_words=2)
    assert fp.tokens == {"headlin", "word", "alpha", "beta"}
    assert features("", "").tokens == frozenset() and features("", "").weights == {}


@given(st.text(), st.text())
def test_identical_text_gives_identical_signature(title: str, text: str) -> None:
    a = features(title, text)
    b = features(title, text)
    assert a == b
    assert np.array_equal(signature(a.tokens), signature(b.tokens))


def test_page_furniture_in_headlines_is_no_term() -> None:
    """ "Live updates:" kept the term "updat" ("updated" was a stop word, "updates" was
    not), so any two live blogs shared it; "(untitled)" made one story of wordless items."""
    assert tokenize("Live updates: pictures and galleries (untitled)") == []
    assert tokenize("Live updates: Ukraine war") == tokenize("Ukraine war")


def test_words_keep_their_combining_marks() -> None:
    """Vowel signs are combining marks, not word characters: "भारत" ("India") was cut
    into "भ" and "रत", and such fragments joined unrelated Hindi headlines."""
    assert tokenize("भारत ने चुनाव के नतीजे घोषित किए") == ["भारत", "ने", "चुनाव", "के", "नतीजे", "घोषित", "किए"]
    assert tokenize("दिल्ली में भारी बारिश") == ["दिल्ली", "में", "भारी", "बारिश"]
    assert tokenize("ประเทศไทยเลือกตั้ง") == ["ประเทศไทยเลือกตั้ง"]  # Thai: one run (no spaces)
    assert tokenize("مَدْرَسَة الدَّرْس") == ["مَدْرَسَة", "الدَّرْس"]  # vowelled Arabic
    assert tokenize("Café naïve Zürich") == ["cafe", "naiv", "zurich"]  # accents still go


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=200))
def test_ascii_text_reads_the_same_with_or_without_the_marks(text: str) -> None:
    """ASCII text is read by a pattern without the marks (faster): the same words."""
    from aggregator import fingerprint

    assert fingerprint._WORD_RE.findall(text) == fingerprint._ASCII_WORD_RE.findall(text)
    assert fingerprint._BODY_RE.findall(text) == fingerprint._ASCII_BODY_RE.findall(text)
