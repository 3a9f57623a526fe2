"""``omniface analyze`` against a real tritonserver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omniface import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def astronaut_png(astronaut: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


def test_analyze_json(triton_server, astronaut: np.ndarray, astronaut_png: Path) -> None:
    # the console entry point as users run it, in a fresh interpreter
    proc = subprocess.run(
        [sys.executable, "-m", "omniface.cli", "analyze", str(astronaut_png), "--json", "--url", triton_server.grpc_url],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    data = json.loads(line)
    assert data["path"] == str(astronaut_png)
    assert (data["height"], data["width"]) == astronaut.shape[:2]
    assert isinstance(data["faces"], list)
    for face in data["faces"]:
        assert set(face["box"]) == {"x1", "y1", "x2", "y2"} and 0 <= face["score"] <= 1


def test_analyze_table_and_annotate(triton_server, astronaut: np.ndarray, astronaut_png: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    out = tmp_path / "annotated.png"
    assert cli.main(["analyze", str(astronaut_png), "--url", triton_server.grpc_url, "--annotate", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[:2] == ["frame", "face"]
    assert "image" in captured.out.splitlines()[-1]
    with Image.open(out) as drawn:
        assert drawn.format == "PNG" and drawn.size == (astronaut.shape[1], astronaut.shape[0])


def test_analyze_several_images_into_a_directory(triton_server, astronaut_png: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    small = tmp_path / "small.jpg"
    with Image.open(astronaut_png) as image:
        image.resize((128, 96)).save(small, format="JPEG")
    out_dir = tmp_path / "annotated"
    code = cli.main(["analyze", str(astronaut_png), str(small), "--json", "--url", triton_server.grpc_url,
                     "--annotate", str(out_dir)])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == [str(astronaut_png), str(small)]
    assert (lines[1]["width"], lines[1]["height"]) == (128, 96)
    with Image.open(out_dir / "small.png") as drawn:
        assert drawn.size == (128, 96)
    assert (out_dir / "astronaut.png").is_file()


def test_undecodable_image_exits_2(triton_server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    assert cli.main(["analyze", str(bad), "--url", triton_server.grpc_url]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "Traceback" not in err
