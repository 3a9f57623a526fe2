"""Train OmniFaceNet on the real partial-label data (WIDER FACE, UTKFace, FER2013, GENKI-4K).

    python build/train.py --config build/configs/default.toml --out runs/default
    python build/train.py --config build/configs/default.toml --set train.max_steps=200 --set data.det_batch=4
    python build/train.py --out runs/default --resume          # continue exactly where it stopped

The data root is ``$OMNIFACE_DATA`` or ``../shared/data`` (or ``--set data.root=...``).
Ctrl-C (or SIGTERM) saves a checkpoint and exits; ``--resume`` picks it up. Writes
``<out>/last.pt`` (resumable), ``<out>/model.pt`` (for build/export_onnx.py),
``<out>/metrics.csv``, ``<out>/metrics.png`` and the resolved config as ``<out>/config.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="TOML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. train.max_steps=100 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs/default"), help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt with its config (+ --set)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import torch

    from omniface.training.config import apply_overrides, load_config
    from omniface.training.trainer import Trainer

    if args.resume:
        last = args.out / "last.pt"
        if not last.is_file():
            parser.error(f"--resume: {last} does not exist")
        cfg = apply_overrides(torch.load(last, map_location="cpu", weights_only=True)["train_config"], args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2))
    trainer = Trainer(cfg, args.out, resume=args.resume, quiet=args.quiet)
    status = trainer.run()
    print(f"{status} at step {trainer.step}/{cfg['train']['max_steps']}; checkpoint {args.out / 'last.pt'}")
    return 0 if status in ("done", "stopped") else 130


if __name__ == "__main__":
    sys.exit(main())
