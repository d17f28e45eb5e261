"""Request serialisation: a :class:`Request` to make, and :class:`Wire`, which makes it HTTP/1.1 bytes.

Requests carry ``Authorization: Bearer TOKEN`` when a token is given (read from an environment
variable or a file by the CLI; it is never logged), or HTTP Basic credentials taken from the
target URL's userinfo. :class:`Wire` holds what every request to
one target shares (``Host``, the path prefix, the token header) so each request adds only its
path, its length and its body. JSON bodies are serialised with their long strings (attachment
base64) spliced in as bytes, not serialised (:func:`_json_bytes`).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from loadsim import __version__


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make."""

    method: str
    path: str
    json: dict[str, Any]
    headers: dict[str, str]


class Wire:
    """Serialises requests to one target as HTTP/1.1 bytes (keep-alive, JSON bodies)."""

    def __init__(self, target: str, token: str | None, *, basic: tuple[str, str] | None = None) -> None:
        """``token`` goes out as ``Bearer``; ``basic`` (user, password) as HTTP Basic auth (not both)."""
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
        if basic is not None and not token:
            credentials = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode("ascii")
            auth = f"Authorization: Basic {credentials}\r\n"
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
        body = _json_bytes(request.json)
        return self.head(request.method, request.path, extra) + str(len(body)).encode() + b"\r\n\r\n" + body


_SPLICE_MIN = 1 << 16
_JSON_PLAIN = bytes(sorted(set(range(0x20, 0x7F)) - {ord('"'), ord("\\")}))
"""The bytes JSON writes as they are inside a string."""
_PLACEHOLDER = re.compile(rb'"\\u0000(\d+)"')

_JSON_READY: dict[int, tuple[str, bytes]] = {}
"""Long strings whose JSON form is themselves in quotes, by identity, with their bytes."""


def _json_bytes(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":")).encode()``, the long strings spliced in, not serialised.

    An attachment's base64 needs no escaping, but ``json.dumps`` still checks and copies
    every character: 125 ms for the 35 MB of an attachment over 25 MiB, against 20 ms to
    splice its bytes (kept for the fixed-size defects, encoded once otherwise). Strings of
    64 KiB or more that need no escaping go out as placeholders and come back as bytes;
    should any other string look like a placeholder, the body is serialised whole.
    """
    spliced: list[bytes] = []

    def swap(node: Any) -> Any:
        if isinstance(node, str):
            raw = _plain_json(node) if len(node) >= _SPLICE_MIN else None
            if raw is None:
                return node
            spliced.append(raw)
            return f"\x00{len(spliced) - 1}"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(value), separators=(",", ":")).encode()
    if not spliced:
        return text
    pieces = _PLACEHOLDER.split(text)
    if pieces[1::2] != [str(k).encode() for k in range(len(spliced))]:
        return json.dumps(value, separators=(",", ":")).encode()
    out: list[bytes] = []
    for k, piece in enumerate(pieces):
        out += (b'"', spliced[k // 2], b'"') if k % 2 else (piece,)
    return b"".join(out)


def _plain_json(text: str) -> bytes | None:
    """``text``'s bytes if JSON writes it as it is (printable ASCII, no quote or backslash), else None."""
    ready = _JSON_READY.get(id(text))
    if ready is not None and ready[0] is text:
        return ready[1]
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    return None if raw.translate(None, _JSON_PLAIN) else raw
