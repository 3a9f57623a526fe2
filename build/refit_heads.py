"""Refit the attribute heads of the attributes graph on its frozen trunk (see
``omniface.training.refit`` for why and how), then write the graph and a report.

    python build/refit_heads.py                                  # model_repository in place
    python build/refit_heads.py --tasks head_pose --out runs/refit/model.onnx

A head replaces the served one only where it is better on 10 % of the training images
held out of the refit; the validation split is only reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from omniface.training.refit import REFIT_TASKS, RefitSettings, format_report, refit_heads

    defaults = RefitSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, default=ROOT / "model_repository" / "attributes" / "1" / "model.onnx")
    parser.add_argument("--out", type=Path, help="where to write the refit graph (default: over --graph)")
    parser.add_argument("--tasks", default=",".join(REFIT_TASKS), help="comma-separated heads to refit")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "model" / "head-refit.json")
    parser.add_argument("--data", help="data root (default: $OMNIFACE_DATA or ../shared/data)")
    parser.add_argument("--copies", type=int, default=defaults.copies)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    settings = RefitSettings(copies=args.copies, steps=args.steps, seed=args.seed)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    report = refit_heads(args.graph, args.out or args.graph, tasks, settings, root=args.data)
    print(format_report(report))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
