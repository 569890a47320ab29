"""``python -m benchmarks``: the benchmark suite of issue 7 (see benchmarks/README.md).

Prints every figure with the machine's core count and writes the results as JSON
(``benchmarks/results/latest.json`` unless ``--out`` says otherwise).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    BenchSettings,
    fmt_bytes,
    fmt_rate,
    log,
    machine_info,
    scratch_settings,
    write_json,
)
from benchmarks.corpus import CORPUS_VERSION

HERE = Path(__file__).resolve().parent
FULL = BenchSettings()
QUICK = BenchSettings(
    fp_items=3_000,
    stage_items=10_000,
    e2e_items=3_000,
    scale_items=20_000,
    ingest_budget=25.0,
    e2e_budget=20.0,
    load_seconds=3.0,
    tail_items=2_000,
)


def _size(text: str) -> int:
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = 1
    if t.endswith("k"):
        mult, t = 1_000, t[:-1]
    elif t.endswith("m"):
        mult, t = 1_000_000, t[:-1]
    return int(float(t) * mult)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, BenchSettings]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes and budgets (about 2 minutes)")
    ap.add_argument("--only", default="1,2,3,4,5", help="figures to run, e.g. 1,3 (2 and 4 share one run)")
    ap.add_argument("--seed", type=int)
    ap.add_argument(
        "--sizes",
        help="STAGE,SCALE item counts for figures 2 and 4 (e.g. 100k,1M); the database of figure 5 has SCALE",
    )
    ap.add_argument("--fp-items", type=_size, help="figure 1 items")
    ap.add_argument("--e2e-items", type=_size, help="figure 3 items")
    ap.add_argument("--budget", type=float, help="seconds of pipeline ingest for figures 2 and 4")
    ap.add_argument("--e2e-budget", type=float, help="seconds of end-to-end updating for figure 3")
    ap.add_argument("--load-seconds", type=float, help="wrk seconds per endpoint for figure 5")
    ap.add_argument("--items-per-day", type=_size)
    ap.add_argument("--workdir", type=Path, default=HERE / ".work", help="scratch databases and caches")
    ap.add_argument("--rebuild-site-db", action="store_true", help="rebuild the cached database of figure 5")
    ap.add_argument(
        "--out",
        type=Path,
        help="where to write the JSON (default results/latest.json, results/quick.json with --quick)",
    )
    ap.add_argument("--show", type=Path, metavar="JSON", help="print the table of a saved run and exit")
    args = ap.parse_args(argv)
    bs = QUICK if args.quick else FULL
    if args.sizes:
        stage, scale = (_size(x) for x in args.sizes.split(","))
        bs = replace(bs, stage_items=stage, scale_items=scale)
    for name, field in (
        ("seed", "seed"),
        ("fp_items", "fp_items"),
        ("e2e_items", "e2e_items"),
        ("budget", "ingest_budget"),
        ("e2e_budget", "e2e_budget"),
        ("load_seconds", "load_seconds"),
        ("items_per_day", "items_per_day"),
    ):
        value = getattr(args, name)
        if value is not None:
            bs = replace(bs, **{field: value})
    bs = replace(bs, workdir=args.workdir)
    if args.out is None:
        args.out = HERE / "results" / ("quick.json" if args.quick else "latest.json")
    return args, bs


def _subprocess(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True)


def _site_dir(bs: BenchSettings) -> Path:
    return bs.workdir / f"site-s{bs.seed}-n{bs.scale_items}-d{bs.items_per_day}-v{CORPUS_VERSION}"


def _segment_rates(marks: list[list[float]], size: int) -> tuple[float | None, float | None, int]:
    """Items/s over the first ``size`` items and over the last ``size`` items ingested."""
    if len(marks) < 2 or marks[-1][0] <= 0:
        return None, None, 0
    total = int(marks[-1][0])
    size = min(size, max(1, total // 2))
    first = next(m for m in marks if m[0] >= size)
    start = next((m for m in reversed(marks) if m[0] <= total - size), marks[0])
    rate_first = first[0] / first[1] if first[1] else None
    span = marks[-1][1] - start[1]
    rate_last = (total - start[0]) / span if span else None
    return rate_first, rate_last, size


def run_ingest_figures(bs: BenchSettings, want_site: bool, rebuild_site: bool) -> dict[str, Any]:
    """Figures 2 and 4 from one ingest run; builds (or reuses) the database of figure 5."""
    site = _site_dir(bs)
    if rebuild_site and site.exists():
        shutil.rmtree(site)
    ready = site / "ready.json"
    # Figure 4's checkpoints are measured while the database is built (see
    # benchmarks/ingest.py); a cached database brings the numbers of its build.
    fill = not ready.exists()
    folder = site if fill else bs.workdir / "ingest"
    out = bs.workdir / "ingest.json"
    log(
        f"figs 2+4: ingesting up to {bs.scale_items:,} items (budget {bs.ingest_budget:.0f} s)"
        + (f"; the rest loaded for figure 5's database in {site}" if fill else "")
    )
    args = [
        "ingest",
        "--dir",
        str(folder),
        "--out",
        str(out),
        "--seed",
        str(bs.seed),
        "--items",
        str(bs.scale_items),
        "--stage-items",
        str(bs.stage_items),
        "--items-per-day",
        str(bs.items_per_day),
        "--budget",
        str(bs.ingest_budget),
        "--checkpoints",
        f"{bs.stage_items},{bs.scale_items}",
        "--tail",
        str(bs.tail_items),
    ]
    t0 = time.perf_counter()
    _subprocess("benchmarks.ingest", *[*args, "--fill"] if fill else args)
    ing: dict[str, Any] = json.loads(out.read_text())
    ing["subprocess_wall_seconds"] = time.perf_counter() - t0
    if fill:
        write_json(
            ready,
            {
                "built": time.time(),
                "build_seconds": ing["subprocess_wall_seconds"],
                "tails": ing["tails"],
                **ing["counts"],
            },
        )
    built: dict[str, Any] = json.loads(ready.read_text()) if ready.exists() else {}
    tails = ing["tails"] if fill else built.get("tails", [])
    # The start-up rebuild and the database size: on the largest database there is.
    scale_dir = site if ready.exists() else folder
    log(f"fig 4: rebuilding the index from {scale_dir} in a fresh process")
    rb_out = bs.workdir / "rebuild.json"
    _subprocess("benchmarks.ingest", "rebuild", "--dir", str(scale_dir), "--out", str(rb_out))
    rb: dict[str, Any] = json.loads(rb_out.read_text())
    db = scratch_settings(scale_dir).db_path
    db_bytes = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    with _open_counts(scale_dir) as counts:
        stored = counts
    n = ing["items_ingested"]
    stage_n = ing["stage_items"]
    stage_s = ing["stage_seconds"]
    stages = dict(ing["stages_s"])
    stages["other (pipeline code)"] = max(0.0, stage_s - sum(stages.values()))
    rate_first, rate_last, seg = _segment_rates(ing["marks"], bs.stage_items)
    fig2 = {
        "items_requested": bs.stage_items,
        "items": stage_n,
        "seconds": stage_s,
        "items_per_s": stage_n / stage_s if stage_s else None,
        "stage_shares": {k: v / stage_s for k, v in stages.items()} if stage_s else {},
        "stages_s": stages,
        "top_functions_s": ing["top_functions_s"],
        "complete": stage_n >= bs.stage_items,
        "goal_items_per_s": 5000.0,
    }
    fig2["ok"] = fig2["complete"] and (fig2["items_per_s"] or 0) >= 5000
    fig4 = {
        "items_requested": bs.scale_items,
        "items_clustered": n,
        "cluster_seconds": ing["ingest_seconds"],
        "items_per_s": n / ing["ingest_seconds"] if ing["ingest_seconds"] else None,
        "segment_items": seg,
        "rate_first_segment": rate_first,
        "rate_last_segment": rate_last,
        "last_to_first": rate_last / rate_first if rate_first and rate_last else None,
        "peak_rss": ing["peak_rss"],
        "indexed_items_after_ingest": ing["indexed_items"],
        "ingest_db_bytes": ing["db_bytes"],
        "scale_db": str(scale_dir),
        "scale_db_items": stored.get("items"),
        "scale_db_bytes": db_bytes,
        "db_bytes_per_item": db_bytes / stored["items"] if stored.get("items") else None,
        "tails": tails,
        "tails_from_cached_build": not fill,
        "tail_ratio": None,
        "rebuild_seconds": rb["rebuild_seconds"],
        "rebuild_indexed_items": rb["indexed_items"],
        "index_bytes_per_item": rb["bytes_per_indexed_item"],
        "rebuild_peak_rss": rb["peak_rss"],
        "items_loaded_not_clustered": ing["items_filled"],
        "load_seconds": ing["fill_seconds"],
        "complete": ing["complete"],
        "goals": {"peak_rss_lt": 4 * 2**30, "rebuild_s_lt": 60.0, "last_to_first_ge": 0.8},
    }
    by_checkpoint = {t["checkpoint"]: t for t in tails}
    small, large = by_checkpoint.get(bs.stage_items), by_checkpoint.get(bs.scale_items)
    if small and large and small["items_per_s"] and large["items_per_s"]:
        fig4["tail_ratio"] = large["items_per_s"] / small["items_per_s"]
    fig4["ok"] = (
        ing["peak_rss"] < 4 * 2**30 and rb["rebuild_seconds"] < 60 and (fig4["tail_ratio"] or 0) >= 0.8
    )
    return {"2": fig2, "4": fig4, "site_dir": str(scale_dir)}


class _open_counts:
    def __init__(self, folder: Path) -> None:
        from aggregator import Aggregator

        self.agg = Aggregator(scratch_settings(folder))

    def __enter__(self) -> dict[str, int]:
        return self.agg.counts()

    def __exit__(self, *exc: object) -> None:
        self.agg.close()


# -- the report ---------------------------------------------------------------------------------


def _yes(ok: bool | None) -> str:
    """The ok column: blank for a row that has no goal."""
    return "" if ok is None else "yes" if ok else "NO"


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    f = results["figures"]
    lines = [
        "",
        f"the aggregator: benchmarks ({results['mode']}, seed {results['settings']['seed']}) "
        f"on {m['cores']} cores ({m['cpu']}), Python {m['python']}",
        f"command: {results['command']}",
        *(
            [
                f"memory: a Python loop reading list slots and their objects takes "
                f"{m['sequential_ns']:.0f} ns a step in order, {m['random_ns']:.0f} ns in a random order"
            ]
            if "random_ns" in m
            else []
        ),
        "",
        f"{'fig':<4}{'figure':<46}{'measured':<48}{'goal':<30}ok",
    ]

    def row(fig: str, name: str, measured: str, goal: str, ok: bool | None) -> None:
        lines.append(f"{fig:<4}{name:<46}{measured:<48}{goal:<30}{_yes(ok)}")

    if "1" in f:
        r = f["1"]
        row(
            "1",
            f"signatures/s, ours vs datasketch ({r['num_perm']} perm)",
            f"{fmt_rate(r['ours_per_s'])} vs {fmt_rate(r['datasketch_per_s'])} = {r['ratio_vs_datasketch']:.1f}x",
            ">= 10x, identical",
            r["ok"],
        )
        row(
            "",
            "  same hash (xxh3) datasketch; identical sigs",
            f"{fmt_rate(r['datasketch_xxh3_per_s'])} = {r['ratio_vs_datasketch_xxh3']:.1f}x; "
            f"{r['identical']}/{r['compared']}",
            "",
            r["identical"] == r["compared"],
        )
    if "2" in f:
        r = f["2"]
        done = "" if r["complete"] else f" (budget: {r['items']:,} of {r['items_requested']:,})"
        row(
            "2",
            "normalize+fingerprint+cluster+store, items/s",
            f"{fmt_rate(r['items_per_s'])}{done}",
            ">= 5,000 items/s on 100k",
            r["ok"],
        )
    if "3" in f:
        r = f["3"]
        done = "" if r["complete"] else f" (budget: {r['items']:,} of {r['items_requested']:,})"
        row(
            "3",
            "end to end from HTTP, items/s",
            f"{fmt_rate(r['items_per_s'])} on {r['cores_used']} cores{done}",
            ">= 1,000 items/s, 2 cores",
            (r["items_per_s"] or 0) >= 1000,
        )
        row(
            "",
            "  end to end / feedparser alone, same bytes",
            f"{r['ratio_to_feedparser']:.2f}x (feedparser {fmt_rate(r['feedparser_items_per_s'])} items/s)",
            "<= 2x",
            (r["ratio_to_feedparser"] or 99) <= 2,
        )
    if "4" in f:
        r = f["4"]
        loaded = r["items_loaded_not_clustered"]
        row(
            "4",
            f"{r['items_requested']:,} items: pipeline from empty, items/s",
            f"{fmt_rate(r['items_per_s'])} over {r['items_clustered']:,}"
            + (f" (then {loaded:,} loaded)" if loaded else ""),
            "",
            None,
        )
        ratio = r["last_to_first"]
        row(
            "",
            f"  last/first {r['segment_items']:,}-item segment",
            f"{fmt_rate(r['rate_last_segment'])} / {fmt_rate(r['rate_first_segment'])} = "
            + (f"{ratio:.2f}" if ratio else "n/a"),
            "(from empty: the window fills)",
            None,
        )
        tails = r.get("tails", [])
        for t in tails:
            row(
                "",
                f"  items/s after a restart at {t['stored_before']:,} stored",
                f"{fmt_rate(t['items_per_s'])} over {t['items']:,} (rebuild {t['rebuild_seconds']:.1f} s)",
                "",
                None,
            )
        if tails:
            ratio = r.get("tail_ratio")
            row(
                "",
                "  at the largest / at the smallest size"
                + (" (cached build)" if r["tails_from_cached_build"] else ""),
                f"{ratio:.2f}" if ratio else "n/a",
                ">= 0.8 (1M vs 100k)",
                (ratio or 0) >= 0.8,
            )
        row(
            "",
            "  peak resident memory (ingest)",
            fmt_bytes(r["peak_rss"]),
            "< 4 GiB",
            r["peak_rss"] < 4 * 2**30,
        )
        row(
            "",
            f"  rebuild index at start-up ({r['scale_db_items']:,} stored)",
            f"{r['rebuild_seconds']:.1f} s for {r['rebuild_indexed_items']:,} indexed",
            "< 60 s",
            r["rebuild_seconds"] < 60,
        )
        row(
            "",
            "  memory per indexed item",
            fmt_bytes(r["index_bytes_per_item"]),
            "",
            None if r["index_bytes_per_item"] is None else True,
        )
        row(
            "",
            "  database size",
            f"{fmt_bytes(r['scale_db_bytes'])} ({fmt_bytes(r['db_bytes_per_item'])}/item)",
            "",
            True,
        )
    if "5" in f and "endpoints" in f["5"]:
        r = f["5"]
        stored = r.get("stored", {})
        lines.append(
            f"5   site under load: {r.get('server', 'waitress')}, wrk -c{results['settings']['connections']}, "
            f"{stored.get('items', 0):,} items stored"
        )
        for name, e in r["endpoints"].items():
            goal = "p95 < 50 ms" + (", >= 500 req/s" if name in ("front page", "/feed.rss") else "")
            ok = e["p95_ms"] < 50 and e["unexpected"] == 0
            if name in ("front page", "/feed.rss"):
                ok = ok and e["rps"] >= 500
            row(
                "",
                f"  {name}",
                f"{fmt_rate(e['rps'])} req/s, p50/95/99 {e['p50_ms']:.0f}/{e['p95_ms']:.0f}/{e['p99_ms']:.0f} ms",
                goal,
                ok,
            )
    elif "5" in f:
        lines.append(f"5   site under load: {f['5'].get('error')}")
    # Details: where the time goes.
    if "2" in f:
        r = f["2"]
        lines += ["", f"fig 2: share of each stage over {r['items']:,} items ({r['seconds']:.1f} s)"]
        for k, v in sorted(r["stage_shares"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:<28}{v * 100:5.1f} %   {r['stages_s'][k]:8.2f} s")
        lines.append("  top functions (outermost call, seconds):")
        for name, s in r["top_functions_s"][:8]:
            lines.append(f"    {name:<56}{s:8.2f}")
    if "3" in f:
        r = f["3"]
        lines += ["", f"fig 3: where the end-to-end time goes ({r['items']:,} items, {r['seconds']:.1f} s)"]
        for k, v in sorted(r["stages_s"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:<40}{v:8.2f} s")
        if "cpu_seconds" in r:
            cpu = ", ".join(f"{k} {v:.1f} s" for k, v in r["cpu_seconds"].items())
            lines.append(
                f"  CPU: {cpu} (parse, normalize, fingerprint in the worker processes, untimed above)"
            )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, bs = parse_args(argv)
    if args.show:
        print(report(json.loads(args.show.read_text(encoding="utf-8"))))
        return 0
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    bs.workdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    log(
        f"{machine['cores']} cores; mode {'quick' if args.quick else 'full'}; figures {','.join(sorted(only))}"
    )
    started = time.time()
    figures: dict[str, Any] = {}
    settings = scratch_settings(bs.workdir / "settings")
    if "1" in only:
        from benchmarks import fig1_fingerprint

        figures["1"] = fig1_fingerprint.run(bs.seed, bs.fp_items, settings)
    if "3" in only:
        from benchmarks import fig3_end_to_end

        figures["3"] = fig3_end_to_end.run(bs.seed, bs.e2e_items, bs.items_per_day, bs.e2e_budget, bs.workdir)
    site_dir: Path | None = None
    if only & {"2", "4", "5"}:
        site = _site_dir(bs)
        if only & {"2", "4"} or not (site / "ready.json").exists():
            ingest = run_ingest_figures(bs, want_site="5" in only, rebuild_site=args.rebuild_site_db)
            figures.update({k: v for k, v in ingest.items() if k in only})
            site_dir = Path(ingest["site_dir"])
        else:
            site_dir = site
    if "5" in only and site_dir is not None:
        from benchmarks import fig5_site

        figures["5"] = fig5_site.run(site_dir, bs.load_seconds, bs.connections)
    results = {
        "command": command.strip(),
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(bs).items()},
        "figures": figures,
    }
    write_json(args.out, results)
    print(report(results))
    log(f"done in {results['seconds']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
