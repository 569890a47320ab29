from __future__ import annotations

import pytest

from aggregator.canonical import choose
from aggregator.models import MemberInfo

M = [
    MemberInfo(1, 10, "Wire", "https://wire.example/feed", 100.0, 300),
    MemberInfo(2, 11, "Daily", "https://daily.example/rss", 50.0, 200),
    MemberInfo(3, 12, None, "https://blog.example/atom", 200.0, 900),
]


def test_earliest() -> None:
    assert choose(M, "earliest") == 2


def test_most_complete() -> None:
    assert choose(M, "most_complete") == 3


def test_preferred_by_title_or_url_else_most_complete() -> None:
    assert choose(M, "preferred", ["nobody", "wire"]) == 1
    assert choose(M, "preferred", ["https://daily.example/rss"]) == 2
    assert choose(M, "preferred", ["nobody"]) == 3


def test_ties_are_deterministic() -> None:
    same = [MemberInfo(5, 1, "a", "u", 10.0, 100), MemberInfo(4, 2, "b", "v", 10.0, 100)]
    assert choose(same, "earliest") == 4
    assert choose(same, "most_complete") == 4


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose([], "earliest")
