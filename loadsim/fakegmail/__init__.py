"""A fake Gmail send API for driving the relay (or any Gmail client) against the outcome model.

``loadsim fake-gmail`` serves ``POST /gmail/v1/users/{userId}/messages/send`` with
answers drawn from the model's Gmail-side outcomes and latencies, a per-user quota
that turns load into 429s, and a control API that starts and stops the simulator's
fault scenarios live. The public surface is listed here; the modules behind it are:

* :mod:`~loadsim.fakegmail.server`: the endpoint and its lifecycle;
* :mod:`~loadsim.fakegmail.outcomes`: the model seen from Gmail's side;
* :mod:`~loadsim.fakegmail.quota`: per-user token buckets;
* :mod:`~loadsim.fakegmail.responses`: Gmail-shaped error bodies;
* :mod:`~loadsim.fakegmail.control`: the control API and live overlays;
* :mod:`~loadsim.fakegmail.metrics`: ``fakegmail_*`` counters;
* :mod:`~loadsim.fakegmail.command`: the ``loadsim fake-gmail`` options.
"""

from __future__ import annotations

from loadsim.fakegmail.command import HELP, command, config_from_args, main_args, run_from_args
from loadsim.fakegmail.control import ControlError, LiveOverlays, OverlayRequest, parse_overlay_request
from loadsim.fakegmail.outcomes import GMAIL_OUTCOMES, Call, CallSampler, gmail_view
from loadsim.fakegmail.quota import QuotaParams, UserQuota
from loadsim.fakegmail.responses import GmailError
from loadsim.fakegmail.server import (
    DEFAULT_LISTEN,
    EXPIRED_SUFFIX,
    SEND_PATH,
    FakeGmail,
    FakeGmailConfig,
    bearer_token,
    is_base64url,
    serve,
)

__all__ = [
    "DEFAULT_LISTEN",
    "EXPIRED_SUFFIX",
    "GMAIL_OUTCOMES",
    "HELP",
    "SEND_PATH",
    "Call",
    "CallSampler",
    "ControlError",
    "FakeGmail",
    "FakeGmailConfig",
    "GmailError",
    "LiveOverlays",
    "OverlayRequest",
    "QuotaParams",
    "UserQuota",
    "bearer_token",
    "command",
    "config_from_args",
    "gmail_view",
    "is_base64url",
    "main_args",
    "parse_overlay_request",
    "run_from_args",
    "serve",
]
