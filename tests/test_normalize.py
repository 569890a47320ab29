from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.models import Entry
from aggregator.normalize import (
    _visible,
    canonical_link,
    clean_text,
    content_hash,
    html_to_text,
    item_identity,
    normalize_entry,
    summarize,
    title_text,
)


def test_html_to_text_drops_markup_scripts_and_styles() -> None:
    html = "<p>Hello <b>world</b></p><script>alert(1)</script><style>p{}</style><p>Second&nbsp;para &amp; more</p>"
    assert html_to_text(html) == "Hello world Second para & more"


def test_html_to_text_plain_and_empty() -> None:
    assert html_to_text("") == ""
    assert html_to_text("  just   text\n here ") == "just text here"


@pytest.mark.parametrize(
    "blank", ["\u200b\u200c\u200d\u2060", "\xad\u2800", "\u3164 \uffa0", "\u0301", "\u202e\u200b"]
)
def test_text_that_shows_nothing_is_empty(blank: str) -> None:
    """A headline or an outlet's name of zero-width or blank characters is none: the
    story's link had no text to click, so the "(untitled)" fallback must apply."""
    assert clean_text(blank) == "" and title_text(blank) == ""
    between = clean_text(f"a{blank}b")  # between letters, they stay (NFKC may fold them)
    assert between[-1] == "b" and unicodedata.normalize("NFD", between)[0] == "a"


def test_clean_text_unicode() -> None:
    assert clean_text("ﬁnancial\u00a0news\u200b") == "financial news\u200b".replace("\u200b", "\u200b")
    assert clean_text("a\x00b\x07c") == "a b c"
    assert clean_text("Ａ１") == "A1"  # NFKC folds full-width forms


def test_canonical_link_strips_tracking() -> None:
    assert (
        canonical_link("HTTPS://News.Example.COM:443/a/b?utm_source=rss&id=7&fbclid=x#frag")
        == "https://news.example.com/a/b?id=7"
    )
    assert canonical_link("http://example.com") == "http://example.com/"
    assert canonical_link("http://example.com:8080/x?utm_medium=feed") == "http://example.com:8080/x"


def test_canonical_link_refuses_non_http() -> None:
    for bad in ("javascript:alert(1)", "data:text/html,x", "ftp://x/y", "/relative", "", None, "http://"):
        assert canonical_link(bad) is None


def test_identity_prefers_guid_then_link_then_title_and_date() -> None:
    assert item_identity("g1", "https://x/", "T", 5.0) == "guid:g1"
    assert item_identity(None, "https://x/", "T", 5.0) == "link:https://x/"
    a = item_identity(None, None, "T", 5.0)
    assert a.startswith("title:")
    assert a == item_identity(None, None, "T", 5.0)
    assert a != item_identity(None, None, "T", 6.0)
    assert item_identity(None, None, "T", 5.0, "h1") == a  # a date is enough
    # Without a date, the words tell a "Daily briefing" from yesterday's.
    assert item_identity(None, None, "T", None, "h1") != item_identity(None, None, "T", None, "h2")
    assert item_identity(None, None, "T", None, "h1") == item_identity(None, None, "T", None, "h1")


def test_normalize_entry() -> None:
    e = Entry(
        guid=None,
        link="https://a.example/story?utm_source=x",
        title="<b>Big</b> news",
        summary_html="<p>Short</p>",
        content_html="<p>The full <i>text</i> of the story.</p>",
        published=1000.0,
    )
    item = normalize_entry(e)
    assert item.title == "Big news"
    assert item.text == "The full text of the story."
    assert item.summary == "Short"
    assert item.canonical_link == "https://a.example/story"
    assert item.identity == "link:https://a.example/story"
    assert item.content_hash == content_hash("Big news", "The full text of the story.")


def test_normalize_entry_drops_unsafe_links_and_fills_title() -> None:
    item = normalize_entry(
        Entry(guid="x", link="javascript:alert(1)", title="", summary_html="", content_html="Words here")
    )
    assert item.link is None and item.canonical_link is None
    assert item.title == "Words here"


# clean_text's first definition (regular expressions), which the faster one must equal.
_WS = re.compile(r"\s+")
_JUNK = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff\u202a-\u202e\u2066-\u2069]"
)


def clean_text_by_regex(text: str) -> str:
    if not text:
        return ""
    text = _WS.sub(" ", _JUNK.sub(" ", unicodedata.normalize("NFKC", text))).strip()
    return text if any(map(_visible, text)) else ""


@given(st.text(st.characters(exclude_categories=())))
def test_clean_text_collapses_whitespace_as_its_regex_did(s: str) -> None:
    assert clean_text(s) == clean_text_by_regex(s)


def test_summarize() -> None:
    assert summarize("a b c", 5) == "a b c"
    assert summarize("a b c d", 2) == "a b …"


@given(st.text())
def test_clean_text_never_raises_and_is_idempotent(s: str) -> None:
    once = clean_text(s)
    assert clean_text(once) == once
    assert once == "" or any(
        unicodedata.category(c)[0] in "LNPS" or unicodedata.category(c) in ("Co", "Cn") for c in once
    )


@given(st.text())
def test_html_to_text_never_raises_and_is_idempotent_on_its_output(s: str) -> None:
    out = html_to_text(s)
    assert "<script" not in out.lower() or "<" in s
    assert isinstance(out, str)


@given(st.text())
def test_canonical_link_never_raises_and_is_idempotent(s: str) -> None:
    once = canonical_link(s)
    if once is not None:
        assert canonical_link(once) == once


@given(st.text(), st.text(), st.text(), st.one_of(st.none(), st.floats(allow_nan=False)))
def test_normalize_entry_never_raises_and_is_deterministic(
    title: str, summary: str, content: str, published: float | None
) -> None:
    e = Entry(
        guid=None, link=None, title=title, summary_html=summary, content_html=content, published=published
    )
    a = normalize_entry(e)
    assert a == normalize_entry(e)
    assert a.title


@pytest.mark.parametrize(
    ("title", "text"),
    [
        ("Why <script> tags block rendering", "Why <script> tags block rendering"),
        ("The <style> element explained", "The <style> element explained"),
        ("If a<b then c", "If a<b then c"),
        ("<b>Bold</b> move &amp; more", "Bold move & more"),
        ("Q&amp;A: <i>why</i>?<br/>Now", "Q&A: why? Now"),
        ('<script>alert("x")</script>Harbour strike<img src=x onerror="alert(1)">', "Harbour strike"),
    ],
)
def test_a_headline_keeps_text_that_only_looks_like_markup(title: str, text: str) -> None:
    """Read as an HTML document, a headline lost everything after a "<" that was text."""
    assert title_text(title) == text


@given(st.text(max_size=80))
def test_a_headline_without_markup_is_kept(words: str) -> None:
    plain = words.replace("<", " ").replace("&", " ")
    assert title_text(plain) == clean_text(plain)


def test_html_nested_absurdly_deep_is_kept_as_its_text() -> None:
    """Parsers take time quadratic in nesting depth (64,000 <div>s took 12.6 s to read,
    and as long again to sanitise for display): such content is kept as text alone."""
    deep = "<div>" * 64_000 + "Harbour cranes <b>stop</b><script>evil()</script>"
    item = normalize_entry(Entry("g", None, "T", "", deep))
    assert item.text == "Harbour cranes stop" and item.content_html == "<p>Harbour cranes stop</p>"
    # a long article of unclosed paragraphs and list items is not deep, and keeps its markup
    article = "".join(f"<p>Paragraph {n} <li>point" for n in range(2_000))
    assert normalize_entry(Entry("g", None, "T", "", article)).content_html == article


_OLD_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b[^<>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


@given(
    st.lists(
        st.sampled_from(
            ["<script>", "</script>", "<STYLE a=1>", "</style >", "<", ">", "x", " ", "</SCRIPT>"]
        ),
        max_size=12,
    ).map("".join)
)
def test_script_and_style_go_as_a_pattern_would_take_them(html: str) -> None:
    """One pass, with what a regex finding each open tag's close removed (that regex
    took minutes on a headline of thousands of unclosed ``<script>``s)."""
    from aggregator.normalize import _drop_script_and_style

    assert _drop_script_and_style(html) == _OLD_SCRIPT_OR_STYLE.sub(" ", html)


def test_a_tag_with_a_giant_attribute_list_keeps_only_its_name() -> None:
    """One tag with 100,000 attributes took lexbor 220 s; such a tag keeps its name."""
    giant = "<p " + " ".join(f"a{i}=x" for i in range(10_000)) + ">hello</p><p class=x>next</p>"
    item = normalize_entry(Entry(guid="g", link=None, title="t", summary_html="", content_html=giant))
    assert item.content_html == "<p>hello</p><p class=x>next</p>" and item.text == "hello next"


def test_stored_html_carries_no_control_characters() -> None:
    entry = Entry(
        guid="g",
        link=None,
        title="t",
        summary_html="<p>a\x01b</p>",
        content_html="<p>one\x0ctwo\x85three\x07four\ufffe</p>",
    )
    item = normalize_entry(entry)
    assert item.content_html == "<p>one two three four </p>"  # (feeds put \x0c and \x85 between words)
    assert item.text == "one two three four"


@given(st.text(max_size=1200))
def test_titles_are_cut_to_a_bounded_length(title: str) -> None:
    """A 200,000-character headline was repeated whole on every page and in every
    merged-feed item that listed its story."""
    from aggregator.normalize import MAX_TITLE_CHARS, cap_title

    capped = cap_title(title)
    assert len(capped) <= MAX_TITLE_CHARS
    assert capped == title if len(title) <= MAX_TITLE_CHARS else capped.endswith("…")
    assert title.startswith(capped[:-1].rstrip())


@given(st.text(max_size=3000))
def test_summaries_are_cut_in_words_and_characters(text: str) -> None:
    """A summary was 60 whitespace-separated words: a Japanese article (no spaces) went
    whole into every merged-feed item, and a 300,000-character run made 600 KB feeds."""
    from aggregator.normalize import MAX_SUMMARY_CHARS, summary_of

    summary = summary_of(text)
    assert len(summary) <= MAX_SUMMARY_CHARS
    assert len(summary.split()) <= 61  # 60 words and the ellipsis
    if len(summarize(text)) <= MAX_SUMMARY_CHARS:
        assert summary == summarize(text)


def test_a_long_article_without_spaces_gets_a_short_summary() -> None:
    article = "日本の首相は記者会見で新たな経済対策を発表した。" * 130  # 3,120 characters, no space
    item = normalize_entry(
        Entry(guid="j", link=None, title="経済対策", summary_html="", content_html=article)
    )
    assert len(item.summary) <= 600 and item.summary.endswith("…") and item.text == article


def test_a_huge_headline_is_stored_cut() -> None:
    words = "Parliament votes " * 20_000
    item = normalize_entry(
        Entry(guid="x", link=None, title=words, summary_html="", content_html="Body text here.")
    )
    assert (
        len(item.title) <= 400
        and item.title.startswith("Parliament votes Parliament")
        and item.title.endswith("…")
    )
    unbroken = normalize_entry(
        Entry(guid="y", link=None, title="", summary_html="", content_html="字" * 100_000)
    )
    assert len(unbroken.title) == 400 and unbroken.title.endswith("…")


def test_boilerplate_is_what_items_with_different_headlines_share() -> None:
    from aggregator.normalize import shared_sentences, without_sentences

    notice = "This content is not available in your region."
    banner = "We and our partners store and access information on your device, such as cookies."
    items = [
        ("Pool shuts", f"{banner}\nThe council closed the pool. It reopens in May."),
        ("Train derails", f"{banner} A freight train left the rails."),
        ("Vote today", notice),
        ("Volcano erupts", notice),
        ("Volcano erupts", "Same headline, same words: a copy, not boilerplate. Six words at least here."),
        ("Volcano erupts", "Same headline, same words: a copy, not boilerplate. Six words at least here."),
    ]
    boilerplate = shared_sentences(items)
    assert [without_sentences(text, boilerplate) for _, text in items] == [
        "The council closed the pool. It reopens in May.",
        "A freight train left the rails.",
        "",
        "",
        items[4][1],
        items[5][1],
    ]
    assert (
        shared_sentences([("Pool shuts", "Short and shared."), ("Train", "Short and shared. More.")])
        == frozenset()
    )


@given(st.text(), st.sets(st.text(max_size=30), max_size=3))
def test_removing_sentences_keeps_the_rest_in_order(text: str, keys: set[str]) -> None:
    from aggregator.normalize import without_sentences

    assert without_sentences(text, frozenset()) == text
    out = without_sentences(text, frozenset(keys))
    rest = iter(text)
    assert all(c in rest for c in out.strip())  # a subsequence of the text


def test_updates_of_one_story_keep_the_sentences_they_share() -> None:
    """Sentences shared by headlines about one thing are the story, not boilerplate."""
    from aggregator.normalize import shared_sentences

    fact = "The Federal Reserve kept its benchmark interest rate unchanged on Wednesday."
    items = [
        ("Fed holds rates as Powell weighs inflation (update 1)", fact),
        ("Fed holds rates, two members dissent (update 2)", f"{fact} Two members dissented."),
    ]
    assert shared_sentences(items) == frozenset()
    assert shared_sentences([*items, ("Volcano erupts on remote island", fact)]) == {fact.casefold()}


def _reference_shared(items: list[tuple[str, str]]) -> frozenset[str]:
    """``shared_sentences`` as first written: every sentence's key made, then filtered."""
    from aggregator.normalize import (
        _HEADLINE_WORD,
        _SENTENCE_END,
        MIN_SHARED_SENTENCE_WORDS,
        _key,
        _unrelated,
    )

    carriers: dict[str, list[frozenset[str]]] = {}
    for title, text in items:
        keys = {_key(p) for p in _SENTENCE_END.split(text)}
        keys = {k for k in keys if len(k.split()) >= MIN_SHARED_SENTENCE_WORDS}
        whole = _key(text)
        if len(whole.split()) >= 2:
            keys.add(whole)
        words = frozenset(_HEADLINE_WORD.findall(title.casefold()))
        for k in keys:
            carriers.setdefault(k, []).append(words)
    return frozenset(k for k, heads in carriers.items() if len(heads) > 1 and _unrelated(heads))


_SENTENCES = st.lists(
    st.sampled_from(
        [
            "We and our partners use cookies on this site to improve it.",
            "The council closed the pool on Monday after the storm.",
            "Short one.",
            "ÉTÉ Straße ﬁnal words appear here in this sentence, six or more!",
            "",
            "\n",
        ]
    )
    | st.text(alphabet=" .!?…\nabcßİΣ", max_size=40),
    max_size=6,
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Pool shuts", "Train derails", "Pool shuts again"]), _SENTENCES.map(" ".join)
        ),
        max_size=6,
    )
)
def test_shared_sentences_keeps_its_first_definition(items: list[tuple[str, str]]) -> None:
    from aggregator.normalize import shared_sentences

    assert shared_sentences(items) == _reference_shared(items)
