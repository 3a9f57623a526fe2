"""Fixtures of the deploy tests: ``validate``, ``kustomize``, ``helm_render`` (see
deploy_support.py for what each checks and with which tool)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from deploy_support import CHART, KUBERNETES_VERSIONS, kubectl, load_documents, validate_object


@pytest.fixture(scope="session")
def validate() -> Callable[[Iterable[dict]], list[str]]:
    """Validate objects against every version of KUBERNETES_VERSIONS; returns their
    ``Kind/name`` list."""
    pytest.importorskip("kubernetes_validate", reason="schema validation needs kubernetes-validate (the 'deploy' extra)")

    def run(objects: Iterable[dict]) -> list[str]:
        names = []
        for obj in objects:
            for version in KUBERNETES_VERSIONS:
                validate_object(obj, version)
            names.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return names

    return run



@pytest.fixture(scope="session")
def kustomize() -> Callable[[Path], list[dict]]:
    binary = kubectl()
    if binary is None:
        pytest.skip("kubectl (which embeds kustomize) is not installed; the raw manifest files are still validated")

    def run(path: Path) -> list[dict]:
        proc = subprocess.run([binary, "kustomize", str(path)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "KUBECONFIG": os.devnull})
        assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
        return load_documents(proc.stdout)

    return run


@pytest.fixture(scope="session")
def helm_render() -> Callable[..., list[dict]]:
    helm = pytest.importorskip("helm_python", reason="Helm rendering needs helm-python-sdk (the 'deploy' extra)")

    def run(values: dict | None = None, name: str = "omniface", namespace: str = "omniface") -> list[dict]:
        with helm.Chart.load(str(CHART)) as chart:
            chart.validate_schema(values or {})
            rendered = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
        documents = []
        for path, text in sorted(rendered.items()):
            if path.endswith(".yaml"):
                documents.extend(load_documents(text))
        return documents

    return run
