"""VMC protocol (OSC over UDP): per frame, `/VMC/Ext/Blend/Val (s f)` for every blendshape, then
`/VMC/Ext/Blend/Apply`, packed in OSC bundles of at most 1500 bytes (DESIGN §8). Values are OSC float32."""

from __future__ import annotations

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from twinfer.streaming.outputs.base import FrameResult, OutputFormat

MAX_BUNDLE_BYTES = 1500
_BUNDLE_OVERHEAD = 16  # "#bundle\0" + timetag
_ELEMENT_OVERHEAD = 4  # size prefix of each element


def _message(address: str, *args: tuple[object, str]) -> bytes:
    builder = OscMessageBuilder(address=address)
    for value, type_tag in args:
        builder.add_arg(value, type_tag)
    return builder.build().dgram


class VmcFormat(OutputFormat):
    def encode(self, result: FrameResult) -> list[bytes]:
        messages = [
            _message("/VMC/Ext/Blend/Val", (name, "s"), (float(value), "f"))
            for name, value in zip(result.labels, result.values)
        ]
        messages.append(_message("/VMC/Ext/Blend/Apply"))
        return _bundles(messages)


def _bundles(messages: list[bytes]) -> list[bytes]:
    """Greedy packing of whole messages into bundles under MAX_BUNDLE_BYTES, order kept."""
    from pythonosc.osc_message import OscMessage

    out: list[bytes] = []
    current: list[bytes] = []
    size = _BUNDLE_OVERHEAD
    for dgram in messages:
        need = _ELEMENT_OVERHEAD + len(dgram)
        if current and size + need > MAX_BUNDLE_BYTES:
            out.append(_build(current, OscMessage))
            current, size = [], _BUNDLE_OVERHEAD
        current.append(dgram)
        size += need
    if current:
        out.append(_build(current, OscMessage))
    return out


def _build(dgrams: list[bytes], message_cls) -> bytes:
    builder = OscBundleBuilder(IMMEDIATELY)
    for dgram in dgrams:
        builder.add_content(message_cls(dgram))
    return builder.build().dgram
