"""Models, their configuration, the dynamic batcher and the inference facade: the one door into AI."""
