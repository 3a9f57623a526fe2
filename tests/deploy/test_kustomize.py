"""deploy/kustomize and deploy/kserve: rendered with ``kubectl kustomize`` and validated
against the Kubernetes schemas offline; the raw files are checked even without kubectl."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from deploy_support import DEPLOY, by_kind, check_wiring, container_env, one, server_container, triton_args

pytestmark = pytest.mark.deploy

KUSTOMIZE = DEPLOY / "kustomize"
KSERVE = DEPLOY / "kserve"


@pytest.mark.parametrize("folder", ["base", "overlays/cpu", "overlays/gpu"])
def test_kustomizations_render_validate_and_wire(kustomize, validate, folder: str) -> None:
    objects = kustomize(KUSTOMIZE / folder)
    names = validate(objects)
    assert {"ServiceAccount/omniface", "Service/omniface", "Deployment/omniface",
            "HorizontalPodAutoscaler/omniface", "PodDisruptionBudget/omniface"} <= set(names)
    check_wiring(objects)
    if folder.startswith("overlays"):
        assert {o["metadata"].get("namespace") for o in objects} == {"omniface"}
        assert "PodMonitor/omniface" in names


def test_cpu_and_gpu_overlays_differ_where_they_should(kustomize) -> None:
    cpu, gpu = kustomize(KUSTOMIZE / "overlays/cpu"), kustomize(KUSTOMIZE / "overlays/gpu")
    cpu_server, gpu_server = server_container(one(cpu, "Deployment")), server_container(one(gpu, "Deployment"))
    assert "nvidia.com/gpu" not in cpu_server["resources"].get("limits", {})
    assert gpu_server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert one(gpu, "Deployment")["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "--allow-gpu-metrics=false" in triton_args(cpu) and "--allow-gpu-metrics=true" in triton_args(gpu)
    assert "--model-repository=s3://omniface-models/repositories/omniface-cpu" in triton_args(cpu)
    assert "--model-repository=s3://omniface-models/repositories/omniface-gpu" in triton_args(gpu)
    # the init container installs ONNX Runtime only where the graphs run on it
    for objects, onnx in ((cpu, True), (gpu, False)):
        init = one(objects, "Deployment")["spec"]["template"]["spec"]["initContainers"][0]
        packages = container_env(init, objects)["OMNIFACE_PACKAGES"]
        assert packages.startswith("omniface==") and ("onnxruntime" in packages) is onnx


def test_components_compose(kustomize, validate, tmp_path: Path) -> None:
    """The volume-backed repository and the ServiceMonitor components, on the cpu overlay."""
    here = os.path.relpath(KUSTOMIZE, tmp_path)  # kustomize accepts relative paths only
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [f"{here}/overlays/cpu"],
        "components": [f"{here}/components/model-volume", f"{here}/components/servicemonitor"],
    }))
    objects = kustomize(tmp_path)
    names = validate(objects)
    assert {"PersistentVolumeClaim/omniface-model-repository", "ServiceMonitor/omniface", "PodMonitor/omniface"} <= set(names)
    check_wiring(objects)
    assert "--model-repository=/models" in triton_args(objects)
    mounts = {m["mountPath"]: m for m in server_container(one(objects, "Deployment"))["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True


def test_kserve_inference_service(kustomize, validate) -> None:
    objects = kustomize(KSERVE)
    assert validate(objects) == ["ServiceAccount/omniface", "InferenceService/omniface"]
    isvc = one(objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "triton" and model["runtime"] == "kserve-tritonserver"
    assert model["storageUri"].startswith("s3://") and model["runtimeVersion"] == "24.10-py3"
    volumes = {v["name"]: v for v in predictor["volumes"]}
    shm = next(m for m in model["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    assert {e["name"] for e in model["env"]} >= {"OMNIFACE_SITE_PACKAGES"}
    assert predictor["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_validation_catches_mistakes(kustomize, validate) -> None:
    """The validators are not blind: a misspelt field, a wrong type, a bad CRD field."""
    objects = kustomize(KUSTOMIZE / "overlays/cpu")
    deployment = one(objects, "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    server_container(broken)["readinessProbes"] = server_container(broken).pop("readinessProbe")
    with pytest.raises(AssertionError, match="readinessProbes"):
        validate([broken])
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(AssertionError):
        validate([broken])
    monitor = yaml.safe_load(yaml.safe_dump(one(objects, "PodMonitor")))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(Exception, match="interval"):
        validate([monitor])
    isvc = yaml.safe_load(yaml.safe_dump(one(kustomize(KSERVE), "InferenceService")))
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(Exception, match="storageURI"):
        validate([isvc])
    unwired = yaml.safe_load(yaml.safe_dump(objects))
    one(unwired, "Service")["spec"]["selector"]["app.kubernetes.io/name"] = "someone-else"
    with pytest.raises(AssertionError, match="selects no pod"):
        check_wiring(unwired)


# ----------------------------------------------------------------------------------
# Without kubectl: every YAML file parses and every complete object validates
# ----------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    """deploy/'s YAML, less the Helm templates (Go templates, rendered by the Helm tests)."""
    return sorted(p for p in DEPLOY.rglob("*.yaml") if "templates" not in p.parts)


def patch_files() -> set[Path]:
    """Files that kustomizations use as patches: partial objects, validated once merged."""
    patches = set()
    for path in DEPLOY.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(path.read_text()).get("patches", []):
            patches.add((path.parent / patch["path"]).resolve())
    return patches


def test_every_yaml_file_parses_and_complete_objects_validate(validate) -> None:
    patches = patch_files()
    validated = []
    for path in yaml_files():
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert documents, f"{path} is empty"
        if path.name in ("kustomization.yaml", "values.yaml", "Chart.yaml") or path.resolve() in patches:
            continue
        for doc in documents:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: not a Kubernetes object"
        validated += validate(documents)
    assert len(validated) >= 11, validated
    assert {"Deployment/omniface", "InferenceService/omniface", "Secret/omniface-s3", "PodMonitor/omniface",
            "ServiceMonitor/omniface", "PersistentVolumeClaim/omniface-model-repository"} <= set(validated)


def test_the_adapter_rule_serves_the_metric_the_autoscalers_use() -> None:
    values = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = yaml.safe_load((KUSTOMIZE / "base" / "hpa.yaml").read_text())
    chart_values = yaml.safe_load((DEPLOY / "helm" / "omniface" / "values.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rule["name"]["as"] == metric == chart_values["autoscaling"]["queueMetric"]["name"]
    query = rule["metricsQuery"]
    assert "nv_inference_queue_duration_us" in query and "nv_inference_request_success" in query
    assert "<<.LabelMatchers>>" in query and "<<.GroupBy>>" in query
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert by_kind([hpa], "HorizontalPodAutoscaler")
