"""Conditional GET: ETag and Last-Modified from a cheap fingerprint, 304 before rendering."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import ParamSpec

from flask import Response, current_app, make_response, request
from flask.typing import ResponseReturnValue

from web import get_aggregator

__all__ = ["conditional"]

P = ParamSpec("P")


def _not_modified(etag: str, last_modified: datetime) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    if request.if_none_match:  # RFC 9110: If-None-Match wins over If-Modified-Since
        return request.if_none_match.contains_weak(etag)
    since = request.if_modified_since
    return since is not None and last_modified <= since


def _cache_headers(resp: Response, etag: str, last_modified: datetime) -> Response:
    resp.set_etag(etag, weak=True)
    resp.last_modified = last_modified
    resp.cache_control.public = True
    resp.cache_control.no_cache = True  # may be stored, must be revalidated
    return resp


def conditional(
    *, feeds: bool = False
) -> Callable[[Callable[P, ResponseReturnValue]], Callable[P, ResponseReturnValue]]:
    """Answer 304 when the client's copy is current, without running the view.

    The ETag covers the path and query, the start of this app (so a new release
    never serves old pages) and :meth:`Aggregator.freshness` (with ``feeds``, also
    every feed's polling state).  Only 200 answers get validators.
    """

    def decorate(view: Callable[P, ResponseReturnValue]) -> Callable[P, ResponseReturnValue]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            fresh = get_aggregator().freshness(feeds=feeds)
            started: float = current_app.config["AGGREGATOR_STARTED"]
            args_key = sorted(request.args.items(multi=True))
            raw = f"{started!r}|{request.path}|{args_key!r}|{fresh.token}"
            etag = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            last_modified = datetime.fromtimestamp(int(max(fresh.last_modified, started)), UTC)
            if _not_modified(etag, last_modified):
                return _cache_headers(current_app.response_class(status=304), etag, last_modified)
            resp = make_response(view(*args, **kwargs))
            if resp.status_code == 200:
                _cache_headers(resp, etag, last_modified)
            return resp

        return wrapper

    return decorate
