"""Head and eye rotations from twinfer's face frame (ARKit's) to Unity's, for VMC receivers.

ARKit's face anchor frame (twinfer.faces.reading): right-handed, x towards the person's own left, y up, z out of
the face. Yaw, pitch and roll are right-hand rotations about +y, +x and +z, composed as R = Ry(yaw) Rx(pitch)
Rz(roll) (the order Unity's `Quaternion.Euler` and Unreal's `FRotator` use too). So positive yaw turns the person
to their own left, positive pitch nods down, positive roll tilts the head towards their own right shoulder.

Unity (VMC's receivers; DESIGN §8): left-handed, x right, y up, z forward, and a humanoid avatar's local axes are
its own right, up and forward. The avatar's bones are its own anatomy (the person's left eye drives `LeftEye`), so
the change of frame is a mirror of the x axis only: the person's left (ARKit +x) is the avatar's left (Unity -x);
up and forward map to up and forward. A mirror M conjugates a rotation, R' = M R M, and for M = diag(-1, 1, 1)
that is the quaternion (x, y, z, w) -> (x, -y, -z, w): pitch keeps its sign, yaw and roll change theirs, as the
rotation's sense flips with handedness. In Unity's own words the Head's local rotation is
`Quaternion.Euler(pitch, -yaw, -roll)` (degrees), and a person turning to their own left turns the avatar to its
own left. Whether a viewer shows that as a mirror image is the receiver's camera's business.

Sources: Apple's ARFaceAnchor documentation (the face frame: "the positive x-axis points to the viewer's right
(that is, the face's own left), the positive y-axis points up, the positive z-axis points outward from the face");
Unity's manual and `Quaternion.Euler` reference (left-handed, y up, z forward; Euler applies z, then x, then y);
VMC's `/VMC/Ext/Bone/Pos` takes Unity local rotations as x, y, z, w (DESIGN §8). The unit tests check the
quaternions of +90 degree turns about each axis and the equality with the mirrored ARKit matrix.
"""

from __future__ import annotations

import math

Quaternion = tuple[float, float, float, float]  # x, y, z, w (Unity's and VMC's order)


def _multiply(a: Quaternion, b: Quaternion) -> Quaternion:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz)


def _about(axis: int, angle: float) -> Quaternion:
    q = [0.0, 0.0, 0.0, math.cos(angle / 2)]
    q[axis] = math.sin(angle / 2)
    return q[0], q[1], q[2], q[3]


def arkit_quaternion(yaw: float, pitch: float, roll: float) -> Quaternion:
    """R = Ry(yaw) Rx(pitch) Rz(roll) in ARKit's right-handed face frame, radians."""
    return _multiply(_multiply(_about(1, yaw), _about(0, pitch)), _about(2, roll))


def arkit_to_unity(q: Quaternion) -> Quaternion:
    """The same rotation seen in Unity's frame (mirror of x: see the module docstring)."""
    x, y, z, w = q
    return x, -y, -z, w


def unity_rotation(yaw: float, pitch: float, roll: float = 0.0) -> Quaternion:
    """A bone's local rotation for VMC (x, y, z, w), from ARKit yaw, pitch, roll in radians."""
    return arkit_to_unity(arkit_quaternion(float(yaw), float(pitch), float(roll)))


def unity_to_arkit_angles(q: Quaternion) -> tuple[float, float, float]:
    """Yaw, pitch, roll (radians, ARKit's conventions) of a Unity bone rotation: the inverse of `unity_rotation`,
    for receivers that print what arrived (`twinfer receive`)."""
    x, y, z, w = arkit_to_unity(q)  # the mirror is its own inverse
    # R = Ry Rx Rz: pitch from the y-z element, yaw and roll from the rest (no gimbal handling: heads stay < 90 deg)
    sin_pitch = max(-1.0, min(1.0, 2 * (w * x - y * z)))
    pitch = math.asin(sin_pitch)
    yaw = math.atan2(2 * (w * y + x * z), 1 - 2 * (x * x + y * y))
    roll = math.atan2(2 * (w * z + x * y), 1 - 2 * (x * x + z * z))
    return yaw, pitch, roll
