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
attachment counts and sizes are drawn from the model in force for the window (:class:`Shapes`).

**Input-side fault scenarios.** Overlays change the model; with real traffic the scenarios
that are about the *input* change the requests themselves, by one rule for the background
and the overlay alike:

* *validation* (relay template): each message draws at most one defect, with the model's
  probability per send of each of the eight validation codes (:data:`VALIDATION_CODES`), and
  its params carry that defect concretely (see :func:`relay_defect` for what the relay
  checks, in its order, and :class:`MessageSampler` for each defect's payload);
* *sanitization* (relay template): the HTML carries Poisson(mean) hostile constructs of each
  change type of the model's ``sanitization`` means (:data:`HOSTILE_CONSTRUCTS`; counted
  back by :func:`hostile_changes`);
* *attachment sizes* (both templates): while an overlay changed the attachment parameters
  (``mime-slow``) the driver sets ``Shapes.real_attachment_sizes`` and attachments go out at
  their drawn sizes, within the relay's limits; the Gmail template's raw message becomes
  ``multipart/mixed`` with base64 parts. Otherwise attachment content is capped
  (``Shapes.attachment_cap``) so a load test measures the target, not the client's base64
  encoder, and the Gmail template sends exactly what it always did.

The relay's params (its ``GmailSendParams``): ``to``, ``cc``, ``subject``, ``text`` (the
plain-text part, which the relay requires), ``html``, ``attachments`` (a list of
``{filename, content_type, data}``, data base64) and ``inline`` (inline images: a list of
``{cid, filename, content_type, data}``, data base64, each referenced from the HTML as
``<img src="cid:CID">``).

For the driver's hot path the Gmail requests also exist as ready-to-send HTTP/1.1
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
import functools
import json
import re
import uuid
from array import array
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray

from loadsim import __version__
from loadsim.model.params import AttachmentParams, ModelParams
from loadsim.model.sampler import MAX_ATTACHMENT_BYTES, MAX_ATTACHMENTS, MAX_MESSAGE_BYTES, lognormal_params

TEMPLATES = ("gmail", "relay")

# -- the relay's limits -------------------------------------------------------------------------
# The relay's README says 25 MB, 5 MB and 50 MB; its validator (relay_ai/validation/attachments.py
# in the public repository) compares decoded sizes with 25 * 1024 * 1024 and so on. Valid messages
# stay under the decimal reading (sampler.MAX_ATTACHMENT_BYTES, MAX_MESSAGE_BYTES) and defects go
# just over the binary one, so each is what it is under either reading.
MIB = 1024 * 1024
ATTACHMENT_LIMIT = 25 * MIB
"""Decoded bytes per attachment; above is ``validation_error_attachment_too_large``."""
INLINE_LIMIT = 5 * MIB
"""Decoded bytes per inline image."""
TOTAL_LIMIT = 50 * MIB
"""Decoded bytes of all attachments and inline images of one send."""
MAX_INLINE = 20
MAX_FILENAME = 255
MAX_RECIPIENTS = 100
MAX_CID = 100
BLOCKED_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-sh",
        "application/x-bat",
        "application/x-powershell",
        "application/zip",
        "application/x-rar-compressed",
        "application/x-7z-compressed",
        "application/java-archive",
        "application/x-deb",
        "application/x-rpm",
    }
)
"""Attachment types the relay refuses (``validation_error_blocked_mime_type``)."""
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
"""The only types the relay accepts for inline images (others: blocked MIME type)."""

ATTACHMENT_TOO_LARGE = "validation_error_attachment_too_large"
BLOCKED_MIME_TYPE = "validation_error_blocked_mime_type"
MISSING_INLINE_IMAGE = "validation_error_missing_inline_image"
CID_NOT_REFERENCED = "validation_error_cid_not_referenced"
TOTAL_SIZE_EXCEEDED = "validation_error_total_size_exceeded"
INVALID_ATTACHMENT_DATA = "validation_error_invalid_attachment_data"
INVALID_INLINE_DATA = "validation_error_invalid_inline_data"
MIME_BUILD = "validation_error_mime_build"
VALIDATION_CODES = (
    ATTACHMENT_TOO_LARGE,
    BLOCKED_MIME_TYPE,
    MISSING_INLINE_IMAGE,
    CID_NOT_REFERENCED,
    TOTAL_SIZE_EXCEEDED,
    INVALID_ATTACHMENT_DATA,
    INVALID_INLINE_DATA,
    MIME_BUILD,
)
"""The structured codes a request's params can earn in the relay's validation, in model order."""
PARAMS_REFUSED = "validation_error"
"""What :func:`relay_defect` says of params the relay refuses before building anything."""

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

HOSTILE_CONSTRUCTS = (
    '<iframe src="https://ads.example.net/frame"></iframe>',
    '<span onclick="track()">offer</span>',
    "<script>alert(1)</script>",
    '<div style="background:url(javascript:alert(1))">promo</div>',
)
"""One construct per sanitization change type (``catalog.SANITIZATION_CHANGE_TYPES`` order): a
disallowed tag, an event-handler attribute, a script, a dangerous style."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make."""

    method: str
    path: str
    json: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Shapes:
    """What a window's messages look like: the model in force, and whether attachment sizes are real."""

    model: ModelParams
    real_attachment_sizes: bool = False
    """Attachments at their drawn sizes (within the relay's limits) instead of capped content."""
    attachment_cap: int = 2048
    """Content bytes per attachment when sizes are not real."""

    @property
    def validation(self) -> dict[str, float]:
        """Probability per send of each validation code (:data:`VALIDATION_CODES`)."""
        errors = self.model.errors
        return {code: float(errors.get(code, 0.0)) for code in VALIDATION_CODES}


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


# -- attachment sizes -----------------------------------------------------------------------------
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def draw_attachments(rng: np.random.Generator, params: AttachmentParams, n: int) -> tuple[IntArray, FloatArray]:
    """Attachments of ``n`` sends as the outcome model draws them: ``(offsets, sizes)``.

    Send ``i`` has ``offsets[i + 1] - offsets[i]`` attachments (with ``params.probability``
    at least one: ``1 + Poisson(extra_mean)``, at most 10), whose sizes in bytes are
    ``sizes[offsets[i]:offsets[i + 1]]``, each its own log-normal draw (``size_p50_bytes``,
    ``size_p95_bytes``), uncapped. Three numpy draws for the whole window.
    """
    has = np.flatnonzero(rng.random(n) < params.probability)
    counts = np.zeros(n, dtype=np.int64)
    counts[has] = np.minimum(1 + rng.poisson(params.extra_mean, len(has)), MAX_ATTACHMENTS)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    mu, sigma = lognormal_params(params.size_p50_bytes, params.size_p95_bytes)
    return offsets, np.exp(mu + sigma * rng.standard_normal(int(offsets[-1])))


def real_sizes(offsets: IntArray, sizes: FloatArray) -> IntArray:
    """Drawn sizes made valid for the relay: each at most 25 MB, each send's total at most 50 MB.

    A send whose attachments add up to more than 50 MB has them all scaled down by the same
    factor (as the outcome model caps a send's attachment bytes at 50 MB); sizes are whole
    bytes, at least 1.
    """
    capped = np.minimum(sizes, MAX_ATTACHMENT_BYTES)
    sums = np.concatenate(([0.0], np.cumsum(capped)))
    totals = sums[offsets[1:]] - sums[offsets[:-1]]
    scale = np.minimum(1.0, MAX_MESSAGE_BYTES / np.maximum(totals, 1.0))
    fitted = np.floor(capped * np.repeat(scale, np.diff(offsets)))
    out: IntArray = np.maximum(fitted, 1).astype(np.int64)
    return out


_B64_TAILS = ("", "eA==", "eHg=")
"""base64 of the last 0, 1 or 2 bytes of an ``x`` filler."""


def _filler_b64(size: int) -> str:
    """base64 of ``size`` bytes of ``x``: ``eHh4`` repeated and a tail, never encoded per request."""
    groups, tail = divmod(size, 3)
    return "eHh4" * groups + _B64_TAILS[tail]


@functools.cache
def _defect_filler(size: int) -> str:
    """The filler of a defect's fixed size (25 MiB + 1, 50 MiB / 3 + 1), made once and shared.

    Its bytes are kept too (:func:`_json_bytes` splices them into each body as they are).
    """
    text = _filler_b64(size)
    _JSON_READY[id(text)] = (text, text.encode("ascii"))
    return text


_JSON_READY: dict[int, tuple[str, bytes]] = {}
"""Long strings whose JSON form is themselves in quotes, by identity, with their bytes."""


_INLINE_DATA = _filler_b64(INLINE_BYTES)
_SMALL_DATA = _filler_b64(SMALL_BYTES)
_ADDRESSES = [f"user{t}@example.com" for t in range(10_000)]


# -- relay template -------------------------------------------------------------------------------
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


# -- what the relay would make of it --------------------------------------------------------------
_ALLOWED_TAGS = frozenset(
    (
        *("p", "div", "span", "a", "img", "br", "hr", "blockquote", "pre", "code"),
        *("table", "thead", "tbody", "tr", "td", "th", "ul", "ol", "li"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "u"),
    )
)
"""The tags the relay's sanitizer keeps."""
_BLOCKED_CSS = re.compile(r"expression\s*\(|url\s*\(\s*javascript:|@import|@font-face", re.IGNORECASE)
_EMAIL = re.compile(r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class _HtmlScan(HTMLParser):
    """One pass over HTML: hostile constructs by change type, and the ``cid:`` images it references."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.changes = [0, 0, 0, 0]
        self.cids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.changes[2] += 1
            return
        if tag not in _ALLOWED_TAGS:
            self.changes[0] += 1
            return
        for name, value in attrs:
            text = value or ""
            if name.startswith("on"):
                self.changes[1] += 1
            elif name == "style" and _BLOCKED_CSS.search(text):
                self.changes[3] += 1
            elif (tag, name) in {("a", "href"), ("img", "src")} and text.startswith(("javascript:", "data:")):
                self.changes[2] += 1
            elif tag == "img" and name == "src" and text.startswith("cid:"):
                self.cids.add(text[4:])


def _scan(html: str) -> _HtmlScan:
    scan = _HtmlScan()
    scan.feed(html)
    scan.close()
    return scan


def hostile_changes(html: str) -> tuple[int, int, int, int]:
    """How many changes of each type a sanitizer would make to ``html``: one per construct.

    In ``catalog.SANITIZATION_CHANGE_TYPES`` order: ``tag_removed`` for each start tag
    outside the relay's allowed tags (``<script>`` excepted), ``attr_removed`` for each
    ``on*`` event-handler attribute of a kept tag, ``script_blocked`` for each ``<script>``
    element and each ``javascript:`` link or ``data:`` image source, ``style_sanitized`` for
    each ``style`` with ``expression(``, ``url(javascript:``, ``@import`` or ``@font-face``.

    An idealised sanitizer: the relay's own (bleach, then BeautifulSoup) counts a removed tag
    at most once per send and drops event handlers and ``javascript:`` URLs inside bleach,
    where they are not counted, so it reports fewer changes than this for the same HTML.
    """
    a, b, c, d = _scan(html).changes
    return a, b, c, d


def _decoded_size(data: str) -> int | None:
    """Bytes ``data`` decodes to with the relay's lenient ``base64.b64decode``; None if it cannot.

    Exact for any input: well-formed base64 (the common case, even 33 MB of it) is measured by
    its length after one pass that finds the characters outside the alphabet; anything else
    is decoded as the relay would.
    """
    if not data.isascii():
        return None  # b64decode refuses non-ASCII text with ValueError, which the relay catches
    raw = data.encode("ascii")
    other = raw.translate(None, _B64_ALPHABET)
    pads = len(other)
    if len(raw) % 4 == 0 and pads <= 2 and other == b"=" * pads and raw.endswith(other):
        return len(raw) // 4 * 3 - pads
    try:
        return len(binascii.a2b_base64(raw))
    except binascii.Error:
        return None


def _refused(params: dict[str, Any]) -> bool:
    """Params the relay refuses before building (its pydantic model and its recipient limit)."""
    text_fields = [params.get(key) for key in ("to", "subject", "text")]
    if not all(isinstance(v, str) for v in text_fields) or not _EMAIL.fullmatch(params["to"]):
        return True
    if not isinstance(params.get("html"), str | None):
        return True
    recipients = 1
    for key in ("cc", "bcc"):
        value = params.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) and _EMAIL.fullmatch(v) for v in value):
            return True
        recipients += len(value)
    for key, fields in (
        ("attachments", ("filename", "content_type", "data")),
        ("inline", ("cid", "filename", "content_type", "data")),
    ):
        value = params.get(key)
        if value is not None and not (
            isinstance(value, list)
            and all(isinstance(item, dict) and all(isinstance(item.get(f), str) for f in fields) for item in value)
        ):
            return True
    return recipients > MAX_RECIPIENTS


def relay_defect(params: dict[str, Any]) -> str | None:
    """The validation code the relay would report for these preview params; None when valid.

    Follows the relay's checks in its order (``GoogleAdapter._build_mime_message`` and
    ``MimeBuilder.build_message`` in the public repository, Sprint 54): params the relay refuses
    before building at all (missing or mistyped fields, bad addresses, over 100 recipients) give
    :data:`PARAMS_REFUSED`; then attachment data and inline data that do not decode as base64;
    then over 10 attachments (``mime_build``), per attachment over 25 MiB decoded, a blocked
    type, a file name over 255 characters (``mime_build``); then over 20 inline images, a
    duplicate cid, an image over 5 MiB (``mime_build`` each), a type that is not an image
    (``blocked_mime_type``), an empty or over-100-character cid (``mime_build``); then over
    50 MiB in total; then, when there is HTML and at least one inline image, a ``cid:``
    the HTML references without its image, and an image the HTML never references.
    """
    if _refused(params):
        return PARAMS_REFUSED
    attachments: list[dict[str, str]] = params.get("attachments") or []
    inline: list[dict[str, str]] = params.get("inline") or []
    attachment_sizes = _sizes(attachments)
    if attachment_sizes is None:
        return INVALID_ATTACHMENT_DATA
    inline_sizes = _sizes(inline)
    if inline_sizes is None:
        return INVALID_INLINE_DATA
    code = _attachments_defect(attachments, attachment_sizes) or _inline_defect(inline, inline_sizes)
    if code is None and sum(attachment_sizes) + sum(inline_sizes) > TOTAL_LIMIT:
        code = TOTAL_SIZE_EXCEEDED
    html = params.get("html")
    if code is None and html and inline:
        referenced, provided = _scan(html).cids, {image["cid"] for image in inline}
        if referenced - provided:
            code = MISSING_INLINE_IMAGE
        elif provided - referenced:
            code = CID_NOT_REFERENCED
    return code


def _sizes(items: list[dict[str, str]]) -> list[int] | None:
    """Decoded sizes of the items' data, or None when one does not decode."""
    sizes = []
    for item in items:
        size = _decoded_size(item["data"])
        if size is None:
            return None
        sizes.append(size)
    return sizes


def _attachments_defect(attachments: list[dict[str, str]], sizes: list[int]) -> str | None:
    if len(attachments) > MAX_ATTACHMENTS:
        return MIME_BUILD  # validation_error_attachment_count_exceeded, which the adapter does not map
    for attachment, size in zip(attachments, sizes, strict=True):
        if size > ATTACHMENT_LIMIT:
            return ATTACHMENT_TOO_LARGE
        if attachment["content_type"] in BLOCKED_TYPES:
            return BLOCKED_MIME_TYPE
        if len(attachment["filename"]) > MAX_FILENAME:
            return MIME_BUILD
    return None


def _inline_defect(inline: list[dict[str, str]], sizes: list[int]) -> str | None:
    cids = [image["cid"] for image in inline]
    if len(inline) > MAX_INLINE or len(set(cids)) != len(cids):
        return MIME_BUILD
    for image, size in zip(inline, sizes, strict=True):
        if size > INLINE_LIMIT:
            return MIME_BUILD
        if image["content_type"] not in INLINE_TYPES:
            return BLOCKED_MIME_TYPE
        if not image["cid"] or len(image["cid"]) > MAX_CID:
            return MIME_BUILD
    return None


# -- the wire -------------------------------------------------------------------------------------
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
        body = _json_bytes(request.json)
        return self.head(request.method, request.path, extra) + str(len(body)).encode() + b"\r\n\r\n" + body


_SPLICE_MIN = 1 << 16
_JSON_PLAIN = bytes(sorted(set(range(0x20, 0x7F)) - {ord('"'), ord("\\")}))
"""The bytes JSON writes as they are inside a string."""
_PLACEHOLDER = re.compile(rb'"\\u0000(\d+)"')


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


# -- gmail template -------------------------------------------------------------------------------
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
