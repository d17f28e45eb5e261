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
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

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


def gmail_request(message: Message, user: str, token: str | None) -> Request:
    """Gmail's send endpoint with the message as base64url MIME."""
    mime = (
        f"To: {', '.join(message.to)}\r\nSubject: {message.subject}\r\n"
        f"Content-Type: text/html; charset=utf-8\r\n\r\n{message.html}"
    )
    raw = base64.urlsafe_b64encode(mime.encode()).decode().rstrip("=")
    return Request("POST", f"/gmail/v1/users/{user}/messages/send", {"raw": raw}, _auth(token))


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
