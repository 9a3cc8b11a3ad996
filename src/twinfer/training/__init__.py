"""Training, kept apart from serving: `twinfer train` runs here, in its own process, and publishes a new version
directory that a running server picks up by hot reload. Needs the `train` extra (PyTorch); the server never
imports this package."""
