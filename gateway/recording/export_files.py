"""Where a node finds exports' files: ``export.dir``, which the nodes of a cluster share (an
export made on one node is downloaded from any), so a node touches only what is its own or
finished, and says so plainly when a file it should see is not there.

Blocking (disk, and the store's database): call from a worker thread."""

from __future__ import annotations

from pathlib import Path

from gateway.recording.export_store import UNFINISHED, ExportJob, ExportStore

__all__ = ["files_of", "remove_files", "remove_parts", "unreachable"]


def files_of(directory: Path, job: ExportJob) -> tuple[Path, Path]:
    """(the MP4, its signed manifest) of a finished export."""
    return directory / (job.file or f"{job.id}.mp4"), directory / f"{job.id}.manifest.json"


def unreachable(directory: Path, job: ExportJob) -> str | None:
    """Why a finished export's files cannot be read on this node (None: they can)."""
    if all(p.is_file() for p in files_of(directory, job)):
        return None
    return (
        f"export {job.id} was made on node {job.node} and its files are not reachable from"
        " this node: export.dir must be storage every node shares"
    )


def remove_files(directory: Path, export_id: str) -> None:
    for p in (directory / f"{export_id}.mp4", directory / f"{export_id}.manifest.json"):
        p.unlink(missing_ok=True)


def remove_parts(directory: Path, store: ExportStore) -> None:
    """Half-written files no running export will finish; another node's running export (on a
    shared export.dir) keeps its own."""
    for part in directory.glob("*.part"):
        job = store.get(part.name.partition(".")[0])
        if job is None or job.state not in UNFINISHED:
            part.unlink(missing_ok=True)
