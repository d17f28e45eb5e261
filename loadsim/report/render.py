"""The report's four files: self-contained HTML, Markdown, JSON and CSV.

The HTML is rendered with Jinja2 (well kept, autoescaping, the templating engine of
Flask and Ansible): text is escaped, the plots are SVG inlined as they are, and
there is no script, stylesheet link, font or image URL, so opening the file makes
no request to any network, in a browser or in a CI artifact viewer. Files are
written whole and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment

from loadsim.outputs import write_atomically
from loadsim.redaction import redact
from loadsim.report.document import Report, iso

HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{{ r.title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; } td { padding: .15em .8em .15em 0; vertical-align: top; }
.go { color: #1a7f37; font-weight: bold; } .nogo { color: #b42318; font-weight: bold; }
.plot svg { width: 100%; height: auto; } .pass { color: #1a7f37; } .fail { color: #b42318; }
</style></head><body>
<h1>{{ r.title }}</h1>
<p>Decision: <span class="{{ 'go' if r.readiness.go else 'nogo' }}">{{ r.decision }}</span>,
readiness {{ r.readiness.score }}/10 ({{ r.readiness.grade }}).</p>
{% for s in r.sections %}
<section id="s{{ s.number }}"><h2>{{ s.number }}. {{ s.title }}</h2>
{% for line in s.lines %}<p>{{ line }}</p>{% endfor %}
{% if s.table %}<table>{% for k, v in s.table %}
<tr><td class="{{ k.split(' ')[0].lower() }}">{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% for p in s.plots %}<div class="plot" id="plot-{{ p }}">{{ plots[p] | safe }}</div>{% endfor %}
</section>
{% endfor %}
</body></html>
"""


def html(report: Report, plots: dict[str, str]) -> str:
    """The self-contained HTML."""
    env = Environment(autoescape=True, keep_trailing_newline=True)
    return env.from_string(HTML).render(r=report, plots=plots)


def markdown(report: Report) -> str:
    """Markdown following the seed's observation-report template (its eleven sections)."""
    out = [
        f"# {report.title}",
        "",
        f"**Decision: {report.decision}** — readiness {report.readiness.score}/10 ({report.readiness.grade})",
        "",
    ]
    for s in report.sections:
        out += [f"## {s.number}. {s.title}", ""]
        out += [*s.lines, ""] if s.lines else []
        if s.table:
            out += ["| item | value |", "|---|---|"]
            out += [f"| {k} | {v.replace('|', '/')} |" for k, v in s.table]
            out.append("")
    return "\n".join(out)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def as_json(report: Report) -> str:
    """Every figure, the readiness score with each item's evidence, and the decision."""
    f = report.figures
    data = {
        "title": report.title,
        "source": report.source,
        "window": {"start": f.start, "end": f.end, "start_iso": iso(f.start), "end_iso": iso(f.end), "step": f.step},
        "figures": f.values,
        "readiness": report.readiness.to_json(),
        "decision": report.decision,
        "drill": report.drill,
        "missing": f.missing,
    }
    return json.dumps(_clean(data), indent=2, allow_nan=False) + "\n"


def as_csv(report: Report) -> str:
    """Every plotted series: ``series,labels,unix_time,value`` rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["series", "labels", "unix_time", "value"])
    for name, series in report.figures.series.items():
        for s in series:
            labels = ";".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            for t, v in s.points:
                w.writerow([name, labels, f"{t:.3f}", "" if math.isnan(v) else repr(v)])
    return buf.getvalue()


def write(report: Report, plots: dict[str, str], out: Path) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, ``report.json`` and ``series.csv`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "html": (out / "report.html", html(report, plots)),
        "markdown": (out / "report.md", markdown(report)),
        "json": (out / "report.json", as_json(report)),
        "csv": (out / "series.csv", as_csv(report)),
    }
    for path, text in files.values():
        write_atomically(path, redact(text))  # the source URL, an error's text: no credential
    return {k: p for k, (p, _) in files.items()}
