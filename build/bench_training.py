"""Training throughput: samples/s of the full training step against the network step alone.

    python build/bench_training.py --config build/configs/cpu.toml
    python build/bench_training.py --config build/configs/cpu.toml --pipelines files cached --steps 20

For each data pipeline (``files``: decode and warp every sample from its file;
``cached``: the decoded cache and tensor augmentation) and each task group
(``detection``: WIDER batches only, ``attributes``: the attribute batch only, ``all``: both,
as in training) it times

* **network**: ``Trainer.train_step`` repeated on one batch already in memory (forward,
  target assignment, losses, backward, optimiser step): what a step would cost with free data;
* **full**: the training loop as it runs (the loader with ``data.workers`` processes,
  then ``train_step``), over ``--steps`` steps after ``--warmup`` steps;

and prints samples/s of both and their ratio (goal >= 0.70). Detection samples are frames of
the configured size (``data.det_size`` for ``files``, ``data.det_crop`` for ``cached``: the
``files`` runs use ``det_crop`` too, so both see the same pixels per frame). Writes
``--out`` (JSON) and prints a Markdown table. Pause other CPU work while it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def measure(cfg: dict, steps: int, warmup: int) -> dict:
    import torch

    from omniface.data.mixed import make_loader
    from omniface.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, quiet=True)
        stream = trainer.stream
        det_n = stream.det_walk.per_step
        attr_n = sum(w.per_step for w in stream.walks.values())
        batch = stream[0]
        for _ in range(warmup):
            trainer.train_step(batch)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        net = (time.perf_counter() - t0) / steps

        workers = int(cfg["data"]["workers"])
        loader = iter(make_loader(stream, 1, 1 + warmup + steps, workers))
        for _ in range(warmup):
            trainer.train_step(next(loader))
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(next(loader))
        full = (time.perf_counter() - t0) / steps
        del loader
    samples = det_n + attr_n
    return {"det_per_step": det_n, "attr_per_step": attr_n, "network_s_per_step": net, "full_s_per_step": full,
            "network_samples_per_s": samples / net, "full_samples_per_s": samples / full, "ratio": net / full,
            "threads": torch.get_num_threads(), "workers": workers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("build/configs/cpu.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--pipelines", nargs="+", default=["files", "cached"], choices=["files", "cached"])
    parser.add_argument("--tasks", nargs="+", default=["detection", "attributes", "all"],
                        choices=["detection", "attributes", "all"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-training.json"))
    args = parser.parse_args(argv)

    from omniface.training.config import apply_overrides, load_config

    rows = []
    for pipeline in args.pipelines:
        for task in args.tasks:
            cfg = load_config(args.config, args.overrides)
            cfg["data"]["pipeline"] = pipeline
            cfg["data"]["det_size"] = list(cfg["data"]["det_crop"])
            if task == "detection":
                cfg["data"]["attribute_sets"] = []
            elif task == "attributes":
                cfg["data"]["detection"] = False
            apply_overrides(cfg, [])
            r = measure(cfg, args.steps, args.warmup)
            r.update(pipeline=pipeline, task=task)
            rows.append(r)
            print(f"{pipeline:>7} {task:>10}: network {r['network_samples_per_s']:7.1f} samples/s, "
                  f"full {r['full_samples_per_s']:7.1f} samples/s, ratio {r['ratio']:.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": str(args.config), "overrides": args.overrides, "rows": rows}, indent=2))
    print()
    print("| pipeline | task | frames + crops per step | network step (s) | full step (s) | network samples/s | full samples/s | full / network |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pipeline']} | {r['task']} | {r['det_per_step']} + {r['attr_per_step']} | {r['network_s_per_step']:.3f} | "
              f"{r['full_s_per_step']:.3f} | {r['network_samples_per_s']:.1f} | {r['full_samples_per_s']:.1f} | {r['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
