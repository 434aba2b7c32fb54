"""One writer per run directory: an OS file lock on ``RUN_DIR/.cuvae.lock``.

The lock is ``fcntl.flock`` on an open file, so the kernel drops it when the process
ends, however it ends (kill -9 included): nothing can leave it stuck. The holder's pid
and command go into the file so that a refused writer can name it. Locks are
re-entrant inside one process (the CLI takes the lock early, the trainer takes it
again in ``run``): flock would treat a second open of the same file as a stranger.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from cuvae.errors import CuvaeError

LOCK = ".cuvae.lock"

_held: dict[str, list] = {}  # resolved run dir -> [fd, count, created by this process?]
_guard = threading.Lock()


def prepare_run_dir(run_dir, flag: str = "--out") -> Path:
    """Create ``run_dir`` (and its parents) or raise one line saying why it cannot be used."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise CuvaeError(f"{flag} {run_dir} is a file, not a folder; pick another {flag}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CuvaeError(f"cannot create the run directory {run_dir}: {err.strerror or err}; "
                         f"pick another {flag} in a folder you can write") from None
    return run_dir


def _describe_holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def acquire(run_dir, flag: str = "--out") -> None:
    """Take the lock of ``run_dir`` for this process, or raise naming the process that holds it."""
    import fcntl

    existed = Path(run_dir).is_dir()
    run_dir = prepare_run_dir(run_dir, flag)
    key = str(run_dir.resolve())
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        path = run_dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise CuvaeError(f"cannot write in the run directory {run_dir}: {err.strerror or err}; "
                             f"pick another {flag} in a folder you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CuvaeError(f"{run_dir} is in use by another cuvae process ({_describe_holder(path)}); "
                                 f"wait for it to finish, stop it, or pick another {flag}") from None
            raise CuvaeError(f"cannot lock the run directory {run_dir}: {err.strerror or err}") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}: {' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))}\n"
                     .encode(errors="replace"))
        except OSError:
            pass  # the lock holds even if the note cannot be written (a full disk)
        _held[key] = [fd, 1, not existed]


def release(run_dir) -> None:
    """Give back one hold of ``run_dir``'s lock; the last one closes the file (which drops the lock)."""
    key = str(Path(run_dir).resolve())
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            folder = Path(key)
            if entry[2] and [p.name for p in folder.iterdir()] == [LOCK]:  # made for a run that never started
                try:
                    (folder / LOCK).unlink()
                    folder.rmdir()
                except OSError:
                    pass
            # otherwise the file stays: unlinking it would let two writers lock two different files
            os.close(entry[0])


@contextmanager
def hold(run_dir, flag: str = "--out"):
    acquire(run_dir, flag)
    try:
        yield Path(run_dir)
    finally:
        release(run_dir)
