"""The drill report page: self-contained, escaped, faithful to the drill document.

Pages are read back with the standard library's HTML parser, so the assertions
are about the elements and text a browser would see, not about substrings of
the markup.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from reprieve.drills.model import Check, Drill, DrillKind, Recovered, Scenario, Step
from reprieve.drills.report import document_digest, file_digest, render_html, report_json

T0 = datetime(2025, 3, 4, 10, 15, 2, tzinfo=UTC)
GENERATED = datetime(2025, 3, 5, 8, 0, tzinfo=UTC)
INJECTED = "<script>alert(1)</script> & co"
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "source", "base"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """Every element with its attributes and the text inside it (descendants included)."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.open: list[Element] = []
        self.texts: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1].tag == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for element in self.open:
            element.text.append(data)

    def by_id(self, ident: str) -> Element:
        (found,) = [e for e in self.elements if e.attrs.get("id") == ident]
        return found

    def text_of(self, ident: str) -> str:
        return "".join(self.by_id(ident).text)

    def all_text(self) -> str:
        return "".join(self.texts)

    def bars(self) -> list[Element]:
        return [e for e in self.elements if e.tag == "rect" and "bar" in e.attrs.get("class", "")]


def passing_files_drill() -> Drill:
    resource = "files:billing-uploads"
    drill = Drill(
        id="d-20250304T101502Z-a1b2c3",
        kind=DrillKind.DRILL,
        scenario=Scenario.FILES_LOSS.value,
        subject=resource,
        started_at=T0,
        declared_at=T0,
        tier="gold",
        tenant="acme",
        rto_target_s=900,
        rpo_target_s=3600,
        rto_s=142.6,
        finished_at=T0 + timedelta(seconds=151),
        teardown="sandbox removed",
    )
    drill.steps = [
        Step("select point", 0.0, 1.4, True, resource, "newest point 7f3a9c1e"),
        Step("restore", 1.4, 118.3, True, resource, "restored 48,211 files"),
        Step("verify", 119.7, 22.9, True, resource, "6 checks"),
        Step("teardown", 142.6, 8.2, True, None, "sandbox removed"),
    ]
    drill.checks = [
        Check(name, True, f"{name} as recorded", resource, {"expected": n, "found": n})
        for n, name in enumerate(
            ["tree digest", "file count", "sample content", "permissions", "newest file age"]
        )
    ]
    drill.checks.append(
        Check("user command", True, "exited 0", resource, {"stdout": "\n".join(["ok"] * 400)})
    )
    drill.recovered = [
        Recovered(
            resource,
            "files",
            "s3://dr-vault-eu/billing",
            "7f3a9c1e5b2d4f60",
            T0 - timedelta(minutes=35),
            T0 - timedelta(minutes=35),
            2100.0,
            118.3,
            13_314_398_208,
            T0 + timedelta(days=30),
        )
    ]
    return drill


def failing_postgres_drill() -> Drill:
    resource = "postgres:orders-db"
    drill = Drill(
        id="d-20250305T021500Z-9e8d7c",
        kind=DrillKind.DRILL,
        scenario=Scenario.DATABASE_FAILURE.value,
        subject=resource,
        started_at=T0,
        declared_at=T0 + timedelta(seconds=2),
        tier="platinum",
        rto_target_s=300,
        rpo_target_s=60,
        rto_s=412.9,
        finished_at=T0 + timedelta(seconds=431),
        teardown="cluster stopped",
    )
    drill.steps = [
        Step("restore base backup", 0.0, 232.3, True, resource, "restored 41.2 GiB"),
        Step("replay WAL", 232.3, 141.0, True, resource, "replayed 1,932 segments"),
        Step("verify", 373.3, 39.6, False, resource, f"1 of 2 checks failed: {INJECTED}"),
        Step("teardown", 412.9, 18.1, True, None, "cluster stopped"),
    ]
    drill.checks = [
        Check("amcheck", True, "all 214 btree indexes verified", resource, {"errors": 0}),
        Check(
            "sql: no orphan order lines",
            False,
            "expected 0 rows, got 17",
            resource,
            {"query": "SELECT 1 WHERE '<b>' <> '&amp;'", "rows": 17, "first": [[1], [2]]},
        ),
    ]
    drill.recovered = [
        Recovered(
            resource,
            "postgres",
            "s3://dr-vault-eu/orders",
            "3c9e0d71a4b6f5e8",
            T0 - timedelta(hours=8),
            T0 - timedelta(seconds=4.6),
            6.6,
            372.5,
            44_236_581_273,
        )
    ]
    return drill


def runbook_run() -> Drill:
    """A failover that restored nothing and never measured its RTO."""
    return Drill(
        id="r-20250306T090000Z-0a0b0c",
        kind=DrillKind.RUNBOOK,
        scenario=Scenario.FAILOVER.value,
        subject="failover-eu-west",
        started_at=T0,
        declared_at=T0,
        steps=[
            Step("promote replica", 0.0, 12.5, True, None, "promoted"),
            Step("switch DNS", 12.5, 50.0, False, None, "TTL not lowered"),
        ],
        failure="step switch DNS failed",
    )


def empty_drill() -> Drill:
    """A drill that stopped before doing anything: no steps, checks, targets or times."""
    return Drill(
        id="d-20250307T000000Z-ffffff",
        kind=DrillKind.DRILL,
        scenario=Scenario.RANSOMWARE.value,
        subject="tenant:acme",
        started_at=T0,
        declared_at=T0,
        failure="no recovery point before the declared time",
    )


ALL = [passing_files_drill, failing_postgres_drill, runbook_run, empty_drill]


def render(drill: Drill) -> tuple[dict[str, Any], str, Page]:
    doc = drill.to_json()
    markup = render_html(doc, GENERATED)
    return doc, markup, Page(markup)


@pytest.mark.parametrize("make", ALL)
def test_page_needs_no_network_and_runs_no_script(make: Any) -> None:
    _, markup, page = render(make())
    tags = {e.tag for e in page.elements}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base", "audio"}
    for element in page.elements:
        for name, value in element.attrs.items():
            assert not name.startswith("on"), element
            if name in {"src", "href", "xlink:href", "action", "srcset", "data"}:
                assert "://" not in value and not value.startswith("//"), element
    assert "http://" not in markup and "https://" not in markup
    assert "@import" not in markup
    assert re.findall(r"url\(([^)]*)\)", markup) == ["#hatch"] * markup.count("url(")
    assert markup.startswith("<!DOCTYPE html>")


def test_injected_detail_is_text_never_markup() -> None:
    _, markup, page = render(failing_postgres_drill())
    assert "<script" not in markup.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in markup
    assert INJECTED in page.all_text()
    assert "SELECT 1 WHERE '<b>' <> '&amp;'" in page.all_text()
    assert "b" not in {e.tag for e in page.elements}


@pytest.mark.parametrize("make", ALL)
def test_every_step_and_check_is_named(make: Any) -> None:
    drill = make()
    _, _, page = render(drill)
    text = page.all_text()
    for step in drill.steps:
        assert step.name in text
        assert step.detail in text
    for check in drill.checks:
        assert check.name in text
        assert check.detail in text


@pytest.mark.parametrize("make", ALL)
def test_verdict_matches_the_document(make: Any) -> None:
    doc, _, page = render(make())
    verdict = page.text_of("verdict")
    assert ("PASSED" in verdict, "FAILED" in verdict) == (doc["passed"], not doc["passed"])
    heading = "Runbook run report" if doc["kind"] == "runbook" else "DR drill report"
    assert heading in "".join(e for t in page.elements if t.tag == "title" for e in t.text)
    reasons = [e for e in page.elements if e.attrs.get("class") == "reasons"]
    if doc["passed"]:
        assert not reasons
    else:
        (block,) = reasons
        assert doc["reasons"]
        for reason in doc["reasons"]:
            assert reason in "".join(block.text)


def test_objectives_say_met_and_missed() -> None:
    _, _, page = render(failing_postgres_drill())
    assert "MISSED" in page.text_of("rto") and "target 5 min" in page.text_of("rto")
    assert "MET" in page.text_of("rpo") and "MISSED" not in page.text_of("rpo")
    _, _, page = render(passing_files_drill())
    assert "MET" in page.text_of("rto") and "2 min 23 s" in page.text_of("rto")


def test_unmeasured_values_and_missing_targets_render() -> None:
    _, _, page = render(runbook_run())
    assert "unmeasured" in page.text_of("rto") and "no target set" in page.text_of("rto")
    assert "NOT MET" in page.text_of("rto")
    assert "NOT APPLICABLE" in page.text_of("rpo")
    _, _, page = render(empty_drill())
    text = page.all_text()
    assert "unmeasured" in page.text_of("rpo")
    assert "not finished" in text
    assert "No steps were recorded." in text
    assert "No verification was recorded." in text
    assert "No recovery point was restored." in text


@pytest.mark.parametrize("make", ALL)
def test_printed_digest_is_the_canonical_document_digest(make: Any) -> None:
    doc, _, page = render(make())
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert page.text_of("document-sha256") == hashlib.sha256(canonical).hexdigest()
    assert page.text_of("document-sha256") == document_digest(doc)
    assert "reprieve audit list" in page.all_text() and "drill-report" in page.all_text()


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return "x" if value is None else value + "x"


@pytest.mark.parametrize("make", [passing_files_drill, failing_postgres_drill])
def test_digest_changes_when_any_field_changes(make: Any) -> None:
    doc = make().to_json()
    original = document_digest(doc)
    paths = list(leaves(doc))
    assert len(paths) > 60
    for path in paths:
        edited = copy.deepcopy(doc)
        parent = edited
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = changed(parent[path[-1]])
        assert document_digest(edited) != original, path
    assert document_digest(copy.deepcopy(doc)) == original


@pytest.mark.parametrize("make", [passing_files_drill, failing_postgres_drill, runbook_run])
def test_timeline_bars_are_to_scale(make: Any) -> None:
    drill = make()
    _, _, page = render(drill)
    bars = page.bars()
    assert len(bars) == len(drill.steps)
    widths = [float(b.attrs["width"]) for b in bars]
    starts = [float(b.attrs["x"]) for b in bars]
    scale = widths[0] / drill.steps[0].duration_s
    for step, width, x in zip(drill.steps, widths, starts, strict=True):
        assert width == pytest.approx(step.duration_s * scale, rel=1e-3)
        assert x - starts[0] == pytest.approx(step.at_s * scale, rel=1e-3, abs=1e-3)
    failed = [b.attrs["class"] for b, s in zip(bars, drill.steps, strict=True) if not s.ok]
    assert failed == ["bar failed"] * sum(not s.ok for s in drill.steps)


def axis_seconds(page: Page) -> list[float]:
    ticks = [e for e in page.elements if e.tag == "text" and e.attrs.get("class") == "tick"]
    labels = ["".join(e.text) for e in ticks]
    assert all(label.endswith(" s") for label in labels)
    return [float(label.removesuffix(" s")) for label in labels]


def test_rto_target_is_drawn_when_it_fits() -> None:
    _, _, page = render(failing_postgres_drill())
    chart = "".join(page.by_id("gantt").text)
    assert "RTO target 5 min" in chart
    assert "off the chart" not in page.all_text()
    ticks = axis_seconds(page)
    assert ticks == [0, 100, 200, 300, 400, 500]


def test_far_rto_target_is_noted_off_the_chart() -> None:
    _, _, page = render(passing_files_drill())
    assert "The RTO target, 15 min, is off the chart" in page.all_text()
    assert axis_seconds(page) == [0, 50, 100, 150, 200]


def test_tables_list_recovery_points_and_long_evidence_whole() -> None:
    drill = passing_files_drill()
    doc, markup, page = render(drill)
    text = page.all_text()
    part = drill.recovered[0]
    for value in (part.point, part.vault, "12.4 GiB", "2025-04-03 10:15:02 UTC", "35 min"):
        assert value in text
    assert "\n".join(["ok"] * 400) in text
    assert re.search(r"\.evidence \{[^}]*max-height[^}]*overflow: auto", markup)
    assert re.search(r"@media print \{.*\.evidence[^}]*max-height: none", markup, re.S)
    assert "Teardown:" in text and doc["teardown"] in text


def test_json_report_wraps_the_document_with_its_digest() -> None:
    doc = failing_postgres_drill().to_json()
    report = report_json(doc, GENERATED)
    assert report == {
        "report": {
            "generated_at": "2025-03-05T08:00:00+00:00",
            "document_sha256": document_digest(doc),
            "format": 1,
        },
        "drill": doc,
    }
    assert json.loads(json.dumps(report)) == report


def test_file_digest_is_sha256_of_the_bytes() -> None:
    data = render_html(passing_files_drill().to_json(), GENERATED).encode()
    assert file_digest(data) == hashlib.sha256(data).hexdigest()
    assert file_digest(data + b" ") != file_digest(data)
