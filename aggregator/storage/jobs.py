"""Background jobs (previews, applying settings, reclustering): state and progress."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

__all__ = ["Job", "changing_running", "create", "get", "interrupt_stale", "latest", "running_previews", "update"]


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


def create(db: Database, kind: str, params: dict[str, Any], author: str, now: float) -> int:
    cur = db.execute(
        "INSERT INTO jobs (kind, state, params, author, created_at, updated_at) VALUES (?, 'queued', ?, ?, ?, ?)",
        [kind, json.dumps(params), author, now, now],
    )
    return int(cur.lastrowid or 0)


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
