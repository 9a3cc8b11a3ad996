"""Hypothesis profiles: `make test` runs each property briefly; `make fuzz` sets HYPOTHESIS_PROFILE=fuzz."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                        HealthCheck.function_scoped_fixture]}
settings.register_profile("default", max_examples=120, **_common)
settings.register_profile("fuzz", max_examples=20_000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
