"""Request templates under the input-side fault scenarios: defects, hostile HTML, real attachment sizes.

Statistical checks use fixed seeds and tolerances of 4 standard deviations (a false failure
about once in 16,000 runs per check, were the seed ever changed); chi-square checks use the
0.1% critical value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from array import array
from dataclasses import dataclass, replace
from email import policy
from email.parser import BytesParser
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from loadsim.drivers.templates import (
    ATTACHMENT_LIMIT,
    HOSTILE_CONSTRUCTS,
    MIB,
    PARAMS_REFUSED,
    TOTAL_LIMIT,
    VALIDATION_CODES,
    GmailPayloads,
    Message,
    MessageSampler,
    Request,
    Shapes,
    Wire,
    gmail_attachments,
    hostile_changes,
    relay_defect,
    relay_preview,
)
from loadsim.model.controller import ControllerParams
from loadsim.model.params import AttachmentParams, ModelParams
from loadsim.model.sampler import MAX_ATTACHMENT_BYTES, MAX_MESSAGE_BYTES
from loadsim.overlays.scenarios import SCENARIOS, VALIDATION_MIX
from loadsim.overlays.state import RunState

HEALTHY = ModelParams()
CHI2_999 = {8: 26.12, 9: 27.88, 10: 29.59}
"""Chi-square critical values at 0.1% by degrees of freedom."""


def overlaid(name: str, rate: float = 0.0) -> ModelParams:
    """The model with scenario ``name`` applied at full intensity over the healthy background."""
    scenario = SCENARIOS[name]
    state = RunState(model=ModelParams(), controller=ControllerParams(), rate=rate)
    return scenario.apply(state, 1.0, scenario.options).model


def draw(model: ModelParams, n: int, seed: int, *, real: bool = False) -> list[Message]:
    sampler = MessageSampler(np.random.default_rng(seed))
    shapes = Shapes(model, real_attachment_sizes=real)
    return [sampler.draw(shapes) for _ in range(n)]


def within(observed: float, expected: float, sd: float, sigmas: float = 4.0) -> bool:
    return abs(observed - expected) <= sigmas * sd


def count_pmf(att: AttachmentParams) -> NDArray[np.float64]:
    """P(a send has k attachments), k = 0..10: with ``probability``, 1 + Poisson(extra_mean) capped at 10."""
    lam = att.extra_mean
    poisson = np.array([math.exp(-lam) * lam**j / math.factorial(j) for j in range(9)])
    pmf = np.zeros(11)
    pmf[0] = 1 - att.probability
    pmf[1:10] = att.probability * poisson
    pmf[10] = att.probability * (1 - poisson.sum())
    return pmf


def chi_square(observed: NDArray[np.int64], expected: NDArray[np.float64]) -> tuple[float, int]:
    """Statistic and degrees of freedom, the bins with fewer than 5 expected merged into the last one kept."""
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(((obs - exp) ** 2 / exp).sum()), len(exp) - 1


def decoded_size(data: str) -> int:
    """Bytes well-formed base64 decodes to, from its length (the relay template's data always is)."""
    return len(data) // 4 * 3 - data[-2:].count("=")


def body_of(request: bytes) -> bytes:
    head, body = request.split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert int(headers["Content-Length"]) == len(body)
    return body


B64URL = re.compile(r"[A-Za-z0-9_-]*")


@pytest.fixture(scope="module")
def healthy() -> list[Message]:
    return draw(HEALTHY, 10_000, seed=11)


@pytest.fixture(scope="module")
def validation_spike() -> list[Message]:
    return draw(overlaid("validation-spike"), 2_000, seed=12)


@pytest.fixture(scope="module")
def sanitization_spike() -> list[Message]:
    return draw(overlaid("sanitization-spike", rate=5.0), 3_000, seed=13)


def verdicts(messages: list[Message]) -> list[str | None]:
    """What the relay would report for each message's preview params."""
    return [relay_defect(relay_preview(m, None).json["params"]) for m in messages]


@pytest.fixture(scope="module")
def healthy_verdicts(healthy: list[Message]) -> list[str | None]:
    return verdicts(healthy)


@pytest.fixture(scope="module")
def validation_spike_verdicts(validation_spike: list[Message]) -> list[str | None]:
    return verdicts(validation_spike)


class TestShapes:
    def test_validation_is_the_models_probability_of_each_of_the_eight_codes(self) -> None:
        model = overlaid("validation-spike")
        assert set(VALIDATION_CODES) == set(VALIDATION_MIX)
        assert Shapes(model).validation == {code: model.errors[code] for code in VALIDATION_CODES}
        assert sum(Shapes(model).validation.values()) == pytest.approx(0.15 + sum(Shapes(HEALTHY).validation.values()))


class TestValidationDefects:
    @pytest.mark.parametrize("which", ["healthy", "validation_spike"])
    def test_relay_defect_agrees_with_the_drawn_code_for_every_message(
        self, which: str, request: pytest.FixtureRequest
    ) -> None:
        messages: list[Message] = request.getfixturevalue(which)
        assert request.getfixturevalue(f"{which}_verdicts") == [m.defect for m in messages]

    @pytest.mark.parametrize(
        ("which", "model"), [("healthy", HEALTHY), ("validation_spike", overlaid("validation-spike"))]
    )
    def test_share_of_rejected_messages_is_the_models_validation_probability(
        self, which: str, model: ModelParams, request: pytest.FixtureRequest
    ) -> None:
        found: list[str | None] = request.getfixturevalue(f"{which}_verdicts")
        p = sum(Shapes(model).validation.values())
        rejected = sum(code is not None for code in found)
        n = len(found)
        assert within(rejected, n * p, math.sqrt(n * p * (1 - p))), (rejected, n * p)

    def test_mix_of_codes_under_the_spike_is_the_models(self, validation_spike_verdicts: list[str | None]) -> None:
        probabilities = Shapes(overlaid("validation-spike")).validation
        codes = [*VALIDATION_CODES, None]
        p = np.array([*(probabilities[c] for c in VALIDATION_CODES), 1 - sum(probabilities.values())])
        observed = np.array([validation_spike_verdicts.count(c) for c in codes])
        statistic, df = chi_square(observed, len(validation_spike_verdicts) * p)
        assert df == 8
        assert statistic < CHI2_999[df], dict(zip(codes, observed.tolist(), strict=True))

    def test_the_healthy_background_draws_only_codes_it_gives_a_probability(self, healthy: list[Message]) -> None:
        drawn = {m.defect for m in healthy} - {None}
        assert drawn <= {c for c, p in Shapes(HEALTHY).validation.items() if p > 0}
        assert drawn, "10,000 healthy sends at 0.065% expect 6.5 defects"


def one_with(code: str, seed: int = 0) -> Message:
    """A message carrying ``code``: drawn from a model where that code has probability 0.99."""
    sampler = MessageSampler(np.random.default_rng(seed))
    shapes = Shapes(ModelParams(errors={code: 0.99}))
    return next(m for m in iter(lambda: sampler.draw(shapes), None) if m.defect == code)


class TestDefectPayloads:
    @pytest.mark.parametrize("code", VALIDATION_CODES)
    def test_each_payload_earns_its_code_and_is_a_well_formed_request(self, code: str) -> None:
        message = one_with(code)
        request = Wire("http://127.0.0.1:9480", "tok").request(relay_preview(message, "tok"))
        assert body_of(request) == compact(relay_preview(message, "tok").json)
        params = json.loads(body_of(request))["params"]
        assert params == relay_preview(message, None).json["params"]
        assert relay_defect(params) == code
        assert params["text"]

    def test_too_large_is_one_attachment_just_over_25_mib_of_real_bytes(self) -> None:
        (attachment,) = one_with("validation_error_attachment_too_large").attachments
        assert len(base64.b64decode(attachment["data"])) == ATTACHMENT_LIMIT + 1

    def test_total_size_is_attachments_each_under_25_mb_just_over_50_mib_together(self) -> None:
        sizes = [decoded_size(a["data"]) for a in one_with("validation_error_total_size_exceeded").attachments]
        assert all(s <= MAX_ATTACHMENT_BYTES for s in sizes)
        assert sum(sizes) == TOTAL_LIMIT + 1

    def test_blocked_type_is_a_windows_executable(self) -> None:
        last = one_with("validation_error_blocked_mime_type").attachments[-1]
        assert (last["filename"], last["content_type"]) == ("setup.exe", "application/x-msdownload")

    def test_missing_inline_image_references_a_cid_beside_one_that_is_present(self) -> None:
        message = one_with("validation_error_missing_inline_image")
        assert message.inline
        assert 'src="cid:missing@loadsim"' in message.html
        assert all(f'src="cid:{image["cid"]}"' in message.html for image in message.inline)

    def test_unreferenced_inline_image_is_never_named_in_the_html(self) -> None:
        message = one_with("validation_error_cid_not_referenced")
        assert message.inline[-1]["cid"] == "orphan@loadsim"
        assert "orphan@loadsim" not in message.html

    @pytest.mark.parametrize(
        ("code", "field"),
        [
            ("validation_error_invalid_attachment_data", "attachments"),
            ("validation_error_invalid_inline_data", "inline"),
        ],
    )
    def test_invalid_data_does_not_decode_even_leniently(self, code: str, field: str) -> None:
        data = getattr(one_with(code), field)[-1]["data"]
        with pytest.raises(binascii.Error):
            base64.b64decode(data)

    def test_mime_build_is_one_attachment_over_the_limit_of_ten(self) -> None:
        assert len(one_with("validation_error_mime_build").attachments) == 11


def valid_params(**changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "to": "a@example.com",
        "cc": ["b@example.com"],
        "subject": "s",
        "text": "t",
        "html": '<p>hi</p><img src="cid:logo@x">',
        "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "data": "eHh4"}],
        "inline": [{"cid": "logo@x", "filename": "logo.png", "content_type": "image/png", "data": "eHh4"}],
    }
    return {**params, **changes}


def attachment(size: int = 3, **changes: str) -> dict[str, str]:
    data = base64.b64encode(b"x" * size).decode()
    return {"filename": "a.pdf", "content_type": "application/pdf", "data": data, **changes}


def image(cid: str = "logo@x", **changes: str) -> dict[str, str]:
    return {"cid": cid, "filename": "logo.png", "content_type": "image/png", "data": "eHh4", **changes}


class TestRelayDefect:
    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({}, None),
            ({"attachments": [], "inline": [], "html": '<img src="cid:nowhere">'}, None),
            ({"text": None}, PARAMS_REFUSED),
            ({"to": "not an address"}, PARAMS_REFUSED),
            ({"cc": [f"u{k}@example.com" for k in range(100)]}, PARAMS_REFUSED),
            ({"attachments": [attachment(ATTACHMENT_LIMIT)]}, None),
            ({"attachments": [attachment(ATTACHMENT_LIMIT + 1)]}, "validation_error_attachment_too_large"),
            ({"attachments": [attachment(content_type="application/zip")]}, "validation_error_blocked_mime_type"),
            ({"attachments": [attachment(filename="a" * 256)]}, "validation_error_mime_build"),
            ({"attachments": [attachment()] * 11}, "validation_error_mime_build"),
            ({"attachments": [attachment(data="eHh")]}, "validation_error_invalid_attachment_data"),
            ({"attachments": [attachment(data="é")]}, "validation_error_invalid_attachment_data"),
            ({"inline": [image(data="eHh")]}, "validation_error_invalid_inline_data"),
            ({"inline": [image(data="!")]}, None),  # the lenient decoder drops the "!": empty data
            ({"inline": [image(content_type="text/plain")]}, "validation_error_blocked_mime_type"),
            ({"inline": [image(), image()]}, "validation_error_mime_build"),
            ({"inline": [image(), image("x" * 101)], "html": '<img src="cid:logo@x">'}, "validation_error_mime_build"),
            ({"attachments": [attachment(20 * MIB)] * 2 + [attachment(10 * MIB + 1)]},
             "validation_error_total_size_exceeded"),
            ({"html": '<img src="cid:logo@x"><img src="cid:gone@x">'}, "validation_error_missing_inline_image"),
            ({"html": "<p>no images</p>"}, "validation_error_cid_not_referenced"),
        ],
    )  # fmt: skip
    def test_follows_the_relays_checks_in_its_order(self, changes: dict[str, Any], expected: str | None) -> None:
        assert relay_defect(valid_params(**changes)) == expected

    @pytest.mark.parametrize(
        "data",
        [
            "",
            "eHh4",
            "eHg=",
            "eA==",
            "eHh4=",
            "eHh4====",
            "eA=",
            "eHg",
            "eHh",
            "e",
            "eH h4",
            "eHh4\n",
            "=eHh4",
            "e=Hh4",
        ],
    )
    def test_attachment_data_is_judged_like_pythons_lenient_decoder(self, data: str) -> None:
        try:
            size: int | None = len(base64.b64decode(data))
        except binascii.Error:
            size = None
        params = valid_params(attachments=[attachment(data=data)], inline=[], html="<p></p>")
        assert relay_defect(params) == (None if size is not None else "validation_error_invalid_attachment_data")


class TestHostileHtml:
    def test_each_construct_is_one_change_of_its_type(self) -> None:
        for k, construct in enumerate(HOSTILE_CONSTRUCTS):
            assert hostile_changes(f"<p>{construct}</p>") == tuple(int(j == k) for j in range(4))
        assert hostile_changes('<p class="a" style="color: red">x<img src="cid:a@b" alt=""></p>') == (0, 0, 0, 0)

    @pytest.mark.parametrize("which", ["healthy", "sanitization_spike"])
    def test_every_message_carries_what_it_says(self, which: str, request: pytest.FixtureRequest) -> None:
        messages: list[Message] = request.getfixturevalue(which)
        assert [hostile_changes(m.html) for m in messages] == [m.hostile for m in messages]

    @pytest.mark.parametrize(
        ("which", "model"), [("healthy", HEALTHY), ("sanitization_spike", overlaid("sanitization-spike", rate=5.0))]
    )
    def test_mean_changes_per_message_are_the_models_means(
        self, which: str, model: ModelParams, request: pytest.FixtureRequest
    ) -> None:
        messages: list[Message] = request.getfixturevalue(which)
        counts = np.array([hostile_changes(m.html) for m in messages])
        means = model.sanitization.means()
        for k, mean in enumerate(means):
            # Poisson: the variance is the mean.
            assert within(counts[:, k].mean(), mean, math.sqrt(mean / len(messages))), (k, counts[:, k].mean(), mean)

    def test_the_spike_at_5_sends_per_second_adds_16_changes_per_send(self) -> None:
        added = sum(overlaid("sanitization-spike", rate=5.0).sanitization.means()) - sum(HEALTHY.sanitization.means())
        assert added == pytest.approx(16.0)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class TestWire:
    @pytest.mark.parametrize(
        "value",
        [
            {"data": "eHh4" * 30_000, "small": "a"},
            {"a": ["eHh4" * 30_000, {"b": "eHg=" * 20_000}], "c": 1, "d": None, "e": 1.5, "f": True},
            {"placeholder": "\x000", "data": "eHh4" * 30_000},
            {"placeholder": "\x001", "data": "eHh4" * 30_000},
            {"quote": 'x"' * 40_000, "backslash": "\\" * 70_000, "control": "\n" * 70_000},
            {"unicode": "é" * 70_000, "del": "\x7f" * 70_000, "plain": "z" * 70_000},
        ],
    )
    def test_bodies_are_exactly_what_json_dumps_writes(self, value: dict[str, Any]) -> None:
        request = Wire("http://h", None).request(relay_preview_like(value))
        assert body_of(request) == compact(value)


def relay_preview_like(value: dict[str, Any]) -> Request:
    return Request("POST", "/actions/preview", value, {})


class TestRelayRequests:
    def test_previews_are_json_with_the_right_length_and_everything_the_relay_requires(
        self, healthy: list[Message]
    ) -> None:
        wire = Wire("http://127.0.0.1:9480", "tok")
        for message in healthy[:1000]:
            sent = json.loads(body_of(wire.request(relay_preview(message, "tok"))))
            assert sent["action"] == "gmail.send"
            params = sent["params"]
            assert {"to", "cc", "subject", "text", "html"} <= set(params)
            assert [params["to"], *params["cc"]] == message.to
            assert params.get("inline", []) == message.inline
            assert params.get("attachments", []) == message.attachments

    def test_inline_images_follow_the_models_matched_references(self, healthy: list[Message]) -> None:
        counts = np.array([len(m.inline) for m in healthy if m.defect is None])
        mean = HEALTHY.inline.matched
        assert within(counts.mean(), mean, math.sqrt(mean / len(counts)))
        with_images = next(m for m in healthy if m.inline and m.defect is None)
        assert all(f'<img src="cid:{image["cid"]}"' in with_images.html for image in with_images.inline)


class TestRelayAttachments:
    def test_without_real_sizes_content_is_capped(self, healthy: list[Message]) -> None:
        sizes = [decoded_size(a["data"]) for m in healthy if m.defect is None for a in m.attachments]
        assert len(sizes) > 2000
        assert max(sizes) == 2048

    def test_with_real_sizes_counts_and_median_follow_the_model(self) -> None:
        # mime-slow's counts with sizes a hundred times smaller (30 KB median, well over the 2 KB
        # cap): 3,000 messages in half a second. The next test takes mime-slow as it is.
        model = scaled_mime_slow(0.01)
        messages = [m for m in draw(model, 3_000, seed=14, real=True) if m.defect is None]
        counts = np.array([len(m.attachments) for m in messages])
        statistic, df = chi_square(np.bincount(counts, minlength=11), len(counts) * count_pmf(model.attachments))
        assert statistic < CHI2_999[df]
        sizes = np.array([decoded_size(a["data"]) for m in messages for a in m.attachments])
        assert within(math.log(np.median(sizes) / model.attachments.size_p50_bytes), 0, median_sd(model, len(sizes)))

    def test_mime_slow_messages_carry_megabytes_within_the_relays_limits(self) -> None:
        model = overlaid("mime-slow")
        messages = [m for m in draw(model, 40, seed=15, real=True) if m.defect is None]
        sizes = np.array([decoded_size(a["data"]) for m in messages for a in m.attachments])
        totals = [sum(decoded_size(a["data"]) for a in m.attachments) for m in messages]
        # About 110 attachments: a loose check of the median (4 sd is a factor of 1.6 either way).
        assert within(math.log(np.median(sizes) / model.attachments.size_p50_bytes), 0, median_sd(model, len(sizes)))
        assert sizes.max() <= MAX_ATTACHMENT_BYTES
        assert 10 * MIB < max(totals) <= MAX_MESSAGE_BYTES
        assert verdicts(messages[:10]) == [None] * 10
        wire = Wire("http://h", None)
        assert all(
            body_of(wire.request(relay_preview(m, None))) == compact(relay_preview(m, None).json) for m in messages[:2]
        )


def scaled_mime_slow(factor: float) -> ModelParams:
    model = overlaid("mime-slow")
    att = model.attachments
    scaled = replace(att, size_p50_bytes=att.size_p50_bytes * factor, size_p95_bytes=att.size_p95_bytes * factor)
    return replace(model, attachments=scaled)


def median_sd(model: ModelParams, n: int) -> float:
    """Standard deviation of the log of the sample median of n log-normal sizes: about 1.2533 sigma / sqrt(n)."""
    att = model.attachments
    sigma = math.log(att.size_p95_bytes / att.size_p50_bytes) / 1.6448536
    return 1.2533 * sigma / math.sqrt(n)


# -- the Gmail template -----------------------------------------------------------------------------
# The reference: GmailPayloads as it was before shapes (commit 792d6e7), verbatim but for names.
_REF_FILL = b"x" * 200_000
_REF_FILL_B64 = binascii.b2a_base64(_REF_FILL[: 3 * (len(_REF_FILL) // 3)], newline=False)
_REF_ADDRESSES = [f"user{t}@example.com" for t in range(10_000)]
_REF_URLSAFE = bytes.maketrans(b"+/", b"-_")


@dataclass(slots=True)
class RefBatch:
    users: array[int]
    recipients: array[int]
    to: array[int]
    subjects: array[int]
    html: array[int]


def _ref_ints(values: NDArray[np.integer[Any]]) -> array[int]:
    out = array("i")
    out.frombytes(values.astype(np.intc).tobytes())
    return out


class RefGmailPayloads:
    def __init__(self, wire: Wire, users: int, rng: np.random.Generator, user_rng: np.random.Generator) -> None:
        self.rng = rng
        self.user_rng = user_rng
        self.users = users
        self._heads = [wire.head("POST", f"/gmail/v1/users/user{u}@example.com/messages/send") for u in range(users)]

    def draw(self, n: int) -> RefBatch:
        rng = self.rng
        recipients = 1 + rng.poisson(0.6, n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(recipients, out=offsets[1:])
        html = np.clip(rng.lognormal(np.log(1500), 0.8, n), 50, 200_000).astype(np.int64)
        return RefBatch(
            users=_ref_ints(self.user_rng.integers(0, self.users, n)),
            recipients=_ref_ints(offsets),
            to=_ref_ints(rng.integers(0, 10_000, int(offsets[-1]))),
            subjects=_ref_ints(rng.integers(0, 1_000_000, n)),
            html=_ref_ints(html),
        )

    def build(self, batch: RefBatch, i: int) -> bytes:
        r0, r1 = batch.recipients[i], batch.recipients[i + 1]
        to = ", ".join([_REF_ADDRESSES[t] for t in batch.to[r0:r1]])
        fill = max(batch.html[i] - 7, 0)
        head = (
            f"To: {to}\r\nSubject: Report {batch.subjects[i]}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>"
        ).encode()
        top = min(-len(head) % 3, fill)
        middle = (fill - top) // 3
        rest = fill - top - 3 * middle
        first = binascii.b2a_base64(head + _REF_FILL[:top], newline=False).translate(_REF_URLSAFE)
        last = binascii.b2a_base64(_REF_FILL[:rest] + b"</p>", newline=False).translate(_REF_URLSAFE).rstrip(b"=")
        if top < -len(head) % 3:
            first = binascii.b2a_base64(head + _REF_FILL[:fill] + b"</p>", newline=False).translate(_REF_URLSAFE)
            first, middle, last = first.rstrip(b"="), 0, b""
        length = len(first) + 4 * middle + len(last) + 10
        return b"".join(
            (
                self._heads[batch.users[i]],
                str(length).encode(),
                b'\r\n\r\n{"raw":"',
                first,
                _REF_FILL_B64[: 4 * middle],
                last,
                b'"}',
            )
        )


def payloads(seed: int, reference: bool = False) -> Any:
    kind = RefGmailPayloads if reference else GmailPayloads
    return kind(
        Wire("http://127.0.0.1:9480/base", "tok"), 50, np.random.default_rng(seed), np.random.default_rng(seed + 1)
    )


def small_attachments(probability: float = 0.9) -> ModelParams:
    """Attachments of a few hundred bytes to a few KB: every alignment of the pieces, quickly."""
    att = replace(
        HEALTHY.attachments, probability=probability, extra_mean=2.0, size_p50_bytes=200.0, size_p95_bytes=5000.0
    )
    return replace(HEALTHY, attachments=att)


def raw_of(request: bytes) -> str:
    raw = json.loads(body_of(request))["raw"]
    assert isinstance(raw, str)
    assert B64URL.fullmatch(raw)
    return raw


def mime_of(raw: str) -> bytes:
    mime = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    assert base64.urlsafe_b64encode(mime).decode().rstrip("=") == raw
    return mime


class TestGmailPayloads:
    @pytest.mark.parametrize(
        "shapes",
        [None, Shapes(HEALTHY), Shapes(overlaid("mime-slow")), Shapes(small_attachments())],
        ids=["none", "healthy", "mime-slow", "small-attachments"],
    )
    def test_without_real_sizes_the_bytes_are_exactly_todays(self, shapes: Shapes | None) -> None:
        new, ref = payloads(21), payloads(21, reference=True)
        for n in (1, 7, 2500, 0, 300):  # windows one after another: the random streams stay in step
            batch, expected = new.draw(n, shapes), ref.draw(n)
            assert batch.attachments is None
            assert [new.build(batch, i) for i in range(n)] == [ref.build(expected, i) for i in range(n)]

    def test_with_real_sizes_counts_and_median_follow_the_mime_slow_model(self) -> None:
        model = overlaid("mime-slow")
        batch = payloads(22).draw(20_000, Shapes(model, real_attachment_sizes=True))
        assert batch.attachments is not None
        assert batch.sizes is not None
        counts = np.diff(np.array(batch.attachments))
        statistic, df = chi_square(np.bincount(counts, minlength=11), len(counts) * count_pmf(model.attachments))
        assert statistic < CHI2_999[df]
        sizes = np.array(batch.sizes)
        # Within 4 sd of the sample median, plus 1% for the 1.6% of sends scaled down to 50 MB.
        tolerance = 4 * median_sd(model, len(sizes)) + 0.01
        assert abs(math.log(np.median(sizes) / model.attachments.size_p50_bytes)) < tolerance
        offsets = np.array(batch.attachments)
        totals = np.add.reduceat(np.append(sizes, 0), offsets[:-1]) * (counts > 0)
        assert sizes.max() <= MAX_ATTACHMENT_BYTES
        assert totals.max() <= MAX_MESSAGE_BYTES

    def test_with_real_sizes_raw_messages_parse_as_mime_with_their_attachments(self) -> None:
        source = payloads(23)
        batch = source.draw(300, Shapes(small_attachments(), real_attachment_sizes=True))
        assert batch.attachments is not None
        assert batch.sizes is not None
        multipart = 0
        for i in range(300):
            raw = raw_of(source.build(batch, i))
            message = BytesParser(policy=policy.default).parsebytes(mime_of(raw))
            expected = list(batch.sizes[batch.attachments[i] : batch.attachments[i + 1]])
            assert [len(part.get_content()) for part in message.iter_attachments()] == expected
            assert gmail_attachments(raw) == expected
            html = next(part for part in message.walk() if part.get_content_type() == "text/html")
            assert html.get_content() == "<p>" + "x" * max(batch.html[i] - 7, 0) + "</p>"
            assert message["To"]
            multipart += message.is_multipart()
        assert multipart == sum(1 for i in range(300) if batch.attachments[i + 1] > batch.attachments[i])
        assert multipart > 200

    def test_mime_slow_messages_carry_megabytes_of_real_attachments(self) -> None:
        source = payloads(24)
        batch = source.draw(6, Shapes(overlaid("mime-slow"), real_attachment_sizes=True))
        assert batch.attachments is not None
        assert batch.sizes is not None
        sizes = [list(batch.sizes[batch.attachments[i] : batch.attachments[i + 1]]) for i in range(6)]
        assert sum(map(sum, sizes)) > 10 * MIB
        smallest = min((i for i in range(6) if sizes[i]), key=lambda i: sum(sizes[i]))
        for i in range(6):
            raw = raw_of(source.build(batch, i))
            assert gmail_attachments(raw) == sizes[i]
            if i == smallest:
                message = BytesParser(policy=policy.default).parsebytes(mime_of(raw))
                assert [len(part.get_content()) for part in message.iter_attachments()] == sizes[i]

    def test_a_single_part_message_has_no_attachments(self) -> None:
        source = payloads(25)
        batch = source.draw(5)
        assert [gmail_attachments(raw_of(source.build(batch, i))) for i in range(5)] == [[]] * 5
