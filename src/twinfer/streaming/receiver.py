"""`twinfer receive --vmc PORT`: a VMC receiver for people without Unity, printing what arrives; `--record` keeps
every frame (JSON lines), `--compare SENT.jsonl` says how well the values follow what `twinfer stream --record`
sent (per-shape correlation)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer


def run_vmc_receiver(host: str, port: int, seconds: float | None = None, top: int = 6, out=sys.stdout,
                     record: Path | None = None, compare: Path | None = None) -> int:
    current: dict[str, float] = {}
    state = {"frames": 0, "last": {}}
    lock = threading.Lock()
    received: list[tuple[float, dict[str, float]]] = []  # (arrival wall-clock time, values), kept for --record/--compare
    keep = record is not None or compare is not None

    def value(_: str, name: str, v: float) -> None:
        with lock:
            current[name] = v

    def apply(_: str) -> None:
        with lock:
            state["frames"] += 1
            state["last"] = dict(current)
            if keep:
                received.append((time.time(), state["last"]))
            current.clear()

    dispatcher = Dispatcher()
    dispatcher.map("/VMC/Ext/Blend/Val", value)
    dispatcher.map("/VMC/Ext/Blend/Apply", apply)
    server = ThreadingOSCUDPServer((host, port), dispatcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"listening for VMC on {host}:{server.server_address[1]} (Ctrl-C to stop)", file=out, flush=True)
    start = last = time.monotonic()
    seen = 0
    try:
        while seconds is None or time.monotonic() - start < seconds:
            time.sleep(1.0)
            with lock:
                frames, latest = state["frames"], state["last"]
            now = time.monotonic()
            strongest = sorted(latest.items(), key=lambda kv: -kv[1])[:top]
            shown = "  ".join(f"{name} {v:.2f}" for name, v in strongest) or "(nothing yet)"
            print(f"{(frames - seen) / (now - last):5.1f} fps | {len(latest)} shapes | {shown}", file=out, flush=True)
            seen, last = frames, now
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    if record is not None:
        with open(record, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"t": arrived, "values": values}) + "\n" for arrived, values in received)
    if compare is not None:
        from twinfer.streaming.tracking_check import correlations, format_report, read_sent

        print(format_report(correlations(read_sent(compare), received)), file=out, flush=True)
    return 0
