"""Shared helpers: settings on a scratch folder, timing, memory, stage timers, results."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import platform
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aggregator.settings import Settings, load_settings

__all__ = [
    "BenchSettings",
    "StageTimer",
    "machine_info",
    "memory_latency",
    "peak_rss_bytes",
    "rss_bytes",
    "scratch_settings",
]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchSettings:
    """The sizes and time budgets of one run of the suite."""

    seed: int = 7
    fp_items: int = 10_000  # figure 1
    stage_items: int = 100_000  # figure 2: throughput measured over the first this many items
    e2e_items: int = 20_000  # figure 3
    scale_items: int = 1_000_000  # figure 4 (and the database of figure 5)
    items_per_day: int = 10_000
    ingest_budget: float = 240.0  # seconds of pipeline ingest (figures 2 and 4) before giving up
    e2e_budget: float = 120.0  # seconds of end-to-end updating (figure 3)
    load_seconds: float = 8.0  # wrk duration per endpoint (figure 5)
    tail_items: int = 10_000  # figure 4: items ingested after a restart at each checkpoint
    connections: int = 8
    workdir: Path = field(default_factory=lambda: Path("/tmp/aggregator-bench"))


def scratch_settings(folder: Path, **overrides: Any) -> Settings:
    """Default settings with the database in ``folder``, no demo feeds, loopback feeds allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.toml"
    cfg.write_text(
        '[storage]\ndb_path = "agg.db"\n[feeds]\nopml = ""\nallow_private_addresses = true\n',
        encoding="utf-8",
    )
    return load_settings(cfg, overrides or None)


def memory_latency(n: int = 2_000_000, seed: int = 1) -> dict[str, float]:
    """Nanoseconds per step of a Python loop reading ``n`` list slots and their int
    objects (about 90 MB, beyond any cache) in order and in a random order.

    The pipeline's per-item work is mostly such reads of objects scattered over a
    large heap (dictionary slots, centroid entries, LSH buckets), so the random figure
    says how fast this machine can run it; the sequential one is the same loop when
    every read is prefetched.  Both are printed with the figures.
    """
    values = list(range(n, 2 * n))  # ints outside the small-int cache: one object each
    order = list(range(n))

    def walk(keys: list[int]) -> float:
        t = time.perf_counter()
        total = 0
        for k in keys:
            total += values[k]
        return (time.perf_counter() - t) / len(keys) * 1e9

    sequential = min(walk(order) for _ in range(2))
    random.Random(seed).shuffle(order)
    scattered = min(walk(order) for _ in range(2))
    return {"sequential_ns": round(sequential, 1), "random_ns": round(scattered, 1)}


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **memory_latency(),
    }


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes() -> int:
    """Resident memory of this process now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (VmHWM), falling back to getrusage."""
    peak = _status_kib("VmHWM") * 1024
    return peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Start a new peak (Linux 4.0+: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# -- stage timing -----------------------------------------------------------------------------


class StageTimer:
    """Time the stages of the pipeline by wrapping the functions it calls.

    Every public function of the given modules (and every public method of the
    classes they define), and the names other modules imported from them, are
    wrapped.  Each call is charged its *own* time (minus the wrapped calls it
    makes) to the stage of its module, so the cluster engine's call of
    ``fingerprint.features`` counts as fingerprinting.  Time outside every wrapped
    call is the caller's own ("other").  Only calls on the thread that entered the
    timer are counted; each costs about 1 us more while wrapped.
    """

    def __init__(self, stages: dict[str, list[ModuleType]], also_patch: list[ModuleType]) -> None:
        self.stages = stages
        self.also_patch = also_patch
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.by_function: dict[str, float] = {}
        self._children: list[float] = []  # per open call: time spent in wrapped calls it made
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, fn: Callable[..., Any], stage: str, name: str) -> Callable[..., Any]:
        timer = self
        perf = time.perf_counter
        owner_thread = threading.get_ident()
        get_ident = threading.get_ident
        children = self._children
        seconds = self.seconds
        calls = self.calls
        by_function = self.by_function

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if get_ident() != owner_thread or timer._paused:
                return fn(*args, **kwargs)
            children.append(0.0)
            t0 = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = perf() - t0
                own = dt - children.pop()
                if children:
                    children[-1] += dt
                seconds[stage] = seconds.get(stage, 0.0) + own
                calls[stage] = calls.get(stage, 0) + 1
                by_function[name] = by_function.get(name, 0.0) + own

        wrapper.__bench_wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    _paused = False

    def pause(self) -> None:
        """Stop counting (the wrappers stay in place until the timer exits)."""
        self._paused = True

    def resume(self) -> None:
        """Count again after :meth:`pause`."""
        self._paused = False

    def _patch(self, owner: Any, attr: str, new: Any) -> None:
        self._undo.append((owner, attr, owner.__dict__[attr]))
        setattr(owner, attr, new)

    def __enter__(self) -> StageTimer:
        originals: dict[int, tuple[str, str]] = {}
        for stage, modules in self.stages.items():
            for mod in modules:
                for attr, obj in list(vars(mod).items()):
                    if getattr(obj, "__module__", None) != mod.__name__:
                        continue
                    if inspect.isfunction(obj) and not attr.startswith("_"):
                        name = f"{mod.__name__}.{attr}"
                        originals[id(obj)] = (stage, name)
                        self._patch(mod, attr, self._wrap(obj, stage, name))
                    elif inspect.isclass(obj):
                        for m_attr, m_obj in list(vars(obj).items()):
                            if inspect.isfunction(m_obj) and (
                                not m_attr.startswith("_") or m_attr in ("__init__", "__len__")
                            ):
                                name = f"{mod.__name__}.{attr}.{m_attr}"
                                self._patch(obj, m_attr, self._wrap(m_obj, stage, name))
        for mod in self.also_patch:
            for attr, obj in list(vars(mod).items()):
                if inspect.isfunction(obj) and id(obj) in originals:
                    stage, name = originals[id(obj)]
                    self._patch(mod, attr, self._wrap(obj, stage, name))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, old in reversed(self._undo):
            setattr(owner, attr, old)
        self._undo.clear()

    def top_functions(self, n: int = 12) -> list[tuple[str, float]]:
        return sorted(self.by_function.items(), key=lambda kv: -kv[1])[:n]


def pipeline_stage_timer() -> StageTimer:
    """A :class:`StageTimer` for :meth:`aggregator.pipeline.Pipeline.ingest` and its callers."""
    import aggregator.pipeline

    def modules(*names: str) -> list[ModuleType]:
        found = []
        for name in names:
            try:
                found.append(importlib.import_module(name))
            except ImportError:
                pass  # the code moved on: a module that is gone is simply not timed
        return found

    storage = [f"aggregator.storage.{m}" for m in ("clusters", "feeds", "items", "meta", "rules", "search")]
    stages = {
        "parse": modules("aggregator.parse"),
        "normalize": modules("aggregator.normalize"),
        "fingerprint": modules("aggregator.fingerprint"),
        "cluster": modules("aggregator.cluster", "aggregator.replay"),
        "storage": modules(*storage, "aggregator.canonical"),
    }
    users = modules("aggregator.pipeline", "aggregator.cluster", "aggregator.replay", "aggregator.core")
    return StageTimer(stages, also_patch=[aggregator.pipeline, *users])


def item_features(settings: Settings, title: str, text: str) -> Any:
    """The aggregator's own features of an item, under the clustering settings."""
    from aggregator.fingerprint import features_for

    return features_for(settings.cluster, title, text)


# -- output -------------------------------------------------------------------------------------


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024
    return f"{n:,.1f} GiB"
