"""Figure 5: the site under load, served as ``aggregator serve`` serves it, driven by wrk.

The site (``web.create_app`` on the benchmark database, served by
``aggregator.runner.serve_web``: gunicorn, one worker process per core with 4
threads each) runs in its own processes on 127.0.0.1;
wrk (a separate process) keeps 8 connections busy on one endpoint at a time and
reports requests per second and latency percentiles through ``wrk/paths.lua``.

Run ``python -m benchmarks.fig5_site serve --dir D --port P`` to serve a
benchmark database by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from aggregator import Aggregator
from benchmarks.common import ROOT, log, scratch_settings

LUA = Path(__file__).resolve().parent / "wrk" / "paths.lua"
WRK = shutil.which("wrk") or "/usr/bin/wrk"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the site did not answer at {url}")


def serve(folder: Path, port: int) -> None:
    from aggregator.runner import serve_web

    settings = scratch_settings(folder)
    serve_web(settings, settings.db_path, "127.0.0.1", port)


def server_label() -> str:
    from aggregator.runner import WEB_THREADS, web_workers

    return f"gunicorn {web_workers()} x {WEB_THREADS} threads"


def _wrk(
    url: str, paths: list[str], header: str, seconds: float, connections: int, workdir: Path
) -> dict[str, Any]:
    listing = workdir / f"paths-{abs(hash((tuple(paths), header)))}.txt"
    listing.write_text("\n".join(paths) + "\n", encoding="utf-8")
    cmd = [
        WRK,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(listing),
        header,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            data: dict[str, Any] = json.loads(line[len("BENCH-JSON ") :])
            return data
    raise RuntimeError(f"wrk gave no result: {out.stdout}\n{out.stderr}")


def _endpoints(base: str, folder: Path) -> list[tuple[str, list[str], str, int]]:
    """(name, paths, extra header, expected status) of each endpoint measured."""
    settings = scratch_settings(folder)
    with Aggregator(settings, migrate=False) as agg:
        latest = agg.clusters(limit=200, min_outlets=2)
        stories = [f"/story/{c.id}" for c in latest]
        words: list[str] = []
        for c in latest[:40]:
            title = c.canonical.title.split()
            if len(title) >= 2:
                words.append(" ".join(title[:2]))
    searches = ["/search?q=" + httpx.QueryParams({"q": w})["q"].replace(" ", "+") for w in words[:20]]
    etag = httpx.get(base + "/feed.rss", timeout=30).headers.get("etag", "")
    return [
        ("front page", ["/"], "", 200),
        ("story page", stories or ["/story/1"], "", 200),
        ("/feed.rss", ["/feed.rss"], "", 200),
        ("/feed.rss 304", ["/feed.rss"], f"If-None-Match: {etag}", 304),
        ("search", searches or ["/search?q=news"], "", 200),
    ]


def run(folder: Path, seconds: float, connections: int) -> dict[str, Any]:
    if not Path(WRK).exists():
        return {"error": "wrk is not installed (make system-deps)"}
    # New migrations first (at 1M items those of one release took 50 s), not counted
    # against the server's start.
    started = time.perf_counter()
    Aggregator(scratch_settings(folder)).close()
    migrated = time.perf_counter() - started
    if migrated > 5:
        log(f"fig 5: opening the database (migrations) took {migrated:.1f} s")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.fig5_site", "serve", "--dir", str(folder), "--port", str(port)],
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"endpoints": {}, "server": server_label()}
    try:
        _wait_for(base + "/healthz")
        counts = httpx.get(base + "/healthz", timeout=30).json()
        results["stored"] = {k: counts.get(k) for k in ("feeds", "items", "clusters")}
        endpoints = _endpoints(base, folder)
        for name, paths, header, expect in endpoints:
            # Warm up: first requests of a path open caches and compile templates.
            for p in paths[:20]:
                httpx.get(base + p, headers=dict([header.split(": ", 1)]) if header else None, timeout=60)
            log(f"fig 5: {name}: wrk -c{connections} for {seconds:.0f} s ({len(paths)} paths)")
            r = _wrk(base, paths, header, seconds, connections, folder)
            secs = r["duration_us"] / 1e6
            lat = r["latency_us"]
            ok = r["statuses"].get(str(expect), 0)
            results["endpoints"][name] = {
                "paths": len(paths),
                "requests": r["requests"],
                "rps": r["requests"] / secs if secs else 0.0,
                "p50_ms": lat["p50"] / 1000,
                "p95_ms": lat["p95"] / 1000,
                "p99_ms": lat["p99"] / 1000,
                "max_ms": lat["max"] / 1000,
                "expected_status": expect,
                "unexpected": r["requests"] - ok if ok else r["requests"],
                "statuses": r["statuses"],
                "errors": r["errors"],
            }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    eps = results["endpoints"]
    results["ok"] = (
        bool(eps)
        and all(e["p95_ms"] < 50 and e["unexpected"] == 0 for e in eps.values())
        and all(eps.get(k, {}).get("rps", 0) >= 500 for k in ("front page", "/feed.rss"))
    )
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("command", choices=("serve", "run"))
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args(argv)
    if args.command == "serve":
        serve(args.dir, args.port)
    else:
        print(json.dumps(run(args.dir, args.seconds, args.connections), indent=2))


if __name__ == "__main__":
    main()
