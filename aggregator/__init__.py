"""The aggregator: a deduplicating news feed aggregator.

Public facade::

    from aggregator import Aggregator
    agg = Aggregator.open("config.toml")
    agg.add_feed("https://example.org/feed.xml")
    agg.update()
    for story in agg.clusters(limit=10):
        print(story.canonical.title, story.outlets)
"""

from aggregator.core import Aggregator, FeedError
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
