"""`omniface bench` argument parsing and dispatch (nothing measured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omniface import cli
from omniface.bench import cli as bench_cli


def test_bench_is_an_omniface_subcommand() -> None:
    args = cli.build_parser().parse_args(["bench", "sweep", "--concurrency", "1", "4", "--input-kind", "raw"])
    assert args.handler is bench_cli.run and args.bench_command == "sweep"
    assert args.concurrency == [1, 4] and args.input_kind == ["raw"] and args.shared_memory == "none"


def test_defaults_of_the_long_runs() -> None:
    parser = cli.build_parser()
    soak = parser.parse_args(["bench", "soak"])
    assert (soak.duration, soak.concurrency, soak.warmup, soak.preset) == (600.0, 4, 30.0, "shipped")
    compare = parser.parse_args(["bench", "compare"])
    assert compare.concurrency == [1, 4, 16] and compare.case == ["real", "faces1", "faces20"]
    assert compare.rounds == 2 and compare.preset == "shipped"
    assert parser.parse_args(["bench", "soak", "--preset", "fused4-x2"]).preset == "fused4-x2"


def test_no_command_and_bad_arguments() -> None:
    assert cli.main(["bench"]) == 2
    assert cli.main(["bench", "sweep", "--concurrency", "0"]) == 2  # argparse refuses it


def test_unknown_preset_is_refused_before_anything_starts(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["bench", "tune", "--preset", "no-such-preset"]) == 2
    assert "no-such-preset" in capsys.readouterr().err


def test_inputs_writes_both_kinds(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    assert cli.main(["bench", "inputs", "--out", str(tmp_path), "--sample", "astronaut"]) == 0
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert raw["data"][0]["IMAGE_RAW"]["shape"] == [512, 512, 3]
    assert "IMAGE_BYTES" in json.loads((tmp_path / "encoded.json").read_text())["data"][0]


def test_detection_size_measures_the_graph_at_each_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    from PIL import Image

    frame = tmp_path / "frame.png"
    Image.new("RGB", (320, 200), (90, 90, 90)).save(frame)
    out = tmp_path / "out"
    assert cli.main(["bench", "detection-size", "--image", str(frame), "--det-size", "160", "native", "--runs", "1",
                     "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())["detection_size"]
    assert [(r["det_size"], r["canvas"], r["locations"]) for r in results] == [
        ("160", [160, 128], 420), ("native", [320, 224], 1470)]  # 200 px padded up to 224
    assert all(r["detector_ms"] > 0 and r["detector_fps"] > 0 for r in results)
    assert (out / "detection-size.png").stat().st_size > 1000 and "native" in capsys.readouterr().out
    assert cli.main(["bench", "detection-size", "--det-size", "huge", "--out", str(out)]) == 2
