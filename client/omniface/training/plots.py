"""A PNG of a run's per-task losses and task weights over time (matplotlib, Agg)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _series(rows, key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v not in ("", "nan"):
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def plot_metrics(csv_path: str | Path, png_path: str | Path) -> Path | None:
    """Two panels: loss per task (log scale) and weight per task; None if no rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    if not rows:
        return None
    losses = [k[5:] for k in rows[0] if k.startswith("loss_")]
    weights = [k[2:] for k in rows[0] if k.startswith("w_")]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name in losses:
        xs, ys = _series(rows, f"loss_{name}")
        if xs and any(y > 0 for y in ys):
            ax1.plot(xs, [max(y, 1e-6) for y in ys], label=name, lw=1)
    ax1.set_yscale("log")
    ax1.set_ylabel("task loss")
    ax1.legend(fontsize=7, ncol=3)
    ax1.grid(alpha=0.3)
    for name in weights:
        xs, ys = _series(rows, f"w_{name}")
        if xs:
            ax2.plot(xs, ys, label=name, lw=1)
    ax2.set_ylabel("task weight")
    ax2.set_xlabel("step")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=3)
    fig.suptitle(f"{Path(csv_path).parent.name}: step {rows[-1]['step']}")
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
