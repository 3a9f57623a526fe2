"""Ablation runs: the default recipe and each method switched off (or swapped), trained on
one shared short schedule and evaluated on the same held-out split, as one Markdown table.

    python build/ablate.py --schedule build/configs/cpu.toml --set train.max_steps=1200 --out runs/ablation
    python build/ablate.py ... --resume        # continue: finished variants are skipped

Each variant is the schedule config with the variant file's own sections merged on top
(its ``extends`` is ignored, so every variant shares the schedule's data and steps).
Writes ``<out>/<variant>/`` (a normal training run plus ``eval.json``),
``<out>/ablation.json`` and ``<out>/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "default (uncertainty + ReSup + DM)": None,
    "fixed weights": HERE / "configs" / "ablation_fixed_weights.toml",
    "MT-CP instead of uncertainty": HERE / "configs" / "ablation_mtcp.toml",
    "no ReSup": HERE / "configs" / "ablation_no_resup.toml",
    "no distribution matching": HERE / "configs" / "ablation_no_dm.toml",
}


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.split("(")[0].strip().lower()).strip("_")


def variant_config(schedule: Path, variant: Path | None, overrides: list[str]) -> dict:
    """Schedule config, then the variant's own sections, then ``--set`` overrides."""
    from omniface.training.config import apply_overrides, load_config, merge_sections

    cfg = load_config(schedule)
    if variant is not None:
        with open(variant, "rb") as fh:
            data = tomllib.load(fh)
        data.pop("extends", None)
        merge_sections(cfg, data)
    return apply_overrides(cfg, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", type=Path, default=HERE / "configs" / "cpu.toml",
                        help="config whose data and train settings every variant shares")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every variant, e.g. train.max_steps=1200")
    parser.add_argument("--eval-set", dest="eval_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for build/evaluate.py, e.g. eval.max_images=120")
    parser.add_argument("--only", action="append", default=[], help="run only variants whose slug is given")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--resume", action="store_true", help="resume unfinished variants, skip finished ones")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from omniface.training.evaluate import markdown_table
    from omniface.training.trainer import Trainer

    results: dict[str, dict] = {}
    for label, variant in VARIANTS.items():
        name = slug(label)
        if args.only and name not in args.only:
            continue
        out = args.out / name
        eval_json = out / "eval.json"
        if not eval_json.is_file():
            resume = args.resume and (out / "last.pt").is_file()
            if resume:
                cfg = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["train_config"]
            else:
                cfg = variant_config(args.schedule, variant, args.overrides)
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(cfg, indent=2))
            print(f"== {label}: training {cfg['train']['max_steps']} steps into {out}", flush=True)
            trainer = Trainer(cfg, out, resume=resume, quiet=args.quiet)
            status = trainer.run()
            del trainer
            if status != "done":
                print(f"{label}: {status} at a checkpoint; run again with --resume")
                return 130
            cmd = [sys.executable, str(HERE / "evaluate.py"), "--checkpoint", str(out / "model.pt"), "--out", str(eval_json)]
            for item in args.eval_overrides:
                cmd += ["--set", item]
            subprocess.run(cmd, check=True)
        results[label] = json.loads(eval_json.read_text())
    table = markdown_table(results)
    (args.out / "ablation.json").write_text(json.dumps(results, indent=2))
    (args.out / "ablation.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
