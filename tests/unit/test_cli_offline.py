"""The CLI without a server: doctor, exit codes, one-line errors, table and paths."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omniface import binaries, cli, contract
from omniface.types import Box, Face, FrameResult, HeadPose, Point, ScoreMap


def closed_port() -> int:
    from omniface.server import free_port

    return free_port()


@pytest.fixture
def png(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(path)
    return path


def test_doctor_reports_every_item(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for item in ("python", "numpy", "tritonclient", "tritonserver", "python backend stub", "onnxruntime",
                 "torch", "perf_analyzer", "GPU"):
        assert item in out, item
    assert "OK" in out
    for line in out.splitlines():
        if "MISSING" in line:
            assert line.strip().startswith("MISSING")


def test_doctor_names_the_fix_for_missing_items(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = binaries.find_spec
    monkeypatch.setattr(binaries, "find_spec", lambda m: None if m in ("pytriton", "onnxruntime", "torch") else real(m))
    monkeypatch.setattr(binaries, "perf_analyzer_path", lambda: None)
    assert cli.main(["doctor"]) == 0  # optional parts missing: still exit 0
    out = capsys.readouterr().out
    assert "MISSING" in out and "pip install 'omniface[serve]'" in out and "onnxruntime>=1.17" in out
    assert "tritonclient[all]==2.51.0" in out


def test_doctor_fails_without_the_sdk_requirements(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = binaries.find_spec
    monkeypatch.setattr(binaries, "find_spec", lambda m: None if m == "tritonclient" else real(m))
    assert cli.main(["doctor"]) == 1
    assert "pip install 'tritonclient[grpc]==2.51.0'" in capsys.readouterr().out


def test_analyze_against_a_closed_port_exits_3(png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["analyze", str(png), "--url", f"127.0.0.1:{closed_port()}", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_UNAVAILABLE == 3
    assert len(err.strip().splitlines()) == 1 and "omniface serve" in err and "Traceback" not in err


def test_analyze_bad_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jpg"
    assert cli.main(["analyze", str(missing), "--url", f"127.0.0.1:{closed_port()}"]) == cli.EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such file" in err
    assert cli.main(["analyze", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert cli.main(["analyze"]) == 2
    assert cli.main(["analyze", "x.png", "--timeout", "-1"]) == 2
    assert cli.main(["analyze", "x.png", "--url", "http://localhost:8000"]) == 2
    assert "gRPC" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert "0.1.0" in capsys.readouterr().out


def test_serve_calls_the_server_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    import omniface.server

    seen = {}

    def fake_run(model_repository, grpc_port, http_port, metrics_port):
        seen.update(repo=model_repository, ports=(grpc_port, http_port, metrics_port))
        return 0

    monkeypatch.setattr(omniface.server, "run_serve_command", fake_run)
    assert cli.main(["serve", "--model-repository", "/models", "--grpc-port", "9001", "--http-port", "9000",
                     "--metrics-port", "9002"]) == 0
    assert seen == {"repo": "/models", "ports": (9001, 9000, 9002)}  # not the contract's layout: as it is
    assert cli.main(["serve", "--four-step"]) == 0 and seen == {"repo": None, "ports": (8001, 8000, 8002)}
    # By default the contract's CPU repository is served fused, from a rendered copy.
    assert cli.main(["serve"]) == 0 and seen["repo"].endswith("model_repository") and seen["repo"] != "/models"
    assert cli.main(["serve", "--grpc-port", "0"]) == 2
    assert cli.main(["serve", "--four-step", "--fuse"]) == 2  # one layout or the other


def test_serve_layout_says_what_it_serves_and_why(tmp_path: Path) -> None:
    from omniface import repository

    fuse, why = cli.serve_layout(None, four_step=False, fuse=False)
    assert fuse and "fused" in why and "--four-step" in why
    assert cli.serve_layout(None, four_step=True, fuse=False) == (False, "serving the four-step ensemble (--four-step)")
    assert cli.serve_layout("s3://bucket/models", four_step=False, fuse=False)[0] is False
    with pytest.raises(ValueError, match="remote"):
        cli.serve_layout("s3://bucket/models", four_step=False, fuse=True)
    variant = repository.render_variant(tmp_path / "variant", postprocess={"max_faces": 8})
    fuse, why = cli.serve_layout(str(variant), four_step=False, fuse=False)
    assert not fuse and "postprocess/config.pbtxt" in why  # its own settings: served as it is
    assert cli.serve_layout(str(variant), four_step=False, fuse=True)[0] is True


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "omniface.cli", "analyze", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("omniface: error:")


def sample_result() -> FrameResult:
    face = Face(
        box=Box(10.4, 20.0, 110.0, 140.6), score=0.973,
        landmarks=tuple(Point(1.0, 2.0) for _ in range(contract.NUM_LANDMARKS)),
        age=31.4, age_std=4.2, gender="female", gender_score=0.91, expression="happy",
        expression_scores=ScoreMap({e: 0.94 if e == "happy" else 0.01 for e in contract.EXPRESSIONS}),
        smile=True, smile_score=0.88, head_pose=HeadPose(12.0, -3.0, 1.5),
    )
    bare = Face(box=Box(0, 0, 5, 5), score=0.5, landmarks=face.landmarks)
    return FrameResult(width=640, height=480, faces=(face, bare))


def test_table_rows() -> None:
    rows = cli.face_rows("a.jpg", sample_result())
    assert rows[0] == ("a.jpg", "0", "10,20,110,141", "0.97", "31±4", "female 0.91", "happy 0.94", "yes 0.88", "+12/-3/+2")
    assert rows[1][4:] == ("-",) * 5
    empty = cli.face_rows("b.jpg", FrameResult(width=3, height=2))
    assert "no faces (3x2)" in empty[0]
    table = cli.format_table(rows + empty).splitlines()
    assert table[0].split()[:2] == ["frame", "face"] and len(table) == 4


def test_annotation_paths(tmp_path: Path) -> None:
    assert cli.annotation_paths(["a/x.jpg"], "out.png") == [Path("out.png")]
    paths = cli.annotation_paths(["a/x.jpg", "b/x.jpg", "c/y.webp", "a/x.jpg"], str(tmp_path))
    assert paths == [tmp_path / "x.png", tmp_path / "x-2.png", tmp_path / "y.png", tmp_path / "x-3.png"]


def test_json_and_annotation_with_a_fake_client(monkeypatch: pytest.MonkeyPatch, png: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The output side of ``analyze`` with the network replaced."""
    import omniface.client
    from PIL import Image

    result = sample_result()
    seen_settings: list[dict] = []

    class FakeClient:
        def __init__(self, url, **kwargs):
            self.url = url

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def analyze(self, data, **settings):
            from omniface.errors import InvalidInput

            seen_settings.append(settings)
            if data == b"garbage":
                raise InvalidInput("the server refused the input: cannot decode")
            return FrameResult(width=32, height=24, faces=result.faces)

    monkeypatch.setattr(omniface.client, "Client", FakeClient)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    out_png = tmp_path / "annotated.png"
    assert cli.main(["analyze", str(png), "--json", "--annotate", str(out_png)]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    decoded = json.loads(line)
    assert decoded["path"] == str(png) and decoded["width"] == 32 and len(decoded["faces"]) == 2
    with Image.open(out_png) as drawn:
        assert drawn.size == (32, 24) and drawn.format == "PNG"

    out_dir = tmp_path / "many"
    code = cli.main(["analyze", str(png), str(bad), str(png), "--annotate", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 2  # the bad image is reported, the others still analysed
    assert "bad.jpg" in captured.err and "cannot decode" in captured.err
    assert "4 faces in 2 images" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["frame-2.png", "frame.png"]
    assert seen_settings[0] == {"score_threshold": None, "max_faces": None, "min_face_size": None, "det_size": None}

    seen_settings.clear()
    assert cli.main(["analyze", str(png), "--score-threshold", "0.7", "--max-faces", "5", "--min-face-size", "24",
                     "--det-size", "native"]) == 0
    assert seen_settings == [{"score_threshold": 0.7, "max_faces": 5, "min_face_size": 24.0, "det_size": "native"}]
    capsys.readouterr()
    for bad in (["--max-faces", "0"], ["--score-threshold", "2"], ["--det-size", "huge"], ["--min-face-size", "-3"]):
        seen_settings.clear()
        assert cli.main(["analyze", str(png), *bad]) == 2, bad  # refused before any request
        assert seen_settings == [] and "omniface: error:" in capsys.readouterr().err


def test_annotate_draws_inside_the_frame() -> None:
    from omniface.visualize import annotate, face_label

    image = np.zeros((200, 300, 3), np.uint8)
    drawn = annotate(image, FrameResult(width=300, height=200, faces=sample_result().faces))
    assert drawn.size == (300, 200) and drawn.mode == "RGB"
    assert np.asarray(drawn).any()
    assert face_label(sample_result().faces[0]).startswith("F 31y happy 0.94 smile")
    half = annotate(np.zeros((100, 150), np.uint8), FrameResult(width=300, height=200, faces=sample_result().faces))
    assert half.size == (150, 100)
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
