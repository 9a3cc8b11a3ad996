"""`twinfer receive --vmc PORT`: a VMC receiver for people without Unity, printing what arrives."""

from __future__ import annotations

import sys
import threading
import time

from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer


def run_vmc_receiver(host: str, port: int, seconds: float | None = None, top: int = 6, out=sys.stdout) -> int:
    current: dict[str, float] = {}
    state = {"frames": 0, "last": {}}
    lock = threading.Lock()

    def value(_: str, name: str, v: float) -> None:
        with lock:
            current[name] = v

    def apply(_: str) -> None:
        with lock:
            state["frames"] += 1
            state["last"] = dict(current)
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
    return 0
