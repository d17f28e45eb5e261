"""Output files and directories: probed before a run starts, written so a reader never sees half of one.

A summary, a score card or a report is written at the end of something that may take
hours; finding then that its path cannot be written loses the run's result. So every
command probes each output first, by doing what the final write will do (creating the
temporary file beside it, in the same directory, and removing it again), and refuses a
path that fails with exit 2 before anything runs. ``os.access`` alone is not enough: it
says yes to root for ``/proc``, a read-only mount or a full directory table.

Targets that are not regular files (``/dev/null``, ``/dev/stdout``, a pipe someone reads)
are written in place: renaming a temporary file over them would replace the device node
with a file, which root is allowed to do. A device is probed by opening it; a pipe only by
its permission (opening it would hand its reader an end of file).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class OutputError(Exception):
    """An output that failed as it was written, after the work was done (a full disk, a device refusing).

    The CLI reports it in one line and exits 1: the input was fine, the run happened, and its
    figures are in the log (``run.summary``) even when the file could not take them.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: cannot write it after the work was done ({reason})")


def _temporary(path: Path) -> Path:
    """The temporary file beside ``path`` that an atomic write goes through."""
    return path.with_name(f".{path.name}.tmp")


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file (None when it can), found by trying."""
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        return f"cannot use {path}: {e.strerror}"
    if st is not None and stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory; expected a file path"
    if st is not None and not stat.S_ISREG(st.st_mode):
        return _open_problem(path, st.st_mode)
    if st is not None and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    parent = path.parent
    if not parent.is_dir():
        return f"{parent} does not exist; expected a file in an existing directory"
    return _probe_file(_temporary(path), f"cannot write in {parent}")


def directory_problem(path: Path) -> str | None:
    """Why files cannot be written into ``path`` (None when they can); a missing one must be creatable."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():
            return f"{existing} is a dangling symbolic link"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory; expected a directory for the output files"
    where = "cannot write in" if existing == path else f"cannot create {path} in"
    return _probe_file(existing / f".loadsim-probe-{os.getpid()}", f"{where} {existing}")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half of one."""
    with open_output(path) as f:
        f.write(text)


@contextlib.contextmanager
def open_output(path: Path) -> Iterator[IO[str]]:
    """A text file to write ``path`` through: renamed into place, whole, when the block ends without error.

    A target that exists and is not a regular file (a device, a pipe) is written in place:
    renaming over ``/dev/null`` would replace it, for everyone, when run as root.
    """
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        regular = True
    except OSError as e:
        raise OutputError(path, e.strerror or type(e).__name__) from None
    tmp = _temporary(path)
    try:
        if not regular:
            with path.open("w", encoding="utf-8") as f:
                yield f
            return
        with tmp.open("w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as e:
        raise OutputError(path, e.strerror or type(e).__name__) from None
    finally:
        if regular:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _probe_file(probe: Path, what: str) -> str | None:
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        return f"{what} ({e.strerror})"
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _open_problem(path: Path, mode: int) -> str | None:
    """A device must open for writing now; a pipe is only checked for permission.

    Opening a pipe to probe it would hand its reader an end of file (``>(jq .)`` would see an
    empty input and exit), so a pipe is written to at the end, when its reader is there.
    """
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        if stat.S_ISSOCK(mode):
            return f"{path} is a socket; expected a file path"
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        return f"cannot write to {path} ({e.strerror})"
    os.close(fd)
    return None
