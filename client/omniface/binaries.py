"""Where the tools omniface drives from outside Python are: perf_analyzer (from the
tritonclient wheel), the libcudart.so.12 it links (from the nvidia-cuda-runtime-cu12
wheel), and which shared libraries a binary cannot load.

Its own module, standard library only, because both ``omniface.cli`` (``doctor``) and
``omniface.bench.perf`` (running perf_analyzer) need it: with the discovery in the CLI,
the bench harness imported the CLI that imports the bench CLI, an import cycle.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path


def find_spec(module: str):
    """``importlib.util.find_spec`` that answers None instead of raising for a broken
    or missing parent package."""
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def package_dir(module: str) -> Path | None:
    """The folder of an importable package (or of a module's file), without importing it."""
    spec = find_spec(module)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def cuda_runtime_lib_dir() -> Path | None:
    """``nvidia/cuda_runtime/lib`` of the nvidia-cuda-runtime-cu12 wheel, if installed."""
    base = package_dir("nvidia.cuda_runtime")
    if base is not None and (base / "lib").is_dir():
        return base / "lib"
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        candidate = Path(site) / "nvidia" / "cuda_runtime" / "lib"
        if candidate.is_dir():
            return candidate
    return None


def perf_analyzer_path() -> Path | None:
    """Where the tritonclient wheel put perf_analyzer (its ``bin`` scheme: the scripts
    directory of this environment), else the first one on PATH."""
    candidates = [Path(sysconfig.get_paths()["scripts"]) / "perf_analyzer",
                  Path(sys.executable).parent / "perf_analyzer"]
    tritonclient_dir = package_dir("tritonclient")
    if tritonclient_dir is not None:
        candidates.append(tritonclient_dir.parent / "bin" / "perf_analyzer")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("perf_analyzer")
    return Path(found) if found else None


def missing_shared_libraries(binary: Path, extra_dirs: Sequence[Path] = ()) -> list[str] | None:
    """Sonames ``ldd`` cannot resolve for ``binary`` (with ``extra_dirs`` on
    LD_LIBRARY_PATH); None when ldd is unavailable."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, extra_dirs), env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
    try:
        out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]
