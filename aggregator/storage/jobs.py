"""Background jobs (previews, applying settings, reclustering): state and progress."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

__all__ = [
    "Job",
    "changing_running",
    "create",
    "get",
    "interrupt",
    "interrupt_stale",
    "latest",
    "running_previews",
    "unfinished_owners",
    "update",
]


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: str  # queued, running, done, failed, interrupted
    params: dict[str, Any]
    done: int
    total: int
    message: str
    result: Any
    author: str
    created_at: float
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "interrupted")

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else (100 if self.finished else 0)


_COLUMNS = "id, kind, state, params, done, total, message, result, author, created_at, updated_at"


def _job(r: Any) -> Job:
    return Job(
        r[0],
        r[1],
        r[2],
        json.loads(r[3]),
        r[4],
        r[5],
        r[6],
        json.loads(r[7]) if r[7] else None,
        r[8],
        r[9],
        r[10],
    )


def create(db: Database, kind: str, params: dict[str, Any], author: str, now: float, owner: str = "") -> int:
    """A queued job; ``owner``: the process that runs it (``host:pid``)."""
    cur = db.execute(
        "INSERT INTO jobs (kind, state, params, author, created_at, updated_at, owner) "
        "VALUES (?, 'queued', ?, ?, ?, ?, ?)",
        [kind, json.dumps(params), author, now, now, owner or None],
    )
    return int(cur.lastrowid or 0)


def unfinished_owners(db: Database) -> list[tuple[int, str]]:
    """(job id, owner) of the queued and running jobs whose process is known."""
    rows = db.execute(
        "SELECT id, owner FROM jobs WHERE state IN ('queued', 'running') AND owner IS NOT NULL"
    ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


def interrupt(db: Database, job_ids: Sequence[int], now: float, message: str) -> None:
    db.conn.executemany(
        "UPDATE jobs SET state = 'interrupted', message = ?, updated_at = ? WHERE id = ? AND state IN ('queued', 'running')",
        [(message, now, job_id) for job_id in job_ids],
    )


def update(db: Database, job_id: int, now: float, **fields: Any) -> None:
    allowed = {"state", "done", "total", "message", "result"}
    sets, params = [], []
    for k, v in fields.items():
        if k not in allowed:
            raise ValueError(f"not a job column: {k}")
        sets.append(f"{k} = ?")
        params.append(json.dumps(v) if k == "result" else v)
    db.execute(f"UPDATE jobs SET {', '.join(sets)}, updated_at = ? WHERE id = ?", [*params, now, job_id])


def get(db: Database, job_id: int) -> Job | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", [job_id]).fetchone()
    return _job(row) if row else None


def latest(db: Database, kind: str | None = None, limit: int = 10) -> list[Job]:
    if kind:
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT ?", [kind, limit]
        )
    else:
        rows = db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?", [limit])
    return [_job(r) for r in rows]


def changing_running(db: Database) -> bool:
    """Whether a job that changes clusters (anything but a preview) is queued or running."""
    row = db.execute(
        "SELECT 1 FROM jobs WHERE kind != 'preview' AND state IN ('queued', 'running') LIMIT 1"
    ).fetchone()
    return row is not None


def running_previews(db: Database) -> list[Job]:
    """Previews queued or running, oldest first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE kind = 'preview' AND state IN ('queued', 'running') ORDER BY id"
    ).fetchall()
    return [_job(r) for r in rows]


def interrupt_stale(db: Database, older_than: float, now: float) -> int:
    """Jobs left running by a process that died: mark them interrupted."""
    cur = db.execute(
        "UPDATE jobs SET state = 'interrupted', message = 'the process running it stopped', updated_at = ? "
        "WHERE state IN ('queued', 'running') AND updated_at < ?",
        [now, older_than],
    )
    return int(cur.rowcount)
