"""The model repository served from object storage: tritonserver reads ``s3://`` itself.

A local S3-compatible server (moto, on loopback) holds a freshly generated repository;
the embedded tritonserver starts with ``--model-repository=s3://127.0.0.1:PORT/bucket/path``
and AWS credentials in its environment, as the Kubernetes manifests run NVIDIA's image
with a Secret. The SDK must get the same results as from the local folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from omniface import contract, repository
from omniface.client import Client

pytestmark = pytest.mark.integration

BUCKET = "omniface-models"
PREFIX = "repositories/omniface-cpu"
CREDENTIALS = {
    # moto accepts any credentials; tritonserver's S3 client needs some to sign requests
    "AWS_ACCESS_KEY_ID": "omniface-test",
    "AWS_SECRET_ACCESS_KEY": "omniface-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("moto.server", reason="the S3 test needs moto[server] (the 'deploy' extra)")
    from moto.server import ThreadedMotoServer

    from omniface.server import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):
    boto3 = pytest.importorskip("boto3")
    return boto3.client(
        "s3", endpoint_url=f"http://{endpoint}", region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"], aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def upload_tree(client, folder: Path, bucket: str, prefix: str) -> list[str]:
    """What ``aws s3 sync FOLDER s3://BUCKET/PREFIX`` does, for a test (no caches)."""
    keys = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys


def render_local(folder: Path, model_repository: Path) -> Path:
    """The repository rendered from the contract, with the committed graphs."""
    repository.render_repository(folder)
    for graph in (contract.DETECTOR, contract.ATTRIBUTES):
        shutil.copy2(model_repository / graph / "1" / repository.ONNX_FILENAME, folder / graph / "1")
    return folder


@pytest.fixture(scope="module")
def uploaded(s3_endpoint: str, model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A repository rendered from the contract (+ the committed graphs), uploaded, and
    deleted locally so the server can only have read it from S3. Returns its s3:// URL."""
    local = render_local(tmp_path_factory.mktemp("render") / "repo", model_repository)
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    keys = upload_tree(client, local, BUCKET, PREFIX)
    assert f"{PREFIX}/{contract.FACE_ANALYSIS}/config.pbtxt" in keys
    assert f"{PREFIX}/{contract.FACE_ANALYSIS}/1/.gitkeep" in keys  # the ensemble's empty version folder
    shutil.rmtree(local)
    return f"s3://{s3_endpoint}/{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def s3_server(uploaded: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.server import EmbeddedServer, free_port

    server = EmbeddedServer(
        model_repository=uploaded, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
        log_path=tmp_path_factory.mktemp("s3-server") / "tritonserver.log", env=CREDENTIALS, startup_timeout=120,
    )
    with server:
        yield server


def test_server_loads_every_model_from_s3(s3_server, uploaded: str) -> None:
    assert s3_server.model_states() == {name: "READY" for name in contract.MODELS}
    assert f"--model-repository={uploaded}" in s3_server.command(Path("/unused"))


def test_sdk_results_through_the_s3_repository_match_the_local_one(s3_server, triton_server, astronaut: np.ndarray,
                                                                   assert_same_result) -> None:
    frames = [astronaut, np.ascontiguousarray(astronaut[40:400, 60:500]), np.zeros((90, 120, 3), np.uint8)]
    crops = [astronaut[100:300, 150:350], astronaut[:112, :112]]
    with Client(s3_server.grpc_url, timeout=60.0) as from_s3, Client(triton_server.grpc_url, timeout=60.0) as local:
        assert from_s3.is_ready() and from_s3.contract_version() == contract.CONTRACT_VERSION
        for got, want in zip(from_s3.analyze_batch(frames, concurrency=2), [local.analyze(f) for f in frames], strict=True):
            assert_same_result(got, want)
        for got, want in zip(from_s3.analyze_faces(crops), local.analyze_faces(crops), strict=True):
            assert got.age == pytest.approx(want.age, abs=0.05) and got.gender == want.gender


def test_a_missing_s3_prefix_fails_at_start_with_the_server_error(s3_endpoint: str, uploaded: str, tmp_path: Path) -> None:
    from omniface.errors import ServerError
    from omniface.server import EmbeddedServer, free_port

    server = EmbeddedServer(
        model_repository=f"s3://{s3_endpoint}/{BUCKET}/no/such/prefix", grpc_port=free_port(), http_port=free_port(),
        metrics_port=free_port(), log_path=tmp_path / "tritonserver.log", env=CREDENTIALS, startup_timeout=60,
    )
    with pytest.raises(ServerError, match="exited"):
        server.start()
    assert "no/such/prefix" in server.log_tail()


def test_the_ensembles_empty_version_folder_must_be_uploaded(s3_endpoint: str, uploaded: str, model_repository: Path,
                                                              tmp_path: Path) -> None:
    """Object storage has no folders: without face_analysis/1/.gitkeep the ensemble has no
    version and the server refuses to start (docs/deploy-kubernetes.md says to keep it)."""
    from omniface.errors import ServerError
    from omniface.server import EmbeddedServer, free_port

    local = render_local(tmp_path / "repo", model_repository)
    (local / contract.FACE_ANALYSIS / "1" / ".gitkeep").unlink()
    keys = upload_tree(s3_client(s3_endpoint), local, BUCKET, "repositories/without-gitkeep")
    assert not any(k.endswith(".gitkeep") for k in keys)
    server = EmbeddedServer(
        model_repository=f"s3://{s3_endpoint}/{BUCKET}/repositories/without-gitkeep", grpc_port=free_port(),
        http_port=free_port(), metrics_port=free_port(), log_path=tmp_path / "tritonserver.log", env=CREDENTIALS,
        startup_timeout=60,
    )
    with pytest.raises(ServerError, match="exited"):
        server.start()
    assert "No model version was found" in server.log_tail(200)


def test_serve_command_keeps_object_storage_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """``omniface serve --model-repository s3://...`` hands the URL to tritonserver as is."""
    from omniface import server as server_module

    seen = {}

    def fake_start(self):
        seen["repository"] = self.model_repository
        raise KeyboardInterrupt

    monkeypatch.setattr(server_module.EmbeddedServer, "start", fake_start)
    with pytest.raises(KeyboardInterrupt):
        server_module.run_serve_command("s3://127.0.0.1:9000/bucket/omniface", 1, 2, 3)
    assert seen["repository"] == "s3://127.0.0.1:9000/bucket/omniface"
    with pytest.raises(KeyboardInterrupt):
        server_module.run_serve_command("relative/folder", 1, 2, 3)
    assert seen["repository"] == Path("relative/folder")
