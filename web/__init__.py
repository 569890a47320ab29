"""The site: an application factory, a public blueprint and an admin blueprint.

Views call the :class:`aggregator.Aggregator` facade; there is no SQL here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, g

from aggregator import Aggregator
from aggregator.settings import Settings, load_settings

__all__ = ["create_app", "get_aggregator"]


def create_app(
    settings: Settings | None = None,
    db_path: str | Path | None = None,
    config: str | Path | None = None,
    **flask_config: Any,
) -> Flask:
    """Build the Flask app for one database; migrations run once, here."""
    settings = settings or load_settings(config)
    db = Path(db_path) if db_path is not None else settings.db_path
    Aggregator(settings, db_path=db).close()  # create the database and apply migrations
    app = Flask(__name__)
    app.config.update(AGGREGATOR_SETTINGS=settings, AGGREGATOR_DB=db, **flask_config)

    @app.teardown_appcontext
    def close_aggregator(_exc: BaseException | None) -> None:
        agg = g.pop("aggregator", None)
        if agg is not None:
            agg.close()

    from web import filters, public

    filters.register(app)
    app.register_blueprint(public.bp)
    return app


def get_aggregator() -> Aggregator:
    """The request's aggregator (one SQLite connection per request)."""
    from flask import current_app

    if "aggregator" not in g:
        g.aggregator = Aggregator(
            current_app.config["AGGREGATOR_SETTINGS"],
            db_path=current_app.config["AGGREGATOR_DB"],
            migrate=False,
        )
    agg: Aggregator = g.aggregator
    return agg
