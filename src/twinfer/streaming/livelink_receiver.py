"""`twinfer receive --livelink PORT`: a Live Link Face receiver for people without Unreal, printing once a second
the packets per second, the subject, the head yaw/pitch/roll (the channels are degrees / 180) and the strongest
shapes; packets an Unreal receiver would drop (version, count) are counted, not shown."""

from __future__ import annotations

import socket
import sys
import time

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.errors import ConfigError
from twinfer.streaming.outputs.livelink import LiveLinkPacket, parse_packet


def describe_packet(packet: LiveLinkPacket, top: int = 6) -> str:
    yaw, pitch, roll = packet.head_degrees
    shapes = sorted(zip(ARKIT_BLENDSHAPES, packet.values), key=lambda kv: -kv[1])[:top]
    shown = "  ".join(f"{name} {v:.2f}" for name, v in shapes)
    return (f"{packet.subject} | head yaw {yaw:+4.0f} pitch {pitch:+4.0f} roll {roll:+4.0f} deg | {shown}")


def run_livelink_receiver(host: str, port: int, seconds: float | None = None, out=sys.stdout) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"receive: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.settimeout(0.2)
    print(f"listening for Live Link Face on {host}:{sock.getsockname()[1]} (Ctrl-C to stop)", file=out, flush=True)
    start = last = time.monotonic()
    count = dropped = seen = 0
    latest: LiveLinkPacket | None = None
    try:
        while seconds is None or time.monotonic() - start < seconds:
            try:
                data = sock.recv(65535)
                latest = parse_packet(data)
                count += 1
            except TimeoutError:
                pass
            except ValueError:
                dropped += 1
            now = time.monotonic()
            if now - last >= 1.0:
                line = describe_packet(latest) if latest is not None else "(nothing yet)"
                note = f" | {dropped} dropped" if dropped else ""
                print(f"{(count - seen) / (now - last):5.1f} fps | {line}{note}", file=out, flush=True)
                seen, last = count, now
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
