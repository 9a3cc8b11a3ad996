"""Real-time streams: frames in over UDP, one inference per frame, results out over UDP to game engines."""
