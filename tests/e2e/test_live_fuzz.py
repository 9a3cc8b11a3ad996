"""The live mutation fuzzer's short run (issue #14): `make fuzz` runs it with a million inputs."""

from __future__ import annotations

import pytest

from tests.fuzz import live


@pytest.mark.e2e
def test_a_short_live_fuzz_run_passes(tmp_path, capsys):
    report = live.run(inputs=16_000, rate=4000, seed=7, workdir=tmp_path, baseline_s=2.0)
    assert sum(report.inputs.values()) == 16_000 and all(report.inputs.get(s, 0) > 500 for s in live.SURFACES)
    assert report.passed, (report.failures, report)
