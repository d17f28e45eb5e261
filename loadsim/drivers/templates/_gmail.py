"""The Gmail template: Gmail's send requests, as ready-to-send HTTP/1.1 bytes.

``gmail``: Gmail's own send endpoint, ``POST /gmail/v1/users/{user}/messages/send`` with
``{"raw": base64url(MIME)}``, spread over a pool of users (so a per-user quota bites); aimed
at ``loadsim fake-gmail`` or any Gmail-shaped API.

For the driver's hot path the Gmail requests exist as ready-to-send HTTP/1.1
bytes: :class:`GmailPayloads` draws a window's message shapes in a few numpy
calls into compact arrays (:class:`GmailBatch`) and makes each request's bytes
only when a connection takes it (:meth:`GmailPayloads.build`): an arrival dropped
at the in-flight cap costs no bytes, nor does most of a backlog that times out.

With real attachment sizes (``Shapes.real_attachment_sizes``) the raw message becomes
``multipart/mixed`` with base64 parts; otherwise the template sends exactly what it always
did. :func:`gmail_attachments` reads the attachment sizes back out of a ``raw`` message.
"""

from __future__ import annotations

import base64
import binascii
import functools
from array import array
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadsim.drivers.templates._http import Wire
from loadsim.drivers.templates._shapes import _ADDRESSES, _B64_TAILS, Shapes, draw_attachments, real_sizes

_FILL = b"x" * 200_000
_FILL_B64 = binascii.b2a_base64(_FILL[: 3 * (len(_FILL) // 3)], newline=False)
"""The filler's base64 (``eHh4`` repeated: no ``+`` or ``/``, so it is base64url too)."""
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_BOUNDARY = "loadsim-mixed-5f0c"
"""Never in the content: that is ``x`` and base64 lines of ``eHh4``."""
_LINE = b"eHh4" * 19 + b"\r\n"
"""A full line of an attachment part: 76 base64 characters (57 bytes of ``x``) and CRLF."""


@dataclass(slots=True)
class GmailBatch:
    """One window's message shapes for the Gmail template, drawn together.

    Machine integers (``array``), not lists of Python ints: a request waiting for a
    connection keeps its window's batch alive, and against a slow target hundreds
    of windows can each have one request waiting, most of their arrivals dropped.
    24 bytes per arrival instead of 190 (tracemalloc, 120,000 arrivals).
    """

    users: array[int]
    recipients: array[int]
    """Offsets into ``to``: request i sends to ``to[recipients[i]:recipients[i + 1]]``."""
    to: array[int]
    subjects: array[int]
    html: array[int]
    attachments: array[int] | None = None
    """With real sizes only: offsets into ``sizes``, as ``recipients`` into ``to``."""
    sizes: array[int] | None = None
    """Decoded bytes of each attachment (real sizes only)."""


def _ints(values: NDArray[np.integer[Any]]) -> array[int]:
    """``values`` as an array of C ints (every value here is below 2**31)."""
    out = array("i")
    out.frombytes(values.astype(np.intc).tobytes())
    return out


@dataclass(frozen=True, slots=True)
class _Run:
    """A periodic byte string's base64url, computed once for each of the three alignments."""

    pattern: bytes
    """One period; its length is a multiple of 3, so each period encodes on its own."""
    periods: int
    """Periods in each block."""
    blocks: tuple[memoryview, ...]
    """``blocks[p]``: base64url of the pattern started ``p`` bytes in, ``periods`` times."""


def _run(pattern: bytes, size: int) -> _Run:
    periods = max(size // len(pattern), 1)
    blocks = tuple(
        memoryview(binascii.b2a_base64((pattern[p:] + pattern[:p]) * periods, newline=False).translate(_URLSAFE))
        for p in range(3)
    )
    return _Run(pattern, periods, blocks)


@functools.cache
def _runs() -> tuple[_Run, _Run]:
    """The ``x`` filler and the attachment line, made on first use (about 1.5 MB)."""
    return _run(b"xxx", 200_000), _run(_LINE, 256_000)


class _Base64Url:
    """base64url (unpadded) of a text given in pieces, long periodic runs taken from :class:`_Run`.

    Base64 maps each 3 input bytes to 4 output bytes independently, so once the text so far
    is a multiple of 3 bytes, a run of whole periods is a slice of its precomputed encoding;
    the few bytes around it are encoded with the literal text next to them.
    """

    __slots__ = ("carry", "chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview] = []
        self.carry = b""
        self.size = 0

    def _emit(self, chunk: bytes | memoryview) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def text(self, data: bytes) -> None:
        data = self.carry + data
        cut = len(data) - len(data) % 3
        if cut:
            self._emit(binascii.b2a_base64(data[:cut], newline=False).translate(_URLSAFE))
        self.carry = data[cut:]

    def repeat(self, run: _Run, length: int) -> None:
        """``length`` bytes of ``run.pattern`` repeated, from its start."""
        phase = min(-len(self.carry) % 3, length)
        if phase:
            self.text(run.pattern[:phase])
        whole, left = divmod(length - phase, len(run.pattern))
        blocks, rest = divmod(whole, run.periods)
        block = run.blocks[phase]
        for _ in range(blocks):
            self._emit(block)
        if rest:
            self._emit(block[: 4 * len(run.pattern) // 3 * rest])
        if left:
            self.text((run.pattern[phase:] + run.pattern[:phase])[:left])

    def finish(self) -> list[bytes | memoryview]:
        if self.carry:
            self._emit(binascii.b2a_base64(self.carry, newline=False).translate(_URLSAFE).rstrip(b"="))
            self.carry = b""
        return self.chunks


class GmailPayloads:
    """Gmail's send requests, shaped like :meth:`MessageSampler.draw`'s messages, as ready bytes.

    The draws are the same distributions as :class:`MessageSampler` (recipients
    ``1 + Poisson(0.6)``, HTML length log-normal around 1,500 bytes clipped to
    50..200,000, random recipient and subject numbers), taken for a whole window
    at once; a request's bytes are built when a connection takes it (``wire.Pool``'s ``render``).
    With real attachment sizes (:class:`Shapes`) the window also draws attachments
    (:func:`draw_attachments`, :func:`real_sizes`) and a send that has some becomes
    ``multipart/mixed``: its HTML part and one base64 part per attachment.
    """

    def __init__(self, wire: Wire, users: int, rng: np.random.Generator, user_rng: np.random.Generator) -> None:
        self.rng = rng
        self.user_rng = user_rng
        self.users = users
        self._heads = [wire.head("POST", f"/gmail/v1/users/user{u}@example.com/messages/send") for u in range(users)]

    def draw(self, n: int, shapes: Shapes | None = None) -> GmailBatch:
        """Shapes for ``n`` requests; without real attachment sizes, exactly the bodies they always were."""
        rng = self.rng
        recipients = 1 + rng.poisson(0.6, n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(recipients, out=offsets[1:])
        html = np.clip(rng.lognormal(np.log(1500), 0.8, n), 50, 200_000).astype(np.int64)
        batch = GmailBatch(
            users=_ints(self.user_rng.integers(0, self.users, n)),
            recipients=_ints(offsets),
            to=_ints(rng.integers(0, 10_000, int(offsets[-1]))),
            subjects=_ints(rng.integers(0, 1_000_000, n)),
            html=_ints(html),
        )
        if shapes is not None and shapes.real_attachment_sizes:
            attachments, sizes = draw_attachments(rng, shapes.model.attachments, n)
            batch.attachments = _ints(attachments)
            batch.sizes = _ints(real_sizes(attachments, sizes))
        return batch

    def build(self, batch: GmailBatch, i: int) -> bytes:
        """Request ``i`` of ``batch`` as bytes.

        The body is base64url of ``headers + "<p>" + "x" * k + "</p>"``. Base64 maps each
        3 input bytes to 4 output bytes independently, so the text is encoded in three
        pieces that give exactly the bytes of encoding it whole: the headers topped up
        with filler to a multiple of 3, the middle run of filler (a slice of its
        encoding, computed once), and the rest. Encoding ~2 KB per request was a fifth
        of the driver's CPU. A send with attachments (real sizes only) is ``multipart/mixed``
        (:meth:`_build_mixed`); without real sizes this costs one ``is None`` test.
        """
        if batch.attachments is not None and batch.attachments[i + 1] > batch.attachments[i]:
            return self._build_mixed(batch, i)
        r0, r1 = batch.recipients[i], batch.recipients[i + 1]
        to = ", ".join([_ADDRESSES[t] for t in batch.to[r0:r1]])
        fill = max(batch.html[i] - 7, 0)
        head = (
            f"To: {to}\r\nSubject: Report {batch.subjects[i]}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>"
        ).encode()
        top = min(-len(head) % 3, fill)
        middle = (fill - top) // 3
        rest = fill - top - 3 * middle
        first = binascii.b2a_base64(head + _FILL[:top], newline=False).translate(_URLSAFE)
        last = binascii.b2a_base64(_FILL[:rest] + b"</p>", newline=False).translate(_URLSAFE).rstrip(b"=")
        if top < -len(head) % 3:  # too little filler to align the headers: encode it whole
            first = binascii.b2a_base64(head + _FILL[:fill] + b"</p>", newline=False).translate(_URLSAFE)
            first, middle, last = first.rstrip(b"="), 0, b""
        length = len(first) + 4 * middle + len(last) + 10  # {"raw":"..."}: 10 bytes around the text
        return b"".join(
            (
                self._heads[batch.users[i]],
                str(length).encode(),
                b'\r\n\r\n{"raw":"',
                first,
                _FILL_B64[: 4 * middle],
                last,
                b'"}',
            )
        )

    def _build_mixed(self, batch: GmailBatch, i: int) -> bytes:
        """Request ``i`` as ``multipart/mixed``: the HTML part, then one base64 part per attachment.

        Each attachment part is the filler's base64 in 76-character lines: whole lines come
        from the line run's precomputed encoding, so a 25 MB attachment costs a join, not two
        encodings.
        """
        assert batch.attachments is not None
        assert batch.sizes is not None
        fill_run, line_run = _runs()
        r0, r1 = batch.recipients[i], batch.recipients[i + 1]
        to = ", ".join([_ADDRESSES[t] for t in batch.to[r0:r1]])
        raw = _Base64Url()
        raw.text(
            (
                f"To: {to}\r\nSubject: Report {batch.subjects[i]}\r\nMIME-Version: 1.0\r\n"
                f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"\r\n\r\n'
                f"--{_BOUNDARY}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>"
            ).encode()
        )
        raw.repeat(fill_run, max(batch.html[i] - 7, 0))
        raw.text(b"</p>\r\n")
        a0, a1 = batch.attachments[i], batch.attachments[i + 1]
        for k, size in enumerate(batch.sizes[a0:a1]):
            raw.text(
                (
                    f"--{_BOUNDARY}\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
                    f'Content-Disposition: attachment; filename="file-{k}.pdf"\r\n\r\n'
                ).encode()
            )
            groups, tail = divmod(size, 3)
            lines, short = divmod(groups, 19)
            raw.repeat(line_run, len(_LINE) * lines)
            if short or tail:
                raw.text(b"eHh4" * short + _B64_TAILS[tail].encode() + b"\r\n")
        raw.text(f"--{_BOUNDARY}--\r\n".encode())
        chunks = raw.finish()
        return b"".join((self._heads[batch.users[i]], str(raw.size + 10).encode(), b'\r\n\r\n{"raw":"', *chunks, b'"}'))


def gmail_attachments(raw_b64url: str) -> list[int]:
    """Decoded sizes of the attachments of a Gmail ``raw`` message; empty when it is not multipart.

    Reads the top-level boundary from the headers and each part's own headers with the
    standard library's header parser; a part counts when its ``Content-Disposition`` is
    ``attachment``. Decodes parts in C (a 25 MB attachment takes a fraction of a second),
    for a counting server as much as for tests.
    """
    mime = base64.urlsafe_b64decode(raw_b64url + "=" * (-len(raw_b64url) % 4))
    head, _, body = mime.partition(b"\r\n\r\n")
    parser = BytesHeaderParser(policy=policy.default)
    top = parser.parsebytes(head + b"\r\n\r\n")
    boundary = top.get_boundary()
    if top.get_content_maintype() != "multipart" or boundary is None:
        return []
    sizes = []
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        after = part.partition(b"\r\n")[2]  # past the rest of the boundary line
        if after.startswith(b"\r\n"):
            headers, content = b"", after[2:]
        else:
            headers, _, content = after.partition(b"\r\n\r\n")
        part_headers = parser.parsebytes(headers + b"\r\n\r\n")
        if part_headers.get_content_disposition() != "attachment":
            continue
        encoded = str(part_headers.get("Content-Transfer-Encoding", "")).lower() == "base64"
        sizes.append(len(binascii.a2b_base64(content)) if encoded else len(content))
    return sizes
