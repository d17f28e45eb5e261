"""loadsim.junit: what verify and report hand to CI, valid against the Jenkins xUnit plugin's junit-10.xsd."""

from __future__ import annotations

import stat
from pathlib import Path

import xmlschema

from loadsim.junit import Case, Suite, write
from loadsim.report.junit import item_case
from loadsim.report.readiness import Window, dashboards_item, drill_item, technical

SCHEMA = xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit-10.xsd")


def test_counts_escaping_and_characters_xml_cannot_carry(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    suites = [
        Suite(
            "loadsim verify: a.yml + b.yml",
            [
                Case("error-rate-crit", "A fires", output="fired at +12.5 min"),
                Case("error-rate-crit", 'B <must> not & "fire"', failure="B fired at +3.0 min\x1b[0m, 5% > 1%"),
                Case("readiness.operational", "C", skipped="not checked: no drill file given"),
            ],
            seconds=12.3456,
            timestamp="2026-11-30T12:00:00",
            properties={"rules": "a.yml b.yml"},
            output="finding: x",
        ),
        Suite("empty", []),
    ]
    write(path, "loadsim verify", suites)
    SCHEMA.validate(path)
    doc = SCHEMA.to_dict(path)
    assert (doc["@tests"], doc["@failures"], doc["@errors"], doc["@time"]) == ("3", "1", "0", "12.346")
    first = doc["testsuite"][0]
    assert (first["@tests"], first["@failures"], first["@skipped"]) == ("3", "1", "1")
    failed = first["testcase"][1]
    assert failed["@name"] == 'B <must> not & "fire"'
    # An escape character cannot be in XML 1.0 at all: replaced, the rest kept word for word.
    assert failed["failure"][0]["@message"] == "B fired at +3.0 min?[0m, 5% > 1%"
    assert first["testcase"][2]["skipped"][0]["@message"] == "not checked: no drill file given"
    assert not list(tmp_path.glob(".junit.xml.*"))  # the temporary file was renamed, not left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_readiness_items_pass_fail_or_are_skipped() -> None:
    window = Window(
        controller_runs=6, controller_ok=6, error_ratio_p95=0.031, latency_p95_p95=0.2,
        violations=[], mime_p95_max=0.05, unexpected_codes=[],
    )  # fmt: skip
    items = {i.id: i for i in technical(window)}
    error_rate = item_case(items["error_rate_p95"])
    assert (error_rate.classname, error_rate.name) == ("readiness.technical", "Error rate P95 < 1%")
    assert error_rate.failure == "3.100% (limit 1.000%)"
    assert item_case(items["latency_p95"]).output == "0.200s (limit 0.500s)"
    drill = item_case(drill_item(None, None))
    assert drill.skipped == "not checked: no drill file given (--drill FILE)"
    assert drill.failure is None
    panels = item_case(dashboards_item({"a / p": True, "b / q": False}))
    assert panels.failure == "1 of 2 panels empty: b / q"
