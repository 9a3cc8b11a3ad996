"""Ratios, targets and the results files of `python -m bench`: bench/results/<date>.md (for people) and .json
(everything, machine-readable). Pure functions of what the run measured, so they are unit-tested."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loads import Result


@dataclass
class Target:
    name: str
    goal: float  # the ratio to reach (or, for `lower_is_better`, the ceiling)
    value: float | None  # the measured ratio / quantity; None = could not be measured
    basis: str
    lower_is_better: bool = False

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.goal if self.lower_is_better else self.value >= self.goal

    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        if self.met:
            return "met"
        factor = self.value / self.goal if self.lower_is_better else self.goal / self.value
        return f"missed by {factor:.2f}x"

    def as_dict(self) -> dict:
        return {"name": self.name, "goal": self.goal, "value": self.value, "basis": self.basis, "met": self.met,
                "verdict": self.verdict()}


def find(results: list[Result], system: str, protocol: str, tool: str, concurrency: int | None = None,
         batch: int = 1) -> Result | None:
    return next((r for r in results if r.system == system and r.protocol == protocol and r.tool == tool
                 and (concurrency is None or r.concurrency == concurrency) and r.batch == batch), None)


def ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or not b.rows_per_s:
        return None
    return a.rows_per_s / b.rows_per_s


def targets(run: Any) -> list[Target]:
    r = run.results
    out = []
    for protocol, mls_tool in (("http", "wrk"), ("grpc", "grpc-py")):
        mine = find(r, "twinfer", protocol, "perf_analyzer", 8)
        out.append(Target(f"KServe {protocol.upper()} tiny c=8 vs Triton", 1.5,
                          ratio(mine, find(r, "triton", protocol, "perf_analyzer", 8)), "perf_analyzer, same run"))
        out.append(Target(f"KServe {protocol.upper()} tiny c=8 vs MLServer", 5.0,
                          ratio(find(r, "twinfer", protocol, mls_tool, 8), find(r, "mlserver", protocol, mls_tool, 8)),
                          f"{mls_tool} (perf_analyzer cannot drive MLServer)"))
    tcp = find(r, "twinfer", "tcp", "tcp_tiny")
    out.append(Target("Game protocol TCP pipelined vs Triton HTTP", 5.0,
                      ratio(tcp, find(r, "triton", "http", "perf_analyzer", 8)), "tcp_tiny vs perf_analyzer c=8"))
    scaled = next((x.system for x in r if x.system.startswith("twinfer --workers")), None)
    if scaled is not None:  # the same targets with the server scaled out over the machine's cores
        for protocol in ("http", "grpc"):
            out.append(Target(f"KServe {protocol.upper()} tiny c=8 vs Triton, {scaled}", 1.5,
                              ratio(find(r, scaled, protocol, "perf_analyzer", 8),
                                    find(r, "triton", protocol, "perf_analyzer", 8)), "perf_analyzer, same run"))
        out.append(Target(f"Game protocol TCP pipelined vs Triton HTTP, {scaled}", 5.0,
                          ratio(find(r, scaled, "tcp", "tcp_tiny"), find(r, "triton", "http", "perf_analyzer", 8)),
                          "tcp_tiny vs perf_analyzer c=8"))
    face = [x for x in r if x.system == "twinfer" and x.batch == 8 and x.tool == "perf_analyzer"]
    best = max(face, key=lambda x: x.rows_per_s, default=None)
    raw8 = run.raw.get("face_b8")
    out.append(Target("Face CNN batch 8 served vs raw ORT batch 8", 0.95,
                      best.rows_per_s / (raw8 * 8) if best and raw8 else None,
                      f"perf_analyzer c=4 ({best.protocol if best else '-'}) rows/s vs in-process rows/s"))
    streams = run.extra.get("streams")
    out.append(Target("Streams at p99 < 16.7 ms vs raw compute limit", 0.9,
                      streams["results_per_s"] / streams["raw_frames_per_s"] if streams else None,
                      f"{streams['streams'] if streams else '?'} streams x 60 fps"))
    idle = run.extra.get("idle")
    out.append(Target("RSS per idle session (KB), 10k sessions, one worker", 20.0,
                      idle["bytes_per_session"] / 1000 if idle else None,
                      f"{idle['sessions'] if idle else '?'} logged-in sessions", lower_is_better=True))
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(info: dict, results: list[Result], raw: dict[str, float], extra: dict, failures: list[dict],
             goals: list[Target]) -> str:
    lines = [f"# twinfer benchmarks, {info['date']}", "",
             "All systems measured in this one run on this machine; the load tools share its cores with the server, "
             "so compare ratios within the run, not absolute numbers across machines.", "",
             "| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in info.items()]
    lines += ["", "## Targets", "", "| target | goal | measured | verdict | basis |", "|---|---|---|---|---|"]
    for t in goals:
        goal = f"<= {t.goal:g}" if t.lower_is_better else f">= {t.goal:g}x"
        lines.append(f"| {t.name} | {goal} | {_fmt(t.value, 3)} | {t.verdict()} | {t.basis} |")
    lines += ["", "## Results", "",
              "Ratios: `vs raw` divides rows/s by in-process ONNX Runtime at the same model and batch (1 thread); "
              "`vs Triton` by standalone Triton with the same protocol, tool, concurrency and batch. CPU = server "
              "process tree CPU seconds per 1,000 requests over the run (the load tool's CPU not included).", "",
              "| system | protocol | tool | batch | conc. | infer/s | rows/s | p50 ms | p99 ms | CPU s/1k | vs raw "
              "| vs Triton | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in results:
        raw_key = f"{'face' if x.batch == 8 else 'tiny'}_b{x.batch}" if x.system != "onnxruntime" else None
        vs_raw = x.rows_per_s / (raw[raw_key] * x.batch) if raw_key and raw.get(raw_key) else None
        triton = find(results, "triton", x.protocol, x.tool, x.concurrency, x.batch)
        vs_triton = ratio(x, triton) if x.system != "onnxruntime" else None
        lines.append(f"| {x.system} | {x.protocol} | {x.tool} | {x.batch} | {x.concurrency} | {x.infer_per_s:,.0f} | "
                     f"{x.rows_per_s:,.0f} | {x.p50_ms:.3f} | {x.p99_ms:.3f} | {_fmt(x.cpu_s_per_1k, 3)} | "
                     f"{_fmt(vs_raw, 4)} | {_fmt(vs_triton, 2)} | {x.note} |")
    if "streams" in extra:
        s = extra["streams"]
        lines += ["", "## Streams", "", f"Largest count of 60 fps face streams with p99 capture->result < 16.7 ms: "
                  f"**{s['streams']}** ({s['results_per_s']:,.0f} results/s, p99 {s['p99_ms']:.2f} ms); raw ORT limit "
                  f"{s['raw_frames_per_s']:,.0f} frames/s (batch {s['raw_batch']}); "
                  f"{s.get('sender_processes', 1)} sender process(es).", "",
                  "| streams | p99 ms | results/s | delivered | server CPU ms a frame |", "|---|---|---|---|---|"]
        # steps: (streams, p99, rate, delivered[, server CPU ms a frame]); runs before the CPU column had four
        lines += [f"| {step[0]} | {step[1]:.2f} | {step[2]:,.0f} | {100 * step[3]:.1f} % | "
                  f"{_fmt(step[4] if len(step) > 4 else None, 3)} |" for step in s["steps"]]
    if "idle" in extra:
        i = extra["idle"]
        lines += ["", "## Idle sessions", "", f"{i['sessions']:,} logged-in idle sessions: server RSS "
                  f"{i['rss_before_kb'] / 1024:.1f} -> {i['rss_after_kb'] / 1024:.1f} MiB = "
                  f"{i['bytes_per_session'] / 1024:.2f} KiB per session."]
    lines += ["", "## Failures", ""]
    lines += [f"- **{f['what']}**: ```{f['error'][:600]}```" for f in failures] or ["None."]
    return "\n".join(lines) + "\n"


def write_results(out: Path, info: dict, results: list[Result], raw: dict[str, float], extra: dict,
                  failures: list[dict], goals: list[Target]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = info["date"][:10] + ("-quick" if info.get("quick") else "")
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    md.write_text(markdown(info, results, raw, extra, failures, goals), encoding="utf-8")
    js.write_text(json.dumps({"machine": info, "raw_calls_per_s": raw, "results": [r.as_dict() for r in results],
                              "extra": extra, "targets": [t.as_dict() for t in goals], "failures": failures},
                             indent=2) + "\n", encoding="utf-8")
    return md, js
