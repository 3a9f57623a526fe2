"""Make the Q/DQ (explicit INT8) graphs, calibrated on real faces, and measure them on CPU.

    python build/quantize.py                                  # both graphs -> runs/quantized/<model>/1/model.qdq.onnx
    python build/quantize.py --evaluate                       # ... and FP32 vs Q/DQ on held-out images
    python build/quantize.py --evaluate-only --models attributes
    python build/quantize.py --flavors tensorrt,cpu --evaluate   # also the U8S8 graph for ONNX Runtime CPU

Calibration uses the train split of UTKFace (attributes) and WIDER FACE (detector)
under the data root (--data, else $OMNIFACE_DATA, else ../shared/data); evaluation the
held-out split. The Q/DQ graphs feed `omniface build-engines --precision int8` and run
on ONNX Runtime's CPU provider as they are (serve one by setting the model's
`onnx_file` parameter to model.qdq.onnx). --evaluate prints latency (median, --threads
intra-op threads) and output drift and writes <out-dir>/quantization-report.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from omniface import contract, quantize
    from omniface.engines.precision import DEFAULT_QDQ_DIR
    from omniface.engines.profiles import ENGINE_MODELS
    from omniface.repository import default_repository_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ENGINE_MODELS), help="comma-separated graphs (default: both)")
    parser.add_argument("--model-repository", type=Path, default=None, help="where the FP32 graphs are")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_QDQ_DIR, help=f"default: {DEFAULT_QDQ_DIR}")
    parser.add_argument("--data", default=None, help="data root (default: $OMNIFACE_DATA or ../shared/data)")
    parser.add_argument("--method", choices=quantize.CALIBRATION_METHODS, default=quantize.DEFAULT_METHOD)
    parser.add_argument("--flavors", default="tensorrt",
                        help="comma-separated Q/DQ flavours: tensorrt (model.qdq.onnx, for INT8 engines; default), "
                        "cpu (model.qdq-cpu.onnx, U8S8 for ONNX Runtime on x86)")
    parser.add_argument("--calibration", type=int, default=None,
                        help=f"calibration images per graph (default: {quantize.DEFAULT_CALIBRATION})")
    parser.add_argument("--evaluate", action="store_true", help="also compare FP32 and Q/DQ on held-out images")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate existing Q/DQ graphs")
    parser.add_argument("--eval-images", type=int, default=None,
                        help=f"held-out images per graph (default: {quantize.DEFAULT_EVALUATION})")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads when timing")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per batch size")
    parser.add_argument("--require-data", action="store_true", help="fail instead of using the astronaut stand-in")
    args = parser.parse_args(argv)

    repo = args.model_repository or default_repository_path()
    names = [n for n in args.models.split(",") if n]
    flavors = [f for f in args.flavors.split(",") if f]
    if any(f not in quantize.FLAVORS for f in flavors) or not flavors:
        parser.error(f"--flavors takes {', '.join(quantize.FLAVORS)}")
    report = {}
    for name in names:
        if name not in ENGINE_MODELS:
            parser.error(f"--models takes {', '.join(ENGINE_MODELS)}")
        spec = contract.MODELS[name]
        source = repo / name / "1" / "model.onnx"
        calib = held_out = None
        for flavor in flavors:
            target = args.out_dir / name / "1" / quantize.FLAVOR_FILENAMES[flavor]
            if not args.evaluate_only:
                if calib is None:
                    count = args.calibration or quantize.DEFAULT_CALIBRATION[name]
                    calib = quantize.image_set(name, "train", count, args.data, allow_fallback=not args.require_data)
                started = time.perf_counter()
                quantize.quantize_graph(source, target, spec, calib.images, method=args.method, flavor=flavor,
                                        source=calib.source)
                counts = quantize.count_qdq(target)
                print(f"{name} [{flavor}]: wrote {target} in {time.perf_counter() - started:.1f} s "
                      f"({counts['QuantizeLinear']} Q / {counts['DequantizeLinear']} DQ nodes; "
                      f"{args.method} calibration on {calib.source})")
            if args.evaluate or args.evaluate_only:
                if held_out is None:
                    count = args.eval_images or quantize.DEFAULT_EVALUATION[name]
                    held_out = quantize.image_set(name, "val", count, args.data, allow_fallback=not args.require_data)
                result = quantize.evaluate(source, target, name, held_out, threads=args.threads, runs=args.runs)
                report[f"{name}/{flavor}"] = result.to_dict()
                _print_evaluation(result, flavor)
    if report:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / "quantization-report.json"
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"wrote {path}")
    return 0


def _print_evaluation(result, flavor: str) -> None:
    print(f"{result.model} [{flavor}]: FP32 vs Q/DQ on {result.count} held-out images ({result.images}); "
          f"ONNX Runtime CPU, {result.threads} threads")
    for batch, t in result.latency_ms.items():
        print(f"  batch {batch:>3}: fp32 {t['fp32']:8.2f} ms   qdq {t['qdq']:8.2f} ms   speed-up x{t['speedup']:.2f}")
    for name, d in result.drift.items():
        print(f"  {name:<12} max |diff| {d['max_abs']:.4g}   mean |diff| {d['mean_abs']:.4g}")
    for name, value in result.task_metrics.items():
        print(f"  {name:<30} {value:.4g}")


if __name__ == "__main__":
    sys.exit(main())
