"""Shared fixtures. ``triton_server`` starts the real tritonserver (from nvidia-pytriton)
on free loopback ports once per test session and stops it, stubs included, at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_repository() -> Path:
    return Path(os.environ.get("OMNIFACE_MODEL_REPOSITORY", REPO_ROOT / "model_repository"))


@pytest.fixture(scope="session")
def triton_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator["EmbeddedServer"]:
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.server import EmbeddedServer, free_port

    log_path = tmp_path_factory.mktemp("tritonserver") / "tritonserver.log"
    server = EmbeddedServer(
        model_repository=model_repository,
        grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
        log_path=log_path,
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """NASA's astronaut portrait (public domain), RGB uint8, from scikit-image."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut())


def render_variant_repository(out_dir: Path, source_repo: Path, **postprocess_parameters: str) -> Path:
    """A copy of the repository whose postprocess settings differ (same graphs)."""
    from omniface import repository

    return repository.render_variant(out_dir, source_repo, postprocess=postprocess_parameters)


@pytest.fixture(scope="session")
def permissive_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator["EmbeddedServer"]:
    """A second server whose postprocess keeps every location (score threshold 0) and
    caps at 8 faces: exercises the face cap and many-face frames whatever the weights."""
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.server import EmbeddedServer, free_port

    work = tmp_path_factory.mktemp("permissive")
    repo = render_variant_repository(work / "repo", model_repository, score_threshold="0.0", max_faces="8")
    server = EmbeddedServer(
        model_repository=repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
        log_path=work / "tritonserver.log",
    )
    with server:
        yield server


def same_frame_result(a, b, tolerance: float = 1e-3) -> None:
    """Two ``FrameResult``s agree: same size and faces, boxes within 0.1 px, scores and
    probabilities within ``tolerance``, age within 0.05 years, same decisions. Not
    bit-equality: dynamic batching may run a frame's crops in another batch, and ONNX
    Runtime's kernels round differently per batch size."""
    assert (a.width, a.height, len(a.faces)) == (b.width, b.height, len(b.faces))
    for fa, fb in zip(a.faces, b.faces):
        assert np.allclose(fa.box.as_tuple(), fb.box.as_tuple(), atol=tolerance * 100)
        assert fa.score == pytest.approx(fb.score, abs=tolerance)
        assert fa.age == pytest.approx(fb.age, abs=0.05)
        assert fa.gender == fb.gender and fa.expression == fb.expression and fa.smile == fb.smile


@pytest.fixture(scope="session")
def assert_same_result():
    """``same_frame_result`` as a fixture, for test modules (conftest is not importable)."""
    return same_frame_result
