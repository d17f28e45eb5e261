"""The relay template: sampled messages, their validation defects and hostile HTML, as relay requests.

``relay``: the relay's API, ``POST /actions/preview`` with ``{"action": "gmail.send",
"params": {...}}``, then ``POST /actions/execute`` with the returned ``preview_id`` and an
``Idempotency-Key`` header.

Input-side fault scenarios change the requests themselves, by one rule for the background
and the overlay alike:

* *validation*: each message draws at most one defect, with the model's probability per send
  of each of the eight validation codes (:data:`VALIDATION_CODES`), and its params carry that
  defect concretely (see :func:`relay_defect` for what the relay checks, in its order, and
  :class:`MessageSampler` for each defect's payload);
* *sanitization*: the HTML carries Poisson(mean) hostile constructs of each change type of the
  model's ``sanitization`` means (:data:`HOSTILE_CONSTRUCTS`; counted back by
  :func:`hostile_changes`).

The relay's params (its ``GmailSendParams``): ``to``, ``cc``, ``subject``, ``text`` (the
plain-text part, which the relay requires), ``html``, ``attachments`` (a list of
``{filename, content_type, data}``, data base64) and ``inline`` (inline images: a list of
``{cid, filename, content_type, data}``, data base64, each referenced from the HTML as
``<img src="cid:CID">``).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadsim.drivers.templates._http import _JSON_READY, Request
from loadsim.drivers.templates._rules import (
    ATTACHMENT_LIMIT,
    ATTACHMENT_TOO_LARGE,
    BLOCKED_MIME_TYPE,
    CID_NOT_REFERENCED,
    HOSTILE_CONSTRUCTS,
    INVALID_ATTACHMENT_DATA,
    INVALID_INLINE_DATA,
    MAX_INLINE,
    MIME_BUILD,
    MISSING_INLINE_IMAGE,
    TOTAL_LIMIT,
    TOTAL_SIZE_EXCEEDED,
    VALIDATION_CODES,
)
from loadsim.drivers.templates._shapes import _ADDRESSES, Shapes, _filler_b64, draw_attachments, real_sizes
from loadsim.model.sampler import MAX_ATTACHMENTS

# -- what the defects carry -----------------------------------------------------------------------
TOO_LARGE_BYTES = ATTACHMENT_LIMIT + 1
OVERSIZE_PARTS = 3
OVERSIZE_PART_BYTES = TOTAL_LIMIT // OVERSIZE_PARTS + 1
"""Three attachments of 17,476,267 bytes: each well under 25 MB, together 50 MiB + 1."""
SMALL_BYTES = 1024
"""Content of the small attachments a defect adds (the blocked executable, the padding)."""
INLINE_BYTES = 1024
"""Content of each inline image (the model has no inline sizes; the relay allows 5 MB)."""
NOT_BASE64 = "not base64!"
"""Undecodable even leniently: Python's decoder drops ' ' and '!' and is left with 9 characters."""


@dataclass(frozen=True, slots=True)
class Message:
    """A sampled message: what a user of the relay would send."""

    to: list[str]
    subject: str
    html: str
    attachments: list[dict[str, str]]
    inline: list[dict[str, str]] = field(default_factory=list)
    """Inline images, ``{cid, filename, content_type, data}``."""
    defect: str | None = None
    """The validation code these params are built to earn from the relay; None when valid."""
    hostile: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Hostile constructs in ``html`` per sanitization change type (what :func:`hostile_changes` counts)."""


@functools.cache
def _defect_filler(size: int) -> str:
    """The filler of a defect's fixed size (25 MiB + 1, 50 MiB / 3 + 1), made once and shared.

    Its bytes are kept too (:func:`_json_bytes` splices them into each body as they are).
    """
    text = _filler_b64(size)
    _JSON_READY[id(text)] = (text, text.encode("ascii"))
    return text


_INLINE_DATA = _filler_b64(INLINE_BYTES)
_SMALL_DATA = _filler_b64(SMALL_BYTES)


def _attachment(filename: str, content_type: str, data: str) -> dict[str, str]:
    return {"filename": filename, "content_type": content_type, "data": data}


def _image(cid: str, data: str = _INLINE_DATA) -> dict[str, str]:
    return {"cid": cid, "filename": cid.split("@", 1)[0] + ".png", "content_type": "image/png", "data": data}


def _pick(probabilities: dict[str, float], u: float) -> str | None:
    """The code whose slice of [0, 1) holds ``u`` (slices in :data:`VALIDATION_CODES` order), else None."""
    edge = 0.0
    for code in VALIDATION_CODES:
        edge += probabilities[code]
        if u < edge:
            return code
    return None


class MessageSampler:
    """Draws relay messages whose shape follows the model in force (:class:`Shapes`).

    Per message: recipients ``1 + Poisson(0.6)``; attachments as the model draws them
    (:func:`draw_attachments`; content capped, or at :func:`real_sizes`); HTML log-normal
    around 1,500 bytes; ``Poisson(inline.matched)`` inline images, each referenced from the
    HTML; ``Poisson(mean)`` hostile constructs per sanitization change type; and at most one
    validation defect, code ``c`` with probability ``shapes.validation[c]``, carried by the
    params as follows (each payload has that one defect and no other):

    ``attachment_too_large``
        the attachments replaced by one PDF of 25 MiB + 1 decoded bytes;
    ``blocked_mime_type``
        ``setup.exe`` (``application/x-msdownload``, 1 KB) added to the attachments;
    ``missing_inline_image``
        an ``<img src="cid:missing@loadsim">`` in the HTML with no such inline image, beside at
        least one inline image that is referenced (the relay checks references only when a
        message has inline images);
    ``cid_not_referenced``
        an inline image ``orphan@loadsim`` the HTML never references;
    ``total_size_exceeded``
        the attachments replaced by three PDFs of 17,476,267 bytes (50 MiB + 1 in total);
    ``invalid_attachment_data``
        an attachment whose data is ``"not base64!"``;
    ``invalid_inline_data``
        a referenced inline image whose data is ``"not base64!"``;
    ``mime_build``
        eleven attachments, one over the relay's limit of ten: the relay's validator raises
        ``validation_error_attachment_count_exceeded``, a code its adapter does not map, so it
        reports ``validation_error_mime_build``.

    Fixed-size defect content is made once and shared by reference; other content is the
    ``x`` filler's base64 repeated, never encoded per request.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def draw(self, shapes: Shapes) -> Message:
        """One message, following ``shapes``."""
        rng, model = self.rng, shapes.model
        recipients = 1 + int(rng.poisson(0.6))
        offsets, drawn = draw_attachments(rng, model.attachments, 1)
        if shapes.real_attachment_sizes:
            sizes = real_sizes(offsets, drawn)
        else:
            sizes = np.clip(drawn, 1, shapes.attachment_cap).astype(np.int64)
        html_len = int(np.clip(rng.lognormal(np.log(1500), 0.8), 50, 200_000))
        to = [_ADDRESSES[t] for t in rng.integers(0, 10_000, recipients).tolist()]
        subject = f"Report {int(rng.integers(0, 1_000_000))}"
        n_inline = min(int(rng.poisson(model.inline.matched)), MAX_INLINE)
        tag, attr, script, style = (int(k) for k in rng.poisson(model.sanitization.means()))
        defect = _pick(shapes.validation, float(rng.random()))

        attachments = [
            _attachment(f"file-{i}.pdf", "application/pdf", _filler_b64(s)) for i, s in enumerate(sizes.tolist())
        ]
        inline = [_image(f"img{j}@loadsim") for j in range(n_inline)]
        refs = [image["cid"] for image in inline]
        if defect is not None:
            attachments, inline, refs = _with_defect(defect, attachments, inline, refs)
        hostile = (tag, attr, script, style)
        html = "".join(
            (
                "<p>",
                "x" * max(html_len - 7, 0),
                "</p>",
                *(f'<img src="cid:{cid}" alt="">' for cid in refs),
                *(construct * k for construct, k in zip(HOSTILE_CONSTRUCTS, hostile, strict=True)),
            )
        )
        return Message(to, subject, html, attachments, inline, defect, hostile)


def _with_defect(
    code: str, attachments: list[dict[str, str]], inline: list[dict[str, str]], refs: list[str]
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[str]]:
    """``(attachments, inline images, cids the HTML references)`` carrying the defect ``code``."""
    room = MAX_ATTACHMENTS - 1
    if code == ATTACHMENT_TOO_LARGE:
        attachments = [_attachment("scan-0.pdf", "application/pdf", _defect_filler(TOO_LARGE_BYTES))]
    elif code == BLOCKED_MIME_TYPE:
        attachments = [*attachments[:room], _attachment("setup.exe", "application/x-msdownload", _SMALL_DATA)]
    elif code == TOTAL_SIZE_EXCEEDED:
        part = _defect_filler(OVERSIZE_PART_BYTES)
        attachments = [_attachment(f"part-{k}.pdf", "application/pdf", part) for k in range(OVERSIZE_PARTS)]
    elif code == INVALID_ATTACHMENT_DATA:
        attachments = [*attachments[:room], _attachment("notes.pdf", "application/pdf", NOT_BASE64)]
    elif code == MIME_BUILD:
        pad = [_attachment(f"extra-{k}.pdf", "application/pdf", _SMALL_DATA) for k in range(len(attachments), 11)]
        attachments = [*attachments, *pad]
    elif code == MISSING_INLINE_IMAGE:
        inline = inline or [_image("img0@loadsim")]
        refs = [*(image["cid"] for image in inline), "missing@loadsim"]
    elif code == CID_NOT_REFERENCED:
        inline = [*inline[: MAX_INLINE - 1], _image("orphan@loadsim")]
        refs = [image["cid"] for image in inline[:-1]]
    elif code == INVALID_INLINE_DATA:
        inline = [*inline[: MAX_INLINE - 1], _image("broken@loadsim", NOT_BASE64)]
        refs = [image["cid"] for image in inline]
    return attachments, inline, refs


def relay_preview(message: Message, token: str | None) -> Request:
    """The relay's preview call: the message's params, defect, hostile HTML and inline images included."""
    params: dict[str, Any] = {
        "to": message.to[0],
        "cc": message.to[1:],
        "subject": message.subject,
        "text": f"{message.subject}: see the HTML version.",
        "html": message.html,
    }
    if message.attachments:
        params["attachments"] = message.attachments
    if message.inline:
        params["inline"] = message.inline
    return Request("POST", "/actions/preview", {"action": "gmail.send", "params": params}, _auth(token))


def relay_execute(preview_id: str, token: str | None) -> Request:
    """The relay's execute call for a preview, idempotent under retries."""
    headers = {**_auth(token), "Idempotency-Key": str(uuid.uuid4())}
    return Request("POST", "/actions/execute", {"preview_id": preview_id}, headers)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
