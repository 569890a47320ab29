"""Public pages: stories, a story, outlets, search, the merged feeds and health.

Every view reads through the :class:`aggregator.Aggregator` facade (no SQL here)
and every page and feed answers conditional GETs (see :mod:`web.caching`).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as WerkzeugResponse

from aggregator.models import ClusterSummary, Feed, StoredItem, StoryCursor, StoryFilter, public_feed_url
from aggregator.normalize import clean_text
from web import get_reader, syndication, whole_number
from web.caching import conditional
from web.diff import TextDiff, WordOp, diff_texts, word_diff
from web.filters import safe_url

bp = Blueprint("public", __name__)

SORTS = {"latest": "Latest", "coverage": "Most covered"}
MAX_MIN_OUTLETS = 100
MAX_QUERY = 200


# -- filters shared by the front page and the merged feeds ---------------------------------


@dataclass(frozen=True)
class Filters:
    """A validated story filter, the query arguments that express it, and its outlet."""

    story_filter: StoryFilter
    args: dict[str, str]  # canonical query arguments, only the ones that filter
    outlet: Feed | None

    def describe(self) -> str:
        """``"covered by at least 2 outlets, from Northwire, matching “storm”"``."""
        f = self.story_filter
        parts = []
        if f.min_outlets > 1:
            parts.append(f"covered by at least {f.min_outlets} outlets")
        if self.outlet is not None:
            parts.append(f"from {self.outlet.public_name}")
        if f.category:
            parts.append(f"in “{f.category}”")
        if f.query:
            parts.append(f"matching “{f.query}”")
        return ", ".join(parts)


def _int_arg(args: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = args.get(name, "").strip()
    return whole_number(raw, name, low, high) if raw else None


def parse_filters(args: MultiDict[str, str]) -> Filters:
    """Read ``min_outlets``, ``outlet`` (a feed id), ``category`` and ``q``; 400 on nonsense, 404 on no such outlet."""
    out: dict[str, str] = {}
    min_outlets = _int_arg(args, "min_outlets", 1, MAX_MIN_OUTLETS) or 1
    if min_outlets > 1:
        out["min_outlets"] = str(min_outlets)
    feed_id = _int_arg(args, "outlet", 1, 2**62)
    outlet = None
    if feed_id is not None:
        outlet = get_reader().feed(feed_id)
        if outlet is None:
            abort(404, description="There is no such outlet (any more).")
        out["outlet"] = str(feed_id)
    # (as stored categories are: control characters out, which reached the JSON feed's title)
    category = clean_text(args.get("category", ""))[:100] or None
    if category:
        out["category"] = category
    query = clean_text(args.get("q", ""))[:MAX_QUERY] or None
    if query:
        out["q"] = query
    return Filters(StoryFilter(min_outlets, feed_id, category, query), out, outlet)


VARIANTS_PER_PAGE = 40


def _page() -> int:
    return _int_arg(request.args, "page", 1, 100_000) or 1


def _absolute(endpoint: str, **values: Any) -> str:
    """An absolute URL, on ``AGGREGATOR_BASE_URL`` (the site's public address, with any
    path it is served under) when set."""
    base = current_app.config.get("AGGREGATOR_BASE_URL")
    if base:
        path = url_for(endpoint, **values)
        root = request.script_root
        if root and path.startswith(root + "/"):  # mounted under a path: the base holds it
            path = path[len(root) :]
        return str(base).rstrip("/") + path
    return url_for(endpoint, _external=True, **values)


# -- pages -------------------------------------------------------------------------------


@bp.get("/")
@conditional()
def index() -> str:
    agg = get_reader()
    filters = parse_filters(request.args)
    page = _page()
    sort = request.args.get("sort", "latest")
    if sort not in SORTS:
        sort = "latest"
    size = agg.settings.web.page_size
    # Pages are linked by cursors (the story each starts next to), so that the next
    # page goes on where this one ended when stories arrive meanwhile; ?page=N alone
    # (an offset) still works, and the number is shown.
    cursor = _story_cursor(sort)
    f = filters.story_filter
    if cursor is None:
        stories = agg.stories(f, sort=sort, limit=size + 1, offset=(page - 1) * size)
        has_prev, has_next = page > 1, len(stories) > size
    elif cursor.older:
        stories = agg.stories(f, sort=sort, limit=size + 1, cursor=cursor)
        page, has_prev, has_next = max(page, 2), True, len(stories) > size
    else:
        stories = agg.stories(f, sort=sort, limit=size + 1, cursor=cursor)
        if len(stories) > size:  # a page of newer ones and more above it (the farthest is first)
            stories, page, has_prev, has_next = stories[1:], max(page, 2), True, True
        else:  # back at the top: the first page, as it is now
            stories = agg.stories(f, sort=sort, limit=size + 1)
            page, has_prev, has_next = 1, False, len(stories) > size
    stories = stories[:size]
    if (page > 1 or cursor is not None) and not stories:
        abort(404, description="There are no stories on this page.")
    return render_template(
        "index.html",
        stories=stories,
        page=page,
        sort=sort,
        sorts=SORTS,
        has_prev=has_prev,
        has_next=has_next,
        prev_args={"before": StoryCursor.of(stories[0], sort, older=False).token()} if stories else {},
        next_args={"after": StoryCursor.of(stories[-1], sort).token()} if stories else {},
        filters=filters,
        feed_args=filters.args,
        outlets=_outlet_choices(agg.feeds()),
    )


def _outlet_choices(feeds: list[Feed]) -> list[tuple[int, str]]:
    """(feed id, name) for the outlet filter.  Feeds sharing a name (an outlet's
    sections) are told apart by as much of their address's path as it takes ("world/rss"
    and "asia/rss"), else their host and path, else their number (a private feed)."""
    groups: dict[str, list[Feed]] = {}
    for f in feeds:
        groups.setdefault(f.public_name, []).append(f)
    label: dict[int, str] = {}
    for name, same in groups.items():
        if len(same) == 1:
            label[same[0].id] = name
            continue
        shown = {f.id: public_feed_url(f.url) for f in same}
        parts = {i: urlsplit(u).path.strip("/").split("/") if u else [] for i, u in shown.items()}
        tails: dict[int, str] = {}
        for k in range(1, max(len(p) for p in parts.values()) + 1):
            tails = {i: "/".join(p[-k:]) for i, p in parts.items()}
            if len(set(tails.values())) == len(tails) and all(tails.values()):
                break
        else:
            tails = {i: f"{urlsplit(u).hostname}{urlsplit(u).path}" if u else "" for i, u in shown.items()}
            if len(set(tails.values())) < len(tails):
                tails = {}
        for f in same:
            label[f.id] = f"{name} ({tails.get(f.id) or f'feed {f.id}'})"
    return [(f.id, label[f.id]) for f in feeds]


def _story_cursor(sort: str) -> StoryCursor | None:
    """The page's cursor: ``after`` (older than) or ``before`` (newer than) a story."""
    for arg, older in (("after", True), ("before", False)):
        token = request.args.get(arg)
        if token is not None:
            try:
                return StoryCursor.parse(token.strip(), sort, older=older)
            except ValueError:
                abort(400, description=f"“{arg}” is not a page of this list.")
    return None


def _why(member: StoredItem, by_id: Mapping[int, StoredItem], first_id: int | None) -> str:
    """Why an item is in its story, in words.  ``first_id``: the earliest member that
    started a story (:func:`_first_started`)."""
    matched = by_id.get(member.matched_item_id) if member.matched_item_id is not None else None
    other = f"{matched.outlet}’s report" if matched is not None else "an earlier report"
    score = f"{member.score:.2f}" if member.score is not None else "n/a"
    signal = member.signal or "unknown"
    if signal == "new" and member.id != first_id:
        # Its own story was merged into this one (the clusterer's merge or adoption).
        return (
            "It started a story of its own (no earlier report was close enough then); "
            "later reports showed it was the same news, and the two stories were merged."
        )
    if signal == "new":
        return "It started this story: no earlier report was close enough to join."
    if signal == "same-link":
        return f"It links to the same article as {other}."
    if signal == "exact-copy":
        return f"Its headline and text are exactly those of {other} (syndicated copy)."
    if signal == "similar":
        return f"Its words are similar to {other} (similarity score {score})."
    if signal == "near-copy":
        return f"It is a near copy of {other}: almost the same words (estimated overlap {score})."
    if signal == "empty":
        return "It has no words to compare (a picture or a video with no text), so it stands alone."
    if signal == "manual":
        return "An editor put it in this story."
    return f"Signal “{signal}” matched it with {other} (score {score})."


def _first_started(members: Iterable[StoredItem]) -> int | None:
    """The earliest member that started a story: a story merged from several has
    one such member per story it was made of."""
    started = [m for m in members if m.signal == "new"]
    return min(started, key=lambda m: (m.sort_time, m.id)).id if started else None


# Diffs outlive the page cache: a new story anywhere changes every page's ETag,
# but a story whose texts did not change gets the same comparison again.
_diff_texts = functools.lru_cache(maxsize=2048)(diff_texts)


@dataclass(frozen=True)
class VariantView:
    item: StoredItem
    canonical: bool
    why: str
    headline: list[WordOp] | None  # None: the same headline as the canonical story
    diff: TextDiff | None  # None for the canonical item itself
    matched: StoredItem | None  # the member it was matched with, when that is in this story


@bp.get("/story/<int:cluster_id>")
@conditional(story=True)
def story(cluster_id: int) -> str | WerkzeugResponse:
    detail = get_reader().cluster(cluster_id)
    if detail is None:
        into = get_reader().merged_into(cluster_id)
        if into is not None:  # links to a merged story (readers' feed items) lead to it
            query = request.query_string.decode("latin-1")  # as sent (url_for took "_anchor" for its own)
            return redirect(url_for("public.story", cluster_id=into) + (f"?{query}" if query else ""), 301)
        abort(404, description="This story does not exist.")
    summary = detail.summary
    canon = summary.canonical
    by_id = {m.id: m for m in detail.members}
    first = _first_started(detail.members)
    # A story told by hundreds of outlets: its variants (each with its differences from
    # the canonical text) come a page at a time, not as a page of megabytes.
    pages = max(1, -(-len(detail.members) // VARIANTS_PER_PAGE))
    page_of = {m.id: 1 + k // VARIANTS_PER_PAGE for k, m in enumerate(detail.members)}
    page = _page()
    item = _int_arg(request.args, "item", 1, 2**62)  # a link to one version: its page
    if item in page_of and "page" not in request.args:
        page = page_of[item]
    if page > pages:
        abort(404, description=f"This story's versions fill {pages} page(s).")
    start = (page - 1) * VARIANTS_PER_PAGE
    variants = []
    for m in detail.members[start : start + VARIANTS_PER_PAGE]:
        is_canon = m.id == canon.id
        same_headline = m.title.split() == canon.title.split()
        variants.append(
            VariantView(
                item=m,
                canonical=is_canon,
                why=_why(m, by_id, first),
                headline=None if is_canon or same_headline else word_diff(canon.title, m.title),
                diff=None if is_canon else _diff_texts(canon.text, m.text),
                matched=by_id.get(m.matched_item_id)
                if m.matched_item_id not in (None, m.id) and m.signal != "new"
                else None,
            )
        )
    return render_template(
        "story.html",
        story=summary,
        canonical=canon,
        variants=variants,
        page=page,
        has_next=page < pages,
        first_number=start + 1,
        page_of=page_of,
    )


@bp.get("/search")
@conditional()
def search() -> str:
    agg = get_reader()
    query = " ".join(request.args.get("q", "").split())[:MAX_QUERY]
    page = _page()
    size = agg.settings.web.page_size
    # Matches are ranked a window of the newest ones at a time; ``before`` moves it back.
    before = _int_arg(request.args, "before", 1, 2**62)
    results = agg.search(query, limit=size + 1, offset=(page - 1) * size, before=before) if query else []
    if page > 1 and not results:
        abort(404, description="There are no results on this page.")
    has_next = len(results) > size
    older = agg.search_older(query, before) if query and not has_next else None
    args = {"q": query, "before": before} if before is not None else {"q": query}
    return render_template(
        "search.html",
        query=query,
        results=results[:size],
        page=page,
        has_next=has_next,
        before=before,
        older=older,
        pager_args=args,
        window=agg.settings.web.search_window,
        feed_args={"q": query} if query else {},
    )


@bp.get("/outlets")
@conditional(feeds=True)
def outlets() -> str:
    return render_template("outlets.html", feeds=get_reader().feeds())


@bp.get("/outlets/<int:feed_id>")
@conditional(feeds=True)
def outlet(feed_id: int) -> str:
    agg = get_reader()
    feed = agg.feed(feed_id)
    if feed is None:
        abort(404, description="There is no such outlet.")
    page = _page()
    size = agg.settings.web.page_size
    items = agg.feed_items(feed_id, limit=size + 1, offset=(page - 1) * size)
    if page > 1 and not items:
        abort(404, description="There are no items on this page.")
    return render_template(
        "outlet.html",
        feed=feed,
        feed_link=safe_url(public_feed_url(feed.url)),
        site_link=safe_url(feed.site_url),
        items=items[:size],
        page=page,
        has_next=len(items) > size,
        feed_args={"outlet": str(feed.id)},
    )


@bp.get("/healthz")
def healthz() -> tuple[dict[str, object], int, dict[str, str]]:
    headers = {"Cache-Control": "no-store"}
    try:
        counts = get_reader().counts()
    except Exception as exc:  # the database is unreachable or broken
        return {"status": "error", "error": type(exc).__name__}, 503, headers
    return {"status": "ok", **counts}, 200, headers


# -- merged feeds ------------------------------------------------------------------------


def _tag_authority(host: str | None) -> str:
    """The site's name in its items' tag: URIs: the host of ``web.base_url`` kept when
    the site first ran with one (:meth:`Aggregator.keep_tag_authority`), else the
    request's host (RFC 4151 wants a domain name: an IP address, "[::1]" above all,
    is not one, nor is a name without a dot)."""
    kept = get_reader().tag_authority()
    if kept:
        return kept
    host = (host or "").lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if "." in host:
            return host
    return "localhost"


def _entries(stories: list[ClusterSummary]) -> list[syndication.FeedEntry]:
    agg = get_reader()
    latest = syndication.MAX_VARIANTS // 2  # the oldest versions and the latest ones
    members = agg.story_members([s.id for s in stories], syndication.MAX_VARIANTS - latest, latest)
    authority = _tag_authority(urlsplit(_absolute("public.index")).hostname)
    out = []
    for s in stories:
        variants = [
            syndication.Variant(m.title, m.outlet, safe_url(m.link), m.sort_time)
            for m in members.get(s.id, [])
        ]
        out.append(
            syndication.FeedEntry(
                id=syndication.tag_uri(authority, s.id, s.created_at),
                url=_absolute("public.story", cluster_id=s.id),
                title=s.canonical.title,
                summary=s.canonical.summary,
                published=s.first_seen,
                updated=s.updated_at,
                latest=s.last_seen,
                outlets=s.outlets,
                variants=variants,
                versions=s.size,
                external_url=safe_url(s.canonical.link),
                canonical_outlet=s.canonical.outlet,
            )
        )
    return out


def _merged(endpoint: str, render: syndication.Renderer, mimetype: str) -> Response:
    agg = get_reader()
    filters = parse_filters(request.args)
    # Newest change first, not newest report: a story reported late still reaches readers.
    stories = agg.stories(filters.story_filter, sort="updated", limit=agg.settings.web.feed_size)
    site = str(current_app.config["AGGREGATOR_SITE_TITLE"])
    described = filters.describe()
    channel = syndication.Channel(
        title=f"{site}: stories {described}" if described else site,
        description="One item per story, with every outlet's version"
        + (f"; stories {described}." if described else "."),
        home_url=_absolute("public.index", **filters.args),
        self_url=_absolute(endpoint, **filters.args),
        # no story yet: the database's latest change, else this app's start (not 1970)
        updated=max(
            (s.updated_at for s in stories),
            default=agg.freshness().last_modified or float(current_app.config["AGGREGATOR_STARTED"]),
        ),
    )
    return Response(render(channel, _entries(stories)), content_type=mimetype)


@bp.get("/feed.rss")
@conditional()
def feed_rss() -> Response:
    return _merged("public.feed_rss", syndication.render_rss, syndication.RSS_TYPE)


@bp.get("/feed.atom")
@conditional()
def feed_atom() -> Response:
    return _merged("public.feed_atom", syndication.render_atom, syndication.ATOM_TYPE)


@bp.get("/feed.json")
@conditional()
def feed_json() -> Response:
    return _merged("public.feed_json", syndication.render_json, syndication.JSON_TYPE)
