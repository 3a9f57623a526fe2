"""Time the two network graphs on ONNX Runtime CPU: the model card's speed targets.

    python build/bench_models.py                       # detector batch 1, attributes batch 16, 2 threads
    python build/bench_models.py --threads 1 2 --attributes-batch 1 16 32 --runs 50

Real images (held-out WIDER FACE frames letterboxed to 640x480, UTKFace crops on the
112 template; the astronaut stand-in without the data), the committed graphs (or
--model-repository), ``omniface.runtime.make_session`` (what the server uses: graph
optimisation on, sequential execution). Median and p90 of --runs timed calls after a
warm-up; the attribute graph is also given per face.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=None)
    parser.add_argument("--onnx-file", default="model.onnx", help="graph file in each version folder (e.g. model.qdq-cpu.onnx)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--detector-batch", type=int, nargs="+", default=[1])
    parser.add_argument("--attributes-batch", type=int, nargs="+", default=[16])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--data", default=None, help="data root (default: $OMNIFACE_DATA or ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    import numpy as np
    from tqdm import tqdm

    from omniface import contract
    from omniface.quantize import image_set
    from omniface.repository import default_repository_path
    from omniface.runtime import make_session, time_session

    repo = args.model_repository or default_repository_path()
    plan = [(contract.DETECTOR, b) for b in args.detector_batch] + [(contract.ATTRIBUTES, b) for b in args.attributes_batch]
    images = {name: image_set(name, "val", 32, args.data) for name in (contract.DETECTOR, contract.ATTRIBUTES)}
    rows = []
    with tqdm(total=len(plan) * len(args.threads) * args.runs, desc="timing", unit="run") as bar:
        for threads in args.threads:
            for name, batch in plan:
                session = make_session(repo / name / "1" / args.onnx_file, threads=threads)
                (inp,) = session.get_inputs()
                data = np.ascontiguousarray(np.resize(images[name].images, (batch, *images[name].images.shape[1:])))
                timing = time_session(session, {inp.name: data}, runs=args.runs, on_run=lambda: bar.update(1))
                median, p90 = timing["median_ms"], timing["p90_ms"]
                rows.append({"graph": name, "batch": batch, "threads": threads, "median_ms": median, "p90_ms": p90,
                             "median_ms_per_item": median / batch, "images": images[name].source})
    print(f"{'graph':<11} {'batch':>5} {'threads':>7} {'median ms':>10} {'p90 ms':>8} {'ms/item':>8}")
    for r in rows:
        print(f"{r['graph']:<11} {r['batch']:>5} {r['threads']:>7} {r['median_ms']:>10.2f} {r['p90_ms']:>8.2f} "
              f"{r['median_ms_per_item']:>8.2f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
