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

from loadsim.drivers.templates._gmail import GmailBatch, GmailPayloads, gmail_attachments
from loadsim.drivers.templates._http import Request, Wire
from loadsim.drivers.templates._relay import Message, MessageSampler, relay_execute, relay_preview
from loadsim.drivers.templates._rules import (
    ATTACHMENT_LIMIT,
    HOSTILE_CONSTRUCTS,
    MIB,
    PARAMS_REFUSED,
    TOTAL_LIMIT,
    VALIDATION_CODES,
    hostile_changes,
    relay_defect,
)
from loadsim.drivers.templates._shapes import Shapes

TEMPLATES = ("gmail", "relay")
"""The built-in flows, by the name ``--template`` takes."""

__all__ = [
    "ATTACHMENT_LIMIT",
    "HOSTILE_CONSTRUCTS",
    "MIB",
    "PARAMS_REFUSED",
    "TEMPLATES",
    "TOTAL_LIMIT",
    "VALIDATION_CODES",
    "GmailBatch",
    "GmailPayloads",
    "Message",
    "MessageSampler",
    "Request",
    "Shapes",
    "Wire",
    "gmail_attachments",
    "hostile_changes",
    "relay_defect",
    "relay_execute",
    "relay_preview",
]
