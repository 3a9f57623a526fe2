"""deploy/helm/omniface rendered by Helm's engine (Helm 4 SDK, offline), validated against
the Kubernetes schemas, and compared with the kustomize manifests it mirrors."""

from __future__ import annotations

import pytest
from deploy_support import CHART, DEPLOY, by_kind, check_wiring, container_env, one, server_container, triton_args

pytestmark = pytest.mark.deploy

VALUE_SETS = {
    "defaults": {},
    "gpu": {"target": "gpu", "modelRepository": {"s3": {"url": "s3://omniface-models/repositories/omniface-gpu"}}},
    "volume-poll": {"modelRepository": {"source": "volume", "controlMode": "poll", "pollSeconds": 15}},
    "monitors": {"metrics": {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                             "serviceMonitor": {"enabled": True}}},
    "fixed-replicas": {"autoscaling": {"enabled": False}, "replicaCount": 3, "podDisruptionBudget": {"enabled": False}},
    "prebuilt-image": {"omniface": {"install": {"enabled": False}}, "autoscaling": {"cpuUtilization": 80},
                       "modelRepository": {"s3": {"credentialsSecret": ""}}, "serviceAccount": {
                           "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/omniface"}}},
}


def test_chart_lints() -> None:
    helm = pytest.importorskip("helm_python", reason="needs helm-python-sdk (the 'deploy' extra)")
    report = helm.lint(str(CHART), strict=True)
    assert report["errors"] == [], report
    assert not [m for m in report["messages"] if m["severity"] > 1], report  # only "icon is recommended"


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_chart_renders_validates_and_wires(helm_render, validate, name: str) -> None:
    objects = helm_render(VALUE_SETS[name])
    names = validate(objects)
    assert {"Deployment/omniface", "Service/omniface"} <= set(names)
    check_wiring(objects)


def test_value_sets_change_what_they_say(helm_render) -> None:
    gpu = helm_render(VALUE_SETS["gpu"])
    server = server_container(one(gpu, "Deployment"))
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--allow-gpu-metrics=true" in triton_args(gpu)
    init = one(gpu, "Deployment")["spec"]["template"]["spec"]["initContainers"][0]
    assert "onnxruntime" not in container_env(init, gpu)["OMNIFACE_PACKAGES"]

    volume = helm_render(VALUE_SETS["volume-poll"])
    args = triton_args(volume)
    assert "--model-repository=/models" in args and "--model-control-mode=poll" in args
    assert "--repository-poll-secs=15" in args
    assert "envFrom" not in server_container(one(volume, "Deployment"))  # no S3 credentials needed

    monitors = helm_render(VALUE_SETS["monitors"])
    assert one(monitors, "PodMonitor")["metadata"]["labels"]["release"] == "prometheus"
    assert by_kind(monitors, "ServiceMonitor")

    fixed = helm_render(VALUE_SETS["fixed-replicas"])
    assert one(fixed, "Deployment")["spec"]["replicas"] == 3
    assert not by_kind(fixed, "HorizontalPodAutoscaler") and not by_kind(fixed, "PodDisruptionBudget")
    assert "replicas" not in one(helm_render({}), "Deployment")["spec"]  # the HPA owns the count

    prebuilt = helm_render(VALUE_SETS["prebuilt-image"])
    pod = one(prebuilt, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert "OMNIFACE_SITE_PACKAGES" not in {e["name"] for e in server_container(one(prebuilt, "Deployment"))["env"]}
    metrics = one(prebuilt, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods", "Resource"]


@pytest.mark.parametrize("bad", [
    {"targt": "cpu"},
    {"target": "tpu"},
    {"modelRepository": {"source": "s3", "s3": {"url": "/not/object/storage"}}},
    {"autoscaling": {"minReplicas": 0}},
    {"metrics": {"podMonitor": {"interval": "fifteen seconds"}}},
])
def test_values_schema_rejects_mistakes(bad: dict) -> None:
    helm = pytest.importorskip("helm_python", reason="needs helm-python-sdk (the 'deploy' extra)")
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema(bad)


def comparable(objects: list[dict]) -> dict:
    """What must not differ between the chart and the kustomize manifests."""
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    server = server_container(deployment)
    init = pod["initContainers"][0]
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {
        "image": server["image"],
        "init_image": init["image"],
        "init_command": init["command"],
        "packages": container_env(init, objects)["OMNIFACE_PACKAGES"],
        "args": triton_args(objects),
        "ports": server["ports"],
        "probes": {p: server[p] for p in ("startupProbe", "livenessProbe", "readinessProbe")},
        "preStop": server["lifecycle"],
        "resources": server["resources"],
        "mounts": sorted(m["mountPath"] for m in server["volumeMounts"]),
        "shm": volumes["dshm"]["emptyDir"]["medium"],
        "grace": pod["terminationGracePeriodSeconds"],
        "strategy": deployment["spec"]["strategy"],
        "replicas": deployment["spec"].get("replicas"),  # none: the HPA owns the count
        "tolerations": pod.get("tolerations", []),
        "hpa": (hpa["minReplicas"], hpa["maxReplicas"], hpa["metrics"]),
        "service_ports": sorted((p["name"], p["port"]) for p in one(objects, "Service")["spec"]["ports"]),
        "monitor": one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"],
    }


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_chart_matches_the_kustomize_overlay(helm_render, kustomize, target: str) -> None:
    values = {"target": target, "metrics": {"podMonitor": {"enabled": True}},
              "modelRepository": {"s3": {"url": f"s3://omniface-models/repositories/omniface-{target}"}}}
    chart = comparable(helm_render(values))
    manifests = comparable(kustomize(DEPLOY / "kustomize" / "overlays" / target))
    for key in chart:
        assert chart[key] == manifests[key], key
