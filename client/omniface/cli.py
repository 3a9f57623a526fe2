"""The ``omniface`` command line.

    omniface analyze IMAGE... [--url URL] [--json] [--annotate OUT] [--timeout S]
                     [--score-threshold T] [--max-faces N] [--min-face-size PX] [--det-size PX|native]
    omniface serve [--model-repository PATH] [--grpc-port 8001] [--http-port 8000] [--metrics-port 8002]
                   [--four-step | --fuse]
    omniface doctor
    omniface build-engines [--out-dir DIR] [--precision fp16|fp32|int8] [--dry-run]

``analyze`` sends the detection settings given (the server's configured values apply
to the others) and prints one table row per face (or, with ``--json``, one JSON object per
image and line: ``{"path": ..., "width": ..., "height": ..., "faces": [...]}``).
``--annotate OUT`` draws the result: with one IMAGE, OUT is the PNG to write; with
several, OUT is a directory (created if needed) that receives ``<image stem>.png`` per
image (``<stem>-2.png``, ... when two images share a stem).

Exit codes: 0 success; 1 server error or other failure; 2 bad input (a missing or
undecodable image, bad arguments); 3 server unavailable or timed out; 4 contract
mismatch between server and SDK. Errors are one line on stderr naming the fix.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.metadata
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omniface import __version__, binaries, contract

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_CONTRACT = 4

DEFAULT_URL_ENV = "OMNIFACE_URL"


def _error(message: str) -> None:
    print(f"omniface: error: {message}", file=sys.stderr, flush=True)


def _exit_code(exc: BaseException) -> int:
    from omniface.errors import ContractMismatch, InvalidInput, ServerUnavailable, Timeout

    if isinstance(exc, InvalidInput):
        return EXIT_BAD_INPUT
    if isinstance(exc, (ServerUnavailable, Timeout)):
        return EXIT_UNAVAILABLE
    if isinstance(exc, ContractMismatch):
        return EXIT_CONTRACT
    return EXIT_ERROR


# --------------------------------------------------------------------------------------
# analyze
# --------------------------------------------------------------------------------------

TABLE_COLUMNS = ("frame", "face", "box x1,y1,x2,y2", "score", "age", "gender", "expression", "smile", "yaw/pitch/roll")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def face_rows(name: str, result) -> list[tuple[str, ...]]:
    """Table rows of one image's result (one per face; one placeholder row without faces)."""
    if not result.faces:
        return [(name, "-", f"no faces ({result.width}x{result.height})", "", "", "", "", "", "")]
    rows = []
    for index, face in enumerate(result.faces):
        b = face.box
        age = "-" if face.age is None else (
            f"{face.age:.0f}" if face.age_std is None else f"{face.age:.0f}±{face.age_std:.0f}")
        gender = "-" if face.gender is None else f"{face.gender} {_fmt(face.gender_score, '.2f')}"
        expression = "-" if face.expression is None else f"{face.expression} {_fmt(face.expression_score, '.2f')}"
        smile = "-" if face.smile is None else f"{'yes' if face.smile else 'no'} {_fmt(face.smile_score, '.2f')}"
        pose = "-" if face.head_pose is None else (
            f"{face.head_pose.yaw:+.0f}/{face.head_pose.pitch:+.0f}/{face.head_pose.roll:+.0f}")
        rows.append((name, str(index), f"{b.x1:.0f},{b.y1:.0f},{b.x2:.0f},{b.y2:.0f}", f"{face.score:.2f}",
                     age, gender, expression, smile, pose))
    return rows


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    table = [TABLE_COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)


def annotation_paths(images: Sequence[str], out: str) -> list[Path]:
    """Where ``--annotate OUT`` writes each image's drawing, in ``images`` order (see
    the module docstring)."""
    if len(images) == 1:
        return [Path(out)]
    directory = Path(out)
    taken: set[str] = set()
    paths = []
    for image in images:
        stem = Path(image).stem or "image"
        name, n = f"{stem}.png", 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}.png"
        taken.add(name)
        paths.append(directory / name)
    return paths


def _write_annotation(data: bytes, result, path: Path) -> None:
    from omniface.errors import InvalidInput
    from omniface.processing.image import decode_image
    from omniface.visualize import annotate

    frame = decode_image(data)  # the server's own decoder: same orientation, same size
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        annotate(frame, result).save(path, format="PNG")
    except OSError as exc:
        raise InvalidInput(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def analyze_settings(args: argparse.Namespace) -> dict:
    """The ``Client.analyze`` detection settings the command line gave (None: the server's)."""
    return {"score_threshold": args.score_threshold, "max_faces": args.max_faces,
            "min_face_size": args.min_face_size, "det_size": args.det_size}


def cmd_analyze(args: argparse.Namespace) -> int:
    from omniface import _protocol as protocol
    from omniface.client import Client
    from omniface.errors import OmnifaceError

    try:  # bad settings (e.g. an http:// URL, --max-faces 0) fail before any file is read
        protocol.detection_settings(**analyze_settings(args))
        client = Client(args.url, timeout=args.timeout, retries=args.retries)
    except OmnifaceError as exc:
        _error(str(exc))
        return _exit_code(exc)
    with client:
        return _analyze_files(client, args)


def _analyze_files(client, args: argparse.Namespace) -> int:
    from omniface.errors import InvalidInput, OmnifaceError

    code = EXIT_OK
    readable: list[tuple[str, bytes]] = []
    for image in args.images:
        try:
            data = Path(image).read_bytes()
        except FileNotFoundError:
            _error(f"{image}: no such file; pass the path of a JPEG, PNG, WebP or BMP image")
            code = EXIT_BAD_INPUT
            continue
        except IsADirectoryError:
            _error(f"{image}: is a directory; pass image files (e.g. {image.rstrip('/')}/*.jpg)")
            code = EXIT_BAD_INPUT
            continue
        except OSError as exc:
            _error(f"{image}: cannot read it ({exc.strerror or exc})")
            code = EXIT_BAD_INPUT
            continue
        readable.append((image, data))
    if not readable:
        return code
    if args.annotate and len(args.images) > 1 and Path(args.annotate).is_file():
        _error(f"--annotate {args.annotate}: with several images OUT must be a directory, not a file")
        return EXIT_BAD_INPUT
    targets: list[Path | None] = (
        list(annotation_paths([name for name, _ in readable], args.annotate)) if args.annotate else [None] * len(readable)
    )

    rows: list[tuple[str, ...]] = []
    faces = images = 0
    written: list[tuple[str, Path]] = []
    settings = analyze_settings(args)
    for (name, data), target in zip(readable, targets):
        try:
            result = client.analyze(data, **settings)
            if target is not None:
                _write_annotation(data, result, target)
                written.append((name, target))
        except InvalidInput as exc:
            _error(f"{name}: {exc}")
            code = max(code, EXIT_BAD_INPUT)
            continue
        except OmnifaceError as exc:  # outage, timeout, contract, server: stop here
            _error(f"{exc}")
            return _exit_code(exc)
        images += 1
        faces += len(result.faces)
        if args.json:
            print(json.dumps({"path": name, **result.to_dict()}), flush=True)
        else:
            rows.extend(face_rows(name, result))
    if not args.json and rows:
        print(format_table(rows))
        print(f"{faces} face{'s' if faces != 1 else ''} in {images} image{'s' if images != 1 else ''}")
    for name, path in written:
        print(f"annotated {name} -> {path}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------


def serve_layout(model_repository: str | None, four_step: bool, fuse: bool) -> tuple[bool, str]:
    """Whether ``omniface serve`` fuses the repository, and the line that says why.

    The fused CPU repository is the default: it serves the same ensemble at 0.96-0.98 of
    in-process throughput against 0.64-0.72 for four steps (docs/performance.md). It is
    rendered from the contract, so only a repository that *is* the contract's CPU
    rendering (the default one, or a copy with other graphs) is fused; any other (a GPU
    layout, a variant with its own settings, a remote s3:// one) is served as it is."""
    from omniface import repository

    if four_step:
        return False, "serving the four-step ensemble (--four-step)"
    if model_repository and "://" in model_repository:
        if fuse:
            raise ValueError("--fuse renders a local copy of the repository; it cannot fuse a remote (s3://...) one")
        return False, "serving the remote repository as it is (only a local one can be fused)"
    source = Path(model_repository) if model_repository else repository.default_repository_path()
    drift = repository.check_repository(source)
    if drift and not fuse:
        return False, (f"serving {source} as it is: it is not the contract's CPU layout ({drift[0]}"
                       f"{f', and {len(drift) - 1} more' if len(drift) > 1 else ''}), so it is not fused")
    return True, "serving the fused CPU repository (one python-backend model per frame; --four-step for four steps)"


def cmd_serve(args: argparse.Namespace) -> int:
    from omniface.errors import OmnifaceError

    try:
        from omniface.server import run_serve_command

        model_repository = args.model_repository
        try:
            fuse, why = serve_layout(model_repository, args.four_step, args.fuse)
        except ValueError as exc:
            _error(str(exc))
            return EXIT_ERROR
        print(f"omniface: {why}", flush=True)
        if fuse:
            import tempfile

            from omniface import repository

            with tempfile.TemporaryDirectory(prefix="omniface-fused-") as work:
                source = Path(model_repository) if model_repository else None
                fused = repository.render_fused(Path(work) / "model_repository", source)
                return int(run_serve_command(str(fused), args.grpc_port, args.http_port, args.metrics_port) or 0)
        return int(run_serve_command(model_repository, args.grpc_port, args.http_port, args.metrics_port) or 0)
    except ImportError as exc:
        _error(f"the server part is not installed ({exc}); install it with: pip install 'omniface[serve]'")
        return EXIT_ERROR
    except OmnifaceError as exc:
        _error(str(exc))
        return EXIT_ERROR


# --------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------


@dataclass
class Check:
    group: str
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_check(group: str, name: str, module: str, distribution: str, fix: str, required: bool = False,
                  want: str | None = None) -> Check:
    spec = binaries.find_spec(module)
    if spec is None:
        return Check(group, name, False, "not installed", fix, required)
    version = _version(distribution) or "unknown version"
    if want and version != want:
        return Check(group, name, True, f"{version} (omniface is tested with {want})", fix, required)
    return Check(group, name, True, version, "", required)


def doctor_checks() -> list[Check]:
    checks: list[Check] = []
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    checks.append(Check("sdk", "python", sys.version_info >= (3, 10), f"{platform.python_version()} ({sys.executable})",
                        "use Python >= 3.10 (3.11 matches the server's python backend best)", True))
    numpy_check = _import_check("sdk", "numpy", "numpy", "numpy", "pip install 'numpy>=1.24,<2'", True)
    if numpy_check.ok and numpy_check.detail.split(".")[0].isdigit() and int(numpy_check.detail.split(".")[0]) >= 2:
        numpy_check.detail += " (tritonclient 2.51 is built for NumPy 1)"
        numpy_check.fix = "pip install 'numpy>=1.24,<2'"
    checks.append(numpy_check)
    checks.append(_import_check("sdk", "pillow", "PIL", "pillow", "pip install 'pillow>=10'", True))
    grpc_ok = binaries.find_spec("grpc") is not None
    tc = _import_check("sdk", "tritonclient[grpc]", "tritonclient", "tritonclient",
                       "pip install 'tritonclient[grpc]==2.51.0'", True, want="2.51.0")
    if tc.ok and not grpc_ok:
        tc = Check("sdk", "tritonclient[grpc]", False, f"{tc.detail}, but grpcio is missing",
                   "pip install 'tritonclient[grpc]==2.51.0'", True)
    checks.append(tc)

    # serve: the embedded tritonserver of nvidia-pytriton
    pytriton_dir = binaries.package_dir("pytriton")
    fix_serve = "pip install 'omniface[serve]'  (brings nvidia-pytriton==0.7.0)"
    if pytriton_dir is None:
        checks.append(Check("serve", "tritonserver (nvidia-pytriton)", False, "nvidia-pytriton is not installed", fix_serve))
        checks.append(Check("serve", f"python backend stub (Python {py})", False, "nvidia-pytriton is not installed", fix_serve))
    else:
        binary = pytriton_dir / "tritonserver" / "bin" / "tritonserver"
        checks.append(Check("serve", "tritonserver (nvidia-pytriton)", binary.is_file() and os.access(binary, os.X_OK),
                            f"{binary} (nvidia-pytriton {_version('nvidia-pytriton') or '?'})",
                            "pip install --force-reinstall nvidia-pytriton==0.7.0"))
        stub = pytriton_dir / "tritonserver" / "python_backend_stubs" / py / "triton_python_backend_stub"
        checks.append(Check("serve", f"python backend stub (Python {py})", stub.is_file(), str(stub),
                            f"nvidia-pytriton 0.7.0 ships stubs for 3.8-3.13; reinstall it for Python {py}"))
    checks.append(_import_check("serve", "onnxruntime", "onnxruntime", "onnxruntime", "pip install 'onnxruntime>=1.17'"))
    try:
        from omniface.repository import default_repository_path

        repo = default_repository_path()
        graphs = [repo / name / "1" / "model.onnx" for name in ("detector", "attributes")]
        missing = [str(g.relative_to(repo)) for g in graphs if not g.is_file()]
        checks.append(Check("serve", "model repository", repo.is_dir() and not missing,
                            f"{repo}" + (f" (missing {', '.join(missing)})" if missing else ""),
                            "export the graphs with `python build/export_onnx.py` or set OMNIFACE_MODEL_REPOSITORY"))
    except Exception as exc:  # a broken checkout must not break doctor
        checks.append(Check("serve", "model repository", False, f"cannot locate it ({exc})",
                            "set OMNIFACE_MODEL_REPOSITORY to the repository folder"))

    # train (optional)
    checks.append(_import_check("train", "torch (optional)", "torch", "torch", "pip install 'omniface[train]'"))

    # bench: perf_analyzer from the tritonclient wheel and the libraries it links
    perf = binaries.perf_analyzer_path()
    cudart_dir = binaries.cuda_runtime_lib_dir()
    if perf is None:
        checks.append(Check("bench", "perf_analyzer", False, "not found", "pip install 'tritonclient[all]==2.51.0'"))
    else:
        missing_libs = binaries.missing_shared_libraries(perf, [cudart_dir] if cudart_dir else [])
        checks.append(Check("bench", "perf_analyzer", True, str(perf)))
        if missing_libs is None:  # no ldd: look the libraries up by name
            missing_libs = [] if ctypes.util.find_library("b64") else ["libb64.so.0d"]
            if cudart_dir is None or not any(cudart_dir.glob("libcudart.so.12*")):
                missing_libs.append("libcudart.so.12")
        b64_missing = any(lib.startswith("libb64") for lib in missing_libs)
        checks.append(Check("bench", "libb64.so.0d (for perf_analyzer)", not b64_missing,
                            "not found by the dynamic loader" if b64_missing else "found",
                            "apt-get install libb64-0d  (Debian/Ubuntu)"))
        cudart_missing = any(lib.startswith("libcudart") for lib in missing_libs)
        where = f" with LD_LIBRARY_PATH={cudart_dir}" if cudart_dir and not cudart_missing else ""
        checks.append(Check("bench", "libcudart.so.12 (for perf_analyzer)", not cudart_missing,
                            ("not found" if cudart_missing else "found" + where),
                            "pip install nvidia-cuda-runtime-cu12 and put its nvidia/cuda_runtime/lib on LD_LIBRARY_PATH"))
        others = [lib for lib in missing_libs if not lib.startswith(("libb64", "libcudart"))]
        if others:
            checks.append(Check("bench", "other perf_analyzer libraries", False, ", ".join(others),
                                "install the system packages that provide them"))

    # gpu (optional)
    smi = shutil.which("nvidia-smi")
    device = Path("/dev/nvidia0").exists()
    checks.append(Check("gpu", "NVIDIA GPU (optional)", bool(smi or device),
                        ", ".join(filter(None, [f"nvidia-smi at {smi}" if smi else "", "/dev/nvidia0" if device else ""]))
                        or "none found: the server runs on CPU",
                        "a GPU is only needed for the TensorRT (gpu) repository target"))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = doctor_checks()
    width = max(len(c.name) for c in checks)
    print(f"omniface {__version__} doctor")
    group = None
    for check in checks:
        if check.group != group:
            group = check.group
            print(f"[{group}]")
        status = "OK     " if check.ok else "MISSING"
        line = f"  {status} {check.name.ljust(width)}  {check.detail}"
        if check.fix and (not check.ok or "tested with" in check.detail or "NumPy 1" in check.detail):
            line += f"\n  {'':7} {'':{width}}  fix: {check.fix}"
        print(line)
    required_missing = [c.name for c in checks if c.required and not c.ok]
    if required_missing:
        print(f"the SDK cannot work without: {', '.join(required_missing)}")
        return EXIT_ERROR
    print("the SDK is usable; whatever is missing above is needed only by the group it is listed under")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be 1-65535")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omniface",
        description="Multi-task face analysis on NVIDIA Triton: detection, landmarks, age, gender, "
        "expression, smile, head pose.",
        epilog="exit codes: 0 ok, 1 error, 2 bad input, 3 server unavailable/timeout, 4 contract mismatch",
    )
    parser.add_argument("--version", action="version", version=f"omniface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    analyze = sub.add_parser(
        "analyze", help="analyse image files on a running server",
        description="Send each IMAGE to the server and print one row per face (or JSON lines).",
        epilog="--annotate OUT: with one IMAGE, OUT is the PNG to write; with several, a directory that "
        "receives <stem>.png per image.",
    )
    analyze.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, WebP or BMP files")
    analyze.add_argument("--url", default=os.environ.get(DEFAULT_URL_ENV, "127.0.0.1:8001"),
                         help=f"gRPC endpoint host:port (default: ${DEFAULT_URL_ENV} or 127.0.0.1:8001)")
    analyze.add_argument("--json", action="store_true", help="print one JSON object per image and line")
    analyze.add_argument("--annotate", metavar="OUT", help="draw the results (see below)")
    analyze.add_argument("--timeout", type=_positive_float, default=30.0, metavar="S",
                         help="seconds per request (default: 30)")
    analyze.add_argument("--retries", type=int, default=2, help=argparse.SUPPRESS)
    detection = analyze.add_argument_group("detection settings (default: the server's configured values)")
    detection.add_argument("--score-threshold", type=float, default=None, metavar="T",
                           help=f"drop faces scoring at or below T, 0-1 (default repository: {contract.SCORE_THRESHOLD_DEFAULT})")
    detection.add_argument("--max-faces", type=int, default=None, metavar="N",
                           help=f"keep the N highest-scoring faces, 1-{contract.ATTRIBUTES_MAX_BATCH} "
                           f"(default repository: {contract.MAX_FACES_DEFAULT})")
    detection.add_argument("--min-face-size", type=float, default=None, metavar="PX",
                           help="drop faces whose box's longer side is under PX pixels "
                           f"(default repository: {contract.MIN_FACE_SIZE_DEFAULT:g})")
    detection.add_argument("--det-size", default=None, metavar="PX|native",
                           help=f"long side the image is resized to for detection, {contract.DETECTOR_MIN_SIDE}-"
                           f"{contract.DETECTOR_MAX_SIDE}, or '{contract.DET_SIZE_NATIVE_NAME}' for its own size "
                           f"(default repository: {contract.DET_SIZE_DEFAULT})")
    analyze.set_defaults(handler=cmd_analyze)

    serve = sub.add_parser("serve", help="run the embedded Triton server with the omniface models",
                           description="Start tritonserver (from nvidia-pytriton) on loopback and serve until Ctrl-C.")
    serve.add_argument("--model-repository", metavar="PATH", default=None,
                       help="model repository (default: $OMNIFACE_MODEL_REPOSITORY or the packaged one)")
    serve.add_argument("--grpc-port", type=_port, default=8001)
    serve.add_argument("--http-port", type=_port, default=8000)
    serve.add_argument("--metrics-port", type=_port, default=8002)
    layout = serve.add_mutually_exclusive_group()
    layout.add_argument("--four-step", action="store_true",
                        help="serve preprocess, detector, postprocess and attributes as four models (the GPU layout; "
                        "default on CPU: fused into one python-backend model, same ensemble and results, "
                        "+13-22%% frames/s on 2 cores)")
    layout.add_argument("--fuse", action="store_true",
                        help="fuse even a repository that is not the contract's CPU layout (rendered from the contract, "
                        "its graphs copied)")
    serve.set_defaults(handler=cmd_serve)

    doctor = sub.add_parser("doctor", help="check what is installed and how to fix what is missing")
    doctor.set_defaults(handler=cmd_doctor)

    from omniface.bench import cli as bench_cli  # argparse only; perf_analyzer runs when a bench command does

    bench = sub.add_parser("bench", help="benchmark the served pipeline with perf_analyzer (the 'bench' extra)",
                           description=bench_cli.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_cli.add_arguments(bench)
    bench.set_defaults(handler=bench_cli.run)

    from omniface.engines import command as engines_command  # argparse only; TensorRT is imported when building

    engines = sub.add_parser("build-engines", help="build the TensorRT engines of the GPU repository (needs TensorRT, a GPU)",
                             description=engines_command.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    engines_command.add_arguments(engines).set_defaults(handler=engines_command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse exits 2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("omniface: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `omniface analyze ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # a bug: still one line, no traceback
        _error(f"unexpected {type(exc).__name__}: {exc} (set OMNIFACE_DEBUG=1 for the traceback; please report it)")
        if os.environ.get("OMNIFACE_DEBUG"):
            raise
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
