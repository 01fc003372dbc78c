"""Where the processes of one machine keep their metrics: one directory, named by PROMETHEUS_MULTIPROC_DIR.

prometheus_client's multiprocess mode: each process writes its counters, histograms and
gauges to small memory-mapped files of its own (``<type>_<pid>.db``) in the directory, and
whichever web process is scraped reads them all, so one scrape gives the machine's totals.

Files of processes that are gone are cleaned here, cheaply (a directory listing and one
liveness check per pid): their open-stream gauges are removed (``mark_process_dead``) when
a process exits, and by a sweep when a process starts and on every scrape, so a process
killed with SIGKILL stops counting too. At a process start, the counters and histograms
of dead processes are also folded into one ``*_archive.db`` file per type, so they keep
counting but the number of files a scrape reads stays that of the live processes.

This module imports prometheus_client only inside its functions: ``join`` must run before
anything imports it.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
_FILE = re.compile(r"^(?P<kind>counter|histogram|gauge_\w+?)_(?P<pid>\d+)\.db$")
_LOCK = ".lock"


def directory() -> Path | None:
    """Return this machine's metrics directory, or None when this process keeps metrics in memory."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def ensure_directory() -> None:
    """Create PROMETHEUS_MULTIPROC_DIR when it is named but missing (prometheus_client would not)."""
    path = directory()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)


def join(default: Path, *, fresh: bool = False) -> Path:
    """Keep this process's metrics (and those of the processes it starts) in the machine's directory.

    The directory is PROMETHEUS_MULTIPROC_DIR if set, else ``default``, which the variable
    then names for the children. ``fresh`` (``run``, ``run-cluster``: everything of the
    machine starts now) empties it of an earlier run's files. Files of dead processes are
    cleaned, and this process's open-stream gauges are removed when it exits. Call it
    before anything imports prometheus_client.
    """
    path = directory() or Path(default)
    os.environ[ENV] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    if fresh:
        for old in path.glob("*.db"):
            old.unlink(missing_ok=True)
    # Gauges under this pid are a dead process's whose pid came round again: they would be
    # this process's starting values. (Its counters may go on where that one's stopped.)
    leave(os.getpid(), path)
    sweep(path, compact=True)
    atexit.register(leave)
    return path


def leave(pid: int | None = None, path: Path | None = None) -> None:
    """Remove the open-stream gauges of ``pid`` (default: this process), which has ended or is ending."""
    path = path or directory()
    if path is not None and path.is_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), str(path))


def sweep(path: Path, compact: bool = False) -> list[int]:
    """Clean the files of processes no longer alive; return their pids.

    Their open-stream gauges go. With ``compact``, their counters and histograms are
    added into the archive files and their own files removed.
    """
    by_pid: dict[int, list[Path]] = {}
    for entry in os.scandir(path):
        match = _FILE.match(entry.name)
        if match:
            by_pid.setdefault(int(match["pid"]), []).append(Path(entry.path))
    dead = [pid for pid in by_pid if not _alive(pid)]
    for pid in dead:
        leave(pid, path)
    if compact and dead:
        with locked(path, exclusive=True):
            for kind in ("counter", "histogram"):
                files = [f for pid in dead for f in by_pid[pid] if f.name.startswith(f"{kind}_")]
                _fold(path / f"{kind}_archive.db", files)
    return dead


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, has stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat[stat.rfind(")") + 2 :].split(maxsplit=1)[0] != "Z"


def _fold(archive: Path, files: list[Path]) -> None:
    """Add the values of ``files`` into ``archive`` (replaced at once) and remove them.

    Counters and histogram buckets are stored as plain sums per key, so folding is adding.
    """
    from prometheus_client.mmap_dict import MmapedDict

    existing = [f for f in files if f.exists()]
    if not existing:
        return
    totals: dict[str, float] = {}
    for source in ([archive] if archive.exists() else []) + existing:
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(source)):
            totals[key] = totals.get(key, 0.0) + value
    scratch = archive.with_suffix(".tmp")
    scratch.unlink(missing_ok=True)
    merged = MmapedDict(str(scratch))
    try:
        for key, value in totals.items():
            merged.write_value(key, value, 0.0)
    finally:
        merged.close()
    os.replace(scratch, archive)
    for f in existing:
        f.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: Path, exclusive: bool = False) -> Iterator[None]:
    """Hold the directory's lock: shared while a scrape reads the files, exclusive while files are folded.

    So a scrape never reads a folded process twice (in its file and in the archive) or
    finds a file gone under it.
    """
    with open(path / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
