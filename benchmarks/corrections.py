"""What an admin's correction costs a poller holding the cluster index (issue 7).

``python -m benchmarks.corrections DIR``: DIR holds a copy of a benchmark database
(``agg.db``; it is changed: two stories are merged, an item is moved out, a feed is
removed), e.g. ``cp benchmarks/.work/site-s7-n1000000-d10000-v1/agg.db DIR/``.
Prints the time of the poller's rebuild, of each correction in the site, and of the
poller's next use of its index after each.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from aggregator import Aggregator
from aggregator.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    cfg = args.dir / "config.toml"
    cfg.write_text('[storage]\ndb_path = "agg.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n')
    settings = load_settings(cfg)
    poller, site = Aggregator(settings), Aggregator(settings)

    def timed(what: str, step: object) -> None:
        t = time.perf_counter()
        step()  # type: ignore[operator]
        print(
            f"{what}: {1000 * (time.perf_counter() - t):,.1f} ms, rebuilds {poller.pipeline.rebuilds}",
            flush=True,
        )

    timed("poller builds its index", poller.rebuild_index)
    a, b = (s.id for s in site.clusters(limit=2))
    timed("merge two stories (site)", lambda: site.merge_clusters(a, b, "bench"))
    timed("poller takes the merge", poller.pipeline.engine)
    item = site.story_members([a])[a][0].id
    timed("move an item out (site)", lambda: site.move_item_out(item, "bench"))
    timed("poller takes the move", poller.pipeline.engine)
    # The outlet with the fewest items stored (the loader does not count them per feed).
    stored = dict(site.db.execute("SELECT feed_id, count(*) FROM items GROUP BY feed_id").fetchall())
    smallest = min(stored, key=lambda f: (stored[f], f))
    in_window = len(
        set(poller.pipeline.engine().item_ids())
        & {r[0] for r in site.db.execute("SELECT id FROM items WHERE feed_id = ?", [smallest])}
    )
    timed(
        f"remove a feed of {stored[smallest]:,} items, {in_window:,} of them indexed (site)",
        lambda: site.remove_feed(smallest),
    )
    timed("poller takes the removal", poller.pipeline.engine)
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    poller.close()
    site.close()


if __name__ == "__main__":
    main()
