"""#18 operations: every Helm manifest the charts render (for every value set the chart tests use) is valid against
Kubernetes' own schemas (kubernetes-validate, strict: an unknown field is an error), and passes the checkov
security policies except the exceptions recorded, each with its reason, in deploy/security/checkov.yaml. The
Dockerfile goes through checkov too. checkov is heavy (hundreds of MB of cloud SDKs), so it is not in the test
extra: its tests run when it is installed (`make scan` puts it in build/checkov-venv), and skip otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HELM = shutil.which("helm", path=str(Path(sys.prefix) / "bin")) or shutil.which("helm")
CHECKOV = (os.environ.get("CHECKOV") or shutil.which("checkov", path=str(ROOT / "build" / "checkov-venv" / "bin"))
           or shutil.which("checkov"))
KUBERNETES_VERSION = "1.31.0"  # K3s of the seed's clusters; the schemas ship with kubernetes-validate
ACCEPTED = yaml.safe_load((DEPLOY / "security" / "checkov.yaml").read_text())

# Every value set tests/unit/test_deploy.py renders, by chart.
VALUE_SETS = {
    "twinfer-inference": [
        (),
        ("autoscaling.enabled=false", "replicaCount=5", "ports.tcp=9100", "ports.udp=9200", "workers=3",
         "udp.hostPort=true", "udp.advertise=hostIP", "auth.existingSecret=s"),
        ("udp.advertise=fixed", "udp.advertisedHost=pod-0.twinfer.example"),
        ("configServer.url=http://cfg:20100", "configServer.serviceGroup=prod"),
        ("modelRepository.existingClaim=twinfer-models",),
        ("gpu.enabled=true",),
        ("gpu.enabled=true", "gpu.count=2", "gpu.runtimeClassName=", "nodeSelector.zone=a",
         "gpu.nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-L4"),
    ],
    "twinfer-training": [(), ("schedule=0 3 * * *", "model=tiny"), ("gpu.enabled=true", "gpu.count=8"),
                         ("gpu.enabled=true", "schedule=0 3 * * *")],
}
RENDERS = [(chart, sets) for chart, value_sets in VALUE_SETS.items() for sets in value_sets]

needs_helm = pytest.mark.skipif(HELM is None, reason="run `make test` (it installs helm via tools/get_helm.py)")
needs_checkov = pytest.mark.skipif(CHECKOV is None, reason="checkov not installed (`make scan` installs it)")


def render(chart: str, sets: tuple[str, ...]) -> str:
    args = [HELM, "template", "rel", str(DEPLOY / "helm" / chart)]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


@needs_helm
@pytest.mark.parametrize(("chart", "sets"), RENDERS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(RENDERS)])
def test_rendered_manifests_are_valid_kubernetes_objects(chart, sets):
    import kubernetes_validate

    documents = [d for d in yaml.safe_load_all(render(chart, sets)) if d]
    assert documents
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{document['kind']} {document['metadata']['name']}: {exc.message} at {list(exc.path)}")


def checkov(*args: str) -> list[dict]:
    """checkov's failed checks as (check id, resource); its JSON is one report or a list of them."""
    run = subprocess.run([CHECKOV, "--quiet", "--compact", "--output", "json", *args], capture_output=True,
                         text=True, timeout=600)
    reports = json.loads(run.stdout) if run.stdout.strip().startswith(("{", "[")) else []
    reports = reports if isinstance(reports, list) else [reports]
    return [check for r in reports for check in r.get("results", {}).get("failed_checks", [])]


def unaccepted(failed: list[dict], section: str) -> list[str]:
    accepted = ACCEPTED[section]
    return sorted({f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in failed
                   if c["check_id"] not in accepted})


@needs_helm
@needs_checkov
def test_rendered_manifests_pass_checkov_but_for_the_recorded_exceptions(tmp_path):
    for i, (chart, sets) in enumerate(RENDERS):
        (tmp_path / f"{i}-{chart}.yaml").write_text(render(chart, sets))
    failed = checkov("--framework", "kubernetes", "--directory", str(tmp_path))
    assert not unaccepted(failed, "kubernetes"), "\n".join(unaccepted(failed, "kubernetes"))


@needs_checkov
def test_the_dockerfile_passes_checkov_but_for_the_recorded_exceptions():
    failed = checkov("--framework", "dockerfile", "--file", str(DEPLOY / "docker" / "Dockerfile"))
    assert not unaccepted(failed, "dockerfile"), "\n".join(unaccepted(failed, "dockerfile"))


def test_every_accepted_exception_has_a_reason():
    for section in ("kubernetes", "dockerfile"):
        for check, reason in ACCEPTED[section].items():
            assert check.startswith("CKV") and isinstance(reason, str) and len(reason) > 20, (check, reason)
