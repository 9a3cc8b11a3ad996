"""Stream outputs for real receivers (issue #15, #19): VMC bundles, Unity quaternions, Live Link, native faces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

from tests.support import parse_live_link_with_struct
from twinfer.arkit import ARKIT_BLENDSHAPES
from twinfer.faces.reading import CalibrationState, FaceReading
from twinfer.protocol import game_pb2
from twinfer.streaming.outputs import FORMATS, FrameResult
from twinfer.streaming.outputs.livelink import parse_packet
from twinfer.streaming.outputs.unity_pose import arkit_quaternion, unity_rotation, unity_to_arkit_angles
from twinfer.streaming.outputs.vmc import MAX_BUNDLE_BYTES

D = math.radians
S = math.sqrt(0.5)


def face(tracked: bool = True, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
         left: tuple[float, float] = (0.0, 0.0), right: tuple[float, float] = (0.0, 0.0),
         calibration: CalibrationState = CalibrationState.CALIBRATED, landmarks: np.ndarray | None = None,
         ) -> FaceReading:
    f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
    return FaceReading(tracked, 0.9 if tracked else 0.1, np.linspace(0, 1, 52, dtype=np.float32),
                       f32(yaw, pitch, roll), f32(0.01, -0.02, 0.5), f32(*left), f32(*right), calibration, landmarks)


def result(reading: FaceReading | None = None, labels: tuple[str, ...] = ARKIT_BLENDSHAPES,
           values: np.ndarray | None = None, stream_seconds: float = 12.5) -> FrameResult:
    values = np.linspace(0, 1, len(labels), dtype=np.float32) if values is None else values
    return FrameResult(3, 9, 1_500_000_000, 2, values, labels, "1", reading, stream_seconds)


def decode(bundles: list[bytes]) -> list[list[OscMessage]]:
    out = []
    for dgram in bundles:
        assert OscBundle.dgram_is_bundle(dgram)
        messages = list(OscBundle(dgram))
        assert all(isinstance(m, OscMessage) for m in messages)
        out.append(messages)
    return out


def bones(messages: list[OscMessage]) -> dict[str, tuple]:
    return {m.params[0]: tuple(m.params[1:]) for m in messages if m.address == "/VMC/Ext/Bone/Pos"}


# --- VMC ---------------------------------------------------------------------------------------------------------

def test_vmc_frame_every_bundle_fits_1200_bytes_and_is_useful_alone():
    bundles = FORMATS["vmc"]().encode(result(face(yaw=D(20), pitch=D(-5), roll=D(3))))
    assert len(bundles) >= 2 and all(len(b) <= MAX_BUNDLE_BYTES for b in bundles)
    decoded = decode(bundles)
    for messages in decoded:  # each bundle: OK, T first, Apply last (issue #19)
        assert [m.address for m in messages[:2]] == ["/VMC/Ext/OK", "/VMC/Ext/T"]
        assert messages[-1].address == "/VMC/Ext/Blend/Apply" and messages[-1].params == []
        assert messages[0].params == [1, 3, 0, 1]  # loaded, calibrated (VMC's 3), normal mode, tracked
        assert messages[1].params == [12.5]
    first = decoded[0]
    assert [m.address for m in first[2:6]] == ["/VMC/Ext/Root/Pos"] + ["/VMC/Ext/Bone/Pos"] * 3
    assert first[2].params == ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert set(bones(first)) == {"Head", "LeftEye", "RightEye"}
    assert all(not bones(m) for m in decoded[1:])  # bones once per frame
    values = [m for messages in decoded for m in messages if m.address == "/VMC/Ext/Blend/Val"]
    assert [m.params[0] for m in values] == list(ARKIT_BLENDSHAPES)  # every shape, ARKit names, in order
    assert all(isinstance(m.params[1], float) for m in values)
    np.testing.assert_allclose([m.params[1] for m in values], np.linspace(0, 1, 52), atol=1e-6)
    # all numbers float32 except OK's ints: the type tags say so
    for messages in decoded:
        for m in messages:
            tags = m.dgram[m.dgram.index(b",") :].split(b"\0")[0]
            assert tags == {"/VMC/Ext/OK": b",iiii", "/VMC/Ext/T": b",f", "/VMC/Ext/Blend/Apply": b",",
                            "/VMC/Ext/Blend/Val": b",sf"}.get(m.address, b",sfffffff")


def test_vmc_tracking_status_is_0_when_the_face_is_lost_and_calibration_state_uses_vmc_numbers():
    vmc = FORMATS["vmc"]()
    for state, number in ((CalibrationState.NONE, 0), (CalibrationState.CALIBRATING, 2),
                          (CalibrationState.CALIBRATED, 3)):
        lost = decode(vmc.encode(result(face(tracked=False, calibration=state))))
        assert all(messages[0].params == [1, number, 0, 0] for messages in lost)
    tracked = decode(vmc.encode(result(face(tracked=True, calibration=CalibrationState.NONE))))
    assert tracked[0][0].params == [1, 0, 0, 1]


def test_vmc_without_a_face_keeps_the_values_and_adds_ok_and_t():
    """Plain models (face_blendshapes): no bones, tracking status 1, every value, Apply per bundle."""
    decoded = decode(FORMATS["vmc"]().encode(result(None)))
    addresses = [m.address for messages in decoded for m in messages]
    assert "/VMC/Ext/Bone/Pos" not in addresses and "/VMC/Ext/Root/Pos" not in addresses
    assert addresses.count("/VMC/Ext/Blend/Val") == 52
    assert addresses.count("/VMC/Ext/Blend/Apply") == addresses.count("/VMC/Ext/OK") == len(decoded)
    assert all(messages[0].params == [1, 0, 0, 1] for messages in decoded)


def test_vmc_many_long_labels_still_fit_and_an_empty_frame_is_one_bundle():
    labels = tuple(f"custom_shape_with_a_rather_long_name_{i:03d}" for i in range(200))
    bundles = FORMATS["vmc"]().encode(result(face(), labels=labels))
    assert all(len(b) <= MAX_BUNDLE_BYTES for b in bundles)
    names = [m.params[0] for messages in decode(bundles) for m in messages if m.address == "/VMC/Ext/Blend/Val"]
    assert names == list(labels)
    empty = decode(FORMATS["vmc"]().encode(result(None, labels=(), values=np.zeros(0, np.float32))))
    assert [[m.address for m in b] for b in empty] == [["/VMC/Ext/OK", "/VMC/Ext/T", "/VMC/Ext/Blend/Apply"]]


def test_vmc_values_from_numpy_float32_are_python_floats_on_the_wire():
    values = np.array([0.25, 0.5], np.float32)
    decoded = decode(FORMATS["vmc"]().encode(result(None, labels=("jawOpen", "eyeBlinkLeft"), values=values)))
    assert [m.params for m in decoded[0] if m.address == "/VMC/Ext/Blend/Val"] == [["jawOpen", 0.25],
                                                                                    ["eyeBlinkLeft", 0.5]]


# --- quaternions: ARKit face frame -> Unity ------------------------------------------------------------------------

def rotate(q: tuple[float, float, float, float], v: tuple[float, float, float]) -> np.ndarray:
    """v rotated by unit quaternion q (x, y, z, w): the matrix formula, the same in either handedness."""
    x, y, z, w = q
    m = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    return m @ np.array(v)


UNITY_RIGHT, UNITY_UP, UNITY_FORWARD = (1, 0, 0), (0, 1, 0), (0, 0, 1)


@pytest.mark.parametrize("angles, expected", [
    ((D(90), 0, 0), (0, -S, 0, S)),   # yaw +90: the person turns to their own left
    ((0, D(90), 0), (S, 0, 0, S)),    # pitch +90: looks down
    ((0, 0, D(90)), (0, 0, -S, S)),   # roll +90: tilts to their own right shoulder
    ((0, 0, 0), (0, 0, 0, 1)),
])
def test_unity_quaternions_of_known_rotations(angles, expected):
    np.testing.assert_allclose(unity_rotation(*angles), expected, atol=1e-9)


def test_unity_rotations_move_the_avatar_like_the_person():
    """In Unity's axes (x = the avatar's right, y up, z forward): turning left sends the face towards -x, looking
    down sends it towards -y, tilting right sends the top of the head towards +x."""
    np.testing.assert_allclose(rotate(unity_rotation(D(90), 0, 0), UNITY_FORWARD), (-1, 0, 0), atol=1e-9)
    np.testing.assert_allclose(rotate(unity_rotation(0, D(90), 0), UNITY_FORWARD), (0, -1, 0), atol=1e-9)
    np.testing.assert_allclose(rotate(unity_rotation(0, 0, D(90)), UNITY_UP), (1, 0, 0), atol=1e-9)


def euler_unity(x_deg: float, y_deg: float, z_deg: float) -> np.ndarray:
    """Unity's Quaternion.Euler as a matrix: Ry Rx Rz (z first, then x, then y), left-handed signs."""
    def r(axis: int, deg: float) -> np.ndarray:
        c, s = math.cos(D(deg)), math.sin(D(deg))
        i, j = [(1, 2), (2, 0), (0, 1)][axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m
    return r(1, y_deg) @ r(0, x_deg) @ r(2, z_deg)


def test_head_rotation_is_unity_euler_pitch_minus_yaw_minus_roll_and_the_mirror_of_the_arkit_matrix():
    yaw, pitch, roll = 25.0, -12.0, 8.0
    q = unity_rotation(D(yaw), D(pitch), D(roll))
    m = np.column_stack([rotate(q, e) for e in np.eye(3)])
    np.testing.assert_allclose(m, euler_unity(pitch, -yaw, -roll), atol=1e-9)
    mirror = np.diag([-1.0, 1.0, 1.0])
    arkit = np.column_stack([rotate(arkit_quaternion(D(yaw), D(pitch), D(roll)), e) for e in np.eye(3)])
    np.testing.assert_allclose(m, mirror @ arkit @ mirror, atol=1e-9)
    np.testing.assert_allclose(unity_to_arkit_angles(q), (D(yaw), D(pitch), D(roll)), atol=1e-9)


def test_vmc_head_and_eye_bones_carry_the_pose():
    reading = face(yaw=D(90), left=(0.0, D(90)), right=(D(-90), 0.0))
    got = bones(decode(FORMATS["vmc"]().encode(result(reading)))[0])
    for name, expected in (("Head", (0, -S, 0, S)), ("LeftEye", (S, 0, 0, S)), ("RightEye", (0, S, 0, S))):
        np.testing.assert_allclose(got[name][3:], expected, atol=1e-6)
    # local positions are a plausible head and eyes (receivers that sync positions keep a face): the head above the
    # neck, the left eye on the avatar's left (-x), both eyes above and in front of the head bone
    assert got["Head"][1] > 0.05 and got["LeftEye"][0] < 0 < got["RightEye"][0]
    assert all(got[eye][1] > 0 and got[eye][2] > 0 for eye in ("LeftEye", "RightEye"))


# --- Live Link -----------------------------------------------------------------------------------------------------


def test_live_link_packet_fully_parsed_with_rotations_in_degrees_over_180():
    reading = face(yaw=D(45), pitch=D(-18), roll=D(9), left=(D(10), D(-20)), right=(D(-5), D(15)))
    packet = FORMATS["livelink"]("Stage Left").encode(result(reading))[0]
    version, device, subject, frame, sub_frame, num, den, count, values = parse_live_link_with_struct(packet)
    assert (version, device, subject, num, den, count) == (6, "twinfer-3", "Stage Left", 60, 1, 61)
    assert frame == 90 and sub_frame == pytest.approx(0.0, abs=1e-6)  # 1.5 s at 60 fps
    np.testing.assert_allclose(values[:52], np.linspace(0, 1, 52), atol=1e-6)
    np.testing.assert_allclose(values[52:], np.array([45, -18, 9, 10, -20, 0, -5, 15, 0]) / 180, atol=1e-6)
    parsed = parse_packet(packet)
    assert parsed.values == values and parsed.subject == "Stage Left"
    np.testing.assert_allclose(parsed.head_degrees, (45, -18, 9), atol=1e-4)


def test_live_link_without_a_face_leaves_the_rotations_at_zero_and_maps_labels_by_name():
    r = result(None, labels=("jawOpen", "notAShape"), values=np.array([0.25, 0.75], np.float32))
    values = parse_live_link_with_struct(FORMATS["livelink"]("Face").encode(r)[0])[-1]
    assert values[ARKIT_BLENDSHAPES.index("jawOpen")] == 0.25 and sum(values) == 0.25


@pytest.mark.parametrize("mutate", [lambda p: b"\x05" + p[1:], lambda p: p[:-1], lambda p: p + b"\0",
                                    lambda p: p[:30]])
def test_live_link_parser_refuses_what_a_receiver_drops(mutate):
    packet = FORMATS["livelink"]().encode(result(face()))[0]
    with pytest.raises(ValueError):
        parse_packet(mutate(packet))


# --- native --------------------------------------------------------------------------------------------------------

def test_native_face_fields_round_trip():
    landmarks = np.arange(478 * 3, dtype=np.float32).reshape(478, 3) / 7
    reading = face(yaw=0.1, pitch=-0.2, roll=0.3, left=(0.05, -0.04), right=(0.03, 0.02),
                   calibration=CalibrationState.CALIBRATING, landmarks=landmarks)
    [data] = FORMATS["native"]().encode(result(reading))
    message = game_pb2.StreamResult.FromString(data)
    assert message.HasField("face") and list(message.labels) == list(ARKIT_BLENDSHAPES)
    f = message.face
    assert f.tracked and f.score == pytest.approx(0.9)
    np.testing.assert_allclose([f.head_yaw, f.head_pitch, f.head_roll], [0.1, -0.2, 0.3], rtol=1e-6)
    np.testing.assert_allclose([f.head_x, f.head_y, f.head_z], [0.01, -0.02, 0.5], rtol=1e-6)
    np.testing.assert_allclose([f.left_eye_yaw, f.left_eye_pitch, f.right_eye_yaw, f.right_eye_pitch],
                               [0.05, -0.04, 0.03, 0.02], rtol=1e-6)
    assert f.calibration == game_pb2.CALIBRATION_STATE_CALIBRATING
    np.testing.assert_array_equal(np.array(f.landmarks, np.float32).reshape(-1, 3), landmarks)


def test_native_without_a_face_has_no_face_and_lost_faces_say_so():
    assert not game_pb2.StreamResult.FromString(FORMATS["native"]().encode(result(None))[0]).HasField("face")
    lost = game_pb2.StreamResult.FromString(FORMATS["native"]().encode(result(face(tracked=False)))[0])
    assert lost.HasField("face") and not lost.face.tracked and len(lost.face.landmarks) == 0


def test_wire_calibration_enum_mirrors_the_python_one():
    wire = {v.number: v.name for v in game_pb2.CalibrationState.DESCRIPTOR.values}
    assert wire == {int(s): f"CALIBRATION_STATE_{s.name}" for s in CalibrationState}


def epic_head_channels(yaw: float, pitch: float, roll: float) -> tuple[float, float, float]:
    """What Unreal's ARKit face plugin sends for a head at these ARKit angles, step by step from its code:
    ToFTransform's quaternion (-z, x, y, -w), FQuat::Rotator()'s formulas, the non-mirrored branch's negation of
    yaw and roll, and the division by 180 (AppleARKitFaceMeshConversion.h, ToBlendShapeMap)."""
    ax, ay, az, aw = arkit_quaternion(yaw, pitch, roll)
    x, y, z, w = -az, ax, ay, -aw
    rotator_pitch = math.degrees(math.asin(2 * (z * x - w * y)))
    rotator_yaw = math.degrees(math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
    rotator_roll = math.degrees(math.atan2(-2 * (w * x + y * z), 1 - 2 * (x * x + y * y)))
    return -rotator_yaw / 180, rotator_pitch / 180, -rotator_roll / 180


@pytest.mark.parametrize("degrees", [(30, 0, 0), (0, 25, 0), (0, 0, -15), (20, -10, 5), (-35, 15, 12)])
def test_live_link_head_channels_match_epics_own_conversion_chain(degrees):
    """Same signs, same units and the same composition order (Ry Rx Rz) as the Live Link Face pipeline."""
    yaw, pitch, roll = (D(v) for v in degrees)
    packet = FORMATS["livelink"]().encode(result(face(yaw=yaw, pitch=pitch, roll=roll)))[0]
    channels = parse_packet(packet).values[52:55]
    np.testing.assert_allclose(channels, epic_head_channels(yaw, pitch, roll), atol=1e-6)
    np.testing.assert_allclose(channels, np.array(degrees) / 180, atol=1e-6)
