"""The deploy files pin the NGC image of the Triton release the SDK and the embedded
server speak, and use only flags, endpoints and metrics that release has: the last part
runs the embedded tritonserver 2.51 with the Deployment's own command-line flags."""

from __future__ import annotations

import math
import re
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml
from deploy_support import CHART, DEPLOY, TRITON_IMAGE, ngc_release

pytestmark = pytest.mark.deploy

BASE = DEPLOY / "kustomize" / "base"


def test_the_pinned_ngc_tag_is_the_release_of_the_sdk_and_the_embedded_server() -> None:
    from omniface.server import TRITON_VERSION

    client = metadata.version("tritonclient")
    assert client == TRITON_VERSION == "2.51.0"
    tag = f"{ngc_release(client)}-py3"
    assert TRITON_IMAGE == f"nvcr.io/nvidia/tritonserver:{tag}" == "nvcr.io/nvidia/tritonserver:24.10-py3"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (values["image"]["repository"], values["image"]["tag"]) == ("nvcr.io/nvidia/tritonserver", tag)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["omniface.dev/triton-version"] == client
    assert chart["annotations"]["omniface.dev/ngc-release"] == ngc_release(client)
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["containers"] + pod["initContainers"]} == {TRITON_IMAGE}
    isvc = yaml.safe_load((DEPLOY / "kserve" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["model"]["runtimeVersion"] == tag
    assert {c["image"] for c in isvc["spec"]["predictor"]["initContainers"]} == {TRITON_IMAGE}
    assert f"ARG TRITON_IMAGE={TRITON_IMAGE}" in (DEPLOY / "docker" / "Dockerfile").read_text()


def test_the_packages_installed_in_the_pods_are_this_release() -> None:
    import omniface

    pin = f"omniface=={omniface.__version__}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["omniface"]["install"]["packages"] == [pin]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == omniface.__version__
    for path in [BASE / "kustomization.yaml", *DEPLOY.glob("kustomize/overlays/*/kustomization.yaml")]:
        for generator in yaml.safe_load(path.read_text()).get("configMapGenerator", []):
            for literal in generator.get("literals", []):
                if literal.startswith("OMNIFACE_PACKAGES="):
                    assert literal.split("=", 1)[1].split()[0] == pin, path
    assert pin in (DEPLOY / "kserve" / "inferenceservice.yaml").read_text()


def manifest_flags() -> list[str]:
    """tritonserver's flags in the base Deployment and the KServe InferenceService, for the
    embedded server: repository and ports are the test's, $(VAR)s take the cpu values."""
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    server = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "tritonserver")
    isvc = yaml.safe_load((DEPLOY / "kserve" / "inferenceservice.yaml").read_text())
    flags = []
    for arg in server["args"] + isvc["spec"]["predictor"]["model"]["args"]:
        name = arg.split("=", 1)[0]
        if name in ("--model-repository", "--http-port", "--grpc-port", "--metrics-port"):
            continue  # EmbeddedServer sets these to loopback ports and the test's repository
        flags.append(arg.replace("$(TRITON_ALLOW_GPU_METRICS)", "false"))
    assert any(f.startswith("--exit-timeout-secs=") for f in flags)
    return flags


def scrape(url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {}
    for name, model, value in re.findall(r'^(nv_inference_\w+)\{model="(\w+)",version="1"\} ([0-9.e+]+)$', text, re.M):
        values[(name, model)] = float(value)
    return values


def queue_us_per_frame(before: dict, after: dict) -> float:
    """The Prometheus adapter's omniface_queue_us_per_frame over one interval."""
    queued = sum(after[k] - before.get(k, 0.0) for k in after
                 if k[0] == "nv_inference_queue_duration_us" and k[1] != "face_analysis")
    frames = after[("nv_inference_request_success", "face_analysis")] - before.get(
        ("nv_inference_request_success", "face_analysis"), 0.0)
    return queued / max(frames, 1e-3)


@pytest.mark.integration
def test_tritonserver_2_51_runs_with_the_manifest_flags(model_repository: Path, tmp_path: Path) -> None:
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.client import Client
    from omniface.server import EmbeddedServer, free_port

    server = EmbeddedServer(model_repository=model_repository, grpc_port=free_port(), http_port=free_port(),
                            metrics_port=free_port(), log_path=tmp_path / "tritonserver.log",
                            extra_args=manifest_flags())
    with server:
        # the probes' endpoints
        for path in ("/v2/health/live", "/v2/health/ready"):
            with urllib.request.urlopen(server.http_url + path, timeout=5) as response:
                assert response.status == 200, path
        before = scrape(server.metrics_url)
        frames = [np.zeros((120, 160, 3), np.uint8)] * 12
        with Client(server.grpc_url, timeout=60.0) as client:
            assert len(client.analyze_batch(frames, concurrency=4)) == len(frames)
        time.sleep(0.2)
        after = scrape(server.metrics_url)
    # the series the adapter rule reads exist, per model, and give a finite queue time
    for model in ("face_analysis", "preprocess", "detector", "postprocess", "attributes"):
        assert ("nv_inference_queue_duration_us", model) in after
        assert ("nv_inference_request_success", model) in after
    assert after[("nv_inference_request_success", "face_analysis")] - before.get(
        ("nv_inference_request_success", "face_analysis"), 0) == len(frames)
    value = queue_us_per_frame(before, after)
    assert math.isfinite(value) and value > 0
