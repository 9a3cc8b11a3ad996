"""Settings and how they are layered."""

from __future__ import annotations

from twinfer.config.loading import load_settings
from twinfer.config.settings import Settings, settings_reference_markdown

__all__ = ["Settings", "load_settings", "settings_reference_markdown"]
