"""`twinfer receive`: VMC frames told apart by /VMC/Ext/T, surviving a lost bundle (issue #19) the way Unity
receivers do (the lost shapes stay at their last value, the rest of the frame lands); Live Link description."""

from __future__ import annotations

import math

import numpy as np

from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.streaming.livelink_receiver import describe_packet
from twinfer.streaming.outputs import FORMATS, FrameResult
from twinfer.streaming.outputs.livelink import parse_packet
from twinfer.streaming.receiver import VmcState, describe


def frame(level: float, seconds: float, yaw_deg: float = 0.0, tracked: bool = True) -> FrameResult:
    face = FaceReading(tracked, 0.9, np.full(52, level, np.float32), np.array([math.radians(yaw_deg), 0, 0],
                       np.float32), np.zeros(3, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                       CalibrationState.CALIBRATED)
    return FrameResult(1, 1, 0, 0, np.full(52, level, np.float32), ARKIT_BLENDSHAPES, "1", face, seconds)


def feed(state: VmcState, datagrams: list[bytes]) -> None:
    dispatcher = state.dispatcher()
    for data in datagrams:
        dispatcher.call_handlers_for_packet(data, ("127.0.0.1", 1))


def test_a_lost_bundle_leaves_its_shapes_one_frame_stale_and_the_rest_of_the_frame_lands():
    vmc = FORMATS["vmc"]()
    state = VmcState(keep=True)
    first, second, third = (vmc.encode(frame(level, t, yaw)) for level, t, yaw in
                            ((0.1, 0.0, 10.0), (0.2, 1 / 60, 20.0), (0.3, 2 / 60, 30.0)))
    assert len(second) >= 3
    feed(state, first + [second[0], second[2]] + third)  # the middle bundle of frame 2 is lost
    state.finish()
    assert state.frames == 3
    values = [v for _, v in state.received]
    assert all(set(v) == set(ARKIT_BLENDSHAPES) for v in values)
    lost = {m for m in ARKIT_BLENDSHAPES if abs(values[1][m] - 0.1) < 1e-6}
    assert 0 < len(lost) < 52  # only the lost bundle's shapes kept frame 1's value ...
    assert all(abs(values[1][m] - 0.2) < 1e-6 for m in set(ARKIT_BLENDSHAPES) - lost)  # ... the rest is frame 2
    assert all(abs(v - 0.3) < 1e-6 for v in values[2].values())
    line = describe(state, top=2)
    assert line.startswith("tracked, calibrated | head yaw  +30 pitch   +0 roll   +0 deg | 52 shapes")


def test_a_late_bundle_of_an_earlier_frame_opens_no_frame_and_lost_tracking_shows():
    vmc = FORMATS["vmc"]()
    state = VmcState()
    early, late = vmc.encode(frame(0.1, 1.0)), vmc.encode(frame(0.2, 1.1, tracked=False))
    feed(state, [early[0], late[0], early[1], *late[1:], *early[2:]])
    state.finish()
    assert state.frames == 2
    assert describe(state, top=1).startswith("lost, calibrated")


def test_live_link_description_shows_the_head_pose_in_degrees():
    packet = parse_packet(FORMATS["livelink"]("Kiosk").encode(frame(0.5, 0.0, yaw_deg=-25.0))[0])
    assert describe_packet(packet, top=1).startswith("Kiosk | head yaw  -25 pitch   +0 roll   +0 deg | ")


def test_a_sender_without_t_gets_one_frame_per_apply():
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    def bundle(value: float) -> bytes:
        builder = OscBundleBuilder(IMMEDIATELY)
        val = OscMessageBuilder("/VMC/Ext/Blend/Val")
        val.add_arg("jawOpen", "s")
        val.add_arg(value, "f")
        builder.add_content(val.build())
        builder.add_content(OscMessageBuilder("/VMC/Ext/Blend/Apply").build())
        return builder.build().dgram

    state = VmcState(keep=True)
    feed(state, [bundle(0.25), bundle(0.5)])
    state.finish()
    assert state.frames == 2 and [v["jawOpen"] for _, v in state.received] == [0.25, 0.5]
