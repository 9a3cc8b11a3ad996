"""Frame sources for the capture side (`twinfer stream`) and for training data."""
