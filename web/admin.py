"""The admin area under ``/admin``: tune clustering with a preview, apply and revert, correct stories, feeds.

Access rules, for every route of this blueprint (``tests/test_web_admin.py``
enumerates them from the URL map, so a route added later is checked too):

- only the login page answers without a valid session; any other GET or POST is
  sent to the login page.  A session is Flask's signed cookie (HttpOnly,
  SameSite=Lax, path ``/admin``), lasts ``AGGREGATOR_ADMIN_SESSION_SECONDS`` at
  most, and ends when its account's password changes;
- every POST, the login form's included, must carry the session's CSRF token,
  else it is refused with 400;
- no answer is stored by a browser or a proxy (``Cache-Control: no-store``).

Views call the :class:`aggregator.Aggregator` facade; there is no SQL here.
Long work (previews, applying settings, re-clustering) runs as background jobs
whose pages refresh themselves with ``<meta http-equiv="refresh">`` (no script).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import Markup

from aggregator.accounts import check_login
from aggregator.core import STALE_JOB_SECONDS, CorrectionError, FeedError, JobError
from aggregator.models import StoredItem, StoryFilter
from aggregator.opml import OpmlError
from aggregator.settings import SettingDef, definitions
from aggregator.storage.jobs import Job
from aggregator.storage.versions import SettingsVersion
from aggregator.tuning import apply_overrides
from web import cookies_secure, get_aggregator, whole_number
from web.filters import plural

__all__ = ["bp"]

bp = Blueprint("admin", __name__, url_prefix="/admin")

OPEN_ENDPOINTS = frozenset({"admin.login"})  # answer without a session (CSRF still checked on POST)
CSRF_FIELD = "csrf_token"
PERIODS = {24: "the last day", 72: "the last 3 days", 168: "the last 7 days", 720: "the last 30 days"}
DEFAULT_PERIOD = 72
MAX_PERIOD_HOURS = 24 * 365
JOB_NAMES = {
    "preview": "Preview",
    "apply": "Apply settings",
    "revert": "Revert settings",
    "recluster": "Re-cluster",
}
RULE_NAMES = {"must": "same story", "cannot": "different stories", "pin": "canonical item"}
MAX_OPML_BYTES = 2 * 1024 * 1024
MAX_TITLE_IN_MESSAGE = 120


# -- sessions, CSRF and the guard in front of every view -----------------------------------


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _session_admin() -> str | None:
    """The logged-in admin's name, if the session is valid now."""
    name, login_at, stamp = session.get("admin"), session.get("login_at"), session.get("stamp")
    if not isinstance(name, str) or not isinstance(login_at, (int, float)) or not isinstance(stamp, str):
        return None
    now = time.time()
    lifetime = float(current_app.config["AGGREGATOR_ADMIN_SESSION_SECONDS"])
    if not now - lifetime <= login_at <= now + 60:
        return None
    current = get_aggregator().account_stamp(name)
    if current is None or not hmac.compare_digest(current.encode("ascii"), stamp.encode("ascii", "replace")):
        return None
    return name


def _safe_next(target: str | None) -> str | None:
    """A page of the admin area to return to after logging in; anything else is dropped."""
    if not target or not target.startswith("/admin") or "\\" in target or "//" in target:
        return None
    if any(ord(c) < 33 for c in target) or len(target) > 500 or "%2e" in target.lower():
        return None
    path = target.split("?", 1)[0]
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    return target


@bp.before_request
def guard() -> ResponseReturnValue | None:
    if request.endpoint not in OPEN_ENDPOINTS:
        admin = _session_admin()
        if admin is None:
            if session.get("admin"):
                session.clear()
                flash("Your session has ended. Please log in again.", "error")
            target = None
            if request.method in ("GET", "HEAD"):
                target = request.path + (
                    f"?{request.query_string.decode('latin-1')}" if request.query_string else ""
                )
            return redirect(url_for("admin.login", next=_safe_next(target)), 303)
        g.admin = admin
    if request.method not in ("GET", "HEAD", "OPTIONS") and not _csrf_ok():
        abort(
            400,
            description="The form’s security token is missing or out of date. "
            "Go back, reload the page and try again.",
        )
    return None


@bp.after_request
def never_cache(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Robots-Tag"] = "noindex, nofollow"
    return resp


@bp.context_processor
def admin_context() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "admin_name": g.get("admin"), "job_names": JOB_NAMES}


def _author() -> str:
    name: str = g.admin
    return name


def _see_other(endpoint: str, **values: Any) -> ResponseReturnValue:
    return redirect(url_for(endpoint, **values), 303)


def _form_int(name: str, low: int = 0, high: int = 2**62) -> int:
    return whole_number(request.form.get(name, "").strip().lstrip("#"), name, low, high)


def _short(text: str, limit: int = MAX_TITLE_IN_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- logging in and out --------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if _session_admin() is not None:
            return redirect(target or url_for("admin.index"), 303)
        return render_template("admin/login.html", next=target, name="", error=None)
    agg = get_aggregator()
    name = request.form.get("name", "").strip()[:200]
    password = request.form.get("password", "")[:1025]  # longer than any password one may set
    result = check_login(
        agg.db, name, password, request.remote_addr or "", time.time(), known_browser=_known_browser(name)
    )
    if not result.ok:
        status = 429 if result.limited else 401
        return render_template("admin/login.html", next=target, name=name, error=result.message), status
    # A new session: nothing from before the login survives, the CSRF token included.
    session.clear()
    session.permanent = True
    session.update(
        admin=name, login_at=time.time(), stamp=agg.account_stamp(name), csrf=secrets.token_urlsafe(32)
    )
    response = redirect(target or url_for("admin.index"), 303)
    response.set_cookie(
        KNOWN_BROWSER_COOKIE,
        _browsers().dumps(name),
        max_age=KNOWN_BROWSER_SECONDS,
        path="/admin",
        secure=cookies_secure(current_app),
        httponly=True,
        samesite="Lax",
    )
    return response


# A browser that has logged into an account keeps a signed cookie naming it, so that
# guesses from elsewhere cannot lock the account's admins out (see check_login).  It
# outlives the session and logging out: it grants nothing but that.
KNOWN_BROWSER_COOKIE = "aggregator_known_browser"
KNOWN_BROWSER_SECONDS = 180 * 86400


def _browsers() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.secret_key), salt="admin known browser")


def _known_browser(name: str) -> bool:
    cookie = request.cookies.get(KNOWN_BROWSER_COOKIE, "")
    if not cookie or not name:
        return False
    try:
        return bool(_browsers().loads(cookie, max_age=KNOWN_BROWSER_SECONDS) == name)
    except BadSignature:  # forged, from another database's key, or expired
        return False


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    name = _session_admin()
    session.clear()
    if name is not None:  # every session of the account ends: a copied cookie too
        get_aggregator().end_sessions(name)
    flash("You are logged out.", "notice")
    return _see_other("admin.login")


# -- the dashboard -------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    agg = get_aggregator()
    jobs = agg.jobs(limit=8)
    return render_template(
        "admin/index.html",
        counts=agg.counts(),
        version=agg.settings_version(),
        jobs=jobs,
        running=[j for j in jobs if not _ended(j)],
        broken=[f for f in agg.feeds() if f.status in ("error", "broken", "gone")],
    )


# -- settings: the form, previews, applying, history and revert ---------------------------


def _admin_defs() -> list[SettingDef]:
    return [d for d in definitions() if d.admin]


def form_value(d: SettingDef, value: Any) -> str:
    """A setting's value as the form shows it."""
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def shown(value: Any) -> str:
    """A setting's value in a sentence or a table."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _same(a: Any, b: Any) -> bool:
    return bool(_plain(a) == _plain(b))


@dataclass(frozen=True)
class SettingField:
    """One setting on the settings form."""

    d: SettingDef
    value: str  # in the input
    current: Any  # in force now
    base: Any  # from config.toml
    error: str | None

    @property
    def changed_by_admins(self) -> bool:
        return not _same(self.current, self.base)

    @property
    def range(self) -> str:
        if self.d.choices:
            return "one of " + ", ".join(self.d.choices)
        if self.d.min is not None and self.d.max is not None:
            return f"{_number(self.d.min)} to {_number(self.d.max)}"
        return ""


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _settings_form(
    entered: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    hours: str = str(DEFAULT_PERIOD),
    notice: str | None = None,
    status: int = 200,
) -> tuple[str, int]:
    agg = get_aggregator()
    entered = entered or {}
    errors = errors or {}
    sections: dict[str, list[SettingField]] = {}
    for d in _admin_defs():
        current = agg.settings.get(d.key)
        value = entered.get(d.key, form_value(d, current))
        sections.setdefault(d.section, []).append(
            SettingField(d, value, current, agg.base_settings.get(d.key), errors.get(d.key))
        )
    html = render_template(
        "admin/settings.html",
        sections=sections,
        errors=errors,
        periods=PERIODS,
        hours=hours,
        notice=notice,
        version=agg.settings_version(),
        ignored=agg.settings_problems,
        shown=shown,
    )
    return html, status


@bp.get("/settings")
def settings() -> tuple[str, int]:
    return _settings_form()


def _hours(raw: str) -> float | None:
    try:
        hours = float(raw)
    except ValueError:
        return None
    return hours if 1 <= hours <= MAX_PERIOD_HOURS else None


def _own_edits(raw: Mapping[str, str], shown_with: str) -> tuple[dict[str, str], list[str]]:
    """The fields of a settings form an admin changed (they differ from settings version
    ``shown_with``, which the form showed), and those of them another admin changed too."""
    agg = get_aggregator()
    if not shown_with.isascii() or not shown_with.isdigit():
        return {}, []
    version = agg.get_settings_version(int(shown_with)) if shown_with != "0" else None
    if shown_with != "0" and version is None:
        return {}, []
    shown_settings, _ = apply_overrides(agg.base_settings, version.overrides if version else {})
    defs = {d.key: d for d in _admin_defs()}

    def same(a: str, b: str) -> bool:  # (browsers send a textarea's lines with CRLF)
        return [x.strip() for x in a.splitlines() if x.strip()] == [
            x.strip() for x in b.splitlines() if x.strip()
        ]

    mine = {
        k: v for k, v in raw.items() if k in defs and not same(v, form_value(defs[k], shown_settings.get(k)))
    }
    both = [k for k in mine if not _same(shown_settings.get(k), agg.settings.get(k))]
    return mine, both


@bp.post("/preview")
def preview() -> ResponseReturnValue:
    """Start a preview of the settings on the form; its page shows progress, then the result."""
    agg = get_aggregator()
    raw = {d.key: request.form[d.key] for d in _admin_defs() if d.key in request.form}
    hours_raw = request.form.get("hours", str(DEFAULT_PERIOD)).strip()
    version = agg.settings_version()
    now = version.id if version else 0
    shown_with = request.form.get("form_version", "").strip()
    if shown_with and shown_with != str(now):
        # The form carries every setting as it was: previewing it would put back what
        # another admin changed meanwhile.  The form again, with the settings now and
        # this admin's own edits (what differs from the version the form showed) kept.
        mine, both = _own_edits(raw, shown_with)
        notice = f"The settings changed while you edited them (version {now} is in force now): the form shows them as they are now"
        if mine:
            notice += ", with your own changes kept"
        if both:
            notice += (
                f". Another admin changed {', '.join(both)} too: check {'it' if len(both) == 1 else 'them'}"
            )
        return _settings_form(
            mine,
            {k: "another admin changed this setting while you edited it; yours is shown" for k in both},
            hours_raw,
            notice=notice + ". Preview again when ready.",
            status=409,
        )
    clean, errors = agg.check_changes(raw)
    hours = _hours(hours_raw)
    if hours is None:
        errors["hours"] = f"the period must be between 1 and {MAX_PERIOD_HOURS} hours"
    if errors:
        return _settings_form(raw, errors, hours_raw, status=400)
    changes = {k: raw[k] for k, v in clean.items() if not _same(v, agg.settings.get(k))}
    if not changes:
        return _settings_form(
            raw,
            {},
            hours_raw,
            notice="Nothing to preview: these are the settings in force. Change one first.",
        )
    params = {"changes": changes, "hours": hours, "base_version": now}
    try:
        job_id = agg.start_job("preview", params, _author())
    except JobError as exc:
        return _settings_form(raw, {}, hours_raw, notice=f"Not now: {exc}.", status=409)
    return _see_other("admin.job", job_id=job_id)


@bp.post("/apply")
def apply() -> ResponseReturnValue:
    """Apply the settings of a finished preview: a new settings version, then a re-clustering job."""
    agg = get_aggregator()
    preview_id = _form_int("preview", 1)
    job = agg.job(preview_id)
    if job is None or job.kind != "preview":
        abort(404, description="There is no such preview.")
    if job.state != "done":
        abort(409, description="This preview has not finished; apply it when it has.")
    problem = _stale_preview(job)
    changes = dict(job.params.get("changes", {}))
    if problem is None:
        _, errors = agg.check_changes(changes)
        if errors:
            problem = "These settings are no longer valid: " + "; ".join(
                f"{k}: {v}" for k, v in errors.items()
            )
    if problem is not None:
        flash(problem, "error")
        return _see_other("admin.job", job_id=preview_id)
    note = " ".join(request.form.get("note", "").split())[:500]
    try:
        job_id = agg.start_job("apply", {"changes": changes, "note": note, "preview": preview_id}, _author())
    except JobError as exc:
        flash(f"Not now: {exc}.", "error")
        return _see_other("admin.job", job_id=preview_id)
    return _see_other("admin.job", job_id=job_id)


def _stale_preview(job: Job) -> str | None:
    """Why a preview may not be applied any more, if it may not."""
    version = get_aggregator().settings_version()
    now = version.id if version else 0
    if job.params.get("base_version", 0) != now:
        return (
            f"The settings changed since this preview (version {now} is in force now). "
            "Preview again before applying."
        )
    return None


@dataclass(frozen=True)
class VersionView:
    version: SettingsVersion
    changes: list[tuple[str, str, str]]  # setting, before, after
    current: bool


def _version_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], base: Any
) -> list[tuple[str, str, str]]:
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, base.get(key)), after.get(key, base.get(key))
        if not _same(old, new):
            out.append((key, shown(old), shown(new)))
    return out


@bp.get("/history")
def history() -> str:
    agg = get_aggregator()
    shown_max = 50
    versions = agg.settings_history(limit=shown_max + 1)
    views = []
    for i, v in enumerate(versions[:shown_max]):
        before = versions[i + 1].overrides if i + 1 < len(versions) else {}
        views.append(VersionView(v, _version_changes(before, v.overrides, agg.base_settings), i == 0))
    return render_template(
        "admin/history.html",
        versions=views,
        more=len(versions) > shown_max,
        overrides=[(k, shown(v)) for k, v in sorted(agg.admin_overrides().items())],
        shown=shown,
    )


@bp.route("/revert", methods=["GET", "POST"])
def revert() -> ResponseReturnValue:
    """Asks first (GET ``?version=N``, 0: config.toml alone), showing the settings that
    would change, then reverts (POST): a revert groups every story again."""
    agg = get_aggregator()
    if request.method == "GET":
        version = whole_number(request.args.get("version", ""), "version", 0, 2**62)
        target = agg.get_settings_version(version) if version else None
        if version and target is None:
            abort(404, description="There is no such settings version.")
        current = agg.admin_overrides()
        wanted = target.overrides if target is not None else {}
        return render_template(
            "admin/revert.html",
            version=version,
            changes=_version_changes(current, wanted, agg.base_settings),
        )
    version = _form_int("version", 0)
    if version and agg.get_settings_version(version) is None:
        abort(404, description="There is no such settings version.")
    try:
        job_id = agg.start_job("revert", {"version": version}, _author())
    except JobError as exc:
        flash(f"Not now: {exc}.", "error")
        return _see_other("admin.history")
    return _see_other("admin.job", job_id=job_id)


def took(seconds: float) -> str:
    """``"40 seconds"``, ``"3 minutes"``, ``"1 hour 20 minutes"``."""
    s = max(1, round(seconds))
    if s < 90:
        return f"{s} second{'s' if s != 1 else ''}"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{minutes} minutes"
    hours, minutes = divmod(minutes, 60)
    rest = f" {minutes} minute{'s' if minutes != 1 else ''}" if minutes else ""
    return f"{hours} hour{'s' if hours != 1 else ''}{rest}"


@bp.route("/recluster", methods=["GET", "POST"])
def recluster() -> ResponseReturnValue:
    """Asks first (GET), saying what a re-clustering does and how long the last one
    took, then starts it (POST): it groups every stored item again."""
    agg = get_aggregator()
    if request.method == "GET":
        last = next((j for j in agg.jobs(limit=10, kind="recluster") if j.state == "done"), None)
        return render_template(
            "admin/recluster.html",
            counts=agg.counts(),
            rules=len(agg.correction_rules()),
            version=agg.settings_version(),
            last=last,
            last_took=took(last.updated_at - last.created_at) if last else "",
        )
    try:
        job_id = agg.start_job("recluster", {}, _author())
    except JobError as exc:
        flash(f"Not now: {exc}.", "error")
        return _see_other("admin.index")
    return _see_other("admin.job", job_id=job_id)


# -- jobs ----------------------------------------------------------------------------------


def _ended(job: Job) -> bool:
    """Finished, or given up: no progress for so long that its process must have stopped."""
    return job.finished or time.time() - job.updated_at > STALE_JOB_SECONDS


@bp.get("/jobs")
def jobs() -> str:
    return render_template("admin/jobs.html", jobs=get_aggregator().jobs(limit=50), ended=_ended)


@dataclass(frozen=True)
class Part:
    item: int
    title: str
    size: int
    story: int | None  # the item's story now


@dataclass(frozen=True)
class Change:
    size: int
    parts: list[Part]


def _changes(
    entries: Iterable[Mapping[str, Any]], items: Mapping[int, StoredItem]
) -> tuple[list[Change], int]:
    out, more = [], 0
    for e in entries:
        if "more" in e:
            more = int(e["more"])
            continue
        parts = []
        for p in e.get("parts", []):
            item = items.get(int(p["item"]))
            parts.append(
                Part(int(p["item"]), str(p["title"]), int(p["size"]), item.cluster_id if item else None)
            )
        out.append(Change(int(e["size"]), parts))
    return out, more


def _period(hours: Any) -> str | None:
    if not isinstance(hours, (int, float)):
        return None
    return (
        PERIODS.get(int(hours))
        if float(hours).is_integer() and int(hours) in PERIODS
        else f"the last {hours:g} hours"
    )


def _preview_view(job: Job) -> dict[str, Any]:
    agg = get_aggregator()
    changes = []
    by_key = {d.key: d for d in _admin_defs()}
    for key, raw in sorted(dict(job.params.get("changes", {})).items()):
        d = by_key.get(key)
        proposed: Any = raw
        if d is not None:
            try:
                proposed = d.coerce(raw)
            except ValueError:
                pass
        changes.append((key, shown(agg.settings.get(key)) if d else "?", shown(proposed)))
    out: dict[str, Any] = {"changes": changes, "period": _period(job.params.get("hours"))}
    result = job.result
    if job.state == "done" and isinstance(result, dict):
        ids = [
            int(p["item"])
            for e in result["merges"] + result["splits"]
            for p in e.get("parts", [])
            if "item" in p
        ]
        items = agg.items_by_id(ids)
        out["merges"], out["more_merges"] = _changes(result["merges"], items)
        out["splits"], out["more_splits"] = _changes(result["splits"], items)
        out["report"] = result
        out["stale"] = _stale_preview(job)
    return out


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    job = get_aggregator().job(job_id)
    if job is None:
        abort(404, description="There is no such job.")
    view = _preview_view(job) if job.kind == "preview" else {}
    return render_template("admin/job.html", job=job, ended=_ended(job), **view)


# -- stories and manual corrections ---------------------------------------------------------


@bp.get("/stories")
def stories() -> ResponseReturnValue:
    agg = get_aggregator()
    wanted = request.args.get("id", "").strip().lstrip("#")
    if wanted:
        if not (wanted.isascii() and wanted.isdigit()) or len(wanted) > 18:  # not "²" (isdigit)
            abort(400, description="A story number is a whole number.")
        return _see_other("admin.story", cluster_id=int(wanted))
    query = " ".join(request.args.get("q", "").split())[:200]
    try:
        page = max(1, min(int(request.args.get("page", "1")), 100_000))
    except ValueError:
        abort(400, description="“page” must be a whole number.")
    size = agg.settings.web.page_size
    found = agg.stories(StoryFilter(query=query or None), limit=size + 1, offset=(page - 1) * size)
    return render_template(
        "admin/stories.html", stories=found[:size], query=query, page=page, has_next=len(found) > size
    )


@bp.get("/story/<int:cluster_id>")
def story(cluster_id: int) -> str:
    agg = get_aggregator()
    detail = agg.cluster(cluster_id)
    if detail is None:
        abort(404, description="There is no such story: it may have been merged into another one.")
    members = {m.id for m in detail.members}
    rules = agg.rules_for_items(members)
    pinned = {r.item_a for r in rules if r.kind == "pin"}
    return render_template(
        "admin/story.html", story=detail.summary, members=detail.members, pinned=pinned, rules=rules
    )


@bp.route("/story/<int:cluster_id>/merge", methods=["GET", "POST"])
def merge(cluster_id: int) -> ResponseReturnValue:
    """GET: both stories side by side, to confirm (a mistyped number merged another
    story at once, and undoing a merge takes a rule per item pair); POST: merge."""
    if request.method == "GET":
        raw = request.args.get("other", "").strip().lstrip("#")
        other = whole_number(raw, "other", 1, 2**62)
        agg = get_aggregator()
        target, source = agg.cluster(cluster_id), agg.cluster(other)
        if target is None:
            abort(404, description="There is no such story: it may have been merged into another one.")
        if source is None or other == cluster_id:
            why = "it is this story" if other == cluster_id else "there is no such story"
            flash(f"Cannot merge story #{other}: {why}.", "error")
            return _see_other("admin.story", cluster_id=cluster_id)
        return render_template("admin/merge.html", target=target, source=source)
    other = _form_int("other", 1)
    try:
        get_aggregator().merge_clusters(cluster_id, other, _author())
    except CorrectionError as exc:
        flash(f"Cannot merge: {exc}.", "error")
    else:
        flash(f"Story #{other} is now part of this story. Re-clustering will keep them together.", "notice")
    return _see_other("admin.story", cluster_id=cluster_id)


def _item(item_id: int) -> StoredItem:
    item = get_aggregator().items_by_id([item_id]).get(item_id)
    if item is None:
        abort(404, description="There is no such item.")
    return item


@bp.post("/items/<int:item_id>/move-out")
def move_out(item_id: int) -> ResponseReturnValue:
    item = _item(item_id)
    try:
        new = get_aggregator().move_item_out(item_id, _author())
    except CorrectionError as exc:
        flash(f"Cannot move it out: {exc}.", "error")
    else:
        story_link = url_for("admin.story", cluster_id=new)
        flash(
            Markup(
                'Moved “{}” out into <a href="{}">story #{}</a>. Re-clustering will keep it apart.'
            ).format(_short(item.title), story_link, new),
            "notice",
        )
    if item.cluster_id is None:
        return _see_other("admin.stories")
    return _see_other("admin.story", cluster_id=item.cluster_id)


# At most this many items are taken out of a story at once (a form's worth).
MAX_SPLIT_ITEMS = 1000


@bp.post("/story/<int:cluster_id>/split")
def split(cluster_id: int) -> ResponseReturnValue:
    """Take the checked items of a story out together into a new story (a wrong merge
    undone, or a story that was two)."""
    raw = request.form.getlist("item")
    if len(raw) > MAX_SPLIT_ITEMS:
        abort(400, description=f"At most {MAX_SPLIT_ITEMS} items can be moved at once.")
    chosen = sorted({whole_number(r.strip(), "item", 1, 2**62) for r in raw})
    agg = get_aggregator()
    if agg.cluster(cluster_id) is None:
        abort(404, description="There is no such story: it may have been merged into another one.")
    found = agg.items_by_id(chosen)
    elsewhere = [i for i in chosen if i not in found or found[i].cluster_id != cluster_id]
    if not chosen:
        flash("Check the items to move out first.", "error")
    elif elsewhere:
        flash(f"Cannot move them out: item {elsewhere[0]} is not in this story.", "error")
    else:
        try:
            new = agg.split_out(chosen, _author())
        except CorrectionError as exc:
            flash(f"Cannot move them out: {exc}.", "error")
        else:
            kept = (
                "it apart from the items left here"
                if len(chosen) == 1
                else "them together, and apart from the items left here"
            )
            flash(
                Markup('Moved {} out into <a href="{}">story #{}</a>. Re-clustering will keep {}.').format(
                    plural(len(chosen), "item"), url_for("admin.story", cluster_id=new), new, kept
                ),
                "notice",
            )
    return _see_other("admin.story", cluster_id=cluster_id)


@bp.post("/items/<int:item_id>/pin")
def pin(item_id: int) -> ResponseReturnValue:
    item = _item(item_id)
    try:
        get_aggregator().pin_canonical(item_id, _author())
    except CorrectionError as exc:
        flash(f"Cannot pin it: {exc}.", "error")
    else:
        flash(f"“{_short(item.title)}” is now the canonical item of its story.", "notice")
    if item.cluster_id is None:
        return _see_other("admin.stories")
    return _see_other("admin.story", cluster_id=item.cluster_id)


@bp.get("/rules")
def rules() -> str:
    agg = get_aggregator()
    page = whole_number(request.args.get("page", "1"), "page", 1, 10**6)
    found = agg.correction_rules(limit=RULES_PER_PAGE + 1, offset=(page - 1) * RULES_PER_PAGE)
    if page > 1 and not found:
        abort(404, description="There are no rules on this page.")
    rules = found[:RULES_PER_PAGE]
    ids = [r.item_a for r in rules] + [r.item_b for r in rules if r.item_b is not None]
    return render_template(
        "admin/rules.html",
        rules=rules,
        items=agg.items_by_id(ids),
        names=RULE_NAMES,
        page=page,
        has_next=len(found) > RULES_PER_PAGE,
    )


RULES_PER_PAGE = 100  # 30,000 rules made a 19 MB page that took 2.6 s


RULE_EFFECTS = {
    "must": "the two items may be put in different stories again",
    "cannot": "the two items may be put in one story again",
    "pin": "the story chooses its canonical item again by the settings",
}


@bp.route("/rules/<int:rule_id>/delete", methods=["GET", "POST"])
def delete_rule(rule_id: int) -> ResponseReturnValue:
    """Asks first (GET), then deletes (POST): a deleted rule is gone, an admin's
    correction with it."""
    agg = get_aggregator()
    rule = agg.correction_rule(rule_id)
    if rule is None:
        abort(404, description="There is no such rule.")
    if request.method == "GET":
        ids = [rule.item_a] + ([rule.item_b] if rule.item_b is not None else [])
        return render_template(
            "admin/delete_rule.html",
            rule=rule,
            items=agg.items_by_id(ids),
            names=RULE_NAMES,
            effect=RULE_EFFECTS.get(rule.kind, "the stories are made again without it"),
        )
    try:
        agg.delete_rule(rule_id)
    except CorrectionError as exc:
        flash(f"Cannot delete it: {exc}.", "error")
        return _see_other("admin.rules")
    flash(f"Rule #{rule_id} deleted. Stories change at the next re-clustering.", "notice")
    return _see_other("admin.rules")


# -- feeds -----------------------------------------------------------------------------------


FEEDS_PER_PAGE = 100  # a list of 20,000 feeds took 11 s to render


@bp.get("/feeds")
def feeds() -> str:
    agg = get_aggregator()
    page = whole_number(request.args.get("page", "1"), "page", 1, 10**6)
    shown = agg.feeds(limit=FEEDS_PER_PAGE + 1, offset=(page - 1) * FEEDS_PER_PAGE)
    return render_template(
        "admin/feeds.html",
        feeds=shown[:FEEDS_PER_PAGE],
        page=page,
        has_next=len(shown) > FEEDS_PER_PAGE,
        total=agg.counts()["feeds"],
    )


def _back_to_feed(feed_id: int) -> ResponseReturnValue:
    """The feeds page that lists this feed, scrolled to it."""
    before = get_aggregator().feed_position(feed_id)
    if before is None:
        return _see_other("admin.feeds")
    page = before // FEEDS_PER_PAGE + 1
    return _see_other("admin.feeds", page=page if page > 1 else None, _anchor=f"feed-{feed_id}")


@bp.post("/feeds")
def add_feed() -> ResponseReturnValue:
    url = request.form.get("url", "")
    title = " ".join(request.form.get("title", "").split())[:300] or None
    try:
        feed, new = get_aggregator().add_feed(url, title, via_site=True)
    except FeedError as exc:
        flash(f"Cannot add that feed: {exc}.", "error")
    else:
        if new:
            flash(f"Subscribed to {_short(feed.display_name)}. It is polled at the next round.", "notice")
        else:
            flash(f"Already subscribed to {_short(feed.display_name)}.", "notice")
        return _back_to_feed(feed.id)
    return _see_other("admin.feeds")


@bp.post("/feeds/import")
def import_opml() -> ResponseReturnValue:
    upload = request.files.get("opml")
    data = upload.read(MAX_OPML_BYTES + 1) if upload else b""
    if not data:
        flash("Choose an OPML file to import.", "error")
        return _see_other("admin.feeds")
    if len(data) > MAX_OPML_BYTES:
        flash(f"That file is too large (at most {MAX_OPML_BYTES // (1024 * 1024)} MB).", "error")
        return _see_other("admin.feeds")
    try:
        added, problems = get_aggregator().import_opml(data, via_site=True)
    except OpmlError as exc:
        flash(f"Cannot import that file: {exc}.", "error")
        return _see_other("admin.feeds")
    flash(f"Imported {len(added)} new feed{'s' if len(added) != 1 else ''}.", "notice")
    for problem in problems[:5]:
        flash(f"Skipped: {_short(problem)}", "error")
    if len(problems) > 5:
        flash(f"… and {len(problems) - 5} more skipped.", "error")
    return _see_other("admin.feeds")


@bp.get("/feeds/export.opml")
def export_opml() -> Response:
    return Response(
        get_aggregator().export_opml(),
        content_type="text/x-opml; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="feeds.opml"'},
    )


def _feed_or_404(feed_id: int) -> Any:
    feed = get_aggregator().feed(feed_id)
    if feed is None:
        abort(404, description="There is no such feed.")
    return feed


@bp.post("/feeds/<int:feed_id>/pause")
def pause_feed(feed_id: int) -> ResponseReturnValue:
    feed = _feed_or_404(feed_id)
    paused = request.form.get("paused") == "1"
    get_aggregator().pause_feed(feed_id, paused)
    flash(f"{_short(feed.display_name)} is {'paused' if paused else 'polled again'}.", "notice")
    return _back_to_feed(feed_id)


@bp.post("/feeds/<int:feed_id>/interval")
def feed_interval(feed_id: int) -> ResponseReturnValue:
    feed = _feed_or_404(feed_id)
    raw = request.form.get("minutes", "").strip()
    try:
        minutes = None if raw.lower() in ("", "auto") else float(raw)
    except ValueError:
        flash(f"“{_short(raw)}” is not a number of minutes (leave it empty for automatic).", "error")
        return _back_to_feed(feed_id)
    try:
        changed = get_aggregator().set_poll_interval(feed_id, minutes)
    except FeedError as exc:
        flash(str(exc), "error")
        return _back_to_feed(feed_id)
    every = "automatically" if changed.poll_minutes is None else f"every {changed.poll_minutes:g} minutes"
    flash(f"{_short(feed.display_name)} is polled {every}.", "notice")
    return _back_to_feed(feed_id)


@bp.post("/feeds/<int:feed_id>/poll")
def poll_feed(feed_id: int) -> ResponseReturnValue:
    feed = _feed_or_404(feed_id)
    try:
        report = get_aggregator().poll_now(feed_id)
    except FeedError as exc:
        flash(str(exc), "error")
        return _back_to_feed(feed_id)
    name = _short(feed.display_name)
    if report is None:
        flash(
            f"{name} will be polled when the poller ends its current round; its state shows here.", "notice"
        )
    elif report.error:  # (a session cookie holds the message: browsers drop those over 4 KB)
        flash(f"Polled {name}: {report.status}, {_short(report.error, 300)}", "error")
    else:
        status = {"not_modified": "unchanged since the last poll"}.get(report.status, report.status)
        warning = f" Warning: {report.warning}" if report.warning else ""
        flash(
            f"Polled {name}: {status}, {report.new_items} new, {report.updated_items} updated.{warning}",
            "notice",
        )
    return _back_to_feed(feed_id)


@bp.route("/feeds/<int:feed_id>/remove", methods=["GET", "POST"])
def remove_feed(feed_id: int) -> ResponseReturnValue:
    feed = _feed_or_404(feed_id)
    if request.method == "GET":
        return render_template("admin/remove_feed.html", feed=feed)
    try:
        get_aggregator().remove_feed(feed_id)
    except CorrectionError as exc:
        flash(f"Cannot remove it now: {exc}.", "error")
        return _back_to_feed(feed_id)
    flash(f"Removed {_short(feed.display_name)} and its items.", "notice")
    return _see_other("admin.feeds")
