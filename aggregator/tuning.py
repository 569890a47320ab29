"""Admins tune clustering: preview a settings change, apply it, revert it, correct clusters.

Pure comparison logic lives here; the facade (``aggregator.core``) runs previews
and re-clustering in background threads and stores their progress as jobs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aggregator.settings import Settings, SettingsError, definitions

__all__ = ["PreviewReport", "compare", "labeled_scores", "validate_changes"]


def validate_changes(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check admin-editable settings from a form; returns (clean values, errors by key)."""
    admin = {d.key: d for d in definitions() if d.admin}
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        d = admin.get(key)
        if d is None:
            errors[key] = "not a setting admins may change"
            continue
        try:
            clean[key] = d.coerce(value)
        except SettingsError as exc:
            errors[key] = str(exc).split(": ", 1)[-1]
    return clean, errors


def json_ready(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def apply_overrides(base: Settings, overrides: Mapping[str, Any]) -> tuple[Settings, list[str]]:
    """``base`` with stored overrides; ones that no longer validate are skipped and reported.

    All at once (they were checked together: one at a time, ``lsh_rows`` = 8 fails
    before ``num_perm`` = 256 is in); if that fails, one at a time in rounds, each
    round taking those that fit with the ones taken before.
    """
    try:
        return base.replace(dict(overrides)), []
    except SettingsError:
        pass
    settings = base
    remaining = dict(overrides)
    while True:
        errors: dict[str, str] = {}
        taken = False
        for key, value in list(remaining.items()):
            try:
                settings = settings.replace({key: value})
            except SettingsError as exc:
                errors[key] = str(exc)
            else:
                del remaining[key]
                taken = True
        if not remaining or not taken:
            break
    return settings, list(errors.values())


@dataclass(frozen=True)
class PreviewReport:
    """What a settings change would do to the stories of a period."""

    items: int
    clusters_now: int
    clusters_then: int
    merges: list[dict[str, Any]]  # proposed clusters made of several current ones
    splits: list[dict[str, Any]]  # current clusters cut into several proposed ones
    labeled: dict[str, Any]  # precision / recall on admins' must/cannot pairs, both settings

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "clusters_now": self.clusters_now,
            "clusters_then": self.clusters_then,
            "merges": self.merges,
            "splits": self.splits,
            "labeled": self.labeled,
        }


def compare(
    current: Mapping[int, int],
    proposed: Mapping[int, int],
    titles: Mapping[int, str],
    labeled: dict[str, Any],
    examples: int = 20,
) -> PreviewReport:
    """Compare two partitions of the same items (item -> cluster)."""
    now_groups: dict[int, set[int]] = defaultdict(set)
    then_groups: dict[int, set[int]] = defaultdict(set)
    for item, c in current.items():
        now_groups[c].add(item)
    for item, c in proposed.items():
        then_groups[c].add(item)

    def describe(items: set[int]) -> dict[str, Any]:
        first = min(items)
        return {"item": first, "title": titles.get(first, ""), "size": len(items)}

    merges: list[dict[str, Any]] = []
    for group in then_groups.values():
        parts = {current[i] for i in group}
        if len(parts) > 1:
            pieces = sorted((now_groups[p] for p in parts), key=len, reverse=True)
            merges.append({"size": len(group), "parts": [describe(p & group) for p in pieces]})
    splits: list[dict[str, Any]] = []
    for group in now_groups.values():
        parts = {proposed[i] for i in group}
        if len(parts) > 1:
            pieces = sorted((then_groups[p] & group for p in parts), key=len, reverse=True)
            splits.append({"size": len(group), "parts": [describe(p) for p in pieces]})
    merges.sort(key=lambda m: -m["size"])
    splits.sort(key=lambda m: -m["size"])
    return PreviewReport(
        items=len(current),
        clusters_now=len(now_groups),
        clusters_then=len(then_groups),
        merges=merges[:examples] + ([{"more": len(merges) - examples}] if len(merges) > examples else []),
        splits=splits[:examples] + ([{"more": len(splits) - examples}] if len(splits) > examples else []),
        labeled=labeled,
    )


def labeled_scores(
    partition: Mapping[int, int], must: set[tuple[int, int]], cannot: set[tuple[int, int]]
) -> dict[str, Any] | None:
    """Pairwise precision / recall / F1 on admin-labeled pairs (must = same story, cannot = different)."""
    must = {p for p in must if p[0] in partition and p[1] in partition}
    cannot = {p for p in cannot if p[0] in partition and p[1] in partition}
    if not must and not cannot:
        return None
    tp = sum(partition[a] == partition[b] for a, b in must)
    fn = len(must) - tp
    fp = sum(partition[a] == partition[b] for a, b in cannot)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pairs": len(must) + len(cannot), "precision": precision, "recall": recall, "f1": f1}
