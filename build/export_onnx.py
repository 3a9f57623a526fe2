"""Export OmniFaceNet to the repository's two ONNX graphs.

    python build/export_onnx.py --checkpoint runs/best.pt --out-dir model_repository
    python build/export_onnx.py --random-init --seed 0 --out-dir model_repository

Writes ``<out-dir>/detector/1/model.onnx`` and ``<out-dir>/attributes/1/model.onnx``,
checks both against ``omniface.contract`` and ONNX Runtime against PyTorch, and prints
what was written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="OmniFaceNet checkpoint ({'model': state_dict, 'config': {...}})")
    source.add_argument("--random-init", action="store_true", help="export freshly initialised weights")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for --random-init (default 0)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks for --random-init (default: contract.DEFAULT_TASKS)")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier for --random-init (default 1.0)")
    parser.add_argument("--out-dir", type=Path, default=Path("model_repository"), help="model repository root")
    parser.add_argument("--version", type=int, default=1, help="model version folder (default 1)")
    parser.add_argument("--data", default=None, help="data root for the parity images (default: $OMNIFACE_DATA or ../shared/data)")
    parser.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    args = parser.parse_args(argv)

    import torch

    from omniface import contract
    from omniface.export import export_all, parity_report
    from omniface.nn import OmniFaceNet, load_model

    if args.checkpoint is not None:
        net = load_model(args.checkpoint)
        print(f"loaded {args.checkpoint} (tasks {','.join(net.tasks)}, width {net.width})")
    else:
        tasks = tuple(t for t in args.tasks.split(",") if t) if args.tasks else contract.DEFAULT_TASKS
        torch.manual_seed(args.seed)
        net = OmniFaceNet(tasks=tasks, width=args.width).eval()
        print(f"random init, seed {args.seed} (tasks {','.join(net.tasks)}, width {net.width})")

    paths = export_all(net, args.out_dir, version=args.version)
    from omniface.quantize import image_set

    # Parity on real images (held-out WIDER FACE frames, UTKFace crops); the astronaut
    # stand-in when the data is not at hand.
    samples = {name: image_set(name, "val", count, args.data) for name, count in
               ((contract.DETECTOR, 4), (contract.ATTRIBUTES, 16))}
    for name, path in paths.items():
        size = path.stat().st_size
        line = f"wrote {path} ({size / 1e6:.2f} MB, {size} bytes), matches contract model {name!r}"
        if not args.no_parity:
            report = parity_report(net, path, samples[name].images)
            line += f"; max |ORT - torch| {max(report.values()):.2e} on {samples[name].source}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
