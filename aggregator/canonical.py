"""Pure choice of a cluster's canonical item, by the configured policy."""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.models import MemberInfo

__all__ = ["POLICIES", "choose"]

POLICIES = ("earliest", "most_complete", "preferred")


def choose(members: Sequence[MemberInfo], policy: str, preferred: Sequence[str] = ()) -> int:
    """The item id that represents the cluster.

    - ``earliest``: first published (ties: lowest id);
    - ``most_complete``: longest text (ties: earliest);
    - ``preferred``: the member from the first listed source present (matched on
      feed title or URL, case-insensitively), else ``most_complete``.
    """
    if not members:
        raise ValueError("a cluster without members has no canonical item")
    by_time = sorted(members, key=lambda m: (m.sort_time, m.item_id))
    if policy == "earliest":
        return by_time[0].item_id
    if policy == "preferred":
        for source in preferred:
            want = source.strip().casefold()
            for m in by_time:
                if want and want in ((m.feed_title or "").casefold(), m.feed_url.casefold()):
                    return m.item_id
    return max(by_time, key=lambda m: (m.text_length, -m.sort_time, -m.item_id)).item_id
