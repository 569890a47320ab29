"""Manual corrections, kept as rules that every later re-clustering respects.

- ``must`` (item_a, item_b): the two items are one story;
- ``cannot`` (item_a, item_b): the two items are different stories;
- ``pin`` (item_a): item_a is its cluster's canonical item.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from sqlite_utils import Database

__all__ = [
    "Rule",
    "RuleSet",
    "add",
    "all_rules",
    "delete",
    "drop_within",
    "load",
    "must_groups",
    "pins_by_age",
    "pins_for",
]


@dataclass(frozen=True)
class Rule:
    id: int
    kind: str
    item_a: int
    item_b: int | None
    created_at: float
    author: str


@dataclass
class RuleSet:
    """Rules indexed for clustering: item -> partners."""

    must: dict[int, set[int]] = field(default_factory=dict)
    cannot: dict[int, set[int]] = field(default_factory=dict)
    pins: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.must or self.cannot or self.pins)

    def pairs(self, kind: str) -> set[tuple[int, int]]:
        table = self.must if kind == "must" else self.cannot
        return {(min(a, b), max(a, b)) for a, bs in table.items() for b in bs}


def add(db: Database, kind: str, pairs: Iterable[tuple[int, int | None]], author: str, now: float) -> int:
    """Record rules (ignoring ones already there); returns how many were new."""
    if kind not in ("must", "cannot", "pin"):
        raise ValueError(f"unknown rule kind {kind!r}")
    n = 0
    for a, b in pairs:
        if b is not None:
            a, b = min(a, b), max(a, b)
        cur = db.execute(
            "INSERT OR IGNORE INTO cluster_rules (kind, item_a, item_b, created_at, author) VALUES (?, ?, ?, ?, ?)",
            [kind, a, b, now, author],
        )
        n += cur.rowcount
    if kind == "must":  # a must-link overrides an older cannot-link of the same pair, and back
        _drop_opposite(db, "cannot", pairs)
    elif kind == "cannot":
        _drop_opposite(db, "must", pairs)
    return n


def _drop_opposite(db: Database, kind: str, pairs: Iterable[tuple[int, int | None]]) -> None:
    for a, b in pairs:
        if b is None:
            continue
        db.execute(
            "DELETE FROM cluster_rules WHERE kind = ? AND item_a = ? AND item_b = ?",
            [kind, min(a, b), max(a, b)],
        )


def drop_within(db: Database, kind: str, item_ids: Iterable[int]) -> None:
    """Delete the ``kind`` rules between two of ``item_ids``."""
    ids = list(item_ids)
    marks = ",".join("?" * len(ids))
    db.execute(
        f"DELETE FROM cluster_rules WHERE kind = ? AND item_a IN ({marks}) AND item_b IN ({marks})",
        [kind, *ids, *ids],
    )


def must_groups(db: Database) -> list[set[int]]:
    """The items each chain of must-links holds together (an admin's merges)."""
    links = load(db).must
    seen: set[int] = set()
    groups: list[set[int]] = []
    for start in links:
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            for other in links.get(todo.pop(), ()):
                if other not in group:
                    group.add(other)
                    todo.append(other)
        seen |= group
        groups.append(group)
    return groups


def unpin_cluster(db: Database, item_ids: Iterable[int]) -> None:
    ids = list(item_ids)
    marks = ",".join("?" * len(ids))
    db.execute(f"DELETE FROM cluster_rules WHERE kind = 'pin' AND item_a IN ({marks})", ids)


def delete(db: Database, rule_id: int) -> None:
    db.execute("DELETE FROM cluster_rules WHERE id = ?", [rule_id])


_RULE = "SELECT id, kind, item_a, item_b, created_at, author FROM cluster_rules"


def all_rules(db: Database, limit: int = -1, offset: int = 0) -> list[Rule]:
    """Rules, newest first (``limit`` -1: all)."""
    rows = db.execute(f"{_RULE} ORDER BY id DESC LIMIT ? OFFSET ?", [limit, offset]).fetchall()
    return [Rule(*r) for r in rows]


def get(db: Database, rule_id: int) -> Rule | None:
    row = db.execute(f"{_RULE} WHERE id = ?", [rule_id]).fetchone()
    return Rule(*row) if row else None


def for_items(db: Database, item_ids: Collection[int]) -> list[Rule]:
    """Rules naming any of ``item_ids``, newest first (through the item indexes)."""
    ids = json.dumps(sorted(item_ids))
    rows = db.execute(
        f"{_RULE} WHERE item_a IN (SELECT value FROM json_each(?)) "
        "OR item_b IN (SELECT value FROM json_each(?)) ORDER BY id DESC",
        [ids, ids],
    ).fetchall()
    return [Rule(*r) for r in rows]


def load(db: Database) -> RuleSet:
    rs = RuleSet()
    for kind, a, b in db.execute("SELECT kind, item_a, item_b FROM cluster_rules"):
        if kind == "pin":
            rs.pins.add(a)
            continue
        table = rs.must if kind == "must" else rs.cannot
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return rs


def pins_for(db: Database, item_ids: Iterable[int]) -> set[int]:
    ids = list(item_ids)
    if not ids:
        return set()
    marks = ",".join("?" * len(ids))
    return {
        r[0]
        for r in db.execute(
            f"SELECT item_a FROM cluster_rules WHERE kind = 'pin' AND item_a IN ({marks})", ids
        )
    }


def pins_by_age(db: Database) -> list[int]:
    """Every pinned item, oldest pin first."""
    return [r[0] for r in db.execute("SELECT item_a FROM cluster_rules WHERE kind = 'pin' ORDER BY id")]


def has_cannot(db: Database) -> bool:
    return db.execute("SELECT 1 FROM cluster_rules WHERE kind = 'cannot' LIMIT 1").fetchone() is not None


def conflict(db: Database, group: Collection[int], cluster: int) -> bool:
    """Whether a cannot-link runs between a member of ``cluster`` and a member of any of
    the clusters of ``group``."""
    ids = list(group)
    marks = ",".join("?" * len(ids))
    row = db.execute(
        "SELECT 1 FROM cluster_rules r "
        "JOIN memberships ma ON ma.item_id = r.item_a JOIN memberships mb ON mb.item_id = r.item_b "
        f"WHERE r.kind = 'cannot' AND ((ma.cluster_id IN ({marks}) AND mb.cluster_id = ?) "
        f"OR (mb.cluster_id IN ({marks}) AND ma.cluster_id = ?)) LIMIT 1",
        [*ids, cluster, *ids, cluster],
    ).fetchone()
    return row is not None
