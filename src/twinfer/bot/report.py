"""The bot's outputs: a console summary, a JSON file, and a self-contained HTML report (inline SVG charts, no
scripts or fonts from the internet)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from twinfer.bot.charts import HDR_TICKS, Series, line_chart, nines, plain


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


def _table(rows: list[list[object]], header: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return plain(round(value, 3))
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _charts(summary: dict[str, Any]) -> list[str]:
    timeline = summary["timeline"]
    seconds = "time since the start (s)"
    charts = [line_chart("Latency percentiles over time", [
        Series(name, [(t["second"], t.get(f"{key}_ms")) for t in timeline])
        for name, key in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("max", "max"))], seconds, "latency (ms)")]
    distribution = [(p, ms) for p, ms in summary.get("percentile_distribution", []) if p < 100]
    if distribution:
        charts.append(line_chart("Latency by percentile (HDR)", [Series("latency", distribution, markers=True)],
                                 "percentile (log scale of 1 / (1 - p))", "latency (ms)", x_transform=nines,
                                 x_ticks=HDR_TICKS))
    rate = [Series("achieved ok/s", [(t["second"], t["ok"]) for t in timeline])]
    if summary["mode"] == "open":
        rate.insert(0, Series("scheduled/s", [(t["second"], t.get("scheduled")) for t in timeline]))
    rate.append(Series("errors/s", [(t["second"], t["failed"]) for t in timeline], color="#d62728"))
    charts.append(line_chart("Scheduled vs achieved rate", rate, seconds, "requests per second"))
    load = [Series("requests in flight", [(t["second"], t.get("in_flight")) for t in timeline])]
    if summary["mode"] == "closed":
        load.insert(0, Series("active users", [(t["second"], t.get("users")) for t in timeline]))
    charts.append(line_chart("Active users and requests in flight", load, seconds, "count"))
    kinds = sorted({k for t in timeline for k in t.get("errors", {})})
    if kinds:
        charts.append(line_chart("Errors by kind over time", [
            Series(kind[:22], [(t["second"], t.get("errors", {}).get(kind, 0)) for t in timeline]) for kind in kinds],
            seconds, "errors per second"))
    return charts


def _stress(stress: dict[str, Any]) -> str:
    steps = stress["steps"]
    rows = [[step["rate"], step["achieved_rps"], step["p99_ms"], f"{step['error_rate']:.2%}",
             "met" if step["met"] else "BROKEN"] for step in steps]
    knee = line_chart("Throughput vs latency (the knee)", [
        Series("p99 per step", [(step["achieved_rps"], step["p99_ms"]) for step in steps], markers=True),
        *([Series(f"knee {plain(stress['knee_rate'])}/s", [(step["achieved_rps"], step["p99_ms"]) for step in steps
                                                              if step["rate"] == stress["knee_rate"]],
                  color="#2ca02c", markers=True)] if stress.get("knee_rate") else [])],
        "achieved throughput (requests/s)", "p99 latency (ms)")
    note = f"<p>{html.escape(stress['note'])}</p>" if stress.get("note") else ""
    return (f"<h2>Stress steps</h2><p>knee: {_cell(stress.get('knee_rate'))} requests/s "
            f"(the highest step that met every threshold)</p>{note}"
            + _table(rows, ["scheduled /s", "achieved /s", "p99 ms", "errors", "thresholds"]) + knee)


def _section(key: str, data: dict[str, Any]) -> str:
    flat = [[k.replace("_", " "), v] for k, v in data.items() if not isinstance(v, (dict, list)) or
            (isinstance(v, list) and len(v) <= 8 and all(not isinstance(x, (dict, list)) for x in v))]
    return f"<h2>{html.escape(key.replace('_', ' '))}</h2>" + _table(flat)


def write_html(summary: dict[str, Any], path: Path) -> None:
    lat = summary["latency_ms"]
    latency = _table([[k, v] for k, v in lat.items()], ["statistic", "ms"])
    errors = _table([[k, v] for k, v in summary["errors"].items()] or [["none", ""]], ["error", "count"])
    checks = "".join(
        f"<tr><td>{html.escape(c['threshold'])}</td><td>{plain(c['actual'])}</td>"
        f"<td class=\"{'ok' if c['ok'] else 'bad'}\">{'met' if c['ok'] else 'BROKEN'}</td></tr>"
        for c in summary["thresholds"])
    extra = "".join(_stress(summary[key]) if key == "stress" else _section(key, summary[key])
                    for key in ("open_model", "stress", "spike", "soak", "failover", "concurrency") if key in summary)
    verdict = "PASSED" if summary["passed"] else "FAILED"
    users = f"{summary['users']} users, " if summary.get("users") else ""
    document = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>twinfer bot: {html.escape(summary['test'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:800px}}table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th{{background:#f4f4f4}}.ok{{color:#2a7}}
.bad{{color:#c33}}svg{{display:block;margin:1em 0}}</style></head>
<body><h1>twinfer bot: {html.escape(summary['test'])}
<span class="{'ok' if summary['passed'] else 'bad'}">{verdict}</span></h1>
<p>{html.escape(summary['protocol'])} &rarr; {html.escape(summary['target'])}, model {html.escape(summary['model'])},
{summary['mode']} model, {users}{summary['processes']} process(es), {plain(summary['duration_s'])} s measured:
{summary['requests']:,} requests, {summary['rps']:,.0f} ok/s, error rate {summary['error_rate']:.3%}.</p>
<h2>Thresholds</h2><table>{checks or '<tr><td>none</td></tr>'}</table>
<h2>Latency</h2>{latency}
{"".join(_charts(summary))}
<h2>Errors</h2>{errors}
{extra}</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document)
