"""Exports as rows in the tenancy database (component ``exports``), so their state, their files
and their expiry survive restarts and every node sees them.

States: ``queued`` → ``running`` → ``done`` (the MP4 and its signed manifest are on disk) or
``failed`` / ``cancelled`` (nothing on disk); ``done`` → ``deleted`` when retention runs out
(the files are removed, the row stays as the record of what was made). A gateway that stops
while exports are queued or running marks them ``failed`` when it starts again
(:meth:`ExportStore.fail_unfinished`): nothing half-made is ever offered.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.recording.index import from_us, to_us
from tenants.db import Database

__all__ = ["STOPPED", "UNFINISHED", "ExportJob", "ExportState", "ExportStore"]

MIGRATIONS: list[str] = [
    """
    CREATE TABLE exports (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        camera TEXT NOT NULL,
        tenant TEXT NOT NULL,
        principal TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        end_us BIGINT NOT NULL,
        purpose TEXT,
        incident_ref TEXT,
        sar_id TEXT,
        state TEXT NOT NULL,
        error TEXT,
        created_us BIGINT NOT NULL,
        finished_us BIGINT,
        expires_us BIGINT NOT NULL,
        file TEXT,
        sha256 TEXT,
        size BIGINT,
        masks TEXT NOT NULL,
        reencoded INTEGER NOT NULL,
        node TEXT NOT NULL
    );
    CREATE INDEX exports_tenant ON exports (tenant, created_us);
    CREATE INDEX exports_camera ON exports (camera, start_us);
    CREATE INDEX exports_expiry ON exports (state, expires_us)
    """,
    # A job runs on one node, but is asked about and cancelled through any: the running node
    # writes its progress here and reads cancel requests made elsewhere.
    """
    ALTER TABLE exports ADD COLUMN progress REAL NOT NULL DEFAULT 0;
    ALTER TABLE exports ADD COLUMN cancel_requested_us BIGINT
    """,
]


class ExportState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELETED = "deleted"


UNFINISHED = (ExportState.QUEUED, ExportState.RUNNING)
STOPPED = "the gateway stopped before the export finished"


@dataclass(frozen=True)
class ExportJob:
    id: str
    kind: str  # "export" or "sar_copy"
    camera: str
    tenant: str
    principal: str
    start: datetime
    end: datetime
    purpose: str | None
    incident_ref: str | None
    state: ExportState
    created: datetime
    expires: datetime
    masks: tuple[str, ...] = ()  # ids of the zones burnt in
    reencoded: bool = False
    sar_id: str | None = None
    error: str | None = None
    finished: datetime | None = None
    file: str | None = None  # the MP4's name under export.dir; the manifest is beside it
    sha256: str | None = None
    size: int | None = None
    node: str = ""
    # Written by the running node about once a second (exact on that node, from memory).
    progress: float = field(default=0.0, compare=False)

    def with_(self, **changes: Any) -> ExportJob:
        return replace(self, **changes)


_COLS = (
    "id, kind, camera, tenant, principal, start_us, end_us, purpose, incident_ref, sar_id,"
    " state, error, created_us, finished_us, expires_us, file, sha256, size, masks,"
    " reencoded, node"
)
_READ = _COLS + ", progress"


def _row(j: ExportJob) -> tuple[Any, ...]:
    return (
        j.id, j.kind, j.camera, j.tenant, j.principal, to_us(j.start), to_us(j.end),
        j.purpose, j.incident_ref, j.sar_id, j.state.value, j.error, to_us(j.created),
        to_us(j.finished) if j.finished else None, to_us(j.expires), j.file, j.sha256,
        j.size, json.dumps(list(j.masks)), int(j.reencoded), j.node,
    )  # fmt: skip


def _job(r: Sequence[Any]) -> ExportJob:
    return ExportJob(
        id=r[0], kind=r[1], camera=r[2], tenant=r[3], principal=r[4], start=from_us(r[5]),
        end=from_us(r[6]), purpose=r[7], incident_ref=r[8], sar_id=r[9],
        state=ExportState(r[10]), error=r[11], created=from_us(r[12]),
        finished=from_us(r[13]) if r[13] is not None else None, expires=from_us(r[14]),
        file=r[15], sha256=r[16], size=int(r[17]) if r[17] is not None else None,
        masks=tuple(json.loads(r[18])), reencoded=bool(r[19]), node=r[20],
        progress=float(r[21]) if len(r) > 21 else 0.0,
    )  # fmt: skip


class ExportStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.migrate("exports", MIGRATIONS)

    def add(self, job: ExportJob) -> None:
        marks = ", ".join("?" for _ in range(21))
        self.db.execute(f"INSERT INTO exports ({_COLS}) VALUES ({marks})", _row(job))

    def update(self, job: ExportJob, *, only_from: Sequence[ExportState] = ()) -> bool:
        """Write the job's state; with ``only_from``, only if its stored state is one of those
        (so a cancel and a finish never both win)."""
        sql = (
            "UPDATE exports SET state = ?, error = ?, finished_us = ?, expires_us = ?,"
            " file = ?, sha256 = ?, size = ?, masks = ?, reencoded = ? WHERE id = ?"
        )
        params: list[Any] = [
            job.state.value, job.error, to_us(job.finished) if job.finished else None,
            to_us(job.expires), job.file, job.sha256, job.size, json.dumps(list(job.masks)),
            int(job.reencoded), job.id,
        ]  # fmt: skip
        if only_from:
            sql += f" AND state IN ({', '.join('?' for _ in only_from)})"
            params.extend(s.value for s in only_from)
        return self.db.execute(sql, params) > 0

    def get(self, export_id: str) -> ExportJob | None:
        row = self.db.query_one(f"SELECT {_READ} FROM exports WHERE id = ?", (export_id,))
        return _job(row) if row else None

    def find(
        self,
        *,
        tenant: str | None = None,
        camera: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        sar_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[ExportJob]:
        """Newest first; ``start``/``end``: exports whose range overlaps the window."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("tenant", tenant), ("camera", camera), ("sar_id", sar_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if end is not None:
            clauses.append("start_us < ?")
            params.append(to_us(end))
        if start is not None:
            clauses.append("end_us > ?")
            params.append(to_us(start))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.db.query(
            f"SELECT {_READ} FROM exports{where} ORDER BY created_us DESC, id LIMIT ? OFFSET ?",
            (*params, max(0, limit), max(0, offset)),
        )
        return [_job(r) for r in rows]

    def report(self, progress: dict[str, float]) -> set[str]:
        """Store the progress of this node's running jobs; the ids among them whose cancel was
        asked for on another node."""
        asked: set[str] = set()
        with self.db.transaction():
            for export_id, fraction in progress.items():
                self.db.execute(
                    "UPDATE exports SET progress = ? WHERE id = ? AND state = ?",
                    (fraction, export_id, ExportState.RUNNING.value),
                )
                row = self.db.query_one(
                    "SELECT cancel_requested_us FROM exports WHERE id = ?", (export_id,)
                )
                if row is not None and row[0] is not None:
                    asked.add(export_id)
        return asked

    def request_cancel(self, export_id: str, now: datetime) -> bool:
        """Ask the node running an unfinished job to cancel it; False if it is not unfinished."""
        return (
            self.db.execute(
                "UPDATE exports SET cancel_requested_us = ? WHERE id = ? AND state IN (?, ?)",
                (to_us(now), export_id, *(s.value for s in UNFINISHED)),
            )
            > 0
        )

    def pending(self, tenant: str) -> int:
        row = self.db.query_one(
            "SELECT COUNT(*) FROM exports WHERE tenant = ? AND state IN (?, ?)",
            (tenant, *(s.value for s in UNFINISHED)),
        )
        return int(row[0]) if row else 0

    def expired(self, now: datetime, limit: int = 500) -> list[ExportJob]:
        rows = self.db.query(
            f"SELECT {_READ} FROM exports WHERE state = ? AND expires_us <= ?"
            " ORDER BY expires_us, id LIMIT ?",
            (ExportState.DONE.value, to_us(now), limit),
        )
        return [_job(r) for r in rows]

    def fail_unfinished(self, node: str, now: datetime) -> list[str]:
        """This node's exports that were queued or running when it stopped: failed (their
        ids, so their files, if any, can be removed)."""
        unfinished = (node, *(s.value for s in UNFINISHED))
        with self.db.transaction():
            ids = [
                str(r[0])
                for r in self.db.query(
                    "SELECT id FROM exports WHERE node = ? AND state IN (?, ?)", unfinished
                )
            ]
            self.db.execute(
                "UPDATE exports SET state = ?, error = ?, finished_us = ? WHERE node = ?"
                " AND state IN (?, ?)",
                (ExportState.FAILED.value, STOPPED, to_us(now), *unfinished),
            )
        return ids
