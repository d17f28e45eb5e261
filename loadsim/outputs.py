"""Output files and directories: probed before a run starts, written so a reader never sees half of one.

A summary, a score card or a report is written at the end of something that may take
hours; finding then that its path cannot be written loses the run's result. So every
command probes each output first, by doing what the final write will do (creating the
temporary file beside it, in the same directory, and removing it again), and refuses a
path that fails with exit 2 before anything runs. ``os.access`` alone is not enough: it
says yes to root for ``/proc``, a read-only mount or a full directory table.

Targets that are not regular files (``/dev/null``, ``/dev/stdout``, a pipe someone reads)
are written in place: renaming a temporary file over them would replace the device node
with a file, which root is allowed to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


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
        return _open_problem(path)
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
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half of one.

    A target that exists and is not a regular file (a device, a pipe) is written in place.
    """
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        regular = True
    if not regular:
        with path.open("w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = _temporary(path)
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _probe_file(probe: Path, what: str) -> str | None:
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        return f"{what} ({e.strerror})"
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _open_problem(path: Path) -> str | None:
    """A device or a pipe must open for writing now, without waiting for a reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return f"{path} is a pipe or socket that nothing reads; expected a file path"
        return f"cannot write to {path} ({e.strerror})"
    os.close(fd)
    return None
