"""Public pages: stories, a story, health."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from web import get_aggregator

bp = Blueprint("public", __name__)


@bp.get("/")
def index() -> str:
    agg = get_aggregator()
    page = max(1, request.args.get("page", 1, type=int) or 1)
    sort = request.args.get("sort", "latest")
    if sort not in ("latest", "coverage"):
        sort = "latest"
    size = agg.settings.web.page_size
    stories = agg.clusters(sort=sort, limit=size + 1, offset=(page - 1) * size)
    return render_template(
        "index.html", stories=stories[:size], page=page, sort=sort, has_next=len(stories) > size
    )


@bp.get("/story/<int:cluster_id>")
def story(cluster_id: int) -> str:
    detail = get_aggregator().cluster(cluster_id)
    if detail is None:
        abort(404)
    return render_template("story.html", story=detail.summary, members=detail.members)


@bp.get("/healthz")
def healthz() -> dict[str, object]:
    counts = get_aggregator().counts()
    return {"status": "ok", **counts}
