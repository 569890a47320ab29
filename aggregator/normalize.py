"""Pure normalisation: HTML to text, Unicode, canonical links, item identity.

No I/O here.  Every function accepts any string and never raises on content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from html import escape, unescape
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from selectolax.lexbor import LexborHTMLParser

from aggregator.models import Entry, Item

__all__ = [
    "MAX_SUMMARY_CHARS",
    "MAX_TITLE_CHARS",
    "canonical_link",
    "cap_title",
    "clean_text",
    "content_hash",
    "html_to_text",
    "item_identity",
    "link_key",
    "normalize_entry",
    "shared_sentences",
    "shown_hash",
    "summarize",
    "summary_of",
    "title_text",
    "without_sentences",
]

# C0/C1 controls except tab/newline, lone surrogates, noncharacters and bidi overrides
_JUNK = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff\u202a-\u202e\u2066-\u2069]"
)
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "math")

# Query parameters that only track who clicked where; removing them never changes the page.
_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "piwik_", "mtm_", "hsa_", "_hs", "vero_", "oly_")
_TRACKING_NAMES = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "igshid",
        "twclid",
        "ttclid",
        "li_fat_id",
        "_ga",
        "_gl",
        "ref_src",
        "ref_url",
        "cmpid",
        "ocid",
        "smid",
        "sr_share",
        "ito",
        "itm_source",
        "itm_medium",
        "itm_campaign",
        "rss",
        "feed",
        "ns_mchannel",
        "ns_source",
        "ns_campaign",
        "at_medium",
        "at_campaign",
        "__twitter_impression",
        "spm",
        "share",
        "s_cid",
        "wt.mc_id",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def clean_text(text: str) -> str:
    """Unicode NFKC, control characters removed, whitespace collapsed; empty when
    nothing in it can be seen (a headline of zero-width spaces is no headline)."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    # (split and join: what \s+ -> " " and strip give, in a third of the time)
    text = " ".join(_JUNK.sub(" ", text).split())
    return text if any(map(_visible, text)) else ""


# Characters that draw nothing although they are not spaces or format characters.
_BLANKS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def _visible(c: str) -> bool:
    """Whether character ``c`` shows something by itself."""
    return not (c.isspace() or c in _BLANKS or unicodedata.category(c) in ("Cf", "Cc", "Mn", "Me", "Zs"))


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment, cleaned.  Scripts, styles and the like are dropped."""
    if not html:
        return ""
    if "<" not in html and "&" not in html:
        return clean_text(html)
    try:
        tree = LexborHTMLParser(html)
        tree.strip_tags(list(_DROP_TAGS))
        root = tree.body or tree.root
        text = root.text(separator=" ") if root is not None else ""
    except Exception:
        text = re.sub(r"<[^>]*>", " ", html)
    return clean_text(text)


# A headline is text that may carry a little markup.  Read as an HTML document, "Why
# <script> tags block rendering" or "If a<b then c" would lose all that follows the "<".
# So only markup is removed: script and style elements with their content, other tags
# that are closed somewhere in the headline (their words stay), and void tags.
_SCRIPT_OR_STYLE_OPEN = re.compile(r"<(script|style)\b[^<>]*>", re.IGNORECASE)
_SCRIPT_OR_STYLE_CLOSE = {
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
}


def _drop_script_and_style(html: str) -> str:
    """``html`` without its closed script and style elements (each becomes a space).

    In one pass: an open tag whose kind is never closed after it is left as text, and
    no later tag of that kind is looked at again (a regex looking for the close from
    every open tag took minutes on a headline of a few thousand ``<script>``s).
    """
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()
    for m in _SCRIPT_OR_STYLE_OPEN.finditer(html):
        kind = m[1].lower()
        if m.start() < pos or kind in unclosed:
            continue
        close = _SCRIPT_OR_STYLE_CLOSE[kind].search(html, m.end())
        if close is None:
            unclosed.add(kind)
            continue
        out += [html[pos : m.start()], " "]
        pos = close.end()
    out.append(html[pos:])
    return "".join(out)


_TITLE_CLOSE = re.compile(r"</([a-zA-Z][a-zA-Z0-9]*)\s*>")
_TITLE_VOID = re.compile(r"<(?:br|img|hr|wbr)\b[^<>]*>", re.IGNORECASE)


def title_text(title: str) -> str:
    """A headline as text: its markup removed and entities decoded (see above)."""
    if not title:
        return ""
    if "<" in title:
        title = _drop_script_and_style(title)
        names = {m[1].lower() for m in _TITLE_CLOSE.finditer(title)}
        if names:
            pattern = "|".join(sorted(map(re.escape, names)))
            title = re.sub(rf"</?(?:{pattern})\b[^<>]*>", "", title, flags=re.IGNORECASE)
        title = _TITLE_VOID.sub(" ", title)
    return clean_text(unescape(title))


# A headline is cut at this many characters: a 200,000-character title was repeated in
# every page and merged-feed item that listed its story (600 KB feeds of one item).
MAX_TITLE_CHARS = 400


def cap_title(title: str, limit: int = MAX_TITLE_CHARS) -> str:
    """``title``, cut with an ellipsis at a word end before ``limit`` characters if longer."""
    if len(title) <= limit:
        return title
    cut = title[: limit - 1]
    space = cut.rfind(" ", limit // 2)
    return (cut[:space] if space > 0 else cut).rstrip() + "…"


# A summary's words are also capped in characters: a text without spaces (Japanese,
# Chinese, a base64 blob) was one "word", kept whole in every merged-feed item.
MAX_SUMMARY_CHARS = 600


def summary_of(text: str) -> str:
    """An item's summary: its first 60 words, at most :data:`MAX_SUMMARY_CHARS` characters."""
    return cap_title(summarize(text), MAX_SUMMARY_CHARS)


def summarize(text: str, words: int = 60) -> str:
    """The first ``words`` words of ``text``, with an ellipsis when cut."""
    parts = text.split()
    if len(parts) <= words:
        return " ".join(parts)
    return " ".join(parts[:words]) + " …"


def canonical_link(url: str | None) -> str | None:
    """A link stripped of tracking parameters and fragments, with a lowercase host.

    Returns ``None`` for anything that is not an absolute http(s) URL.  The rest of the
    query is kept as written (decoding it would make "caf%E9" and "caf%E8" one link),
    and no Unicode normalisation applies (it would turn a full-width "？" into "?").
    """
    parts = _split(url)
    if parts is None:
        return None
    scheme, netloc, path, query, _fragment = parts
    return urlunsplit((scheme, netloc, path, query, ""))


def link_key(url: str | None) -> str | None:
    """What tells one item's link from another's in a feed: :func:`canonical_link` with
    the fragment (live blogs give each update its own "#...")."""
    parts = _split(url)
    if parts is None:
        return None
    return urlunsplit(parts)


def _split(url: str | None) -> tuple[str, str, str, str, str] | None:
    if not url:
        return None
    url = " ".join(_JUNK.sub(" ", url).split())
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            return None
        host = parts.hostname.lower().rstrip(".")
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = "&".join(
        pair
        for pair in parts.query.split("&")
        if pair and not _is_tracking(unquote_plus(pair.split("=", 1)[0]))
    )
    return scheme, netloc, parts.path or "/", query, parts.fragment


def _is_tracking(name: str) -> bool:
    low = name.lower()
    return low in _TRACKING_NAMES or low.startswith(_TRACKING_PREFIXES)


def content_hash(title: str, text: str) -> str:
    """Identity of an item's words: equal for exact copies, changes when an outlet edits."""
    key = f"{title.casefold()}\n{text.casefold()}"
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def shown_hash(
    entry_link: str | None, title: str, content_html: str, author: str | None, categories: Sequence[str]
) -> str:
    """Identity of what an item shows: changes when an outlet corrects its link, a
    headline's capitals or its markup, which :func:`content_hash` does not see."""
    key = "\x1f".join([entry_link or "", title, content_html, author or "", *categories])
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def item_identity(
    guid: str | None, link: str | None, title: str, published: float | None, content: str = ""
) -> str:
    """Unique key of an item within its feed: GUID, else canonical link, else title +
    date, else title + ``content`` (its :func:`content_hash`): a "Daily briefing" without
    GUID, link or date replaced yesterday's text with today's."""
    if guid:
        return "guid:" + clean_text(guid)[:1000]
    if link:
        return "link:" + link
    stamp = "" if published is None else repr(published)
    if published is None and content:
        stamp = f"content:{content}"
    digest = hashlib.blake2b(f"{title}\n{stamp}".encode("utf-8", "surrogatepass"), digest_size=16)
    return "title:" + digest.hexdigest()


# HTML parsers (lexbor here, html5ever in nh3 at display) take time quadratic in the
# nesting depth: 64,000 nested <div>s (320 KB) took 12.6 s.  No article needs a depth
# of hundreds, so one that deep is kept as its text alone.
MAX_HTML_DEPTH = 256
_DEEP_CHECK_FROM = 16_000  # characters: below, even the worst nesting parses in ~0.05 s
_ANY_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*?(/?)>")
# Void elements, and elements whose start closes an open one of their kind (an article
# of 300 unclosed <p>s is not nested 300 deep).
_FLAT = frozenset(
    {
        *("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source"),
        *("track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "thead", "tbody", "tfoot"),
    }
)


def _too_deep(html: str) -> bool:
    depth = 0
    for m in _ANY_TAG.finditer(html):
        if m[1]:
            depth = max(0, depth - 1)
        elif not m[3] and m[2].lower() not in _FLAT:
            depth += 1
            if depth > MAX_HTML_DEPTH:
                return True
    return False


# A tag this long is a hostile feed's (one tag with 100,000 attributes took lexbor 220 s).
# (Possessive: a name the attribute run could also take made it retry every split.)
_GIANT_TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*+)[^<>]{8192,}+>")


# Characters no page may carry (XML 1.0 refuses them; browsers show boxes).
_HTML_JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")


def _tame(html: str) -> str:
    """``html`` without control characters and with its giant tags stripped of their
    attributes; or, when nested too deep to parse in reasonable time, its text."""
    html = _HTML_JUNK.sub(" ", html)  # (feeds use \x0c and \x85 between words)
    if len(html) > 8192 and "<" in html:
        html = _GIANT_TAG.sub(lambda m: f"<{m[1]}>", html)
    if len(html) < _DEEP_CHECK_FROM or not _too_deep(html):
        return html
    text = clean_text(unescape(re.sub(r"<[^>]*>", " ", _drop_script_and_style(html))))
    return f"<p>{escape(text)}</p>" if text else ""


# Boilerplate that items of one document share (a consent banner, "This content is not
# available in your region"): sentences of at least this many words, and whole texts of
# at least 2, found in items whose headlines have no word in common.
MIN_SHARED_SENTENCE_WORDS = 6
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
_HEADLINE_WORD = re.compile(r"[^\W\d_]{4,}")


def _key(sentence: str) -> str:
    return " ".join(sentence.casefold().split())


def shared_sentences(items: Sequence[tuple[str, str]]) -> frozenset[str]:
    """The boilerplate of a document's items, given as (headline, text): the keys
    (:func:`_key`) of sentences found in two items about unrelated things (headlines
    without a word of four letters or more in common).

    An outlet's consent banner or region notice at the top of every item outweighed the
    few sentences of each story, and joined unrelated stories of one feed.  Updates of
    one story ("Fed holds rates ... (update 2)") share sentences and headline words:
    theirs stay.
    """
    carriers: dict[str, list[frozenset[str]]] = {}
    for title, text in items:
        keys = set()  # (the _key of each sentence long enough, each text split once)
        for sentence in _SENTENCE_END.split(text):
            words = sentence.casefold().split()
            if len(words) >= MIN_SHARED_SENTENCE_WORDS:
                keys.add(" ".join(words))
        words = text.casefold().split()
        if len(words) >= 2:
            keys.add(" ".join(words))
        words = frozenset(_HEADLINE_WORD.findall(title.casefold()))
        for k in keys:
            carriers.setdefault(k, []).append(words)
    return frozenset(k for k, heads in carriers.items() if len(heads) > 1 and _unrelated(heads))


def _unrelated(headlines: list[frozenset[str]]) -> bool:
    """Whether two of these headline word sets have nothing in common."""
    distinct = list(dict.fromkeys(headlines))[:50]  # (a banner on every item: one pair suffices)
    return any(a.isdisjoint(b) for i, a in enumerate(distinct) for b in distinct[i + 1 :])


def without_sentences(text: str, boilerplate: frozenset[str]) -> str:
    """``text`` without the sentences (or whole text) whose keys are in ``boilerplate``;
    the rest as it was, separators included."""
    if not boilerplate or not text:
        return text
    if _key(text) in boilerplate:
        return ""
    pieces = _SENTENCE_END.split(text)
    if not any(_key(p) in boilerplate for p in pieces):
        return text
    kept: list[str] = []
    pos = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        sentence = text[pos:end]
        if _key(sentence) not in boilerplate:
            kept.append(sentence + (m.group() if m else ""))
        pos = m.end() if m else len(text)
    return "".join(kept).strip()


def normalize_entry(entry: Entry) -> Item:
    """Turn a parsed entry into an :class:`Item`."""
    title = title_text(entry.title)
    entry = dataclasses.replace(
        entry, summary_html=_tame(entry.summary_html), content_html=_tame(entry.content_html)
    )
    summary_text = html_to_text(entry.summary_html)
    content_text = html_to_text(entry.content_html)
    text = content_text if len(content_text) >= len(summary_text) else summary_text
    link = canonical_link(entry.link)
    title = cap_title(title or summarize(text, 12)) or "(untitled)"
    html = entry.content_html or entry.summary_html
    author = clean_text(entry.author or "") or None
    categories = tuple(c for c in (clean_text(c) for c in entry.categories) if c)
    return Item(
        identity=item_identity(
            entry.guid, link_key(entry.link), title, entry.published, content_hash(title, text)
        ),
        guid=entry.guid,
        link=entry.link if link else None,
        canonical_link=link,
        title=title,
        summary=summary_of(summary_text or text),
        text=text,
        content_html=html,
        author=author,
        published=entry.published,
        updated=entry.updated,
        categories=categories,
        content_hash=content_hash(title, text),
        shown_hash=shown_hash(entry.link if link else None, title, html, author, categories),
    )
