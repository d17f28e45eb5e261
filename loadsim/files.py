"""Reading a file the user named: only a regular file, and only up to a size that makes sense for it.

``open()`` on a FIFO waits for a writer, forever; ``/dev/zero`` or ``/dev/urandom``
read to the end never ends; a 10 GB "profile" would be read whole before being
refused. So a file the user names (a profile, a token, a CA certificate, a state
file, a score card, rule files) is opened without blocking (``O_NONBLOCK``, which
makes ``open`` of a FIFO return at once), checked with ``fstat`` on the very
descriptor that will be read (no window between a check and the open), refused
unless it is a regular file, and read up to a limit. Symbolic links to regular files
are followed, as any program would.

:class:`InputFileError` says what was wrong in words a user can act on; callers
turn it into a one-line problem naming their option.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KIB = 1 << 10
MIB = 1 << 20


class InputFileError(Exception):
    """A named file that cannot be used as input; the message says why (without the path)."""


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n // KIB} KiB" if n >= KIB else f"{n} bytes"


def check_regular(path: Path | str) -> None:
    """Raise :class:`InputFileError` unless ``path`` is (a link to) a regular file; never blocks."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise InputFileError("file not found") from None
    except OSError as e:
        raise InputFileError(f"cannot read file: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise InputFileError(f"{_kind(mode)}; expected a regular file")


def read_bytes(path: Path | str, limit: int) -> bytes:
    """The contents of the regular file ``path``, at most ``limit`` bytes; :class:`InputFileError` otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputFileError("file not found") from None
    except OSError as e:
        raise InputFileError(f"cannot read file: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(f"{_kind(info.st_mode)}; expected a regular file")
        if info.st_size > limit:
            raise InputFileError(f"{info.st_size:,} bytes, more than the {_size(limit)} such a file may have")
        chunks: list[bytes] = []
        left = limit + 1  # one byte more than allowed says the file grew past the limit while read
        while left > 0:
            chunk = os.read(fd, min(left, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise InputFileError(f"cannot read file: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputFileError(f"more than the {_size(limit)} such a file may have")
    return data


def read_text(path: Path | str, limit: int) -> str:
    """:func:`read_bytes` as UTF-8 text; :class:`InputFileError` if it is not UTF-8."""
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError("not UTF-8 text") from None
