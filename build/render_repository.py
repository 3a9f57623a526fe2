"""Render the Triton model repository's configs and python adapters from the contract.

    python build/render_repository.py                      # the committed CPU repository
    python build/render_repository.py --target gpu --out DIR
    python build/render_repository.py --check              # exit 1 if anything drifted
    python build/render_repository.py --fuse --out DIR     # CPU: all four steps in one python model, graphs copied
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omniface import repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=repository.default_repository_path())
    parser.add_argument("--target", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--check", action="store_true", help="only report drift")
    parser.add_argument("--fuse", action="store_true",
                        help="cpu target: the fused repository (what `omniface serve --fuse` serves), "
                        "graphs copied from the committed one; needs --out")
    args = parser.parse_args(argv)
    if args.fuse:
        if args.target != "cpu" or args.check or args.out == repository.default_repository_path():
            parser.error("--fuse renders a separate CPU repository: give --out DIR (not the committed one), no --check")
        print(f"wrote {repository.render_fused(args.out)}")
        return 0
    if args.check:
        drifted = repository.check_repository(args.out, target=args.target)
        for line in drifted:
            print(f"drift: {line}")
        print("in sync with the contract" if not drifted else f"{len(drifted)} file(s) drifted")
        return 1 if drifted else 0
    for path in repository.render_repository(args.out, target=args.target):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
