"""The GPU-check kit (build/pack_gpu_check.py) holds what a bare GPU machine lacks, and
build/run_gpu_check.sh refuses clearly without it. The full kit is rehearsed on the CPU
with ``bash build/run_gpu_check.sh --rehearse`` (not in the suite: packing takes a minute)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_packer():
    spec = importlib.util.spec_from_file_location("pack_gpu_check", ROOT / "build" / "pack_gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kit_members_cover_server_client_perf_and_data() -> None:
    pytest.importorskip("pytriton", reason="the kit is packed from the 'serve' extra")
    pytest.importorskip("tritonclient")
    packer = _load_packer()
    from omniface import quantize

    if not (quantize.data_root() / "widerface").is_dir():
        pytest.skip("the kit packs held-out images from ../shared/data")
    try:
        items = packer.members(["3.12"])
    except SystemExit as exc:  # perf_analyzer libraries absent: the 'bench' extra
        pytest.skip(str(exc))
    names = [name for _, name in items]
    for needed in ("site/pytriton/tritonserver/bin", "site/pytriton/tritonserver/backends",
                   "site/pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub",
                   "site/tritonclient", "bin/perf_analyzer", "lib/libb64.so.0d", "lib/libcudart.so.12"):
        assert needed in names, needed
    assert not any("libpython" in name for name in names)  # pytriton's own interpreter stays behind
    assert any(name.startswith("site/nvidia_pytriton.libs/libtritonserver") for name in names)
    frames = [n for n in names if n.startswith("data/widerface/")]
    crops = [n for n in names if n.startswith("data/utkface/")]
    assert len(frames) == packer.FRAMES and len(crops) == packer.CROPS
    # The same files omniface.quantize picks for the held-out split: the GPU numbers are
    # measured on the images the CPU numbers are.
    picked = quantize._pick(sorted((quantize.data_root() / "widerface/train/images").glob("*/*.jpg")), "val", 16)
    assert {f"data/{p.relative_to(quantize.data_root())}" for p in picked} <= set(frames)
    sizes = sum(source.stat().st_size for source, _ in items if source.is_file())
    assert sizes < 200 * 2**20  # compresses to ~36 MiB; the device tool carries 64 MiB with the tree


def test_run_script_refuses_without_a_kit(tmp_path) -> None:
    done = subprocess.run(["bash", str(ROOT / "build" / "run_gpu_check.sh"), str(tmp_path / "missing.tar.xz")],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)})
    assert done.returncode == 2
    assert "pack_gpu_check.py" in done.stderr
