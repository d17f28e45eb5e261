"""Gmail-shaped answers: the JSON error bodies Google APIs send, and the mixes behind the model's classes.

A client's error handling branches on the HTTP code, the ``status`` and the first
``errors[].reason``, so the fake answers with Google's own shapes and wordings
(see https://developers.google.com/gmail/api/guides/handle-errors)::

    {"error": {"code": 429, "message": "User-rate limit exceeded.  Retry after 2025-01-01T12:00:01.000Z",
               "errors": [{"message": "...", "domain": "usageLimits", "reason": "rateLimitExceeded"}],
               "status": "RESOURCE_EXHAUSTED"}}

The outcome model has a single class for Gmail 4xx (other than 429) and one for 5xx;
each is answered from a small fixed mix of what Gmail really returns, chosen by a
uniform draw that comes with the sampled outcome (so the same seed gives the same
answers). The mixes are a model too: their weights are plausible, not measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GmailError:
    """One kind of error answer, as Google APIs shape it."""

    code: int
    status: str
    """The canonical status name, e.g. ``RESOURCE_EXHAUSTED``."""
    reason: str
    domain: str
    """``global`` or ``usageLimits``."""
    message: str

    def body(self, **extra: str) -> dict[str, Any]:
        """The JSON body; ``extra`` adds fields to ``errors[0]`` (``location``, ``locationType``)."""
        detail = {"message": self.message, "domain": self.domain, "reason": self.reason, **extra}
        return {"error": {"code": self.code, "message": self.message, "errors": [detail], "status": self.status}}


Mix = Sequence[tuple[float, GmailError]]
"""``(weight, answer)`` pairs; the weights add up to 1."""


def pick(mix: Mix, u: float) -> GmailError:
    """The answer of ``mix`` that the uniform draw ``u`` (in [0, 1)) falls on."""
    acc = 0.0
    for weight, error in mix:
        acc += weight
        if u < acc:
            return error
    return mix[-1][1]


CLIENT_ERRORS: Mix = (
    (0.4, GmailError(400, "FAILED_PRECONDITION", "failedPrecondition", "global", "Precondition check failed.")),
    (0.3, GmailError(400, "INVALID_ARGUMENT", "invalidArgument", "global", "Invalid To header")),
    (
        0.2,
        GmailError(
            403,
            "PERMISSION_DENIED",
            "insufficientPermissions",
            "global",
            "Request had insufficient authentication scopes.",
        ),
    ),
    (0.1, GmailError(404, "NOT_FOUND", "notFound", "global", "Requested entity was not found.")),
)
"""What the model's ``gmail_4xx`` class answers: never 401 (tokens decide that) nor 429 (its own class)."""

SERVER_ERRORS: Mix = (
    (0.65, GmailError(500, "INTERNAL", "backendError", "global", "Internal error encountered.")),
    (0.35, GmailError(503, "UNAVAILABLE", "backendError", "global", "The service is currently unavailable.")),
)
"""What the model's ``gmail_5xx`` class answers."""

CONCURRENT_LIMIT = GmailError(
    429, "RESOURCE_EXHAUSTED", "rateLimitExceeded", "usageLimits", "Too many concurrent requests for user."
)
"""The model's own 429s (Gmail's concurrent-request limit): Gmail sends no ``Retry-After`` with these."""

UNAUTHENTICATED = GmailError(
    401,
    "UNAUTHENTICATED",
    "authError",
    "global",
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
)

DEADLINE_EXCEEDED = GmailError(
    504, "DEADLINE_EXCEEDED", "backendError", "global", "Deadline expired before operation could complete."
)
"""What a held (timed-out) call finally answers, if its client is still waiting."""


def user_rate_limited(retry_at: str) -> GmailError:
    """The per-user quota's 429; ``retry_at`` is an ISO UTC time, as Gmail writes it."""
    return GmailError(
        429,
        "RESOURCE_EXHAUSTED",
        "rateLimitExceeded",
        "usageLimits",
        f"User-rate limit exceeded.  Retry after {retry_at}",
    )


def invalid_argument(message: str, reason: str = "invalidArgument") -> GmailError:
    """A 400 for a request Gmail cannot read."""
    return GmailError(400, "INVALID_ARGUMENT", reason, "global", message)


RAW_REQUIRED = invalid_argument("'raw' RFC822 payload message string or uploading message via /upload/* URL required")
NOT_AN_OBJECT = invalid_argument(
    'Invalid JSON payload received. Unknown name "": Root element must be a message.', "invalid"
)
