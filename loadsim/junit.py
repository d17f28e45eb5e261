"""JUnit XML, the one results format every CI system reads.

``verify`` and ``report`` hand their results to CI as JUnit: one ``<testsuite>``
per thing judged (a rule set, a readiness window), one ``<testcase>`` per
expectation, a ``<failure>`` whose message says what happened. The shape is the
one the Jenkins xUnit plugin's ``junit-10.xsd`` describes (the schema GitLab,
GitHub's JUnit reporters and Jenkins all accept); a test validates our output
against it. The standard library's ElementTree writes it: the format is small and
fixed, and ElementTree escapes text and attributes correctly, which is all a
writer needs.
"""

from __future__ import annotations

import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
"""Characters XML 1.0 cannot carry, even escaped."""


@dataclass(frozen=True, slots=True)
class Case:
    """One expectation: passed, failed (``failure`` says why) or not checked (``skipped`` says why)."""

    classname: str
    """What the case belongs to (a scenario, a readiness group): CI reporters group by it."""
    name: str
    failure: str | None = None
    failure_type: str = "failure"
    skipped: str | None = None
    output: str = ""
    """What was seen when the case passed (``system-out``)."""

    @property
    def failed(self) -> bool:
        """Whether the expectation failed."""
        return self.failure is not None


@dataclass(frozen=True, slots=True)
class Suite:
    """A group of cases judged together, with what they were judged against."""

    name: str
    cases: Sequence[Case]
    seconds: float = 0.0
    timestamp: str = ""
    """ISO time the suite started."""
    properties: Mapping[str, str] = field(default_factory=dict)
    output: str = ""
    """Findings about the suite as a whole (``system-out``)."""

    @property
    def failures(self) -> int:
        """Cases that failed."""
        return sum(c.failed for c in self.cases)

    @property
    def skipped(self) -> int:
        """Cases not checked."""
        return sum(c.skipped is not None for c in self.cases)


def _text(value: str) -> str:
    return _NOT_XML.sub("?", value)


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def element(name: str, suites: Sequence[Suite]) -> ET.Element:
    """The ``<testsuites>`` element."""
    root = ET.Element(
        "testsuites",
        name=_text(name),
        tests=str(sum(len(s.cases) for s in suites)),
        failures=str(sum(s.failures for s in suites)),
        errors="0",
        time=_seconds(sum(s.seconds for s in suites)),
    )
    for suite in suites:
        attrs = {
            "name": _text(suite.name),
            "tests": str(len(suite.cases)),
            "failures": str(suite.failures),
            "errors": "0",
            "skipped": str(suite.skipped),
            "time": _seconds(suite.seconds),
        }
        if suite.timestamp:
            attrs["timestamp"] = suite.timestamp
        node = ET.SubElement(root, "testsuite", attrs)
        if suite.properties:
            props = ET.SubElement(node, "properties")
            for key, value in suite.properties.items():
                ET.SubElement(props, "property", name=_text(key), value=_text(value))
        for case in suite.cases:
            tc = ET.SubElement(node, "testcase", classname=_text(case.classname), name=_text(case.name))
            if case.failure is not None:
                ET.SubElement(tc, "failure", type=case.failure_type, message=_text(case.failure)).text = _text(
                    case.failure
                )
            elif case.skipped is not None:
                ET.SubElement(tc, "skipped", message=_text(case.skipped))
            if case.output:
                ET.SubElement(tc, "system-out").text = _text(case.output)
        if suite.output:
            ET.SubElement(node, "system-out").text = _text(suite.output)
    return root


def write(path: Path, name: str, suites: Sequence[Suite]) -> None:
    """Write the JUnit file atomically: a CI step reading it never sees half a file."""
    root = element(name, suites)
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
    directory = path.parent if str(path.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the results from a CI upload step run as another user
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
