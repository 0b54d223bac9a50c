"""The drill report: one self-contained HTML page, and its JSON twin.

The page is what an auditor keeps, so it carries everything inline (CSS,
SVG charts, no scripts, fonts, images or links) and renders the same from a
file with no network, on screen and on paper. Every value is escaped: step
details and check evidence come from user commands and restored databases.

Integrity: the page prints the SHA-256 of the drill document in canonical
JSON (:func:`document_digest`), the same document the catalog keeps, and the
digest of the report file itself (:func:`file_digest`) is chained into the
audit trail as a ``drill-report`` event when the report is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from html import escape
from typing import Any

FORMAT = 1

# The timeline's geometry, in SVG units: labels left of _LEFT, bars between _LEFT and _RIGHT.
_WIDTH, _LEFT, _RIGHT = 860.0, 200.0, 790.0
_TOP, _ROW, _BAR = 40.0, 30.0, 18.0

_CSS = """
:root {
  --ink: #1c2127; --muted: #58616b; --line: #d4d9df; --soft: #f4f6f8;
  --pass: #0b5cad; --pass-bg: #e5effa; --fail: #b34700; --fail-bg: #fbeadf;
}
* { box-sizing: border-box; }
main.passed { --verdict: var(--pass); }
main.failed { --verdict: var(--fail); }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body {
  margin: 0; background: #eef1f4; color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    Arial, "Noto Sans", "Liberation Sans", sans-serif;
}
main {
  max-width: 1120px; margin: 24px auto; background: #fff; padding: 32px 44px 28px;
  border: 1px solid var(--line); border-top: 6px solid var(--verdict); border-radius: 6px;
}
code, pre, .mono {
  font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
    "DejaVu Sans Mono", monospace;
  font-size: 0.88em;
}
h1 { font-size: 26px; line-height: 1.25; margin: 2px 0 14px; overflow-wrap: anywhere; }
h2 {
  font-size: 17px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--ink);
  letter-spacing: 0.01em;
}
section { margin-top: 32px; }
.eyebrow {
  text-transform: uppercase; letter-spacing: 0.08em; font-size: 12px;
  color: var(--muted);
}
.top { display: grid; grid-template-columns: minmax(0, 1fr) 250px; gap: 28px; }
.meta {
  display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 3px 18px; margin: 0;
}
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.verdict {
  border: 2px solid; border-radius: 6px; padding: 16px 18px; text-align: center; align-self: start;
}
.verdict .word { font-size: 34px; font-weight: 800; letter-spacing: 0.06em; line-height: 1.1; }
.verdict .sub { font-size: 13px; margin-top: 6px; color: var(--ink); }
.is-pass { color: var(--pass); border-color: var(--pass); background: var(--pass-bg); }
.is-fail { color: var(--fail); border-color: var(--fail); background: var(--fail-bg); }
.reasons {
  margin: 18px 0 0; padding: 10px 18px; border-left: 5px solid var(--fail);
  background: var(--fail-bg); border-radius: 0 4px 4px 0;
}
.reasons strong { color: var(--fail); }
.reasons ul { margin: 4px 0 0; padding-left: 20px; }
.reasons li { overflow-wrap: anywhere; }
.objective {
  display: grid; grid-template-columns: 170px minmax(0, 1fr) 150px; gap: 6px 20px;
  align-items: center; padding: 10px 0; border-bottom: 1px solid var(--line);
}
.objective .name { font-weight: 700; }
.objective .value { font-size: 22px; font-weight: 700; line-height: 1.2; }
.objective .small, .small { font-size: 12.5px; color: var(--muted); }
.objective .note { grid-column: 1 / -1; font-size: 12.5px; color: var(--muted); }
.objective svg.meter { width: 100%; height: 42px; display: block; overflow: visible; }
.tag {
  display: inline-block; border: 1.5px solid; border-radius: 3px; padding: 0 7px;
  font-size: 12px; font-weight: 700; letter-spacing: 0.05em; white-space: nowrap;
}
.tag.na { color: var(--muted); border-color: var(--line); background: var(--soft); }
.chart { width: 100%; height: auto; display: block; margin: 4px 0 6px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
svg text.halo { paint-order: stroke; stroke: #fff; stroke-width: 4px; stroke-linejoin: round; }
.caption { font-size: 12.5px; color: var(--muted); margin: 0 0 14px; }
table { width: 100%; border-collapse: collapse; font-size: 13.5px; }
th {
  text-align: left; font-weight: 600; color: var(--muted); font-size: 12px;
  text-transform: uppercase; letter-spacing: 0.04em; border-bottom: 1.5px solid var(--ink);
  padding: 6px 8px; vertical-align: bottom;
}
td { padding: 7px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.wrap { overflow-wrap: break-word; }
td.id { word-break: break-all; min-width: 9em; }
tr.failed td { background: var(--fail-bg); }
.text {
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 14em; overflow: auto; margin: 0;
}
.evidence {
  margin: 0; max-height: 15em; overflow: auto; background: var(--soft);
  border: 1px solid var(--line); border-radius: 4px; padding: 6px 9px; font-size: 12.5px;
}
dl.evidence { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 12px; }
.evidence dt { font-weight: 600; color: var(--muted); }
.evidence dd { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.none { color: var(--muted); }
footer { margin-top: 36px; padding-top: 14px; border-top: 2px solid var(--ink); font-size: 13.5px; }
footer .digest {
  display: block; margin: 4px 0 8px; padding: 8px 10px; background: var(--soft);
  border: 1px solid var(--line); border-radius: 4px; overflow-wrap: anywhere; font-size: 13px;
}
details { margin-top: 12px; }
summary { cursor: pointer; color: var(--muted); }
details pre {
  white-space: pre-wrap; overflow-wrap: anywhere; background: var(--soft); padding: 10px;
  border: 1px solid var(--line); border-radius: 4px; font-size: 11.5px; max-height: 30em;
  overflow: auto;
}
@media screen and (max-width: 760px) {
  main { padding: 20px; }
  .top, .objective { grid-template-columns: minmax(0, 1fr); }
}
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { background: #fff; font-size: 10pt; }
  main { max-width: none; margin: 0; padding: 0; border: 0; }
  section { margin-top: 20px; }
  h2 { break-after: avoid; }
  .objective, tr, .verdict, .reasons, footer .digest { break-inside: avoid; }
  .chart { break-inside: avoid; }
  .text, .evidence, details pre { max-height: none; overflow: visible; }
  table { font-size: 9pt; }
  th, td { padding: 4px 5px; }
}
"""


def document_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of the drill document in canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def report_json(doc: dict[str, Any], generated_at: datetime) -> dict[str, Any]:
    return {
        "report": {
            "generated_at": _utc(generated_at).isoformat(timespec="seconds"),
            "document_sha256": document_digest(doc),
            "format": FORMAT,
        },
        "drill": doc,
    }


def render_html(doc: dict[str, Any], generated_at: datetime) -> str:
    runbook = doc.get("kind") == "runbook"
    title = "Runbook run report" if runbook else "DR drill report"
    verdict = "PASSED" if doc.get("passed") else "FAILED"
    body = "".join(
        [
            _header(doc, title, verdict),
            _objectives(doc),
            _timeline(doc),
            _recovered(doc),
            _checks(doc),
            _footer(doc, generated_at),
        ]
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}: {_e(doc.get('subject'))} ({verdict})</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<main class="{verdict.lower()}">\n{body}</main>\n</body>\n</html>\n'
    )


def _header(doc: dict[str, Any], title: str, verdict: str) -> str:
    passed = verdict == "PASSED"
    steps, checks = doc.get("steps", []), doc.get("checks", [])
    checks_ok = sum(1 for c in checks if c.get("passed"))
    steps_ok = sum(1 for s in steps if s.get("ok"))
    started, finished = _when(doc.get("started_at")), _when(doc.get("finished_at"))
    elapsed = _dur((finished - started).total_seconds()) if started and finished else "—"
    rows = [
        ("Scenario", _e(doc.get("scenario"))),
        ("Drill id" if doc.get("kind") != "runbook" else "Run id", _mono(doc.get("drill"))),
        ("Tier", _e(doc.get("tier") or "none")),
        ("Tenant", _e(doc.get("tenant") or "none")),
        ("Started", _e(_stamp(started))),
        ("Disaster declared", _e(_stamp(_when(doc.get("declared_at"))))),
        ("Finished", _e(_stamp(finished) if finished else "not finished")),
        ("Elapsed", _e(elapsed)),
    ]
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    symbol = "&#x2714;" if passed else "&#x2718;"
    sub = f"{checks_ok} of {len(checks)} checks passed" if checks else "no checks recorded"
    sub += f"<br>{steps_ok} of {len(steps)} steps ok" if steps else "<br>no steps recorded"
    reasons = ""
    if not passed:
        items = "".join(f"<li>{_e(r)}</li>" for r in doc.get("reasons") or [])
        items = items or "<li>no reason was recorded</li>"
        reasons = f'<div class="reasons"><strong>Why it failed</strong><ul>{items}</ul></div>'
    return (
        f'<header>\n<div class="eyebrow">reprieve · {_e(title)}</div>\n'
        f'<div class="top"><div><h1>{_e(doc.get("subject"))}</h1><dl class="meta">{meta}</dl>'
        f'</div>\n<div class="verdict {"is-pass" if passed else "is-fail"}" id="verdict">'
        f'<div class="word">{symbol} {verdict}</div><div class="sub">{sub}</div></div>'
        f"</div>\n{reasons}\n</header>\n"
    )


def _objectives(doc: dict[str, Any]) -> str:
    declared = _stamp(_when(doc.get("declared_at")))
    noun = "run" if doc.get("kind") == "runbook" else "drill"
    rto = _objective(
        "RTO",
        "recovery time",
        doc.get("rto_s"),
        doc.get("rto_target_s"),
        bool(doc.get("rto_met")),
        f"From the start of the {noun} to the end of the last verification; teardown excluded.",
    )
    if doc.get("kind") == "runbook" and not doc.get("recovered"):
        rpo = _objective_na("RPO", "recovery point", "The run restored no data: no RPO applies.")
    else:
        rpo = _objective(
            "RPO",
            "recovery point",
            doc.get("rpo_s"),
            doc.get("rpo_target_s"),
            bool(doc.get("rpo_met")),
            f"From the declared disaster ({declared}) back to the newest data recovered; "
            "the worst resource counts.",
        )
    return f'<section id="objectives">\n<h2>Objectives against targets</h2>\n{rto}{rpo}</section>\n'


def _objective(name: str, long: str, value: Any, target: Any, met: bool, note: str) -> str:
    shown, exact = ("unmeasured", "") if value is None else (_dur(value), f"{value:,.3f} s")
    goal = f"target {_dur(target)}" if target is not None else "no target set"
    if value is None:
        status = _tag(False, "", "NOT MET")
    else:
        status = _tag(met, "MET" if target is not None else "MEASURED", "MISSED")
    return (
        f'<div class="objective" id="{name.lower()}">'
        f'<div><div class="name">{name} <span class="small">{long}</span></div>'
        f'<div class="value">{_e(shown)}</div><div class="small">{_e(exact)}</div></div>'
        f"<div>{_bar(value, target, met)}</div>"
        f'<div><div>{status}</div><div class="small">{_e(goal)}</div></div>'
        f'<div class="note">{_e(note)}</div></div>\n'
    )


def _objective_na(name: str, long: str, note: str) -> str:
    return (
        f'<div class="objective" id="{name.lower()}">'
        f'<div><div class="name">{name} <span class="small">{long}</span></div>'
        f'<div class="value">n/a</div></div><div></div>'
        f'<div><span class="tag na">NOT APPLICABLE</span></div>'
        f'<div class="note">{_e(note)}</div></div>\n'
    )


def _bar(value: Any, target: Any, met: bool) -> str:
    """A measured value to scale on a track, with the target as a marker.

    Positions are percentages, so the bar stretches with the page while its text keeps
    its size (a scaled viewBox made the label unreadable on paper).
    """
    parts = ['<rect x="0" y="18" width="100%" height="16" fill="#e9edf1"/>']
    span = max(float(value or 0), float(target or 0)) * 1.12 or 1.0
    if value is not None:
        length = max(float(value) / span * 100, 0.3)
        colour = "var(--pass)" if met else "var(--fail)"
        parts.append(
            f'<rect class="measured" x="0" y="18" width="{length:.2f}%" height="16" '
            f'fill="{colour}"/>'
        )
    if target is not None:
        x = float(target) / span * 100
        anchor = "end" if x > 75 else "start" if x < 15 else "middle"
        parts.append(
            f'<line x1="{x:.2f}%" x2="{x:.2f}%" y1="11" y2="40" stroke="#1c2127" '
            f'stroke-width="2.5"/><text x="{x:.2f}%" y="9" font-size="12" '
            f'text-anchor="{anchor}" fill="#1c2127">target {_e(_dur(target))}</text>'
        )
    return (
        f'<svg class="meter" role="img" aria-label="measured against target">{"".join(parts)}</svg>'
    )


def _timeline(doc: dict[str, Any]) -> str:
    steps = doc.get("steps") or []
    if steps:
        chart, caption = _gantt(steps, doc.get("rto_s"), doc.get("rto_target_s"))
        body = f'{chart}\n<p class="caption">{caption}</p>\n{_steps_table(steps)}'
    else:
        body = '<p class="none">No steps were recorded.</p>'
    return f'<section id="timeline">\n<h2>Timeline</h2>\n{body}\n</section>\n'


def _steps_table(steps: list[dict[str, Any]]) -> str:
    rows = []
    for i, s in enumerate(steps, 1):
        ok = bool(s.get("ok"))
        rows.append(
            f'<tr{_failed_row(ok)}><td class="num">{i}</td>'
            f'<td class="wrap"><strong>{_e(s.get("name"))}</strong></td>'
            f'<td class="wrap">{_e(s.get("resource") or "—")}</td>'
            f'<td class="num">{float(s.get("at_s", 0)):,.1f} s</td>'
            f'<td class="num">{float(s.get("duration_s", 0)):,.1f} s</td>'
            f"<td>{_tag(ok, 'OK', 'FAILED')}</td>"
            f'<td><div class="text">{_e(s.get("detail") or "")}</div></td></tr>'
        )
    return (
        '<table><thead><tr><th class="num">#</th><th style="width:18%">Step</th>'
        '<th style="width:14%">Resource</th><th class="num">Start</th>'
        '<th class="num">Duration</th><th>Result</th><th>Detail</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _gantt(steps: list[dict[str, Any]], rto: Any, target: Any) -> tuple[str, str]:
    """One bar per step on a shared axis of seconds from the drill's start."""
    end = max([float(s["at_s"]) + float(s["duration_s"]) for s in steps] + [float(rto or 0)])
    # A target far beyond the drill would squash every bar to a sliver: note it instead.
    show_target = target is not None and float(target) <= max(end, 1e-9) * 2
    tick, span = _ticks(max(end, float(target) if show_target else 0.0) or 1.0)
    scale = (_RIGHT - _LEFT) / span
    axis_y = _TOP + _ROW * len(steps)
    out = [
        '<defs><pattern id="hatch" width="7" height="7" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="7" height="7" fill="#fbeadf"/>'
        '<rect width="3.5" height="7" fill="#b34700"/></pattern></defs>'
    ]
    out += [
        f'<rect x="0" y="{_TOP + i * _ROW:.0f}" width="{_WIDTH:.0f}" height="{_ROW:.0f}" '
        'fill="#f4f6f8"/>'
        for i in range(0, len(steps), 2)
    ]
    for n in range(round(span / tick) + 1):
        x = _LEFT + n * tick * scale
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP:.0f}" y2="{axis_y + 5:.0f}" '
            f'stroke="#d4d9df"/><text class="tick" x="{x:.1f}" y="{axis_y + 19:.0f}" '
            f'font-size="12" text-anchor="middle" fill="#58616b">{n * tick:g} s</text>'
        )
    out.append(f'<line x1="{_LEFT}" x2="{_RIGHT}" y1="{axis_y}" y2="{axis_y}" stroke="#58616b"/>')
    with_resource = len({s.get("resource") for s in steps if s.get("resource")}) > 1
    out += [_gantt_row(i, s, scale, with_resource) for i, s in enumerate(steps)]
    if rto is not None:
        out.append(_marker(_LEFT + float(rto) * scale, 28, f"RTO {_dur(rto)}", axis_y, "none"))
    caption = (
        "Bars run from each step's start to its end, in seconds from the start. "
        "Hatched bars are failed steps."
    )
    if rto is not None:
        caption += " The solid line is the measured RTO."
    if target is None:
        caption += " No RTO target applies."
    elif show_target:
        x = _LEFT + float(target) * scale
        out.append(_marker(x, 12, f"RTO target {_dur(target)}", axis_y, "6 4"))
        caption += " The dashed line is the RTO target."
    else:
        out.append(
            f'<text x="{_WIDTH - 4:.0f}" y="12" font-size="12" font-weight="600" '
            f'text-anchor="end" fill="#1c2127">RTO target {_e(_dur(target))} →</text>'
        )
        caption += f" The RTO target, {_dur(target)}, is off the chart, which ends at {span:g} s."
    chart = (
        f'<svg class="chart" id="gantt" viewBox="0 0 {_WIDTH:.0f} {axis_y + 30:.0f}" role="img" '
        f'aria-label="timeline of the steps">{"".join(out)}</svg>'
    )
    return chart, _e(caption)


def _gantt_row(i: int, step: dict[str, Any], scale: float, with_resource: bool) -> str:
    ok = bool(step.get("ok"))
    name = str(step.get("name", ""))
    if with_resource and step.get("resource"):
        name += f" · {step['resource']}"
    label = name if len(name) <= 26 else name[:25] + "…"
    y = _TOP + i * _ROW
    x = _LEFT + float(step["at_s"]) * scale
    w = max(float(step["duration_s"]) * scale, 2.0)
    fill = 'fill="#3d7fc1"' if ok else 'fill="url(#hatch)" stroke="#b34700" stroke-width="1.5"'
    text = _dur(step["duration_s"]) + ("" if ok else " ✗ failed")
    # Right of the bar when it fits before the edge (about 7 units a character), else left.
    if x + w + 6 + 7.0 * len(text) <= _WIDTH:
        tx, anchor = x + w + 6, "start"
    else:
        tx, anchor = x - 6, "end"
    base = y + _ROW / 2 + 4.5
    return (
        f'<text x="12" y="{base:.1f}" font-size="13" fill="#1c2127">{_e(label)}</text>'
        f'<rect class="bar {"ok" if ok else "failed"}" data-step="{i}" x="{x:.3f}" '
        f'y="{y + (_ROW - _BAR) / 2:.1f}" width="{w:.3f}" height="{_BAR:.0f}" rx="2" {fill}>'
        f"<title>{_e(name)}</title></rect>"
        f'<text class="halo" x="{tx:.1f}" y="{base:.1f}" font-size="12" text-anchor="{anchor}" '
        f'fill="{"#1c2127" if ok else "#b34700"}">{_e(text)}</text>'
    )


def _marker(x: float, label_y: float, label: str, bottom: float, dash: str) -> str:
    anchor = "end" if x > _RIGHT - 60 else "middle"
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{label_y + 4:.0f}" y2="{bottom:.0f}" '
        f'stroke="#1c2127" stroke-width="1.5" stroke-dasharray="{dash}"/>'
        f'<text class="halo" x="{x:.1f}" y="{label_y:.0f}" font-size="12" font-weight="600" '
        f'text-anchor="{anchor}" fill="#1c2127">{_e(label)}</text>'
    )


def _ticks(span: float) -> tuple[float, float]:
    """A 1-2-5 tick step giving about six ticks, and the axis end it rounds to."""
    raw = span / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return step, math.ceil(span / step - 1e-9) * step


def _recovered(doc: dict[str, Any]) -> str:
    parts = doc.get("recovered") or []
    if not parts:
        body = '<p class="none">No recovery point was restored.</p>'
    else:
        rows = []
        for r in parts:
            rows.append(
                f'<tr><td class="wrap"><strong>{_e(r.get("resource"))}</strong>'
                f'<div class="small">{_e(r.get("kind"))}</div></td>'
                f'<td class="wrap">{_e(r.get("vault"))}</td>'
                f'<td class="id">{_mono(r.get("point"))}'
                f'<div class="small">{_e(_stamp(_when(r.get("point_time"))))}</div></td>'
                f"<td>{_e(_stamp(_when(r.get('recovered_to'))))}</td>"
                f'<td class="num">{_e(_dur(r.get("rpo_s")))}</td>'
                f'<td class="num">{_e(_dur(r.get("restore_s")))}</td>'
                f'<td class="num">{_bytes(r.get("bytes_read"))}</td>'
                f"<td>{_e(_stamp(_when(r.get('locked_until'))) or 'not locked')}</td></tr>"
            )
        body = (
            "<table><thead><tr><th>Resource</th><th>Vault</th><th>Point and its time</th>"
            '<th>Recovered to</th><th class="num">RPO</th>'
            '<th class="num">Restore</th><th class="num">Read</th><th>Locked until</th>'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f'<p class="caption">{_bytes(doc.get("bytes_read"))} read from the vaults in all.</p>'
        )
    return f'<section id="recovered">\n<h2>Recovery points used</h2>\n{body}\n</section>\n'


def _checks(doc: dict[str, Any]) -> str:
    checks = doc.get("checks") or []
    if not checks:
        body = '<p class="none">No verification was recorded.</p>'
    else:
        rows = []
        for c in checks:
            ok = bool(c.get("passed"))
            resource = c.get("resource")
            where = f'<div class="small">{_e(resource)}</div>' if resource else ""
            rows.append(
                f"<tr{_failed_row(ok)}><td>{_tag(ok, 'PASS', 'FAIL')}</td>"
                f'<td class="wrap"><strong>{_e(c.get("name"))}</strong>{where}</td>'
                f'<td><div class="text">{_e(c.get("detail") or "")}</div></td>'
                f"<td>{_evidence(c.get('evidence'))}</td></tr>"
            )
        body = (
            '<table><thead><tr><th style="width:76px">Result</th><th style="width:20%">Check'
            '</th><th style="width:28%">Detail</th><th>Evidence</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    return f'<section id="checks">\n<h2>Verifications</h2>\n{body}\n</section>\n'


def _evidence(evidence: Any) -> str:
    if not evidence:
        return '<span class="none">none recorded</span>'
    if not isinstance(evidence, dict):
        return f'<pre class="evidence">{_e(_compact(evidence))}</pre>'
    items = "".join(
        f'<dt>{_e(k)}</dt><dd class="mono">{_e(_compact(v))}</dd>' for k, v in evidence.items()
    )
    return f'<dl class="evidence">{items}</dl>'


def _footer(doc: dict[str, Any], generated_at: datetime) -> str:
    teardown = doc.get("teardown") or "not recorded"
    return (
        "<footer>\n"
        f"<p><strong>Teardown:</strong> {_e(teardown)}<br>"
        f"<strong>Report generated:</strong> {_e(_stamp(_utc(generated_at)))}</p>\n"
        "<p><strong>Integrity.</strong> SHA-256 of the drill document:"
        f' <code class="digest" id="document-sha256">{document_digest(doc)}</code>'
        "It is computed over the document as the catalog keeps it, in canonical JSON "
        "(keys sorted, no whitespace); the document is attached below as "
        "<em>Drill document (JSON)</em>. The SHA-256 of this report file itself is recorded "
        "in the audit trail when the report is written: <code>reprieve audit list</code> "
        "shows it as a <code>drill-report</code> event.</p>\n"
        "<details><summary>Drill document (JSON)</summary>"
        f"<pre>{_e(json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False))}</pre>"
        "</details>\n</footer>\n"
    )


def _tag(ok: bool, yes: str, no: str) -> str:
    symbol = "&#x2714;" if ok else "&#x2718;"
    return f'<span class="tag {"is-pass" if ok else "is-fail"}">{symbol} {yes if ok else no}</span>'


def _failed_row(ok: bool) -> str:
    return "" if ok else ' class="failed"'


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _mono(value: Any) -> str:
    return f'<span class="mono">{_e(value)}</span>'


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _when(text: Any) -> datetime | None:
    return _utc(datetime.fromisoformat(text)) if text else None


def _stamp(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def _dur(value: Any) -> str:
    if value is None:
        return "unmeasured"
    secs = float(value)
    if secs < 60:
        return f"{secs:.1f} s"
    whole = round(secs)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole // 60, 60)
    return f"{hours} h {rest:02d} min" if rest else f"{hours} h"


def _bytes(value: Any) -> str:
    n = float(value or 0)
    exact = f"{int(n):,} bytes"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            shown = f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            break
        n /= 1024
    return f'<span title="{exact}">{shown}</span>'
