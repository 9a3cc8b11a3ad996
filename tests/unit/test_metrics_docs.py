"""Every metric is documented in the README, and the Grafana dashboard only queries metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twinfer.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]


def test_every_metric_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name, _ in METRICS:
        assert f"| `{name}` |" in readme, f"{name} is not documented in the README"


def test_dashboard_queries_only_known_metrics():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "twinfer-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(twinfer_[a-z_]+|process_[a-z_]+)\b", e)}
    known = {name for name, _ in METRICS} | {"process_resident_memory_bytes"}
    assert used and used <= known, used - known
