"""Story filters at any archive size: both query plans give the same stories; the category rows follow items."""

from __future__ import annotations

import pytest

from aggregator import Aggregator
from aggregator.models import StoryFilter
from aggregator.storage import clusters as clusters_store
from aggregator.storage import write_transaction


def ids(agg: Aggregator, f: StoryFilter, sort: str = "latest") -> list[int]:
    return [s.id for s in agg.stories(f, sort=sort, limit=100)]


def filters(agg: Aggregator) -> list[StoryFilter]:
    feeds = agg.feeds()
    return [
        *(StoryFilter(feed_id=f.id) for f in feeds),
        *(StoryFilter(feed_id=f.id, min_outlets=2) for f in feeds),
        StoryFilter(category="football"),
        StoryFilter(category="  FOOTBALL "),
        StoryFilter(category="Sport"),
        StoryFilter(category="no such category"),
        StoryFilter(category="sport", feed_id=feeds[0].id),
    ]


def test_rare_and_common_plans_agree(demo_agg: Aggregator, monkeypatch: pytest.MonkeyPatch) -> None:
    few = {(f, sort): ids(demo_agg, f, sort) for f in filters(demo_agg) for sort in ("latest", "coverage")}
    assert any(few.values()) and any(not v for v in few.values())
    football = few[(StoryFilter(category="football"), "latest")]
    assert football and football == few[(StoryFilter(category="  FOOTBALL "), "latest")]
    monkeypatch.setattr(clusters_store, "FEW_MEMBERS", 1)  # every key is "common": EXISTS per story
    many = {(f, sort): ids(demo_agg, f, sort) for f in filters(demo_agg) for sort in ("latest", "coverage")}
    assert many == few


def test_category_rows_follow_inserts_and_edits(demo_agg: Aggregator) -> None:
    db = demo_agg.db
    stored = db.execute("SELECT id, categories FROM items WHERE categories != '[]' LIMIT 1").fetchone()
    assert stored is not None
    item_id = stored[0]

    def rows() -> set[str]:
        return {r[0] for r in db.execute("SELECT category FROM item_categories WHERE item_id = ?", [item_id])}

    assert rows() and all(c == c.lower() for c in rows())
    with write_transaction(db):
        db.execute("UPDATE items SET categories = ? WHERE id = ?", ['["Weather", "Coast"]', item_id])
    assert rows() == {"weather", "coast"}
    story = demo_agg.items_by_id([item_id])[item_id].cluster_id
    assert story in ids(demo_agg, StoryFilter(category="WEATHER"))
    with write_transaction(db):  # what no writer of ours stores, still never an error
        db.execute("UPDATE items SET categories = 'not json' WHERE id = ?", [item_id])
    assert rows() == set()
    with write_transaction(db):
        db.execute("DELETE FROM items WHERE id = ?", [item_id])
    assert rows() == set()
    total = db.execute("SELECT count(*) FROM item_categories").fetchone()[0]
    expected = db.execute(
        "SELECT count(DISTINCT i.id || lower(j.value)) FROM items i, json_each(i.categories) j"
    ).fetchone()[0]
    assert total == expected


def test_query_filter_reads_the_latest_matches(demo_agg: Aggregator, monkeypatch: pytest.MonkeyPatch) -> None:
    everything = ids(demo_agg, StoryFilter(query="the"))
    assert len(everything) > 3
    monkeypatch.setattr(clusters_store, "FEW_MEMBERS", 2)
    latest = ids(demo_agg, StoryFilter(query="the"))
    newest_two = [
        r[0]
        for r in demo_agg.db.execute(
            "SELECT rowid FROM items_fts WHERE items_fts MATCH '\"the\"' ORDER BY rowid DESC LIMIT 2"
        )
    ]
    clusters = {i.cluster_id for i in demo_agg.items_by_id(newest_two).values()}
    assert set(latest) == clusters and set(latest) <= set(everything)
