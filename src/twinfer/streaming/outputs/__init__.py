"""Result encoders for game engines. Each turns one frame's labelled values into the datagrams of its format;
the stream encodes once per format and sends the same bytes to every receiver of that format."""

from __future__ import annotations

from twinfer.streaming.outputs.base import FrameResult, OutputFormat
from twinfer.streaming.outputs.livelink import LiveLinkFormat
from twinfer.streaming.outputs.native import NativeFormat
from twinfer.streaming.outputs.vmc import VmcFormat

FORMATS: dict[str, type[OutputFormat]] = {"native": NativeFormat, "vmc": VmcFormat, "livelink": LiveLinkFormat}
DEFAULT_PORTS = {"vmc": 39539, "livelink": 11111}

__all__ = ["DEFAULT_PORTS", "FORMATS", "FrameResult", "OutputFormat"]
