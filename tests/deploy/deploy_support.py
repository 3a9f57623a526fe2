"""Rendering and validating the Kubernetes deploy files, offline (used by conftest.py
and the tests of this folder).

* the ``kustomize`` fixture: ``kubectl kustomize`` (kubectl embeds kustomize; tests that
  need it skip, saying so, where no kubectl is installed).
* the ``helm_render`` fixture: the chart rendered by Helm's own engine (the Helm 4 SDK
  through ``helm-python-sdk``: no helm binary, no cluster).
* ``validate_object``: core kinds against the Kubernetes OpenAPI schemas that
  ``kubernetes-validate`` bundles (strict: unknown fields fail), the custom resources
  (PodMonitor, ServiceMonitor, InferenceService) against the schemas below, which list
  the fields of those CRDs that a manifest may use and embed the Kubernetes types
  (PodSpec, Container, LabelSelector) from the same bundled schemas.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
CHART = DEPLOY / "helm" / "omniface"

KUBERNETES_VERSIONS = ("1.27.0", "1.33.0")
"""The oldest Kubernetes the chart claims (kubeVersion >= 1.25; autoscaling/v2 and
policy/v1 are GA there) that the validator's schemas cover well, and a current one."""

DEFS = "/api/_definitions.json#/$defs/"


# ----------------------------------------------------------------------------------
# Custom resource schemas (the fields of the CRDs' v1 / v1beta1 APIs that apply here)
# ----------------------------------------------------------------------------------

DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string"}}, "separator": {"type": "string"},
    "targetLabel": {"type": "string"}, "regex": {"type": "string"}, "modulus": {"type": "integer"},
    "replacement": {"type": "string"},
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
                        "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                        "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
}}
SCRAPE_ENDPOINT = {
    "path": {"type": "string"}, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "params": {"type": "object"}, "interval": DURATION, "scrapeTimeout": DURATION,
    "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
    "relabelings": {"type": "array", "items": RELABEL}, "metricRelabelings": {"type": "array", "items": RELABEL},
    "tlsConfig": {"type": "object"}, "bearerTokenSecret": {"type": "object"}, "basicAuth": {"type": "object"},
    "authorization": {"type": "object"}, "oauth2": {"type": "object"}, "followRedirects": {"type": "boolean"},
    "enableHttp2": {"type": "boolean"}, "filterRunning": {"type": "boolean"}, "proxyUrl": {"type": "string"},
}
NAMESPACE_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}}
MONITOR_COMMON = {
    "jobLabel": {"type": "string"}, "podTargetLabels": {"type": "array", "items": {"type": "string"}},
    "sampleLimit": {"type": "integer", "minimum": 0}, "targetLimit": {"type": "integer", "minimum": 0},
    "selector": {"$ref": DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},
    "namespaceSelector": NAMESPACE_SELECTOR,
}


def _resource(api_version: str, kind: str, spec: dict) -> dict:
    return {
        "$id": f"https://kubernetes.io/api/omniface-{kind.lower()}.json",
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version}, "kind": {"const": kind},
            "metadata": {"$ref": DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}, "spec": spec,
        },
    }


def _pod_monitor() -> dict:
    endpoint = {"type": "object", "additionalProperties": False, "properties": {
        **SCRAPE_ENDPOINT, "port": {"type": "string"}, "portNumber": {"type": "integer"},
        "targetPort": {"type": ["integer", "string"]}}}
    return _resource("monitoring.coreos.com/v1", "PodMonitor", {
        "type": "object", "additionalProperties": False, "required": ["selector"],
        "properties": {**MONITOR_COMMON, "podMetricsEndpoints": {"type": "array", "items": endpoint}}})


def _service_monitor() -> dict:
    endpoint = {"type": "object", "additionalProperties": False, "properties": {
        **SCRAPE_ENDPOINT, "port": {"type": "string"}, "targetPort": {"type": ["integer", "string"]},
        "bearerTokenFile": {"type": "string"}}}
    return _resource("monitoring.coreos.com/v1", "ServiceMonitor", {
        "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
        "properties": {**MONITOR_COMMON, "targetLabels": {"type": "array", "items": {"type": "string"}},
                       "endpoints": {"type": "array", "minItems": 1, "items": endpoint}}})


def _rebase(schema: Any) -> Any:
    """A copy of a fragment of _definitions.json whose document-local $refs point at
    that document, so it can live inside another schema."""
    if isinstance(schema, dict):
        return {k: (DEFS + v[len("#/$defs/"):] if k == "$ref" and v.startswith("#/$defs/") else _rebase(v))
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


def _inference_service(definitions: dict) -> dict:
    """KServe v1beta1: the predictor is a PodSpec (inline, containers optional) plus the
    component extension fields; ``model`` is a Container (name optional) plus the
    predictor extension fields."""
    pod = _rebase(definitions["io.k8s.api.core.v1.PodSpec"]["properties"])
    container = _rebase(definitions["io.k8s.api.core.v1.Container"]["properties"])
    model = {"type": "object", "additionalProperties": False, "required": ["modelFormat"], "properties": {
        **container,
        "modelFormat": {"type": "object", "additionalProperties": False, "required": ["name"],
                        "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
        "runtime": {"type": "string"}, "storageUri": {"type": "string", "pattern": r"^[a-z0-9+.-]+://"},
        "runtimeVersion": {"type": "string"}, "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
        "storage": {"type": "object"},
    }}
    component = {
        "minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 0},
        "scaleTarget": {"type": "integer", "minimum": 1},
        "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
        "containerConcurrency": {"type": "integer", "minimum": 0}, "timeout": {"type": "integer", "minimum": 0},
        "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
        "logger": {"type": "object"}, "batcher": {"type": "object"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "deploymentStrategy": {"$ref": DEFS + "io.k8s.api.apps.v1.DeploymentStrategy"},
        "autoScaling": {"type": "object"},
    }
    frameworks = {name: {"type": "object"} for name in (
        "sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm", "paddle",
        "workerSpec")}
    predictor = {"type": "object", "additionalProperties": False,
                 "properties": {**pod, **component, **frameworks, "model": model}}
    return _resource("serving.kserve.io/v1beta1", "InferenceService", {
        "type": "object", "additionalProperties": False, "required": ["predictor"],
        "properties": {"predictor": predictor, "transformer": {"type": "object"}, "explainer": {"type": "object"}}})


@lru_cache(maxsize=None)
def _definitions(version: str) -> dict:
    import kubernetes_validate

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    return json.loads((folder / "_definitions.json").read_text())


@lru_cache(maxsize=None)
def _crd_validators(version: str) -> dict[str, Any]:
    import jsonschema
    from referencing import Registry, Resource

    definitions = _definitions(version)
    registry = Resource.from_contents(definitions) @ Registry()
    schemas = {"PodMonitor": _pod_monitor(), "ServiceMonitor": _service_monitor(),
               "InferenceService": _inference_service(definitions["$defs"])}
    out = {}
    for kind, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema, registry=registry)
    return out


CUSTOM_KINDS = {"PodMonitor", "ServiceMonitor", "InferenceService"}


def validate_object(obj: dict, version: str) -> None:
    """Raise (with the path of the offending field) unless ``obj`` is valid for
    Kubernetes ``version``."""
    import jsonschema
    import kubernetes_validate

    if obj.get("kind") in CUSTOM_KINDS:
        validator = _crd_validators(version)[obj["kind"]]
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            raise jsonschema.ValidationError(
                f"{obj['kind']}/{obj['metadata'].get('name')}: "
                + "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
            )
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{obj['kind']}/{obj['metadata'].get('name')} at {path}: {exc.message}") from None


# ----------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------


def load_documents(text: str) -> list[dict]:
    """The YAML documents of a rendering; fails on invalid YAML, skips empty ones."""
    import yaml

    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def by_kind(objects: Iterable[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# ----------------------------------------------------------------------------------
# Wiring: what a schema cannot see (selectors, names and ports that must agree)
# ----------------------------------------------------------------------------------

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
SERVER_CONTAINER = "tritonserver"


def _subset(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def server_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == SERVER_CONTAINER)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args."""
    return ENV_REFERENCE.sub(lambda m: env[m.group(1)], value)


def container_env(container: dict, objects: list[dict]) -> dict[str, str]:
    """The variables a container sees that $(VAR) can use: env values and the data of
    ConfigMaps in envFrom (Secrets are left out: they must not reach the command line)."""
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def triton_args(objects: list[dict]) -> list[str]:
    """tritonserver's command line in the rendered Deployment, $(VAR)s expanded."""
    container = server_container(one(objects, "Deployment"))
    env = container_env(container, objects)
    return [expand(a, env) for a in container["command"] + container["args"]]


def check_wiring(objects: list[dict]) -> None:
    """Assert that the objects of one rendering refer to each other correctly."""
    deployment = one(objects, "Deployment")
    template = deployment["spec"]["template"]
    pod_labels = template["metadata"]["labels"]
    pod = template["spec"]
    assert _subset(deployment["spec"]["selector"]["matchLabels"], pod_labels), "Deployment selector misses its pods"

    configmaps = {c["metadata"]["name"] for c in by_kind(objects, "ConfigMap")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod.get("initContainers", []) + pod["containers"]:
        ports = {p["name"] for p in container.get("ports", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']} mounts an undefined volume {mount['name']}"
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                assert ref["name"] in configmaps or ref.get("optional"), f"ConfigMap {ref['name']} is not rendered"
            if "secretRef" in source:
                assert source["secretRef"]["name"], "an envFrom Secret without a name"
        env = container_env(container, objects)
        for value in container.get("command", []) + container.get("args", []):
            for name in ENV_REFERENCE.findall(value):
                assert name in env, f"{container['name']}: $({name}) is not defined by env or a ConfigMap"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in ports, f"{probe} names an undefined port"
    for claim in (v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v):
        assert claim, "a volume without a claim name"

    server = server_container(deployment)
    assert server["image"] == TRITON_IMAGE
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    shm = next(m for m in server["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    args = triton_args(objects)
    assert args[0] == "tritonserver" and any(a.startswith("--model-repository=") for a in args)
    for flag in ("--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"):
        assert flag in args
    # readiness counts the models, except where Triton reloads them in place (poll)
    assert ("--strict-readiness=false" if "--model-control-mode=poll" in args else "--strict-readiness=true") in args
    assert pod["terminationGracePeriodSeconds"] > int(next(
        a.split("=")[1] for a in args if a.startswith("--exit-timeout-secs="))), "no time to drain in-flight requests"

    services = by_kind(objects, "Service")
    for service in services:
        assert _subset(service["spec"]["selector"], pod_labels), f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service port {port['name']} targets an undefined port"
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        assert _subset(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PodDisruptionBudget selects no pod"
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for monitor in by_kind(objects, "PodMonitor"):
        assert _subset(monitor["spec"]["selector"]["matchLabels"], pod_labels), "PodMonitor selects no pod"
        assert all(e["port"] in ports for e in monitor["spec"]["podMetricsEndpoints"])
    for monitor in by_kind(objects, "ServiceMonitor"):
        matched = [s for s in services if _subset(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert matched, "ServiceMonitor selects no Service"
        assert all(e["port"] in {p["name"] for p in matched[0]["spec"]["ports"]} for e in monitor["spec"]["endpoints"])
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects of one kind share a name"


def ngc_release(triton_version: str) -> str:
    """The NGC container release (YY.MM) of a Triton 2.x release: one a month, 2.25.0
    being 22.08 (GitHub: "Release 2.25.0 corresponding to NGC container 22.08") and
    2.43.0 being 24.02 (NGC release notes)."""
    minor = int(triton_version.split(".")[1])
    months = 22 * 12 + 8 - 1 + (minor - 25)
    return f"{months // 12:02d}.{months % 12 + 1:02d}"
