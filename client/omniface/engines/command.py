"""``omniface build-engines`` / ``python build/build_engines.py``: arguments and runner.

Renders the GPU model repository (``--target gpu`` configs) into ``--out-dir`` and
builds its TensorRT engines from the ONNX graphs of ``--model-repository``. Without
TensorRT or a GPU it exits 1 with one line saying where to run it; ``--dry-run`` prints
the profiles and what would be built, and needs neither.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omniface.engines.precision import DEFAULT_PRECISION, DEFAULT_QDQ_DIR, PRECISIONS
from omniface.engines.profiles import ENGINE_MODELS

DEFAULT_OUT_DIR = Path("runs") / "gpu_repository"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model-repository", metavar="PATH", default=None,
                        help="where the ONNX graphs are (default: $OMNIFACE_MODEL_REPOSITORY or the packaged one)")
    parser.add_argument("--out-dir", metavar="PATH", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"the GPU repository to write (default: {DEFAULT_OUT_DIR})")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="fp16 (default; strongly typed fp16 graph), fp32, or int8 (from the Q/DQ graph)")
    parser.add_argument("--models", default=",".join(ENGINE_MODELS),
                        help=f"comma-separated engine models (default: {','.join(ENGINE_MODELS)})")
    parser.add_argument("--qdq-dir", metavar="PATH", type=Path, default=DEFAULT_QDQ_DIR,
                        help=f"for int8: where build/quantize.py wrote <model>/1/model.qdq.onnx (default: {DEFAULT_QDQ_DIR})")
    parser.add_argument("--timing-cache", metavar="FILE", type=Path, default=None,
                        help="TensorRT timing cache to reuse and update (default: <out-dir>/.omniface-timing.cache)")
    parser.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit (default: 4)")
    parser.add_argument("--opt-level", type=int, choices=range(0, 6), default=3, metavar="0-5",
                        help="builder optimization level (default: 3)")
    parser.add_argument("--cpu-postprocess", action="store_true",
                        help="keep postprocess on the host (for a container without torch)")
    parser.add_argument("--force", action="store_true", help="rebuild engines that are up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.add_argument("--dry-run", action="store_true",
                        help="print profiles and what would be built; needs no TensorRT or GPU")
    return parser


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINE_MODELS]
    if unknown or not names:
        raise ValueError(f"--models takes {', '.join(ENGINE_MODELS)}; got {text!r}")
    return names


def run(args: argparse.Namespace) -> int:
    from omniface.errors import OmnifaceError
    from omniface.repository import default_repository_path

    source = Path(args.model_repository) if args.model_repository else default_repository_path()
    try:
        names = _names(args.models)
        if args.dry_run:
            return _dry_run(args, source, names)
        from omniface.engines.build import build_repository

        build_repository(
            source, args.out_dir, precision=args.precision, names=names, qdq_dir=args.qdq_dir,
            timing_cache=args.timing_cache, workspace_bytes=int(args.workspace_gib * (1 << 30)),
            optimization_level=args.opt_level, force=args.force, progress=not args.no_progress,
            gpu_postprocess=not args.cpu_postprocess,
        )
    except (OmnifaceError, FileNotFoundError, ValueError) as exc:
        print(f"omniface: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"GPU repository ready: tritonserver --model-repository {args.out_dir.resolve()}")
    return 0


def _dry_run(args: argparse.Namespace, source: Path, names: list[str]) -> int:
    from omniface.engines.build import plan_builds, tensorrt_problem

    for item in plan_builds(source, args.out_dir, precision=args.precision, names=names, qdq_dir=args.qdq_dir,
                            force=args.force):
        shapes = ", ".join(f"{p.name} min {list(p.min)} opt {list(p.opt)} max {list(p.max)}" for p in item.profile.inputs)
        print(f"{item.model}: {item.source} -> {item.plan} [{args.precision}]; {shapes}; "
              f"{'; '.join(item.reasons) or 'up to date'}")
    problem = tensorrt_problem()
    print(f"can build here: {'yes' if problem is None else 'no: ' + problem}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run(add_arguments(parser).parse_args(argv))
