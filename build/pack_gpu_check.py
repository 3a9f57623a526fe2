"""Pack what a bare GPU machine needs to run ``tests/gpu`` into one archive.

    python build/pack_gpu_check.py                 # -> .gpu-check/kit.tar.xz (about 30 MB)
    bash build/run_gpu_check.sh                    # on the GPU machine, from the checkout

Why: the GPU machines lent to this project have torch with CUDA and Python 3.12, but no
network, no Triton server, no tritonclient, no perf_analyzer and none of the training
data beside the checkout; what travels with the working tree is capped (64 MiB). The
archive holds, from this environment's wheels and data:

* ``site/``: Triton 2.51's server from nvidia-pytriton (binary, python backend, the
  stub for the target Python, the bundled libraries minus pytriton's own libpython) and
  the tritonclient package (pure Python and libcshm);
* ``bin/perf_analyzer`` and ``lib/`` with the two libraries it loads from the system
  (libb64.so.0d, libcudart.so.12);
* ``data/``: the held-out WIDER FACE frames and UTKFace crops the GPU tests measure on,
  in the data root's layout (``OMNIFACE_DATA`` points there), picked exactly as
  ``omniface.quantize`` picks them.
"""

from __future__ import annotations

import argparse
import ctypes.util
import io
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "client"))

from omniface import contract, quantize  # noqa: E402
from omniface.binaries import cuda_runtime_lib_dir, perf_analyzer_path  # noqa: E402
from omniface.server import find_triton  # noqa: E402

DEFAULT_OUT = ROOT / ".gpu-check" / "kit.tar.xz"
FRAMES = 48   # tests/gpu: 16 for parity, 48 served
CROPS = 128


def _b64_library() -> Path:
    for folder in (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib")):
        if (folder / "libb64.so.0d").is_file():
            return folder / "libb64.so.0d"
    found = ctypes.util.find_library("b64")
    if found and Path(found).is_file():
        return Path(found)
    raise SystemExit("libb64.so.0d not found: apt-get install libb64-0d (bash build/install.sh bench does it)")


def _data_files() -> list[tuple[Path, str]]:
    """(file, path under data/) of the held-out images the GPU tests use."""
    root = quantize.data_root()
    frames = quantize.image_files(contract.DETECTOR, "val", FRAMES)
    crops = quantize.image_files(contract.ATTRIBUTES, "val", CROPS)
    if not frames or not crops:
        raise SystemExit(f"no WIDER FACE / UTKFace under {root}: set OMNIFACE_DATA (see ../shared/data/README.md)")
    return [(p, f"data/{p.relative_to(root)}") for p in (*frames, *crops)]


def members(pythons: list[str]) -> list[tuple[Path, str]]:
    """(source file or folder, name in the archive) of everything packed."""
    triton = find_triton()
    server = triton.package_dir
    out = [(server / "bin", "site/pytriton/tritonserver/bin"),
           (server / "backends", "site/pytriton/tritonserver/backends"),
           (server / "caches", "site/pytriton/tritonserver/caches")]
    for python in pythons:
        stub = triton.stub(python)
        if not stub.is_file():
            raise SystemExit(f"nvidia-pytriton has no python backend stub for Python {python}")
        out.append((stub, f"site/pytriton/tritonserver/python_backend_stubs/{python}/{stub.name}"))
    for library in sorted(triton.libs_dir.iterdir()):
        if not library.name.startswith("libpython"):  # pytriton's own interpreter: the server never loads it
            out.append((library, f"site/nvidia_pytriton.libs/{library.name}"))
    import tritonclient

    out.append((Path(tritonclient.__file__).parent, "site/tritonclient"))
    perf = perf_analyzer_path()
    cudart = cuda_runtime_lib_dir()
    if perf is None or cudart is None:
        raise SystemExit("perf_analyzer or libcudart.so.12 missing: bash build/install.sh bench")
    out += [(perf, "bin/perf_analyzer"), (_b64_library(), "lib/libb64.so.0d"),
            (sorted(cudart.glob("libcudart.so.12*"))[0], "lib/libcudart.so.12")]
    return out + _data_files()


def _add_bytes(archive: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(blob))


def pack(out: Path, pythons: list[str]) -> dict:
    start = time.perf_counter()
    items = members(pythons)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    from tqdm import tqdm

    with tarfile.open(partial, "w:xz", preset=6) as archive:
        for source, name in tqdm(items, desc="packing", unit="item"):
            archive.add(source, arcname=name, filter=lambda info: None if "__pycache__" in info.name else info,
                        recursive=True)
        # A regular package, so the kit's server wins over an installed nvidia-pytriton.
        _add_bytes(archive, "site/pytriton/__init__.py",
                   b'"""Triton 2.51 from nvidia-pytriton 0.7.0, packed by build/pack_gpu_check.py."""\n'
                   b'__version__ = "0.7.0-kit"\n')
        manifest = {"pythons": pythons, "items": [name for _, name in items], "made": time.strftime("%Y-%m-%d %H:%M")}
        _add_bytes(archive, "MANIFEST.json", json.dumps(manifest, indent=1).encode())
    shutil.move(partial, out)
    manifest["bytes"] = out.stat().st_size
    manifest["seconds"] = round(time.perf_counter() - start, 1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--python", action="append", dest="pythons",
                        help="python-backend stub version(s) to pack (default 3.12, the GPU machines' Python)")
    args = parser.parse_args(argv)
    manifest = pack(args.out, args.pythons or ["3.12"])
    print(f"{args.out}: {manifest['bytes'] / 2**20:.1f} MiB, {len(manifest['items'])} items, "
          f"{manifest['seconds']} s; Python stubs {manifest['pythons']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
