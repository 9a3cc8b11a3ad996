"""Real faces: camera frames of real people -> ARKit blendshapes, head pose and gaze (DESIGN §4, §8).

The geometry (landmarks -> blendshapes, head pose, gaze, calibration) is pure numpy, callable without a server;
the models it needs (face detector, landmarks, iris) are ordinary repository models reached through the facade.
"""
