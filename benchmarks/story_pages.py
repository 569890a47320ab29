"""Cold story pages: each of the latest stories' pages rendered once, in this process.

Figure 5's quick story page is mostly such first renders (see benchmarks/README.md,
"Tenth session"); this measures them without the load: Flask's test client on a
benchmark database, the response cache off and the comparison cache emptied, so
every page computes its versions' differences and renders.  A second pass shows the
pages with the differences cached (what a page costs once its story has been shown).

    python -m benchmarks.story_pages --dir benchmarks/.work/site-s7-n20000-d10000-v1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from aggregator import Aggregator
from benchmarks.common import scratch_settings


def _summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (
        f"mean {sum(ms) / len(ms):.1f} ms, p50 {ms[len(ms) // 2]:.1f}, "
        f"p95 {ms[int(len(ms) * 0.95)]:.1f}, max {ms[-1]:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, type=Path, help="a benchmark database's folder (figure 5's)")
    ap.add_argument("--stories", type=int, default=200, help="the latest stories told by 2+ outlets")
    args = ap.parse_args(argv)
    import web.public
    from web import create_app

    settings = scratch_settings(args.dir)
    with Aggregator(settings, migrate=False) as agg:
        paths = [f"/story/{c.id}" for c in agg.clusters(limit=args.stories, min_outlets=2)]
    if not paths:
        raise SystemExit(f"no stories in {args.dir}")
    app = create_app(settings, AGGREGATOR_RESPONSE_CACHE=0, AGGREGATOR_SHARED_CACHE="")
    client = app.test_client()
    client.get(paths[0])  # templates compiled, connection opened
    web.public._diff_texts.cache_clear()
    for label in ("cold", "differences cached"):
        took = []
        for p in paths:
            t = time.perf_counter()
            r = client.get(p)
            took.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"{p}: HTTP {r.status_code}")
        print(f"{len(paths)} story pages, {label}: {_summary(took)}")


if __name__ == "__main__":
    main()
