"""Request templates: what each HTTP arrival sends, with bodies sampled from the outcome model.

Two built-in flows:

* ``gmail``: Gmail's own send endpoint, ``POST /gmail/v1/users/{user}/messages/send`` with
  ``{"raw": base64url(MIME)}``, spread over a pool of users (so a per-user quota bites);
  aimed at ``loadsim fake-gmail`` or any Gmail-shaped API.
* ``relay``: the relay's API, ``POST /actions/preview`` with ``{"action": "gmail.send",
  "params": {...}}``, then ``POST /actions/execute`` with the returned ``preview_id`` and an
  ``Idempotency-Key`` header.

Both carry ``Authorization: Bearer TOKEN`` when a token is given (read from an environment
variable or a file by the CLI; it is never logged). Recipients, subject and HTML sizes and
attachment counts and sizes are drawn from the outcome model's distributions; attachment
content is capped (``max_attachment_bytes``) so a load test measures the target, not the
client's base64 encoder.

For the driver's hot path the same requests also exist as ready-to-send HTTP/1.1
bytes: :class:`GmailPayloads` draws a window's message shapes in a few numpy
calls into compact arrays (:class:`GmailBatch`) and makes each request's bytes
only when a connection takes it (:meth:`GmailPayloads.build`): an arrival dropped
at the in-flight cap costs no bytes, nor does most of a backlog that times out.
:class:`Wire` holds what every request to one target shares (``Host``, the path
prefix, the token header) so each request adds only its path, its length and
its body.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from array import array
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from loadsim import __version__
from loadsim.model.params import ModelParams
from loadsim.model.sampler import MAX_ATTACHMENTS, lognormal_params

TEMPLATES = ("gmail", "relay")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make."""

    method: str
    path: str
    json: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Message:
    """A sampled message: what a user of the relay would send."""

    to: list[str]
    subject: str
    html: str
    attachments: list[dict[str, str]]


class MessageSampler:
    """Draws messages whose shape follows the outcome model's distributions."""

    def __init__(self, params: ModelParams, rng: np.random.Generator, max_attachment_bytes: int = 2048) -> None:
        self.params = params
        self.rng = rng
        self.max_attachment_bytes = max_attachment_bytes
        self._size = lognormal_params(params.attachments.size_p50_bytes, params.attachments.size_p95_bytes)

    def draw(self) -> Message:
        """One message."""
        rng, att = self.rng, self.params.attachments
        recipients = 1 + int(rng.poisson(0.6))
        n_att = 0
        if rng.random() < att.probability:
            n_att = min(1 + int(rng.poisson(att.extra_mean)), MAX_ATTACHMENTS)
        attachments = []
        for i in range(n_att):
            size = int(np.exp(self._size[0] + self._size[1] * rng.standard_normal()))
            data = base64.b64encode(bytes(min(size, self.max_attachment_bytes))).decode()
            attachments.append({"filename": f"file-{i}.pdf", "content_type": "application/pdf", "data": data})
        html_len = int(np.clip(rng.lognormal(np.log(1500), 0.8), 50, 200_000))
        return Message(
            to=[f"user{int(rng.integers(0, 10_000))}@example.com" for _ in range(recipients)],
            subject=f"Report {int(rng.integers(0, 1_000_000))}",
            html="<p>" + "x" * max(html_len - 7, 0) + "</p>",
            attachments=attachments,
        )


def relay_preview(message: Message, token: str | None) -> Request:
    """The relay's preview call."""
    params: dict[str, Any] = {
        "to": message.to[0],
        "cc": message.to[1:],
        "subject": message.subject,
        "html": message.html,
    }
    if message.attachments:
        params["attachments"] = message.attachments
    return Request("POST", "/actions/preview", {"action": "gmail.send", "params": params}, _auth(token))


def relay_execute(preview_id: str, token: str | None) -> Request:
    """The relay's execute call for a preview, idempotent under retries."""
    headers = {**_auth(token), "Idempotency-Key": str(uuid.uuid4())}
    return Request("POST", "/actions/execute", {"preview_id": preview_id}, headers)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class Wire:
    """Serialises requests to one target as HTTP/1.1 bytes (keep-alive, JSON bodies)."""

    def __init__(self, target: str, token: str | None) -> None:
        parts = urlsplit(target)
        host = parts.hostname or ""
        default_port = 443 if parts.scheme == "https" else 80
        self.host = host
        self.port = parts.port or default_port
        self.tls = parts.scheme == "https"
        shown = f"[{host}]" if ":" in host else host
        authority = shown if self.port == default_port else f"{shown}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._common = (
            f"Host: {authority}\r\nUser-Agent: loadsim/{__version__}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n{auth}Content-Length: "
        ).encode()

    def head(self, method: str, path: str, extra_headers: dict[str, str] | None = None) -> bytes:
        """Everything before the body's length: request line and shared headers."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (extra_headers or {}).items())
        return f"{method} {self.prefix}{path} HTTP/1.1\r\n{extra}".encode() + self._common

    def request(self, request: Request) -> bytes:
        """One :class:`Request` as bytes (the token goes in through the shared headers)."""
        extra = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        body = json.dumps(request.json, separators=(",", ":")).encode()
        return self.head(request.method, request.path, extra) + str(len(body)).encode() + b"\r\n\r\n" + body


_FILL = b"x" * 200_000
_FILL_B64 = binascii.b2a_base64(_FILL[: 3 * (len(_FILL) // 3)], newline=False)
"""The filler's base64 (``eHh4`` repeated: no ``+`` or ``/``, so it is base64url too)."""
_ADDRESSES = [f"user{t}@example.com" for t in range(10_000)]
_URLSAFE = bytes.maketrans(b"+/", b"-_")


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


def _ints(values: NDArray[np.integer[Any]]) -> array[int]:
    """``values`` as an array of C ints (every value here is below 2**31)."""
    out = array("i")
    out.frombytes(values.astype(np.intc).tobytes())
    return out


class GmailPayloads:
    """Gmail's send requests, shaped like :meth:`MessageSampler.draw`'s messages, as ready bytes.

    The draws are the same distributions as :class:`MessageSampler` (recipients
    ``1 + Poisson(0.6)``, HTML length log-normal around 1,500 bytes clipped to
    50..200,000, random recipient and subject numbers), taken for a whole window
    at once; a request's bytes are built when a connection takes it (``wire.Pool``'s ``render``).
    """

    def __init__(self, wire: Wire, users: int, rng: np.random.Generator, user_rng: np.random.Generator) -> None:
        self.rng = rng
        self.user_rng = user_rng
        self.users = users
        self._heads = [wire.head("POST", f"/gmail/v1/users/user{u}@example.com/messages/send") for u in range(users)]

    def draw(self, n: int) -> GmailBatch:
        """Shapes for ``n`` requests."""
        rng = self.rng
        recipients = 1 + rng.poisson(0.6, n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(recipients, out=offsets[1:])
        html = np.clip(rng.lognormal(np.log(1500), 0.8, n), 50, 200_000).astype(np.int64)
        return GmailBatch(
            users=_ints(self.user_rng.integers(0, self.users, n)),
            recipients=_ints(offsets),
            to=_ints(rng.integers(0, 10_000, int(offsets[-1]))),
            subjects=_ints(rng.integers(0, 1_000_000, n)),
            html=_ints(html),
        )

    def build(self, batch: GmailBatch, i: int) -> bytes:
        """Request ``i`` of ``batch`` as bytes.

        The body is base64url of ``headers + "<p>" + "x" * k + "</p>"``. Base64 maps each
        3 input bytes to 4 output bytes independently, so the text is encoded in three
        pieces that give exactly the bytes of encoding it whole: the headers topped up
        with filler to a multiple of 3, the middle run of filler (a slice of its
        encoding, computed once), and the rest. Encoding ~2 KB per request was a fifth
        of the driver's CPU.
        """
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
