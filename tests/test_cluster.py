from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from aggregator import Aggregator
from aggregator.cluster import ClusterEngine, Doc
from aggregator.fingerprint import features, signature
from aggregator.settings import Settings
from tests.conftest import DATA


def demo_clusters(agg: Aggregator, demo: Path) -> tuple[dict[str, set[int]], dict[int, set[str]]]:
    """story -> clusters its items landed in; cluster -> stories in it."""
    added, problems = agg.import_opml(demo / "demo.opml")
    assert len(added) == 6 and not problems
    reports = agg.update()
    assert all(r.status == "ok" for r in reports), reports
    expected = json.loads((demo / "feeds" / "expected.json").read_text())
    where = {(row["feed"].rsplit("/", 1)[1], row["guid"]): row["cluster_id"] for row in agg.export_rows()}
    story_clusters: dict[str, set[int]] = defaultdict(set)
    cluster_stories: dict[int, set[str]] = defaultdict(set)
    for key, story in expected.items():
        for feed_file, guid in story["items"]:
            cid = where[(feed_file, guid)]
            story_clusters[key].add(cid)
            cluster_stories[cid].add(key)
    assert sum(len(s["items"]) for s in expected.values()) == len(where)
    return story_clusters, cluster_stories


def test_seed_pair_joins_and_lookalikes_stay_apart(agg: Aggregator, demo_feeds: Path) -> None:
    story_clusters, cluster_stories = demo_clusters(agg, demo_feeds)
    (seed_cluster,) = story_clusters["seed-putin-musk-taiwan"]
    assert cluster_stories[seed_cluster] == {"seed-putin-musk-taiwan"}
    mixed = {cid: s for cid, s in cluster_stories.items() if len(s) > 1}
    assert not mixed, f"false merges: {mixed}"


def test_every_demo_story_is_one_cluster(agg: Aggregator, demo_feeds: Path) -> None:
    story_clusters, _ = demo_clusters(agg, demo_feeds)
    split = {k: v for k, v in story_clusters.items() if len(v) > 1}
    assert not split, f"missed merges: {split}"


def test_seed_pair_why(agg: Aggregator, demo_feeds: Path) -> None:
    story_clusters, _ = demo_clusters(agg, demo_feeds)
    (cid,) = story_clusters["seed-putin-musk-taiwan"]
    detail = agg.cluster(cid)
    assert detail is not None
    first, second = sorted(detail.members, key=lambda m: m.signal != "new")
    assert first.signal == "new"
    assert second.signal not in ("new", None) and second.score is not None and second.score > 0
    assert second.matched_item_id == first.id


def seed_texts() -> list[tuple[str, str]]:
    out = []
    for name in ("dailymail-putin-musk-taiwan.txt", "gbnews-putin-musk-taiwan.txt"):
        lines = [line.strip() for line in (DATA / "seeds" / name).read_text().splitlines() if line.strip()]
        lines = [line for line in lines if line != "Advertisement"]
        out.append((lines[0], " ".join(lines[1:])))
    return out


def doc(item_id: int, title: str, text: str, t: float, s: Settings) -> Doc:
    f = features(title, text, body_words=s.cluster.body_words, title_weight=s.cluster.title_weight)
    return Doc(item_id, t, f, signature(f.tokens, s.cluster.num_perm))


def test_engine_joins_the_raw_seed_articles() -> None:
    s = Settings()
    engine = ClusterEngine(s.cluster)
    (t1, b1), (t2, b2) = seed_texts()
    engine.add(doc(1, t1, b1, 0.0, s), 100)
    p = engine.propose(doc(2, t2, b2, 3600.0, s))
    assert p.cluster_id == 100 and p.matched_item_id == 1


def test_engine_time_window() -> None:
    s = Settings()
    engine = ClusterEngine(s.cluster)
    (t1, b1), _ = seed_texts()
    engine.add(doc(1, t1, b1, 0.0, s), 100)
    late = s.cluster.time_window_hours * 3600 + 10
    assert engine.propose(doc(2, t1, b1, late, s)).cluster_id is None
    assert engine.propose(doc(3, t1, b1, 10.0, s)).cluster_id == 100
    assert engine.evict_before(5.0) == 1 and len(engine) == 0


def test_engine_remove_forgets_everything() -> None:
    s = Settings()
    engine = ClusterEngine(s.cluster)
    (t1, b1), _ = seed_texts()
    engine.add(doc(1, t1, b1, 0.0, s), 100)
    engine.remove(1)
    assert len(engine) == 0
    assert engine.propose(doc(2, t1, b1, 1.0, s)).cluster_id is None


@pytest.mark.parametrize("text", ["", "the of and"])
def test_engine_empty_features_start_new_clusters(text: str) -> None:
    s = Settings()
    engine = ClusterEngine(s.cluster)
    d = Doc(1, 0.0, features(text, ""), np.full(s.cluster.num_perm, 0xFFFFFFFF, dtype=np.uint32))
    assert engine.propose(d).cluster_id is None
    engine.add(d, 1)
    assert engine.propose(Doc(2, 0.0, d.features, d.signature)).cluster_id is None
