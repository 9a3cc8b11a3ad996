"""The bot's outputs: a console summary, a JSON file, and a self-contained HTML report (inline SVG charts, no
scripts or fonts from the internet)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(summary: dict[str, Any], console: Console) -> None:
    lat = summary["latency_ms"]
    table = Table(title=f"twinfer bot: {summary['test']} over {summary['protocol']} -> {summary['target']} "
                        f"({summary['model']}, {summary['mode']} model)")
    for column in ("requests", "ok/s", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"):
        table.add_column(column, justify="right")
    table.add_row(f"{summary['requests']:,}", f"{summary['rps']:,.0f}", f"{summary['error_rate']:.2%}",
                  f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}", f"{lat['p99.9']:.3f}",
                  f"{lat['max']:.3f}")
    console.print(table)
    if summary.get("open_model"):
        o = summary["open_model"]
        console.print(f"open model: scheduled {o['scheduled_rate']:,.0f}/s, achieved {o['achieved_rate']:,.0f}/s "
                      f"({o['sent']:,} of {o['scheduled']:,} sent)")
    for key in ("stress", "spike", "soak", "failover", "concurrency"):
        if key in summary:
            shown = {k: v for k, v in summary[key].items() if k not in ("steps", "rss_mb")}
            console.print(f"{key}: {json.dumps(shown, default=str)}")
    if summary["errors"]:
        console.print("errors: " + ", ".join(f"{k} x{v}" for k, v in summary["errors"].items()))
    for check in summary["thresholds"]:
        mark = "[green]met[/green]" if check["ok"] else "[red]BROKEN[/red]"
        console.print(f"threshold {check['threshold']}: {mark} (actual {check['actual']:.4g})")
    console.print("[green]PASSED[/green]" if summary["passed"] else "[red]FAILED[/red]")


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _polyline_chart(title: str, series: list[tuple[str, str, list[float | None]]], unit: str) -> str:
    width, height, pad = 720, 220, 40
    values = [v for _, _, ys in series for v in ys if v is not None]
    top = max(values, default=1.0) or 1.0
    n = max((len(ys) for _, _, ys in series), default=1)
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
             f'<text x="{pad}" y="16" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="24" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
             f'<text x="2" y="30" font-size="10">{top:.3g}{unit}</text>',
             f'<text x="{pad}" y="{height - 22}" font-size="10">0 s</text>',
             f'<text x="{width - 40}" y="{height - 22}" font-size="10">{n} s</text>']
    for i, (label, color, ys) in enumerate(series):
        points = []
        for x, y in enumerate(ys):
            if y is None:
                continue
            px = pad + (width - pad - 10) * (x / max(n - 1, 1))
            py = (height - pad) - (height - pad - 24) * (y / top)
            points.append(f"{px:.1f},{py:.1f}")
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(points)}"/>')
        parts.append(f'<text x="{width - 160}" y="{16 + 14 * i}" font-size="11" fill="{color}">'
                     f'{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(summary: dict[str, Any], path: Path) -> None:
    timeline = summary["timeline"]
    throughput = _polyline_chart("Throughput per second", [
        ("ok/s", "#2a7", [t["ok"] for t in timeline]), ("errors/s", "#c33", [t["failed"] for t in timeline])], "")
    latency = _polyline_chart("Latency per second", [
        ("p50", "#27c", [t["p50_ms"] for t in timeline]), ("p99", "#c72", [t["p99_ms"] for t in timeline])], " ms")
    lat = summary["latency_ms"]
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in lat.items())
    errors = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in summary["errors"].items())
    checks = "".join(
        f"<tr><td>{html.escape(c['threshold'])}</td><td>{c['actual']:.4g}</td>"
        f"<td class=\"{'ok' if c['ok'] else 'bad'}\">{'met' if c['ok'] else 'BROKEN'}</td></tr>"
        for c in summary["thresholds"])
    extra = "".join(f"<h2>{key}</h2><pre>{html.escape(json.dumps(summary[key], indent=2, default=str))}</pre>"
                    for key in ("open_model", "stress", "spike", "soak", "failover", "concurrency") if key in summary)
    verdict = "PASSED" if summary["passed"] else "FAILED"
    document = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>twinfer bot: {html.escape(summary['test'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:780px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}.ok{{color:#2a7}}.bad{{color:#c33}}</style></head>
<body><h1>twinfer bot: {html.escape(summary['test'])}
<span class="{'ok' if summary['passed'] else 'bad'}">{verdict}</span></h1>
<p>{html.escape(summary['protocol'])} &rarr; {html.escape(summary['target'])}, model {html.escape(summary['model'])},
{summary['mode']} model, {summary['processes']} process(es), {summary['duration_s']:g} s:
{summary['requests']:,} requests, {summary['rps']:,.0f} ok/s, error rate {summary['error_rate']:.3%}.</p>
{throughput}{latency}
<h2>Latency (ms)</h2><table>{rows}</table>
<h2>Thresholds</h2><table>{checks or '<tr><td>none</td></tr>'}</table>
<h2>Errors</h2><table>{errors or '<tr><td>none</td></tr>'}</table>
{extra}</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document)
