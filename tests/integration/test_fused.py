"""A fused repository (``repository.fuse_steps``) served by the real tritonserver gives
the SDK exactly what the four-step ensemble gives, and refuses bad input the same way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from omniface import contract, repository

pytestmark = pytest.mark.integration

pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")

CHAIN = (contract.PREPROCESS, contract.DETECTOR, contract.POSTPROCESS, contract.ATTRIBUTES)


@pytest.fixture(scope="module")
def fused_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The permissive server's settings (score threshold 0, 8 faces), all four steps fused."""
    from omniface.server import EmbeddedServer, free_port

    work = tmp_path_factory.mktemp("fused")
    repo = repository.render_variant(work / "repo", model_repository, postprocess={"score_threshold": "0.0", "max_faces": "8"},
                                     fuse=CHAIN, instance_counts={repository.fused_name(CHAIN): 2})
    server = EmbeddedServer(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                            metrics_port=free_port(), log_path=work / "tritonserver.log")
    with server:
        yield server


def test_fused_server_matches_the_four_step_ensemble(fused_server, permissive_server, astronaut) -> None:
    from omniface import Client

    with Client(fused_server.grpc_url) as fused, Client(permissive_server.grpc_url) as separate:
        for frame in (astronaut, astronaut[::2, ::2].copy()):
            got, want = fused.analyze(frame), separate.analyze(frame)
            assert len(got.faces) == len(want.faces) == 8
            # The same code on the same graphs with the same batch: the same numbers.
            assert got.to_dict() == want.to_dict()

def test_fused_server_refuses_bad_input_and_keeps_serving(fused_server, astronaut) -> None:
    from omniface import Client
    from omniface.errors import InvalidInput

    with Client(fused_server.grpc_url) as client:
        with pytest.raises(InvalidInput):
            client.analyze(b"not an image at all")
        assert len(client.analyze(astronaut).faces) == 8
