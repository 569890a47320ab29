"""The aggregator: a deduplicating news feed aggregator.

Public facade::

    from aggregator import Aggregator
    agg = Aggregator.open("config.toml")
    agg.add_feed("https://example.org/feed.xml")
    agg.update()
    for story in agg.clusters(limit=10):
        print(story.canonical.title, story.outlets)
"""

from typing import TYPE_CHECKING, Any

from aggregator.models import (
    ClusterDetail,
    ClusterSummary,
    Feed,
    StoredItem,
    StoryCursor,
    StoryFilter,
    UpdateReport,
)
from aggregator.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from aggregator.core import Aggregator, FeedError


def __getattr__(name: str) -> Any:
    """``Aggregator`` and ``FeedError`` are imported on first use: a parse worker process
    imports ``aggregator.prepare``, which needs neither the facade nor the cluster
    engine (numba) behind it, and started in 1.2 s with them."""
    if name in ("Aggregator", "FeedError"):
        from aggregator import core

        return getattr(core, name)
    raise AttributeError(f"module 'aggregator' has no attribute {name!r}")


__all__ = [
    "Aggregator",
    "ClusterDetail",
    "ClusterSummary",
    "Feed",
    "FeedError",
    "Settings",
    "SettingsError",
    "StoredItem",
    "StoryCursor",
    "StoryFilter",
    "UpdateReport",
    "load_settings",
]
