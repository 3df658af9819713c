"""End-of-session views of the results: terminal table, JSON, GitHub step summary, HTML (no pytest here)."""

from __future__ import annotations

import html
import json
import math
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..gpus.detect import Detection
from .rows import ResultRow

ORDER = {"FAILURE": 0, "SKIPPED": 2, "SUCCESS": 3}


@dataclass
class Entry:
    """One result as the controller saw it, with what the reports need beside perf.csv's columns."""

    row: dict[str, str]
    nodeid: str
    log_tail: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    baseline: str = ""
    comparison: dict[str, Any] = field(default_factory=dict)

    @property
    def change(self) -> str:
        return self.row.get("relative_change") or self.baseline

    def sort_key(self) -> tuple[int, str]:
        status = self.row.get("status", "")
        rank = 1 if self.row.get("reason") == "regression" else ORDER.get(status, 0)
        return rank, self.row.get("model", "")


@dataclass
class ResultTable:
    entries: list[Entry] = field(default_factory=list)

    def add(self, rows: Iterable[ResultRow], nodeid: str, log_tail: str = "") -> None:
        for found in rows:
            tail = log_tail if found.row.get("status") == "FAILURE" else ""
            self.entries.append(
                Entry(dict(found.row), nodeid, tail, dict(found.extra), found.baseline, dict(found.comparison))
            )

    def ordered(self) -> list[Entry]:
        return sorted(self.entries, key=Entry.sort_key)


COLUMNS = ("model", "arch", "performance", "metric", "change", "status", "duration")


def _cells(entry: Entry) -> list[str]:
    row = entry.row
    status = row.get("status", "")
    if row.get("reason"):
        status = f"{status} ({row['reason']})"
    duration = row.get("test_duration", "")
    return [
        row.get("model", ""),
        row.get("gpu_architecture", ""),
        row.get("performance", ""),
        row.get("metric", ""),
        entry.change,
        status,
        f"{float(duration):.1f}s" if duration else "",
    ]


def terminal_table(results: ResultTable, verbosity: int) -> list[str]:
    """Regressions and failures first. -q shows only those; -qq shows nothing."""
    entries = results.ordered()
    if verbosity < 0:
        entries = [e for e in entries if e.row.get("status") != "SUCCESS" and e.row.get("status") != "SKIPPED"]
    if verbosity < -1 or not entries:
        return []
    table = [list(COLUMNS), *(_cells(e) for e in entries)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in table]


def markdown_table(results: ResultTable) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for entry in results.ordered():
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(entry)) + " |")
    return "### pytest-madengine results\n\n" + "\n".join(lines) + "\n"


def machine_info(detection: Detection) -> dict[str, Any]:
    vendor = detection.vendor or ""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "gpu_vendor": vendor,
        "gpus": [
            {"index": g.index, "arch": g.arch, "product_name": g.product_name, "uuid": g.uuid} for g in detection.gpus
        ],
        "driver_version": detection.driver_version,
    }
    if vendor == "AMD":
        info["rocm_version"] = detection.driver_version
    elif vendor == "NVIDIA":
        info["nvidia_driver_version"] = detection.driver_version
    return info


NUMERIC = ("performance", "test_duration", "build_duration")


def _value(key: str, text: str) -> Any:
    if key in NUMERIC and text not in ("", None):
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else str(number)
    return text


def json_document(results: ResultTable, detection: Detection, run_id: str) -> dict[str, Any]:
    items = []
    for entry in results.entries:
        record = {k: _value(k, v) for k, v in entry.row.items()}
        if entry.baseline:
            record["baseline"] = entry.baseline
        if entry.comparison:
            record["comparison"] = entry.comparison
        record["nodeid"] = entry.nodeid
        record["extra"] = entry.extra
        if entry.log_tail:
            record["log_tail"] = entry.log_tail
        items.append(record)
    return {
        "schema_version": 1,
        "tool": "pytest-madengine",
        "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(detection),
        "results": items,
    }


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bars(results: ResultTable) -> str:
    """An inline SVG bar chart per model and arch, baseline beside when known, one scale per metric."""
    plotted = []
    for entry in results.ordered():
        measured = _float(entry.row.get("performance", ""))
        if measured is not None:
            plotted.append((entry, measured, _float(entry.baseline)))
    widest: dict[str, float] = {}
    for entry, measured, base in plotted:
        metric = entry.row.get("metric", "")
        widest[metric] = max(widest.get(metric, 0.0), abs(measured), abs(base or 0.0))
    parts = []
    y = 10
    for entry, measured, base in plotted:
        metric = entry.row.get("metric", "")
        scale = 420 / widest[metric] if widest[metric] else 0.0
        label = html.escape(f"{entry.row.get('model')} [{entry.row.get('gpu_architecture')}]")
        colour = "#c0392b" if entry.row.get("reason") == "regression" else "#2e86c1"
        text = html.escape(f"{entry.row['performance']} {metric}")
        parts.append(f'<text x="0" y="{y + 11}" font-size="12">{label}</text>')
        parts.append(
            f'<rect class="bar" x="260" y="{y}" width="{max(abs(measured) * scale, 1):.1f}" height="12" '
            f'fill="{colour}"><title>{text}</title></rect>'
        )
        parts.append(f'<text x="{265 + abs(measured) * scale:.1f}" y="{y + 11}" font-size="11">{text}</text>')
        if base is not None:
            y += 14
            parts.append(
                f'<rect class="baseline" x="260" y="{y}" width="{max(abs(base) * scale, 1):.1f}" height="8" '
                f'fill="#aab7b8"><title>baseline {base:g} {html.escape(metric)}</title></rect>'
            )
        y += 22
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="860" height="{y + 10}" role="img">{"".join(parts)}</svg>'


SCRIPT = """
document.querySelectorAll('th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = th.dataset.order !== 'asc';
    th.dataset.order = ascending ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.sort || a.cells[column].textContent;
      var y = b.cells[column].dataset.sort || b.cells[column].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return ascending ? cmp : -cmp;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
document.body.dataset.ready = '1';
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { cursor: pointer; background: #f4f6f6; }
tr.FAILURE td { background: #fdedec; }
tr.SKIPPED td { color: #7f8c8d; }
pre { background: #f8f9f9; padding: 0.6em; overflow-x: auto; }
"""


def html_document(
    results: ResultTable, detection: Detection, run_id: str, trends: Mapping[tuple[str, str], str] | None = None
) -> str:
    """One self-contained page; `trends`: an SVG trend chart per (model, arch), from the history."""
    machine = machine_info(detection)
    head = ["model", "arch", "performance", "metric", "change vs baseline", "status", "reason", "duration (s)"]
    body = []
    for entry in results.ordered():
        row = entry.row
        cells = [
            row.get("model", ""),
            row.get("gpu_architecture", ""),
            row.get("performance", ""),
            row.get("metric", ""),
            entry.change,
            row.get("status", ""),
            row.get("reason", ""),
            row.get("test_duration", ""),
        ]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        body.append(f'<tr class="{html.escape(row.get("status", ""))}" data-result="1">{tds}</tr>')
    failures = "".join(
        f"<h3>{html.escape(e.row.get('model', ''))} [{html.escape(e.row.get('gpu_architecture', ''))}]: "
        f"{html.escape(e.row.get('reason', ''))}</h3><pre>{html.escape(e.log_tail)}</pre>"
        for e in results.ordered()
        if e.row.get("status") == "FAILURE"
    )
    gpus = ", ".join(f"{g['index']}: {g['product_name'] or g['arch']}" for g in machine["gpus"]) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>pytest-madengine results</title><style>{STYLE}</style></head>
<body>
<h1>pytest-madengine results</h1>
<p>run {html.escape(run_id)} on {html.escape(machine["host"])}; GPUs: {html.escape(gpus)};
driver: {html.escape(machine["driver_version"] or "n/a")}</p>
<table id="results"><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>{"".join(body)}</tbody></table>
<h2>Performance</h2>
{_bars(results)}
{_trends(trends or {})}<h2>Failures</h2>
{failures or "<p>none</p>"}
<script>{SCRIPT}</script>
</body></html>
"""


def _trends(trends: Mapping[tuple[str, str], str]) -> str:
    if not trends:
        return ""
    charts = "".join(
        f'<figure class="trend" data-model="{html.escape(model)}" data-arch="{html.escape(arch)}">{svg}</figure>'
        for (model, arch), svg in sorted(trends.items())
    )
    return f"<h2>History</h2>\n{charts}"
