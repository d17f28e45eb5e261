"""The relay's validation and sanitization rules, as loadsim models them.

The limits and structured codes of the relay's validation (:data:`VALIDATION_CODES`), and what
the relay would make of a request: :func:`relay_defect` follows the relay's checks, in its
order, to the one code it would report for a preview's params; :func:`hostile_changes` counts
the changes its sanitizer would make to the HTML, one per hostile construct
(:data:`HOSTILE_CONSTRUCTS` has one construct of each change type). The relay template builds
its defects and hostile HTML against these rules; the tests, and their fake relay, check
requests with them.
"""

from __future__ import annotations

import binascii
import re
from html.parser import HTMLParser
from typing import Any

from loadsim.model.sampler import MAX_ATTACHMENTS

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

HOSTILE_CONSTRUCTS = (
    '<iframe src="https://ads.example.net/frame"></iframe>',
    '<span onclick="track()">offer</span>',
    "<script>alert(1)</script>",
    '<div style="background:url(javascript:alert(1))">promo</div>',
)
"""One construct per sanitization change type (``catalog.SANITIZATION_CHANGE_TYPES`` order): a
disallowed tag, an event-handler attribute, a script, a dangerous style."""


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
