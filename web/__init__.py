"""The site: an application factory and the public blueprint (stories, outlets, search, merged feeds).

Views call the :class:`aggregator.Aggregator` facade; there is no SQL here.

Optional Flask config keys (pass them to :func:`create_app`):

``AGGREGATOR_BASE_URL``
    The site's public address (``https://news.example.org``) for absolute links
    in the merged feeds; default: the address of each request.
``AGGREGATOR_SITE_TITLE``
    The name shown in page titles and feeds; default ``the aggregator``.
``AGGREGATOR_CSP``
    The Content-Security-Policy header; default :data:`CONTENT_SECURITY_POLICY`.
``AGGREGATOR_ADMIN_SESSION_SECONDS``
    How long an admin stays logged in, at most (default 8 hours); also the
    session cookie's lifetime.
``SESSION_COOKIE_SECURE``
    Send the admin session cookie over HTTPS only; default: on when
    ``web.base_url`` is an https address.  A request that came over HTTPS (behind
    ``web.trusted_proxies``, as the proxy says) gets Secure cookies either way.
``SECRET_KEY``
    Signs the admin session cookie; default: a random secret made once and kept
    in the database, so every process serving the site shares it.
``AGGREGATOR_RESPONSE_CACHE``
    Bytes of rendered public pages and feeds kept in each process, by ETag
    (default 64 MiB; 0 turns the cache off); see :mod:`web.caching`.
``AGGREGATOR_SHARED_CACHE``
    A file where the processes serving the site share the pages they render
    (default: ``<database>.pages`` beside the database; empty: not shared).

Public pages read through one SQLite connection per server thread, opened once
and kept (:func:`get_reader`); the admin area opens one per request
(:func:`get_aggregator`), as it writes and runs the pipeline.

Admin sessions are Flask's signed cookies, HttpOnly, SameSite=Lax and limited to
``/admin`` (public pages never see them); see :mod:`web.admin`.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, has_request_context, render_template, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from aggregator import Aggregator
from aggregator.settings import Settings, load_settings

__all__ = ["CONTENT_SECURITY_POLICY", "create_app", "get_aggregator", "get_reader", "whole_number"]

# Defence in depth behind the sanitiser: no script of any kind, styles and forms from here only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: http:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class RowId(IntegerConverter):
    """``<int:...>`` in a path: at most SQLite's largest integer, so an absurd id is a 404,
    not an OverflowError (HTTP 500) when it reaches the database."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)


def create_app(
    settings: Settings | None = None,
    db_path: str | Path | None = None,
    config: str | Path | None = None,
    **flask_config: Any,
) -> Flask:
    """Build the Flask app for one database; migrations run once, here."""
    settings = settings or load_settings(config)
    db = Path(db_path) if db_path is not None else settings.db_path
    base_url = str(flask_config.get("AGGREGATOR_BASE_URL") or settings.web.base_url or "")
    with Aggregator(settings, db_path=db) as agg:  # create the database and apply migrations
        secret = agg.secret_key()
        host = (urlsplit(base_url).hostname or "").lower().rstrip(".")
        if host and not _is_ip(host) and "." in host:
            agg.keep_tag_authority(host)  # the merged feeds' item ids, for good
    app = Flask(__name__)
    app.url_map.converters["int"] = RowId  # before the blueprints' routes are made
    app.config.update(
        AGGREGATOR_SETTINGS=settings,
        AGGREGATOR_DB=db,
        AGGREGATOR_STARTED=time.time(),
        AGGREGATOR_SITE_TITLE=settings.web.site_title,
        AGGREGATOR_BASE_URL=settings.web.base_url.rstrip("/") or None,
        AGGREGATOR_CSP=CONTENT_SECURITY_POLICY,
        AGGREGATOR_ADMIN_SESSION_SECONDS=8 * 3600,
        # the admin area's session: signed cookie, scripts cannot read it, /admin only
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="aggregator_admin",
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web.base_url.lower().startswith("https://"),
        MAX_CONTENT_LENGTH=5 * 1024 * 1024,  # admin forms and OPML uploads
        AGGREGATOR_RESPONSE_CACHE=64 * 1024 * 1024,
        AGGREGATOR_SHARED_CACHE="" if str(db) == ":memory:" else f"{db}.pages",
    )
    app.config.update(**flask_config)
    if "PERMANENT_SESSION_LIFETIME" not in flask_config:
        app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(
            seconds=float(app.config["AGGREGATOR_ADMIN_SESSION_SECONDS"])
        )
    if settings.web.trusted_proxies:
        n = settings.web.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True

    app.extensions[_READERS] = threading.local()
    app.session_interface = _SessionInterface()

    @app.teardown_appcontext
    def close_aggregator(_exc: BaseException | None) -> None:
        agg = g.pop("aggregator", None)
        if agg is not None:
            agg.close()
        reader = g.pop("reader", None)
        if reader is not None and reader.db.conn.in_transaction:  # never keep a snapshot open
            reader.db.conn.rollback()

    @app.after_request
    def security_headers(resp: Response) -> Response:
        csp = app.config.get("AGGREGATOR_CSP")
        if csp:
            resp.headers.setdefault("Content-Security-Policy", csp)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int, dict[str, str]] | HTTPException:
        code = exc.code or 500
        if code < 400:
            return exc
        # Its own headers too: a 405 must say which methods are allowed (Allow).
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return (
            render_template(
                "error.html", code=code, name=exc.name, description=exc.description, back=_admin_back()
            ),
            code,
            headers,
        )

    @app.errorhandler(InternalServerError)
    def server_error(exc: InternalServerError) -> tuple[str, int]:
        description = "Something went wrong on our side. Please try again in a moment."
        return render_template("error.html", code=500, name="Server error", description=description), 500

    from web import admin, filters, public

    filters.register(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(admin.bp)
    return app


_READERS = "aggregator.readers"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _admin_back() -> str | None:
    """For an error in the admin area, the admin page the request came from (a form's
    page: the admin fixes the field there), else the admin home; None elsewhere."""
    if request.blueprint != "admin":
        return None
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/admin"):
        return referrer.path + (f"?{referrer.query}" if referrer.query else "")
    from flask import url_for

    return url_for("admin.index")


def get_reader() -> Aggregator:
    """This server thread's aggregator for public pages: one SQLite connection per thread, kept.

    Opened on the thread's first request (``migrate=False``: :func:`create_app`
    migrated), never closed while the process lives; sqlite3 connections belong
    to one thread, so threads never share one.  Each request first picks up a
    settings version applied by another process.  Read-only use: anything that
    writes or runs the pipeline takes :func:`get_aggregator`.
    """
    from flask import current_app

    agg: Aggregator | None = g.get("reader")
    if agg is not None:
        return agg
    local = current_app.extensions[_READERS]
    agg = getattr(local, "aggregator", None)
    if agg is None:
        agg = Aggregator(
            current_app.config["AGGREGATOR_SETTINGS"],
            db_path=current_app.config["AGGREGATOR_DB"],
            migrate=False,
        )
        local.aggregator = agg
    else:
        agg.reload_settings()
    g.reader = agg
    return agg


def get_aggregator() -> Aggregator:
    """The request's aggregator (one SQLite connection per request), for the admin area."""
    from flask import current_app

    if "aggregator" not in g:
        g.aggregator = Aggregator(
            current_app.config["AGGREGATOR_SETTINGS"],
            db_path=current_app.config["AGGREGATOR_DB"],
            migrate=False,
        )
    agg: Aggregator = g.aggregator
    return agg


def cookies_secure(app: Flask) -> bool:
    """Whether the admin cookies are Secure: configured so, or the request came over HTTPS."""
    return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure on any HTTPS request (an https ``base_url``
    is not needed: behind a TLS proxy the session cookie went out without the flag)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return cookies_secure(app)


_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,30}")


def whole_number(raw: str, name: str, low: int, high: int) -> int:
    """``raw`` (a query or form field called ``name``) as an int in ``[low, high]``; 400 otherwise.

    ASCII digits only: ``int()`` also reads "١٢" (Arabic-Indic digits) and "1_2", so a
    story number an admin never typed could be merged."""
    if not _WHOLE_NUMBER.fullmatch(raw):
        abort(400, description=f"“{name}” must be a whole number.")
    value = int(raw)
    if not low <= value <= high:
        abort(400, description=f"“{name}” must be between {low} and {high}.")
    return value
