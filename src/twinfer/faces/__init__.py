"""Real faces: camera frames of real people -> ARKit blendshapes, head pose and gaze (DESIGN §4, §8).

The geometry (landmarks -> blendshapes, head pose, gaze, calibration) is pure numpy, callable without a server;
the models it needs (face detector, landmarks, iris) are ordinary repository models reached through the facade.

solver.FaceSolver (one per stream) chains: head_pose (similarity fit to the canonical face) -> gaze (iris on an
eyeball sphere) -> blendshapes (head-frame measures through ranges) -> calibration -> face_lost (easing).
mesh holds the face-mesh indices; reading the FaceReading every output encodes.
"""
